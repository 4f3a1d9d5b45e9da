//! Teacher-forced log-probs of given completions: the primitive behind DPO's implicit reward,
//! the KL to a reference policy, PPO's ratios and SFT's loss.
//!
//! For a prompt `x` and completion `y = (y_1..y_n)`, `log π(y_j | x, y_<j)` is read off the
//! logits at the position before `y_j`. Rows are laid out as `[left pad | prompt | completion |
//! right pad]` so that every completion starts in the same column and only that region goes
//! through the (large) vocabulary projection.

use crate::attention::Positions;
use crate::decoder::CausalLm;
use crate::error::{Error, Result};
use crate::ops::{gather_last, log_softmax_last_dim};
use candle_core::{DType, Tensor};

/// Per-token completion log-probs of a batch.
#[derive(Debug, Clone)]
pub struct CompletionLogprobs {
    /// `[b, c]` log π(y_j | x, y_<j); differentiable with respect to the model's weights.
    pub logprobs: Tensor,
    /// `[b, c]` f32, 1 where `y_j` exists, 0 in right padding.
    pub mask: Tensor,
    /// `[b, c, hidden]` hidden states at the positions that predict each completion token
    /// (for value heads: the value of the state before emitting `y_j`).
    pub hidden: Tensor,
}

impl CompletionLogprobs {
    /// `[b]` Σ_j log π(y_j | …): the sequence log-likelihood DPO uses.
    pub fn sum(&self) -> candle_core::Result<Tensor> {
        (&self.logprobs * &self.mask)?.sum(1)
    }

    /// Per-row log-probs as vectors, padding removed.
    pub fn to_vecs(&self) -> candle_core::Result<Vec<Vec<f32>>> {
        let lp = self.logprobs.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let m = self.mask.to_vec2::<f32>()?;
        Ok(lp
            .into_iter()
            .zip(m)
            .map(|(l, m)| l.into_iter().zip(m).filter(|(_, m)| *m > 0.0).map(|(l, _)| l).collect())
            .collect())
    }
}

/// Scores `completions[i]` given `prompts[i]` under `model`.
pub fn completion_logprobs(
    model: &dyn CausalLm,
    prompts: &[Vec<u32>],
    completions: &[Vec<u32>],
    pad_id: u32,
) -> Result<CompletionLogprobs> {
    if prompts.len() != completions.len() || prompts.is_empty() {
        return Err(Error::Usage(format!(
            "scoring needs as many prompts as completions and at least one (got {} and {})",
            prompts.len(),
            completions.len()
        )));
    }
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(Error::Usage("empty prompt: scoring needs at least one prompt token".into()));
    }
    let b = prompts.len();
    let p = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let c = completions.iter().map(Vec::len).max().unwrap_or(0).max(1);
    if p + c > model.max_seq_len() {
        return Err(Error::Usage(format!(
            "prompt ({p}) + completion ({c}) tokens exceed the model's context of {}",
            model.max_seq_len()
        )));
    }
    let t = p + c;
    let mut ids = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b);
    let mut targets = Vec::with_capacity(b * c);
    let mut cmask = Vec::with_capacity(b * c);
    for (x, y) in prompts.iter().zip(completions) {
        let (lp, rp) = (p - x.len(), c - y.len());
        ids.extend(std::iter::repeat_n(pad_id, lp).chain(x.iter().copied()).chain(y.iter().copied()));
        ids.extend(std::iter::repeat_n(pad_id, rp));
        let row: Vec<u8> = std::iter::repeat_n(0, lp)
            .chain(std::iter::repeat_n(1, x.len() + y.len()))
            .chain(std::iter::repeat_n(0, rp))
            .collect();
        mask.push(row);
        targets.extend(y.iter().copied().chain(std::iter::repeat_n(pad_id, rp)));
        cmask.extend(std::iter::repeat_n(1f32, y.len()).chain(std::iter::repeat_n(0f32, rp)));
    }
    let dev = model.device();
    let ids = Tensor::from_vec(ids, (b, t), dev)?;
    let pos = Positions::from_mask(&mask, t, dev)?;
    // Only the positions p-1 .. p+c-2 predict completion tokens.
    let hidden = model.hidden(&ids, &pos, None)?.narrow(1, p - 1, c)?;
    let logits = model.lm_logits(&hidden)?.to_dtype(DType::F32)?;
    let targets = Tensor::from_vec(targets, (b, c), dev)?;
    let logprobs = gather_last(&log_softmax_last_dim(&logits)?, &targets)?;
    Ok(CompletionLogprobs { logprobs, mask: Tensor::from_vec(cmask, (b, c), dev)?, hidden })
}
