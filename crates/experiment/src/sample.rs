//! Sampling from a world policy and measuring it: what best-of-n, RL and the evaluations share.

use mismatch_eval::stats::normal_ci;
use mismatch_models::{completion_logprobs, generate, Gpt, Result, SamplingParams};
use mismatch_policy::Reward;
use mismatch_world::meters::Meters;
use mismatch_world::world::World;
use serde::Serialize;

pub const PAD_ID: u32 = 0;
pub const EOS_ID: u32 = 2;

/// Completions of a batch: tokens (with `<eos>` when finished), raw log-probs, texts.
pub struct Samples {
    pub prompt_ids: Vec<Vec<u32>>,
    pub tokens: Vec<Vec<u32>>,
    pub logprobs: Vec<Vec<f32>>,
    pub texts: Vec<String>,
}

pub fn encode_prompt(tok: &tokenizers::Tokenizer, p: &str) -> Result<Vec<u32>> {
    Ok(tok.encode(p, true).map_err(|e| mismatch_models::Error::Usage(format!("tokenizing: {e}")))?.get_ids().to_vec())
}

/// Samples one completion per prompt at temperature 1 (the policy itself).
pub fn sample(
    model: &Gpt,
    tok: &tokenizers::Tokenizer,
    prompts: &[&str],
    max_new: usize,
    seed: u64,
) -> Result<Samples> {
    let prompt_ids = prompts.iter().map(|p| encode_prompt(tok, p)).collect::<Result<Vec<_>>>()?;
    let params = SamplingParams {
        max_new_tokens: max_new,
        temperature: 1.0,
        stop_tokens: vec![EOS_ID],
        seed,
        ..Default::default()
    };
    let g = generate(model, &prompt_ids, &params, PAD_ID)?;
    let texts = g
        .tokens
        .iter()
        .map(|t| tok.decode(t, true).map_err(|e| mismatch_models::Error::Usage(format!("decoding: {e}"))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Samples { prompt_ids, tokens: g.tokens, logprobs: g.raw_logprobs, texts })
}

/// k1 sequence KL Σ_t (log π − log π_ref) of each sample under `reference`
/// ([`mismatch_eval::kl::sequence_kl_k1`]).
pub fn sequence_kl(reference: &Gpt, s: &Samples) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(s.tokens.len());
    for (i0, chunk) in s.prompt_ids.chunks(128).enumerate() {
        let toks = &s.tokens[i0 * 128..i0 * 128 + chunk.len()];
        let r = completion_logprobs(reference, chunk, toks, PAD_ID)?.to_vecs()?;
        for (j, rl) in r.iter().enumerate() {
            let lp = &s.logprobs[i0 * 128 + j];
            out.push(mismatch_eval::kl::sequence_kl_k1(lp, rl));
        }
    }
    Ok(out)
}

/// One evaluation of a policy on held-out prompts.
#[derive(Debug, Clone, Serialize)]
pub struct EvalPoint {
    pub step: usize,
    /// Sample-based k1 sequence KL(π ‖ π_start) with its 95% CI.
    pub kl: f64,
    pub kl_lo: f64,
    pub kl_hi: f64,
    pub proxy: f64,
    pub proxy_lo: f64,
    pub proxy_hi: f64,
    pub gold: f64,
    pub gold_lo: f64,
    pub gold_hi: f64,
    pub meters: Meters,
    /// Per-sample gold scores (for paired CIs between evaluation points).
    #[serde(skip)]
    pub golds: Vec<f64>,
    /// Per-sample proxy scores.
    #[serde(skip)]
    pub proxies: Vec<f64>,
    /// Per-sample failure-meter values, by [`mismatch_world::meters::FAILURE_METERS`] name.
    #[serde(skip)]
    pub per_sample: std::collections::BTreeMap<&'static str, Vec<f64>>,
}

impl EvalPoint {
    /// An evaluation point from per-sample KL, proxy and gold scores and the batch's meters: KL
    /// and proxy get normal-approximation 95% intervals, gold takes the meters' interval.
    pub fn new(
        step: usize,
        kl: &[f64],
        proxies: Vec<f64>,
        golds: Vec<f64>,
        meters: Meters,
        per_sample: std::collections::BTreeMap<&'static str, Vec<f64>>,
    ) -> Self {
        let (k, p) = (normal_ci(kl), normal_ci(&proxies));
        EvalPoint {
            step,
            kl: k.mean,
            kl_lo: k.lo,
            kl_hi: k.hi,
            proxy: p.mean,
            proxy_lo: p.lo,
            proxy_hi: p.hi,
            gold: meters.gold,
            gold_lo: meters.gold_lo,
            gold_hi: meters.gold_hi,
            meters,
            golds,
            proxies,
            per_sample,
        }
    }
}

/// Samples `prompts` once each (fixed `seed`) and measures KL to `reference`, proxy, gold, meters.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    world: &World,
    policy: &Gpt,
    reference: &Gpt,
    proxy: &dyn Reward,
    tok: &tokenizers::Tokenizer,
    prompts: &[&str],
    max_new: usize,
    seed: u64,
    step: usize,
) -> Result<EvalPoint> {
    let s = sample(policy, tok, prompts, max_new, seed)?;
    let kl = sequence_kl(reference, &s)?;
    let comps: Vec<&str> = s.texts.iter().map(String::as_str).collect();
    let px: Vec<f64> = proxy.score(prompts, &comps)?.into_iter().map(|x| x as f64).collect();
    let golds = prompts.iter().zip(&comps).map(|(p, c)| world.gold_score(p, c)).collect::<Result<Vec<_>>>()?;
    let (meters, per_sample) = mismatch_eval::meters::measure(world, prompts, &comps, &golds)?;
    Ok(EvalPoint::new(step, &kl, px, golds, meters, per_sample))
}
