//! The PPO-RLHF loop (Ziegler et al. 2019; Stiennon et al. 2020; Ouyang et al. 2022), TRL
//! `PPOTrainer` layout: per step, sample one completion per prompt, score it, compute per-token
//! KL-shaped rewards against the frozen reference, GAE with the value head, then
//! `num_ppo_epochs` passes of `num_mini_batches` clipped policy + value updates. The maths is in
//! [`crate::ppo`]; this file is the loop. Optional PPO-ptx adds γ·SFT loss on demonstrations.
//!
//! `objective/scores` is the raw reward; `objective/rlhf_reward` = score after the missing-EOS
//! penalty + `objective/non_score_reward` (−β Σ_t kl_t), the quantity PPO maximises. The value
//! head shares the policy's trunk (see [`super::common::ValueHead`]); π_old, V_old and π_ref
//! come from forward passes without a graph.

use super::chunks::Scored;
use super::common::{
    batch_indices, check_finite, derive_seed, finish_step, ix_tensor, mean_entropy, permutation, put, rollout, rows,
    scalar, score, Averages, Session,
};
use super::{PolicyConfig, RunOptions, TrainData, TrainOutcome};
use crate::ppo::{self as maths, MissingEos, PpoConfig};
use crate::reward::Reward;
use crate::Result;
use std::path::Path;

pub fn train(
    cfg: &PolicyConfig,
    spec: &str,
    reward: &dyn Reward,
    data: &TrainData,
    out: &Path,
    opts: &RunOptions,
) -> Result<TrainOutcome> {
    let s = Session::open(cfg, spec, out, opts, Some(reward.name()), true, true)?;
    let demo_ids = if cfg.ptx_coef > 0.0 {
        let p = &s.policy;
        let v = data
            .demos
            .iter()
            .map(|d| Ok((p.encode_prompt(&d.prompt)?, p.encode_completion(&d.completion)?)))
            .collect::<Result<Vec<_>>>()?;
        Some(v)
    } else {
        None
    };
    let rows = cfg.batch_size as u64;
    s.run_steps(opts, rows, |s, step| ppo_step(s, reward, data, demo_ids.as_deref(), step))
}

type Ids = (Vec<u32>, Vec<u32>);

fn ppo_step(
    s: &mut Session,
    reward: &dyn Reward,
    data: &TrainData,
    demos: Option<&[Ids]>,
    step: usize,
) -> Result<super::common::Metrics> {
    let cfg = s.cfg.clone();
    let shown = step + 1;
    let idx = batch_indices(data.prompts.len(), cfg.batch_size, cfg.seed, 0, step);
    let prompts: Vec<&str> = idx.iter().map(|&i| data.prompts[i].as_str()).collect();
    let ro = rollout(&s.policy, &cfg, &prompts, derive_seed(cfg.seed, step as u64, 1))?;
    let raw = score(reward, &ro.prompts, &ro.texts, shown)?;
    let rule = cfg.missing_eos_penalty.map(|p| MissingEos::Subtract(p as f32)).unwrap_or(MissingEos::Keep);
    let scores = maths::penalize_missing_eos(&raw, &ro.finished, rule)?;

    // π_old, V_old and π_ref on the rollout, without a graph.
    // One forward with a graph: its detached copy is π_old, and with a single minibatch the first
    // update reuses it (the weights have not moved since sampling), saving a forward pass.
    let full = Scored::each(&s.policy, &ro.prompt_ids, &ro.comp_ids)?;
    let old = full.out.detach();
    let mut reuse = (cfg.num_mini_batches == 1).then_some(full);
    let value = s.value.as_ref().expect("PPO session has a value head");
    let old_values = value.forward(&old.hidden)?.detach();
    let reference = s.reference.as_ref().expect("PPO session has a reference");
    let ref_logp = Scored::each(reference, &ro.prompt_ids, &ro.comp_ids)?.out.logprobs.detach();
    let entropy = mean_entropy(&s.policy, &old)?;
    let pc = PpoConfig {
        gamma: cfg.gamma as f32,
        lam: cfg.lam as f32,
        cliprange: cfg.cliprange as f32,
        cliprange_value: cfg.cliprange_value as f32,
        vf_coef: cfg.vf_coef as f32,
        kl_estimator: cfg.kl_estimator,
        whiten_rewards: cfg.whiten_rewards,
    };
    let beta = s.kl.beta();
    let r = maths::rollout(&pc, &old.logprobs, &ref_logp, &old_values, &scores, &old.mask, beta)?;
    let mut m = super::common::Metrics::new();
    for (k, v) in maths::rollout_metrics(&r, &scores, None, &old.mask)? {
        put(&mut m, k, v);
    }
    let raw_mean = raw.iter().map(|&x| x as f64).sum::<f64>() / raw.len() as f64;
    put(&mut m, "objective/scores", raw_mean);
    put(&mut m, "objective/entropy", entropy);
    let mean_kl = m["objective/kl"].as_f64().unwrap_or(0.0);
    check_finite(mean_kl, "objective/kl", shown)?;

    let b = ro.comp_ids.len();
    let mb = b.div_ceil(cfg.num_mini_batches);
    let mut avg = Averages::default();
    for epoch in 0..cfg.num_ppo_epochs {
        let perm = match reuse.is_some() {
            true => (0..b).collect(),
            false => permutation(b, derive_seed(cfg.seed, step as u64, 100 + epoch as u64)),
        };
        for (k, chunk) in perm.chunks(mb).enumerate() {
            let ix = ix_tensor(chunk)?;
            let p_ids: Vec<Vec<u32>> = chunk.iter().map(|&i| ro.prompt_ids[i].clone()).collect();
            let c_ids: Vec<Vec<u32>> = chunk.iter().map(|&i| ro.comp_ids[i].clone()).collect();
            let scored = match reuse.take() {
                Some(f) => f,
                None => Scored::each(&s.policy, &p_ids, &c_ids)?,
            };
            let cur = &scored.out;
            let c = cur.logprobs.dim(1)?;
            let pl = maths::policy_loss(
                &cur.logprobs,
                &rows(&old.logprobs, &ix, c)?,
                &rows(&r.advantages, &ix, c)?,
                &cur.mask,
                pc.cliprange,
            )?;
            let vpred = s.value.as_ref().expect("value head").forward(&cur.hidden)?;
            let vl = maths::value_loss(
                &vpred,
                &rows(&old_values, &ix, c)?,
                &rows(&r.returns, &ix, c)?,
                &cur.mask,
                pc.cliprange_value,
            )?;
            let mut loss = (&pl.loss + (&vl.loss * cfg.vf_coef)?)?;
            if let Some(d) = demos {
                // The ptx batch of this minibatch: as many demonstrations, order from (seed, step, epoch, k).
                let di =
                    batch_indices(d.len(), chunk.len(), derive_seed(cfg.seed, step as u64, 200 + epoch as u64), 2, k);
                let dp: Vec<Vec<u32>> = di.iter().map(|&i| d[i].0.clone()).collect();
                let dc: Vec<Vec<u32>> = di.iter().map(|&i| d[i].1.clone()).collect();
                let sft = crate::sft::sft_loss(&s.policy.logprobs(&dp, &dc)?)?;
                avg.add("loss/ptx_avg", scalar(&sft)?);
                loss = maths::ptx_loss(&loss, &sft, cfg.ptx_coef)?;
            }
            avg.add("loss/policy_avg", check_finite(scalar(&pl.loss)?, "policy loss", shown)?);
            avg.add("loss/value_avg", check_finite(scalar(&vl.loss)?, "value loss", shown)?);
            avg.add("policy/approxkl_avg", pl.approxkl);
            avg.add("policy/clipfrac_avg", pl.clipfrac);
            avg.add("val/clipfrac_avg", vl.clipfrac);
            avg.add("val/ratio", pl.ratio);
            let norm = s.update(&loss, &scored, shown)?;
            avg.add("grad_norm", norm);
        }
    }
    finish_step(s, m, avg, &ro, beta, mean_kl, b)
}
