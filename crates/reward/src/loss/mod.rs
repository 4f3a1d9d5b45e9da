//! Reward-model losses on candle tensors. All are differentiable (built from primitives
//! with a backward pass) and return a scalar (rank-0) tensor averaged over the batch.

pub mod bt;
pub mod centering;
pub mod gaussian;
pub mod kwise;
pub mod margin;

pub use bt::bradley_terry;
pub use centering::centering;
pub use gaussian::{gaussian_bt, log_phi};
pub use kwise::{best_of_k, kwise, plackett_luce};
pub use margin::margin_bt;

use candle_core::{Result, Tensor};

/// Numerically stable `softplus(x) = log(1 + eˣ) = max(x, 0) + log(1 + e^{−|x|})`.
/// `−log σ(x) = softplus(−x)`; the naive form overflows for `|x| ≳ 88` in f32.
pub fn softplus(x: &Tensor) -> Result<Tensor> {
    let tail = (x.abs()?.neg()?.exp()? + 1.0)?.log()?;
    x.relu()? + tail
}

/// Fraction of pairs with `r_c > r_r` (strict: ties count as wrong, as in RewardBench).
pub fn pairwise_accuracy(r_chosen: &Tensor, r_rejected: &Tensor) -> Result<f32> {
    r_chosen.gt(r_rejected)?.to_dtype(candle_core::DType::F32)?.mean_all()?.to_scalar::<f32>()
}
