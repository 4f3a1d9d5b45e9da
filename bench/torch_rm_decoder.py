"""Decoder reward-model training throughput in plain PyTorch + transformers, the counterpart of
`bench-rm --backbone smollm2-135m`: one epoch of Bradley-Terry training of a fresh
`AutoModelForSequenceClassification` (num_labels 1, the score read at the last token) on
SmolLM2-135M (the packaged GGUF dequantised to f32, default attention), full fine-tune with
AdamW (lr 2e-5). Every input is `prompt + "\\n" + completion + EOS` cut to its last --seq
tokens, the prompts being --seq words long, as on the Rust side. `--gradient-checkpointing on`
turns on transformers' own, the technique the candle side uses (run.py passes `on` to both). The timed region is the same as the candle side: model load, tokenisation and the
epoch. Median of --runs runs after one warm-up run. Prints one JSON line with the peak RSS.

    python bench/torch_rm_decoder.py [--backbone smollm2-135m] [--pairs 16] [--batch 8] [--seq 512] [--runs 1] [--gradient-checkpointing on|off]
"""

import argparse
import json
import os
import random
import resource
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_policy import gguf_location  # noqa: E402
from torch_rm import bt_step, median_secs, words  # noqa: E402  (words: the same list and formula as bench-rm.rs)


def pairs(n, seq):
    return [(words(seq, i), words(8, i + 1), words(8, i + 2)) for i in range(n)]


def epoch(spec, data, batch, seq, seed, checkpointing):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    d, f = gguf_location(spec)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForSequenceClassification.from_pretrained(d, gguf_file=f, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if checkpointing:
        model.gradient_checkpointing_enable()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.0)
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    for s in range(0, len(order), batch):
        rows = []
        for i in order[s:s + batch]:
            p, c, r = data[i]
            for comp in (c, r):
                ids = tok(f"{p}\n{comp}", add_special_tokens=True)["input_ids"] + [tok.eos_token_id]
                rows.append(ids[-seq:])
        assert all(len(r) == seq for r in rows), "every input must be exactly --seq tokens"
        ids = torch.tensor(rows)
        bt_step(opt, model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.squeeze(-1).view(-1, 2))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--backbone", default="smollm2-135m")
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--runs", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--gradient-checkpointing", choices=["on", "off"], default="off")
    a = p.parse_args()
    a.gradient_checkpointing = a.gradient_checkpointing == "on"
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data = pairs(a.pairs, a.seq)
    epoch(a.backbone, data, a.batch, a.seq, 0, a.gradient_checkpointing)  # warm-up
    secs = median_secs(lambda r: epoch(a.backbone, data, a.batch, a.seq, r, a.gradient_checkpointing), a.runs)
    print(json.dumps({
        "bench": "rm",
        "impl": "pytorch" + ("+checkpointing" if a.gradient_checkpointing else ""),
        "model": a.backbone,
        "pairs": a.pairs,
        "batch": a.batch,
        "seq": a.seq,
        "threads": torch.get_num_threads(),
        "secs": secs,
        "pairs_per_s": a.pairs / secs,
        "tokens_per_s": 2 * a.pairs * a.seq / secs,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
