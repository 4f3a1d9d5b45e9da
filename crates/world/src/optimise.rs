//! Driving the shared policy trainers (`mismatch_policy::train`) from the world: a run trains
//! into a scratch directory, every `checkpoint-{step}` it writes is evaluated on the held-out
//! prompts ([`crate::sample::evaluate`]) next to the start policy (step 0), and the final
//! checkpoint becomes `work/<run>`. The trainer's metrics records are kept for
//! `metrics/<run>/metrics.jsonl`. The loops themselves live only in the policy crate.

use crate::sample::{evaluate, EvalPoint};
use crate::world::World;
use mismatch_models::checkpoint::replace_dir;
use mismatch_models::{Error, Gpt, Result};
use mismatch_policy::train::{train, PolicyConfig, RunOptions, TrainData};
use mismatch_policy::Reward;
use serde::Serialize;
use std::path::Path;

/// Everything an optimisation run needs besides its data and reward.
pub struct RunCtx<'a> {
    pub world: &'a World,
    pub start_dir: &'a Path,
    /// The start policy (the reference of every evaluation's KL).
    pub start: &'a Gpt,
    pub tok: &'a tokenizers::Tokenizer,
    pub eval_prompts: &'a [&'a str],
    pub max_new: usize,
    pub eval_seed: u64,
    /// The final policy of each run is kept as `<work_dir>/<run name>`; training runs in
    /// `<work_dir>/.train-<run name>`, removed afterwards.
    pub work_dir: &'a Path,
}

/// One optimisation run's log: per-step metrics (the trainer's records, TRL names) and
/// evaluation points.
#[derive(Debug, Clone, Serialize)]
pub struct RunLog {
    pub name: String,
    pub steps: Vec<serde_json::Value>,
    pub evals: Vec<EvalPoint>,
}

/// Runs `cfg` from the start policy and evaluates step 0 and every checkpoint with `eval_reward`.
pub fn train_and_evaluate(
    ctx: &RunCtx,
    cfg: &PolicyConfig,
    reward: Option<&dyn Reward>,
    data: &TrainData,
    eval_reward: &dyn Reward,
    name: &str,
    bar: &indicatif::ProgressBar,
) -> Result<RunLog> {
    let scratch = ctx.work_dir.join(format!(".train-{name}"));
    // A scratch directory left by an interrupted run would make the trainer ask for --resume.
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    }
    let spec = ctx.start_dir.to_str().ok_or_else(|| Error::invalid(ctx.start_dir, "path is not UTF-8"))?;
    let outcome = train(cfg, spec, reward, data, &scratch, &RunOptions::default())?;
    bar.inc(cfg.steps as u64);
    let eval = |p: &Gpt, step: usize| {
        evaluate(ctx.world, p, ctx.start, eval_reward, ctx.tok, ctx.eval_prompts, ctx.max_new, ctx.eval_seed, step)
    };
    let mut evals = vec![eval(ctx.start, 0)?];
    for (step, dir) in &outcome.checkpoints {
        let (policy, _) = Gpt::load(dir, &candle_core::Device::Cpu, false)?;
        evals.push(eval(&policy, *step)?);
    }
    if let Some((_, last)) = outcome.checkpoints.last() {
        replace_dir(last, &ctx.work_dir.join(name))?;
    }
    std::fs::remove_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    let steps = outcome.metrics.into_iter().map(serde_json::Value::Object).collect();
    Ok(RunLog { name: name.into(), steps, evals })
}
