//! `mismatch policy train`: flags, an optional TOML config (keys = [`PolicyConfig`] field
//! names; flags override it) and the data files.
//!
//! Data files:
//! - `--prompts FILE`: JSONL, one object per line with a `prompt` field (a string, or a list of
//!   `{role, content}` messages, rendered as `Role: content` blocks); PPO/RLOO/GRPO/BoN/RS.
//! - `--data FILE`: for DPO/IPO/SimPO a preference file in any format `mismatch data` reads; for SFT
//!   (and PPO-ptx) either a JSONL with `prompt` and `completion` fields or a preference file
//!   whose chosen responses become the demonstrations.
//! - `--eval-data FILE`: held-out preference pairs (DPO/IPO/SimPO `eval_*` metrics).
//!
//! A flag the chosen algorithm does not use (`--reward` with DPO, `--kl-coef` with SFT, …) is
//! refused, naming the flag, the algorithm and the algorithms that use it ([`check_flags`]);
//! keys in the `--config` file are not checked (unused fields are ignored, as documented on
//! [`PolicyConfig`]).

// Prompts are rendered to text the way the reward model sees them.
use crate::train::{train, Algo, Demo, PolicyConfig, PrefPair, RunOptions, TrainData};
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Optimise a policy: PPO, RLOO, GRPO, DPO, IPO, SimPO, SFT, rejection sampling, or best-of-N sampling.
    Train(TrainArgs),
}

#[derive(Debug, Args, Default)]
pub struct TrainArgs {
    #[arg(long, value_enum)]
    pub algo: Option<Algo>,
    /// Policy model: short name, .gguf file or HF directory (mismatch-gpt, llama, qwen2); for
    /// --algo bon also an endpoint `openai:URL#MODEL` (its pool is sampled there).
    #[arg(long)]
    pub policy: String,
    /// `rm:DIR` (or a reward-model DIR), `rule:length[:N]`, `rule:regex:PATTERN`, `rule:contains:TEXT`, `rule:exact:ANSWER`.
    #[arg(long)]
    pub reward: Option<String>,
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    #[arg(long)]
    pub data: Option<PathBuf>,
    #[arg(long)]
    pub eval_data: Option<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    /// TOML file whose keys are the PolicyConfig field names; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub steps: Option<usize>,
    #[arg(long)]
    pub batch_size: Option<usize>,
    #[arg(long)]
    pub num_generations: Option<usize>,
    #[arg(long)]
    pub learning_rate: Option<f64>,
    #[arg(long)]
    pub kl_coef: Option<f64>,
    /// Adaptive KL controller target (fixed coefficient when absent).
    #[arg(long)]
    pub target_kl: Option<f64>,
    #[arg(long, value_enum)]
    pub kl_estimator: Option<crate::KlEstimator>,
    #[arg(long)]
    pub max_new_tokens: Option<usize>,
    /// DPO/IPO/SimPO: prompt + completion tokens kept per pair (the prompt is cut from the left; default 512).
    #[arg(long)]
    pub max_length: Option<usize>,
    #[arg(long)]
    pub temperature: Option<f64>,
    #[arg(long)]
    pub beta: Option<f64>,
    /// SimPO γ, the target reward margin.
    #[arg(long)]
    pub simpo_gamma: Option<f64>,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub save_steps: Option<usize>,
    /// Wrap prompts in the tokenizer's chat template.
    #[arg(long)]
    pub chat: bool,
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps of this invocation (checkpoint written); continue with --resume.
    #[arg(long)]
    pub stop_after: Option<usize>,
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub endpoint: mismatch_openai::EndpointArgs,
}

pub fn run(cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Train(a) => run_train(a),
    }
}

/// The config from `--config` (if any) with the flags applied on top.
pub fn config_of(a: &TrainArgs) -> anyhow::Result<PolicyConfig> {
    let mut c = match &a.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
            mismatch_models::checkpoint::parse_toml::<PolicyConfig>(p, &text)?
        }
        None => PolicyConfig::default(),
    };
    macro_rules! set {
        ($($f:ident),*) => { $( if let Some(v) = a.$f { c.$f = v; } )* };
    }
    set!(
        algo,
        steps,
        batch_size,
        num_generations,
        learning_rate,
        kl_coef,
        kl_estimator,
        max_new_tokens,
        max_length,
        temperature,
        beta,
        simpo_gamma,
        seed,
        save_steps
    );
    if a.target_kl.is_some() {
        c.target_kl = a.target_kl;
    }
    if a.chat {
        c.chat = true;
    }
    c.validate()?;
    Ok(c)
}

/// Which algorithms use each flag that not all of them use; a flag given to an algorithm
/// outside its list is refused rather than silently ignored.
fn flag_uses(a: &TrainArgs) -> Vec<(&'static str, bool, &'static [Algo])> {
    use Algo::*;
    const SAMPLING: &[Algo] = &[Bon, Rs, Ppo, Rloo, Grpo];
    const KL: &[Algo] = &[Ppo, Rloo, Grpo];
    const TRAINING: &[Algo] = &[Rs, Ppo, Rloo, Grpo, Dpo, Ipo, Simpo, Sft];
    const PREFERENCE: &[Algo] = &[Dpo, Ipo, Simpo];
    vec![
        ("--reward", a.reward.is_some(), SAMPLING),
        ("--prompts", a.prompts.is_some(), SAMPLING),
        // PPO reads demonstrations for its ptx term.
        ("--data", a.data.is_some(), &[Ppo, Dpo, Ipo, Simpo, Sft]),
        ("--eval-data", a.eval_data.is_some(), PREFERENCE),
        ("--steps", a.steps.is_some(), TRAINING),
        ("--num-generations", a.num_generations.is_some(), &[Bon, Rs, Rloo, Grpo]),
        ("--learning-rate", a.learning_rate.is_some(), TRAINING),
        ("--kl-coef", a.kl_coef.is_some(), KL),
        ("--target-kl", a.target_kl.is_some(), KL),
        ("--kl-estimator", a.kl_estimator.is_some(), KL),
        ("--max-new-tokens", a.max_new_tokens.is_some(), SAMPLING),
        ("--temperature", a.temperature.is_some(), SAMPLING),
        ("--beta", a.beta.is_some(), PREFERENCE),
        ("--max-length", a.max_length.is_some(), PREFERENCE),
        ("--simpo-gamma", a.simpo_gamma.is_some(), &[Simpo]),
        // Rejection sampling checkpoints once per iteration.
        ("--save-steps", a.save_steps.is_some(), &[Ppo, Rloo, Grpo, Dpo, Ipo, Simpo, Sft]),
        ("--resume", a.resume, TRAINING),
        ("--stop-after", a.stop_after.is_some(), TRAINING),
    ]
}

/// Refuses a flag the chosen algorithm does not use, naming both.
pub fn check_flags(a: &TrainArgs, algo: Algo) -> anyhow::Result<()> {
    if a.policy.starts_with(mismatch_openai::SCHEME) && algo != Algo::Bon {
        bail!("--policy {}: only --algo bon samples from an endpoint; a policy that is trained stays local", a.policy);
    }
    for (flag, given, uses) in flag_uses(a) {
        if given && !uses.contains(&algo) {
            let users: Vec<&str> = uses.iter().map(|x| x.name()).collect();
            bail!("{flag} does not apply to --algo {} (it is used by {})", algo.name(), users.join(", "));
        }
    }
    Ok(())
}

fn run_train(a: TrainArgs) -> anyhow::Result<()> {
    let cfg = config_of(&a)?;
    check_flags(&a, cfg.algo)?;
    let mut data = TrainData::default();
    if let Some(p) = &a.prompts {
        data.prompts = read_prompts(p)?;
    }
    if let Some(p) = &a.data {
        let (pairs, demos) = read_pairs_or_demos(p)?;
        data.pairs = pairs;
        data.demos = demos;
    }
    if let Some(p) = &a.eval_data {
        data.eval_pairs = read_pairs_or_demos(p)?.0;
        if data.eval_pairs.is_empty() {
            bail!("{}: no preference pairs (eval data must be chosen/rejected pairs)", p.display());
        }
    }
    if cfg.algo.needs_reward() && data.prompts.is_empty() {
        bail!("--algo {} needs --prompts FILE", cfg.algo.name());
    }
    if cfg.algo.is_preference() && data.pairs.is_empty() {
        bail!("--algo {} needs --data FILE with preference pairs", cfg.algo.name());
    }
    if cfg.algo == Algo::Sft && data.demos.is_empty() {
        bail!("--algo sft needs --data FILE with demonstrations or preference pairs");
    }
    let reward = match (&a.reward, cfg.algo.needs_reward()) {
        (Some(spec), _) => Some(crate::reward::parse_reward(spec)?),
        (None, true) => bail!("--algo {} needs --reward (rm:DIR or rule:...)", cfg.algo.name()),
        (None, false) => None,
    };
    let opts = RunOptions {
        progress: !a.no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        resume: a.resume,
        stop_after: a.stop_after,
        on_log: None,
        endpoint: a.endpoint.clone(),
    };
    let outcome = train(&cfg, &a.policy, reward.as_deref(), &data, &a.out, &opts)?;
    if let Some((step, dir)) = outcome.checkpoints.last() {
        eprintln!("{}: checkpoint-{step} at {}", cfg.algo.name(), dir.display());
    }
    if cfg.algo == Algo::Bon {
        eprintln!("best-of-{}: {}", cfg.num_generations, a.out.join("bon.json").display());
    }
    Ok(())
}

/// Text of a `prompt`-like field: a string, or a list of {role, content} messages.
fn field_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(msgs) => {
            let parts: Option<Vec<String>> = msgs
                .iter()
                .map(|m| {
                    let role = m.get("role")?.as_str()?;
                    let content = m.get("content")?.as_str()?;
                    let mut r = role.to_string();
                    if let Some(f) = r.get_mut(0..1) {
                        f.make_ascii_uppercase();
                    }
                    Some(format!("{r}: {content}"))
                })
                .collect();
            parts.map(|p| p.join("\n\n"))
        }
        _ => None,
    }
}

/// JSONL records `(line, object)`; blank lines skipped; errors name file:line.
fn jsonl(path: &Path) -> anyhow::Result<Vec<(usize, serde_json::Map<String, serde_json::Value>)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow::anyhow!("{}:{}: not valid JSON: {e}", path.display(), i + 1))?;
        match v {
            serde_json::Value::Object(o) => out.push((i + 1, o)),
            _ => bail!("{}:{}: expected a JSON object", path.display(), i + 1),
        }
    }
    if out.is_empty() {
        bail!("{}: no records", path.display());
    }
    Ok(out)
}

/// Prompts from a JSONL file with a `prompt` field per line.
pub fn read_prompts(path: &Path) -> anyhow::Result<Vec<String>> {
    jsonl(path)?
        .into_iter()
        .map(|(line, o)| match o.get("prompt") {
            None => bail!("{}:{line}: missing field \"prompt\"", path.display()),
            Some(v) => field_text(v).ok_or_else(|| {
                anyhow::anyhow!("{}:{line}: field \"prompt\" must be a string or a list of messages", path.display())
            }),
        })
        .collect()
}

/// `(pairs, demos)` from a demonstration JSONL (`prompt` + `completion`) or a preference file
/// (pairs, and their chosen responses as demonstrations).
pub fn read_pairs_or_demos(path: &Path) -> anyhow::Result<(Vec<PrefPair>, Vec<Demo>)> {
    let first_is_demo = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().find(|l| !l.trim().is_empty()).map(str::to_string))
        .and_then(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .is_some_and(|v| v.get("completion").is_some() && v.get("chosen").is_none());
    if first_is_demo {
        let demos = jsonl(path)?
            .into_iter()
            .map(|(line, o)| {
                let get = |k: &str| -> anyhow::Result<String> {
                    let v =
                        o.get(k).ok_or_else(|| anyhow::anyhow!("{}:{line}: missing field \"{k}\"", path.display()))?;
                    field_text(v).ok_or_else(|| {
                        anyhow::anyhow!(
                            "{}:{line}: field \"{k}\" must be a string or a list of messages",
                            path.display()
                        )
                    })
                };
                Ok(Demo { prompt: get("prompt")?, completion: get("completion")? })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        return Ok((vec![], demos));
    }
    let ds = mismatch_data::read_dataset(path, mismatch_data::ReadOptions::default())?;
    let (prefs, _) = ds.records.to_pairs();
    let pairs: Vec<PrefPair> = prefs
        .iter()
        .map(|p| PrefPair { prompt: p.prompt.render(), chosen: p.chosen.text(), rejected: p.rejected.text() })
        .collect();
    let demos = pairs.iter().map(|p| Demo { prompt: p.prompt.clone(), completion: p.chosen.clone() }).collect();
    Ok((pairs, demos))
}
