//! Value-guided decoding: optimising against a reward at inference time instead of in training,
//! so that the same mismatch question — does spending compute against the proxy raise gold? —
//! can be asked of decoding, beside best-of-n and RL. Both decoders read any [`Reward`] over
//! (prompt, completion so far): a learned RM read on partial text, a rule, or PPO's value head
//! ([`crate::reward::ValueReward`]), which is what a prefix scorer is.
//!
//! **Reward-augmented decoding** (RAD; Deng & Raffel 2023, "Reward-Augmented Decoding:
//! Efficient Controlled Text Generation With a Unidirectional Reward Model", EMNLP). At step t
//! keep the k tokens V_k most likely under π at temperature T, score each extended prefix, and
//! sample from
//!
//! ```text
//!     q(v | x, y_<t) = softmax_{v ∈ V_k} ( z_v / T + β · r(x, y_<t v) )
//! ```
//!
//! with z the policy's logits. β = 0 is top-k sampling; large β is greedy on r. Unlike the paper,
//! whose reward model is unidirectional (cached, one pass for all k candidates) with outputs in
//! [0, 1], any reward is re-run on every candidate prefix (k reward calls per token per row) in
//! its own units, so β is per unit of that reward.
//! KL: q is explicit at every step, so by the chain rule the sequence KL is
//! `KL(q ‖ π) = E_{y∼q} Σ_t KL(q(·|x,y_<t) ‖ π(·|x,y_<t))`; summing the exact per-step KL (over
//! V_k, against π at temperature 1) along each sample is an unbiased estimate with less variance
//! than Σ_t log q/π of the sampled tokens (a Rao-Blackwellised k1).
//!
//! **Blockwise controlled decoding** (Mudgal et al. 2024, "Controlled Decoding from Language
//! Models", ICML, blockwise CD). Draw K continuations of M tokens from π (temperature T), keep
//! the one the scorer rates highest on prefix + block, and go on from it until a stop token or
//! the token budget. KL: for every prefix the chosen block is best-of-K, whose KL to the
//! sampling distribution is at most `log K − (K−1)/K` (Beirami et al. 2024, "Theoretical
//! guarantees on the best-of-n alignment policy"); by the chain rule the sequence KL is at most
//! that bound times the number of blocks drawn. Each block re-reads the prefix (no cache is
//! carried across blocks), so a block costs one prefill of prompt + completion so far.

use crate::reward::Reward;
use crate::{Error, Result};
use mismatch_models::decoder::CausalLm;
use mismatch_models::generate::{descending, log_softmax, log_sum_exp};
use mismatch_models::{generate, SamplingParams, Stepper};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which decoder, with its knobs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Guide {
    /// Reward-augmented decoding over the `top_k` most likely tokens with weight `beta`.
    Rad { top_k: usize, beta: f64 },
    /// Best of `candidates` continuations of `block` tokens, block after block.
    Block { block: usize, candidates: usize },
}

impl Guide {
    pub fn check(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Usage(m));
        match *self {
            Guide::Rad { top_k: 0, .. } => bad("guided decoding: top-k must be ≥ 1".into()),
            Guide::Rad { beta, .. } if !beta.is_finite() => {
                bad(format!("guided decoding: β must be finite (got {beta})"))
            }
            Guide::Block { block: 0, .. } => bad("guided decoding: the block length must be ≥ 1".into()),
            Guide::Block { candidates: 0, .. } => bad("guided decoding: the number of candidates must be ≥ 1".into()),
            _ => Ok(()),
        }
    }
}

/// What is decoded and how.
#[derive(Debug, Clone)]
pub struct GuideParams {
    pub guide: Guide,
    pub max_new_tokens: usize,
    /// Temperature of π's proposals (> 0).
    pub temperature: f64,
    pub stop_tokens: Vec<u32>,
    pub seed: u64,
}

/// The prompts a guided decoder continues: token ids for the policy, text for the reward.
pub struct Prompts<'a> {
    pub ids: &'a [Vec<u32>],
    pub texts: &'a [&'a str],
}

/// Guided completions.
#[derive(Debug, Clone, PartialEq)]
pub struct Guided {
    /// Completion tokens per row, with the stop token when one was emitted.
    pub tokens: Vec<Vec<u32>>,
    /// log π(token) under the policy at temperature 1, per token.
    pub raw_logprobs: Vec<Vec<f32>>,
    pub finished: Vec<bool>,
    /// Per row: RAD's Σ_t KL(q_t ‖ π_t) (an unbiased estimate of the sequence KL); blockwise,
    /// the upper bound blocks × (log K − (K−1)/K).
    pub kl: Vec<f64>,
    /// Whether `kl` is a bound (blockwise) rather than an estimate (RAD).
    pub kl_is_bound: bool,
    /// (prompt, completion) pairs the reward scored.
    pub reward_calls: usize,
}

/// Decodes every prompt with `guide`, scoring completions-so-far (text from `decode`) with
/// `reward`. A seed fixes the output; rows are independent of their batch-mates' choices.
pub fn guided_generate(
    model: &dyn CausalLm,
    prompts: &Prompts,
    decode: &dyn Fn(&[u32]) -> Result<String>,
    reward: &dyn Reward,
    p: &GuideParams,
    pad_id: u32,
) -> Result<Guided> {
    p.guide.check()?;
    if !(p.temperature > 0.0 && p.temperature.is_finite()) {
        return Err(Error::Usage(format!(
            "guided decoding samples: the temperature must be > 0 (got {})",
            p.temperature
        )));
    }
    if prompts.ids.len() != prompts.texts.len() {
        return Err(Error::Usage(format!("{} prompt ids but {} prompt texts", prompts.ids.len(), prompts.texts.len())));
    }
    match p.guide {
        Guide::Rad { top_k, beta } => rad(model, prompts, decode, reward, p, top_k, beta, pad_id),
        Guide::Block { block, candidates } => blockwise(model, prompts, decode, reward, p, block, candidates, pad_id),
    }
}

/// RAD's proposal at one step: the candidates (the `top_k` tokens by tempered logit, ties by
/// id), log q over them and the exact KL(q ‖ π) against π at temperature 1.
pub struct RadStep {
    pub candidates: Vec<usize>,
    pub logq: Vec<f64>,
    pub kl: f64,
}

/// The candidates of a RAD step: the `top_k` most likely next tokens at any temperature.
pub fn rad_candidates(logits: &[f32], top_k: usize) -> Vec<usize> {
    let mut order = descending(logits);
    order.truncate(top_k.min(order.len()));
    order
}

/// q = softmax(z_v / T + β r_v) over `candidates` (rewards in the same order), with
/// KL(q ‖ π) = Σ_v q_v (log q_v − log π_v) for π = softmax(z).
pub fn rad_step(logits: &[f32], candidates: Vec<usize>, rewards: &[f32], temperature: f64, beta: f64) -> RadStep {
    let lse_z = log_sum_exp(logits);
    let a: Vec<f64> =
        candidates.iter().zip(rewards).map(|(&v, &r)| logits[v] as f64 / temperature + beta * r as f64).collect();
    let max = a.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + a.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
    let logq: Vec<f64> = a.iter().map(|x| x - lse).collect();
    let kl = logq.iter().zip(&candidates).map(|(&lq, &v)| lq.exp() * (lq - (logits[v] as f64 - lse_z))).sum();
    RadStep { candidates, logq, kl }
}

/// Inverse-CDF draw from `logq` at the uniform `u` (the last entry if rounding leaves `u` past
/// the total).
fn draw(logq: &[f64], u: f64) -> usize {
    let mut cum = 0.0;
    for (i, lq) in logq.iter().enumerate() {
        cum += lq.exp();
        if u < cum {
            return i;
        }
    }
    logq.len() - 1
}

#[allow(clippy::too_many_arguments)]
fn rad(
    model: &dyn CausalLm,
    prompts: &Prompts,
    decode: &dyn Fn(&[u32]) -> Result<String>,
    reward: &dyn Reward,
    p: &GuideParams,
    top_k: usize,
    beta: f64,
    pad_id: u32,
) -> Result<Guided> {
    let b = prompts.ids.len();
    let mut out = empty(b, false);
    let mut stepper = Stepper::new(model, prompts.ids, p.max_new_tokens, pad_id)?;
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    for _ in 0..p.max_new_tokens {
        let live: Vec<usize> = (0..b).filter(|&r| !out.finished[r]).collect();
        if live.is_empty() {
            break;
        }
        // One uniform per live row in row order, as `generate` draws.
        let draws: Vec<f64> = live.iter().map(|_| rng.random()).collect();
        let logits = stepper.logits()?;
        let cands: Vec<Vec<usize>> = live.iter().map(|&r| rad_candidates(&logits[r], top_k)).collect();
        let (mut ps, mut texts) = (Vec::new(), Vec::new());
        for (&r, c) in live.iter().zip(&cands) {
            for &v in c {
                let mut t = out.tokens[r].clone();
                t.push(v as u32);
                texts.push(decode(&t)?);
                ps.push(prompts.texts[r]);
            }
        }
        let scores = score_checked(reward, &ps, &texts)?;
        out.reward_calls += texts.len();
        let mut next = vec![None; b];
        let mut at = 0;
        for ((&r, c), u) in live.iter().zip(cands).zip(draws) {
            let n = c.len();
            let s = rad_step(&logits[r], c, &scores[at..at + n], p.temperature, beta);
            at += n;
            let tok = s.candidates[draw(&s.logq, u)] as u32;
            out.tokens[r].push(tok);
            out.raw_logprobs[r].push(log_softmax(&logits[r])[tok as usize]);
            out.kl[r] += s.kl;
            out.finished[r] = p.stop_tokens.contains(&tok);
            next[r] = Some(tok);
        }
        stepper.advance(&next)?;
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn blockwise(
    model: &dyn CausalLm,
    prompts: &Prompts,
    decode: &dyn Fn(&[u32]) -> Result<String>,
    reward: &dyn Reward,
    p: &GuideParams,
    block: usize,
    k: usize,
    pad_id: u32,
) -> Result<Guided> {
    let b = prompts.ids.len();
    let mut out = empty(b, true);
    let bound = mismatch_eval::bon::kl_bound(k);
    let mut done = 0;
    let mut j = 0u64;
    while done < p.max_new_tokens {
        let live: Vec<usize> = (0..b).filter(|&r| !out.finished[r]).collect();
        if live.is_empty() {
            break;
        }
        let m = block.min(p.max_new_tokens - done);
        // K consecutive copies of each live row's prefix share one prefill in `generate`.
        let ids: Vec<Vec<u32>> = live
            .iter()
            .flat_map(|&r| std::iter::repeat_n([prompts.ids[r].as_slice(), &out.tokens[r]].concat(), k))
            .collect();
        let params = SamplingParams {
            max_new_tokens: m,
            temperature: p.temperature,
            top_k: None,
            top_p: None,
            stop_tokens: p.stop_tokens.clone(),
            seed: mismatch_models::seed::derive(p.seed, j),
        };
        let g = generate(model, &ids, &params, pad_id)?;
        let mut texts = Vec::with_capacity(ids.len());
        let mut ps = Vec::with_capacity(ids.len());
        for (i, cand) in g.tokens.iter().enumerate() {
            let r = live[i / k];
            texts.push(decode(&[out.tokens[r].as_slice(), cand].concat())?);
            ps.push(prompts.texts[r]);
        }
        let scores = score_checked(reward, &ps, &texts)?;
        out.reward_calls += texts.len();
        for (i, &r) in live.iter().enumerate() {
            // The first of the best on ties.
            let best = (i * k..i * k + k).fold(i * k, |a, c| if scores[c] > scores[a] { c } else { a });
            out.tokens[r].extend(&g.tokens[best]);
            out.raw_logprobs[r].extend(&g.raw_logprobs[best]);
            out.finished[r] = g.finished[best];
            out.kl[r] += bound;
        }
        done += m;
        j += 1;
    }
    Ok(out)
}

fn empty(b: usize, kl_is_bound: bool) -> Guided {
    Guided {
        tokens: vec![vec![]; b],
        raw_logprobs: vec![vec![]; b],
        finished: vec![false; b],
        kl: vec![0.0; b],
        kl_is_bound,
        reward_calls: 0,
    }
}

/// The reward's scores of the pairs, refusing a non-finite one (it would make q undefined).
fn score_checked(reward: &dyn Reward, prompts: &[&str], texts: &[String]) -> Result<Vec<f32>> {
    let t: Vec<&str> = texts.iter().map(String::as_str).collect();
    let s = reward.score(prompts, &t)?;
    if let Some(i) = s.iter().position(|x| !x.is_finite()) {
        return Err(Error::Usage(format!(
            "guided decoding: reward {} gave {} for the prefix {:?}",
            reward.name(),
            s[i],
            texts[i]
        )));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: logits z = [2, 1, 0, −1], T = 1, k = 2, rewards [0, 1], β = 2:
    /// a = [2 + 0, 1 + 2] = [2, 3], q = [1/(1+e), e/(1+e)] = [0.268941, 0.731059];
    /// log π = z − ln Σe^z with ln(e² + e + 1 + e⁻¹) = 2.440190;
    /// KL = Σ q (log q − log π) = 0.268941·(−1.313262 + 0.440190) + 0.731059·(−0.313262 + 1.440190)
    ///    = 0.589045.
    #[test]
    fn rad_step_by_hand() {
        let z = [2.0f32, 1.0, 0.0, -1.0];
        let c = rad_candidates(&z, 2);
        assert_eq!(c, vec![0, 1]);
        let s = rad_step(&z, c, &[0.0, 1.0], 1.0, 2.0);
        assert!((s.logq[0].exp() - 0.268941).abs() < 1e-6, "{:?}", s.logq);
        assert!((s.logq[1].exp() - 0.731059).abs() < 1e-6);
        assert!((s.kl - 0.589045).abs() < 1e-5, "{}", s.kl);
        // β = 0 and k = vocabulary at T = 1: q = π, KL = 0.
        let s = rad_step(&z, rad_candidates(&z, 4), &[5.0, -3.0, 1.0, 0.0], 1.0, 0.0);
        let lp = log_softmax(&z);
        for (i, &v) in s.candidates.iter().enumerate() {
            assert!((s.logq[i] - lp[v] as f64).abs() < 1e-6);
        }
        assert!(s.kl.abs() < 1e-9);
    }

    #[test]
    fn draws_follow_the_cdf() {
        let lq = [0.2f64.ln(), 0.5f64.ln(), 0.3f64.ln()];
        assert_eq!(draw(&lq, 0.0), 0);
        assert_eq!(draw(&lq, 0.19), 0);
        assert_eq!(draw(&lq, 0.21), 1);
        assert_eq!(draw(&lq, 0.71), 2);
        assert_eq!(draw(&lq, 1.0), 2);
    }

    #[test]
    fn bad_knobs_are_refused() {
        assert!(Guide::Rad { top_k: 0, beta: 1.0 }.check().is_err());
        assert!(Guide::Rad { top_k: 3, beta: f64::NAN }.check().is_err());
        assert!(Guide::Block { block: 0, candidates: 2 }.check().is_err());
        assert!(Guide::Block { block: 4, candidates: 0 }.check().is_err());
        assert!(Guide::Block { block: 4, candidates: 2 }.check().is_ok());
    }
}
