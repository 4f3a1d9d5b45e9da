//! Best-of-n against the proxies, from one pool of `n_max` start-policy samples per prompt with
//! the unbiased estimator of Nakano et al. 2021 / Coste et al. 2023 (`mismatch_eval::bon::
//! expected_scores`), and KL(π_bon ‖ π) = log n − (n−1)/n (`bon::kl_bound`, as Gao et al. 2022).

use crate::sample::sample;
use mismatch_eval::bon;
use mismatch_models::{Gpt, Result};
use mismatch_policy::Reward;
use mismatch_world::world::World;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct BonCurve {
    pub name: String,
    pub n: Vec<usize>,
    pub kl: Vec<f64>,
    pub proxy: Vec<f64>,
    pub gold: Vec<f64>,
}

/// The pool: `n_max` samples for each prompt, with gold scores.
pub struct Pool {
    pub prompts: Vec<String>,
    pub texts: Vec<Vec<String>>,
    pub gold: Vec<Vec<f64>>,
}

pub fn pool(
    world: &World,
    policy: &Gpt,
    tok: &tokenizers::Tokenizer,
    prompts: &[&str],
    n_max: usize,
    max_new: usize,
    seed: u64,
) -> Result<Pool> {
    let rep: Vec<&str> = prompts.iter().flat_map(|p| std::iter::repeat_n(*p, n_max)).collect();
    let mut texts = Vec::with_capacity(rep.len());
    for (i, chunk) in rep.chunks(256).enumerate() {
        texts.extend(sample(policy, tok, chunk, max_new, seed.wrapping_add(i as u64 * 7919))?.texts);
    }
    let texts: Vec<Vec<String>> = texts.chunks(n_max).map(|c| c.to_vec()).collect();
    let gold = prompts
        .iter()
        .zip(&texts)
        .map(|(p, ts)| ts.iter().map(|t| world.gold_score(p, t)).collect::<Result<Vec<_>>>())
        .collect::<Result<Vec<_>>>()?;
    Ok(Pool { prompts: prompts.iter().map(|s| s.to_string()).collect(), texts, gold })
}

/// The best-of-n curve of `reward` for every n in `ns` (each ≤ pool size), averaged over prompts.
pub fn curve(pool: &Pool, reward: &dyn Reward, ns: &[usize], name: &str) -> Result<BonCurve> {
    let mut c = BonCurve {
        name: name.into(),
        n: ns.to_vec(),
        kl: vec![],
        proxy: vec![0.0; ns.len()],
        gold: vec![0.0; ns.len()],
    };
    c.kl = ns.iter().map(|&n| bon::kl_bound(n)).collect();
    for ((p, ts), g) in pool.prompts.iter().zip(&pool.texts).zip(&pool.gold) {
        let ps = vec![p.as_str(); ts.len()];
        let t: Vec<&str> = ts.iter().map(String::as_str).collect();
        let px: Vec<f64> = reward.score(&ps, &t)?.into_iter().map(|x| x as f64).collect();
        for (j, &n) in ns.iter().enumerate() {
            let (ep, eg) = bon::expected_scores(&px, g, n).map_err(|e| mismatch_models::Error::Usage(e.to_string()))?;
            c.proxy[j] += ep / pool.prompts.len() as f64;
            c.gold[j] += eg / pool.prompts.len() as f64;
        }
    }
    Ok(c)
}
