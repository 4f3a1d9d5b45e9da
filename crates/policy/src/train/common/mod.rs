//! What every loop shares, one file each: the policy handle (model + tokenizer + prompt
//! encoding, `policy.rs`), PPO's value head (`value.rs`), seeds and batch order derived from
//! (seed, step) (`seeds.rs`), rollouts and their scores (`rollout.rs`), the metrics record and its
//! helpers (`metrics.rs`), and the run on disk — metrics log, checkpoints and resume (`session.rs`).

use super::chunks::Scored;
use super::{PolicyConfig, RunOptions, TrainOutcome};
use crate::kl::KlController;
use crate::reward::Reward;
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mismatch_models::checkpoint::{load_safetensors, read_json, replace_dir, safetensors_bytes, write_atomic};
use mismatch_models::generate::small;
use mismatch_models::optim::AdamW;
use mismatch_models::pool::on_pool;
use mismatch_models::{
    completion_logprobs, generate, load_causal_lm, shared_prompt_logprobs, AnyLm, CausalLm, ChatMessage,
    CompletionLogprobs, LoadedLm, SamplingParams, ScalarHead,
};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

mod metrics;
mod policy;
mod rollout;
mod seeds;
mod session;
mod value;

pub use metrics::*;
pub use policy::*;
pub use rollout::*;
pub use seeds::*;
pub use session::*;
pub use value::*;
