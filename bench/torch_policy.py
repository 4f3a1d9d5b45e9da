"""Step time of PPO, RLOO and DPO in plain PyTorch: the reference for bench-policy.

The same loops as crates/policy/src/train/{ppo,rloo,dpo}.rs, written out by hand (no TRL), on
the same tiny GPT as crates/models/src/gpt.rs (nanoGPT: learned positions, pre-LN blocks,
tanh-GELU MLP, tied head, GPT-2 init; explicit masked attention as in torch_train.py) and the
same batch shape. One step:

- rollout: KV-cached sampling at temperature 1 of `new_tokens` tokens for every row (one
  prefill + new_tokens - 1 single-token forwards), keeping the raw log-prob of each token;
- score: a rule reward (completion length), as `rule:length` in the Rust run;
- π_old: one forward with a graph whose detached copy is π_old and which the single update
  reuses (num_ppo_epochs = num_mini_batches = 1); π_ref: a forward of the frozen copy without
  a graph; objective/entropy from the detached hidden states;
- PPO (Ziegler et al. 2019, TRL layout): per-token k1 KL penalty, score on the last token, GAE
  (γ 1, λ 0.95) with a value head on the shared trunk, whitened advantages, clipped policy
  loss + 0.1 × clipped value loss;
- RLOO (Ahmadian et al. 2024): sequence rewards score − β·KL, leave-one-out advantages over
  the k samples of a prompt, clipped sequence-ratio surrogate;
- DPO (Rafailov et al. 2023): one forward over the chosen and rejected completions of
  rows / 2 pairs against reference log-likelihoods computed once before training;
- update: backward, global grad-norm clip at 1.0, AdamW (lr 1e-4, no weight decay).

No EOS exists, so every completion has `new_tokens` tokens as on the Rust side. Prints one
JSON line like bench-policy: the median step after `warmup` steps.

`--model DIR` (PPO, RLOO) runs the Llama-family GGUF in DIR through transformers instead
(dequantised to f32, as torch_generate.py does; default attention), every prompt being
SENTENCE about animal i (written --prompt-repeat times) encoded by the model's tokenizer, and never stops at
EOS (as bench-policy). Rows are scored in full, prompt included, as TRL does.
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

SPECIALS = 3  # <pad>, <s>, <unk>: never in prompts; ids ≥ 3 are words
# Prompt i of the pool is about animal i (as in bench-policy.rs): one token each, 13 in all.
SENTENCE = "Tell me a short story about a {} who learns to swim."
ANIMALS = ["cat", "dog", "fox", "cow", "pig", "owl", "bat", "rat", "hen", "bee", "ant", "elk", "eel", "ape", "bear",
           "wolf"]


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

    def forward(self, x, bias, past):
        b, t, c = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.h, c // self.h).transpose(1, 2) for z in (q, k, v))
        if past is not None:
            k, v = torch.cat([past[0], k], 2), torch.cat([past[1], v], 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        if t > 1:
            att = att + bias
        y = F.softmax(att, dim=-1) @ v
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")), (k, v)


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
        self.register_buffer("mask", torch.full((block, block), -1e9).triu(1))

    def hidden(self, idx, past=None, cache=True):
        """Final hidden states of `idx` [b, t] placed after the cached positions, and the new cache."""
        b, t = idx.shape
        start = 0 if past is None else past[0][0].size(2)
        x = self.wte(idx) + self.wpe(torch.arange(start, start + t))
        bias = self.mask[start:start + t, :start + t]
        cache = []
        for i, blk in enumerate(self.h):
            x, kv = blk(x, bias, None if past is None else past[i])
            cache.append(kv)
        return self.ln_f(x), cache

    def logits(self, h):
        return h @ self.wte.weight.t()


class HfPolicy(nn.Module):
    """A transformers causal LM behind the same hidden / logits interface as GPT."""

    def __init__(self, lm):
        super().__init__()
        self.lm = lm

    def hidden(self, idx, past=None, cache=False):
        out = self.lm.model(input_ids=idx, past_key_values=past, use_cache=cache or past is not None)
        return out.last_hidden_state, out.past_key_values

    def logits(self, h):
        return self.lm.lm_head(h)


def gguf_location(spec):
    """(directory, file name) of the GGUF file `spec`, of the one .gguf inside directory `spec`
    or in the cache entry of a short name (`smollm2-135m`)."""
    if os.sep not in spec and not os.path.exists(spec):
        # A short name, as load_causal_lm resolves it: the mismatch model cache.
        home = os.environ.get("MISMATCH_HOME")
        root = os.path.join(home, "models") if home else os.path.expanduser("~/.cache/mismatch/models")
        spec = os.path.join(root, spec)
    if os.path.isdir(spec):
        ggufs = sorted(f for f in os.listdir(spec) if f.endswith(".gguf"))
        if len(ggufs) != 1:
            raise SystemExit(f"{spec}: expected exactly one .gguf file, found {ggufs}")
        d, f = spec, ggufs[0]
    else:
        d, f = os.path.dirname(spec), os.path.basename(spec)
    return d, f


def load_hf(spec):
    """The Llama-family GGUF at `spec` ([`gguf_location`]) and its tokenizer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d, f = gguf_location(spec)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    lm = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    return HfPolicy(lm), tok


@torch.no_grad()
def generate(model, prompts, new_tokens, temperature, gen):
    """KV-cached sampling; returns tokens [b, n] and their raw (temperature 1) log-probs."""
    h, past = model.hidden(prompts, cache=True)
    toks, raw = [], []
    for i in range(new_tokens):
        logits = model.logits(h[:, -1])
        tok = torch.multinomial(F.softmax(logits / temperature, -1), 1, generator=gen)
        toks.append(tok)
        raw.append(F.log_softmax(logits, -1).gather(1, tok))
        if i + 1 < new_tokens:
            h, past = model.hidden(tok, past)
    return torch.cat(toks, 1), torch.cat(raw, 1)


def completion_logprobs(model, prompts, comps):
    """log π(y_t | x, y_<t) [b, c] and the hidden states that predict them [b, c, d]."""
    p, c = prompts.size(1), comps.size(1)
    h, _ = model.hidden(torch.cat([prompts, comps], 1))
    h = h[:, p - 1:p + c - 1]
    lp = F.log_softmax(model.logits(h), -1).gather(-1, comps.unsqueeze(-1)).squeeze(-1)
    return lp, h


def masked_mean(x, m):
    return (x * m).sum() / m.sum()


def whiten(x, m, shift_mean=True):
    mu = masked_mean(x, m)
    n = m.sum()
    var = masked_mean((x - mu) ** 2, m) * n / (n - 1)
    w = (x - mu) / torch.sqrt(var + 1e-8)
    return (w if shift_mean else w + mu) * m


@torch.no_grad()
def entropy(model, h, m):
    lp = F.log_softmax(model.logits(h), -1)
    return (-(lp.exp() * lp).sum(-1) * m).sum(1).mean().item()


def gae(rewards, values, m, gamma, lam):
    b, c = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(b)
    for t in reversed(range(c)):
        next_v = values[:, t + 1] * m[:, t + 1] if t + 1 < c else torch.zeros(b)
        delta = rewards[:, t] * m[:, t] + gamma * next_v - values[:, t] * m[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        adv[:, t] = last
    return adv, (adv + values) * m


def update(opt, params, loss, max_norm):
    if not math.isfinite(loss.item()):
        raise SystemExit(f"loss is {loss.item()}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    if not math.isfinite(norm.item()):
        raise SystemExit(f"gradient norm is {norm.item()}")
    opt.step()
    return norm.item()


def score(comps):
    """rule:length: words per completion (every token but <pad> and <s>, which decoding skips)."""
    return (comps >= 2).sum(1).float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--algo", default="rloo", choices=["ppo", "rloo", "dpo"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--prompt-len", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=64)
    ap.add_argument("--n-layer", type=int, default=2)
    ap.add_argument("--n-embd", type=int, default=64)
    ap.add_argument("--n-head", type=int, default=2)
    ap.add_argument("--block", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=None, help="directory holding one Llama-family .gguf, or the file")
    ap.add_argument("--prompt-repeat", type=int, default=1, help="with --model: the sentence this many times")
    a = ap.parse_args()
    if a.model and a.algo == "dpo":
        raise SystemExit("--model runs PPO and RLOO only")
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    gen = torch.Generator().manual_seed(a.seed + 1)
    beta, lr, max_norm, clip, clip_v, vf_coef, gamma, lam = 0.05, 1e-4, 1.0, 0.2, 0.2, 0.1, 1.0, 0.95
    dpo_beta = 0.1
    if a.model:
        policy, tok = load_hf(a.model)
        reference, _ = load_hf(a.model)
        texts = [" ".join([SENTENCE.format(x)] * a.prompt_repeat) for x in ANIMALS]
        sentences = [tok(t)["input_ids"] for t in texts]
        if len({len(x) for x in sentences}) != 1:
            raise SystemExit("the animal prompts must all have the same number of tokens")
        sentences = torch.tensor(sentences)
        d_model = policy.lm.config.hidden_size
    else:
        policy = GPT(a.vocab, a.n_layer, a.n_head, a.n_embd, a.block)
        reference = GPT(a.vocab, a.n_layer, a.n_head, a.n_embd, a.block)
        reference.load_state_dict(policy.state_dict())
        d_model = a.n_embd
    reference.requires_grad_(False)
    value_head = nn.Linear(d_model, 1)
    nn.init.zeros_(value_head.weight)
    nn.init.zeros_(value_head.bias)
    params = list(policy.parameters()) + (list(value_head.parameters()) if a.algo == "ppo" else [])
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    rows = a.prompts * a.samples
    n_new = a.new_tokens

    def words(n, length):
        # BOS (id 1) + random ordinary words, like the Rust side's encoded prompts.
        return torch.randint(SPECIALS, a.vocab, (n, length), generator=gen)

    def prompt_pool(n):
        if a.model:
            return sentences[torch.arange(n) % len(ANIMALS)]
        return torch.cat([torch.ones(n, 1, dtype=torch.long), words(n, a.prompt_len - 1)], 1)

    if a.algo == "ppo":
        pool = prompt_pool(2 * rows)
        batch, k = rows, 1
    elif a.algo == "rloo":
        pool = prompt_pool(2 * a.prompts)
        batch, k = a.prompts, a.samples
    else:
        n_pairs = rows
        pool = prompt_pool(n_pairs)
        chosen, rejected = words(n_pairs, n_new), words(n_pairs, n_new)
        batch = rows // 2
        with torch.no_grad():  # the reference never changes: once, before training (as dpo.rs)
            ref_c = completion_logprobs(reference, pool, chosen)[0].sum(1)
            ref_r = completion_logprobs(reference, pool, rejected)[0].sum(1)

    def batch_ix(step):
        # Consecutive slices of per-epoch permutations, like common::batch_indices.
        n = pool.size(0)
        out = []
        for pos in range(step * batch, step * batch + batch):
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(a.seed * 1000 + pos // n))
            out.append(perm[pos % n].item())
        return torch.tensor(out)

    def rl_step(step):
        prompts = pool[batch_ix(step)].repeat_interleave(k, 0)
        comps, _raw = generate(policy, prompts, n_new, 1.0, gen)
        scores = score(comps)
        m = torch.ones(comps.shape)
        lp, h = completion_logprobs(policy, prompts, comps)
        old, old_h = lp.detach(), h.detach()
        with torch.no_grad():
            ref_lp, _ = completion_logprobs(reference, prompts, comps)
        metrics = {"objective/entropy": entropy(policy, old_h, m)}
        if a.algo == "ppo":
            old_v = value_head(old_h).squeeze(-1).detach()
            kl = (old - ref_lp) * m
            non_score = -beta * kl
            rewards = non_score.clone()
            last = m.sum(1).long() - 1
            rewards[torch.arange(rows), last] += scores
            adv, ret = gae(rewards, old_v, m, gamma, lam)
            adv = whiten(adv, m, True)
            ratio = torch.exp(lp - old)
            l1, l2 = -adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)
            pl = masked_mean(torch.maximum(l1, l2), m)
            vpred = value_head(h).squeeze(-1)
            vclip = torch.maximum(torch.minimum(vpred, old_v + clip_v), old_v - clip_v)
            vl = 0.5 * masked_mean(torch.maximum((vpred - ret) ** 2, (vclip - ret) ** 2), m)
            loss = pl + vf_coef * vl
            metrics.update({
                "objective/kl": kl.sum(1).mean().item(), "objective/scores": scores.mean().item(),
                "policy/clipfrac_avg": masked_mean((l2 > l1).float(), m).item(),
                "policy/approxkl_avg": 0.5 * masked_mean((lp - old).detach() ** 2, m).item(),
                "val/ratio": masked_mean(ratio.detach(), m).item(),
                "val/clipfrac_avg": masked_mean(((vclip - ret) ** 2 > (vpred - ret) ** 2).float(), m).item(),
                "loss/value_avg": vl.item(), "loss/policy_avg": pl.item(),
            })
        else:
            seq_kl = ((old - ref_lp) * m).sum(1)
            r = (scores - beta * seq_kl).view(-1, k)
            adv = (r - (r.sum(1, keepdim=True) - r) / (k - 1)).view(-1)
            log_ratio = (lp * m).sum(1) - (old * m).sum(1)
            ratio = log_ratio.exp()
            l1, l2 = -adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)
            loss = torch.maximum(l1, l2).mean()
            metrics.update({
                "objective/kl": seq_kl.mean().item(), "objective/scores": scores.mean().item(),
                "policy/clipfrac_avg": (l2 > l1).float().mean().item(),
                "policy/approxkl_avg": 0.5 * (log_ratio.detach() ** 2).mean().item(),
                "val/ratio": ratio.detach().mean().item(), "loss/policy_avg": loss.item(),
            })
        metrics["grad_norm"] = update(opt, params, loss, max_norm)
        metrics["completions/mean_length"] = m.sum(1).mean().item()
        return metrics

    def dpo_step(step):
        ix = batch_ix(step)
        prompts = torch.cat([pool[ix], pool[ix]])
        lp, _ = completion_logprobs(policy, prompts, torch.cat([chosen[ix], rejected[ix]]))
        s = lp.sum(1)
        c, r = s[:batch], s[batch:]
        rc, rr = (c - ref_c[ix]).detach() * dpo_beta, (r - ref_r[ix]).detach() * dpo_beta
        loss = -F.logsigmoid(dpo_beta * ((c - ref_c[ix]) - (r - ref_r[ix]))).mean()
        metrics = {
            "loss": loss.item(), "rewards/chosen": rc.mean().item(), "rewards/rejected": rr.mean().item(),
            "rewards/accuracies": (rc > rr).float().mean().item(), "rewards/margins": (rc - rr).mean().item(),
            "logps/chosen": c.detach().mean().item(), "logps/rejected": r.detach().mean().item(),
        }
        metrics["grad_norm"] = update(opt, params, loss, max_norm)
        return metrics

    step_fn = dpo_step if a.algo == "dpo" else rl_step
    times = []
    for step in range(a.warmup + a.steps):
        s = time.perf_counter()
        metrics = step_fn(step)
        if step >= a.warmup:
            times.append(time.perf_counter() - s)
    step_s = statistics.median(times)
    if a.algo != "dpo":
        assert metrics["completions/mean_length"] == n_new
    loss = metrics.get("loss/policy_avg", metrics.get("loss"))
    tiny = {} if a.model else {"n_layer": a.n_layer, "n_embd": a.n_embd, "n_head": a.n_head, "block": a.block,
                               "vocab": a.vocab}
    print(json.dumps({
        "bench": "policy", "impl": "pytorch", "torch": torch.__version__, "algo": a.algo,
        "threads": torch.get_num_threads(), "rows": rows, "new_tokens": n_new, "prompt_len": pool.size(1),
        "model": a.model or "tiny-gpt", **tiny,
        "params": sum(p.numel() for p in policy.parameters()),
        "step_s": step_s, "step_s_all": times, "steps_per_s": 1.0 / step_s,
        "tokens_per_s": rows * n_new / step_s, "loss": loss,
        # libgomp's threads spin while waiting by default; on a busy machine that collapses
        # 2-thread PyTorch (see docs/benchmarks.md), so the setting is part of the result.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }))


if __name__ == "__main__":
    main()
