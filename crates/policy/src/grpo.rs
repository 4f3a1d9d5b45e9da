//! Group Relative Policy Optimization (Shao et al. 2024, "DeepSeekMath", §4.1, eq. 3 and 4).
//!
//! For G completions of one prompt with rewards r_1..r_G, every token of completion i gets the
//! outcome advantage Â_i = (r_i − mean(r)) / (std(r) + eps) (std is the unbiased sample std and
//! eps = 1e-4, as TRL's `GRPOTrainer`). Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like
//! Training") drops the division by std: Â_i = r_i − mean(r).
//!
//! Per token, with ρ_t = π_θ(y_t)/π_old(y_t):
//!   ℓ_t = −min(ρ_t Â, clip(ρ_t, 1−ε_low, 1+ε_high) Â) + β·k3_t,
//!   k3_t = π_ref/π_θ − log(π_ref/π_θ) − 1 (Schulman's k3, as eq. 4 of the paper).
//!
//! Aggregation of ℓ over tokens ([`Aggregation`]): the paper averages per sequence then over the
//! group (`Sequence`), which weights a token of a short completion more than one of a long
//! completion, so short correct answers and long wrong ones are favoured (Liu et al. 2025; Yu et
//! al. 2025, "DAPO"). The default here is `Token` — one mean over every real token of the batch,
//! DAPO's token-level loss and TRL's current default — because it has no such length bias.
//! `Constant(L)` is Dr. GRPO's Σ ℓ / (batch · L).

use crate::kl::KlEstimator;
use crate::masked;
use crate::{Error, Result};
use candle_core::{DType, Tensor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Aggregation {
    /// Σ_all tokens ℓ / number of real tokens (DAPO / TRL "dapo", "bnpo").
    #[default]
    Token,
    /// mean over sequences of the per-sequence token mean (the GRPO paper; TRL "grpo").
    Sequence,
    /// Σ ℓ / (batch · L) for a fixed L = max completion length (Dr. GRPO).
    Constant(usize),
}

#[derive(Debug, Clone, PartialEq)]
pub struct GrpoConfig {
    pub epsilon_low: f32,
    pub epsilon_high: f32,
    /// Weight of the k3 KL term; 0 drops the reference model.
    pub beta: f64,
    /// Divide by the group std (GRPO) or not (Dr. GRPO).
    pub scale_by_std: bool,
    pub aggregation: Aggregation,
}

impl Default for GrpoConfig {
    /// ε = 0.2 (both sides), β = 0.04 (the paper's value), std scaling, token aggregation.
    fn default() -> Self {
        Self { epsilon_low: 0.2, epsilon_high: 0.2, beta: 0.04, scale_by_std: true, aggregation: Aggregation::Token }
    }
}

/// Group-normalised advantages over contiguous groups of `g` rewards.
pub fn group_advantages(rewards: &[f32], g: usize, scale_by_std: bool) -> Result<Vec<f32>> {
    if g < 2 || rewards.len() % g != 0 {
        return Err(Error::Usage(format!(
            "GRPO needs groups of at least 2 completions and a batch that is a multiple of the group size (group = {g}, batch = {})",
            rewards.len()
        )));
    }
    let mut out = Vec::with_capacity(rewards.len());
    for grp in rewards.chunks(g) {
        let n = g as f64;
        let mean = grp.iter().map(|&r| r as f64).sum::<f64>() / n;
        let var = grp.iter().map(|&r| (r as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let denom = if scale_by_std { var.sqrt() + 1e-4 } else { 1.0 };
        out.extend(grp.iter().map(|&r| ((r as f64 - mean) / denom) as f32));
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct GrpoLoss {
    /// Scalar, differentiable in `logp`.
    pub loss: Tensor,
    /// Fraction of real tokens whose ratio was clipped (TRL's `clip_ratio/region_mean`).
    pub clipfrac: f64,
    /// Mean k3 per real token (TRL's `kl`), 0 without a reference.
    pub kl: f64,
}

/// The GRPO loss of a batch: `logp` from the model being trained, `old_logp` from the policy that
/// sampled (equal to `logp.detach()` on the first step), `ref_logp` from the reference.
pub fn grpo_loss(
    cfg: &GrpoConfig,
    logp: &Tensor,
    old_logp: &Tensor,
    ref_logp: Option<&Tensor>,
    adv: &[f32],
    mask: &Tensor,
) -> Result<GrpoLoss> {
    let b = logp.dim(0)?;
    if adv.len() != b {
        return Err(Error::Usage(format!("{} advantages for a batch of {b}", adv.len())));
    }
    let a = Tensor::from_slice(adv, (b, 1), logp.device())?;
    let ratio = (logp - old_logp)?.exp()?;
    let clipped = ratio.clamp(1.0 - cfg.epsilon_low, 1.0 + cfg.epsilon_high)?;
    let s1 = ratio.broadcast_mul(&a)?;
    let s2 = clipped.broadcast_mul(&a)?;
    let mut per_token = s1.minimum(&s2)?.neg()?;
    let mut kl = 0.0;
    if let Some(r) = ref_logp.filter(|_| cfg.beta != 0.0) {
        let k3 = crate::kl::per_token_kl(logp, r, KlEstimator::K3)?;
        kl = masked::scalar(&masked::mean(&k3.detach(), mask)?)?;
        per_token = (per_token + (k3 * cfg.beta)?)?;
    }
    let loss = match cfg.aggregation {
        Aggregation::Token => masked::mean(&per_token, mask)?,
        Aggregation::Sequence => masked::mean_rows(&per_token, mask)?.mean_all()?,
        Aggregation::Constant(l) => ((&per_token * mask)?.sum_all()? / (b * l) as f64)?,
    };
    let is_clipped = ratio.ne(&clipped)?.to_dtype(DType::F32)?;
    Ok(GrpoLoss { loss, clipfrac: masked::scalar(&masked::mean(&is_clipped, mask)?)?, kl })
}
