//! The critic-free loops: RLOO (Ahmadian et al. 2024) and GRPO (Shao et al. 2024). Per step,
//! `batch_size` prompts each get `num_generations` = k samples (contiguous rows), scored; the
//! KL to the reference is measured per sequence. RLOO: leave-one-out advantages of the
//! (KL-shaped, when `kl_in_reward`) rewards and a clipped sequence-ratio surrogate
//! ([`crate::rloo`]). GRPO: group-normalised advantages and the clipped token surrogate with
//! the k3 KL in the loss unless `kl_in_reward` ([`crate::grpo`]). No value model.

use super::chunks::Scored;
use super::common::{
    batch_indices, check_finite, derive_seed, finish_step, ix_tensor, mean_entropy, mean_std, permutation, put,
    rollout, rows, scalar, score, Averages, Metrics, Session,
};
use super::{Algo, PolicyConfig, RunOptions, TrainData, TrainOutcome};
use crate::grpo::{self, Aggregation, GrpoConfig};
use crate::ppo::{penalize_missing_eos, MissingEos};
use crate::reward::Reward;
use crate::{kl, rloo, Result};
use std::path::Path;

pub fn train(
    cfg: &PolicyConfig,
    spec: &str,
    reward: &dyn Reward,
    data: &TrainData,
    out: &Path,
    opts: &RunOptions,
) -> Result<TrainOutcome> {
    let s = Session::open(cfg, spec, out, opts, Some(reward.name()), true, false)?;
    let rows_per_step = (cfg.batch_size * cfg.num_generations) as u64;
    s.run_steps(opts, rows_per_step, |s, step| group_step(s, reward, data, step))
}

fn group_step(s: &mut Session, reward: &dyn Reward, data: &TrainData, step: usize) -> Result<Metrics> {
    let cfg = s.cfg.clone();
    let shown = step + 1;
    let k = cfg.num_generations;
    let idx = batch_indices(data.prompts.len(), cfg.batch_size, cfg.seed, 0, step);
    let prompts: Vec<&str> = idx.iter().flat_map(|&i| std::iter::repeat_n(data.prompts[i].as_str(), k)).collect();
    let ro = rollout(&s.policy, &cfg, &prompts, derive_seed(cfg.seed, step as u64, 1))?;
    let raw = score(reward, &ro.prompts, &ro.texts, shown)?;
    let rule = cfg.missing_eos_penalty.map(|p| MissingEos::Subtract(p as f32)).unwrap_or(MissingEos::Keep);
    let scores = penalize_missing_eos(&raw, &ro.finished, rule)?;

    // One forward with a graph: its detached copy is π_old, and with a single minibatch the first
    // update reuses it (the weights have not moved since sampling), saving a forward pass. The
    // k rows of a prompt share its forward (and the reference's below).
    let unique: Vec<Vec<u32>> = ro.prompt_ids.iter().step_by(k).cloned().collect();
    let group: Vec<usize> = (0..ro.comp_ids.len()).map(|i| i / k).collect();
    let full = Scored::new(&s.policy, &unique, &group, &ro.comp_ids)?;
    let old = full.out.detach();
    let mut reuse = (cfg.num_mini_batches == 1).then_some(full);
    let reference = s.reference.as_ref().expect("session has a reference");
    let ref_logp = Scored::new(reference, &unique, &group, &ro.comp_ids)?.out.logprobs.detach();
    let seq_kl = kl::sequence_kl(&old.logprobs, &ref_logp, &old.mask, cfg.kl_estimator)?.to_vec1::<f32>()?;
    let beta = s.kl.beta();
    let rewards = if cfg.kl_in_reward { rloo::kl_shaped_rewards(&scores, &seq_kl, beta)? } else { scores.clone() };
    let adv = match cfg.algo {
        Algo::Grpo => grpo::group_advantages(&rewards, k, true)?,
        _ => rloo::advantages(&rewards, k)?,
    };
    let gcfg = GrpoConfig {
        epsilon_low: cfg.cliprange as f32,
        epsilon_high: cfg.cliprange as f32,
        beta: if cfg.kl_in_reward { 0.0 } else { beta },
        scale_by_std: true,
        aggregation: Aggregation::Token,
    };

    let mut m = Metrics::new();
    let (mean_score, std_score) = mean_std(&raw);
    let (mean_kl, _) = mean_std(&seq_kl);
    check_finite(mean_kl, "objective/kl", shown)?;
    put(&mut m, "objective/scores", mean_score);
    put(&mut m, "objective/kl", mean_kl);
    put(&mut m, "objective/entropy", mean_entropy(&s.policy, &old)?);
    put(&mut m, "objective/non_score_reward", -beta * mean_kl);
    put(&mut m, "objective/rlhf_reward", mean_std(&scores).0 - beta * mean_kl);
    put(&mut m, "reward", mean_score);
    put(&mut m, "reward_std", std_score);

    let b = ro.comp_ids.len();
    let mb = b.div_ceil(cfg.num_mini_batches);
    let mut avg = Averages::default();
    for epoch in 0..cfg.num_ppo_epochs {
        let perm = match reuse.is_some() {
            true => (0..b).collect(),
            false => permutation(b, derive_seed(cfg.seed, step as u64, 100 + epoch as u64)),
        };
        for chunk in perm.chunks(mb) {
            let ix = ix_tensor(chunk)?;
            let p_ids: Vec<Vec<u32>> = chunk.iter().map(|&i| ro.prompt_ids[i].clone()).collect();
            let c_ids: Vec<Vec<u32>> = chunk.iter().map(|&i| ro.comp_ids[i].clone()).collect();
            let a: Vec<f32> = chunk.iter().map(|&i| adv[i]).collect();
            let scored = match reuse.take() {
                Some(f) => f,
                None => Scored::each(&s.policy, &p_ids, &c_ids)?,
            };
            let cur = &scored.out;
            let c = cur.logprobs.dim(1)?;
            let old_mb = rows(&old.logprobs, &ix, c)?;
            let loss = match cfg.algo {
                Algo::Grpo => {
                    let ref_mb = rows(&ref_logp, &ix, c)?;
                    let g = grpo::grpo_loss(&gcfg, &cur.logprobs, &old_mb, Some(&ref_mb), &a, &cur.mask)?;
                    avg.add("policy/clipfrac_avg", g.clipfrac);
                    let lr = (&cur.logprobs - &old_mb)?.detach();
                    avg.add("policy/approxkl_avg", 0.5 * scalar(&crate::masked::mean(&lr.sqr()?, &cur.mask)?)?);
                    avg.add("val/ratio", scalar(&crate::masked::mean(&lr.exp()?, &cur.mask)?)?);
                    g.loss
                }
                _ => {
                    let (mut l, clipfrac, approxkl, ratio) =
                        rloo::clipped_sequence_loss(&cur.logprobs, &old_mb, &cur.mask, &a, cfg.cliprange as f32)?;
                    if !cfg.kl_in_reward {
                        let ref_mb = rows(&ref_logp, &ix, c)?;
                        l = (l + rloo::kl_loss(&cur.logprobs, &ref_mb, &cur.mask, cfg.kl_estimator, beta)?)?;
                    }
                    avg.add("policy/clipfrac_avg", clipfrac);
                    avg.add("policy/approxkl_avg", approxkl);
                    avg.add("val/ratio", ratio);
                    l
                }
            };
            avg.add("loss/policy_avg", check_finite(scalar(&loss)?, "policy loss", shown)?);
            let norm = s.update(&loss, &scored, shown)?;
            avg.add("grad_norm", norm);
        }
    }
    finish_step(s, m, avg, &ro, beta, mean_kl, b)
}
