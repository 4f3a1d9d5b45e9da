//! Continuous batching: one decode loop over the rows of many requests, where a request joins
//! at the next step and a finished row leaves at once (Yu et al. 2022, "Orca"; the scheduling
//! of vLLM, Kwon et al. 2023). A server feeds it; each step is one forward of every live row.
//!
//! A request's prompt is prefilled alone (its `n` choices share that prefill) and its cache is
//! then stacked under the running batch's, left-padded to the same length; the attention mask
//! hides the padding exactly as it hides a batch's left padding in [`crate::generate`]. When
//! rows leave, the columns that no live row attends to are dropped, so the cache stays as long
//! as its longest live row.
//!
//! Each request samples from its own generator, drawn in the order of its rows as
//! [`crate::generate`] draws for a batch of that prompt repeated `n` times: the tokens a request
//! gets do not depend on which other requests share its steps.

use crate::attention::{KvCache, Positions};
use crate::decoder::CausalLm;
use crate::error::{Error, Result};
use crate::generate::{descending, log_sum_exp, sample, SamplingParams};
use crate::pool::on_pool;
use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// One request: a tokenised prompt, how many completions, and how to sample them.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt: Vec<u32>,
    /// Completions of the prompt (OpenAI's `n`), each a row of the batch.
    pub n: usize,
    pub params: SamplingParams,
    /// Alternatives to report with each token, by raw log-prob (OpenAI's `top_logprobs`).
    pub top_logprobs: usize,
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// It emitted a stop token (OpenAI's `finish_reason: "stop"`).
    Stop,
    /// It reached `max_new_tokens` (`"length"`).
    Length,
}

/// One sampled token of one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub request: u64,
    /// Which of the request's `n` completions.
    pub choice: usize,
    pub token: u32,
    /// log π(token) under the raw policy (temperature 1, untruncated), as `generate` reports it.
    pub logprob: f32,
    /// The `top_logprobs` most likely tokens under the raw policy, most likely first.
    pub top: Vec<(u32, f32)>,
    /// Set on a row's last token.
    pub finish: Option<Finish>,
}

struct Row {
    request: u64,
    choice: usize,
    generated: usize,
    next: u32,
}

struct Group {
    id: u64,
    params: SamplingParams,
    top: usize,
    rng: ChaCha8Rng,
}

/// The running batch.
pub struct Engine {
    model: Box<dyn CausalLm>,
    cache: KvCache,
    /// Per live row: 1 where the cached column is a real token of that row.
    mask: Vec<Vec<u8>>,
    rows: Vec<Row>,
    groups: Vec<Group>,
}

impl Engine {
    /// An empty batch over `model` (sampled through its [`CausalLm::detached`] view).
    pub fn new(model: &dyn CausalLm) -> Result<Self> {
        let model = model.detached()?;
        let cache = KvCache::new(model.num_layers());
        Ok(Self { model, cache, mask: vec![], rows: vec![], groups: vec![] })
    }

    /// Rows in the batch.
    pub fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Cached positions per row (the longest live row's length).
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    /// Checks that `r` can run (non-empty prompt, fits the context, at least one completion).
    pub fn check(&self, r: &Request) -> Result<()> {
        if r.prompt.is_empty() {
            return Err(Error::Usage("empty prompt: generation needs at least one prompt token".into()));
        }
        if r.n == 0 || r.params.max_new_tokens == 0 {
            return Err(Error::Usage("a request needs n ≥ 1 and max_new_tokens ≥ 1".into()));
        }
        let ctx = self.model.max_seq_len();
        if r.prompt.len() + r.params.max_new_tokens > ctx {
            return Err(Error::Usage(format!(
                "prompt of {} tokens + {} new tokens exceeds the model's context of {ctx} tokens",
                r.prompt.len(),
                r.params.max_new_tokens
            )));
        }
        Ok(())
    }

    /// Prefills `requests` in one forward (their prompts left-padded to the longest) and samples
    /// each choice's first token; the rows that go on join the batch and take part in the next
    /// [`Engine::step`]. Requests arriving together share the prefill, as a batch shares it in
    /// `generate`.
    pub fn add(&mut self, requests: Vec<(u64, Request)>) -> Result<Vec<Event>> {
        if requests.is_empty() {
            return Ok(vec![]);
        }
        for (_, r) in &requests {
            self.check(r)?;
        }
        let model = self.model.as_ref();
        let dev = model.device();
        let p = requests.iter().map(|(_, r)| r.prompt.len()).max().expect("not empty");
        let mask: Vec<Vec<u8>> = requests
            .iter()
            .map(|(_, r)| {
                std::iter::repeat_n(0u8, p - r.prompt.len()).chain(std::iter::repeat_n(1, r.prompt.len())).collect()
            })
            .collect();
        let ids: Vec<u32> = requests
            .iter()
            .flat_map(|(_, r)| std::iter::repeat_n(0, p - r.prompt.len()).chain(r.prompt.iter().copied()))
            .collect();
        let longest = requests.iter().map(|(_, r)| r.params.max_new_tokens).max().expect("not empty");
        let mut cache = KvCache::with_capacity(model.num_layers(), p + longest);
        let logits = on_pool(|| -> Result<Vec<Vec<f32>>> {
            let x = Tensor::from_vec(ids, (requests.len(), p), dev)?;
            let h = model.hidden(&x, &Positions::from_mask(&mask, p, dev)?, Some(&mut cache))?;
            Ok(model.lm_logits(&h.narrow(1, p - 1, 1)?)?.squeeze(1)?.to_dtype(DType::F32)?.to_vec2()?)
        })?;
        let mut events = Vec::new();
        // Per row that goes on: the prompt (row of the prefill) it came from.
        let mut from = Vec::new();
        for (i, (id, r)) in requests.into_iter().enumerate() {
            let rng = ChaCha8Rng::seed_from_u64(r.params.seed);
            let mut group = Group { id, params: r.params, top: r.top_logprobs, rng };
            let draws: Vec<f64> = (0..r.n).map(|_| draw(&mut group)).collect();
            for (choice, u) in draws.into_iter().enumerate() {
                let e = pick(&logits[i], &group, u, id, choice, 1);
                if e.finish.is_none() {
                    self.rows.push(Row { request: id, choice, generated: 1, next: e.token });
                    from.push(i as u32);
                }
                events.push(e);
            }
            if from.last() == Some(&(i as u32)) {
                self.groups.push(group);
            }
        }
        if !from.is_empty() {
            cache.select_rows(&Tensor::from_vec(from.clone(), from.len(), dev)?)?;
            let t = self.cache.len().max(p);
            for m in self.mask.iter_mut() {
                m.splice(0..0, std::iter::repeat_n(0, t - m.len()));
            }
            for &i in &from {
                let m = &mask[i as usize];
                self.mask.push(std::iter::repeat_n(0u8, t - p).chain(m.iter().copied()).collect());
            }
            self.cache.join(cache)?;
        }
        Ok(events)
    }

    /// One forward of every live row: each row's next token. Rows that finish leave the batch.
    pub fn step(&mut self) -> Result<Vec<Event>> {
        if self.rows.is_empty() {
            return Ok(vec![]);
        }
        let model = self.model.as_ref();
        let dev = model.device();
        let b = self.rows.len();
        for m in self.mask.iter_mut() {
            m.push(1);
        }
        let ids = Tensor::from_vec(self.rows.iter().map(|r| r.next).collect(), (b, 1), dev)?;
        let (mask, cache) = (&self.mask, &mut self.cache);
        let logits = on_pool(|| -> Result<Vec<Vec<f32>>> {
            let h = model.hidden(&ids, &Positions::from_mask(mask, 1, dev)?, Some(cache))?;
            Ok(model.lm_logits(&h)?.squeeze(1)?.to_dtype(DType::F32)?.to_vec2()?)
        })?;
        // Draws in row order, per request: what `generate` draws for that request alone.
        let group: Vec<usize> = self
            .rows
            .iter()
            .map(|r| self.groups.iter().position(|g| g.id == r.request).expect("a live row's request"))
            .collect();
        let draws: Vec<f64> = group.iter().map(|&g| draw(&mut self.groups[g])).collect();
        let groups = &self.groups;
        let events: Vec<Event> = on_pool(|| {
            self.rows
                .par_iter()
                .zip(&logits)
                .zip(group.par_iter().zip(&draws))
                .map(|((r, l), (&g, &u))| pick(l, &groups[g], u, r.request, r.choice, r.generated + 1))
                .collect()
        });
        for (r, e) in self.rows.iter_mut().zip(&events) {
            r.generated += 1;
            r.next = e.token;
        }
        let done: Vec<bool> = events.iter().map(|e| e.finish.is_some()).collect();
        self.remove(|i, _| done[i])?;
        Ok(events)
    }

    /// Drops every row of request `id` (a client that went away, a stop string matched).
    pub fn cancel(&mut self, id: u64) -> Result<()> {
        self.remove(|_, r| r.request == id)
    }

    fn remove(&mut self, gone: impl Fn(usize, &Row) -> bool) -> Result<()> {
        let keep: Vec<u32> = (0..self.rows.len()).filter(|&i| !gone(i, &self.rows[i])).map(|i| i as u32).collect();
        if keep.len() == self.rows.len() {
            return Ok(());
        }
        if keep.is_empty() {
            self.cache = KvCache::new(self.model.num_layers());
            self.mask.clear();
            self.rows.clear();
            self.groups.clear();
            return Ok(());
        }
        let mut old_rows = std::mem::take(&mut self.rows).into_iter().map(Some).collect::<Vec<_>>();
        let mut old_mask = std::mem::take(&mut self.mask).into_iter().map(Some).collect::<Vec<_>>();
        for &i in &keep {
            self.rows.push(old_rows[i as usize].take().expect("kept once"));
            self.mask.push(old_mask[i as usize].take().expect("kept once"));
        }
        self.groups.retain(|g| self.rows.iter().any(|r| r.request == g.id));
        self.cache.select_rows(&Tensor::from_vec(keep.clone(), keep.len(), self.model.device())?)?;
        let unused = (0..self.mask[0].len()).take_while(|&j| self.mask.iter().all(|m| m[j] == 0)).count();
        if unused > 0 {
            self.cache.drop_front(unused)?;
            for m in self.mask.iter_mut() {
                m.drain(..unused);
            }
        }
        Ok(())
    }
}

/// The uniform a row's next token is drawn at; greedy rows draw nothing, as in `generate`.
fn draw(g: &mut Group) -> f64 {
    if g.params.temperature > 0.0 {
        g.rng.random()
    } else {
        0.0
    }
}

/// Samples one token from `logits` for the `generated`-th token of a row.
fn pick(logits: &[f32], g: &Group, u: f64, request: u64, choice: usize, generated: usize) -> Event {
    let (token, _, logprob) = sample(logits, &g.params, u);
    let top = logprobs_at(logits, token, g.top).1;
    let finish = if g.params.stop_tokens.contains(&token) {
        Some(Finish::Stop)
    } else if generated >= g.params.max_new_tokens {
        Some(Finish::Length)
    } else {
        None
    };
    Event { request, choice, token, logprob, top, finish }
}

/// log π(`token`) and the `k` most likely tokens with their log-probs, under the raw policy
/// of one row of `logits` (what OpenAI's `logprobs` and `top_logprobs` report).
pub fn logprobs_at(logits: &[f32], token: u32, k: usize) -> (f32, Vec<(u32, f32)>) {
    let lse = log_sum_exp(logits);
    let lp = |i: usize| (logits[i] as f64 - lse) as f32;
    let top = if k == 0 { vec![] } else { descending(logits).into_iter().take(k).map(|i| (i as u32, lp(i))).collect() };
    (lp(token as usize), top)
}
