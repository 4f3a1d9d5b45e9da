//! Differentiable building blocks shared by every model family.
//!
//! candle's fused kernels (`candle_nn::ops::rms_norm`, `layer_norm`, `softmax_last_dim`,
//! `rotary_emb::rope*`) have no backward pass: gradients through them are silently dropped.
//! Each function here therefore picks the fused kernel only when no input is tracked by
//! autograd (`track_op() == false`, i.e. inference) and otherwise composes differentiable
//! primitives. Both paths compute the same function; `tests` checks they agree.

use candle_core::{DType, Result, Tensor, D};
use rayon::prelude::*;

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

/// An operand of [`gemm_split`]: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub(crate) struct Strided<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

impl<T> Strided<T> {
    /// Row-major `a` with `cols` columns.
    pub(crate) fn rows(a: &[T], cols: usize) -> Self {
        Self { ptr: a.as_ptr(), rs: cols as isize, cs: 1 }
    }

    /// The transpose of row-major `a` with `cols` columns.
    pub(crate) fn transposed(a: &[T], cols: usize) -> Self {
        Self { ptr: a.as_ptr(), rs: 1, cs: cols as isize }
    }
}

/// `dst[m×n] = (dst if read_dst) + lhs[m×k] · rhs[k×n]`, `dst` row-major with row stride
/// `dst_rs`. With several threads the larger of m and n is cut into one block per thread
/// (multiples of 16), each a single-threaded GEMM. gemm's own `Rayon(2)` split left the second
/// core idle on SmolLM2's shapes: `[232, 1536] · [1536, 576]` took 4.6 ms with it, 5.2 ms on one
/// thread and 3.1 ms cut in two; the tied head's weight gradient `[49152, 128] · [128, 576]`
/// 63, 111 and 51 ms (2 threads; docs/benchmarks.md, session 9). The blocks keep the bits of
/// one call (see [`gemm_blocks`]).
///
/// # Safety
/// `dst`, `lhs` and `rhs` must address valid `m×n`, `m×k` and `k×n` matrices with these
/// strides, and `dst` must not overlap the operands.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_split<T: fused::Real>(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: isize,
    read_dst: bool,
    lhs: Strided<T>,
    rhs: Strided<T>,
) {
    // One block inside a chunk of rows that runs beside others, where nested splitting only
    // adds synchronisation.
    let threads = match crate::pool::in_chunk() {
        false => candle_core::utils::get_num_threads(),
        true => 1,
    };
    gemm_blocks(threads, m, n, k, dst, dst_rs, read_dst, lhs, rhs)
}

/// [`gemm_split`] with `threads` blocks.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_blocks<T: fused::Real>(
    threads: usize,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut T,
    dst_rs: isize,
    read_dst: bool,
    lhs: Strided<T>,
    rhs: Strided<T>,
) {
    if m == 0 || n == 0 {
        return;
    }
    let along_m = m >= n;
    let (len, other) = if along_m { (m, n) } else { (n, m) };
    let part = len.div_ceil(threads.max(1)).next_multiple_of(16);
    let smallest = len - (len.div_ceil(part) - 1) * part;
    // gemm picks its k blocking and kernel from the shape: a dot-product kernel when m·n ≤ 256,
    // a fixed 512-deep blocking when m and n are both ≤ 64, a GEMV when one is 1. Blocks that
    // stay clear of all three take the whole product's path, hence its bits.
    let general = |len: usize| other > 1 && len > 1 && len * other > 256 && (len > 64 || other > 64);
    let part = if general(len) && general(smallest) { part } else { len };
    // Pointers cross to the pool as addresses; each block writes its own rows or columns.
    let (dst, lhs_at, rhs_at) = (dst as usize, lhs.ptr as usize, rhs.ptr as usize);
    let block = |start: usize| {
        let size = part.min(len - start);
        let (bm, bn) = if along_m { (size, n) } else { (m, size) };
        let (i, j) = if along_m { (start as isize, 0) } else { (0, start as isize) };
        // SAFETY: the block lies inside the caller's matrices (start + size ≤ len).
        unsafe {
            gemm::gemm(
                bm,
                bn,
                k,
                (dst as *mut T).offset(i * dst_rs + j),
                1,
                dst_rs,
                read_dst,
                (lhs_at as *const T).offset(i * lhs.rs),
                lhs.cs,
                lhs.rs,
                (rhs_at as *const T).offset(j * rhs.cs),
                rhs.cs,
                rhs.rs,
                T::one(),
                T::one(),
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    };
    if part >= len {
        block(0);
    } else {
        (0..len).step_by(part).collect::<Vec<_>>().into_par_iter().for_each(block);
    }
}

/// Whether the fused CPU kernels (with backward) in [`fused`] apply to `x`.
pub(crate) fn fused_cpu(x: &Tensor) -> bool {
    x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::F64)
}

/// Fused CPU kernels with hand-written backward passes, used for training on CPU. Each is
/// checked against its composed counterpart (forward and gradients) in `tests`.
pub mod fused {
    use super::Strided;
    use crate::backprop::sink_weight_grad;
    use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Tensor, WithDType};
    use rayon::prelude::*;
    use std::mem::MaybeUninit;

    /// Element types of the kernels: f64 uses libm; f32 uses the rational `tanh` and the
    /// polynomial `exp` below ([`fast_tanh`], [`fast_exp`]), which the compiler vectorises.
    pub trait Real: WithDType + Send + Sync {
        fn sqrt_(self) -> Self;
        fn tanh_(self) -> Self;
        fn exp_(self) -> Self;
    }
    impl Real for f64 {
        fn sqrt_(self) -> Self {
            self.sqrt()
        }
        fn tanh_(self) -> Self {
            self.tanh()
        }
        fn exp_(self) -> Self {
            self.exp()
        }
    }
    impl Real for f32 {
        fn sqrt_(self) -> Self {
            self.sqrt()
        }
        fn tanh_(self) -> Self {
            fast_tanh(self)
        }
        fn exp_(self) -> Self {
            fast_exp(self)
        }
    }

    /// `exp` for f32 as Cephes' `expf`: `x = n ln 2 + r` with `n = round(x / ln 2)` and
    /// `|r| ≤ ln 2 / 2` (ln 2 split in two so that `r` is exact), `e^r` by a degree-7
    /// polynomial, `2^n` written into the exponent bits. Within 1 ulp of the exact value over
    /// the normal range (test); 0 below `ln 2^-126`, where libm returns subnormals under
    /// 1.2e-38; `+∞` above 88.376 ≈ `ln 2^127.5`; NaN for NaN. Branch-free, so loops over it
    /// vectorise: libm's `expf` is a scalar call, with a slow path for every result that
    /// underflows, as every masked attention score's (−1e9) does.
    #[inline(always)]
    pub fn fast_exp(x: f32) -> f32 {
        const LOG2E: f32 = std::f32::consts::LOG2_E;
        const LN2_HI: f32 = 0.693_359_4; // 355/512: n·LN2_HI is exact for |n| ≤ 2^9
        const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
        const MIN: f32 = -87.336_55; // ln 2^-126: the smallest normal result
        const MAX: f32 = 88.376; // ln 2^127.5: above it n rounds to 128, past f32's exponents
        const SHIFTER: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer in the low bits
        let xc = x.clamp(MIN, MAX);
        let t = xc * LOG2E + SHIFTER;
        let n = t - SHIFTER;
        let r = (xc - n * LN2_HI) - n * LN2_LO;
        let mut p = 1.987_569_1e-4_f32;
        p = p * r + 1.398_199_9e-3;
        p = p * r + 8.333_452e-3;
        p = p * r + 4.166_579_6e-2;
        p = p * r + 1.666_666_5e-1;
        p = p * r + 5.000_000_1e-1;
        let er = p * (r * r) + r + 1.0;
        let k = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
        let scale = f32::from_bits(((k + 127) as u32) << 23);
        // Zero the scale, not the product: `er · 2^-126` is subnormal for er < 1, and a
        // subnormal result costs a microcode assist (~100 cycles).
        let scale = if x < MIN { 0.0 } else { scale };
        let y = er * scale;
        if x > MAX {
            f32::INFINITY
        } else {
            y
        }
    }

    /// `tanh` as Eigen's `generic_fast_tanh_float`: a [13/6] rational approximation on
    /// [−7.905, 7.905] (beyond which f32 `tanh` is ±1), within a few ulp of libm.
    /// Branch-free apart from the clamp, so loops over it vectorise.
    #[inline(always)]
    pub fn fast_tanh(x: f32) -> f32 {
        const A1: f32 = 4.893_524_6e-3;
        const A3: f32 = 6.372_619_3e-4;
        const A5: f32 = 1.485_722_4e-5;
        const A7: f32 = 5.122_297e-8;
        const A9: f32 = -8.604_672e-11;
        const A11: f32 = 2.000_188e-13;
        const A13: f32 = -2.760_768_5e-16;
        const B0: f32 = 4.893_525e-3;
        const B2: f32 = 2.268_434_6e-3;
        const B4: f32 = 1.185_347e-4;
        const B6: f32 = 1.198_258_4e-6;
        let x = x.clamp(-7.905_311, 7.905_311);
        let x2 = x * x;
        let p = x2 * A13 + A11;
        let p = x2 * p + A9;
        let p = x2 * p + A7;
        let p = x2 * p + A5;
        let p = x2 * p + A3;
        let p = x2 * p + A1;
        let p = x * p;
        let q = x2 * B6 + B4;
        let q = x2 * q + B2;
        let q = x2 * q + B0;
        p / q
    }

    /// Rows that the row-wise kernels reduce together. Each row's sum still runs in index
    /// order, as a serial fold does (so results are bit for bit those of one row at a time),
    /// but the rows' chains of dependent adds are independent and overlap in the pipeline: a
    /// serial 64-wide sum is 64 adds × 4 cycles of latency, and 4 rows cost little more than 1.
    pub(crate) const ROWS: usize = 4;

    /// `Σ_{j<c} f(r, j)` for each row `r < n ≤ ROWS`, each row's terms added in index order.
    #[inline(always)]
    pub(crate) fn row_sums<T: Real>(n: usize, c: usize, f: impl Fn(usize, usize) -> T) -> [T; ROWS] {
        let mut acc = [T::zero(); ROWS];
        if n == ROWS {
            // Spelled out so the four sums stay in registers.
            let [mut a0, mut a1, mut a2, mut a3] = acc;
            for j in 0..c {
                a0 += f(0, j);
                a1 += f(1, j);
                a2 += f(2, j);
                a3 += f(3, j);
            }
            return [a0, a1, a2, a3];
        }
        for j in 0..c {
            for (r, a) in acc.iter_mut().enumerate().take(n) {
                *a += f(r, j);
            }
        }
        acc
    }

    /// The largest element of a non-empty row, as the serial `if v > m { v } else { m }` fold
    /// from `x[0]` (max is exact, so eight running maxima give the same value; a NaN is kept
    /// only if it is `x[0]`, as in the fold).
    #[inline(always)]
    fn row_max<T: Real>(x: &[T]) -> T {
        let mut acc = [x[0]; 8];
        let mut chunks = x.chunks_exact(8);
        for ch in &mut chunks {
            for i in 0..8 {
                acc[i] = if ch[i] > acc[i] { ch[i] } else { acc[i] };
            }
        }
        for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
            *a = if v > *a { v } else { *a };
        }
        acc.iter().fold(acc[0], |m, &v| if v > m { v } else { m })
    }

    /// `rows ← softmax(rows)` for the `n ≤ ROWS` rows of width `c` in `rows`.
    #[inline(always)]
    fn softmax_rows_in_place<T: Real>(rows: &mut [T], c: usize) {
        for row in rows.chunks_mut(c) {
            let max = row_max(row);
            row.iter_mut().for_each(|v| *v = (*v - max).exp_());
        }
        let sums = row_sums(rows.len() / c, c, |r, j| rows[r * c + j]);
        for (row, sum) in rows.chunks_mut(c).zip(sums) {
            let inv = T::one() / sum;
            row.iter_mut().for_each(|v| *v *= inv);
        }
    }

    /// `dp ← p ⊙ (dp − rowsum(dp ⊙ p)) · scale`: the gradient through a row softmax `p` of
    /// width `c`, written over the gradient `dp` with respect to its output.
    #[inline(always)]
    fn softmax_grad_in_place<T: Real>(dp: &mut [T], p: &[T], c: usize, scale: T) {
        for (dg, pg) in dp.chunks_mut(ROWS * c).zip(p.chunks(ROWS * c)) {
            let dots = row_sums(pg.len() / c, c, |r, j| dg[r * c + j] * pg[r * c + j]);
            for ((dr, pr), dot) in dg.chunks_mut(c).zip(pg.chunks(c)).zip(dots) {
                for (x, &y) in dr.iter_mut().zip(pr) {
                    *x = y * (*x - dot) * scale;
                }
            }
        }
    }

    pub(crate) fn slice<'a, T: WithDType>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [T]> {
        match l.contiguous_offsets() {
            Some((a, b)) => Ok(&s.as_slice::<T>()?[a..b]),
            None => bail!("{op}: input must be contiguous"),
        }
    }

    /// The kernels' one dtype dispatch: `$body` with the type alias `$T` set to the element type
    /// of `$s` (f32 or f64), its `Vec` wrapped back into a `CpuStorage` of that type. Other
    /// inputs read with `slice::<$T>` fail with candle's dtype error when they differ.
    macro_rules! by_dtype {
        ($op:expr, $s:expr, |$T:ident| $body:expr) => {
            match $s {
                CpuStorage::F32(_) => {
                    type $T = f32;
                    CpuStorage::F32($body)
                }
                CpuStorage::F64(_) => {
                    type $T = f64;
                    CpuStorage::F64($body)
                }
                _ => candle_core::bail!("{}: only f32/f64", $op),
            }
        };
    }
    pub(crate) use by_dtype;

    /// A vector of `n` elements that `fill` writes into its spare capacity: a kernel that
    /// overwrites its whole output skips the zero fill, a pass over memory for nothing
    /// (memsets were 6 % of a tiny-GPT DPO step).
    ///
    /// # Safety
    /// `fill` must initialise all `n` elements.
    pub(crate) unsafe fn written<T>(n: usize, fill: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
        let mut v = Vec::with_capacity(n);
        fill(&mut v.spare_capacity_mut()[..n]);
        // SAFETY: the caller's `fill` initialised the n elements.
        unsafe { v.set_len(n) };
        v
    }

    /// Rows per rayon task: enough work per task to amortise scheduling.
    pub(crate) fn rows_per_task(n_rows: usize, row: usize) -> usize {
        (16_384 / row.max(1)).clamp(1, n_rows.max(1))
    }

    /// `with_min_len` of the kernels' parallel loops: inside a chunk of rows that already runs
    /// beside others ([`crate::pool::in_chunk`]) one task takes every item, in order, since
    /// splitting further only adds synchronisation; elsewhere rayon splits freely. The items —
    /// fixed chunks — and so the results are the same either way.
    pub(crate) fn min_len() -> usize {
        match crate::pool::in_chunk() {
            true => usize::MAX,
            false => 1,
        }
    }

    const K: f64 = 0.797_884_560_802_865_4; // √(2/π)
    const C: f64 = 0.044_715;

    /// `tanh u` with `u = √(2/π) (x + 0.044715 x³)`: the one transcendental of GELU and of its
    /// derivative, which a caller that has it already passes to [`gelu_from`] / [`gelu_grad_from`].
    #[inline(always)]
    pub(crate) fn gelu_tanh<T: Real>(x: T) -> T {
        let u = T::from_f64(K) * (x + T::from_f64(C) * x * x * x);
        u.tanh_()
    }

    /// `½ x (1 + tanh u)`, given `th = tanh u` ([`gelu_tanh`]).
    #[inline(always)]
    pub(crate) fn gelu_from<T: Real>(x: T, th: T) -> T {
        let (half, one) = (T::from_f64(0.5), T::from_f64(1.0));
        half * x * (one + th)
    }

    /// `½ (1 + tanh u) + ½ x (1 − tanh² u) √(2/π) (1 + 3·0.044715 x²)`, given `th = tanh u`.
    #[inline(always)]
    pub(crate) fn gelu_grad_from<T: Real>(x: T, th: T) -> T {
        let (half, one) = (T::from_f64(0.5), T::from_f64(1.0));
        half * (one + th) + half * x * (one - th * th) * T::from_f64(K) * (one + T::from_f64(3.0 * C) * x * x)
    }

    #[inline(always)]
    fn gelu_fwd<T: Real>(x: T) -> T {
        gelu_from(x, gelu_tanh(x))
    }

    #[inline(always)]
    fn gelu_grad<T: Real>(x: T) -> T {
        gelu_grad_from(x, gelu_tanh(x))
    }

    fn map1<T: Real>(x: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
        let fill = |y: &mut [MaybeUninit<T>]| {
            y.par_chunks_mut(16_384).zip(x.par_chunks(16_384)).with_min_len(min_len()).for_each(|(y, x)| {
                for (y, &x) in y.iter_mut().zip(x) {
                    y.write(f(x));
                }
            })
        };
        // SAFETY: the chunks cover y, and every element is written.
        unsafe { written(x.len(), fill) }
    }

    fn map2<T: Real>(x: &[T], g: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
        let fill = |y: &mut [MaybeUninit<T>]| {
            let chunks = y.par_chunks_mut(16_384).zip(x.par_chunks(16_384).zip(g.par_chunks(16_384)));
            chunks.with_min_len(min_len()).for_each(|(y, (x, g))| {
                for ((y, &x), &g) in y.iter_mut().zip(x).zip(g) {
                    y.write(f(x, g));
                }
            })
        };
        // SAFETY: the chunks cover y, and every element is written.
        unsafe { written(x.len(), fill) }
    }

    pub struct Gelu;
    struct GeluBwd;

    impl CustomOp1 for Gelu {
        fn name(&self) -> &'static str {
            "fused-gelu"
        }
        fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
            let out = by_dtype!(self.name(), s, |T| map1(slice::<T>(s, l, self.name())?, gelu_fwd));
            Ok((out, l.shape().clone()))
        }
        fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
            Ok(Some(x.apply_op2_no_bwd(&dy.contiguous()?, &GeluBwd)?))
        }
    }

    impl CustomOp2 for GeluBwd {
        fn name(&self) -> &'static str {
            "fused-gelu-bwd"
        }
        fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
            let n = self.name();
            let out =
                by_dtype!(n, s1, |T| map2(slice::<T>(s1, l1, n)?, slice::<T>(s2, l2, n)?, |x, g| g * gelu_grad(x)));
            Ok((out, l1.shape().clone()))
        }
    }

    /// `y = x Wᵀ + b`; see [`super::linear`].
    pub struct Linear;

    /// `y[rows, out] = x[rows, inp] · Wᵀ (+ b)` with `W` `[out, inp]` row-major: one GEMM,
    /// accumulating onto the bias rows, or without a bias written straight into an unfilled
    /// buffer (no zero-fill). Serves [`Linear`] and the Llama's no-bias linear.
    pub(crate) fn linear_fwd<T: Real>(
        x: &[T],
        w: &[T],
        b: Option<&[T]>,
        rows: usize,
        inp: usize,
        out: usize,
    ) -> Vec<T> {
        // x is [rows, inp] row-major, and Wᵀ is read from W [out, inp] with swapped strides;
        // y is [rows, out] row-major.
        let (x, wt) = (Strided::rows(x, inp), Strided::transposed(w, inp));
        match b {
            Some(b) => {
                let mut y = b.repeat(rows);
                // SAFETY: as above; the GEMM accumulates onto the bias rows.
                unsafe { super::gemm_split(rows, out, inp, y.as_mut_ptr(), out as isize, true, x, wt) };
                y
            }
            // SAFETY: as above; the GEMM writes every element without reading it (read_dst =
            // false, also when inp = 0).
            None => unsafe {
                written(rows * out, |y| {
                    super::gemm_split(rows, out, inp, y.as_mut_ptr().cast(), out as isize, false, x, wt)
                })
            },
        }
    }

    impl CustomOp3 for Linear {
        fn name(&self) -> &'static str {
            "fused-linear"
        }
        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let n = self.name();
            let (out, inp) = l2.shape().dims2()?;
            if l3.shape().elem_count() != out || l1.dims().last() != Some(&inp) {
                bail!("fused-linear: x {:?}, w {:?}, b {:?} do not fit", l1.dims(), l2.dims(), l3.dims());
            }
            let rows = l1.shape().elem_count() / inp.max(1);
            let y = by_dtype!(n, s1, |T| linear_fwd::<T>(
                slice(s1, l1, n)?,
                slice(s2, l2, n)?,
                Some(slice(s3, l3, n)?),
                rows,
                inp,
                out
            ));
            let mut dims = l1.dims().to_vec();
            *dims.last_mut().unwrap() = out;
            Ok((y, Shape::from(dims)))
        }
        fn bwd(
            &self,
            x: &Tensor,
            w: &Tensor,
            b: &Tensor,
            _y: &Tensor,
            dy: &Tensor,
        ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
            unpack_linear_grads(&x.apply_op3_no_bwd(w, &dy.contiguous()?, &LinearBwd { bias: true })?, x, w, b)
        }
    }

    /// `(dx, dW, db)` from the `[dx | dW | db]` buffer of [`LinearBwd`] / [`LinearGeluBwd`].
    type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);
    fn unpack_linear_grads(packed: &Tensor, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Grads3> {
        let (out, inp) = w.dims2()?;
        let rows = x.elem_count() / inp;
        let dx = packed.narrow(0, 0, rows * inp)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows * inp, out * inp)?.reshape((out, inp))?;
        let db = packed.narrow(0, (rows + out) * inp, out)?;
        Ok((Some(dx), sink_weight_grad(w, dw), sink_weight_grad(b, db)))
    }

    /// `gelu(x Wᵀ + b)`; see [`super::linear_gelu_fused`]. `pre` keeps `x Wᵀ + b` from the
    /// forward pass for the backward.
    #[derive(Default)]
    pub struct LinearGelu {
        pre: std::sync::OnceLock<CpuStorage>,
    }

    /// The gradients of [`LinearGelu`] as one buffer `[dx | dW | db]`, from its pre-activation.
    struct LinearGeluBwd<'a> {
        pre: &'a CpuStorage,
    }

    impl CustomOp3 for LinearGelu {
        fn name(&self) -> &'static str {
            "fused-linear-gelu"
        }
        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let (y, shape) = Linear.cpu_fwd(s1, l1, s2, l2, s3, l3)?;
            let g = by_dtype!(self.name(), &y, |T| map1(y.as_slice::<T>()?, gelu_fwd));
            if self.pre.set(y).is_err() {
                bail!("fused-linear-gelu: one node ran forward twice");
            }
            Ok((g, shape))
        }
        fn bwd(
            &self,
            x: &Tensor,
            w: &Tensor,
            b: &Tensor,
            _y: &Tensor,
            dy: &Tensor,
        ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
            let Some(pre) = self.pre.get() else { bail!("fused-linear-gelu: backward before forward") };
            unpack_linear_grads(&x.apply_op3_no_bwd(w, &dy.contiguous()?, &LinearGeluBwd { pre })?, x, w, b)
        }
    }

    impl CustomOp3 for LinearGeluBwd<'_> {
        fn name(&self) -> &'static str {
            "fused-linear-gelu-bwd"
        }
        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let n = self.name();
            // dA = dY ⊙ gelu′(A), then the linear's gradients from dA.
            let da =
                by_dtype!(n, s3, |T| map2(self.pre.as_slice::<T>()?, slice::<T>(s3, l3, n)?, |a, g| g * gelu_grad(a)));
            LinearBwd { bias: true }.cpu_fwd(s1, l1, s2, l2, &da, &Layout::contiguous(l3.shape()))
        }
    }

    /// The gradients of `y = x Wᵀ (+ b)` from (x, W, dy) as one buffer: `[dx | dW | db]`, or
    /// `[dx | dW]` without a bias.
    pub(crate) struct LinearBwd {
        pub(crate) bias: bool,
    }

    /// `dx = dy W` `[rows, inp]`, `dW = dyᵀ x` `[out, inp]` and, with `bias`, `db = Σ_rows dy`
    /// `[out]`, packed in that order: two GEMMs straight into one buffer, with no zero-fill and
    /// no intermediate tensors.
    pub(crate) fn linear_bwd<T: Real>(x: &[T], w: &[T], dy: &[T], out: usize, inp: usize, bias: bool) -> Vec<T> {
        let rows = dy.len() / out.max(1);
        let (nx, nw) = (rows * inp, out * inp);
        let mut g: Vec<T> = Vec::with_capacity(nx + nw + out);
        // SAFETY: `g` has capacity for dx [rows, inp] followed by dW [out, inp]; both GEMMs
        // write every element of their block without reading it (read_dst = false) before the
        // length covers them. dy is [rows, out], x [rows, inp] and W [out, inp], row-major.
        unsafe {
            let (dx, dw) = (g.as_mut_ptr(), g.as_mut_ptr().add(nx));
            let inp_s = inp as isize;
            super::gemm_split(rows, inp, out, dx, inp_s, false, Strided::rows(dy, out), Strided::rows(w, inp));
            // dyᵀ [out, rows]: element (o, r) is dy[r·out + o].
            super::gemm_split(out, inp, rows, dw, inp_s, false, Strided::transposed(dy, out), Strided::rows(x, inp));
            g.set_len(nx + nw);
        }
        if bias {
            let mut db = vec![T::zero(); out];
            for r in dy.chunks(out.max(1)) {
                db.iter_mut().zip(r).for_each(|(a, &v)| *a += v);
            }
            g.extend_from_slice(&db);
        }
        g
    }

    impl CustomOp3 for LinearBwd {
        fn name(&self) -> &'static str {
            "fused-linear-bwd"
        }
        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let n = self.name();
            let (out, inp) = l2.shape().dims2()?;
            let rows = l1.shape().elem_count() / inp.max(1);
            if l3.shape().elem_count() != rows * out {
                bail!("fused-linear-bwd: x {:?}, w {:?}, dy {:?} do not fit", l1.dims(), l2.dims(), l3.dims());
            }
            let g = by_dtype!(n, s1, |T| linear_bwd::<T>(
                slice(s1, l1, n)?,
                slice(s2, l2, n)?,
                slice(s3, l3, n)?,
                out,
                inp,
                self.bias
            ));
            Ok((g, Shape::from((rows + out) * inp + if self.bias { out } else { 0 })))
        }
    }

    /// See [`super::attention_qkv_fused`].
    pub struct AttentionQkv {
        pub n_head: usize,
    }
    struct AttentionQkvBwd {
        n_head: usize,
    }

    /// A raw pointer that tasks may share: each (batch, head) task writes a disjoint region.
    #[derive(Clone, Copy)]
    struct SendPtr<T>(*mut T);
    unsafe impl<T> Send for SendPtr<T> {}
    unsafe impl<T> Sync for SendPtr<T> {}
    impl<T> SendPtr<T> {
        fn get(self) -> *mut T {
            self.0
        }
    }

    /// `dst[m×n] = alpha·dst + beta·(lhs[m×k] · rhs[k×n])` with explicit (row, column) strides,
    /// single-threaded (tasks are already parallel).
    #[allow(clippy::too_many_arguments)]
    unsafe fn mm<T: 'static>(
        m: usize,
        n: usize,
        k: usize,
        dst: *mut T,
        dst_rs: usize,
        read_dst: bool,
        lhs: *const T,
        lhs_rs: usize,
        lhs_cs: usize,
        rhs: *const T,
        rhs_rs: usize,
        rhs_cs: usize,
        alpha: T,
        beta: T,
    ) {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            read_dst,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            alpha,
            beta,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }

    /// `P = softmax(scale · Q Kᵀ + bias)` for one (batch, head), written into `p` `[t, s]`: `t`
    /// queries at `q` and `s` keys at `k`, rows `3c` apart (the packed layout).
    #[allow(clippy::too_many_arguments)]
    unsafe fn attn_probs<T: Real>(
        q: *const T,
        k: *const T,
        bias: &[T],
        p: &mut [T],
        t: usize,
        s: usize,
        c: usize,
        d: usize,
        scale: T,
    ) {
        p.copy_from_slice(bias);
        mm(t, s, d, p.as_mut_ptr(), s, true, q, 3 * c, 1, k, 1, 3 * c, T::one(), scale);
        for rows in p.chunks_mut(ROWS * s) {
            softmax_rows_in_place(rows, s);
        }
    }

    /// Attention of the `t` rows after the first `past` of each batch's packed `[cap, 3c]` block
    /// of `qkv` over its first `past + t` rows; `bias` `[b, t, past + t]`. Training is `past = 0`,
    /// `cap = t`; KV-cached decoding attends from the newest rows of a preallocated cache.
    /// `keep`, `[b, h, t, past + t]`, receives the probabilities for [`attn_bwd`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attn_fwd<T: Real>(
        qkv: &[T],
        bias: &[T],
        b: usize,
        cap: usize,
        c: usize,
        h: usize,
        past: usize,
        t: usize,
        keep: Option<&mut [T]>,
    ) -> Vec<T> {
        let (d, s) = (c / h, past + t);
        let scale = T::from_f64(1.0 / (d as f64).sqrt());
        assert!(keep.as_ref().is_none_or(|k| k.len() == b * h * t * s), "attention probabilities: wrong length");
        let kept = keep.map(|k| SendPtr(k.as_mut_ptr()));
        let fill = |y: &mut [MaybeUninit<T>]| {
            let yp = SendPtr(y.as_mut_ptr().cast::<T>());
            // A decoding step's (batch, head) tasks are tiny: group them so a rayon task is worth it.
            let per_task = rows_per_task(b * h, t * s * d);
            (0..b * h).into_par_iter().with_min_len(per_task.max(min_len())).for_each_init(
                || vec![T::zero(); if kept.is_some() { 0 } else { t * s }],
                |scratch, job| {
                    let (bi, hi) = (job / h, job % h);
                    let p = match kept {
                        // SAFETY: job's t·s probabilities lie inside keep and no other task's.
                        Some(k) => unsafe { std::slice::from_raw_parts_mut(k.get().add(job * t * s), t * s) },
                        None => &mut scratch[..],
                    };
                    // SAFETY: offsets stay inside qkv [b,cap,3c] (past + t ≤ cap) and y [b,t,c]; task
                    // (bi, hi) writes only columns hi·d..(hi+1)·d of batch bi's rows of y.
                    unsafe {
                        let base = qkv.as_ptr().add(bi * cap * 3 * c + hi * d);
                        let q = base.add(past * 3 * c);
                        attn_probs(q, base.add(c), &bias[bi * t * s..(bi + 1) * t * s], p, t, s, c, d, scale);
                        let yo = yp.get().add(bi * t * c + hi * d);
                        mm(t, d, s, yo, c, false, p.as_ptr(), s, 1, base.add(2 * c), 3 * c, 1, T::zero(), T::one());
                    }
                },
            );
        };
        // SAFETY: the (batch, head) tasks write every column of every row (read_dst = false).
        unsafe { written(b * t * c, fill) }
    }

    /// The gradient of [`attn_fwd`] (training: `past = 0`, `cap = t`) with respect to `qkv`, from
    /// `dy` `[b, t, c]`. The probabilities are recomputed, or read from `kept` ([`attn_fwd`]'s
    /// `keep`): the same values.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn attn_bwd<T: Real>(
        qkv: &[T],
        bias: &[T],
        kept: Option<&[T]>,
        dy: &[T],
        b: usize,
        t: usize,
        c: usize,
        h: usize,
    ) -> Vec<T> {
        let d = c / h;
        let scale = T::from_f64(1.0 / (d as f64).sqrt());
        assert!(kept.is_none_or(|k| k.len() == b * h * t * t), "attention probabilities: wrong length");
        let fill = |dqkv: &mut [MaybeUninit<T>]| {
            let gp = SendPtr(dqkv.as_mut_ptr().cast::<T>());
            (0..b * h).into_par_iter().with_min_len(min_len()).for_each_init(
                || (vec![T::zero(); if kept.is_some() { 0 } else { t * t }], vec![T::zero(); t * t]),
                |(scratch, ds), job| {
                    let (bi, hi) = (job / h, job % h);
                    // SAFETY: as in attn_fwd; task (bi, hi) writes head hi's q, k and v columns of
                    // batch bi's rows of dqkv only.
                    unsafe {
                        let base = qkv.as_ptr().add(bi * t * 3 * c + hi * d);
                        let (q, k, v) = (base, base.add(c), base.add(2 * c));
                        let g = dy.as_ptr().add(bi * t * c + hi * d);
                        let out = gp.get().add(bi * t * 3 * c + hi * d);
                        let p: &[T] = match kept {
                            Some(all) => &all[job * t * t..(job + 1) * t * t],
                            None => {
                                attn_probs(q, k, &bias[bi * t * t..(bi + 1) * t * t], scratch, t, t, c, d, scale);
                                scratch
                            }
                        };
                        // dV = Pᵀ dY
                        mm(t, d, t, out.add(2 * c), 3 * c, false, p.as_ptr(), 1, t, g, c, 1, T::zero(), T::one());
                        // dP = dY Vᵀ, then dS = P ⊙ (dP − rowsum(dP ⊙ P)) · scale
                        mm(t, t, d, ds.as_mut_ptr(), t, false, g, c, 1, v, 1, 3 * c, T::zero(), T::one());
                        softmax_grad_in_place(ds, p, t, scale);
                        // dQ = dS K, dK = dSᵀ Q
                        mm(t, d, t, out, 3 * c, false, ds.as_ptr(), t, 1, k, 3 * c, 1, T::zero(), T::one());
                        mm(t, d, t, out.add(c), 3 * c, false, ds.as_ptr(), 1, t, q, 3 * c, 1, T::zero(), T::one());
                    }
                },
            );
        };
        // SAFETY: each (batch, head) task writes its head's q, k and v columns of every row
        // (read_dst = false), so together they write every element.
        unsafe { written(b * t * 3 * c, fill) }
    }

    fn attn_dims(l1: &Layout, l2: &Layout, h: usize) -> Result<(usize, usize, usize)> {
        let (b, t, c3) = l1.shape().dims3()?;
        if c3 % 3 != 0 || (c3 / 3) % h != 0 || l2.dims() != [b, 1, t, t] {
            bail!("fused-attention: qkv {:?} / bias {:?} / {h} heads do not fit", l1.dims(), l2.dims());
        }
        Ok((b, t, c3 / 3))
    }

    impl CustomOp2 for AttentionQkv {
        fn name(&self) -> &'static str {
            "fused-attention"
        }
        fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
            let (b, t, c) = attn_dims(l1, l2, self.n_head)?;
            let y = attn_fwd_storage((s1, l1), (s2, l2), (b, t, c, self.n_head), 0, t, self.name())?;
            Ok((y, Shape::from((b, t, c))))
        }
        fn bwd(
            &self,
            qkv: &Tensor,
            bias: &Tensor,
            _y: &Tensor,
            dy: &Tensor,
        ) -> Result<(Option<Tensor>, Option<Tensor>)> {
            let dqkv = qkv.apply_op3_no_bwd(bias, &dy.contiguous()?, &AttentionQkvBwd { n_head: self.n_head })?;
            Ok((Some(dqkv), None))
        }
    }

    impl CustomOp3 for AttentionQkvBwd {
        fn name(&self) -> &'static str {
            "fused-attention-bwd"
        }
        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let (b, t, c) = attn_dims(l1, l2, self.n_head)?;
            let n = self.name();
            let h = self.n_head;
            let g = by_dtype!(n, s1, |T| attn_bwd::<T>(
                slice(s1, l1, n)?,
                slice(s2, l2, n)?,
                None,
                slice(s3, l3, n)?,
                b,
                t,
                c,
                h
            ));
            Ok((g, l1.shape().clone()))
        }
    }

    /// [`attn_fwd`] on a packed `qkv` storage `[b, cap, 3c]` (dims `(b, cap, c, heads)`) and its
    /// bias, in the storage's element type; `op` names the op in errors.
    fn attn_fwd_storage(
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        (b, cap, c, h): (usize, usize, usize, usize),
        past: usize,
        t: usize,
        op: &str,
    ) -> Result<CpuStorage> {
        Ok(by_dtype!(op, s1, |T| attn_fwd::<T>(slice(s1, l1, op)?, slice(s2, l2, op)?, b, cap, c, h, past, t, None)))
    }

    /// See [`super::attention_cached`]. Inference only: it has no backward pass.
    pub struct AttentionCached {
        pub n_head: usize,
        pub past: usize,
        pub t: usize,
    }

    impl CustomOp2 for AttentionCached {
        fn name(&self) -> &'static str {
            "fused-attention-cached"
        }
        fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
            let (b, cap, c3) = l1.shape().dims3()?;
            let (h, past, t) = (self.n_head, self.past, self.t);
            if c3 % 3 != 0 || (c3 / 3) % h != 0 || past + t > cap || l2.dims() != [b, 1, t, past + t] {
                bail!(
                    "fused-attention-cached: cache {:?} / bias {:?} / {h} heads, {past} past + {t} new rows do not fit",
                    l1.dims(),
                    l2.dims()
                );
            }
            let c = c3 / 3;
            let y = attn_fwd_storage((s1, l1), (s2, l2), (b, cap, c, h), past, t, self.name())?;
            Ok((y, Shape::from((b, t, c))))
        }
    }

    /// LayerNorm over the last dimension of a contiguous `x` with gain `w` and bias `b`.
    pub struct LayerNorm {
        pub eps: f64,
    }
    struct LayerNormBwd {
        eps: f64,
    }

    /// Mean and `1/√(var + eps)` of each of the `≤ ROWS` rows of width `c` in `x`.
    fn row_stats<T: Real>(x: &[T], c: usize, eps: f64) -> ([T; ROWS], [T; ROWS]) {
        let (rows, n) = (x.len() / c, T::from_f64(c as f64));
        let mean = row_sums(rows, c, |r, j| x[r * c + j]).map(|s| s / n);
        let var = row_sums(rows, c, |r, j| (x[r * c + j] - mean[r]) * (x[r * c + j] - mean[r])).map(|s| s / n);
        (mean, var.map(|v| T::from_f64(1.0) / (v + T::from_f64(eps)).sqrt_()))
    }

    /// LayerNorm of the rows of `x`; `keep` (`[rows, 2]`) receives each row's mean and `1/√(var +
    /// eps)` for [`ln_bwd`].
    pub(crate) fn ln_fwd<T: Real>(x: &[T], w: &[T], b: &[T], eps: f64, keep: Option<&mut [T]>) -> Vec<T> {
        let c = w.len();
        let rows = x.len() / c;
        let per_task = rows_per_task(rows, c);
        assert!(keep.as_ref().is_none_or(|k| k.len() == 2 * rows), "LayerNorm statistics: wrong length");
        let kept = keep.map(|k| SendPtr(k.as_mut_ptr()));
        let fill = |y: &mut [MaybeUninit<T>]| {
            let tasks = y.par_chunks_mut(per_task * c).zip(x.par_chunks(per_task * c)).enumerate();
            tasks.with_min_len(min_len()).for_each(|(task, (y, x))| {
                for (group, (y, x)) in y.chunks_mut(ROWS * c).zip(x.chunks(ROWS * c)).enumerate() {
                    let (mean, rstd) = row_stats(x, c, eps);
                    if let Some(k) = kept {
                        let row0 = task * per_task + group * ROWS;
                        for r in 0..x.len() / c {
                            // SAFETY: row0 + r < rows; each row's two statistics belong to one task.
                            unsafe { *k.get().add(2 * (row0 + r)) = mean[r] };
                            unsafe { *k.get().add(2 * (row0 + r) + 1) = rstd[r] };
                        }
                    }
                    for (r, (y, x)) in y.chunks_mut(c).zip(x.chunks(c)).enumerate() {
                        for i in 0..c {
                            y[i].write((x[i] - mean[r]) * rstd[r] * w[i] + b[i]);
                        }
                    }
                }
            })
        };
        // SAFETY: the chunks cover y, and every element of every row is written.
        unsafe { written(x.len(), fill) }
    }

    /// Returns `[rows + 2, c]`: `dx` rows, then `dw`, then `db`, from one pass over the data.
    /// `dx = rstd (ĝ − mean(ĝ) − x̂ mean(ĝ x̂))` with `ĝ = dy ⊙ w`, `x̂ = (x − μ) rstd`;
    /// `dw = Σ_rows dy ⊙ x̂`, `db = Σ_rows dy`. Each row's `μ` and `rstd` are recomputed, or read
    /// from `kept` ([`ln_fwd`]'s `keep`): the same values.
    pub(crate) fn ln_bwd<T: Real>(x: &[T], w: &[T], dy: &[T], eps: f64, kept: Option<&[T]>) -> Vec<T> {
        let c = w.len();
        let rows = x.len() / c;
        let per_task = rows_per_task(rows, c);
        assert!(kept.is_none_or(|k| k.len() == 2 * rows), "LayerNorm statistics: wrong length");
        let fill = |out: &mut [MaybeUninit<T>]| {
            let (dx, tail) = out.split_at_mut(x.len());
            // Partial sums per fixed chunk, collected in order and added sequentially: rayon's
            // `reduce` tree depends on work stealing, which would make dw/db (and so a seeded
            // training run) vary in the last bits from run to run.
            let tasks =
                dx.par_chunks_mut(per_task * c).zip(x.par_chunks(per_task * c).zip(dy.par_chunks(per_task * c)));
            let partials: Vec<(Vec<T>, Vec<T>)> = tasks
                .enumerate()
                .with_min_len(min_len())
                .map(|(task, (dx, (x, dy)))| {
                    let mut dw = vec![T::zero(); c];
                    let mut db = vec![T::zero(); c];
                    let mut xhat = vec![T::zero(); ROWS * c];
                    let n = T::from_f64(c as f64);
                    let groups = dx.chunks_mut(ROWS * c).zip(x.chunks(ROWS * c)).zip(dy.chunks(ROWS * c));
                    for (group, ((dx, x), dy)) in groups.enumerate() {
                        let rows = x.len() / c;
                        let (mean, rstd) = match kept {
                            Some(k) => {
                                let row0 = task * per_task + group * ROWS;
                                let (mut mean, mut rstd) = ([T::zero(); ROWS], [T::zero(); ROWS]);
                                for r in 0..rows {
                                    (mean[r], rstd[r]) = (k[2 * (row0 + r)], k[2 * (row0 + r) + 1]);
                                }
                                (mean, rstd)
                            }
                            None => row_stats(x, c, eps),
                        };
                        let (mut sg, mut sgx) = ([T::zero(); ROWS], [T::zero(); ROWS]);
                        // Row-major within each column i, so dw[i] and db[i] take the rows in order.
                        for i in 0..c {
                            for r in 0..rows {
                                let k = r * c + i;
                                xhat[k] = (x[k] - mean[r]) * rstd[r];
                                let g = dy[k] * w[i];
                                sg[r] += g;
                                sgx[r] += g * xhat[k];
                                dw[i] += dy[k] * xhat[k];
                                db[i] += dy[k];
                            }
                        }
                        for r in 0..rows {
                            let (mg, mgx) = (sg[r] / n, sgx[r] / n);
                            for i in 0..c {
                                let k = r * c + i;
                                dx[k].write(rstd[r] * (dy[k] * w[i] - mg - xhat[k] * mgx));
                            }
                        }
                    }
                    (dw, db)
                })
                .collect();
            let (mut dw, mut db) = (vec![T::zero(); c], vec![T::zero(); c]);
            for (pw, pb) in partials {
                dw.iter_mut().zip(pw).for_each(|(a, v)| *a += v);
                db.iter_mut().zip(pb).for_each(|(a, v)| *a += v);
            }
            for (o, &v) in tail.iter_mut().zip(dw.iter().chain(&db)) {
                o.write(v);
            }
        };
        // SAFETY: the tasks write every element of dx (each row of each group), and the tail's
        // 2c elements are dw and db.
        unsafe { written(x.len() + 2 * c, fill) }
    }

    impl CustomOp3 for LayerNorm {
        fn name(&self) -> &'static str {
            "fused-layer-norm"
        }
        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let n = self.name();
            let out = by_dtype!(n, s1, |T| ln_fwd::<T>(
                slice(s1, l1, n)?,
                slice(s2, l2, n)?,
                slice(s3, l3, n)?,
                self.eps,
                None
            ));
            Ok((out, l1.shape().clone()))
        }
        fn bwd(
            &self,
            x: &Tensor,
            w: &Tensor,
            b: &Tensor,
            _y: &Tensor,
            dy: &Tensor,
        ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
            let c = w.elem_count();
            let rows = x.elem_count() / c;
            let packed = x.apply_op3_no_bwd(w, &dy.contiguous()?, &LayerNormBwd { eps: self.eps })?;
            let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
            let dw = packed.narrow(0, rows, 1)?.reshape(w.shape())?;
            let db = packed.narrow(0, rows + 1, 1)?.reshape(w.shape())?;
            Ok((Some(dx), sink_weight_grad(w, dw), sink_weight_grad(b, db)))
        }
    }

    impl CustomOp3 for LayerNormBwd {
        fn name(&self) -> &'static str {
            "fused-layer-norm-bwd"
        }
        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            let n = self.name();
            let c = l2.shape().elem_count();
            let rows = l1.shape().elem_count() / c;
            let out = by_dtype!(n, s1, |T| ln_bwd::<T>(
                slice(s1, l1, n)?,
                slice(s2, l2, n)?,
                slice(s3, l3, n)?,
                self.eps,
                None
            ));
            Ok((out, Shape::from((rows + 2, c))))
        }
    }

    /// Softmax over the last dimension; backward `dx = y ⊙ (dy − Σ dy ⊙ y)`.
    pub struct Softmax;
    struct SoftmaxBwd;

    fn softmax_rows<T: Real>(x: &[T], c: usize) -> Vec<T> {
        let rows = x.len() / c;
        let mut y = vec![T::zero(); x.len()];
        let chunk = rows_per_task(rows, c) * c;
        y.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).with_min_len(min_len()).for_each(|(y, x)| {
            y.copy_from_slice(x);
            for rows in y.chunks_mut(ROWS * c) {
                softmax_rows_in_place(rows, c);
            }
        });
        y
    }

    fn softmax_bwd_rows<T: Real>(y: &[T], dy: &[T], c: usize) -> Vec<T> {
        let rows = y.len() / c;
        let mut dx = vec![T::zero(); y.len()];
        let chunk = rows_per_task(rows, c) * c;
        let chunks = dx.par_chunks_mut(chunk).zip(y.par_chunks(chunk).zip(dy.par_chunks(chunk)));
        chunks.with_min_len(min_len()).for_each(|(dx, (y, dy))| {
            // dx = y ⊙ (dy − Σ dy ⊙ y); the scale 1 is exact.
            dx.copy_from_slice(dy);
            softmax_grad_in_place(dx, y, c, T::one());
        });
        dx
    }

    impl CustomOp1 for Softmax {
        fn name(&self) -> &'static str {
            "fused-softmax"
        }
        fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
            let c = l.dims().last().copied().unwrap_or(1);
            let out = by_dtype!(self.name(), s, |T| softmax_rows(slice::<T>(s, l, self.name())?, c));
            Ok((out, l.shape().clone()))
        }
        fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
            Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxBwd)?))
        }
    }

    impl CustomOp2 for SoftmaxBwd {
        fn name(&self) -> &'static str {
            "fused-softmax-bwd"
        }
        fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Result<(CpuStorage, Shape)> {
            let c = l1.dims().last().copied().unwrap_or(1);
            let n = self.name();
            let out = by_dtype!(n, s1, |T| softmax_bwd_rows(slice::<T>(s1, l1, n)?, slice(s2, l2, n)?, c));
            Ok((out, l1.shape().clone()))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fast_exp_is_within_one_ulp_over_the_normal_range() {
            let ulps = |a: f32, exact: f64| ((a as f64 - exact) / ((exact as f32).abs() * f32::EPSILON) as f64).abs();
            let (mut worst, mut at) = (0f64, 0f32);
            // Every 1e-3 over the range, plus each multiple of ln 2 / 2 and its neighbours, where
            // the reduction switches n.
            let mut xs: Vec<f32> = (-87_336..=88_376).map(|i| i as f32 * 1e-3).collect();
            xs.extend((-252..=254).flat_map(|k| {
                let c = k as f32 * std::f32::consts::LN_2 / 2.0;
                [c, f32::from_bits(c.to_bits() + 1), f32::from_bits(c.to_bits().wrapping_sub(1))]
            }));
            for x in xs.into_iter().filter(|x| (-87.3..=88.3).contains(x)) {
                let e = ulps(fast_exp(x), (x as f64).exp());
                if e > worst {
                    (worst, at) = (e, x);
                }
            }
            assert!(worst <= 1.0, "worst {worst} ulp at x = {at}");
            assert_eq!((fast_exp(0.0), fast_exp(1.0)), (1.0, std::f32::consts::E));
            // Tails: 0 where libm is subnormal or 0 (every masked score), ∞ past the last decade.
            for x in [f32::NEG_INFINITY, f32::MIN, -1e9, -104.0, -87.4] {
                assert_eq!(fast_exp(x), 0.0, "x = {x}");
            }
            assert_eq!((fast_exp(89.0), fast_exp(f32::INFINITY)), (f32::INFINITY, f32::INFINITY));
            assert!(fast_exp(f32::NAN).is_nan() && Real::exp_(f32::NAN).is_nan());
            assert!(fast_exp(-87.3).is_normal() && ulps(fast_exp(-87.3), (-87.3f32 as f64).exp()) <= 2.0);
        }

        /// The serial, one-row-at-a-time kernels the grouped ones replace.
        fn ln_fwd_serial(x: &[f32], w: &[f32], b: &[f32], eps: f64) -> Vec<f32> {
            let c = w.len();
            let mut y = vec![0f32; x.len()];
            for (y, x) in y.chunks_mut(c).zip(x.chunks(c)) {
                let n = c as f32;
                let mean = x.iter().fold(0.0, |a, &v| a + v) / n;
                let var = x.iter().fold(0.0, |a, &v| a + (v - mean) * (v - mean)) / n;
                let rstd = 1.0 / (var + eps as f32).sqrt();
                for i in 0..c {
                    y[i] = (x[i] - mean) * rstd * w[i] + b[i];
                }
            }
            y
        }

        fn ln_bwd_serial(x: &[f32], w: &[f32], dy: &[f32], eps: f64) -> Vec<f32> {
            let c = w.len();
            let mut out = vec![0f32; x.len() + 2 * c];
            let (dx, dwb) = out.split_at_mut(x.len());
            let (dw, db) = dwb.split_at_mut(c);
            let n = c as f32;
            for ((dx, x), dy) in dx.chunks_mut(c).zip(x.chunks(c)).zip(dy.chunks(c)) {
                let mean = x.iter().fold(0.0, |a, &v| a + v) / n;
                let var = x.iter().fold(0.0, |a, &v| a + (v - mean) * (v - mean)) / n;
                let rstd = 1.0 / (var + eps as f32).sqrt();
                let xhat: Vec<f32> = x.iter().map(|&v| (v - mean) * rstd).collect();
                let (mut sg, mut sgx) = (0f32, 0f32);
                for i in 0..c {
                    let g = dy[i] * w[i];
                    sg += g;
                    sgx += g * xhat[i];
                    dw[i] += dy[i] * xhat[i];
                    db[i] += dy[i];
                }
                for i in 0..c {
                    dx[i] = rstd * (dy[i] * w[i] - sg / n - xhat[i] * (sgx / n));
                }
            }
            out
        }

        fn softmax_serial(row: &mut [f32]) {
            let max = row.iter().copied().fold(row[0], |a, v| if v > a { v } else { a });
            let mut sum = 0f32;
            for v in row.iter_mut() {
                *v = (*v - max).exp_();
                sum += *v;
            }
            row.iter_mut().for_each(|v| *v *= 1.0 / sum);
        }

        fn wave(n: usize, k: f32) -> Vec<f32> {
            (0..n).map(|i| ((i as f32 * k).sin() * 3.0 + (i % 7) as f32 * 0.1).powi(3)).collect()
        }

        /// Reducing rows four at a time (with a ragged last group) changes no bit: each row's
        /// sums still run in index order, and dw/db still take the rows in order.
        #[test]
        fn grouped_rows_match_serial_rows_bit_for_bit() {
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let c = 48;
            // 4096 rows: several rayon tasks (a ragged group each); 7: one full group and a ragged one.
            for rows in [7usize, 4096] {
                let (x, dy) = (wave(rows * c, 0.37), wave(rows * c, 0.11));
                let (w, b) = (wave(c, 0.5), wave(c, 0.9));
                assert_eq!(
                    bits(&ln_fwd(&x, &w, &b, 1e-5, None)),
                    bits(&ln_fwd_serial(&x, &w, &b, 1e-5)),
                    "{rows} rows"
                );
                if rows == 7 {
                    // (With several tasks the dw/db partials are added per task, in task order.)
                    assert_eq!(bits(&ln_bwd(&x, &w, &dy, 1e-5, None)), bits(&ln_bwd_serial(&x, &w, &dy, 1e-5)));
                }
                // The statistics kept by the forward are those the backward computes.
                let mut stats = vec![0f32; 2 * rows];
                ln_fwd(&x, &w, &b, 1e-5, Some(&mut stats));
                assert_eq!(bits(&ln_bwd(&x, &w, &dy, 1e-5, Some(&stats))), bits(&ln_bwd(&x, &w, &dy, 1e-5, None)));
            }
            // Rows of 32 scores, a causal mask's −1e9 in the upper triangle, 7 rows (4 + 3).
            let (s, rows) = (32, 7);
            let mut p: Vec<f32> = wave(rows * s, 0.23);
            for (r, row) in p.chunks_mut(s).enumerate() {
                row[r + 1..].iter_mut().for_each(|v| *v = -1e9);
            }
            let mut want = p.clone();
            want.chunks_mut(s).for_each(softmax_serial);
            assert_eq!(bits(&softmax_rows(&p, s)), bits(&want));
            for g in p.chunks_mut(ROWS * s) {
                softmax_rows_in_place(g, s);
            }
            assert_eq!(bits(&p), bits(&want));
            // The gradient through it, as the serial `dx = y ⊙ (dy − Σ y ⊙ dy)` row by row.
            let dy = wave(rows * s, 0.71);
            let mut dx_want = vec![0f32; rows * s];
            for ((dx, y), g) in dx_want.chunks_mut(s).zip(p.chunks(s)).zip(dy.chunks(s)) {
                let dot = y.iter().zip(g).fold(0f32, |a, (&y, &g)| a + y * g);
                for i in 0..s {
                    dx[i] = y[i] * (g[i] - dot);
                }
            }
            assert_eq!(bits(&softmax_bwd_rows(&p, &dy, s)), bits(&dx_want));
        }
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

    /// Cutting m or n into per-thread blocks gives the bits of one single-threaded call, for
    /// row-major and transposed operands, with and without accumulation, with blocks that do
    /// not divide the dimension, and where a block would fall on another of gemm's kernels
    /// (`2×200`: a `2×88` block is a dot-product kernel's shape).
    #[test]
    fn gemm_blocks_match_one_call_bit_for_bit() {
        let val = |i: usize| ((i * 7919 % 1009) as f32 - 504.0) / 97.0;
        for (m, n, k) in [(70, 33, 41), (200, 70, 700), (3, 600, 600), (2, 200, 50), (20, 90, 17), (130, 130, 1)] {
            let a: Vec<f32> = (0..m * k).map(val).collect();
            let b: Vec<f32> = (0..k * n).map(|i| val(i + 13)).collect();
            let init: Vec<f32> = (0..m * n).map(|i| val(i + 29)).collect();
            // lhs row-major [m, k] or the transpose of a row-major [k, m]; rhs likewise.
            for (lt, rt) in [(false, false), (true, false), (false, true), (true, true)] {
                let lhs = match lt {
                    false => Strided { ptr: a.as_ptr(), rs: k as isize, cs: 1 },
                    true => Strided { ptr: a.as_ptr(), rs: 1, cs: m as isize },
                };
                let rhs = match rt {
                    false => Strided { ptr: b.as_ptr(), rs: n as isize, cs: 1 },
                    true => Strided { ptr: b.as_ptr(), rs: 1, cs: k as isize },
                };
                for read_dst in [false, true] {
                    let run = |threads: usize| {
                        let mut c = init.clone();
                        unsafe { gemm_blocks(threads, m, n, k, c.as_mut_ptr(), n as isize, read_dst, lhs, rhs) };
                        c
                    };
                    let one = run(1);
                    // The plain product, to make sure the blocks computed something.
                    let (i, j) = (m - 1, n / 2);
                    let mut want = if read_dst { init[i * n + j] } else { 0.0 };
                    let dot: f32 = (0..k)
                        .map(|p| unsafe {
                            *lhs.ptr.offset(i as isize * lhs.rs + p as isize * lhs.cs)
                                * *rhs.ptr.offset(p as isize * rhs.rs + j as isize * rhs.cs)
                        })
                        .sum();
                    want += dot;
                    assert!(
                        (one[i * n + j] - want).abs() <= 1e-3 * (1.0 + want.abs()),
                        "{m}x{n}x{k}: {} vs {want}",
                        one[i * n + j]
                    );
                    for threads in [2, 3, 8] {
                        assert!(
                            run(threads) == one,
                            "{m}x{n}x{k} lt {lt} rt {rt} read {read_dst}: {threads} blocks differ"
                        );
                    }
                }
            }
        }
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

    /// Forward values and gradients (of a random linear functional of the output) of
    /// `fused` and `composed` on the same inputs; returns max abs differences.
    fn compare_grads(
        inputs: &[Tensor],
        fused: impl Fn(&[Tensor]) -> Result<Tensor>,
        composed: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) -> (f64, f64) {
        let run = |f: &dyn Fn(&[Tensor]) -> Result<Tensor>| {
            let vars: Vec<Var> = inputs.iter().map(|t| Var::from_tensor(t).unwrap()).collect();
            let ts: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
            let y = f(&ts).unwrap();
            // A fixed, non-uniform cotangent so that no gradient term cancels by symmetry.
            let n = y.elem_count();
            let r: Vec<f64> = (0..n).map(|i| ((i * 7919 % 101) as f64 / 50.0) - 1.0).collect();
            let r = Tensor::from_vec(r, y.shape(), y.device()).unwrap().to_dtype(y.dtype()).unwrap();
            let loss = (&y * &r).unwrap().sum_all().unwrap();
            let g = loss.backward().unwrap();
            let grads: Vec<Tensor> = vars.iter().map(|v| g.get(v.as_tensor()).unwrap().clone()).collect();
            (y, grads)
        };
        let (yf, gf) = run(&fused);
        let (yc, gc) = run(&composed);
        let maxdiff = |a: &Tensor, b: &Tensor| {
            let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            d.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
        };
        let gmax = gf.iter().zip(&gc).map(|(a, b)| maxdiff(a, b)).fold(0.0, f64::max);
        (maxdiff(&yf, &yc), gmax)
    }

    fn randn(shape: &[usize], dtype: DType, mean: f64, std: f64) -> Tensor {
        Tensor::randn(mean, std, shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
    }

    #[test]
    fn fused_linear_gelu_matches_composed_forward_and_backward() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-4)] {
            let x = randn(&[3, 37, 24], dtype, 0.0, 1.0);
            let w = randn(&[40, 24], dtype, 0.0, 0.5);
            let b = randn(&[40], dtype, 0.0, 0.5);
            let composed = |t: &[Tensor]| gelu_composed(&linear_composed(&t[0], &t[1], &t[2])?);
            let (fwd, bwd) = compare_grads(&[x, w, b], |t| linear_gelu_fused(&t[0], &t[1], &t[2]), composed);
            assert!(fwd < tol && bwd < tol, "{dtype:?}: fwd {fwd}, bwd {bwd}");
        }
        // Bit for bit the two fused ops it replaces.
        let x = randn(&[5, 7, 24], DType::F32, 0.0, 1.0);
        let (w, b) = (randn(&[40, 24], DType::F32, 0.0, 0.5), randn(&[40], DType::F32, 0.0, 0.5));
        let separate = |t: &[Tensor]| gelu(&linear_fused(&t[0], &t[1], &t[2])?);
        let diff = compare_grads(&[x, w, b], |t| linear_gelu_fused(&t[0], &t[1], &t[2]), separate);
        assert_eq!(diff, (0.0, 0.0));
    }

    #[test]
    fn fused_linear_matches_composed_forward_and_backward() {
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-4)] {
            let x = randn(&[3, 37, 24], dtype, 0.0, 1.0);
            let w = randn(&[40, 24], dtype, 0.0, 0.5);
            let b = randn(&[40], dtype, 0.0, 0.5);
            let (fwd, bwd) =
                compare_grads(&[x, w, b], |t| linear(&t[0], &t[1], &t[2]), |t| linear_composed(&t[0], &t[1], &t[2]));
            assert!(fwd < tol && bwd < tol, "{dtype:?}: fwd {fwd}, bwd {bwd}");
        }
    }

    #[test]
    fn fused_attention_matches_composed_forward_and_backward() {
        // Row 0 left-padded by 3 (fully masked query rows included), row 1 unpadded.
        let mask = vec![[vec![0u8; 3], vec![1u8; 6]].concat(), vec![1u8; 9]];
        let pos = crate::attention::Positions::from_mask(&mask, 9, &Device::Cpu).unwrap();
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 2e-5)] {
            let qkv = randn(&[2, 9, 3 * 12], dtype, 0.0, 1.5);
            let bias = pos.bias.clone();
            let (fwd, bwd) = compare_grads(
                &[qkv],
                |t| attention_qkv_fused(&t[0], &bias, 3),
                |t| attention_qkv_composed(&t[0], &bias, 3),
            );
            assert!(fwd < tol && bwd < tol, "{dtype:?}: fwd {fwd}, bwd {bwd}");
        }
    }

    /// The cached kernel attends from the newest rows of a larger packed buffer: a prefill
    /// (`past = 0`) is the training kernel bit for bit, and later rows (one at a time, after 5
    /// cached ones) equal the full attention's rows, left padding included.
    #[test]
    fn cached_attention_matches_the_full_kernel() {
        let mask = vec![[vec![0u8; 3], vec![1u8; 6]].concat(), vec![1u8; 9]];
        let dev = Device::Cpu;
        for (dtype, tol) in [(DType::F64, 1e-13), (DType::F32, 1e-6)] {
            let qkv = randn(&[2, 9, 3 * 12], dtype, 0.0, 1.5);
            let full =
                attention_qkv_fused(&qkv, &crate::attention::Positions::from_mask(&mask, 9, &dev).unwrap().bias, 3)
                    .unwrap();
            // A buffer with room to spare (capacity 12), filled up to row 9.
            let buf = Tensor::zeros((2, 12, 36), dtype, &dev).unwrap();
            buf.slice_set(&qkv, 1, 0).unwrap();
            let prefill =
                attention_cached(&buf, &crate::attention::Positions::from_mask(&mask, 9, &dev).unwrap().bias, 3, 0, 9)
                    .unwrap();
            let bits = |t: &Tensor| t.to_dtype(DType::F64).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
            assert_eq!(bits(&prefill), bits(&full), "{dtype:?}: prefill");
            for past in 5..9 {
                let m: Vec<Vec<u8>> = mask.iter().map(|r| r[..past + 1].to_vec()).collect();
                let bias = crate::attention::Positions::from_mask(&m, 1, &dev).unwrap().bias;
                let got = attention_cached(&buf, &bias, 3, past, 1).unwrap();
                close(
                    &got.to_dtype(DType::F32).unwrap(),
                    &full.narrow(1, past, 1).unwrap().to_dtype(DType::F32).unwrap(),
                    tol,
                );
            }
        }
        // A cache too small for the rows asked for is an error, not a read past the end.
        let buf = Tensor::zeros((1, 4, 6), DType::F32, &dev).unwrap();
        let bias = Tensor::zeros((1, 1, 1, 5), DType::F32, &dev).unwrap();
        assert!(attention_cached(&buf, &bias, 1, 4, 1).is_err());
    }

    #[test]
    fn fused_gelu_matches_composed_forward_and_backward() {
        // f32: |x| reaches ~15 where one ulp is ~1e-6, so 1e-5 is a few ulp.
        for (dtype, tol) in [(DType::F64, 1e-12), (DType::F32, 1e-5)] {
            // Wide range: exercises the tanh clamp and both tails.
            let x = (randn(&[3, 7, 65], dtype, 0.0, 4.0) + 0.0).unwrap();
            let (fwd, bwd) = compare_grads(&[x], |t| gelu(&t[0]), |t| gelu_composed(&t[0]));
            assert!(fwd < tol && bwd < tol, "{dtype:?}: fwd {fwd}, bwd {bwd}");
        }
    }

    #[test]
    fn fast_tanh_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((fused::fast_tanh(x) - x.tanh()).abs());
        }
        assert!(worst < 5e-7, "max abs error {worst}");
        assert_eq!(fused::fast_tanh(100.0), 1.0);
        assert_eq!(fused::fast_tanh(-100.0), -1.0);
    }

    #[test]
    fn fused_layer_norm_matches_composed_forward_and_backward() {
        for (dtype, tol) in [(DType::F64, 1e-11), (DType::F32, 2e-5)] {
            // 300 rows: several rayon tasks, so the partial dw/db reduction is exercised.
            let x = randn(&[3, 100, 48], dtype, 0.5, 2.0);
            let w = randn(&[48], dtype, 1.0, 0.3);
            let b = randn(&[48], dtype, 0.0, 0.3);
            let (fwd, bwd) = compare_grads(
                &[x, w, b],
                |t| layer_norm(&t[0], &t[1], &t[2], 1e-5),
                |t| layer_norm_composed(&t[0], &t[1], &t[2], 1e-5),
            );
            assert!(fwd < tol && bwd < tol, "{dtype:?}: fwd {fwd}, bwd {bwd}");
        }
    }

    #[test]
    fn fused_softmax_matches_composed_forward_and_backward() {
        for (dtype, tol) in [(DType::F64, 1e-13), (DType::F32, 1e-6)] {
            let x = randn(&[2, 3, 40, 33], dtype, 0.0, 3.0);
            // Masked entries as attention uses them: a fully masked row must stay finite.
            let mask = Tensor::from_vec(
                (0..40 * 33).map(|i| if i % 33 > i / 33 { attention_masked() } else { 0.0 }).collect::<Vec<f64>>(),
                (40, 33),
                &Device::Cpu,
            )
            .unwrap()
            .to_dtype(dtype)
            .unwrap();
            let (fwd, bwd) = compare_grads(
                &[x],
                |t| softmax_last_dim(&t[0].broadcast_add(&mask)?),
                |t| softmax_composed(&t[0].broadcast_add(&mask)?),
            );
            assert!(fwd < tol && bwd < tol, "{dtype:?}: fwd {fwd}, bwd {bwd}");
        }
    }

    fn attention_masked() -> f64 {
        crate::attention::MASKED as f64
    }

    #[test]
    fn cross_entropy_of_uniform_logits_is_log_vocab() {
        let logits = Tensor::zeros((5, 13), DType::F32, &Device::Cpu).unwrap();
        let targets = Tensor::new(&[0u32, 3, 12, 7, 7], &Device::Cpu).unwrap();
        let l = cross_entropy(&logits, &targets).unwrap().to_scalar::<f32>().unwrap();
        assert!((l - 13f32.ln()).abs() < 1e-6, "{l}");
    }
}
