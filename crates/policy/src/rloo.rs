//! REINFORCE Leave-One-Out (Kool et al. 2019, "Buy 4 REINFORCE Samples, Get a Baseline for Free!";
//! Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for Learning from
//! Human Feedback in LLMs").
//!
//! For k completions y_1..y_k of one prompt with rewards r_i, the baseline of sample i is the mean
//! of the others: A_i = r_i − 1/(k−1) Σ_{j≠i} r_j, an unbiased baseline because it does not
//! depend on y_i. The loss is REINFORCE on the whole sequence, −A_i · log π(y_i | x) (Ahmadian
//! eq. 6). The KL to the reference enters either in the reward, r_i = R(x, y_i) − β·Σ_t kl_t
//! (Ahmadian et al.; TRL's RLOO default), or as a separate loss term β·mean Σ_t kl_t.
//!
//! Layout: samples of one prompt are contiguous (`[p0 s0, p0 s1, …, p0 s(k−1), p1 s0, …]`), as
//! GRPO's `repeat_interleave`; TRL's RLOOTrainer ≤ 0.2x used the transposed layout.

use crate::kl::KlEstimator;
use crate::masked;
use crate::{Error, Result};
use candle_core::Tensor;

/// Sequence reward with the KL inside: `r_i = score_i − β·seq_kl_i`.
pub fn kl_shaped_rewards(scores: &[f32], seq_kl: &[f32], beta: f64) -> Result<Vec<f32>> {
    if scores.len() != seq_kl.len() {
        return Err(Error::Usage(format!("{} scores but {} KL values", scores.len(), seq_kl.len())));
    }
    Ok(scores.iter().zip(seq_kl).map(|(&s, &k)| (s as f64 - beta * k as f64) as f32).collect())
}

/// Leave-one-out advantages A_i = r_i − (Σ_j r_j − r_i)/(k−1) per group of k.
pub fn advantages(rewards: &[f32], k: usize) -> Result<Vec<f32>> {
    if k < 2 || rewards.len() % k != 0 {
        // (`%` rather than `is_multiple_of`: the workspace supports Rust 1.85.)
        return Err(Error::Usage(format!(
            "RLOO needs k ≥ 2 samples per prompt and a batch that is a multiple of k (k = {k}, batch = {})",
            rewards.len()
        )));
    }
    let mut out = Vec::with_capacity(rewards.len());
    for g in rewards.chunks(k) {
        let total: f64 = g.iter().map(|&r| r as f64).sum();
        out.extend(g.iter().map(|&r| (r as f64 - (total - r as f64) / (k - 1) as f64) as f32));
    }
    Ok(out)
}

/// REINFORCE loss −mean_i A_i Σ_t log π(y_{i,t}), differentiable in `logp` `[b, c]`.
pub fn reinforce_loss(logp: &Tensor, mask: &Tensor, adv: &[f32]) -> Result<Tensor> {
    let a = Tensor::from_slice(adv, adv.len(), logp.device())?;
    Ok((masked::sum_rows(logp, mask)? * a)?.mean_all()?.neg()?)
}

/// KL as a loss term instead of in the reward: β · mean_i Σ_t kl_t (differentiable in `logp`).
pub fn kl_loss(logp: &Tensor, ref_logp: &Tensor, mask: &Tensor, est: KlEstimator, beta: f64) -> Result<Tensor> {
    Ok((crate::kl::sequence_kl(logp, ref_logp, mask, est)?.mean_all()? * beta)?)
}

/// The clipped surrogate TRL's `RLOOTrainer` optimises when it takes several gradient steps on
/// one batch (Ahmadian et al. 2024 use one step, where this equals [`reinforce_loss`] in value of
/// the gradient): with the sequence ratio ρ_i = exp(Σ_t log π_θ(y_it) − Σ_t log π_old(y_it)),
/// L = mean_i max(−A_i ρ_i, −A_i clip(ρ_i, 1−ε, 1+ε)) (Schulman et al. 2017, eq. 7, one action
/// per sequence). At ρ = 1, ∇L = −mean_i A_i ∇Σ_t log π(y_it), REINFORCE's gradient.
/// Returns `(loss, clipfrac, approxkl = ½ mean (log ρ)², mean ρ)`.
pub fn clipped_sequence_loss(
    logp: &Tensor,
    old_logp: &Tensor,
    mask: &Tensor,
    adv: &[f32],
    cliprange: f32,
) -> Result<(Tensor, f64, f64, f64)> {
    let b = logp.dim(0)?;
    if adv.len() != b {
        return Err(Error::Usage(format!("{} advantages for a batch of {b}", adv.len())));
    }
    let a = Tensor::from_slice(adv, b, logp.device())?;
    let log_ratio = (masked::sum_rows(logp, mask)? - masked::sum_rows(old_logp, mask)?)?;
    let ratio = log_ratio.exp()?;
    let l1 = (a.neg()? * &ratio)?;
    let l2 = (a.neg()? * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)?)?;
    let loss = l1.maximum(&l2)?.mean_all()?;
    let clipfrac = masked::scalar(&l2.gt(&l1)?.to_dtype(candle_core::DType::F32)?.mean_all()?)?;
    let approxkl = 0.5 * masked::scalar(&log_ratio.detach().sqr()?.mean_all()?)?;
    let mean_ratio = masked::scalar(&ratio.detach().mean_all()?)?;
    Ok((loss, clipfrac, approxkl, mean_ratio))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn clipped_sequence_loss_by_hand() {
        // Row 0: Σ logp − Σ old = (−1 − 2) − (−1.5 − 2) = 0.5 → ρ = e^0.5 = 1.6487, A = 1:
        //   max(−1.6487, −1.2) = −1.2 (clipped). Row 1 (one real token): log ρ = −0.1 → ρ = 0.9048,
        //   A = −2: max(1.8097, 2·0.9048 = 1.8097) equal (inside the clip range) → 1.8097.
        let dev = Device::Cpu;
        let logp = Tensor::new(&[[-1.0f32, -2.0], [-0.6, 9.0]], &dev).unwrap();
        let old = Tensor::new(&[[-1.5f32, -2.0], [-0.5, 0.0]], &dev).unwrap();
        let mask = Tensor::new(&[[1.0f32, 1.0], [1.0, 0.0]], &dev).unwrap();
        let (loss, clipfrac, approxkl, ratio) = clipped_sequence_loss(&logp, &old, &mask, &[1.0, -2.0], 0.2).unwrap();
        let r1 = (-0.1f64).exp();
        let want = (-1.2 + 2.0 * r1) / 2.0;
        assert!((masked::scalar(&loss).unwrap() - want).abs() < 1e-5);
        assert_eq!(clipfrac, 0.5);
        assert!((approxkl - 0.5 * (0.25 + 0.01) / 2.0).abs() < 1e-6);
        assert!((ratio - (0.5f64.exp() + r1) / 2.0).abs() < 1e-5);
    }
}
