//! PPO for language models (Schulman et al. 2017, "Proximal Policy Optimization Algorithms";
//! Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences"; Ouyang et al. 2022,
//! "Training language models to follow instructions with human feedback"), with the conventions of
//! TRL's `PPOTrainer` (TRL ≤ 0.2x, `trl/trainer/ppo_trainer.py`) unless stated.
//!
//! One rollout of a prompt x and completion y = (y_1..y_T) is an episode with one step per token:
//!
//! 1. rewards (Ziegler §2.2): r_t = −β·kl_t, plus the reward-model score R(x, y) at the last real
//!    token, kl_t = log π_old(y_t) − log π_ref(y_t) (k1; any [`KlEstimator`] may be used);
//! 2. GAE (Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage
//!    Estimation"): δ_t = r_t + γ V_{t+1} − V_t, A_t = Σ_l (γλ)^l δ_{t+l}, returns R_t = A_t + V_t,
//!    with V_{T+1} = 0 past the last real token;
//! 3. A is whitened over the batch's real tokens;
//! 4. clipped surrogate (Schulman 2017, eq. 7): L^CLIP = mean_t max(−A_t ρ_t, −A_t clip(ρ_t, 1−ε, 1+ε)),
//!    ρ_t = π_θ(y_t)/π_old(y_t), and the clipped value loss
//!    L^V = ½ mean_t max((V_t − R_t)², (clip(V_t, V_old−ε_v, V_old+ε_v) − R_t)²).
//!
//! Deviation from TRL, on purpose: TRL adds the score at index `last + 1` when the row has
//! padding there (its `sequence_lengths_p1`), i.e. one step after the final token, where the value
//! head sees a state the policy never acts in. Here the score is added at the last real token, as
//! in Ziegler et al. and the brief; on rows that fill the whole completion width both agree.
//! TRL's `policy/approxkl_avg` and `val/ratio` average over padding (where the log-ratio is 0 and
//! the ratio 1); here they average over real tokens only.

use crate::kl::KlEstimator;
use crate::masked;
use crate::{Error, Result};
use candle_core::{DType, Tensor, D};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct PpoConfig {
    /// Discount γ; 1 because the only non-KL reward arrives at the end of a short episode.
    pub gamma: f32,
    /// GAE λ.
    pub lam: f32,
    /// Policy clip ε.
    pub cliprange: f32,
    /// Value clip ε_v.
    pub cliprange_value: f32,
    /// Weight of the value loss in `policy + vf_coef·value`.
    pub vf_coef: f32,
    /// Per-token KL estimator inside the reward.
    pub kl_estimator: KlEstimator,
    /// Whiten per-token rewards (scale only, `shift_mean = false`) before GAE.
    pub whiten_rewards: bool,
}

impl Default for PpoConfig {
    /// TRL `PPOConfig` defaults.
    fn default() -> Self {
        Self {
            gamma: 1.0,
            lam: 0.95,
            cliprange: 0.2,
            cliprange_value: 0.2,
            vf_coef: 0.1,
            kl_estimator: KlEstimator::K1,
            whiten_rewards: false,
        }
    }
}

/// What to do to the score of a completion that hit the length limit without an EOS token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MissingEos {
    /// Keep the reward model's score.
    Keep,
    /// `score − p` (TRL's `missing_eos_penalty`).
    Subtract(f32),
    /// Replace the score by a fixed value (Ziegler et al. 2019 give truncated samples −1).
    Replace(f32),
}

/// Scores after the missing-EOS rule; `has_eos[i]` tells whether completion i ended with EOS.
pub fn penalize_missing_eos(scores: &[f32], has_eos: &[bool], rule: MissingEos) -> Result<Vec<f32>> {
    if scores.len() != has_eos.len() {
        return Err(Error::Usage(format!("{} scores but {} EOS flags", scores.len(), has_eos.len())));
    }
    Ok(scores
        .iter()
        .zip(has_eos)
        .map(|(&s, &eos)| match (eos, rule) {
            (true, _) | (false, MissingEos::Keep) => s,
            (false, MissingEos::Subtract(p)) => s - p,
            (false, MissingEos::Replace(v)) => v,
        })
        .collect())
}

/// Number of real tokens of each row of a right-padded mask; errors on an empty row.
pub fn lengths(mask: &Tensor) -> Result<Vec<usize>> {
    let m = mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    m.iter()
        .enumerate()
        .map(|(i, row)| {
            let n = row.iter().filter(|&&v| v > 0.0).count();
            if n == 0 {
                return Err(Error::Usage(format!("row {i} has no completion token to put its reward on")));
            }
            if row[..n].iter().any(|&v| v <= 0.0) {
                return Err(Error::Usage(format!("row {i} of the completion mask is not right-padded")));
            }
            Ok(n)
        })
        .collect()
}

/// Per-token rewards `(rewards, non_score_reward)`, both `[b, c]`, zero in padding:
/// non_score_t = −β·kl_t and rewards = non_score + score at the last real token (Ziegler et al.).
pub fn token_rewards(kl: &Tensor, scores: &[f32], mask: &Tensor, beta: f64) -> Result<(Tensor, Tensor)> {
    let (b, c) = kl.dims2()?;
    if scores.len() != b {
        return Err(Error::Usage(format!("{} scores for a batch of {b}", scores.len())));
    }
    let non_score = ((kl * mask)? * -beta)?;
    let mut last = vec![0f32; b * c];
    for (i, n) in lengths(mask)?.into_iter().enumerate() {
        last[i * c + n - 1] = scores[i];
    }
    let last = Tensor::from_vec(last, (b, c), kl.device())?;
    Ok(((&non_score + last)?, non_score))
}

/// Generalised advantage estimation over right-padded rows: returns `(advantages, returns)`
/// `[b, c]`, zero in padding. Rewards and values are read on real tokens only and the value
/// after the last real token is 0 (the episode ends there).
pub fn gae(rewards: &Tensor, values: &Tensor, mask: &Tensor, gamma: f32, lam: f32) -> Result<(Tensor, Tensor)> {
    let (b, c) = rewards.dims2()?;
    let r = rewards.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let v = values.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let m = mask.to_dtype(DType::F32)?.to_vec2::<f32>()?;
    let (mut adv, mut ret) = (vec![0f32; b * c], vec![0f32; b * c]);
    for i in 0..b {
        let mut last_gae = 0f32;
        for t in (0..c).rev() {
            let next_v = if t + 1 < c { v[i][t + 1] * m[i][t + 1] } else { 0.0 };
            let delta = r[i][t] * m[i][t] + gamma * next_v - v[i][t] * m[i][t];
            last_gae = (delta + gamma * lam * last_gae) * m[i][t];
            adv[i * c + t] = last_gae;
            ret[i * c + t] = (last_gae + v[i][t]) * m[i][t];
        }
    }
    let dev = rewards.device();
    Ok((Tensor::from_vec(adv, (b, c), dev)?, Tensor::from_vec(ret, (b, c), dev)?))
}

/// The whole rollout-side pipeline of one PPO batch (no gradients): KL-shaped rewards,
/// optional reward whitening, GAE, advantage whitening.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// `[b, c]` per-token KL estimate (π_old vs π_ref).
    pub kl: Tensor,
    pub non_score_reward: Tensor,
    pub rewards: Tensor,
    /// Whitened advantages, zero in padding.
    pub advantages: Tensor,
    pub returns: Tensor,
}

pub fn rollout(
    cfg: &PpoConfig,
    logp: &Tensor,
    ref_logp: &Tensor,
    values: &Tensor,
    scores: &[f32],
    mask: &Tensor,
    beta: f64,
) -> Result<Rollout> {
    let kl = (crate::kl::per_token_kl(logp, ref_logp, cfg.kl_estimator)? * mask)?;
    let (mut rewards, non_score_reward) = token_rewards(&kl, scores, mask, beta)?;
    if cfg.whiten_rewards {
        rewards = masked::whiten(&rewards, mask, false)?;
    }
    let (adv, returns) = gae(&rewards, values, mask, cfg.gamma, cfg.lam)?;
    let advantages = masked::whiten(&adv, mask, true)?;
    Ok(Rollout { kl, non_score_reward, rewards, advantages, returns })
}

/// Clipped policy loss and its diagnostics.
#[derive(Debug, Clone)]
pub struct PolicyLoss {
    /// Scalar, differentiable in `new_logp`.
    pub loss: Tensor,
    /// `policy/clipfrac_avg`: fraction of real tokens where the clipped term is the larger.
    pub clipfrac: f64,
    /// `policy/approxkl_avg`: ½ mean (log π_θ − log π_old)² (Schulman's k2 of the update).
    pub approxkl: f64,
    /// `val/ratio`: mean ρ.
    pub ratio: f64,
}

/// L^CLIP = mean_t max(−A_t ρ_t, −A_t clip(ρ_t, 1−ε, 1+ε)) over real tokens.
pub fn policy_loss(
    new_logp: &Tensor,
    old_logp: &Tensor,
    adv: &Tensor,
    mask: &Tensor,
    cliprange: f32,
) -> Result<PolicyLoss> {
    let diff = (new_logp - old_logp)?;
    let ratio = diff.exp()?;
    let l1 = (adv.neg()? * &ratio)?;
    let l2 = (adv.neg()? * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)?)?;
    let loss = masked::mean(&l1.maximum(&l2)?, mask)?;
    let clipped = l2.gt(&l1)?.to_dtype(DType::F32)?;
    Ok(PolicyLoss {
        loss,
        clipfrac: masked::scalar(&masked::mean(&clipped, mask)?)?,
        approxkl: 0.5 * masked::scalar(&masked::mean(&diff.detach().sqr()?, mask)?)?,
        ratio: masked::scalar(&masked::mean(&ratio.detach(), mask)?)?,
    })
}

/// Clipped value loss and `val/clipfrac_avg`.
#[derive(Debug, Clone)]
pub struct ValueLoss {
    pub loss: Tensor,
    pub clipfrac: f64,
}

/// L^V = ½ mean_t max((V_t − R_t)², (clip(V_t, V_old−ε_v, V_old+ε_v) − R_t)²) over real tokens.
pub fn value_loss(
    vpred: &Tensor,
    old_values: &Tensor,
    returns: &Tensor,
    mask: &Tensor,
    cliprange_value: f32,
) -> Result<ValueLoss> {
    let lo = (old_values - cliprange_value as f64)?;
    let hi = (old_values + cliprange_value as f64)?;
    let clipped = vpred.maximum(&lo)?.minimum(&hi)?;
    let l1 = (vpred - returns)?.sqr()?;
    let l2 = (clipped - returns)?.sqr()?;
    let loss = (masked::mean(&l1.maximum(&l2)?, mask)? * 0.5)?;
    let frac = masked::mean(&l2.gt(&l1)?.to_dtype(DType::F32)?, mask)?;
    Ok(ValueLoss { loss, clipfrac: masked::scalar(&frac)? })
}

/// `[b, c]` entropy of the policy's next-token distribution, H = −Σ_v p_v log p_v, from logits
/// `[b, c, vocab]`.
pub fn entropy_from_logits(logits: &Tensor) -> Result<Tensor> {
    entropy_from_logprobs(&mismatch_models::ops::log_softmax_last_dim(&logits.to_dtype(DType::F32)?)?)
}

/// [`entropy_from_logits`] from the log-probabilities `[b, c, vocab]` (f32).
pub fn entropy_from_logprobs(logp: &Tensor) -> Result<Tensor> {
    Ok((logp.exp()? * logp)?.sum(D::Minus1)?.neg()?)
}

/// The `objective/*` metrics of a rollout, TRL names: per-sequence sums averaged over the batch.
/// `objective/entropy` is the mean sequence entropy Σ_t H_t from the logits (TRL logs the
/// one-sample estimate −Σ_t log π(y_t) instead, which has the same expectation).
pub fn rollout_metrics(
    r: &Rollout,
    scores: &[f32],
    entropy: Option<&Tensor>,
    mask: &Tensor,
) -> Result<BTreeMap<&'static str, f64>> {
    let mean_rows = |x: &Tensor| -> Result<f64> { masked::scalar(&masked::sum_rows(x, mask)?.mean_all()?) };
    let score = scores.iter().map(|&s| s as f64).sum::<f64>() / scores.len().max(1) as f64;
    let nsr = mean_rows(&r.non_score_reward)?;
    let mut m = BTreeMap::new();
    m.insert("objective/kl", mean_rows(&r.kl)?);
    m.insert("objective/non_score_reward", nsr);
    m.insert("objective/scores", score);
    m.insert("objective/rlhf_reward", nsr + score);
    if let Some(h) = entropy {
        m.insert("objective/entropy", mean_rows(h)?);
    }
    Ok(m)
}

/// PPO-ptx (Ouyang et al. 2022, eq. 2): the RL loss plus γ times the pretraining language-model
/// loss on pretraining data, γ = 27.8 in InstructGPT.
pub fn ptx_loss(ppo_loss: &Tensor, pretrain_loss: &Tensor, gamma: f64) -> Result<Tensor> {
    Ok((ppo_loss + (pretrain_loss * gamma)?)?)
}

/// InstructGPT's pretraining-mix coefficient.
pub const INSTRUCTGPT_PTX_COEF: f64 = 27.8;
