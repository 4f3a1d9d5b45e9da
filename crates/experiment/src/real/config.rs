//! The `[real]` table of an experiment file: which models and which data replace the world.
//!
//! When `[real]` is present, `mismatch run` ignores `world`, `start` and `start_seed`; every other
//! field of the experiment keeps its meaning (`seeds`, `seed`, `threads`, `max_new_tokens`,
//! `eval_prompts`, `data.pair_sizes`, `data.eval_pairs`, `rm.*`, `bon.*`, `rl.*`, `dpo.*`).
//!
//! Relative file paths (`pairs`, `prompts`, `eval_prompts_file`, and model specs that name an
//! existing file or directory) resolve against the directory of the TOML file they were read
//! from, so an experiment file can sit next to its data; a config built in code (no file)
//! resolves them against the working directory. Model specs that are not paths are short names
//! of the model cache (`smollm2-135m`, `minilm-l6`).

use mismatch_models::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealConfig {
    /// The start policy: a model spec `mismatch_models::load_causal_lm` accepts (short name,
    /// `.gguf` file, HF-layout directory).
    pub policy: String,
    /// Wrap every prompt in the policy's chat template as one user turn.
    pub chat: bool,
    /// Backbone of the proxy reward models (a reward-crate spec: `minilm-l6`, `smollm2-135m`,
    /// an HF directory, a `.gguf`).
    pub rm_backbone: String,
    /// Backbone of the gold (evaluation) RM; empty = `rm_backbone`.
    pub gold_backbone: String,
    /// Preference file (any format `mismatch data` reads: HH-RLHF, TRL, OpenAI, ShareGPT,
    /// PandaLM majority labels, K-wise rankings expanded to pairs).
    pub pairs: String,
    /// Pairs that train the gold RM (a part disjoint from the proxies' and the test part).
    pub gold_pairs: usize,
    /// Epochs of the gold RM (it otherwise trains as `rm.train` says).
    pub gold_epochs: usize,
    /// Seed of the split into test / gold / proxy parts and of the standardisation samples;
    /// shared by all seeds, so every seed is measured against the same gold RM.
    pub split_seed: u64,
    /// Prompts for RL: a `.txt` file (one per line), a `.csv` with a `prompt` column, or a
    /// preference file (the first user turn of each record). Empty = the first user turns of
    /// the proxy part of `pairs` (never a test prompt).
    pub prompts: String,
    /// XSTest-style CSV (`prompt` and `label` columns, `safe`/`unsafe`): `eval_prompts` of its
    /// prompts, safe and unsafe alternating, are the evaluation prompts (safe → benign refusal
    /// meter, unsafe → harmful refusal meter). Empty = first user turns of the test part.
    pub eval_prompts_file: String,
    /// Only pairs whose rendered prompt plus longer response have at most this many characters
    /// are used (0: all). Short conversations keep the RMs' encoder cheap and resemble the
    /// single-turn prompts the policy is trained on.
    pub max_pair_chars: usize,
    /// Prompts longer than this (characters) are not used for RL or evaluation (keeps the
    /// cost of a step bounded on a CPU).
    pub max_prompt_chars: usize,
    /// Start-policy samples (one per RL prompt) every RM is standardised on, so that the start
    /// policy scores about 0 under every proxy and under gold.
    pub standardise_samples: usize,
    /// DPO pairs are the single-turn proxy pairs whose responses have at most this many characters.
    pub dpo_max_chars: usize,
    /// An OpenAI-compatible endpoint serving the start policy, `openai:URL#MODEL` (e.g. `mismatch
    /// serve --model smollm2-135m`): the best-of-n pool, the experiment's largest batch of
    /// start-policy samples, is sampled there (one request per prompt with `n = bon.n_max`,
    /// seeded, through the response cache). Empty: sampled here. Gold and the proxies score it
    /// here either way; policies that are trained are always sampled here.
    pub pool_endpoint: String,
    /// The endpoints' response cache (SQLite; `pool_endpoint` and an `openai:` judge); empty:
    /// `$MISMATCH_HOME/cache/openai.sqlite`.
    pub pool_cache: String,
    /// An LLM judge as gold ([`crate::real::judge`]): a model spec (`smollm2-135m`, a `.gguf`, an
    /// HF directory) or `openai:URL#MODEL`. Gold is then the judge's swap-averaged preference for
    /// a policy's completion over the start policy's, and no gold RM is trained (the split keeps
    /// its gold part, so the proxies see the same pairs either way). Empty: the gold RM.
    pub judge: String,
    /// The judge's pairwise template: a built-in name (`alpaca_eval_clf_gpt4_turbo`, `pair-v2`)
    /// or a Jinja file.
    pub judge_template: String,
    /// A verifiable task instead of a preference file ([`crate::real::task`]): `"arithmetic"`
    /// generates word problems with known answers; gold is then a program (correct, concise, no
    /// refusal), and the proxies' labels are the simulated annotators' (`real.annotators`) on
    /// pairs of the start policy's own samples. `pairs`, `gold_pairs`, `gold_epochs` and `judge`
    /// do not apply. Empty: the preference file.
    pub task: String,
    /// Problems the task draws (seed `split_seed`): the first `eval_prompts` are the evaluation
    /// prompts, the next `data.eval_pairs` give the held-out labelled pairs, the rest one proxy
    /// pair each (and the RL prompts).
    pub task_prompts: usize,
    /// c: the task's gold charges this much per word.
    pub concision: f64,
    /// p: the task's gold charges this much for a refusal (every problem is a benign request).
    pub refusal_penalty: f64,
    /// The simulated annotators labelling the task's pairs (the world's `[world.annotators]`
    /// fields and defaults: length, hedge and over-caution biases, τ, label noise ε).
    pub annotators: mismatch_world::annotators::Annotators,
    /// Where relative paths resolve: set by `RunConfig::load` to the TOML file's directory.
    #[serde(skip)]
    pub base_dir: Option<PathBuf>,
}

impl Default for RealConfig {
    fn default() -> Self {
        Self {
            policy: "smollm2-135m".into(),
            chat: true,
            rm_backbone: "minilm-l6".into(),
            gold_backbone: String::new(),
            pairs: String::new(),
            gold_pairs: 1000,
            gold_epochs: 2,
            split_seed: 0,
            prompts: String::new(),
            eval_prompts_file: String::new(),
            max_pair_chars: 0,
            max_prompt_chars: 300,
            standardise_samples: 64,
            dpo_max_chars: 600,
            pool_endpoint: String::new(),
            pool_cache: String::new(),
            judge: String::new(),
            judge_template: "alpaca_eval_clf_gpt4_turbo".into(),
            task: String::new(),
            task_prompts: 600,
            concision: 0.01,
            refusal_penalty: 0.5,
            annotators: Default::default(),
            base_dir: None,
        }
    }
}

/// A `[real]` table with its paths resolved.
pub struct Resolved {
    pub policy: String,
    pub rm_backbone: String,
    pub gold_backbone: String,
    pub pairs: PathBuf,
    pub prompts: Option<PathBuf>,
    pub eval_prompts_file: Option<PathBuf>,
    /// The judge's spec and template (a built-in name or a resolved file), when gold is a judge.
    pub judge: Option<(String, String)>,
}

impl RealConfig {
    /// Checks the fields, naming `real.<field>` and the file.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |field: &str, msg: &str| Err(Error::invalid(path, format!("field `real.{field}`: {msg}")));
        if self.policy.trim().is_empty() {
            return bad("policy", "needs a model spec (e.g. \"smollm2-135m\")");
        }
        if self.rm_backbone.trim().is_empty() {
            return bad("rm_backbone", "needs a backbone spec (e.g. \"minilm-l6\")");
        }
        match self.task.as_str() {
            "" if self.pairs.trim().is_empty() => return bad("pairs", "needs a preference file (or set real.task)"),
            "" => {}
            "arithmetic" => {
                if !self.judge.trim().is_empty() {
                    return bad("judge", "a task's gold is its program; leave real.judge empty with real.task");
                }
                if !(self.concision >= 0.0 && self.refusal_penalty >= 0.0) {
                    return bad("concision", "real.concision and real.refusal_penalty must be ≥ 0");
                }
                let a = &self.annotators;
                if !(0.0..=1.0).contains(&a.noise) || a.temperature.is_nan() || a.temperature < 0.0 {
                    return bad("annotators", "noise must be in [0, 1] and temperature ≥ 0");
                }
            }
            other => return bad("task", &format!("unknown task '{other}' (known: \"arithmetic\")")),
        }
        if self.gold_pairs < 2 {
            return bad("gold_pairs", "the gold RM needs at least 2 pairs");
        }
        if self.gold_epochs == 0 {
            return bad("gold_epochs", "must be at least 1");
        }
        if self.max_prompt_chars == 0 {
            return bad("max_prompt_chars", "must be positive");
        }
        if self.standardise_samples < 2 {
            return bad("standardise_samples", "standardising needs at least 2 samples");
        }
        if !self.pool_endpoint.is_empty() {
            match mismatch_openai::Endpoint::from_spec(&self.pool_endpoint) {
                None => return bad("pool_endpoint", "must be openai:URL#MODEL"),
                Some(Err(e)) => return bad("pool_endpoint", &e.to_string()),
                Some(Ok(_)) => {}
            }
        }
        if !self.judge.trim().is_empty() {
            if let Some(Err(e)) = mismatch_openai::Endpoint::from_spec(&self.judge) {
                return bad("judge", &e.to_string());
            }
            let (_, template) = self.resolve().judge.expect("a judge is set");
            match mismatch_judge::Template::load(&template) {
                Err(e) => return bad("judge_template", &e.to_string()),
                Ok(t) if !t.judges_pairs() => {
                    return bad(
                        "judge_template",
                        &format!("'{}' grades single answers; gold needs a pairwise template", t.name),
                    )
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }

    /// Resolves paths against `base_dir` (the TOML file's directory; `None`: the working directory).
    pub fn resolve(&self) -> Resolved {
        let base = self.base_dir.as_deref();
        let file = |s: &str| -> PathBuf {
            let p = Path::new(s);
            match base {
                Some(b) if p.is_relative() => b.join(p),
                _ => p.to_path_buf(),
            }
        };
        // A model spec is a path only when it names something that exists; else a cache name.
        let spec = |s: &str| -> String {
            let p = file(s);
            if !Path::new(s).is_absolute() && p.exists() {
                p.to_string_lossy().into_owned()
            } else {
                s.to_string()
            }
        };
        let opt = |s: &str| (!s.trim().is_empty()).then(|| file(s));
        let gold = if self.gold_backbone.trim().is_empty() { &self.rm_backbone } else { &self.gold_backbone };
        Resolved {
            policy: spec(&self.policy),
            rm_backbone: spec(&self.rm_backbone),
            gold_backbone: spec(gold),
            pairs: file(&self.pairs),
            prompts: opt(&self.prompts),
            eval_prompts_file: opt(&self.eval_prompts_file),
            judge: (!self.judge.trim().is_empty()).then(|| {
                let t = file(&self.judge_template);
                let template = if t.exists() { t.to_string_lossy().into_owned() } else { self.judge_template.clone() };
                (spec(&self.judge), template)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_config_directory_and_names_stay_names() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("mymodel")).unwrap();
        let c = RealConfig {
            policy: "mymodel".into(),
            rm_backbone: "minilm-l6".into(),
            pairs: "data/p.jsonl".into(),
            eval_prompts_file: "/abs/x.csv".into(),
            base_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let r = c.resolve();
        assert_eq!(r.policy, dir.path().join("mymodel").to_string_lossy());
        assert_eq!((r.rm_backbone.as_str(), r.gold_backbone.as_str()), ("minilm-l6", "minilm-l6"));
        assert_eq!(r.pairs, dir.path().join("data/p.jsonl"));
        assert_eq!(r.eval_prompts_file, Some(PathBuf::from("/abs/x.csv")));
        assert_eq!(r.prompts, None);
        let err = RealConfig { pairs: String::new(), ..Default::default() }
            .validate(Path::new("e.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("e.toml") && err.contains("real.pairs"), "{err}");
    }
}
