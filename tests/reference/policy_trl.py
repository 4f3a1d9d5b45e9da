"""Reference values for crates/policy (mismatch-policy) from TRL's formulas, transcribed in torch.

The formulas are re-typed from TRL's sources (trl 0.19.1: trainer/ppo_trainer.py, rloo_trainer.py,
cpo_trainer.py, dpo_trainer.py "sigmoid" with label_smoothing, core.py masked_mean/var/whiten;
trl 1.16.0: trainer/grpo_trainer.py advantages and loss, dpo_trainer.py "ipo" and "sigmoid_norm")
and from openai/lm-human-preferences (AdaptiveKLController). Deliberate differences from TRL, the
same as in the Rust code and documented there:
  * PPO: the score is added at the last real token (TRL: at last+1 when the row has padding);
    values are masked with the completion mask (TRL: one extra position, `padding_mask_p1`).
  * PPO: policy/approxkl_avg and val/ratio average over real tokens only.
  * RLOO: samples of one prompt are contiguous (TRL 0.19 used the transposed layout).

Run from the repository root:  python3 tests/reference/policy_trl.py
Writes tests/fixtures/policy_trl.json, read by crates/policy/tests/trl_reference.rs.
"""

import json
import os

import torch
import torch.nn.functional as F

torch.manual_seed(0)
torch.set_default_dtype(torch.float64)  # references in f64; Rust computes in f32

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "fixtures", "policy_trl.json")


# --- trl.core (0.19.1) ---------------------------------------------------------------------------
def masked_mean(values, mask, axis=None):
    if axis is not None:
        return (values * mask).sum(axis=axis) / mask.sum(axis=axis)
    return (values * mask).sum() / mask.sum()


def masked_var(values, mask, unbiased=True):
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        variance = variance * n / (n - 1)
    return variance


def masked_whiten(values, mask, shift_mean=True):
    mean, var = masked_mean(values, mask), masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened += mean
    return whitened


def tolist(x):
    return x.detach().tolist()


B, C, V = 4, 6, 7
lengths = [6, 4, 2, 5]
mask = torch.tensor([[1.0 if t < n else 0.0 for t in range(C)] for n in lengths])
logp = -3 * torch.rand(B, C)  # π_old (sampling policy)
ref_logp = -3 * torch.rand(B, C)
new_logp = logp + 0.4 * torch.randn(B, C)  # π_θ after some updates: ratios both inside and outside the clip
values = torch.randn(B, C)
vpred = values + 0.5 * torch.randn(B, C)
scores = torch.randn(B)
logits = 2 * torch.randn(B, C, V)
beta, gamma, lam, cliprange, cliprange_value = 0.05, 1.0, 0.95, 0.2, 0.2

# --- KL estimators (Schulman 2020; TRL ppo_trainer "k1"/"k3") ------------------------------------
logr = ref_logp - logp
k1 = -logr
k2 = 0.5 * logr**2
k3 = (logr.exp() - 1) - logr


def ppo_rollout(kl, whiten_rewards):
    kl = kl * mask  # TRL fills both log-prob tensors with INVALID_LOGPROB in padding: kl = 0 there
    non_score_reward = -beta * kl
    rewards = non_score_reward.clone()
    last = torch.tensor(lengths) - 1
    rewards[torch.arange(B), last] += scores
    if whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
        rewards = torch.masked_fill(rewards, mask == 0, 0)
    vals = values * mask
    lastgaelam = 0
    advantages_reversed = []
    for t in reversed(range(C)):
        nextvalues = vals[:, t + 1] if t < C - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - vals[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], axis=1)
    returns = advantages + vals
    advantages = masked_whiten(advantages, mask)
    advantages = torch.masked_fill(advantages, mask == 0, 0)
    return kl, non_score_reward, rewards, advantages, returns


out = {"inputs": {}, "kl": {}, "ppo": {}, "rloo": {}, "grpo": {}, "dpo": {}, "sft": {}, "kl_controller": {}}
out["inputs"] = {
    "mask": tolist(mask), "logp": tolist(logp), "ref_logp": tolist(ref_logp), "new_logp": tolist(new_logp),
    "values": tolist(values), "vpred": tolist(vpred), "scores": tolist(scores), "logits": tolist(logits),
    "beta": beta, "gamma": gamma, "lam": lam, "cliprange": cliprange, "cliprange_value": cliprange_value,
}
out["kl"] = {"k1": tolist(k1), "k2": tolist(k2), "k3": tolist(k3),
             "seq_k3": tolist((k3 * mask).sum(1)), "mean_k1": masked_mean(k1, mask).item()}

for name, whiten in [("plain", False), ("whiten_rewards", True)]:
    kl, nsr, rewards, adv, ret = ppo_rollout(k1, whiten)
    out["ppo"][name] = {"rewards": tolist(rewards), "non_score_reward": tolist(nsr),
                        "advantages": tolist(adv), "returns": tolist(ret)}
kl, nsr, rewards, adv, ret = ppo_rollout(k1, False)

# policy and value losses (ppo_trainer.py, inner loop)
logprobs_diff = new_logp - logp
ratio = torch.exp(logprobs_diff)
pg_losses = -adv * ratio
pg_losses2 = -adv * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
pg_loss = masked_mean(torch.max(pg_losses, pg_losses2), mask)
pg_clipfrac = masked_mean((pg_losses2 > pg_losses).double(), mask)
approxkl = 0.5 * masked_mean(logprobs_diff**2, mask)
ratio_mean = masked_mean(ratio, mask)
vpredclipped = torch.clamp(vpred, values - cliprange_value, values + cliprange_value)
vf_losses1 = torch.square(vpred - ret)
vf_losses2 = torch.square(vpredclipped - ret)
vf_loss = 0.5 * masked_mean(torch.max(vf_losses1, vf_losses2), mask)
vf_clipfrac = masked_mean((vf_losses2 > vf_losses1).double(), mask)
prob_dist = torch.nn.functional.softmax(logits, dim=-1)
entropy = torch.logsumexp(logits, dim=-1) - torch.sum(prob_dist * logits, dim=-1)
out["ppo"]["loss"] = {
    "policy_loss": pg_loss.item(), "policy/clipfrac_avg": pg_clipfrac.item(), "policy/approxkl_avg": approxkl.item(),
    "val/ratio": ratio_mean.item(), "value_loss": vf_loss.item(), "val/clipfrac_avg": vf_clipfrac.item(),
    "entropy": tolist(entropy),
}
mean_kl = (kl * mask).sum(1).mean()
mean_nsr = (nsr * mask).sum(1).mean()
out["ppo"]["metrics"] = {
    "objective/kl": mean_kl.item(), "objective/non_score_reward": mean_nsr.item(),
    "objective/rlhf_reward": (mean_nsr + scores.mean()).item(), "objective/scores": scores.mean().item(),
    "objective/entropy": (entropy * mask).sum(1).mean().item(),
}

# --- RLOO (rloo_trainer.py 0.19.1, sequence-level KL, contiguous groups) ---------------------------
k = 3
rl_scores = torch.randn(6)
rl_seq_kl = torch.rand(6)
rl_beta = 0.05
rlhf_reward = rl_scores - rl_beta * rl_seq_kl
r = rlhf_reward.reshape(-1, k)
baseline = (r.sum(1, keepdim=True) - r) / (k - 1)
rl_adv = (r - baseline).flatten()
out["rloo"] = {"k": k, "scores": tolist(rl_scores), "seq_kl": tolist(rl_seq_kl), "beta": rl_beta,
               "rewards": tolist(rlhf_reward), "advantages": tolist(rl_adv),
               # REINFORCE on the PPO batch with the first 4 advantages
               "reinforce_loss": (-(rl_adv[:4] * (logp * mask).sum(1)).mean()).item()}

# --- GRPO (grpo_trainer.py 1.16.0) -----------------------------------------------------------------
G = 3
g_rewards = torch.tensor([1.0, 0.0, 0.5, 2.0, 2.0, -1.0])
grouped = g_rewards.view(-1, G)
mean_g = grouped.mean(1).repeat_interleave(G)
std_g = grouped.std(1).repeat_interleave(G)  # unbiased, as trl's nanstd
adv_std = (g_rewards - mean_g) / (std_g + 1e-4)
adv_none = g_rewards - mean_g
g_adv = adv_std[:B].unsqueeze(1)
g_beta, eps_low, eps_high = 0.04, 0.2, 0.28
coef_1 = torch.exp(new_logp - logp)
coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
per_token_kl = torch.exp(ref_logp - new_logp) - (ref_logp - new_logp) - 1
per_token_loss = -torch.min(coef_1 * g_adv, coef_2 * g_adv) + g_beta * per_token_kl
is_clipped = ((coef_1 < 1 - eps_low) | (coef_1 > 1 + eps_high)).double()
out["grpo"] = {
    "group": G, "rewards": tolist(g_rewards), "adv_std": tolist(adv_std), "adv_none": tolist(adv_none),
    "beta": g_beta, "epsilon_low": eps_low, "epsilon_high": eps_high,
    "loss_sequence": ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean().item(),
    "loss_token": ((per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)).item(),
    "loss_constant": ((per_token_loss * mask).sum() / (B * C)).item(),
    "kl": masked_mean(per_token_kl, mask).item(),
    "clipfrac": masked_mean(is_clipped, mask).item(),
}

# --- DPO family ------------------------------------------------------------------------------------
P = 5
chosen = -20 * torch.rand(P) - 1
rejected = -20 * torch.rand(P) - 1
ref_chosen = chosen + 2 * torch.randn(P)
ref_rejected = rejected + 2 * torch.randn(P)
chosen_len = torch.tensor([3.0, 7.0, 1.0, 12.0, 5.0])
rejected_len = torch.tensor([4.0, 2.0, 9.0, 6.0, 5.0])
d_beta = 0.1
cl, rl = chosen - ref_chosen, rejected - ref_rejected
logits_h = cl - rl


def sigmoid_ls(ls):  # dpo_trainer.py 0.19.1, loss_type="sigmoid"
    return -F.logsigmoid(d_beta * logits_h) * (1 - ls) - F.logsigmoid(-d_beta * logits_h) * ls


ipo_delta = cl / chosen_len - rl / rejected_len  # dpo_trainer.py 1.16.0, loss_type="ipo"
ipo = (ipo_delta - 1 / (2 * d_beta)) ** 2
norm = -F.logsigmoid(d_beta * ipo_delta)  # loss_type="sigmoid_norm"
simpo_gamma = 0.5  # cpo_trainer.py 0.19.1, loss_type="simpo": logits -= gamma/beta
simpo_logits = chosen / chosen_len - rejected / rejected_len - simpo_gamma / d_beta
simpo = -F.logsigmoid(d_beta * simpo_logits)
cr, rr = d_beta * cl, d_beta * rl
out["dpo"] = {
    "chosen": tolist(chosen), "rejected": tolist(rejected), "ref_chosen": tolist(ref_chosen),
    "ref_rejected": tolist(ref_rejected), "chosen_len": tolist(chosen_len), "rejected_len": tolist(rejected_len),
    "beta": d_beta, "simpo_gamma": simpo_gamma,
    "sigmoid": sigmoid_ls(0.0).mean().item(), "sigmoid_ls0.1": sigmoid_ls(0.1).mean().item(),
    "ipo": ipo.mean().item(), "sigmoid_norm": norm.mean().item(), "simpo": simpo.mean().item(),
    "metrics": {"rewards/chosen": cr.mean().item(), "rewards/rejected": rr.mean().item(),
                "rewards/accuracies": (cr > rr).double().mean().item(), "rewards/margins": (cr - rr).mean().item(),
                "logps/chosen": chosen.mean().item(), "logps/rejected": rejected.mean().item()},
}

# --- SFT ---------------------------------------------------------------------------------------------
out["sft"] = {"loss": (-(logp * mask).sum() / mask.sum()).item()}

# --- Adaptive KL controller (openai/lm-human-preferences, train_policy.py) ----------------------------
kl_value, target, horizon = 0.1, 6.0, 10000
trace = []
for current, n_steps in [(3.0, 512), (6.5, 512), (12.0, 256), (5.9, 1024)]:
    proportional_error = min(max(current / target - 1, -0.2), 0.2)
    kl_value *= 1 + proportional_error * n_steps / horizon
    trace.append({"kl": current, "n_steps": n_steps, "beta": kl_value})
out["kl_controller"] = {"init": 0.1, "target": target, "horizon": horizon, "trace": trace}

with open(OUT, "w") as f:
    json.dump(out, f, indent=1)
print("wrote", OUT)
