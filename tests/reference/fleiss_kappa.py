"""Reference agreement statistics for PandaLM's 3-annotator test set (crates/data agreement tests).

Fleiss' kappa comes from statsmodels (statsmodels.stats.inter_rater.fleiss_kappa, method="fleiss");
pairwise agreement and the leave-one-out accuracy ceiling are computed here with numpy from their
definitions in crates/data/src/agreement.rs.

Run from the repository root:  python3 tests/reference/fleiss_kappa.py
Writes tests/fixtures/pandalm_agreement.json.
"""

import itertools
import json
import os

import numpy as np
import statsmodels
from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "..", "shared", "data", "pandalm", "testset-v1.json")

rows = json.load(open(DATA, encoding="utf-8"))
labels = np.array([[r["annotator1"], r["annotator2"], r["annotator3"]] for r in rows])  # [N, 3], 0 tie / 1 / 2
n_items, n_raters = labels.shape

table, _ = aggregate_raters(labels, n_cat=3)  # [N, 3] counts n_ij
kappa = fleiss_kappa(table, method="fleiss")

pairs = list(itertools.combinations(range(n_raters), 2))
per_pair = {f"{a + 1}-{b + 1}": float(np.mean(labels[:, a] == labels[:, b])) for a, b in pairs}
pairwise = float(np.mean([labels[:, a] == labels[:, b] for a, b in pairs]))


def strict_majority(xs):
    vals, counts = np.unique(xs, return_counts=True)
    winners = vals[2 * counts > len(xs)]
    return int(winners[0]) if len(winners) else None


correct = cases = 0
for row in labels:
    for a in range(n_raters):
        m = strict_majority(np.delete(row, a))
        if row[a] in (1, 2) and m in (1, 2):
            cases += 1
            correct += int(row[a] == m)

majority = {"tie": 0, "response1": 0, "response2": 0, "none": 0}
for row in labels:
    m = strict_majority(row)
    majority[{None: "none", 0: "tie", 1: "response1", 2: "response2"}[m]] += 1

# Wikipedia's worked example (10 subjects, 14 raters, 5 categories): kappa = 0.210 to 3 decimals.
wiki = np.array([
    [0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7],
])

out = {
    "source": "shared/data/pandalm/testset-v1.json",
    "generator": f"tests/reference/fleiss_kappa.py (statsmodels {statsmodels.__version__}, numpy {np.__version__})",
    "items": int(n_items),
    "annotators": int(n_raters),
    "fleiss_kappa": float(kappa),
    "pairwise_agreement": pairwise,
    "per_pair_agreement": per_pair,
    "ceiling": correct / cases,
    "ceiling_cases": cases,
    "majority": majority,
    "wikipedia_example_kappa": float(fleiss_kappa(wiki, method="fleiss")),
}
path = os.path.join(ROOT, "tests", "fixtures", "pandalm_agreement.json")
with open(path, "w") as f:
    json.dump(out, f, indent=2)
    f.write("\n")
print(json.dumps(out, indent=2))
