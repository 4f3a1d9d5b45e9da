"""Reference BCa intervals for crates/eval (stats::bca_interval), from scipy.stats.bootstrap.

Writes tests/fixtures/bca.json: for a few fixed samples (skewed, symmetric, 0/1 outcomes), the
data, a fixed set of bootstrap replicates of the mean (numpy, seeded), and the BCa 95% interval
scipy computes from exactly those replicates (passed back through `bootstrap_result`), so the
Rust test compares the interval formula, not the random draws.

    python3 -m venv venv && venv/bin/pip install numpy scipy && venv/bin/python tests/reference/bca.py
"""
import json
import pathlib
from types import SimpleNamespace

import numpy as np
import scipy
from scipy import stats

rng = np.random.default_rng(20261203)
cases = {
    "exponential_30": rng.exponential(1.0, 30),
    "normal_50": rng.normal(0.3, 2.0, 50),
    "accuracy_0_1_80": (rng.random(80) < 0.85).astype(float),
}
out = {"scipy": scipy.__version__, "cases": []}
for name, x in cases.items():
    idx = rng.integers(0, len(x), size=(2000, len(x)))
    boots = x[idx].mean(axis=1)
    res = stats.bootstrap(
        (x,),
        np.mean,
        n_resamples=0,
        method="BCa",
        confidence_level=0.95,
        bootstrap_result=SimpleNamespace(bootstrap_distribution=boots),
    )
    out["cases"].append(
        {
            "name": name,
            "data": x.tolist(),
            "boots": boots.tolist(),
            "lo": float(res.confidence_interval.low),
            "hi": float(res.confidence_interval.high),
        }
    )
path = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "bca.json"
path.write_text(json.dumps(out))
print(f"wrote {path}")
