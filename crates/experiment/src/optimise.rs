//! Driving the shared policy trainers (`mismatch_policy::train`) from the experiment: a run
//! trains into a scratch directory, every `checkpoint-{step}` it writes is evaluated by the
//! setting next to the start policy (step 0), and the final checkpoint becomes `work/<run>`
//! (weights and trainer state, without the Adam moments: they are twice the model's size and
//! only a resume needs them). The trainer's metrics records are kept for
//! `metrics/<run>/metrics.jsonl`. The loops themselves live only in the policy crate.

use crate::pipeline::SeedSetting;
use crate::sample::EvalPoint;
use mismatch_models::checkpoint::replace_dir;
use mismatch_models::{Error, Result};
use mismatch_policy::train::{train, PolicyConfig, RunOptions, TrainData};
use mismatch_policy::Reward;
use serde::Serialize;
use std::path::Path;

/// One optimisation run's log: per-step metrics (the trainer's records, TRL names) and
/// evaluation points.
#[derive(Debug, Clone, Serialize)]
pub struct RunLog {
    pub name: String,
    pub steps: Vec<serde_json::Value>,
    pub evals: Vec<EvalPoint>,
}

/// Runs `cfg` from the setting's start policy against `reward` (None for offline algorithms)
/// and evaluates step 0 and every checkpoint with `eval_reward` (evaluation seed `eval_seed`).
/// Training runs in `<work>/.train-<name>`, removed afterwards; the final policy is kept as
/// `<work>/<name>`.
#[allow(clippy::too_many_arguments)]
pub fn train_and_evaluate(
    s: &dyn SeedSetting,
    cfg: &PolicyConfig,
    reward: Option<&dyn Reward>,
    data: &TrainData,
    eval_reward: &dyn Reward,
    eval_seed: u64,
    work: &Path,
    name: &str,
    bar: &indicatif::ProgressBar,
) -> Result<RunLog> {
    let scratch = work.join(format!(".train-{name}"));
    // A scratch directory left by an interrupted run would make the trainer ask for --resume.
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    }
    let outcome = train(cfg, s.start_spec(), reward, data, &scratch, &RunOptions::default())?;
    bar.inc(cfg.steps as u64);
    let mut evals = vec![s.evaluate(None, eval_reward, eval_seed, 0)?];
    for (step, dir) in &outcome.checkpoints {
        evals.push(s.evaluate(Some(dir), eval_reward, eval_seed, *step)?);
    }
    if let Some((_, last)) = outcome.checkpoints.last() {
        keep_final(last, &work.join(name))?;
    }
    std::fs::remove_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
    let steps = outcome.metrics.into_iter().map(serde_json::Value::Object).collect();
    Ok(RunLog { name: name.into(), steps, evals })
}

/// Moves the checkpoint `last` to `keep` (replacing it), without the Adam moments.
pub(crate) fn keep_final(last: &Path, keep: &Path) -> Result<()> {
    replace_dir(last, keep)?;
    let opt = keep.join("optimizer.safetensors");
    if opt.exists() {
        std::fs::remove_file(&opt).map_err(|e| Error::io(&opt, e))?;
    }
    Ok(())
}
