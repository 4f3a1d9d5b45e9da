//! Differentiable building blocks shared by every model family.
//!
//! candle's fused kernels (`candle_nn::ops::rms_norm`, `layer_norm`, `softmax_last_dim`,
//! `rotary_emb::rope*`) have no backward pass: gradients through them are silently dropped.
//! Each function here therefore picks the fused kernel only when no input is tracked by
//! autograd (`track_op() == false`, i.e. inference) and otherwise composes differentiable
//! primitives. Both paths compute the same function; `tests` checks they agree.

use candle_core::{DType, Result, Tensor, D};

/// RMSNorm (Zhang & Sennrich 2019): `y = x / sqrt(mean(x²) + eps) * w`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if !x.track_op() && !w.track_op() && x.is_contiguous() {
        return candle_nn::ops::rms_norm(x, w, eps as f32);
    }
    let dim = x.dim(D::Minus1)? as f64;
    let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / dim)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// LayerNorm (Ba et al. 2016): `y = (x − mean(x)) / sqrt(var(x) + eps) * w + b`, biased variance.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if !x.track_op() && !w.track_op() && !b.track_op() && x.is_contiguous() {
        return candle_nn::ops::layer_norm(x, w, b, eps as f32);
    }
    let dim = x.dim(D::Minus1)? as f64;
    let mean = (x.sum_keepdim(D::Minus1)? / dim)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = (xc.sqr()?.sum_keepdim(D::Minus1)? / dim)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)?
        .broadcast_mul(w)?
        .broadcast_add(b)
}

/// Softmax over the last dimension, `exp(x − max) / Σ exp(x − max)`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() && x.is_contiguous() {
        return candle_nn::ops::softmax_last_dim(x);
    }
    let max = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Log-softmax over the last dimension, `x − max − log Σ exp(x − max)`.
pub fn log_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let d = x.broadcast_sub(&max)?;
    d.broadcast_sub(&d.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// Gather `x[..., idx[...]]` along the last dimension: `x` is `[b, t, v]`, `idx` `[b, t]` (u32).
/// Returns `[b, t]`. Differentiable in `x`.
pub fn gather_last(x: &Tensor, idx: &Tensor) -> Result<Tensor> {
    x.gather(&idx.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?
        .squeeze(D::Minus1)
}

/// Rotary position embedding (Su et al. 2021, "RoFormer"), in the Hugging Face
/// "rotate-half" layout: the first and second halves of each head are the two coordinates
/// of each rotated pair. Positions are given per row, so left-padded batches and KV-cached
/// decoding rotate every token by its own position.
#[derive(Debug, Clone)]
pub struct Rotary {
    cos: Tensor, // [max_pos, head_dim/2]
    sin: Tensor,
}

impl Rotary {
    /// `theta` is the base (10 000 in the paper; 100 000 for SmolLM2-135M).
    pub fn new(head_dim: usize, max_pos: usize, theta: f64, device: &candle_core::Device) -> Result<Self> {
        let half = head_dim / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32)
            .collect();
        let inv = Tensor::from_vec(inv, (1, half), device)?;
        let pos = Tensor::arange(0u32, max_pos as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_pos, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok(Self { cos: freqs.cos()?, sin: freqs.sin()? })
    }

    /// `x`: `[b, heads, t, head_dim]`; `positions`: `[b, t]` u32.
    pub fn apply(&self, x: &Tensor, positions: &Tensor) -> Result<Tensor> {
        let (b, _h, t, d) = x.dims4()?;
        let flat = positions.flatten_all()?;
        let cos = self.cos.index_select(&flat, 0)?.reshape((b, 1, t, d / 2))?;
        let sin = self.sin.index_select(&flat, 0)?.reshape((b, 1, t, d / 2))?;
        let cos = Tensor::cat(&[&cos, &cos], D::Minus1)?.to_dtype(x.dtype())?;
        let sin = Tensor::cat(&[&sin, &sin], D::Minus1)?.to_dtype(x.dtype())?;
        let x1 = x.narrow(D::Minus1, 0, d / 2)?;
        let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
        let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
        x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
        let d = d.to_scalar::<f32>().unwrap();
        assert!(d <= tol, "max abs diff {d} > {tol}");
    }

    #[test]
    fn fused_and_differentiable_paths_agree() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (2, 3, 8), &dev).unwrap();
        let w = Tensor::randn(1f32, 0.1, 8, &dev).unwrap();
        let b = Tensor::randn(0f32, 0.1, 8, &dev).unwrap();
        let wv = Var::from_tensor(&w).unwrap();
        let bv = Var::from_tensor(&b).unwrap();
        close(&rms_norm(&x, &w, 1e-5).unwrap(), &rms_norm(&x, wv.as_tensor(), 1e-5).unwrap(), 1e-5);
        close(
            &layer_norm(&x, &w, &b, 1e-5).unwrap(),
            &layer_norm(&x, wv.as_tensor(), bv.as_tensor(), 1e-5).unwrap(),
            1e-5,
        );
        let xv = Var::from_tensor(&x).unwrap();
        close(&softmax_last_dim(&x).unwrap(), &softmax_last_dim(xv.as_tensor()).unwrap(), 1e-6);
        let ls = log_softmax_last_dim(&x).unwrap().exp().unwrap();
        close(&ls, &softmax_last_dim(&x).unwrap(), 1e-6);
    }

    #[test]
    fn hand_computed_values() {
        let dev = Device::Cpu;
        // rms of [3, 4] is sqrt(12.5); y = x / sqrt(12.5)
        let x = Tensor::new(&[[3f32, 4.0]], &dev).unwrap();
        let w = Tensor::new(&[1f32, 2.0], &dev).unwrap();
        let y = rms_norm(&x, &w, 0.0).unwrap().to_vec2::<f32>().unwrap();
        let r = 12.5f32.sqrt();
        assert!((y[0][0] - 3.0 / r).abs() < 1e-6 && (y[0][1] - 8.0 / r).abs() < 1e-6);
        // layer norm of [1, 3]: mean 2, var 1 -> [-1, 1]
        let x = Tensor::new(&[[1f32, 3.0]], &dev).unwrap();
        let b = Tensor::new(&[0.5f32, 0.5], &dev).unwrap();
        let y = layer_norm(&x, &w, &b, 0.0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, vec![vec![-0.5, 2.5]]);
    }

    #[test]
    fn rotary_position_zero_is_identity_and_rotation_preserves_norm() {
        let dev = Device::Cpu;
        let rot = Rotary::new(4, 16, 10_000.0, &dev).unwrap();
        let x = Tensor::new(&[1f32, 2.0, 3.0, 4.0], &dev).unwrap().reshape((1, 1, 1, 4)).unwrap();
        let p0 = Tensor::new(&[[0u32]], &dev).unwrap();
        close(&rot.apply(&x, &p0).unwrap(), &x, 0.0);
        // position 1, pair (x0, x2) rotated by 1 rad, pair (x1, x3) by 1e-2 rad
        let p1 = Tensor::new(&[[1u32]], &dev).unwrap();
        let y = rot.apply(&x, &p1).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let (c, s) = (1f32.cos(), 1f32.sin());
        let (c2, s2) = (0.01f32.cos(), 0.01f32.sin());
        let want = [1.0 * c - 3.0 * s, 2.0 * c2 - 4.0 * s2, 3.0 * c + 1.0 * s, 4.0 * c2 + 2.0 * s2];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{y:?} vs {want:?}");
        }
    }
}
