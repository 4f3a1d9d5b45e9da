//! DPO (Rafailov et al. 2023) on the same annotator-labelled pairs the proxy RMs learn from:
//! `L = −log σ(β[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))])`, the maths in
//! `mismatch_policy::dpo`. The reference is the start policy; batches are drawn with a seeded
//! stream; evaluation as for RL.

use crate::proxy::LabelledPair;
use crate::rl::{load_pair, RunCtx, RunLog};
use crate::sample::{encode_prompt, evaluate, EOS_ID, PAD_ID};
use candle_core::Tensor;
use mismatch_models::optim::AdamW;
use mismatch_models::{completion_logprobs, Error, Result};
use mismatch_policy::dpo::{preference_loss, PairLogps, PreferenceLoss};
use mismatch_policy::Reward;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoConfig {
    pub beta: f64,
    pub steps: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub eval_every: usize,
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self { beta: 0.1, steps: 30, batch_size: 32, lr: 1e-4, eval_every: 10 }
    }
}

pub fn dpo(
    ctx: &RunCtx,
    cfg: &DpoConfig,
    pairs: &[LabelledPair],
    eval_reward: &dyn Reward,
    seed: u64,
    name: &str,
    bar: &indicatif::ProgressBar,
) -> Result<RunLog> {
    if pairs.is_empty() {
        return Err(Error::Usage("DPO needs at least one preference pair".into()));
    }
    let (policy, vars, reference) = load_pair(ctx.start_dir)?;
    let mut opt = AdamW::new(vars, cfg.lr, 0.0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xd90);
    let enc_c = |s: &str| -> Result<Vec<u32>> {
        let mut ids =
            ctx.tok.encode(s, false).map_err(|e| Error::Usage(format!("tokenizing: {e}")))?.get_ids().to_vec();
        ids.push(EOS_ID);
        Ok(ids)
    };
    let mut log = RunLog { name: name.into(), steps: vec![], evals: vec![] };
    let eval = |p: &mismatch_models::Gpt, step: usize| {
        evaluate(ctx.world, p, &reference, eval_reward, ctx.tok, ctx.eval_prompts, ctx.max_new, ctx.eval_seed, step)
    };
    log.evals.push(eval(&policy, 0)?);
    for step in 1..=cfg.steps {
        let batch: Vec<&LabelledPair> = (0..cfg.batch_size).map(|_| &pairs[rng.random_range(0..pairs.len())]).collect();
        let prompts = batch.iter().map(|p| encode_prompt(ctx.tok, &p.prompt)).collect::<Result<Vec<_>>>()?;
        let chosen = batch.iter().map(|p| enc_c(&p.chosen)).collect::<Result<Vec<_>>>()?;
        let rejected = batch.iter().map(|p| enc_c(&p.rejected)).collect::<Result<Vec<_>>>()?;
        let pc = completion_logprobs(&policy, &prompts, &chosen, PAD_ID)?;
        let pr = completion_logprobs(&policy, &prompts, &rejected, PAD_ID)?;
        let rc = completion_logprobs(&reference, &prompts, &chosen, PAD_ID)?;
        let rr = completion_logprobs(&reference, &prompts, &rejected, PAD_ID)?;
        let len = |c: &[Vec<u32>]| {
            Tensor::from_vec(c.iter().map(|x| x.len() as f32).collect::<Vec<_>>(), c.len(), &candle_core::Device::Cpu)
        };
        let lp = PairLogps {
            chosen: pc.sum()?,
            rejected: pr.sum()?,
            ref_chosen: rc.sum()?.detach(),
            ref_rejected: rr.sum()?.detach(),
            chosen_len: len(&chosen)?,
            rejected_len: len(&rejected)?,
        };
        let (loss, _, metrics) = preference_loss(&PreferenceLoss::Dpo { beta: cfg.beta, label_smoothing: 0.0 }, &lp)?;
        let l = loss.to_scalar::<f32>()? as f64;
        if !l.is_finite() {
            return Err(Error::Usage(format!("{name}: DPO loss is {l} at step {step}: stopping")));
        }
        opt.step(&loss)?;
        let mut rec = serde_json::json!({"step": step, "loss": l, "lr": cfg.lr, "beta": cfg.beta});
        for (k, v) in metrics {
            rec[k] = serde_json::json!(v);
        }
        log.steps.push(rec);
        if step % cfg.eval_every.max(1) == 0 || step == cfg.steps {
            log.evals.push(eval(&policy, step)?);
        }
        bar.inc(1);
    }
    crate::rl::save_policy(ctx, &policy, name)?;
    Ok(log)
}
