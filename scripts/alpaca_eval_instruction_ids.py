"""Identifiers of AlpacaEval's 805 instructions, so that annotations in any order find their
instruction difficulty: one line `index,sha256` per instruction (first 16 hex digits of the
SHA-256 of the instruction's UTF-8 text), index = position in AlpacaEval's order.

    python scripts/alpaca_eval_instruction_ids.py \
        --instructions ../shared/data/alpaca-eval/alpaca_eval_instructions.jsonl \
        --out crates/eval/data/alpaca_eval_instruction_ids.csv
"""

import argparse
import hashlib
import json
from pathlib import Path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--instructions", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    rows = [json.loads(l)["instruction"] for l in args.instructions.read_text().splitlines() if l.strip()]
    tmp = args.out.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write("index,sha256\n")
        for i, text in enumerate(rows):
            f.write(f"{i},{hashlib.sha256(text.encode()).hexdigest()[:16]}\n")
    tmp.rename(args.out)
    print(f"{len(rows)} instructions -> {args.out}")


if __name__ == "__main__":
    main()
