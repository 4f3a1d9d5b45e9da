//! Best-of-n: draw n completions from π, keep the one the (proxy) reward model scores highest.
//!
//! - KL bound: KL(π_bon ‖ π) ≤ log n − (n−1)/n. Stiennon et al. 2020 (App. G.3) and Gao et al.
//!   2022 ("Scaling Laws for Reward Model Overoptimization") use it as the KL of best-of-n; Beirami
//!   et al. 2024 ("Theoretical guarantees on the best-of-n alignment policy", Thm. 1) show it is
//!   only an upper bound, tight when every outcome has vanishing probability.
//! - Beirami et al.'s estimator (§4): if the reward-maximising outcome has probability ε under π,
//!   KL̂_n(ε) = (1−ε)^n·(log n + (n−1) log(1−ε) − (n−1)/n) + (1 − (1−ε)^n)·log((1 − (1−ε)^n)/ε),
//!   the exact KL of a base distribution that is continuous except for one atom of mass ε at the
//!   top (the first term integrates n u^{n−1} log(n u^{n−1}) over u ∈ [0, 1−ε], the second is the
//!   atom, picked with probability 1 − (1−ε)^n). It tends to the bound as ε → 0 and to 0 as ε → 1.
//!   In practice ε is estimated per prompt as π(y*|x) of the selected completion.
//! - Win rate of π_bon against π is ≤ n/(n+1) (Beirami et al. 2024, §5).
//! - Unbiased best-of-n from one pool (Nakano et al. 2021, "WebGPT", App.; Coste et al. 2023,
//!   "Reward Model Ensembles Help Mitigate Overoptimization", eq. 2): from N ≥ n i.i.d. samples
//!   sorted by proxy score ascending, the i-th (1-based) is the maximum of a uniformly random
//!   n-subset with probability C(i−1, n−1)/C(N, n); E[score of BoN(n)] is estimated without bias by
//!   Σ_i C(i−1, n−1)/C(N, n) · score_i, for every n ≤ N from the same pool. Proxy ties are broken
//!   uniformly at random (tied samples share their block's probability equally).

use crate::{Error, Result};

/// log n − (n−1)/n.
pub fn kl_bound(n: usize) -> f64 {
    let n = n as f64;
    n.ln() - (n - 1.0) / n
}

/// n/(n+1).
pub fn win_rate_bound(n: usize) -> f64 {
    n as f64 / (n as f64 + 1.0)
}

/// Beirami et al.'s KL̂_n(ε), ε ∈ (0, 1] the reference probability of the best outcome.
pub fn kl_estimate(n: usize, eps: f64) -> Result<f64> {
    if !(eps > 0.0 && eps <= 1.0) || n == 0 {
        return Err(Error::Usage(format!("best-of-n KL estimate needs n ≥ 1 and ε in (0, 1], got n = {n}, ε = {eps}")));
    }
    let nf = n as f64;
    // (1−ε)^n and log(1−ε) via ln_1p so that tiny ε does not round to 0.
    let log_q = (-eps).ln_1p();
    let qn = (nf * log_q).exp();
    let body = if qn > 0.0 { qn * (nf.ln() + (nf - 1.0) * log_q - (nf - 1.0) / nf) } else { 0.0 };
    let top = 1.0 - qn;
    let atom = if top > 0.0 { top * (top / eps).ln() } else { 0.0 };
    Ok(body + atom)
}

/// Mean of [`kl_estimate`] over prompts, from the reference log-probability log π(y*|x) of each
/// prompt's best-of-n completion.
pub fn kl_estimate_from_logprobs(n: usize, best_ref_logprobs: &[f64]) -> Result<f64> {
    if best_ref_logprobs.is_empty() {
        return Err(Error::Usage("best-of-n KL estimate over an empty set of prompts".into()));
    }
    let mut s = 0.0;
    for &lp in best_ref_logprobs {
        s += kl_estimate(n, lp.exp().min(1.0))?;
    }
    Ok(s / best_ref_logprobs.len() as f64)
}

/// Exact best-of-n distribution of a discrete base `p` with `rewards` (ties broken uniformly):
/// with F(r) = P(reward ≤ r), a tie block B with rewards r gets F(r)^n − F(r⁻)^n, shared in
/// proportion to p inside the block.
pub fn exact_distribution(p: &[f64], rewards: &[f64], n: usize) -> Result<Vec<f64>> {
    if p.len() != rewards.len() || p.is_empty() {
        return Err(Error::Usage(format!("{} probabilities for {} rewards", p.len(), rewards.len())));
    }
    let total: f64 = p.iter().sum();
    if p.iter().any(|&x| x.is_nan() || x < 0.0) || (total - 1.0).abs() > 1e-9 {
        return Err(Error::Usage(format!("base probabilities must be ≥ 0 and sum to 1 (sum = {total})")));
    }
    let mut order: Vec<usize> = (0..p.len()).collect();
    order.sort_by(|&a, &b| rewards[a].total_cmp(&rewards[b]));
    let mut out = vec![0.0; p.len()];
    let (mut below, mut i) = (0.0f64, 0);
    while i < order.len() {
        let mut j = i;
        while j < order.len() && rewards[order[j]] == rewards[order[i]] {
            j += 1;
        }
        let mass: f64 = order[i..j].iter().map(|&k| p[k]).sum();
        let upto = (below + mass).min(1.0);
        let pick = upto.powi(n as i32) - below.powi(n as i32);
        for &k in &order[i..j] {
            out[k] = if mass > 0.0 { pick * p[k] / mass } else { 0.0 };
        }
        below = upto;
        i = j;
    }
    Ok(out)
}

/// KL(π_bon ‖ π) of a discrete base, exactly.
pub fn exact_kl(p: &[f64], rewards: &[f64], n: usize) -> Result<f64> {
    let q = exact_distribution(p, rewards, n)?;
    Ok(q.iter().zip(p).filter(|(&qi, _)| qi > 0.0).map(|(&qi, &pi)| qi * (qi / pi).ln()).sum())
}

/// log C(a, b) from a table of log k! (`lf[k] = ln k!`).
fn ln_choose(lf: &[f64], a: usize, b: usize) -> f64 {
    lf[a] - lf[b] - lf[a - b]
}

/// Weights w_i = C(i−1, n−1)/C(N, n), i = 1..N, of the ascending-ranked pool (sum to 1).
pub fn pool_weights(pool: usize, n: usize) -> Result<Vec<f64>> {
    if n == 0 || n > pool {
        return Err(Error::Usage(format!("best-of-n needs 1 ≤ n ≤ pool size, got n = {n}, pool = {pool}")));
    }
    let mut lf = vec![0.0f64; pool + 1];
    for k in 1..=pool {
        lf[k] = lf[k - 1] + (k as f64).ln();
    }
    let denom = ln_choose(&lf, pool, n);
    Ok((1..=pool).map(|i| if i < n { 0.0 } else { (ln_choose(&lf, i - 1, n - 1) - denom).exp() }).collect())
}

/// Unbiased estimates `(E[proxy], E[gold])` of the best-of-n policy (selection by `proxy`) from
/// one pool of i.i.d. samples. `gold` may be the proxy itself.
pub fn expected_scores(proxy: &[f64], gold: &[f64], n: usize) -> Result<(f64, f64)> {
    if proxy.len() != gold.len() {
        return Err(Error::Usage(format!("{} proxy scores but {} gold scores", proxy.len(), gold.len())));
    }
    if proxy.iter().chain(gold).any(|x| !x.is_finite()) {
        return Err(Error::Usage("best-of-n scores must be finite".into()));
    }
    let w = pool_weights(proxy.len(), n)?;
    let mut order: Vec<usize> = (0..proxy.len()).collect();
    order.sort_by(|&a, &b| proxy[a].total_cmp(&proxy[b]));
    let (mut ep, mut eg, mut i) = (0.0, 0.0, 0);
    while i < order.len() {
        let mut j = i;
        while j < order.len() && proxy[order[j]] == proxy[order[i]] {
            j += 1;
        }
        let block_w: f64 = w[i..j].iter().sum();
        let each = block_w / (j - i) as f64;
        for &k in &order[i..j] {
            ep += each * proxy[k];
            eg += each * gold[k];
        }
        i = j;
    }
    Ok((ep, eg))
}
