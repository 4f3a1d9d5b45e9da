//! Rejection-sampling fine-tuning (Touvron et al. 2023, "Llama 2", §3.2.3): each iteration
//! samples K = `num_generations` completions per prompt from the current policy, keeps the one
//! the reward scores highest (first on ties), and runs `steps` SFT updates on the winners
//! (`batch_size` per step). A checkpoint is written after every iteration; `stop_after` counts
//! iterations. Each SFT step logs `loss` plus the iteration's `objective/scores` (mean reward of
//! all samples) and `rs/best_score` (mean reward of the winners).

use super::common::{batch_indices, derive_seed, put, rollout, score, Session};
use super::sft::sft_update;
use super::{PolicyConfig, RunOptions, TrainData, TrainOutcome};
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
    let mut s = Session::open(cfg, spec, out, opts, Some(reward.name()), false, false)?;
    let k = cfg.num_generations;
    let mut done = 0;
    for it in s.start_iteration..cfg.rs_iterations {
        let mut winners = Vec::with_capacity(data.prompts.len());
        let (mut all_sum, mut best_sum, mut count) = (0f64, 0f64, 0usize);
        for (chunk_no, chunk) in data.prompts.chunks(cfg.batch_size).enumerate() {
            let rows: Vec<&str> = chunk.iter().flat_map(|p| std::iter::repeat_n(p.as_str(), k)).collect();
            let seed = derive_seed(cfg.seed, (it * 1_000_003 + chunk_no) as u64, 5);
            let ro = rollout(&s.policy, cfg, &rows, seed)?;
            let sc = score(reward, &ro.prompts, &ro.texts, it * cfg.steps + 1)?;
            for j in 0..chunk.len() {
                let g = &sc[j * k..(j + 1) * k];
                let best = (0..k).fold(0, |b, i| if g[i] > g[b] { i } else { b });
                let r = j * k + best;
                winners.push((ro.prompt_ids[r].clone(), ro.comp_ids[r].clone()));
                best_sum += g[best] as f64;
                all_sum += g.iter().map(|&x| x as f64).sum::<f64>();
                count += 1;
            }
        }
        let (mean_all, mean_best) = (all_sum / (count * k) as f64, best_sum / count as f64);
        for j in 0..cfg.steps {
            let step = it * cfg.steps + j;
            let ix = batch_indices(winners.len(), cfg.batch_size, derive_seed(cfg.seed, it as u64, 6), 0, j);
            let mut m = sft_update(&mut s, &winners, &ix, step + 1)?;
            m.insert("iteration".into(), serde_json::json!(it + 1));
            put(&mut m, "objective/scores", mean_all);
            put(&mut m, "rs/best_score", mean_best);
            s.log(step + 1, cfg.batch_size as u64, m)?;
        }
        s.save((it + 1) * cfg.steps, it + 1)?;
        done += 1;
        if opts.stop_after == Some(done) {
            break;
        }
    }
    Ok(s.finish())
}
