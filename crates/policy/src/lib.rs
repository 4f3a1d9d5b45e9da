//! The per-algorithm maths of policy optimisation, as pure tensor/numeric functions that the
//! training loops call. One file per algorithm, each readable next to its paper:
//!
//! - [`kl`]: per-token KL estimators k1/k2/k3 and the fixed / adaptive KL controllers;
//! - [`ppo`]: KL-shaped token rewards, GAE, whitening, clipped policy and value losses, metrics;
//! - [`rloo`]: REINFORCE leave-one-out advantages;
//! - [`grpo`]: group-normalised advantages and the clipped token-level surrogate with k3 KL;
//! - [`dpo`]: DPO, conservative DPO, IPO, length-normalised DPO and SimPO;
//! - best-of-n's estimators (KL bound, unbiased best-of-n from one pool) live in `mismatch_eval::bon`;
//! - [`sft`]: masked next-token cross-entropy;
//! - [`guided`]: value-guided decoding (reward-augmented decoding, blockwise controlled decoding);
//! - [`reward`]: the `Reward` trait, learned (`RmReward`) and rule rewards;
//! - [`train`]: the training loops (one file per algorithm) and their output layout;
//! - [`cli`]: `mismatch policy train`.
//!
//! Conventions: per-token tensors are `[b, c]` f32 over completion tokens, right-padded, with a
//! `[b, c]` f32 `mask` (1 real token, 0 padding) as produced by
//! `mismatch_models::completion_logprobs`. Losses are differentiable scalars; metrics are `f64`.

pub mod cli;
pub mod dpo;
pub mod grpo;
pub mod guided;
pub mod kl;
pub mod masked;
pub mod ppo;
pub mod reward;
pub mod rloo;
pub mod sft;
pub mod train;

pub use kl::{KlController, KlEstimator};
pub use mismatch_models::{Error, Result};
pub use reward::{parse_reward, Reward, RmReward, RuleReward};
/// The policy handle, one batch of samples and the sampler, for callers that sample and score
/// outside a training loop (the world's real-model setting): the same code the loops use.
pub use train::common::{derive_seed, rollout, Policy, Rollout};
pub use train::{train, Algo, Demo, OnLog, PolicyConfig, PrefPair, RunOptions, TrainData, TrainOutcome};
