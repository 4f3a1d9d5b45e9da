"""Training throughput of the tiny GPT in plain PyTorch: the reference for bench-train.

Same model as crates/models/src/gpt.rs (nanoGPT, Karpathy 2022: learned positions, pre-LN
blocks, tanh-GELU MLP, tied LM head, biases; GPT-2 init N(0, 0.02) with residual projections
N(0, 0.02/sqrt(2 n_layer))), same data shape, AdamW (lr 3e-4, weight decay 0.1), 2 threads.
Prints one JSON line like bench-train.
"""
import argparse
import json
import math
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, c, h):
        super().__init__()
        self.h = h
        self.ln_1 = nn.LayerNorm(c)
        self.c_attn = nn.Linear(c, 3 * c)
        self.attn_proj = nn.Linear(c, c)
        self.ln_2 = nn.LayerNorm(c)
        self.c_fc = nn.Linear(c, 4 * c)
        self.mlp_proj = nn.Linear(4 * c, c)

    def forward(self, x, bias):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        # Explicit attention as in the candle model (no fused SDPA kernel), additive mask.
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1))) + bias
        y = F.softmax(att, dim=-1) @ v
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, n_layer, n_head, n_embd, block):
        super().__init__()
        self.wte = nn.Embedding(vocab, n_embd)
        self.wpe = nn.Embedding(block, n_embd)
        self.h = nn.ModuleList(Block(n_embd, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layer))
            elif p.dim() == 2:
                nn.init.normal_(p, 0.0, 0.02)
            elif "ln" in name and name.endswith("weight"):
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)
        mask = torch.full((block, block), -1e9).triu(1)
        self.register_buffer("bias", mask.view(1, 1, block, block))

    def forward(self, idx, targets):
        b, t = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(t))
        for blk in self.h:
            x = blk(x, self.bias[:, :, :t, :t])
        logits = self.ln_f(x) @ self.wte.weight.t()
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-layer", type=int, default=4)
    ap.add_argument("--n-embd", type=int, default=256)
    ap.add_argument("--n-head", type=int, default=4)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=96)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = GPT(a.vocab, a.n_layer, a.n_head, a.n_embd, a.block)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.1)
    data = torch.randint(0, a.vocab, (a.batch, a.block + 1))
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()

    def step():
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(max(a.steps, 1)):
        s = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - s)
    secs = statistics.median(times)
    # The step's largest GEMM shape on its own, as in bench-train.
    m, k, n = a.batch * a.block, a.n_embd, 4 * a.n_embd
    ga, gb = torch.ones(m, k), torch.ones(k, n)
    for _ in range(2):
        ga @ gb
    gt = []
    for _ in range(10):
        s = time.perf_counter()
        ga @ gb
        gt.append(time.perf_counter() - s)
    gemm_gflops = 2 * m * k * n / statistics.median(gt) / 1e9
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "bench": "train", "impl": "pytorch", "torch": torch.__version__,
        "n_layer": a.n_layer, "n_embd": a.n_embd, "n_head": a.n_head, "block": a.block,
        "batch": a.batch, "vocab": a.vocab, "params": params, "threads": torch.get_num_threads(),
        "step_s": secs, "loss": loss, "tokens_per_s": a.batch * a.block / secs,
        "gemm_gflops": gemm_gflops,
    }))


if __name__ == "__main__":
    main()
