//! Configuration of the world (gold weights, annotator biases, split, corpus mixture) and of its
//! start policy. Every knob has a default; the experiment file's `[world]` and `[start]` tables
//! override any subset (`mismatch run --print-config` prints the defaults as TOML).

use crate::annotators::Annotators;
use crate::corpus::Mixture;
use crate::gold::GoldWeights;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorldConfig {
    /// Share of the lookup / compare prompts held out for evaluation.
    pub heldout_fraction: f64,
    pub split_seed: u64,
    pub gold: GoldWeights,
    pub annotators: Annotators,
    pub corpus: Mixture,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            heldout_fraction: 0.2,
            split_seed: 0,
            gold: GoldWeights::default(),
            annotators: Annotators::default(),
            corpus: Mixture::default(),
        }
    }
}

/// The start policy: model size and pre-training on the demonstration corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StartConfig {
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    pub block_size: usize,
    /// Demonstrations in the corpus.
    pub demos: usize,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
}

impl Default for StartConfig {
    fn default() -> Self {
        Self {
            n_layer: 2,
            n_head: 2,
            n_embd: 64,
            block_size: 48,
            demos: 4000,
            steps: 400,
            batch_size: 32,
            lr: 3e-3,
            weight_decay: 0.0,
        }
    }
}
