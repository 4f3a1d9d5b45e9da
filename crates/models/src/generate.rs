//! Batched sampling with a KV cache, returning per-token log-probs.
//!
//! Every sampled token carries two log-probs: under the *sampling* distribution (after
//! temperature, top-k and top-p; what the sampler actually drew from) and under the *raw*
//! policy (temperature 1, no truncation; what PPO's ratio and the KL penalty need). Mixing
//! the two up is a classic source of "negative KL" and ratio bugs in RLHF code.
//!
//! Prompts are left-padded so that every row's next token sits in the same column; the
//! attention mask and per-row positions make the padding invisible to the model.

use crate::attention::{KvCache, Positions};
use crate::decoder::CausalLm;
use crate::error::{Error, Result};
use crate::pool::{on_pool, par_map};
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

#[derive(Debug, Clone)]
pub struct SamplingParams {
    pub max_new_tokens: usize,
    /// 0 means greedy decoding.
    pub temperature: f64,
    /// Keep the k most likely tokens (None or 0: no limit).
    pub top_k: Option<usize>,
    /// Nucleus sampling: keep the smallest set of tokens with cumulative probability ≥ p.
    pub top_p: Option<f64>,
    /// Generation of a row stops after it emits any of these.
    pub stop_tokens: Vec<u32>,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { max_new_tokens: 128, temperature: 1.0, top_k: None, top_p: None, stop_tokens: vec![], seed: 0 }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Sampled completion tokens per row, including the stop token if one was emitted.
    pub tokens: Vec<Vec<u32>>,
    /// log q(token) under the sampling distribution, per sampled token.
    pub sampling_logprobs: Vec<Vec<f32>>,
    /// log π(token) under the raw policy (temperature 1, untruncated), per sampled token.
    pub raw_logprobs: Vec<Vec<f32>>,
    /// Whether each row ended with a stop token (false: it hit `max_new_tokens`).
    pub finished: Vec<bool>,
}

/// Samples completions for a batch of tokenised prompts. `pad_id` fills left padding.
pub fn generate(
    model: &dyn CausalLm,
    prompts: &[Vec<u32>],
    params: &SamplingParams,
    pad_id: u32,
) -> Result<Generation> {
    let b = prompts.len();
    if b == 0 {
        return Ok(Generation { tokens: vec![], sampling_logprobs: vec![], raw_logprobs: vec![], finished: vec![] });
    }
    let plen = padded_len(model, prompts, params.max_new_tokens)?;
    // Sampling needs no gradients: without this, a trainable policy's forwards would record
    // a graph and miss every inference kernel.
    let detached = model.detached()?;
    let model = detached.as_ref();
    // A small model decodes at the pace of its per-row work, not of streaming its weights, and
    // one batch keeps a single core busy: its rows go through the model in fixed chunks, in
    // parallel, step by step. Sampling stays one pass over all rows in order, so the tokens are
    // those of a single batch.
    let chunk = if small(model) { CHUNK_ROWS } else { b };
    decode(model, prompts, plen, params, pad_id, chunk)
}

/// The padded prompt length of a batch, after checking that every prompt has a token and that
/// the longest one plus `max_new` tokens fits the model's context.
fn padded_len(model: &dyn CausalLm, prompts: &[Vec<u32>], max_new: usize) -> Result<usize> {
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(Error::Usage("empty prompt: generation needs at least one prompt token".into()));
    }
    let plen = prompts.iter().map(|p| p.len()).max().unwrap_or(0);
    if plen + max_new > model.max_seq_len() {
        return Err(Error::Usage(format!(
            "prompt of {plen} tokens + {max_new} new tokens exceeds the model's context of {} tokens",
            model.max_seq_len()
        )));
    }
    Ok(plen)
}

/// A batch decoded one step at a time by a caller that chooses every next token itself (the
/// value-guided decoders of `mismatch_policy::guided`): the same left padding, masks, shared
/// prefill and KV cache as [`generate`], with the choice of token left out.
pub struct Stepper {
    model: Box<dyn CausalLm>,
    part: Part,
    step: usize,
    pad_id: u32,
}

impl Stepper {
    /// Prepares `prompts` for up to `max_new` new tokens (errors as [`generate`]'s).
    pub fn new(model: &dyn CausalLm, prompts: &[Vec<u32>], max_new: usize, pad_id: u32) -> Result<Self> {
        let plen = padded_len(model, prompts, max_new)?;
        let model = model.detached()?;
        let part = Part::new(model.as_ref(), prompts, plen, max_new, pad_id)?;
        Ok(Self { model, part, step: 0, pad_id })
    }

    /// Next-token logits of every row, `[rows][vocab]` (f32; rows that have finished too).
    pub fn logits(&mut self) -> Result<Vec<Vec<f32>>> {
        self.part.logits(self.model.as_ref(), self.step)
    }

    /// Feeds every row its next token; `None` marks a finished row (fed padding, masked out).
    pub fn advance(&mut self, next: &[Option<u32>]) -> Result<()> {
        self.step += 1;
        self.part.advance(next, self.pad_id)
    }
}

/// Decodes `prompts` (left-padded to `plen`) in chunks of `chunk` rows.
fn decode(
    model: &dyn CausalLm,
    prompts: &[Vec<u32>],
    plen: usize,
    params: &SamplingParams,
    pad_id: u32,
    chunk: usize,
) -> Result<Generation> {
    let b = prompts.len();
    let mut parts: Vec<Part> = prompts
        .chunks(chunk)
        .map(|rows| Part::new(model, rows, plen, params.max_new_tokens, pad_id))
        .collect::<Result<_>>()?;
    // Chunks side by side, or a large model's stream of parallel kernels: forked from a pool
    // thread, each step's (or kernel's) fork and join stay inside the pool instead of waking the
    // calling thread (`pool`).
    match parts.len() > 1 || !small(model) {
        true => on_pool(|| steps(model, &mut parts, b, chunk, params, pad_id)),
        false => steps(model, &mut parts, b, chunk, params, pad_id),
    }
}

/// The decoding loop over `parts` (chunks of `chunk` of the `b` rows).
fn steps(
    model: &dyn CausalLm,
    parts: &mut [Part],
    b: usize,
    chunk: usize,
    params: &SamplingParams,
    pad_id: u32,
) -> Result<Generation> {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    let mut out = Generation {
        tokens: vec![vec![]; b],
        sampling_logprobs: vec![vec![]; b],
        raw_logprobs: vec![vec![]; b],
        finished: vec![false; b],
    };
    for step in 0..params.max_new_tokens {
        // One uniform per live row, drawn in row order before any row is sampled: the draws, and
        // so the tokens, of sampling the rows one after another, however the rows are split.
        let draws: Vec<Option<f64>> = (0..b)
            .map(|r| (!out.finished[r]).then(|| if params.temperature > 0.0 { rng.random() } else { 0.0 }))
            .collect();
        let picks: Vec<Option<(u32, f32, f32)>> =
            par_map(parts, |i, p| p.step(model, step, &draws[i * chunk..(i * chunk + chunk).min(b)], params))?.concat();
        let mut next = vec![None; b];
        for (row, (tok, lq, lp)) in picks.into_iter().enumerate().filter_map(|(r, p)| Some((r, p?))) {
            out.tokens[row].push(tok);
            out.sampling_logprobs[row].push(lq);
            out.raw_logprobs[row].push(lp);
            out.finished[row] = params.stop_tokens.contains(&tok);
            next[row] = Some(tok);
        }
        if out.finished.iter().all(|&f| f) {
            break;
        }
        for (p, next) in parts.iter_mut().zip(next.chunks(chunk)) {
            p.advance(next, pad_id)?;
        }
    }
    Ok(out)
}

/// Rows per parallel chunk of a small model's batch (in decoding here, in training in the
/// policy crate's data-parallel scoring).
pub const CHUNK_ROWS: usize = 32;

/// Whether the model's weights are small enough (≤ 2 M parameters, counted as 12·d² per layer
/// plus the embedding) to stay in cache, so that running its rows in separate chunks costs no
/// extra memory traffic.
pub fn small(model: &dyn CausalLm) -> bool {
    let d = model.hidden_size();
    12 * d * d * model.num_layers() + model.vocab_size() * d <= 2_000_000
}

/// The rows of one chunk as they are decoded: attention mask, KV cache and next input.
struct Part {
    mask: Vec<Vec<u8>>,
    /// The first row of each run of rows with one prompt, and each row's run.
    first: Vec<usize>,
    group: Vec<u32>,
    cache: KvCache,
    input: Tensor,
    /// Columns of `input`: the padded prompt, then 1.
    t: usize,
}

impl Part {
    /// `prompts` left-padded to `plen` (the whole batch's), with a cache for `max_new` more tokens.
    fn new(model: &dyn CausalLm, prompts: &[Vec<u32>], plen: usize, max_new: usize, pad_id: u32) -> Result<Self> {
        let b = prompts.len();
        let mut mask: Vec<Vec<u8>> = Vec::with_capacity(b);
        let mut ids = Vec::with_capacity(b * plen);
        for p in prompts {
            let pad = plen - p.len();
            mask.push(std::iter::repeat_n(0u8, pad).chain(std::iter::repeat_n(1u8, p.len())).collect());
            ids.extend(std::iter::repeat_n(pad_id, pad).chain(p.iter().copied()));
        }
        // A row whose prompt repeats the previous row's (the k samples of a prompt) shares its
        // prefill: the distinct prompts go through the model once and the cache is expanded.
        let first: Vec<usize> = (0..b).filter(|&i| i == 0 || prompts[i] != prompts[i - 1]).collect();
        let group: Vec<u32> = (0..b).map(|i| first.partition_point(|&f| f <= i) as u32 - 1).collect();
        Ok(Self {
            mask,
            first,
            group,
            cache: KvCache::with_capacity(model.num_layers(), plen + max_new),
            input: Tensor::from_vec(ids, (b, plen), model.device())?,
            t: plen,
        })
    }

    /// Samples the next token of every row with a draw (`None`: finished) as [`sample`] does;
    /// rows go to parallel tasks only in groups worth 65,536 vocabulary entries.
    fn step(
        &mut self,
        model: &dyn CausalLm,
        step: usize,
        draws: &[Option<f64>],
        params: &SamplingParams,
    ) -> Result<Vec<Option<(u32, f32, f32)>>> {
        let logits = self.logits(model, step)?;
        let per_task = (65_536 / model.vocab_size().max(1)).max(1);
        Ok(draws.par_iter().zip(&logits).with_min_len(per_task).map(|(d, l)| d.map(|u| sample(l, params, u))).collect())
    }

    /// Next-token logits of every row, `[rows][vocab]` (f32).
    fn logits(&mut self, model: &dyn CausalLm, step: usize) -> Result<Vec<Vec<f32>>> {
        let dev = model.device();
        let b = self.mask.len();
        let hidden = if step == 0 && self.first.len() < b {
            let rows = Tensor::from_vec(self.group.clone(), b, dev)?;
            let ix = Tensor::from_vec(self.first.iter().map(|&i| i as u32).collect(), self.first.len(), dev)?;
            let m: Vec<Vec<u8>> = self.first.iter().map(|&i| self.mask[i].clone()).collect();
            let h = model.hidden(
                &self.input.index_select(&ix, 0)?,
                &Positions::from_mask(&m, self.t, dev)?,
                Some(&mut self.cache),
            )?;
            self.cache.select_rows(&rows)?;
            h.contiguous()?.index_select(&rows, 0)?
        } else {
            model.hidden(&self.input, &Positions::from_mask(&self.mask, self.t, dev)?, Some(&mut self.cache))?
        };
        let last = hidden.narrow(1, self.t - 1, 1)?;
        Ok(model.lm_logits(&last)?.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }

    /// Feeds each row its sampled token (`None`: the row has finished; it gets `pad_id`, masked).
    fn advance(&mut self, next: &[Option<u32>], pad_id: u32) -> Result<()> {
        for (m, tok) in self.mask.iter_mut().zip(next) {
            m.push(tok.is_some() as u8);
        }
        let ids: Vec<u32> = next.iter().map(|t| t.unwrap_or(pad_id)).collect();
        self.input = Tensor::from_vec(ids, (next.len(), 1), self.input.device())?;
        self.t = 1;
        Ok(())
    }
}

/// Draws one token by inverse CDF at the uniform `u` (unused when greedy); returns
/// (token, log q(token), log π(token)).
pub(crate) fn sample(logits: &[f32], p: &SamplingParams, u: f64) -> (u32, f32, f32) {
    let lse = log_sum_exp(logits);
    let raw = |tok: usize| (logits[tok] as f64 - lse) as f32;
    if p.temperature <= 0.0 {
        let tok = argmax(logits);
        return (tok as u32, 0.0, raw(tok));
    }
    let scaled: Vec<f32> = logits.iter().map(|&l| (l as f64 / p.temperature) as f32).collect();
    let order = descending(&scaled);
    let mut keep = order.len();
    if let Some(k) = p.top_k.filter(|&k| k > 0) {
        keep = keep.min(k);
    }
    let lq_all = log_softmax(&order[..keep].iter().map(|&i| scaled[i]).collect::<Vec<_>>());
    if let Some(top_p) = p.top_p.filter(|&tp| tp < 1.0) {
        let mut cum = 0.0f64;
        let mut n = 0;
        for &l in &lq_all {
            cum += (l as f64).exp();
            n += 1;
            if cum >= top_p {
                break;
            }
        }
        keep = n.max(1);
    }
    let lq = log_softmax(&lq_all[..keep]);
    let mut cum = 0.0f64;
    let mut pick = keep - 1;
    for (i, &l) in lq.iter().enumerate() {
        cum += (l as f64).exp();
        if u < cum {
            pick = i;
            break;
        }
    }
    let tok = order[pick];
    (tok as u32, lq[pick], raw(tok))
}

/// Token ids by descending value, ties by ascending id (a total order, so truncation and the
/// draw are deterministic). Sorting packed keys — the value's bits mapped to an unsigned
/// integer in `f32::total_cmp` order, then the id — gives exactly the order of the comparator
/// `x[b].total_cmp(&x[a]).then(a.cmp(&b))`, several times faster on a 49k vocabulary.
pub fn descending(x: &[f32]) -> Vec<usize> {
    let mut keys: Vec<u64> = x
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let b = v.to_bits();
            let ascending = if b >> 31 == 1 { !b } else { b | 0x8000_0000 };
            ((!ascending as u64) << 32) | i as u64
        })
        .collect();
    keys.sort_unstable();
    keys.into_iter().map(|k| (k & 0xffff_ffff) as usize).collect()
}

fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best
}

/// `ln Σ exp(x)`, shifted by the maximum, accumulated in f64.
pub fn log_sum_exp(x: &[f32]) -> f64 {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln()
}

/// Numerically stable log-softmax in f64 accumulation.
pub fn log_softmax(x: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(x);
    x.iter().map(|&v| (v as f64 - lse) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(t: f64, k: Option<usize>, p: Option<f64>) -> SamplingParams {
        SamplingParams { temperature: t, top_k: k, top_p: p, ..Default::default() }
    }

    #[test]
    fn greedy_picks_argmax_with_raw_logprob() {
        let logits = [0.0f32, 2.0, 1.0];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (tok, lq, lp) = sample(&logits, &params(0.0, None, None), rng.random());
        assert_eq!(tok, 1);
        assert_eq!(lq, 0.0);
        let z = (1.0f64 + 2f64.exp() + 1f64.exp()).ln();
        assert!((lp as f64 - (2.0 - z)).abs() < 1e-6);
    }

    #[test]
    fn top_k_and_top_p_renormalise_the_kept_tokens() {
        // probs ∝ e^[3, 2, 1, 0]: top-2 keeps tokens 0 and 1 with q = e^3/(e^3+e^2), e^2/(e^3+e^2).
        let logits = [3.0f32, 2.0, 1.0, 0.0];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            let (tok, lq, lp) = sample(&logits, &params(1.0, Some(2), None), rng.random());
            assert!(tok < 2);
            let want = (logits[tok as usize] as f64) - (3f64.exp() + 2f64.exp()).ln();
            assert!((lq as f64 - want).abs() < 1e-6);
            assert!((lp - log_softmax(&logits)[tok as usize]).abs() < 1e-7);
        }
        // p(token 0) = 0.6439 < 0.7 so top-p 0.7 keeps two tokens, 0.6 keeps one.
        for _ in 0..50 {
            let (tok, lq, _) = sample(&logits, &params(1.0, None, Some(0.6)), rng.random());
            assert_eq!((tok, lq), (0, 0.0));
            let (tok, _, _) = sample(&logits, &params(1.0, None, Some(0.7)), rng.random());
            assert!(tok < 2);
        }
    }

    /// Consecutive rows with one prompt share a prefill: greedy continuations (and their
    /// log-probs) are those of the distinct prompts, row by row.
    #[test]
    fn repeated_prompts_share_a_prefill_with_the_same_result() {
        let dev = candle_core::Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let m = crate::Gpt::init(&crate::GptConfig::new(30, 2, 2, 16, 32), &vm, 1, DType::F32, &dev).unwrap();
        let (a, b) = (vec![1u32, 5, 9, 4], vec![1u32, 7]);
        let p = SamplingParams { max_new_tokens: 6, temperature: 0.0, ..Default::default() };
        let once = generate(&m, &[a.clone(), b.clone()], &p, 0).unwrap();
        let rows = [a.clone(), a, b.clone(), b.clone(), b];
        let shared = generate(&m, &rows, &p, 0).unwrap();
        for (r, src) in [0usize, 0, 1, 1, 1].into_iter().enumerate() {
            assert_eq!(shared.tokens[r], once.tokens[src], "row {r}");
            for (x, y) in shared.raw_logprobs[r].iter().zip(&once.raw_logprobs[src]) {
                assert!((x - y).abs() < 1e-5, "row {r}: {x} vs {y}");
            }
        }
    }

    /// A caller that picks each row's argmax through a [`Stepper`] decodes what greedy
    /// [`generate`] decodes, token for token and log-prob for log-prob (shared prefill included).
    #[test]
    fn a_stepper_choosing_the_argmax_is_greedy_generation() {
        let dev = candle_core::Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let m = crate::Gpt::init(&crate::GptConfig::new(30, 2, 2, 16, 32), &vm, 1, DType::F32, &dev).unwrap();
        let rows = vec![vec![1u32, 5, 9, 4], vec![1, 5, 9, 4], vec![1, 7]];
        let p = SamplingParams { max_new_tokens: 7, temperature: 0.0, stop_tokens: vec![3], ..Default::default() };
        let want = generate(&m, &rows, &p, 0).unwrap();
        let mut st = Stepper::new(&m, &rows, 7, 0).unwrap();
        let mut got: Vec<Vec<u32>> = vec![vec![]; 3];
        let mut lps: Vec<Vec<f32>> = vec![vec![]; 3];
        for _ in 0..7 {
            let logits = st.logits().unwrap();
            let mut next = vec![None; 3];
            for r in 0..3 {
                if got[r].last() == Some(&3) {
                    continue;
                }
                let tok = argmax(&logits[r]);
                got[r].push(tok as u32);
                lps[r].push(log_softmax(&logits[r])[tok]);
                next[r] = Some(tok as u32);
            }
            st.advance(&next).unwrap();
        }
        assert_eq!(got, want.tokens);
        assert_eq!(lps, want.raw_logprobs);
        assert!(Stepper::new(&m, &[vec![]], 4, 0).is_err());
        assert!(Stepper::new(&m, &[vec![1; 30]], 4, 0).is_err());
    }

    #[test]
    fn packed_key_sort_gives_the_comparator_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // Few distinct values (many ties), signed zeros, infinities and NaNs of both signs.
        let special = [0.0f32, -0.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN, 1e-40, -1e-40];
        for n in [1, 2, 7, 300, 5000] {
            let x: Vec<f32> = (0..n)
                .map(|_| match rng.random_range(0..4) {
                    0 => special[rng.random_range(0..special.len())],
                    1 => rng.random_range(-3..3) as f32,
                    _ => rng.random::<f32>() * 20.0 - 10.0,
                })
                .collect();
            let mut want: Vec<usize> = (0..n).collect();
            want.sort_by(|&a, &b| x[b].total_cmp(&x[a]).then(a.cmp(&b)));
            assert_eq!(descending(&x), want, "n = {n}");
        }
    }

    #[test]
    fn sampling_frequencies_follow_the_tempered_distribution() {
        let logits = [1.0f32, 0.0];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let n = 20_000;
        let hits = (0..n).filter(|_| sample(&logits, &params(0.5, None, None), rng.random()).0 == 0).count();
        let want = 1.0 / (1.0 + (-2f64).exp()); // softmax([2, 0])[0] = 0.8808
        let got = hits as f64 / n as f64;
        assert!((got - want).abs() < 0.01, "{got} vs {want}");
    }

    /// A small model's rows go through the model in chunks: the first rows of a batch big enough
    /// to be split (40 rows: 32 + 8) get the logits, and so the greedy tokens and log-probs,
    /// that they get in a batch of their own.
    #[test]
    fn chunked_rows_decode_as_one_batch() {
        let dev = candle_core::Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let m = crate::Gpt::init(&crate::GptConfig::new(30, 2, 2, 16, 32), &vm, 1, DType::F32, &dev).unwrap();
        assert!(small(&m));
        let rows: Vec<Vec<u32>> = (0..40u32).map(|i| vec![1, 2 + i % 7, 3 + i % 5]).collect();
        let p = SamplingParams { max_new_tokens: 8, temperature: 0.0, ..Default::default() };
        let all = generate(&m, &rows, &p, 0).unwrap();
        let alone = generate(&m, &rows[32..], &p, 0).unwrap();
        assert_eq!(all.tokens[32..], alone.tokens[..]);
        assert_eq!(all.raw_logprobs[32..], alone.raw_logprobs[..]);
        // Sampled, with stops: any split draws the tokens one batch of all rows draws (the
        // log-probs may differ in the last bit: a GEMM's blocking depends on its row count).
        let p = SamplingParams { max_new_tokens: 8, seed: 4, stop_tokens: vec![5, 9], ..Default::default() };
        let one = decode(&m, &rows, 3, &p, 0, 40).unwrap();
        assert!(one.finished.iter().any(|&f| f) && one.finished.iter().any(|&f| !f));
        for chunk in [32, 7, 1] {
            let split = decode(&m, &rows, 3, &p, 0, chunk).unwrap();
            assert_eq!((&split.tokens, &split.finished), (&one.tokens, &one.finished), "chunks of {chunk}");
            for (a, b) in split.raw_logprobs.iter().flatten().zip(one.raw_logprobs.iter().flatten()) {
                assert!((a - b).abs() < 1e-5, "chunks of {chunk}: {a} vs {b}");
            }
        }
        // The split a model gets is fixed, so a seed repeats exactly.
        assert_eq!(generate(&m, &rows, &p, 0).unwrap(), generate(&m, &rows, &p, 0).unwrap());
    }
}
