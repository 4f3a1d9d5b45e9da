//! The training loops: one file per algorithm, all driven by [`train`].
//!
//! | algo | data | file |
//! |------|------|------|
//! | `ppo` | prompts (+ demos for ptx) | [`ppo`]: Ziegler et al. 2019 / InstructGPT PPO with a value head |
//! | `rloo`, `grpo` | prompts | [`rloo`]: critic-free, k samples per prompt, leave-one-out / group-normalised advantages |
//! | `dpo`, `ipo`, `simpo` | preference pairs | [`dpo`]: DPO, cDPO (label smoothing), length-normalised DPO, IPO, SimPO (no reference model) |
//! | `sft` | demonstrations | [`sft`]: masked next-token cross-entropy |
//! | `bon` | prompts | [`bon`]: best-of-N sampling and the unbiased best-of-n curve (no training) |
//! | `rs` | prompts | [`rs`]: Llama 2 rejection sampling — best-of-K per prompt, then SFT on the winners |
//!
//! Output directory `out/`:
//!
//! ```text
//! out/train_config.json      the PolicyConfig, the policy spec and the reward name
//! out/metrics.jsonl          one JSON object per optimizer step: step, episode, lr and TRL's names
//!                            (objective/scores, objective/kl, objective/entropy, objective/non_score_reward,
//!                            objective/rlhf_reward, policy/approxkl_avg, policy/clipfrac_avg, loss/policy_avg,
//!                            loss/value_avg, val/ratio, val/clipfrac_avg, completions/mean_length,
//!                            val/num_eos_tokens; RLOO/GRPO: reward, reward_std; DPO/IPO: rewards/chosen,
//!                            rewards/rejected, rewards/accuracies, rewards/margins, logps/chosen,
//!                            logps/rejected and eval_* on held-out pairs; SFT/RS: loss)
//! out/checkpoint-{step}/     every save_steps steps and at the end (RS: every iteration); an HF-layout
//!                            model directory `load_causal_lm` reads (model.safetensors, config.json,
//!                            tokenizer.json, tokenizer_config.json) plus trainer_state.json,
//!                            optimizer.safetensors and, for PPO, value_head.safetensors
//! out/samples.jsonl, bon.json  best-of-N only: every sample with its reward and log-prob; the curve
//! ```
//!
//! Reproducibility: the prompts of step s and the sampling seed of step s are functions of
//! (seed, s) only, and a checkpoint holds weights, Adam moments and the KL coefficient, so a
//! resumed run writes the same metrics.jsonl as an uninterrupted one, bit for bit. A NaN or
//! infinite reward, loss or gradient stops the run with an error naming the step and the
//! quantity, before any update or checkpoint, so the last checkpoint on disk is the last good one.

pub mod bon;
pub mod chunks;
pub mod common;
pub mod dpo;
pub mod ppo;
pub mod rloo;
pub mod rs;
pub mod sft;

use crate::kl::KlEstimator;
use crate::reward::Reward;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    Bon,
    Rs,
    Ppo,
    Rloo,
    Grpo,
    Dpo,
    Ipo,
    Simpo,
    Sft,
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Bon => "bon",
            Algo::Rs => "rs",
            Algo::Ppo => "ppo",
            Algo::Rloo => "rloo",
            Algo::Grpo => "grpo",
            Algo::Dpo => "dpo",
            Algo::Ipo => "ipo",
            Algo::Simpo => "simpo",
            Algo::Sft => "sft",
        }
    }
    /// Whether the algorithm samples from the policy and needs a reward.
    pub fn needs_reward(self) -> bool {
        matches!(self, Algo::Bon | Algo::Rs | Algo::Ppo | Algo::Rloo | Algo::Grpo)
    }
    /// Whether the algorithm trains offline on preference pairs (DPO, IPO, SimPO).
    pub fn is_preference(self) -> bool {
        matches!(self, Algo::Dpo | Algo::Ipo | Algo::Simpo)
    }
}

/// Hyper-parameters of every loop; field names are TRL's where TRL has one. Unused fields are
/// ignored by the other algorithms.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    pub algo: Algo,
    /// Optimizer steps (RS: SFT steps per iteration; BoN: unused).
    pub steps: usize,
    /// Prompts (or pairs, or demonstrations) per step.
    pub batch_size: usize,
    /// Samples per prompt: RLOO's k, GRPO's group size, BoN's N, RS's K (PPO: 1, ignored).
    pub num_generations: usize,
    pub learning_rate: f64,
    /// Global gradient-norm clip (0 = none).
    pub max_grad_norm: f64,
    /// β of the KL penalty (initial β when `target_kl` is set).
    pub kl_coef: f64,
    /// Adaptive KL controller target (Ziegler et al. 2019, horizon 10 000); fixed β when None.
    pub target_kl: Option<f64>,
    pub kl_estimator: KlEstimator,
    /// RLOO/GRPO: KL in the sequence reward (true) or as a loss term (false; GRPO's paper form, k3).
    pub kl_in_reward: bool,
    pub max_new_tokens: usize,
    pub temperature: f64,
    pub top_k: Option<usize>,
    /// Passes over each rollout batch (PPO, RLOO, GRPO).
    pub num_ppo_epochs: usize,
    pub num_mini_batches: usize,
    pub cliprange: f64,
    pub cliprange_value: f64,
    pub vf_coef: f64,
    pub gamma: f64,
    pub lam: f64,
    pub whiten_rewards: bool,
    /// Subtracted from the score of a completion that ends without EOS.
    pub missing_eos_penalty: Option<f64>,
    /// PPO-ptx coefficient γ on the SFT loss of `TrainData::demos` (InstructGPT: 27.8).
    pub ptx_coef: f64,
    /// DPO β / IPO τ / SimPO β.
    pub beta: f64,
    /// SimPO γ, the target reward margin (TRL `CPOConfig.simpo_gamma`).
    pub simpo_gamma: f64,
    /// cDPO ε.
    pub label_smoothing: f64,
    /// DPO on length-averaged log-ratios (TRL `sigmoid_norm`).
    pub length_normalize: bool,
    pub rs_iterations: usize,
    pub save_steps: usize,
    pub seed: u64,
    /// Wrap prompts in the tokenizer's chat template as one user turn.
    pub chat: bool,
    /// DPO/IPO/SimPO: a pair's prompt + completion longer than this many tokens loses the start
    /// of its prompt (TRL's `max_length` with `truncation_mode = "keep_end"` for the prompt);
    /// a completion longer than all of it is cut at its end. Absent from a written config
    /// when it is the default.
    #[serde(skip_serializing_if = "is_default_max_length")]
    pub max_length: usize,
}

/// The default [`PolicyConfig::max_length`], TRL's reward-modelling default.
pub const DEFAULT_MAX_LENGTH: usize = 512;

fn is_default_max_length(n: &usize) -> bool {
    *n == DEFAULT_MAX_LENGTH
}

impl Default for PolicyConfig {
    /// TRL's defaults (PPOConfig / RLOOConfig / DPOConfig) where they exist.
    fn default() -> Self {
        Self {
            algo: Algo::Ppo,
            steps: 100,
            batch_size: 16,
            num_generations: 4,
            learning_rate: 3e-6,
            max_grad_norm: 1.0,
            kl_coef: 0.05,
            target_kl: None,
            kl_estimator: KlEstimator::K1,
            kl_in_reward: true,
            max_new_tokens: 53,
            temperature: 0.7,
            top_k: None,
            num_ppo_epochs: 4,
            num_mini_batches: 1,
            cliprange: 0.2,
            cliprange_value: 0.2,
            vf_coef: 0.1,
            gamma: 1.0,
            lam: 0.95,
            whiten_rewards: false,
            missing_eos_penalty: None,
            ptx_coef: 0.0,
            beta: 0.1,
            simpo_gamma: 0.5,
            label_smoothing: 0.0,
            length_normalize: false,
            rs_iterations: 1,
            save_steps: 500,
            seed: 42,
            chat: false,
            max_length: DEFAULT_MAX_LENGTH,
        }
    }
}

impl PolicyConfig {
    /// Rejects settings no loop can run with, naming the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Usage(m));
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if self.save_steps == 0 {
            return bad("save_steps must be at least 1".into());
        }
        if self.max_length < 2 {
            return bad(format!(
                "max_length must be at least 2 (a prompt token and a completion token), got {}",
                self.max_length
            ));
        }
        if matches!(self.algo, Algo::Rloo | Algo::Grpo) && self.num_generations < 2 {
            return bad(format!("{} needs num_generations ≥ 2 (got {})", self.algo.name(), self.num_generations));
        }
        if matches!(self.algo, Algo::Bon | Algo::Rs) && self.num_generations < 1 {
            return bad("num_generations must be at least 1".into());
        }
        if self.algo.needs_reward() && self.max_new_tokens == 0 {
            return bad("max_new_tokens must be at least 1".into());
        }
        if self.algo != Algo::Bon && !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad(format!("learning_rate must be positive, got {}", self.learning_rate));
        }
        if self.num_ppo_epochs == 0 || self.num_mini_batches == 0 {
            return bad("num_ppo_epochs and num_mini_batches must be at least 1".into());
        }
        if !(self.kl_coef >= 0.0) || !(self.temperature >= 0.0) || !(self.max_grad_norm >= 0.0) {
            return bad("kl_coef, temperature and max_grad_norm must be ≥ 0".into());
        }
        if let Some(t) = self.target_kl {
            if !(t > 0.0) {
                return bad(format!("target_kl must be positive, got {t}"));
            }
        }
        if self.algo.is_preference() && !(self.beta > 0.0) {
            return bad(format!("beta must be positive, got {}", self.beta));
        }
        if !(0.0..0.5).contains(&self.label_smoothing) {
            return bad(format!("label_smoothing must be in [0, 0.5), got {}", self.label_smoothing));
        }
        if !self.simpo_gamma.is_finite() {
            return bad(format!("simpo_gamma must be finite, got {}", self.simpo_gamma));
        }
        if self.algo == Algo::Rs && self.rs_iterations == 0 {
            return bad("rs_iterations must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PrefPair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Demo {
    pub prompt: String,
    pub completion: String,
}

#[derive(Default, Clone, Debug)]
pub struct TrainData {
    /// Prompts for the sampling algorithms (PPO, RLOO, GRPO, BoN, RS).
    pub prompts: Vec<String>,
    /// Preference pairs (DPO, IPO, SimPO).
    pub pairs: Vec<PrefPair>,
    /// Demonstrations (SFT; PPO-ptx).
    pub demos: Vec<Demo>,
    /// Held-out pairs: DPO/IPO/SimPO log `eval_rewards/*` on them every `save_steps` and at the end.
    pub eval_pairs: Vec<PrefPair>,
}

#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub progress: bool,
    /// Continue from the newest `out/checkpoint-*`.
    pub resume: bool,
    /// Stop (Ok) after this many steps of this invocation (RS: iterations), checkpoint written.
    pub stop_after: Option<usize>,
    /// Called with every record right after it is appended to metrics.jsonl (best-of-N writes
    /// bon.json instead and calls nothing).
    pub on_log: Option<OnLog>,
    /// How to reach an endpoint when the policy spec is `openai:URL#MODEL` (best-of-N only).
    pub endpoint: mismatch_openai::EndpointArgs,
}

/// A hook on each metrics record, as TRL's `TrainerCallback.on_log`: live displays, per-step
/// timing (`bench-policy` times steps with it), custom stopping rules kept outside the loop.
#[derive(Clone)]
pub struct OnLog(pub std::sync::Arc<dyn Fn(&serde_json::Map<String, serde_json::Value>) + Send + Sync>);

impl std::fmt::Debug for OnLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnLog(..)")
    }
}

#[derive(Clone, Debug, Default)]
pub struct TrainOutcome {
    /// `(step, dir)` of every checkpoint this invocation wrote.
    pub checkpoints: Vec<(usize, PathBuf)>,
    /// The metrics records this invocation logged (BoN: one per n).
    pub metrics: Vec<serde_json::Map<String, serde_json::Value>>,
}

/// Runs `cfg.algo`. `policy_spec`: anything `mismatch_models::load_causal_lm` accepts (short
/// name, `.gguf`, HF dir incl. mismatch-gpt dirs with tokenizer.json). The frozen reference
/// policy is a second load of the same spec.
pub fn train(
    cfg: &PolicyConfig,
    policy_spec: &str,
    reward: Option<&dyn Reward>,
    data: &TrainData,
    out: &Path,
    opts: &RunOptions,
) -> Result<TrainOutcome> {
    cfg.validate()?;
    let need = |what: &str, n: usize| -> Result<()> {
        if n == 0 {
            return Err(Error::Usage(format!("{} needs {what} (none given)", cfg.algo.name())));
        }
        Ok(())
    };
    let reward_or_err = || {
        reward.ok_or_else(|| Error::Usage(format!("{} needs a reward (--reward rm:DIR or rule:...)", cfg.algo.name())))
    };
    match cfg.algo {
        Algo::Ppo => {
            need("prompts", data.prompts.len())?;
            if cfg.ptx_coef > 0.0 {
                need("demonstrations for ptx_coef > 0", data.demos.len())?;
            }
            ppo::train(cfg, policy_spec, reward_or_err()?, data, out, opts)
        }
        Algo::Rloo | Algo::Grpo => {
            need("prompts", data.prompts.len())?;
            rloo::train(cfg, policy_spec, reward_or_err()?, data, out, opts)
        }
        Algo::Dpo | Algo::Ipo | Algo::Simpo => {
            need("preference pairs", data.pairs.len())?;
            dpo::train(cfg, policy_spec, data, out, opts)
        }
        Algo::Sft => {
            need("demonstrations", data.demos.len())?;
            sft::train(cfg, policy_spec, data, out, opts)
        }
        Algo::Bon => {
            need("prompts", data.prompts.len())?;
            bon::run(cfg, policy_spec, reward_or_err()?, data, out, opts)
        }
        Algo::Rs => {
            need("prompts", data.prompts.len())?;
            rs::train(cfg, policy_spec, reward_or_err()?, data, out, opts)
        }
    }
}
