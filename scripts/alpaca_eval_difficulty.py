"""Per-instruction difficulty for AlpacaEval 2's length-controlled win rate, from public annotations.

AlpacaEval's length-controlled GLM (Dubois et al. 2024, "Length-Controlled AlpacaEval") has an
`instruction_difficulty` term: the per-instruction intercepts of one joint GLM over many models'
annotations against gpt4_1106_preview,

    logit P(model m beats the baseline on instruction i) = θ_m tanh(Δlen_mi / sd_m) + φ_m + γ_i,

with γ_0 = 0 (dummy coding). AlpacaEval ships the fitted γ on the Hugging Face hub, not in its
GitHub repository, so this script refits it from the `weighted_alpaca_eval_gpt4_turbo`
annotation files that are present in a clone of github.com/tatsu-lab/alpaca_eval (`results/*/`),
by maximum likelihood with soft labels (preference − 1 ∈ [0, 1], draws 0.5) and a ridge of 1e-4
on every coefficient (AlpacaEval's notebook uses L1 with cross-validated strength over its full
leaderboard; the ridge only keeps instructions that every model wins or loses finite).

    python scripts/alpaca_eval_difficulty.py --repo PATH/alpaca_eval \
        --out crates/eval/data/alpaca_eval_instruction_difficulty.csv

Needs numpy, scipy, pandas. Output: `index,instruction_difficulty`, the format of AlpacaEval's
`instruction_difficulty.csv`, plus a header comment naming the models used.
"""

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import minimize

BASELINE = "gpt4_1106_preview"
ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
RIDGE = 1e-4


def annotation_files(repo: Path) -> dict[str, str]:
    """Model name → annotations JSON text, read from git (works on a bare mirror or a checkout)."""
    names = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "--name-only", "HEAD", "results/"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    out = {}
    for name in names:
        parts = name.split("/")
        if len(parts) != 4 or parts[2] != ANNOTATOR or parts[3] != "annotations.json":
            continue
        blob = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{name}"], capture_output=True, text=True)
        if blob.returncode == 0:  # some blobs of a partial mirror are absent
            out[parts[1]] = blob.stdout
    return out


def rows(model: str, text: str, instructions: list[str]) -> pd.DataFrame:
    # Key rows by instruction text: a few files list the 805 instructions in another order.
    position = {t: i for i, t in enumerate(instructions)}
    out = []
    for x in json.loads(text):
        i = position[x["instruction"]]
        p = x.get("preference")
        if p is None or p != p or p < 0:
            continue
        p = 1.5 if p == 0 else float(p)
        l1, l2 = len(x["output_1"] or ""), len(x["output_2"] or "")
        if l2 == 0:
            continue
        out.append((model, i, p - 1.0, l1 - l2))
    return pd.DataFrame(out, columns=["model", "index", "preference", "delta_len"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    files = annotation_files(args.repo)
    instructions = [x["instruction"] for x in json.loads(files[BASELINE])]
    models = sorted(m for m in files if m != BASELINE)
    df = pd.concat([rows(m, files[m], instructions) for m in models], ignore_index=True)
    df["std_delta_len"] = df["delta_len"] / df.groupby("model")["delta_len"].transform("std")

    n, n_models, n_items = len(df), len(models), len(instructions)
    model_id = df["model"].map({m: k for k, m in enumerate(models)}).to_numpy()
    item = df["index"].to_numpy()
    r = np.arange(n)
    keep = item > 0  # dummy coding: instruction 0 is the reference level, γ_0 = 0
    x = sparse.csr_matrix(
        (
            np.concatenate([np.tanh(df["std_delta_len"].to_numpy()), np.ones(n), np.ones(keep.sum())]),
            (np.concatenate([r, r, r[keep]]), np.concatenate([model_id, n_models + model_id, 2 * n_models + item[keep] - 1])),
        ),
        shape=(n, 2 * n_models + n_items - 1),
    )
    y = df["preference"].to_numpy()

    def loss(b):
        z = x @ b
        ll = y * -np.logaddexp(0, -z) + (1 - y) * -np.logaddexp(0, z)
        grad = x.T @ (y - 1 / (1 + np.exp(-z)))
        return -ll.sum() + RIDGE * b @ b, -grad + 2 * RIDGE * b

    fit = minimize(loss, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 20000, "ftol": 1e-14, "gtol": 1e-8})
    assert fit.success, fit.message
    gamma = np.concatenate([[0.0], fit.x[2 * n_models:]])

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(f"# refit by scripts/alpaca_eval_difficulty.py from tatsu-lab/alpaca_eval (Apache-2.0), {len(models)} models' {ANNOTATOR} annotations: {' '.join(models)}\n")
        f.write("index,instruction_difficulty\n")
        for i, g in enumerate(gamma):
            f.write(f"{i},{g:.10f}\n")
    tmp.rename(args.out)
    print(f"{len(models)} models, {n} annotations, {n_items} instructions -> {args.out}")


if __name__ == "__main__":
    main()
