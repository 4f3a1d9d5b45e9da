//! Differentiable building blocks shared by every model family.
//!
//! candle's fused kernels (`candle_nn::ops::rms_norm`, `layer_norm`, `softmax_last_dim`,
//! `rotary_emb::rope*`) have no backward pass: gradients through them are silently dropped.
//! Each function here therefore picks the fused kernel only when no input is tracked by
//! autograd (`track_op() == false`, i.e. inference) and otherwise composes differentiable
//! primitives. Both paths compute the same function; `tests` checks they agree.

use candle_core::{DType, Result, Tensor, D};

/// RMSNorm (Zhang & Sennrich 2019): `y = x / sqrt(mean(x²) + eps) * w`.
/// Inference takes candle's kernel; training on CPU the fused [`crate::llama_ops::rms_norm`].
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if !x.track_op() && !w.track_op() && x.is_contiguous() {
        return candle_nn::ops::rms_norm(x, w, eps as f32);
    }
    crate::llama_ops::rms_norm(x, w, eps)
}

/// [`rms_norm`] from differentiable primitives (reference for the fused op; non-CPU devices).
pub fn rms_norm_composed(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    let dim = x.dim(D::Minus1)? as f64;
    let ms = (x.sqr()?.sum_keepdim(D::Minus1)? / dim)?;
    x.broadcast_div(&(ms + eps)?.sqrt()?)?.broadcast_mul(w)
}

/// LayerNorm (Ba et al. 2016): `y = (x − mean(x)) / sqrt(var(x) + eps) * w + b`, biased variance.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if !x.track_op() && !w.track_op() && !b.track_op() && x.is_contiguous() {
        return candle_nn::ops::layer_norm(x, w, b, eps as f32);
    }
    layer_norm_fused(x, w, b, eps)
}

/// [`layer_norm`] always through the fused CPU kernel that training uses, tracked or not: an
/// untracked forward that matches a tracked one bit for bit.
pub fn layer_norm_fused(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    if fused_cpu(x) && w.dtype() == x.dtype() && b.dtype() == x.dtype() {
        let (w, b) = (w.contiguous()?, b.contiguous()?);
        return x.contiguous()?.apply_op3(&w, &b, fused::LayerNorm { eps });
    }
    layer_norm_composed(x, w, b, eps)
}

/// [`layer_norm`] from differentiable primitives (reference for the fused op; non-CPU devices).
pub fn layer_norm_composed(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let dim = x.dim(D::Minus1)? as f64;
    let mean = (x.sum_keepdim(D::Minus1)? / dim)?;
    let xc = x.broadcast_sub(&mean)?;
    let var = (xc.sqr()?.sum_keepdim(D::Minus1)? / dim)?;
    xc.broadcast_div(&(var + eps)?.sqrt()?)?.broadcast_mul(w)?.broadcast_add(b)
}

/// Softmax over the last dimension, `exp(x − max) / Σ exp(x − max)`.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if !x.track_op() && x.is_contiguous() {
        return candle_nn::ops::softmax_last_dim(x);
    }
    if fused_cpu(x) {
        return x.contiguous()?.apply_op1(fused::Softmax);
    }
    softmax_composed(x)
}

/// [`softmax_last_dim`] from differentiable primitives (reference for the fused op).
pub fn softmax_composed(x: &Tensor) -> Result<Tensor> {
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
    x.gather(&idx.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?.squeeze(D::Minus1)
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
        let inv: Vec<f32> = (0..half).map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32).collect();
        let inv = Tensor::from_vec(inv, (1, half), device)?;
        let pos = Tensor::arange(0u32, max_pos as u32, device)?.to_dtype(DType::F32)?.reshape((max_pos, 1))?;
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

/// Affine map `y = x Wᵀ + b` over the last dimension: `x` `[..., in]`, `w` `[out, in]`
/// (PyTorch `nn.Linear` layout), `b` `[out]`.
///
/// On CPU (f32/f64) while training this is one autograd node: the forward is a single GEMM
/// that accumulates onto the broadcast bias, and the backward is `dx = dy W`, `dW = dyᵀ x`,
/// `db = Σ_rows dy`. The composed form (reshape → transpose → matmul → broadcast add →
/// reshape) costs candle's backprop a zero-fill and an add per node, which for a small model
/// is as much time as the GEMMs themselves.
pub fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    match x.track_op() || w.track_op() || b.track_op() {
        true => linear_fused(x, w, b),
        false => linear_composed(x, w, b),
    }
}

/// [`linear`] always through the kernel that training uses (fused on CPU), tracked or not.
pub fn linear_fused(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) && w.dtype() == x.dtype() && b.dtype() == x.dtype() {
        let (w, b) = (w.contiguous()?, b.contiguous()?);
        return x.contiguous()?.apply_op3(&w, &b, fused::Linear);
    }
    linear_composed(x, w, b)
}

/// [`linear`] from candle primitives (reference for the fused op; inference; non-CPU devices).
pub fn linear_composed(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let inp = dims.pop().unwrap_or(1);
    let rows: usize = dims.iter().product();
    let y = x.reshape((rows, inp))?.matmul(&w.t()?)?.broadcast_add(b)?;
    dims.push(w.dim(0)?);
    y.reshape(dims)
}

/// Multi-head causal self-attention (Vaswani et al. 2017) from a packed projection:
/// `qkv` `[b, t, 3c]` holds `[q | k | v]` per token, heads of size `c / n_head` side by side;
/// `bias` `[b, 1, t, t]` is the additive mask of [`crate::attention::Positions`]. Returns
/// `softmax(q kᵀ/√d + bias) v` with the heads merged back, `[b, t, c]`.
///
/// On CPU while training this is one autograd node whose backward recomputes the attention
/// probabilities `P` and applies `dV = Pᵀ dY`, `dP = dY Vᵀ`, `dS = P ⊙ (dP − rowsum(dP ⊙ P))`,
/// `dQ = dS K/√d`, `dK = dSᵀ Q/√d`, one (batch, head) pair per task. The composed path
/// (split heads → [`crate::attention::attention`] → merge heads) is ~20 graph nodes, each
/// costing candle's backprop a zero-fill and an add. Without a graph the same kernel is also
/// the fastest (and keeps tracked and untracked forwards bit-identical); other devices and
/// dtypes take the composed path. KV-cached decoding: [`attention_cached`].
pub fn attention_qkv_fused(qkv: &Tensor, bias: &Tensor, n_head: usize) -> Result<Tensor> {
    if fused_cpu(qkv) {
        let bias = bias.to_dtype(qkv.dtype())?.contiguous()?;
        return qkv.contiguous()?.apply_op2(&bias, fused::AttentionQkv { n_head });
    }
    attention_qkv_composed(qkv, bias, n_head)
}

/// [`attention_qkv_fused`] through [`crate::attention::attention`] (reference for the fused op).
pub fn attention_qkv_composed(qkv: &Tensor, bias: &Tensor, n_head: usize) -> Result<Tensor> {
    let (b, t, c3) = qkv.dims3()?;
    let (c, h) = (c3 / 3, n_head);
    let heads = |i: usize| qkv.narrow(D::Minus1, i * c, c)?.reshape((b, t, h, c / h))?.transpose(1, 2)?.contiguous();
    let y = crate::attention::attention(&heads(0)?, &heads(1)?, &heads(2)?, &bias.to_dtype(qkv.dtype())?)?;
    y.transpose(1, 2)?.reshape((b, t, c))
}

/// [`attention_qkv_fused`] for KV-cached decoding: `cache` `[b, cap, 3c]` holds the packed q|k|v rows
/// of every token so far, the newest `t` after `past` cached ones; `bias` `[b, 1, t, past + t]`.
/// Returns the attention of the new rows over all `past + t`, `[b, t, c]`. With `past = 0` the
/// arithmetic is exactly the training kernel's, so a prefill matches the full forward bit for
/// bit. CPU f32/f64 and untracked only (no backward): callers that need gradients through a
/// cache take [`crate::attention::attention`].
pub fn attention_cached(cache: &Tensor, bias: &Tensor, n_head: usize, past: usize, t: usize) -> Result<Tensor> {
    let bias = bias.to_dtype(cache.dtype())?.contiguous()?;
    cache.contiguous()?.apply_op2_no_bwd(&bias, &fused::AttentionCached { n_head, past, t })
}

/// GELU, tanh approximation (Hendrycks & Gimpel 2016; the form GPT-2 uses, PyTorch's
/// `gelu(approximate="tanh")`): `y = ½ x (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
///
/// On CPU (f32/f64) this is one fused pass with a hand-written backward
/// `dy/dx = ½ (1 + tanh u) + ½ x (1 − tanh² u) √(2/π) (1 + 3·0.044715 x²)`; candle's own
/// `gelu` evaluates libm `tanh` per element and builds a ~10-op graph for its gradient.
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) {
        return x.contiguous()?.apply_op1(fused::Gelu);
    }
    gelu_composed(x)
}

/// `gelu(x Wᵀ + b)` — [`linear_fused`] then [`gelu`], the MLP's first half — as one node on CPU.
/// The node keeps the pre-activation for its backward, so the graph holds one tensor fewer and
/// the backward skips one gradient accumulation; the arithmetic is that of the two ops.
pub fn linear_gelu_fused(x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fused_cpu(x) && w.dtype() == x.dtype() && b.dtype() == x.dtype() {
        let (w, b) = (w.contiguous()?, b.contiguous()?);
        return x.contiguous()?.apply_op3(&w, &b, fused::LinearGelu::default());
    }
    gelu(&linear_fused(x, w, b)?)
}

/// The same GELU from differentiable primitives (reference for the fused op; non-CPU devices).
pub fn gelu_composed(x: &Tensor) -> Result<Tensor> {
    let inner = ((x + (x.powf(3.0)? * 0.044715)?)? * (2.0 / std::f64::consts::PI).sqrt())?;
    (x * 0.5)? * (inner.tanh()? + 1.0)?
}

/// Mean cross-entropy `−(1/N) Σ_i log softmax(logits_i)[target_i]`; `logits` `[N, V]`,
/// `targets` `[N]` u32.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let lp = log_softmax_last_dim(logits)?;
    let picked = lp.gather(&targets.unsqueeze(D::Minus1)?.contiguous()?, D::Minus1)?;
    picked.mean_all()?.neg()
}

/// Whether the fused CPU kernels (with backward) in [`fused`] apply to `x`.
pub(crate) fn fused_cpu(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

pub mod fused;
mod gemm;
#[cfg(test)]
mod tests;

#[cfg(test)]
use gemm::gemm_blocks;
pub(crate) use gemm::{gemm_split, Strided};
