"""Sentence-embedding throughput of sentence-transformers (PyTorch) on all-MiniLM-L6-v2, the
counterpart of crates/bench/src/bin/bench-embed.rs: same sentences, batch size and timing
(median of 5 runs after 1 warm-up). Prints one JSON line.

    python bench/torch_embed.py [--batch 32] [--n 256] [--model DIR] [--threads 2]
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from sentence_transformers import SentenceTransformer

SUBJECTS = ["the assistant", "a reward model", "the policy", "my neighbour", "the reviewer", "a small robot", "the committee", "our compiler"]
VERBS = ["carefully explained", "quickly rejected", "politely summarised", "wrongly predicted", "eagerly compared", "silently ignored"]
OBJECTS = ["the long answer about photosynthesis", "two completions of the same prompt", "a recipe for sourdough bread", "the proof of the central limit theorem", "an email asking for a refund", "the weather forecast for tomorrow", "a poem about autumn leaves"]


def sentence(i):
    return (
        f"Example {i}: {SUBJECTS[i % 8]} {VERBS[i % 6]} {OBJECTS[i % 7]} before lunch, "
        f"and then {SUBJECTS[(i // 8) % 8]} {VERBS[(i // 6) % 6]} it again in far more detail."
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    home = os.environ.get("MISMATCH_HOME")
    root = Path(home) / "models" if home else Path.home() / ".cache" / "mismatch" / "models"
    p.add_argument("--model", default=str(root / "minilm-l6"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    model = SentenceTransformer(a.model, device="cpu")
    sentences = [sentence(i) for i in range(a.n)]
    tokens = sum(len(model.tokenizer(s, truncation=True, max_length=model.max_seq_length)["input_ids"]) for s in sentences)

    def run():
        with torch.inference_mode():
            model.encode(sentences, batch_size=a.batch, convert_to_numpy=True, show_progress_bar=False)

    run()
    times = []
    for _ in range(5):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    secs = statistics.median(times)
    print(json.dumps({
        "bench": "embed",
        "impl": "pytorch",
        "model": "all-MiniLM-L6-v2",
        "n": a.n,
        "batch": a.batch,
        "mean_tokens": tokens / a.n,
        "threads": torch.get_num_threads(),
        "secs": secs,
        "sentences_per_s": a.n / secs,
    }))


if __name__ == "__main__":
    main()
