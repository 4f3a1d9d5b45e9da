"""Reference values for crates/reward losses, ensemble aggregates and temperature scaling.

Run: python3 tests/reference/rm_losses.py > tests/fixtures/rm_losses.json
BT / margin / centering use TRL RewardTrainer's exact formulas (trl/trainer/reward_trainer.py).
"""
import itertools
import json

import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(0)
n = 8
rc = (torch.randn(n) * 2.0).tolist()
rr = (torch.randn(n) * 2.0).tolist()
rc[0], rr[0] = 60.0, -50.0   # large margin: naive log(1+exp) would overflow
rc[1], rr[1] = -45.0, 55.0
margin = torch.rand(n).mul(2.0).tolist()
eta = 0.01

def trl_loss(rc, rr, margin=None, coef=None):
    rc = torch.tensor(rc, dtype=torch.float64, requires_grad=True)
    rr = torch.tensor(rr, dtype=torch.float64, requires_grad=True)
    if margin is None:
        loss = -F.logsigmoid(rc - rr).mean()
    else:
        loss = -F.logsigmoid(rc - rr - torch.tensor(margin, dtype=torch.float64)).mean()
    if coef is not None:
        loss = loss + coef * torch.mean((rc + rr) ** 2)
    loss.backward()
    return loss.item(), rc.grad.tolist(), rr.grad.tolist()

bt, bt_gc, bt_gr = trl_loss(rc, rr)
mg, mg_gc, mg_gr = trl_loss(rc, rr, margin)
bt_c, bt_c_gc, _ = trl_loss(rc, rr, None, eta)
cent = eta * float(np.mean((np.array(rc) + np.array(rr)) ** 2))

K = 4
R = (torch.randn(5, K) * 1.5).double()
best = torch.tensor([0, 3, 1, 2, 0])
Rg = R.clone().requires_grad_(True)
kw = torch.stack([
    sum(-F.logsigmoid(Rg[i, a] - Rg[i, b]) for a, b in itertools.combinations(range(K), 2)) / (K * (K - 1) / 2)
    for i in range(R.shape[0])
]).mean()
kw.backward()
bok = F.cross_entropy(R, best).item()
pl = torch.stack([
    sum(torch.logsumexp(R[i, k:], 0) - R[i, k] for k in range(K - 1)) for i in range(R.shape[0])
]).mean().item()

M = np.random.default_rng(0).normal(size=(3, 6))
lam = 0.5

d = np.random.default_rng(1).normal(loc=1.0, scale=3.0, size=200)
logt = torch.zeros((), dtype=torch.float64, requires_grad=True)
opt = torch.optim.LBFGS([logt], lr=0.5, max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-15)
dt = torch.tensor(d)
def closure():
    opt.zero_grad()
    l = -F.logsigmoid(dt / logt.exp()).mean()
    l.backward()
    return l
opt.step(closure)
T = logt.exp().item()

print(json.dumps({
    "r_chosen": rc, "r_rejected": rr, "margin": margin, "eta": eta,
    "bt": bt, "bt_grad_chosen": bt_gc, "bt_grad_rejected": bt_gr,
    "margin_loss": mg, "margin_grad_chosen": mg_gc,
    "centering": cent, "bt_centered": bt_c, "bt_centered_grad_chosen": bt_c_gc,
    "ranked_rewards": R.tolist(), "best": best.tolist(),
    "kwise": kw.item(), "kwise_grad": Rg.grad.tolist(), "best_of_k": bok, "plackett_luce": pl,
    "members": M.tolist(), "uwo_lambda": lam,
    "agg_mean": M.mean(0).tolist(), "agg_min": M.min(0).tolist(),
    "agg_uwo": (M.mean(0) - lam * M.var(0)).tolist(),
    "calib_margins": d.tolist(), "temperature": T,
    "calib_nll": -F.logsigmoid(dt / T).mean().item(),
}, indent=1))
