//! Reductions over the real (mask = 1) tokens of right-padded `[b, c]` tensors.
//!
//! These follow TRL's `trl.core.masked_mean / masked_var / masked_whiten` (von Werra et al.,
//! TRL), which in turn follow openai/lm-human-preferences: one mean and one (Bessel-corrected)
//! variance over every real token of the batch.

use crate::{Error, Result};
use candle_core::{DType, Tensor};

/// `[b]` Σ_t x_t·m_t per row.
pub fn sum_rows(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    Ok((x * mask)?.sum(1)?)
}

/// `[b]` Σ_t x_t·m_t / Σ_t m_t per row; a row without tokens gives 0 (its count is clamped to 1,
/// as TRL's GRPO does) rather than NaN.
pub fn mean_rows(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let n = mask.sum(1)?.clamp(1f32, f32::INFINITY)?;
    Ok(sum_rows(x, mask)?.div(&n)?)
}

/// Scalar Σ x·m / Σ m over the whole batch.
pub fn mean(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let n = count(mask)?;
    if n == 0.0 {
        return Err(Error::Usage("masked mean over a batch without a single real token".into()));
    }
    Ok(((x * mask)?.sum_all()? / n as f64)?)
}

/// Number of real tokens.
pub fn count(mask: &Tensor) -> Result<f32> {
    Ok(mask.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()?)
}

/// Scalar unbiased variance over real tokens: `Σ m (x − μ)² / Σ m · n/(n−1)`.
pub fn var(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let n = count(mask)?;
    if n < 2.0 {
        return Err(Error::Usage(format!(
            "masked variance needs at least 2 real tokens, got {n} (use a larger batch)"
        )));
    }
    let mu = mean(x, mask)?;
    let c = x.broadcast_sub(&mu)?;
    Ok((mean(&c.sqr()?, mask)? * (n as f64 / (n as f64 - 1.0)))?)
}

/// Whitening `(x − μ)/sqrt(σ² + 1e-8)` with μ, σ² over real tokens; with `shift_mean = false`
/// the mean is added back (TRL uses that for rewards: rescale, keep the sign). Padding positions
/// are set to 0.
pub fn whiten(x: &Tensor, mask: &Tensor, shift_mean: bool) -> Result<Tensor> {
    let mu = mean(x, mask)?;
    let v = var(x, mask)?;
    let mut w = x.broadcast_sub(&mu)?.broadcast_div(&(v + 1e-8)?.sqrt()?)?;
    if !shift_mean {
        w = w.broadcast_add(&mu)?;
    }
    Ok((w * mask)?)
}

/// Scalar value of a 0-d tensor as f64.
pub fn scalar(x: &Tensor) -> Result<f64> {
    Ok(x.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}
