"""Reference values for the BERT / all-MiniLM-L6-v2 encoder (crates/models/src/bert.rs).

Runs sentence-transformers on the local model directory (no network) and writes
tests/fixtures/minilm.json: token ids from the HF tokenizer (padding off, truncation at the
model's max_seq_length), normalised sentence embeddings, and per-token last hidden states
for one short sentence. Read by crates/models/tests/minilm.rs.

    HF_HUB_OFFLINE=1 python3 tests/reference/minilm.py [MODEL_DIR]

MODEL_DIR defaults to $MISMATCH_HOME/models/minilm-l6 or ~/.cache/mismatch/models/minilm-l6.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer

ROOT = Path(__file__).resolve().parents[2]
home = os.environ.get("MISMATCH_HOME")
default_dir = Path(home) / "models" if home else Path.home() / ".cache" / "mismatch" / "models"
model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else default_dir / "minilm-l6"

LONG = " ".join(
    f"Sentence {i}: the policy drifts away from the reference model while the reward keeps rising."
    for i in range(30)
)
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Reward models learn human preferences from pairwise comparisons.",
    "Café naïve résumé — 東京で寿司を食べる 🍣 Ünïcödé!",
    "",
    "?",
    "A helpful, honest and harmless assistant refuses dangerous requests politely.",
    LONG,
]
SHORT = "Hello, world!"

torch.manual_seed(0)
model = SentenceTransformer(str(model_dir), device="cpu")
model.eval()
tok = model.tokenizer
max_len = model.max_seq_length

ids = [tok(s, truncation=True, max_length=max_len)["input_ids"] for s in SENTENCES]
assert len(tok(LONG)["input_ids"]) > max_len, "long sentence must exercise truncation"

with torch.no_grad():
    emb = model.encode(SENTENCES, batch_size=len(SENTENCES), convert_to_numpy=True)
    feats = tok([SHORT], return_tensors="pt")
    out = model[0].auto_model(**feats).last_hidden_state[0]

fixture = {
    "generator": "tests/reference/minilm.py",
    "versions": {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "sentence_transformers": sentence_transformers.__version__,
    },
    "max_seq_length": max_len,
    "sentences": SENTENCES,
    "token_ids": ids,
    "embeddings": [[round(float(x), 7) for x in row] for row in emb],
    "short": {
        "sentence": SHORT,
        "token_ids": feats["input_ids"][0].tolist(),
        "hidden": [[round(float(x), 6) for x in row] for row in out],
    },
}
dst = ROOT / "tests" / "fixtures" / "minilm.json"
dst.write_text(json.dumps(fixture, ensure_ascii=False, separators=(",", ":")) + "\n")
print(f"wrote {dst}: {len(SENTENCES)} sentences, long one {len(ids[-1])} tokens (max {max_len})")
