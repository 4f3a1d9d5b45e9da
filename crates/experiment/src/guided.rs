//! Value-guided decoding against the proxy, beside best-of-n on the same gold-vs-√KL axes: the
//! start policy decoded with reward-augmented decoding at each β and with blockwise controlled
//! decoding at each K ([`mismatch_policy::guided`]), steered by the single proxy, on the first
//! `guided.prompts` evaluation prompts. Each point is one decode of those prompts; KL is RAD's per-sample
//! estimate (Σ_t KL(q_t ‖ π_t)) or blockwise's bound, averaged over samples.

use mismatch_models::{CausalLm, Result};
use mismatch_policy::guided::{guided_generate, Guide, GuideParams, Prompts};
use mismatch_policy::Reward;
use serde::{Deserialize, Serialize};

/// `[guided]`: the decoders and their settings. Empty `rad_betas` and `block_candidates` turn
/// the section off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuidedConfig {
    /// RAD's β values (per unit of the standardised proxy); β = 0 is plain top-k sampling.
    pub rad_betas: Vec<f64>,
    /// RAD's candidates per token.
    pub rad_top_k: usize,
    /// Blockwise controlled decoding: candidates K per block (K = 1 is the start policy).
    pub block_candidates: Vec<usize>,
    /// Tokens per block.
    pub block_tokens: usize,
    /// Evaluation prompts decoded at every point (at most `eval_prompts`).
    pub prompts: usize,
}

impl Default for GuidedConfig {
    fn default() -> Self {
        Self {
            rad_betas: vec![0.0, 0.5, 1.0, 2.0, 4.0],
            rad_top_k: 8,
            block_candidates: vec![1, 2, 4, 8],
            block_tokens: 4,
            prompts: 64,
        }
    }
}

impl GuidedConfig {
    /// The two curves' names and decoders, in the order the report lists them.
    pub fn plan(&self) -> Vec<(&'static str, Vec<(f64, Guide)>)> {
        let rad = self.rad_betas.iter().map(|&beta| (beta, Guide::Rad { top_k: self.rad_top_k, beta })).collect();
        let block = self
            .block_candidates
            .iter()
            .map(|&k| (k as f64, Guide::Block { block: self.block_tokens, candidates: k }))
            .collect();
        [("rad-single", rad), ("cd-single", block)].into_iter().filter(|(_, v): &(_, Vec<_>)| !v.is_empty()).collect()
    }

    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.rad_betas.iter().any(|b| !(b.is_finite() && *b >= 0.0)) {
            return Err(("guided.rad_betas", "every β must be a finite number ≥ 0".into()));
        }
        if !self.rad_betas.is_empty() && self.rad_top_k == 0 {
            return Err(("guided.rad_top_k", "must be at least 1".into()));
        }
        if self.block_candidates.contains(&0) {
            return Err(("guided.block_candidates", "every K must be at least 1".into()));
        }
        if !self.block_candidates.is_empty() && self.block_tokens == 0 {
            return Err(("guided.block_tokens", "must be at least 1".into()));
        }
        if self.prompts == 0 {
            return Err(("guided.prompts", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// One seed's curve of one decoder: a point per β (RAD) or K (blockwise).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuidedCurve {
    pub name: String,
    /// β (RAD) or K (blockwise) of each point.
    pub param: Vec<f64>,
    /// Whether `kl` is an upper bound (blockwise) rather than an estimate (RAD).
    pub kl_is_bound: bool,
    /// Mean over samples of the per-sample KL (estimate or bound).
    pub kl: Vec<f64>,
    pub proxy: Vec<f64>,
    pub gold: Vec<f64>,
}

/// Mean KL, proxy and gold of one guided decode.
pub struct GuidedPoint {
    pub kl: f64,
    pub kl_is_bound: bool,
    pub proxy: f64,
    pub gold: f64,
}

/// A setting's start policy as the guided decoders need it.
pub struct Start<'a> {
    pub model: &'a dyn CausalLm,
    /// Prompt text → the policy's prompt tokens (chat template and all).
    pub encode: &'a dyn Fn(&str) -> Result<Vec<u32>>,
    /// Completion tokens → text.
    pub decode: &'a dyn Fn(&[u32]) -> Result<String>,
    pub pad: u32,
    pub stop: Vec<u32>,
}

/// Decodes `prompts` from `start` with `guide` steered by `proxy`, and measures the replies
/// with the same proxy and with `gold`.
pub fn measure(
    start: &Start,
    prompts: &[&str],
    guide: Guide,
    proxy: &dyn Reward,
    gold: &dyn Reward,
    max_new: usize,
    seed: u64,
) -> Result<GuidedPoint> {
    let ids = prompts.iter().map(|p| (start.encode)(p)).collect::<Result<Vec<_>>>()?;
    let p = GuideParams { guide, max_new_tokens: max_new, temperature: 1.0, stop_tokens: start.stop.clone(), seed };
    let g = guided_generate(start.model, &Prompts { ids: &ids, texts: prompts }, start.decode, proxy, &p, start.pad)?;
    let texts = g.tokens.iter().map(|t| (start.decode)(t)).collect::<Result<Vec<_>>>()?;
    let comps: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mean = |x: &[f32]| x.iter().map(|&v| v as f64).sum::<f64>() / x.len().max(1) as f64;
    Ok(GuidedPoint {
        kl: g.kl.iter().sum::<f64>() / g.kl.len().max(1) as f64,
        kl_is_bound: g.kl_is_bound,
        proxy: mean(&proxy.score(prompts, &comps)?),
        gold: mean(&gold.score(prompts, &comps)?),
    })
}

/// One seed's curve `name`: the setting's start policy decoded at every point of `points`
/// (from [`GuidedConfig::plan`]), steered by `proxy`; point j samples with a seed derived from
/// (`seed`, 10 + j).
pub fn curve(
    s: &dyn crate::pipeline::SeedSetting,
    name: &str,
    points: Vec<(f64, Guide)>,
    proxy: &dyn Reward,
    seed: u64,
) -> Result<GuidedCurve> {
    let mut c =
        GuidedCurve { name: name.into(), param: vec![], kl_is_bound: false, kl: vec![], proxy: vec![], gold: vec![] };
    for (j, (param, guide)) in points.into_iter().enumerate() {
        let g = s.guided(guide, proxy, mismatch_models::seed::derive(seed, 10 + j as u64))?;
        c.param.push(param);
        c.kl_is_bound = g.kl_is_bound;
        c.kl.push(g.kl);
        c.proxy.push(g.proxy);
        c.gold.push(g.gold);
    }
    Ok(c)
}
