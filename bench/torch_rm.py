"""Reward-model training throughput in plain PyTorch + transformers, the counterpart of
crates/bench/src/bin/bench-rm.rs: one epoch of Bradley-Terry training of a fresh reward
model on all-MiniLM-L6-v2 (mean pooling, L2 normalisation as the sentence-transformers
pipeline, a linear head), full fine-tune with AdamW (lr 2e-5), every input exactly --seq
tokens. The timed region is the same as the candle side: model load, tokenisation, and
the epoch (forward, backward, optimiser step). Median of --runs runs. Prints one JSON line.

    python bench/torch_rm.py [--pairs 32] [--batch 8] [--seq 128] [--runs 3] [--threads 2]
"""

import argparse
import json
import os
import random
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer

# One-token words in BERT's uncased vocabulary; same list and formula as bench-rm.rs.
WORDS = ["the", "cat", "sat", "on", "mat", "and", "dog", "ran", "to", "a"]


def words(n, seed):
    return " ".join(WORDS[(i * 7 + seed * 3 + i * seed) % len(WORDS)] for i in range(n))


def pairs(n, seq):
    p_len = (seq - 3) // 2
    c_len = seq - 3 - p_len
    return [(words(p_len, i), words(c_len, i + 1), words(c_len, i + 2)) for i in range(n)]


def bt_step(opt, rw):
    """One Bradley-Terry update from rewards `rw` [pairs, 2] (chosen, rejected)."""
    loss = -F.logsigmoid(rw[:, 0] - rw[:, 1]).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def median_secs(run, runs):
    """Median wall time of `runs` calls of `run(r)` (r = 0, 1, …)."""
    times = []
    for r in range(runs):
        t = time.perf_counter()
        run(r)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def epoch(model_dir, data, batch, seed):
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = AutoModel.from_pretrained(model_dir)
    enc.train()
    head = torch.nn.Linear(enc.config.hidden_size, 1)
    opt = torch.optim.AdamW(list(enc.parameters()) + list(head.parameters()), lr=2e-5, weight_decay=0.0)
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    tokens = 0
    for s in range(0, len(order), batch):
        idx = order[s:s + batch]
        texts = []
        for i in idx:
            p, c, r = data[i]
            texts += [f"{p} [SEP] {c}", f"{p} [SEP] {r}"]
        b = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        tokens += int(b["attention_mask"].sum())
        h = enc(**b).last_hidden_state
        m = b["attention_mask"].unsqueeze(-1).to(h.dtype)
        e = F.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
        bt_step(opt, head(e).squeeze(-1).view(-1, 2))
    return tokens


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    home = os.environ.get("MISMATCH_HOME")
    root = Path(home) / "models" if home else Path.home() / ".cache" / "mismatch" / "models"
    p.add_argument("--model", default=str(root / "minilm-l6"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = pairs(a.pairs, a.seq)
    tokens = epoch(a.model, data, a.batch, 0)  # warm-up; also checks the token count
    assert tokens == 2 * a.pairs * a.seq, f"inputs are {tokens} tokens, expected {2 * a.pairs * a.seq}"
    secs = median_secs(lambda r: epoch(a.model, data, a.batch, r), a.runs)
    print(json.dumps({
        "bench": "rm",
        "impl": "pytorch",
        "model": "all-MiniLM-L6-v2",
        "pairs": a.pairs,
        "batch": a.batch,
        "seq": a.seq,
        "threads": torch.get_num_threads(),
        "secs": secs,
        "pairs_per_s": a.pairs / secs,
        "tokens_per_s": 2 * a.pairs * a.seq / secs,
    }))


if __name__ == "__main__":
    main()
