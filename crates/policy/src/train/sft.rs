//! Supervised fine-tuning on demonstrations (Ouyang et al. 2022 §3.5): the masked next-token
//! cross-entropy of [`crate::sft`] on the completion tokens (+ EOS), prompt tokens unscored.

use super::chunks::Scored;
use super::common::{batch_indices, check_finite, put, scalar, Metrics, Policy, Session};
use super::{Demo, PolicyConfig, RunOptions, TrainData, TrainOutcome};
use crate::Result;
use std::path::Path;

/// Tokenised demonstrations.
pub fn encode(policy: &Policy, demos: &[Demo]) -> Result<Vec<(Vec<u32>, Vec<u32>)>> {
    demos.iter().map(|d| Ok((policy.encode_prompt(&d.prompt)?, policy.encode_completion(&d.completion)?))).collect()
}

/// One SFT update on items `ix` of `demos`; returns the metrics (`loss`, `num_tokens`, `grad_norm`).
pub fn sft_update(s: &mut Session, demos: &[(Vec<u32>, Vec<u32>)], ix: &[usize], shown: usize) -> Result<Metrics> {
    let p: Vec<Vec<u32>> = ix.iter().map(|&i| demos[i].0.clone()).collect();
    let c: Vec<Vec<u32>> = ix.iter().map(|&i| demos[i].1.clone()).collect();
    let scored = Scored::each(&s.policy, &p, &c)?;
    let lp = &scored.out;
    let loss = crate::sft::sft_loss(lp)?;
    let mut m = Metrics::new();
    put(&mut m, "loss", check_finite(scalar(&loss)?, "SFT loss", shown)?);
    put(&mut m, "num_tokens", crate::masked::count(&lp.mask)? as f64);
    let norm = s.update(&loss, &scored, shown)?;
    put(&mut m, "grad_norm", norm);
    Ok(m)
}

pub fn train(cfg: &PolicyConfig, spec: &str, data: &TrainData, out: &Path, opts: &RunOptions) -> Result<TrainOutcome> {
    let s = Session::open(cfg, spec, out, opts, None, false, false)?;
    let demos = encode(&s.policy, &data.demos)?;
    s.run_steps(opts, cfg.batch_size as u64, |s, step| {
        let ix = batch_indices(demos.len(), s.cfg.batch_size, s.cfg.seed, 0, step);
        sft_update(s, &demos, &ix, step + 1)
    })
}
