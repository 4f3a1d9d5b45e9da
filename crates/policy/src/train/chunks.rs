//! Data-parallel scoring for small models: the rows of a training batch go through the policy
//! in fixed chunks, side by side, each chunk with its own graph, and the backward pass is split
//! at the log-probs.
//!
//! A trainer builds its loss on [`Scored::out`]. With one chunk (a large model, or few rows)
//! those are the tensors of the graph and [`Scored::backward`] is `loss.backward()`. With
//! several, `out.logprobs` and `out.hidden` are leaves holding the chunks' values; the backward
//! first takes the loss to those leaves (and to whatever else it reads, e.g. a value head), then
//! each chunk backpropagates `Σ logprobs_c ⊙ ∂loss/∂logprobs_c + Σ hidden_c ⊙ ∂loss/∂hidden_c`
//! through its own graph — the chain rule, cut at the log-probs — and the parameter gradients
//! are summed in chunk order. A small model's weights stay in cache, so each core runs the
//! forward and backward of its chunk at single-thread speed instead of both cores splitting
//! every small operation (and waiting on candle's serial graph bookkeeping).
//!
//! The chunks depend on the model and the rows only (whole prompt groups, about
//! [`CHUNK_ROWS`] rows each), never on the number of threads, so a seed gives the same bits on
//! any machine.

use super::common::Policy;
use crate::{Error, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use mismatch_models::generate::{small, CHUNK_ROWS};
use mismatch_models::pool::par_map;
use mismatch_models::CompletionLogprobs;

/// A batch's completion log-probs, scored in one or several chunks.
pub struct Scored {
    /// What the loss is built on: `[b, c]` log-probs and mask, `[b, c, d]` hidden states, the
    /// completions right-padded to the batch's longest.
    pub out: CompletionLogprobs,
    /// With several chunks: each chunk's first row and its scores (with their graph).
    parts: Vec<(usize, CompletionLogprobs)>,
}

impl Scored {
    /// Scores row `i` = `completions[i]` after `prompts[group[i]]` ([`Policy::logprobs_shared`]),
    /// in chunks of whole groups when the model is small. A group's rows must be contiguous
    /// (`group` non-decreasing).
    pub fn new(policy: &Policy, prompts: &[Vec<u32>], group: &[usize], completions: &[Vec<u32>]) -> Result<Self> {
        if group.len() != completions.len()
            || group.windows(2).any(|w| w[1] < w[0])
            || group.iter().any(|&g| g >= prompts.len())
        {
            return Err(Error::Usage(format!(
                "scoring in chunks needs one prompt index below {} per row ({} indices, {} completions), \
                 the rows of each prompt contiguous",
                prompts.len(),
                group.len(),
                completions.len()
            )));
        }
        let mut work = match small(policy.model()) {
            true => spans(group, CHUNK_ROWS),
            false => vec![(0, group.len())],
        };
        let scored = par_map(&mut work, |_, &mut (r0, r1)| {
            let (g0, g1) = match r1 > r0 {
                true => (group[r0], group[r1 - 1] + 1),
                false => (0, 0),
            };
            let local: Vec<usize> = group[r0..r1].iter().map(|&g| g - g0).collect();
            policy.logprobs_shared(&prompts[g0..g1], &local, &completions[r0..r1])
        })?;
        if scored.len() == 1 {
            let out = scored.into_iter().next().expect("one chunk");
            return Ok(Self { out, parts: vec![] });
        }
        let c = scored.iter().map(|p| p.logprobs.dim(1)).collect::<candle_core::Result<Vec<_>>>()?;
        let c = c.into_iter().max().unwrap_or(1);
        let cat = |f: &dyn Fn(&CompletionLogprobs) -> &Tensor| -> Result<Tensor> {
            let padded = scored
                .iter()
                .map(|p| {
                    let t = f(p).detach();
                    let short = c - t.dim(1)?;
                    if short == 0 {
                        Ok(t)
                    } else {
                        t.pad_with_zeros(1, 0, short)
                    }
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Ok(Tensor::cat(&padded, 0)?)
        };
        let (logprobs, mask, hidden) = (cat(&|p| &p.logprobs)?, cat(&|p| &p.mask)?, cat(&|p| &p.hidden)?);
        let tracked = scored.iter().any(|p| p.logprobs.track_op());
        let (logprobs, hidden) = match tracked {
            true => (Var::from_tensor(&logprobs)?.as_tensor().clone(), Var::from_tensor(&hidden)?.as_tensor().clone()),
            false => (logprobs, hidden),
        };
        let first = work.iter().map(|&(r0, _)| r0);
        let parts = match tracked {
            true => first.zip(scored).collect(),
            false => vec![],
        };
        Ok(Self { out: CompletionLogprobs { logprobs, mask, hidden, vocab_logprobs: None }, parts })
    }

    /// [`Self::new`] with each row after its own prompt (`prompts[i]`).
    pub fn each(policy: &Policy, prompts: &[Vec<u32>], completions: &[Vec<u32>]) -> Result<Self> {
        let rows: Vec<usize> = (0..prompts.len()).collect();
        Self::new(policy, prompts, &rows, completions)
    }

    /// The gradients of `loss` (built on [`Self::out`]) with respect to every tracked tensor it
    /// depends on, through the chunks' graphs.
    pub fn backward(&self, loss: &Tensor) -> Result<GradStore> {
        let mut grads = mismatch_models::backprop::backward(loss)?;
        if self.parts.is_empty() {
            return Ok(grads);
        }
        let d_logprobs = grads.remove(&self.out.logprobs);
        let d_hidden = grads.remove(&self.out.hidden);
        let mut parts: Vec<&(usize, CompletionLogprobs)> = self.parts.iter().collect();
        let stores = par_map(&mut parts, |_, &mut &(r0, ref p)| {
            let mut surrogate: Option<Tensor> = None;
            for (x, d) in [(&p.logprobs, &d_logprobs), (&p.hidden, &d_hidden)] {
                if let Some(d) = d {
                    let term = (x * d.narrow(0, r0, x.dim(0)?)?.narrow(1, 0, x.dim(1)?)?)?.sum_all()?;
                    surrogate = Some(match surrogate {
                        Some(s) => (s + term)?,
                        None => term,
                    });
                }
            }
            match surrogate {
                Some(s) => Ok(mismatch_models::backprop::backward(&s)?),
                None => Ok(GradStore::default()),
            }
        })?;
        for s in stores {
            grads.extend(s)?;
        }
        Ok(grads)
    }
}

/// Row ranges of whole groups (runs of equal `group` values), each closed once it holds at least
/// `rows` rows; the last takes what is left.
fn spans(group: &[usize], rows: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=group.len() {
        let boundary = i == group.len() || group[i] != group[i - 1];
        if boundary && (i - start >= rows || i == group.len()) {
            out.push((start, i));
            start = i;
        }
    }
    if out.is_empty() {
        out.push((0, 0));
    }
    out
}
