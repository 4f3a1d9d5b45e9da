"""Diagnostic: how close the refit instruction difficulty comes to AlpacaEval's, through the GLM
weights AlpacaEval publishes in its repository.

AlpacaEval's repository holds each leaderboard model's fitted length-controlled GLM weights
(`src/alpaca_eval/metrics/weights/weighted_alpaca_eval_gpt4_turbo/length_controlled_v1/
baseline_gpt4_1106_preview.csv`: θ_len, θ_diff, θ_model), fitted with the hub's difficulty γ.
Holding those weights fixed, each γᵢ is a one-parameter logistic MLE over the models' public
annotations (ridge 1e-4, damped Newton). With alpaca-7b's published weights and this γ the
LC win rate is mean σ(θ_diff γᵢ + θ_model); the leaderboard's is 5.88.

    python scripts/alpaca_eval_difficulty_given_weights.py --repo PATH/alpaca_eval

Needs numpy, scipy, pandas (and scripts/alpaca_eval_difficulty.py beside it).
"""

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
import alpaca_eval_difficulty as ad  # noqa: E402

WEIGHTS = "src/alpaca_eval/metrics/weights/weighted_alpaca_eval_gpt4_turbo/length_controlled_v1/baseline_gpt4_1106_preview.csv"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", type=Path, required=True)
    args = ap.parse_args()
    files = ad.annotation_files(args.repo)
    text = subprocess.run(["git", "-C", str(args.repo), "show", f"HEAD:{WEIGHTS}"], capture_output=True, text=True, check=True).stdout
    w = pd.read_csv(io.StringIO(text), index_col=0)
    w.columns = ["len", "diff", "base"]
    instructions = [x["instruction"] for x in json.loads(files[ad.BASELINE])]
    models = sorted(m for m in files if m != ad.BASELINE and m in w.index)
    df = pd.concat([ad.rows(m, files[m], instructions) for m in models], ignore_index=True)
    df["std_delta_len"] = df["delta_len"] / df.groupby("model")["delta_len"].transform("std")
    a = w.loc[df.model, "len"].to_numpy() * np.tanh(df.std_delta_len.to_numpy()) + w.loc[df.model, "base"].to_numpy()
    c = w.loc[df.model, "diff"].to_numpy()
    y, item = df.preference.to_numpy(), df["index"].to_numpy()
    n = len(instructions)
    g = np.zeros(n)
    for _ in range(2000):
        p = 1 / (1 + np.exp(-(a + c * g[item])))
        grad = np.bincount(item, c * (y - p), n) - 1e-4 * g
        hess = np.bincount(item, c * c * p * (1 - p), n) + 1e-4
        g += np.clip(grad / hess, -1, 1)
    wa = w.loc["alpaca-7b"]
    lc = 100 * np.mean(1 / (1 + np.exp(-(wa["diff"] * g + wa["base"]))))
    print(f"{len(models)} models with published weights; max |gradient| {np.abs(grad).max():.1e}")
    print(f"alpaca-7b LC win rate, published weights + this difficulty: {lc:.2f} (leaderboard 5.88)")


if __name__ == "__main__":
    main()
