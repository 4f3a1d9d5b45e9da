//! Best-of-N sampling (no training): every prompt gets N samples from the policy, each scored.
//! From that one pool, the expected reward of best-of-n for n = 1, 2, 4, …, N is estimated
//! without bias ([`mismatch_eval::bon::expected_scores`], Nakano et al. 2021 / Coste et al. 2023) per
//! prompt, averaged over prompts, with a 95% percentile bootstrap CI over prompts (1000
//! resamples, seeded), next to the analytic KL bound log n − (n−1)/n.
//!
//! Writes `out/samples.jsonl` (prompt_index, sample, prompt, completion, reward, logprob = Σ raw
//! log π) and `out/bon.json`.
//!
//! The pool may come from an endpoint (`--policy openai:URL#MODEL`): each prompt's N samples are
//! one request with `n = N` and a seed derived from the run's, through the response cache; the
//! reward that scores them stays local. An endpoint reports no end-of-sequence token, so there
//! `logprob` sums the log-probs of the tokens it returns.

use super::common::{derive_seed, put, rollout, score, Metrics, Policy};
use super::{PolicyConfig, RunOptions, TrainData, TrainOutcome};
use crate::reward::Reward;
use crate::{Error, Result};
use mismatch_eval::{bon, stats};
use mismatch_models::checkpoint::write_atomic;
use std::path::Path;

/// n = 1, 2, 4, … up to N, plus N itself.
pub fn ns(big_n: usize) -> Vec<usize> {
    let mut v: Vec<usize> = std::iter::successors(Some(1usize), |&n| Some(n * 2)).take_while(|&n| n <= big_n).collect();
    if v.last() != Some(&big_n) {
        v.push(big_n);
    }
    v
}

pub fn run(
    cfg: &PolicyConfig,
    spec: &str,
    reward: &dyn Reward,
    data: &TrainData,
    out: &Path,
    opts: &RunOptions,
) -> Result<TrainOutcome> {
    let source = match opts.endpoint.client(spec) {
        Some(client) => Source::Remote(client.map_err(|e| Error::Usage(e.to_string()))?),
        None => Source::Local(Policy::load(spec, false, cfg.chat)?),
    };
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let tc = serde_json::json!({"config": cfg, "policy": spec, "reward": reward.name()});
    write_atomic(&out.join("train_config.json"), &serde_json::to_vec_pretty(&tc).expect("json"))?;
    let big_n = cfg.num_generations;
    let bar = opts.progress.then(|| indicatif::ProgressBar::new(data.prompts.len() as u64));
    let mut lines = String::new();
    let mut pools: Vec<Vec<f64>> = Vec::with_capacity(data.prompts.len());
    for (chunk_no, chunk) in data.prompts.chunks(cfg.batch_size).enumerate() {
        let ro = source.sample(cfg, chunk, derive_seed(cfg.seed, chunk_no as u64, 3))?;
        let s = score(reward, &ro.prompts, &ro.texts, chunk_no + 1)?;
        for (j, p) in chunk.iter().enumerate() {
            let prompt_index = chunk_no * cfg.batch_size + j;
            let mut pool = Vec::with_capacity(big_n);
            for k in 0..big_n {
                let r = j * big_n + k;
                pool.push(s[r] as f64);
                let rec = serde_json::json!({"prompt_index": prompt_index, "sample": k, "prompt": p,
                    "completion": ro.texts[r], "reward": s[r], "logprob": ro.raw_logprob[r]});
                lines.push_str(&rec.to_string());
                lines.push('\n');
            }
            pools.push(pool);
        }
        if let Some(b) = &bar {
            b.inc(chunk.len() as u64);
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    write_atomic(&out.join("samples.jsonl"), lines.as_bytes())?;

    // The same resamples of the prompts for every n (one seed), so the bands of the curve agree.
    let boot_seed = derive_seed(cfg.seed, 0, 4);
    let mut curve = Vec::new();
    let mut outcome = TrainOutcome::default();
    for n in ns(big_n) {
        let per: Vec<f64> = pools
            .iter()
            .map(|p| bon::expected_scores(p, p, n).map(|x| x.0).map_err(|e| Error::Usage(e.to_string())))
            .collect::<Result<_>>()?;
        let ci = stats::mean_ci(&per, boot_seed);
        let (mean, lo, hi) = (ci.mean, ci.lo, ci.hi);
        curve.push(serde_json::json!({"n": n, "kl_bound": bon::kl_bound(n), "expected_score": mean,
            "ci_low": lo, "ci_high": hi}));
        let mut m = Metrics::new();
        m.insert("n".into(), serde_json::json!(n));
        put(&mut m, "kl_bound", bon::kl_bound(n));
        put(&mut m, "objective/scores", mean);
        put(&mut m, "ci_low", lo);
        put(&mut m, "ci_high", hi);
        outcome.metrics.push(m);
    }
    let doc = serde_json::json!({"reward": reward.name(), "policy": spec, "prompts": pools.len(), "pool_size": big_n,
        "ci": format!("95% percentile bootstrap over prompts, {} resamples", stats::RESAMPLES), "estimator": "unbiased best-of-n from one pool (Nakano et al. 2021; Coste et al. 2023)",
        "curve": curve});
    write_atomic(&out.join("bon.json"), &serde_json::to_vec_pretty(&doc).expect("json"))?;
    Ok(outcome)
}

/// Where the pool is sampled: the policy loaded here, or an endpoint serving it.
enum Source {
    Local(Policy),
    Remote(mismatch_openai::Client),
}

/// A pool chunk: `num_generations` rows per prompt, in prompt order.
struct Pool {
    prompts: Vec<String>,
    texts: Vec<String>,
    raw_logprob: Vec<f64>,
}

impl Source {
    fn sample(&self, cfg: &PolicyConfig, chunk: &[String], seed: u64) -> Result<Pool> {
        let n = cfg.num_generations;
        let prompts: Vec<String> = chunk.iter().flat_map(|p| std::iter::repeat_n(p.clone(), n)).collect();
        match self {
            Source::Local(policy) => {
                let rows: Vec<&str> = prompts.iter().map(String::as_str).collect();
                let ro = rollout(policy, cfg, &rows, seed)?;
                Ok(Pool { prompts, texts: ro.texts, raw_logprob: ro.raw_logprob })
            }
            Source::Remote(client) => {
                if cfg.top_k.is_some() {
                    return Err(Error::Usage(
                        "top_k is not part of the OpenAI API; unset it for an openai: policy".into(),
                    ));
                }
                let indexed: Vec<(usize, &String)> = chunk.iter().enumerate().collect();
                let sampling = |j: usize| mismatch_openai::Sampling {
                    chat: cfg.chat,
                    system: None,
                    n,
                    temperature: cfg.temperature,
                    top_p: 1.0,
                    max_tokens: cfg.max_new_tokens,
                    seed: derive_seed(seed, j as u64, 0),
                };
                let answers = client.map(&indexed, |&(j, p)| client.samples(p, &sampling(j)));
                let (mut texts, mut raw_logprob) =
                    (Vec::with_capacity(prompts.len()), Vec::with_capacity(prompts.len()));
                for a in answers {
                    for s in a.map_err(|e| Error::Usage(e.to_string()))? {
                        texts.push(s.text);
                        raw_logprob.push(s.logprobs.iter().map(|&x| x as f64).sum());
                    }
                }
                Ok(Pool { prompts, texts, raw_logprob })
            }
        }
    }
}
