//! Configuration of the experiment `mismatch run` performs: seeds, the world or real models
//! (the world's and its start policy's tables are `mismatch_world::config`'s), data sizes,
//! reward models, best-of-n, RL and DPO. Every knob has a default; a TOML file
//! overrides any subset (`mismatch run --print-config` prints the defaults as TOML).

pub use mismatch_models::checkpoint::parse_toml;
use mismatch_models::{Error, Result};
pub use mismatch_world::config::{StartConfig, WorldConfig};
use serde::{Deserialize, Serialize};
use std::path::Path;

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
    /// Independent repetitions (RM data, RM initialisation, sampling); seeds `seed..seed+seeds`,
    /// which must stay within u64 (a range past `u64::MAX` is a config error, not wrapped; the
    /// seeds derived from each, [`mismatch_models::seed`], wrap).
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
    pub guided: crate::guided::GuidedConfig,
    pub rl: crate::rl::RlConfig,
    pub dpo: crate::dpo::DpoConfig,
    /// Real models and data instead of the world (`world`, `start` and `start_seed` are then
    /// ignored); see [`crate::real`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub real: Option<crate::real::RealConfig>,
    /// The outer loop of `mismatch loop` ([`crate::outer`]); `mismatch run` ignores it.
    #[serde(rename = "loop", skip_serializing_if = "Option::is_none")]
    pub outer: Option<crate::outer::LoopConfig>,
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
            guided: Default::default(),
            rl: Default::default(),
            dpo: Default::default(),
            real: None,
            outer: None,
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

    /// The start-policy seed of seed `seed`: `start_seed + (seed − self.seed)` with
    /// `start_per_seed`, modulo 2⁶⁴ ([`mismatch_models::seed::offset`]), so a `start_seed` near
    /// `u64::MAX` wraps around to 0 instead of overflowing.
    pub fn start_seed_of(&self, seed: u64) -> u64 {
        if self.start_per_seed {
            mismatch_models::seed::offset(self.start_seed, seed.wrapping_sub(self.seed))
        } else {
            self.start_seed
        }
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Rejects values that would panic or produce a meaningless run, naming `path` and the
    /// field (`field `start.demos`: …`).
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, msg: &str| Err(Error::invalid(path, format!("field `{field}`: {msg}")));
        let positive = |v: f64| v > 0.0 && v.is_finite();
        if self.seeds == 0 {
            return bad("seeds", "must be at least 1");
        }
        // The seeds are seed..seed+seeds; a range past u64::MAX is refused rather than wrapped,
        // so seeds stay distinct and in order (derived seeds do wrap: mismatch_models::seed).
        if self.seed.checked_add(self.seeds as u64 - 1).is_none() {
            return bad(
                "seed",
                &format!(
                    "the seeds seed..seed+seeds must stay within u64 (at most {}): with seeds = {}, use seed ≤ {}",
                    u64::MAX,
                    self.seeds,
                    u64::MAX - (self.seeds as u64 - 1)
                ),
            );
        }
        if self.max_new_tokens == 0 {
            return bad("max_new_tokens", "must be at least 1");
        }
        if self.eval_prompts == 0 {
            return bad("eval_prompts", "must be at least 1");
        }
        if self.data.pair_sizes.is_empty() || self.data.pair_sizes.contains(&0) {
            return bad("data.pair_sizes", "needs at least one positive size");
        }
        if self.data.eval_pairs == 0 {
            return bad("data.eval_pairs", "must be at least 1 (the reward models are evaluated on them)");
        }
        if self.rm.members == 0 {
            return bad("rm.members", "must be at least 1");
        }
        if !(self.rm.uwo_lambda >= 0.0 && self.rm.uwo_lambda.is_finite()) {
            return bad("rm.uwo_lambda", "must be a finite number ≥ 0");
        }
        if self.rm.train.epochs == 0 {
            return bad("rm.train.epochs", "must be at least 1");
        }
        if self.rm.train.batch_size == 0 {
            return bad("rm.train.batch_size", "must be at least 1");
        }
        if !positive(self.rm.train.lr) {
            return bad("rm.train.lr", "must be positive");
        }
        if self.bon.prompts == 0 {
            return bad("bon.prompts", "must be at least 1");
        }
        if self.bon.n_max == 0 {
            return bad("bon.n_max", "must be at least 1");
        }
        if let Err((field, msg)) = self.guided.validate() {
            return bad(field, &msg);
        }
        if self.bon.ns.is_empty() || self.bon.ns.iter().any(|&n| n == 0 || n > self.bon.n_max) {
            return bad("bon.ns", "needs at least one n, every n in 1..=bon.n_max");
        }
        if self.rl.kl_coefs.is_empty() {
            return bad("rl.kl_coefs", "needs at least one KL coefficient");
        }
        if self.rl.kl_coefs.iter().any(|b| !(*b >= 0.0 && b.is_finite())) {
            return bad("rl.kl_coefs", "every KL coefficient must be a finite number ≥ 0");
        }
        if self.rl.samples_per_prompt < 2 {
            return bad("rl.samples_per_prompt", "RLOO needs at least 2");
        }
        if self.rl.prompts_per_step == 0 {
            return bad("rl.prompts_per_step", "must be at least 1");
        }
        if self.rl.eval_every == 0 {
            return bad("rl.eval_every", "must be at least 1");
        }
        if !positive(self.rl.lr) {
            return bad("rl.lr", "must be positive");
        }
        if self.dpo.batch_size == 0 {
            return bad("dpo.batch_size", "must be at least 1");
        }
        if self.dpo.eval_every == 0 {
            return bad("dpo.eval_every", "must be at least 1");
        }
        if !positive(self.dpo.lr) {
            return bad("dpo.lr", "must be positive");
        }
        if !positive(self.dpo.beta) {
            return bad("dpo.beta", "must be positive");
        }
        if let Some(l) = &self.outer {
            l.validate(path)?;
        }
        if let Some(r) = &self.real {
            let need =
                self.eval_prompts + self.data.eval_pairs + self.data.pair_sizes.iter().max().copied().unwrap_or(0);
            if !r.task.is_empty() && r.task_prompts < need {
                let msg = format!(
                    "{} problems cannot give eval_prompts + data.eval_pairs + the largest data.pair_sizes = {need}",
                    r.task_prompts
                );
                return bad("real.task_prompts", &msg);
            }
            return r.validate(path);
        }
        let w = &self.world;
        if !(w.heldout_fraction > 0.0 && w.heldout_fraction < 1.0) {
            return bad("world.heldout_fraction", "must be strictly between 0 and 1");
        }
        let s = &self.start;
        for (field, v) in [
            ("start.n_layer", s.n_layer),
            ("start.n_head", s.n_head),
            ("start.n_embd", s.n_embd),
            ("start.block_size", s.block_size),
            ("start.batch_size", s.batch_size),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1");
            }
        }
        if !s.n_embd.is_multiple_of(s.n_head) {
            return bad("start.n_embd", "must be a multiple of start.n_head");
        }
        if s.demos == 0 {
            return bad("start.demos", "must be at least 1 (the start policy is pre-trained on them)");
        }
        if !positive(s.lr) {
            return bad("start.lr", "must be positive");
        }
        if !(s.weight_decay >= 0.0 && s.weight_decay.is_finite()) {
            return bad("start.weight_decay", "must be a finite number ≥ 0");
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

    fn err_of(c: RunConfig) -> String {
        c.validate(Path::new("exp.toml")).unwrap_err().to_string()
    }

    #[test]
    fn values_that_would_panic_or_mean_nothing_are_refused_naming_the_field() {
        let d = RunConfig::default;
        let cases: Vec<(RunConfig, &str)> = vec![
            (RunConfig { start: StartConfig { demos: 0, ..d().start }, ..d() }, "start.demos"),
            (RunConfig { start: StartConfig { block_size: 0, ..d().start }, ..d() }, "start.block_size"),
            (RunConfig { start: StartConfig { n_head: 0, ..d().start }, ..d() }, "start.n_head"),
            (RunConfig { start: StartConfig { n_embd: 63, ..d().start }, ..d() }, "start.n_embd"),
            (RunConfig { start: StartConfig { batch_size: 0, ..d().start }, ..d() }, "start.batch_size"),
            (RunConfig { start: StartConfig { lr: 0.0, ..d().start }, ..d() }, "start.lr"),
            (RunConfig { eval_prompts: 0, ..d() }, "eval_prompts"),
            (RunConfig { max_new_tokens: 0, ..d() }, "max_new_tokens"),
            (RunConfig { data: DataConfig { eval_pairs: 0, ..d().data }, ..d() }, "data.eval_pairs"),
            (RunConfig { data: DataConfig { pair_sizes: vec![], ..d().data }, ..d() }, "data.pair_sizes"),
            (RunConfig { bon: BonConfig { prompts: 0, ..d().bon }, ..d() }, "bon.prompts"),
            (RunConfig { bon: BonConfig { ns: vec![], ..d().bon }, ..d() }, "bon.ns"),
            (RunConfig { bon: BonConfig { n_max: 0, ns: vec![], ..d().bon }, ..d() }, "bon.n_max"),
            (RunConfig { rm: RmConfig { uwo_lambda: f64::NAN, ..d().rm }, ..d() }, "rm.uwo_lambda"),
            (RunConfig { world: WorldConfig { heldout_fraction: 0.0, ..d().world }, ..d() }, "world.heldout_fraction"),
            (RunConfig { seed: u64::MAX, ..d() }, "field `seed`"),
        ];
        for (c, field) in cases {
            let e = err_of(c);
            assert!(e.starts_with("exp.toml: ") && e.contains(field), "{field}: {e}");
        }
        let mut c = d();
        c.rl.eval_every = 0;
        assert!(err_of(c).contains("rl.eval_every"));
        let mut c = d();
        c.rl.prompts_per_step = 0;
        assert!(err_of(c).contains("rl.prompts_per_step"));
        let mut c = d();
        c.dpo.batch_size = 0;
        assert!(err_of(c).contains("dpo.batch_size"));
        let mut c = d();
        c.rm.train.batch_size = 0;
        assert!(err_of(c).contains("rm.train.batch_size"));
        // The default is valid, and so is the largest seed when the range fits.
        d().validate(Path::new("exp.toml")).unwrap();
        RunConfig { seed: u64::MAX, seeds: 1, ..d() }.validate(Path::new("exp.toml")).unwrap();
        RunConfig { seed: u64::MAX - 4, seeds: 5, ..d() }.validate(Path::new("exp.toml")).unwrap();
        let e = err_of(RunConfig { seed: u64::MAX - 3, seeds: 5, ..d() });
        assert!(e.contains("seeds = 5, use seed ≤ 18446744073709551611"), "{e}");
        // Start seeds wrap around instead of overflowing.
        let c = RunConfig { seed: 3, start_seed: u64::MAX, ..d() };
        assert_eq!((3..6).map(|s| c.start_seed_of(s)).collect::<Vec<_>>(), [u64::MAX, 0, 1]);
    }
}
