//! Supervised fine-tuning loss: the mean negative log-likelihood of the completion tokens given
//! the prompt, L = −Σ_{i,t} m_{i,t} log π(y_{i,t} | x_i, y_{i,<t}) / Σ_{i,t} m_{i,t}
//! (token-level mean over the batch, as `transformers`' causal-LM loss with prompt labels = −100;
//! Ouyang et al. 2022 §3.5 train the SFT model this way).

use crate::masked;
use crate::Result;
use mismatch_models::CompletionLogprobs;

/// Loss from `mismatch_models::completion_logprobs` output; differentiable in the model's weights.
pub fn sft_loss(c: &CompletionLogprobs) -> Result<candle_core::Tensor> {
    Ok(masked::mean(&c.logprobs, &c.mask)?.neg()?)
}

/// Same from raw `[b, c]` log-probs and mask.
pub fn sft_loss_from(logprobs: &candle_core::Tensor, mask: &candle_core::Tensor) -> Result<candle_core::Tensor> {
    Ok(masked::mean(logprobs, mask)?.neg()?)
}
