//! The offline preference loop: DPO (Rafailov et al. 2023), conservative DPO (label smoothing),
//! length-normalised DPO, IPO (Azar et al. 2023) and SimPO (Meng et al. 2024) on (prompt, chosen,
//! rejected) pairs, against the frozen reference = the starting policy (SimPO has none: no
//! reference is loaded and its log-likelihoods are zeros). The reference log-likelihoods never
//! change, so they are computed once before training. Losses and TRL metric names: [`crate::dpo`].

use super::chunks::Scored;
use super::common::{batch_indices, check_finite, put, scalar, Metrics, Policy, Session};
use super::{Algo, PolicyConfig, PrefPair, RunOptions, TrainData, TrainOutcome};
use crate::dpo::{preference_loss, PairLogps, PreferenceLoss};
use crate::Result;
use candle_core::{Device, Tensor};
use std::path::Path;

/// Tokenised pairs and their reference sequence log-likelihoods.
struct Pairs {
    prompt: Vec<Vec<u32>>,
    chosen: Vec<Vec<u32>>,
    rejected: Vec<Vec<u32>>,
    ref_chosen: Vec<f32>,
    ref_rejected: Vec<f32>,
}

/// Fits `prompt + chosen` and `prompt + rejected` into `max_length` (≥ 2) tokens: the prompt
/// loses its first tokens (it keeps at least one), then a completion still too long loses its
/// last ones — TRL's `keep_end` for the prompt, its `keep_start` for completions.
fn truncate(
    prompt: Vec<u32>,
    chosen: Vec<u32>,
    rejected: Vec<u32>,
    max_length: usize,
) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let longest = chosen.len().max(rejected.len());
    let keep = max_length.saturating_sub(longest).clamp(1, prompt.len().max(1));
    let prompt = prompt[prompt.len().saturating_sub(keep)..].to_vec();
    let room = max_length - prompt.len();
    let cut = |mut c: Vec<u32>| {
        c.truncate(room);
        c
    };
    (prompt, cut(chosen), cut(rejected))
}

impl Pairs {
    fn new(
        policy: &Policy,
        reference: Option<&Policy>,
        pairs: &[PrefPair],
        chunk: usize,
        max_length: usize,
    ) -> Result<Self> {
        let mut p =
            Pairs { prompt: vec![], chosen: vec![], rejected: vec![], ref_chosen: vec![], ref_rejected: vec![] };
        for x in pairs {
            let (prompt, chosen, rejected) = truncate(
                policy.encode_prompt(&x.prompt)?,
                policy.encode_completion(&x.chosen)?,
                policy.encode_completion(&x.rejected)?,
                max_length,
            );
            p.prompt.push(prompt);
            p.chosen.push(chosen);
            p.rejected.push(rejected);
        }
        let Some(reference) = reference else {
            (p.ref_chosen, p.ref_rejected) = (vec![0.0; pairs.len()], vec![0.0; pairs.len()]);
            return Ok(p);
        };
        let all: Vec<usize> = (0..pairs.len()).collect();
        for ix in all.chunks(chunk.max(1)) {
            let (c, r, _) = p.sums(reference, ix, true)?;
            p.ref_chosen.extend(c.to_vec1::<f32>()?);
            p.ref_rejected.extend(r.to_vec1::<f32>()?);
        }
        Ok(p)
    }

    /// `[n]` Σ log π(chosen), Σ log π(rejected) of pairs `ix`, one forward pass for both in which
    /// chosen and rejected (rows 2i and 2i + 1) share their prompt's, and the scores they came from.
    fn sums(&self, model: &Policy, ix: &[usize], detach: bool) -> Result<(Tensor, Tensor, Scored)> {
        let n = ix.len();
        let prompts: Vec<Vec<u32>> = ix.iter().map(|&i| self.prompt[i].clone()).collect();
        let group: Vec<usize> = (0..n).flat_map(|i| [i, i]).collect();
        let comps: Vec<Vec<u32>> =
            ix.iter().flat_map(|&i| [self.chosen[i].clone(), self.rejected[i].clone()]).collect();
        let scored = Scored::new(model, &prompts, &group, &comps)?;
        let mut s = scored.out.sum()?.reshape((n, 2))?;
        if detach {
            s = s.detach();
        }
        Ok((s.narrow(1, 0, 1)?.squeeze(1)?, s.narrow(1, 1, 1)?.squeeze(1)?, scored))
    }

    fn batch(&self, policy: &Policy, ix: &[usize], detach: bool) -> Result<(PairLogps, Scored)> {
        let (chosen, rejected, scored) = self.sums(policy, ix, detach)?;
        let v = |f: &dyn Fn(usize) -> f32| {
            Tensor::from_vec(ix.iter().map(|&i| f(i)).collect::<Vec<_>>(), ix.len(), &Device::Cpu)
        };
        let p = PairLogps {
            chosen,
            rejected,
            ref_chosen: v(&|i| self.ref_chosen[i])?,
            ref_rejected: v(&|i| self.ref_rejected[i])?,
            chosen_len: v(&|i| self.chosen[i].len() as f32)?,
            rejected_len: v(&|i| self.rejected[i].len() as f32)?,
        };
        Ok((p, scored))
    }
}

fn loss_kind(cfg: &PolicyConfig) -> PreferenceLoss {
    match (cfg.algo, cfg.length_normalize) {
        (Algo::Ipo, _) => PreferenceLoss::Ipo { beta: cfg.beta },
        (Algo::Simpo, _) => PreferenceLoss::Simpo { beta: cfg.beta, gamma: cfg.simpo_gamma },
        (_, true) => PreferenceLoss::LengthNormDpo { beta: cfg.beta },
        (_, false) => PreferenceLoss::Dpo { beta: cfg.beta, label_smoothing: cfg.label_smoothing },
    }
}

pub fn train(cfg: &PolicyConfig, spec: &str, data: &TrainData, out: &Path, opts: &RunOptions) -> Result<TrainOutcome> {
    let s = Session::open(cfg, spec, out, opts, None, cfg.algo != Algo::Simpo, false)?;
    let reference = s.reference.as_ref();
    let train = Pairs::new(&s.policy, reference, &data.pairs, cfg.batch_size, cfg.max_length)?;
    let eval = Pairs::new(&s.policy, reference, &data.eval_pairs, cfg.batch_size, cfg.max_length)?;
    let kind = loss_kind(cfg);
    let n = data.pairs.len();
    s.run_steps(opts, cfg.batch_size as u64, |s, step| {
        let shown = step + 1;
        let ix = batch_indices(n, s.cfg.batch_size, s.cfg.seed, 0, step);
        let (p, scored) = train.batch(&s.policy, &ix, false)?;
        let (loss, _, metrics) = preference_loss(&kind, &p)?;
        let mut m = Metrics::new();
        put(&mut m, "loss", check_finite(scalar(&loss)?, "DPO loss", shown)?);
        for (k, v) in metrics {
            put(&mut m, k, v);
        }
        let norm = s.update(&loss, &scored, shown)?;
        put(&mut m, "grad_norm", norm);
        if !eval.prompt.is_empty() && (shown % s.cfg.save_steps == 0 || shown == s.cfg.steps) {
            evaluate(&eval, &s.policy, &kind, s.cfg.batch_size, &mut m)?;
        }
        Ok(m)
    })
}

/// `eval_loss` and `eval_rewards/*`, `eval_logps/*` over every held-out pair (no graph).
fn evaluate(eval: &Pairs, policy: &Policy, kind: &PreferenceLoss, chunk: usize, m: &mut Metrics) -> Result<()> {
    let all: Vec<usize> = (0..eval.prompt.len()).collect();
    let mut parts: Vec<PairLogps> = Vec::new();
    for ix in all.chunks(chunk.max(1)) {
        parts.push(eval.batch(policy, ix, true)?.0);
    }
    let cat = |f: &dyn Fn(&PairLogps) -> Tensor| Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0);
    let p = PairLogps {
        chosen: cat(&|p| p.chosen.clone())?,
        rejected: cat(&|p| p.rejected.clone())?,
        ref_chosen: cat(&|p| p.ref_chosen.clone())?,
        ref_rejected: cat(&|p| p.ref_rejected.clone())?,
        chosen_len: cat(&|p| p.chosen_len.clone())?,
        rejected_len: cat(&|p| p.rejected_len.clone())?,
    };
    let (loss, _, metrics) = preference_loss(kind, &p)?;
    put(m, "eval_loss", scalar(&loss)?);
    for (k, v) in metrics {
        put(m, &format!("eval_{k}"), v);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncation_drops_the_prompt_start_first_then_completion_ends() {
        let (p, c, r) = (vec![1, 2, 3, 4, 5], vec![10, 11], vec![20, 21, 22]);
        // Fits: unchanged.
        assert_eq!(truncate(p.clone(), c.clone(), r.clone(), 8), (p.clone(), c.clone(), r.clone()));
        // 5 + 3 > 6: the prompt keeps its last 3 tokens, both completions whole.
        assert_eq!(truncate(p.clone(), c.clone(), r.clone(), 6), (vec![3, 4, 5], c.clone(), r.clone()));
        // Completions longer than the budget: one prompt token, completions cut at the end.
        assert_eq!(truncate(p, c, r, 3), (vec![5], vec![10, 11], vec![20, 21]));
    }
}
