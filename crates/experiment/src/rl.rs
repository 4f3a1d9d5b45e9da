//! RL against a proxy reward: RLOO (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics")
//! with the KL penalty inside the sequence reward, as TRL's RLOO trainer:
//!
//! ```text
//! r_i = R_proxy(x, y_i) − β · Σ_t (log π(y_i,t) − log π_start(y_i,t))      (k1 estimator)
//! A_i = r_i − 1/(k−1) Σ_{j≠i} r_j                                         (leave-one-out baseline)
//! L   = −mean_i A_i · Σ_t log π(y_i,t)
//! ```
//!
//! The loop is the policy crate's (`mismatch_policy::train::rloo`, `Algo::Rloo`), run with one
//! on-policy gradient step per batch of `prompts_per_step × k` samples (one epoch, one
//! minibatch: the clipped surrogate's gradient is then REINFORCE's), at temperature 1, without
//! gradient clipping. This file maps the experiment's knobs onto it; the setting draws the
//! training prompts ([`crate::pipeline::SeedSetting::rl_prompts`]).

use mismatch_policy::kl::KlEstimator;
use mismatch_policy::train::{Algo, PolicyConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RlConfig {
    pub steps: usize,
    pub prompts_per_step: usize,
    /// k samples per prompt (RLOO group).
    pub samples_per_prompt: usize,
    pub lr: f64,
    /// KL coefficients β of the runs against the single proxy.
    pub kl_coefs: Vec<f64>,
    /// Evaluate (and checkpoint) every this many steps, at step 0 and at the end.
    pub eval_every: usize,
    /// RMs optimised at the first (small) KL coefficient besides the single proxy.
    pub mitigations: Vec<crate::proxy::RmKind>,
}

impl Default for RlConfig {
    fn default() -> Self {
        Self {
            steps: 40,
            prompts_per_step: 16,
            samples_per_prompt: 4,
            lr: 1.5e-4,
            kl_coefs: vec![0.01, 0.1],
            eval_every: 4,
            mitigations: vec![crate::proxy::RmKind::Wco, crate::proxy::RmKind::Uwo, crate::proxy::RmKind::Warm],
        }
    }
}

/// The shared trainer's config for one world RLOO run.
pub fn policy_config(cfg: &RlConfig, beta: f64, max_new: usize, seed: u64) -> PolicyConfig {
    PolicyConfig {
        algo: Algo::Rloo,
        steps: cfg.steps,
        batch_size: cfg.prompts_per_step,
        num_generations: cfg.samples_per_prompt,
        learning_rate: cfg.lr,
        max_grad_norm: 0.0,
        kl_coef: beta,
        target_kl: None,
        kl_estimator: KlEstimator::K1,
        kl_in_reward: true,
        max_new_tokens: max_new,
        temperature: 1.0,
        top_k: None,
        num_ppo_epochs: 1,
        num_mini_batches: 1,
        missing_eos_penalty: None,
        save_steps: cfg.eval_every.max(1),
        seed,
        chat: false,
        ..PolicyConfig::default()
    }
}
