"""Generation throughput of transformers on SmolLM2-135M-Instruct (f32, dequantised from the
same Q4_1 GGUF), the counterpart of crates/bench/src/bin/bench-generate.rs: same chat prompts
(left-padded), exactly --new-tokens tokens per row (no stop token), median of 3 runs after 1
warm-up. Prints one JSON line; tokens_per_s counts generated tokens only.

    python bench/torch_generate.py [--batch 8] [--new-tokens 128] [--temperature 0] [--threads 2]
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTIONS = [
    "What is the capital of France?",
    "Explain photosynthesis in simple terms.",
    "Write a short poem about autumn leaves.",
    "How do I bake sourdough bread?",
    "What are the benefits of regular exercise?",
    "Summarise the plot of Romeo and Juliet.",
    "Why is the sky blue?",
    "Give me three tips for learning a new language.",
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=2)
    home = os.environ.get("MISMATCH_HOME")
    root = Path(home) / "models" if home else Path.home() / ".cache" / "mismatch" / "models"
    p.add_argument("--model-dir", default=str(root / "smollm2-135m"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(a.model_dir, gguf_file=GGUF)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(a.model_dir, gguf_file=GGUF, dtype=torch.float32).eval()
    texts = [
        tok.apply_chat_template([{"role": "user", "content": QUESTIONS[i % 8]}], add_generation_prompt=True, tokenize=False)
        for i in range(a.batch)
    ]
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    sampling = dict(do_sample=True, temperature=a.temperature, top_k=0, top_p=1.0) if a.temperature > 0 else dict(do_sample=False)

    def run():
        with torch.inference_mode():
            return model.generate(
                **enc, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, eos_token_id=None,
                pad_token_id=tok.pad_token_id, **sampling,
            )

    out = run()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    secs = statistics.median(times)
    new = out[:, enc.input_ids.shape[1]:]
    print(json.dumps({
        "bench": "generate",
        "impl": "pytorch",
        "model": "SmolLM2-135M-Instruct (f32 from Q4_1 GGUF)",
        "batch": a.batch,
        "new_tokens": a.new_tokens,
        "temperature": a.temperature,
        "prompt_tokens": enc.input_ids.shape[1],
        "threads": torch.get_num_threads(),
        "secs": secs,
        "tokens_per_s": new.numel() / secs,
        "sample": tok.decode(new[0], skip_special_tokens=True),
    }, ensure_ascii=False))


if __name__ == "__main__":
    main()
