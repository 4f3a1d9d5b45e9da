"""Reference values for crates/models/tests/smollm2.rs, from transformers on the same GGUF.

transformers dequantises every GGUF tensor to f32 (undoing llama.cpp's Q/K row permutation) and
builds the tokenizer from the GGUF metadata, exactly what mismatch's loader does, so logits must
agree to float round-off.

    python3 tests/reference/smollm2.py [--model-dir DIR] [--out tests/fixtures/smollm2.json]
"""

import argparse
import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Tokenisation-only strings: digits, unicode, runs of whitespace, special tokens inside text.
TOKENIZE = [
    "Hello world",
    " The year 2024 had 366 days; π≈3.14159.",
    "naïve café — déjà vu\n\n\tTabs   and  spaces  ",
    "<|im_start|>user\nhi<|im_end|>\n",
    "日本語のテキスト 🙂 and emoji",
]
PLAIN = "The capital of France is"
CHAT = [{"role": "user", "content": "What is the capital of France?"}]
NEW_TOKENS = 48
# Fixed vocabulary subset whose logits are stored (every 192nd id: 256 ids over 49152).
SUBSET = list(range(0, 49152, 192))


def main():
    ap = argparse.ArgumentParser()
    home = os.environ.get("MISMATCH_HOME") or os.path.expanduser("~/.cache/mismatch")
    ap.add_argument("--model-dir", default=os.path.join(home, "models", "smollm2-135m"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "fixtures" / "smollm2.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)

    tok = AutoTokenizer.from_pretrained(args.model_dir, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, gguf_file=GGUF, dtype=torch.float32)
    model.eval()

    chat_text = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    out = {
        "gguf": GGUF,
        "tokenize": [{"text": t, "ids": tok(t, add_special_tokens=True).input_ids} for t in TOKENIZE],
        "chat_messages": CHAT,
        "chat_text": chat_text,
        "subset": SUBSET,
        "prompts": [],
    }
    for name, text in [("plain", PLAIN), ("chat", chat_text)]:
        ids = tok(text, add_special_tokens=False).input_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
            # No stop token: the continuation runs past <|im_end|> so that >= 32 tokens are compared.
            gen = model.generate(
                torch.tensor([ids]),
                attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                do_sample=False,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=0,
                eos_token_id=None,
                pad_token_id=tok.pad_token_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
        new = gen.sequences[0, len(ids):].tolist()
        # Gap between the best and second-best logit at each greedy step: a near-tie (< 1e-3)
        # could legitimately flip under float round-off.
        margins = []
        for s in gen.scores:
            top = torch.topk(s[0].double(), 2).values
            margins.append(round(float(top[0] - top[1]), 5))
        out["prompts"].append({
            "name": name,
            "text": text,
            "ids": ids,
            "logits_subset": [[round(float(v), 5) for v in row[SUBSET]] for row in logits],
            "argmax": logits.argmax(-1).tolist(),
            "logsumexp": [round(float(v), 5) for v in torch.logsumexp(logits, -1)],
            "greedy_ids": new,
            "greedy_text": tok.decode(new, skip_special_tokens=False),
            "greedy_margins": margins,
        })
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
