//! DPO (Rafailov et al. 2023) on the same annotator-labelled pairs the proxy RMs learn from:
//! `L = −log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))])`. The loop is
//! the policy crate's (`mismatch_policy::train::dpo`, `Algo::Dpo`), the reference the start
//! policy, without gradient clipping; the held-out RM evaluation pairs are its `eval_*` pairs.
//! Evaluation on held-out prompts as for RL.

use mismatch_policy::train::{Algo, PolicyConfig};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoConfig {
    pub beta: f64,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    /// Evaluate (and checkpoint) every this many steps, at step 0 and at the end.
    pub eval_every: usize,
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self { beta: 0.1, steps: 30, batch_size: 32, lr: 1e-4, eval_every: 10 }
    }
}

/// The shared trainer's config for the world's DPO run.
pub fn policy_config(cfg: &DpoConfig, seed: u64) -> PolicyConfig {
    PolicyConfig {
        algo: Algo::Dpo,
        steps: cfg.steps,
        batch_size: cfg.batch_size,
        learning_rate: cfg.lr,
        max_grad_norm: 0.0,
        beta: cfg.beta,
        label_smoothing: 0.0,
        length_normalize: false,
        save_steps: cfg.eval_every.max(1),
        seed,
        chat: false,
        ..PolicyConfig::default()
    }
}
