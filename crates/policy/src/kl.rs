//! Per-token KL estimators and KL-coefficient controllers.
//!
//! With samples `y_t ~ π` and `log r_t = log π_ref(y_t) − log π(y_t)` (Schulman, "Approximating KL
//! divergence", 2020, http://joschu.net/blog/kl-approx.html), three estimators of
//! `KL(π ‖ π_ref) = E_π[−log r]`:
//!
//! - k1 = −log r = log π − log π_ref: unbiased, high variance, can be negative;
//! - k2 = ½ (log r)²: biased (low for close policies), low variance, ≥ 0;
//! - k3 = (r − 1) − log r: unbiased (E_π[r] = 1) and ≥ 0 since log r ≤ r − 1.
//!
//! PPO-RLHF (Ziegler et al. 2019) puts k1 into the reward; GRPO (Shao et al. 2024) adds k3 to the loss.

use crate::masked;
use crate::Result;
use candle_core::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum KlEstimator {
    K1,
    K2,
    K3,
}

impl KlEstimator {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "k1" => Ok(Self::K1),
            "k2" => Ok(Self::K2),
            "k3" => Ok(Self::K3),
            _ => Err(crate::Error::Usage(format!("unknown KL estimator {s:?} (expected k1, k2 or k3)"))),
        }
    }
}

/// `[b, c]` per-token estimate of KL(π ‖ π_ref) from log-probs of the sampled tokens; padding
/// positions are whatever the inputs hold there (mask them when reducing).
pub fn per_token_kl(logp: &Tensor, ref_logp: &Tensor, est: KlEstimator) -> Result<Tensor> {
    let log_r = (ref_logp - logp)?;
    Ok(match est {
        KlEstimator::K1 => log_r.neg()?,
        KlEstimator::K2 => (log_r.sqr()? * 0.5)?,
        KlEstimator::K3 => ((log_r.exp()? - 1.0)? - &log_r)?,
    })
}

/// `[b]` sequence KL Σ_t kl_t over real tokens.
pub fn sequence_kl(logp: &Tensor, ref_logp: &Tensor, mask: &Tensor, est: KlEstimator) -> Result<Tensor> {
    masked::sum_rows(&per_token_kl(logp, ref_logp, est)?, mask)
}

/// Scalar mean per-token KL over all real tokens of the batch.
pub fn mean_token_kl(logp: &Tensor, ref_logp: &Tensor, mask: &Tensor, est: KlEstimator) -> Result<Tensor> {
    masked::mean(&per_token_kl(logp, ref_logp, est)?, mask)
}

/// The KL coefficient β of the KL-penalised reward `r − β·KL`.
///
/// `Adaptive` is the proportional controller of Ziegler et al. 2019 ("Fine-Tuning Language Models
/// from Human Preferences", §2.2; openai/lm-human-preferences `AdaptiveKLController`):
/// `e = clip(KL/KL_target − 1, −0.2, 0.2)`, `β ← β·(1 + e·n_steps/horizon)`,
/// where `n_steps` is the number of episodes since the last update.
#[derive(Debug, Clone, PartialEq)]
pub enum KlController {
    Fixed { beta: f64 },
    Adaptive { beta: f64, target: f64, horizon: f64 },
}

impl KlController {
    pub fn beta(&self) -> f64 {
        match self {
            Self::Fixed { beta } | Self::Adaptive { beta, .. } => *beta,
        }
    }

    /// Feeds the KL measured on the last batch of `n_steps` episodes.
    pub fn update(&mut self, current_kl: f64, n_steps: usize) {
        if let Self::Adaptive { beta, target, horizon } = self {
            let e = (current_kl / *target - 1.0).clamp(-0.2, 0.2);
            *beta *= 1.0 + e * n_steps as f64 / *horizon;
        }
    }
}
