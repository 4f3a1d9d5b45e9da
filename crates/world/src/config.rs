//! Configuration: the world (gold weights, annotator biases, split, corpus mixture), the start
//! policy, and the experiment `mismatch run` performs. Every knob has a default; a TOML file
//! overrides any subset (`mismatch run --print-config` prints the defaults as TOML).

use crate::annotators::Annotators;
use crate::corpus::Mixture;
use crate::gold::GoldWeights;
pub use mismatch_models::checkpoint::parse_toml;
use mismatch_models::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

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

/// Preference data for the proxy RMs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Training-set sizes (labelled pairs drawn; identical responses are dropped). The largest
    /// trains the RMs that best-of-n, RL and DPO optimise.
    pub pair_sizes: Vec<usize>,
    /// Held-out pairs for RM evaluation (against gold and against annotator labels).
    pub eval_pairs: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self { pair_sizes: vec![150, 600], eval_pairs: 400 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmConfig {
    /// Ensemble members K (seeds differ: head initialisation and data order).
    pub members: usize,
    /// λ of UWO, `mean − λ·var` over standardised member scores.
    pub uwo_lambda: f64,
    pub train: crate::proxy::RmTrainConfig,
}

impl Default for RmConfig {
    fn default() -> Self {
        Self { members: 3, uwo_lambda: 0.5, train: Default::default() }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BonConfig {
    /// Pool size per prompt; every n is estimated from this one pool.
    pub n_max: usize,
    /// Held-out prompts in the pool.
    pub prompts: usize,
    pub ns: Vec<usize>,
}

impl Default for BonConfig {
    fn default() -> Self {
        Self { n_max: 32, prompts: 32, ns: vec![1, 2, 3, 4, 6, 8, 12, 16, 24, 32] }
    }
}

/// The experiment `mismatch run` performs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// Independent repetitions (RM data, RM initialisation, sampling); seeds `seed..seed+seeds`.
    pub seeds: usize,
    pub seed: u64,
    /// Seeds run in parallel on this many threads (results do not depend on it). One per seed
    /// keeps both cores busy to the end; each thread runs candle single-threaded.
    pub threads: usize,
    pub max_new_tokens: usize,
    /// Held-out prompts every policy is evaluated on.
    pub eval_prompts: usize,
    /// Seed of the start policy. With `start_per_seed`, seed `seed + i` starts from the policy
    /// pre-trained with `start_seed + i`.
    pub start_seed: u64,
    /// Each seed pre-trains its own start policy, so the intervals carry the spread over start
    /// policies (the world's findings moved with it: README, "What the default run shows").
    /// `false` shares one start policy across seeds, as Gao et al. share one initial policy.
    pub start_per_seed: bool,
    pub world: WorldConfig,
    pub start: StartConfig,
    pub data: DataConfig,
    pub rm: RmConfig,
    pub bon: BonConfig,
    pub rl: crate::rl::RlConfig,
    pub dpo: crate::dpo::DpoConfig,
    /// Real models and data instead of the world (`world`, `start` and `start_seed` are then
    /// ignored); see [`crate::real`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real: Option<crate::real::RealConfig>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            seeds: 5,
            seed: 0,
            threads: 5,
            max_new_tokens: 24,
            eval_prompts: 64,
            start_seed: 0,
            start_per_seed: true,
            world: WorldConfig::default(),
            start: StartConfig::default(),
            data: DataConfig::default(),
            rm: RmConfig::default(),
            bon: BonConfig::default(),
            rl: Default::default(),
            dpo: Default::default(),
            real: None,
        }
    }
}

impl RunConfig {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut c: Self = parse_toml(path, &text)?;
        if let Some(r) = &mut c.real {
            r.base_dir = path.parent().map(Path::to_path_buf);
        }
        c.validate(path)?;
        Ok(c)
    }

    /// The start-policy seed of seed `seed`.
    pub fn start_seed_of(&self, seed: u64) -> u64 {
        if self.start_per_seed {
            self.start_seed + (seed - self.seed)
        } else {
            self.start_seed
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, msg: &str| Err(Error::invalid(path, format!("field `{field}`: {msg}")));
        if self.seeds == 0 {
            return bad("seeds", "must be at least 1");
        }
        if self.data.pair_sizes.is_empty() || self.data.pair_sizes.contains(&0) {
            return bad("data.pair_sizes", "needs at least one positive size");
        }
        if self.rm.members == 0 {
            return bad("rm.members", "must be at least 1");
        }
        if self.rl.kl_coefs.is_empty() {
            return bad("rl.kl_coefs", "needs at least one KL coefficient");
        }
        if self.rl.samples_per_prompt < 2 {
            return bad("rl.samples_per_prompt", "RLOO needs at least 2");
        }
        if self.bon.ns.iter().any(|&n| n == 0 || n > self.bon.n_max) {
            return bad("bon.ns", "every n must be in 1..=bon.n_max");
        }
        if self.eval_prompts == 0 || self.bon.prompts == 0 {
            return bad("eval_prompts", "must be positive");
        }
        if let Some(r) = &self.real {
            if self.max_new_tokens == 0 {
                return bad("max_new_tokens", "must be positive");
            }
            if self.data.eval_pairs == 0 {
                return bad("data.eval_pairs", "the real run needs held-out test pairs");
            }
            return r.validate(path);
        }
        if self.max_new_tokens + 16 > self.start.block_size {
            return bad("max_new_tokens", "prompt (up to 16 tokens) + max_new_tokens must fit start.block_size");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_roundtrips_through_toml_and_bad_fields_are_named() {
        let c = RunConfig::default();
        let back: RunConfig = parse_toml(Path::new("x.toml"), &c.to_toml()).unwrap();
        assert_eq!(back, c);
        let partial: RunConfig = parse_toml(Path::new("x.toml"), "seeds = 1\n[rl]\nsteps = 5\n").unwrap();
        assert_eq!((partial.seeds, partial.rl.steps, partial.rm.members), (1, 5, c.rm.members));
        let err =
            parse_toml::<RunConfig>(Path::new("exp.toml"), "seeds = 1\n[rl]\nstepz = 5\n").unwrap_err().to_string();
        assert!(err.contains("exp.toml") && err.contains("line 3, field rl.stepz"), "{err}");
        let err = parse_toml::<RunConfig>(Path::new("exp.toml"), "seeds = \"three\"\n").unwrap_err().to_string();
        assert!(err.contains("line 1, field seeds") && err.contains("exp.toml"), "{err}");
        // Each seed its own start policy, or one shared.
        let c = RunConfig { seed: 5, start_seed: 10, ..RunConfig::default() };
        assert_eq!((5..8).map(|s| c.start_seed_of(s)).collect::<Vec<_>>(), [10, 11, 12]);
        let shared = RunConfig { start_per_seed: false, ..c };
        assert_eq!((5..8).map(|s| shared.start_seed_of(s)).collect::<Vec<_>>(), [10, 10, 10]);
        let bad = RunConfig { seeds: 0, ..RunConfig::default() };
        let err = bad.validate(Path::new("exp.toml")).unwrap_err().to_string();
        assert!(err.contains("seeds") && err.contains("exp.toml"), "{err}");
    }
}
