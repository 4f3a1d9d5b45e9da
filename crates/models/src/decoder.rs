//! The interface every causal language model implements, so that generation, scoring,
//! reward/value heads and the optimisers are written once for all model families.

use crate::attention::{KvCache, Positions};
use candle_core::{Device, Result, Tensor};

pub trait CausalLm: Send + Sync {
    fn vocab_size(&self) -> usize;
    fn hidden_size(&self) -> usize;
    fn num_layers(&self) -> usize;
    /// Longest sequence (prompt + completion) the model accepts.
    fn max_seq_len(&self) -> usize;
    fn device(&self) -> &Device;

    /// Final hidden states `[b, t, hidden]` (after the last norm) for `ids` `[b, t]` u32.
    /// With a cache, `ids` are the new tokens only and the cache is extended.
    fn hidden(&self, ids: &Tensor, pos: &Positions, cache: Option<&mut KvCache>) -> Result<Tensor>;

    /// Language-model logits `[b, t, vocab]` from hidden states.
    fn lm_logits(&self, hidden: &Tensor) -> Result<Tensor>;

    /// The same model on the same weight storage with autograd tracking off: what
    /// `torch.no_grad()` is to PyTorch. Forwards through it build no graph and take the
    /// inference kernels (fused norms, skinny decode products), and an optimiser stepping the
    /// original's variables in place is seen here too. Sampling uses it.
    fn detached(&self) -> Result<Box<dyn CausalLm>>;

    /// Convenience: logits for a full, unpadded batch without a cache.
    fn logits(&self, ids: &Tensor) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let pos = Positions::causal(b, t, ids.device())?;
        self.lm_logits(&self.hidden(ids, &pos, None)?)
    }
}

/// A scalar head `r = w·h + b` on hidden states: the reward head of a reward model and the value
/// head of PPO (Ziegler et al. 2019; Ouyang et al. 2022). Stored under `score.weight`/`score.bias`
/// (the `AutoModelForSequenceClassification` name) or `v_head.*` for values.
#[derive(Debug, Clone)]
pub struct ScalarHead {
    linear: candle_nn::Linear,
}

impl ScalarHead {
    pub fn new(vb: candle_nn::VarBuilder, hidden: usize) -> Result<Self> {
        Ok(Self { linear: candle_nn::linear(hidden, 1, vb)? })
    }

    /// `[b, t, hidden]` → `[b, t]`.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        candle_core::Module::forward(&self.linear, hidden)?.squeeze(candle_core::D::Minus1)
    }
}
