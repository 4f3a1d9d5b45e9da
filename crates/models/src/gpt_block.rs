//! The GPT block ([`crate::gpt`]) as one autograd node on CPU, for training:
//!
//! ```text
//! a = ln_1(x);  qkv = a W_attnᵀ + b_attn;  s = attn(qkv);  m = x + s W_projᵀ + b_proj
//! n = ln_2(m);  p = n W_fcᵀ + b_fc;  g = gelu(p);  y = m + g W_mlpᵀ + b_mlp
//! ```
//!
//! and its backward by hand, in reverse:
//!
//! ```text
//! dg, dW_mlp, db_mlp = linear′(g, dy);  dp = dg ⊙ gelu′(p);  dn, dW_fc, db_fc = linear′(n, dp)
//! dm = dy + ln_2′(m, dn);  ds, dW_proj, db_proj = linear′(s, dm);  dqkv = attn′(qkv, ds)
//! da, dW_attn, db_attn = linear′(a, dqkv);  dx = dm + ln_1′(x, da)
//! ```
//!
//! Each step is the kernel that the block's separate fused ops run ([`crate::ops::fused`]), on
//! the same operands, so forward values and gradients are those of the op-by-op graph bit for
//! bit (test). What one node saves is candle's bookkeeping around the nine: a zero-filled
//! gradient buffer and an add per node input, an output tensor per residual add and a tensor
//! per intermediate. On the tiny GPT (64 wide, 32-row chunks) that was the largest cost of a
//! DPO step's backward after the GEMMs. The node also keeps from the forward pass what the
//! separate ops' backward passes computed again: each LayerNorm row's mean and `1/√(var + eps)`,
//! `tanh u` of the GELU and, when they take no more room than `qkv` (sequences no longer than
//! three head widths, as the tiny GPT's), the attention probabilities. Until the backward it holds
//! up to about `22c` numbers per token, where the separate ops' graph held `17c`.
//!
//! The twelve parameters enter as one concatenated tensor (in [`crate::GptConfig`]'s parameter
//! order), so candle returns each its slice of the gradient with its own ops, with or without
//! [`crate::backprop`]'s sink.

use crate::ops::fused::{
    attn_bwd, attn_fwd, by_dtype, custom_op, gelu_from, gelu_grad_from, gelu_tanh, linear_bwd, linear_fwd, ln_bwd,
    ln_fwd, min_len, slice, written, Real,
};
use candle_core::{bail, CpuStorage, Layout, Result, Storage, Tensor};
use rayon::prelude::*;
use std::any::Any;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

/// `y = block(x)` for `x` `[b, t, c]`, attention `bias` `[b, 1, t, t]`, the block's parameters
/// `params` in [`crate::GptConfig`]'s order (`ln_1.weight`, `ln_1.bias`, `attn.c_attn.weight`,
/// …, `mlp.c_proj.bias`). CPU f32/f64 only; the caller checks ([`crate::ops::fused_cpu`]).
pub(crate) fn block(x: &Tensor, bias: &Tensor, params: &[&Tensor], n_head: usize, eps: f64) -> Result<Tensor> {
    let flat = params.iter().map(|p| p.flatten_all()).collect::<Result<Vec<_>>>()?;
    let w = Tensor::cat(&flat, 0)?;
    let bias = bias.to_dtype(x.dtype())?.contiguous()?;
    x.contiguous()?.apply_op3(&w, &bias, Block { n_head, eps, saved: OnceLock::new() })
}

struct Block {
    n_head: usize,
    eps: f64,
    /// The forward's intermediates, a [`Saved`] of the storage's element type.
    saved: OnceLock<Box<dyn Any + Send + Sync>>,
}

/// What the backward reads besides `x`, the parameters and the bias: `[rows, width]` each but
/// the probabilities.
struct Saved<T> {
    /// Each row's mean and `1/√(var + eps)` in `ln_1` (`[rows, 2]`).
    stats1: Vec<T>,
    a: Vec<T>,
    qkv: Vec<T>,
    /// The attention probabilities `[b, h, t, t]`, or nothing when the backward recomputes them.
    probs: Vec<T>,
    s: Vec<T>,
    m: Vec<T>,
    /// As `stats1`, in `ln_2`.
    stats2: Vec<T>,
    n: Vec<T>,
    p: Vec<T>,
    /// `tanh u(p)` of the GELU.
    th: Vec<T>,
    g: Vec<T>,
}

#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    c: usize,
    h: usize,
    eps: f64,
}

impl Dims {
    fn rows(&self) -> usize {
        self.b * self.t
    }

    /// Lengths of the twelve parameters, in order.
    fn param_lens(&self) -> [usize; 12] {
        let c = self.c;
        [c, c, 3 * c * c, 3 * c, c * c, c, c, c, 4 * c * c, 4 * c, 4 * c * c, c]
    }
}

/// The twelve parameters as slices of the concatenation `w`.
fn split<'a, T>(w: &'a [T], d: &Dims) -> [&'a [T]; 12] {
    let mut rest = w;
    d.param_lens().map(|n| {
        let (head, tail) = rest.split_at(n);
        rest = tail;
        head
    })
}

/// `y[i] = r[i] + y[i]` (the residual, in the order candle's `r + y` adds).
fn add_residual<T: Real>(y: &mut [T], r: &[T]) {
    y.par_chunks_mut(16_384).zip(r.par_chunks(16_384)).with_min_len(min_len()).for_each(|(y, r)| {
        y.iter_mut().zip(r).for_each(|(y, &r)| *y = r + *y);
    });
}

fn block_fwd<T: Real>(x: &[T], w: &[T], bias: &[T], d: Dims) -> (Vec<T>, Saved<T>) {
    let (rows, c, t) = (d.rows(), d.c, d.t);
    let [ln1_w, ln1_b, attn_w, attn_b, proj_w, proj_b, ln2_w, ln2_b, fc_w, fc_b, mlp_w, mlp_b] = split(w, &d);
    let mut stats1 = vec![T::zero(); 2 * rows];
    let a = ln_fwd(x, ln1_w, ln1_b, d.eps, Some(&mut stats1));
    let qkv = linear_fwd(&a, attn_w, Some(attn_b), rows, c, 3 * c);
    // The probabilities are kept when they take no more room than qkv (t ≤ 3·head size), as
    // on the tiny GPT; otherwise the backward recomputes them.
    let mut probs = vec![T::zero(); if t <= 3 * (c / d.h) { d.b * d.h * t * t } else { 0 }];
    let keep = (!probs.is_empty()).then_some(&mut probs[..]);
    let s = attn_fwd(&qkv, bias, d.b, t, c, d.h, 0, t, keep);
    let mut m = linear_fwd(&s, proj_w, Some(proj_b), rows, c, c);
    add_residual(&mut m, x);
    let mut stats2 = vec![T::zero(); 2 * rows];
    let n = ln_fwd(&m, ln2_w, ln2_b, d.eps, Some(&mut stats2));
    let p = linear_fwd(&n, fc_w, Some(fc_b), rows, c, 4 * c);
    let (th, g) = gelu_fwd(&p);
    let mut y = linear_fwd(&g, mlp_w, Some(mlp_b), rows, 4 * c, c);
    add_residual(&mut y, &m);
    (y, Saved { stats1, a, qkv, probs, s, m, stats2, n, p, th, g })
}

/// `(tanh u(p), gelu(p))`.
fn gelu_fwd<T: Real>(p: &[T]) -> (Vec<T>, Vec<T>) {
    let fill = |th: &mut [MaybeUninit<T>], g: &mut [MaybeUninit<T>]| {
        let parts = th.par_chunks_mut(16_384).zip(g.par_chunks_mut(16_384)).zip(p.par_chunks(16_384));
        parts.with_min_len(min_len()).for_each(|((th, g), p)| {
            for ((th, g), &p) in th.iter_mut().zip(g.iter_mut()).zip(p) {
                let v = gelu_tanh(p);
                th.write(v);
                g.write(gelu_from(p, v));
            }
        })
    };
    let mut g = Vec::new();
    // SAFETY: the chunks cover th and g, and every element of both is written.
    let th = unsafe { written(p.len(), |th| g = written(p.len(), |g| fill(th, g))) };
    (th, g)
}

/// `(dx, dparams)`, the parameters' gradients laid out as their concatenation `w`.
fn block_bwd<T: Real>(x: &[T], w: &[T], bias: &[T], sv: &Saved<T>, dy: &[T], d: Dims) -> (Vec<T>, Vec<T>) {
    let (rows, c) = (d.rows(), d.c);
    let [ln1_w, _, attn_w, _, proj_w, _, ln2_w, _, fc_w, _, mlp_w, _] = split(w, &d);
    // Each kernel returns its input's gradient followed by its parameters' ([dx | dW | db] for a
    // linear map, [dx | dw | db] for a LayerNorm).
    let mlp = linear_bwd(&sv.g, mlp_w, dy, c, 4 * c, true);
    let dp = gelu_bwd(&sv.p, &sv.th, &mlp[..rows * 4 * c]);
    let fc = linear_bwd(&sv.n, fc_w, &dp, 4 * c, c, true);
    let mut ln2 = ln_bwd(&sv.m, ln2_w, &fc[..rows * c], d.eps, Some(&sv.stats2));
    add_residual(&mut ln2[..rows * c], dy);
    let dm = &ln2[..rows * c];
    let proj = linear_bwd(&sv.s, proj_w, dm, c, c, true);
    let kept = (!sv.probs.is_empty()).then_some(&sv.probs[..]);
    let dqkv = attn_bwd(&sv.qkv, bias, kept, &proj[..rows * c], d.b, d.t, c, d.h);
    let attn = linear_bwd(&sv.a, attn_w, &dqkv, 3 * c, c, true);
    let mut ln1 = ln_bwd(x, ln1_w, &attn[..rows * c], d.eps, Some(&sv.stats1));
    add_residual(&mut ln1[..rows * c], dm);
    let mut dw = Vec::with_capacity(w.len());
    dw.extend_from_slice(&ln1[rows * c..]);
    dw.extend_from_slice(&attn[rows * c..]);
    dw.extend_from_slice(&proj[rows * c..]);
    dw.extend_from_slice(&ln2[rows * c..]);
    dw.extend_from_slice(&fc[rows * c..]);
    dw.extend_from_slice(&mlp[rows * 4 * c..]);
    debug_assert_eq!(dw.len(), w.len());
    ln1.truncate(rows * c);
    (ln1, dw)
}

/// `dp = dg ⊙ gelu′(p)`, from the saved `th = tanh u(p)`.
fn gelu_bwd<T: Real>(p: &[T], th: &[T], dg: &[T]) -> Vec<T> {
    let fill = |dp: &mut [MaybeUninit<T>]| {
        let parts = dp.par_chunks_mut(16_384).zip(p.par_chunks(16_384).zip(th.par_chunks(16_384)));
        parts.zip(dg.par_chunks(16_384)).with_min_len(min_len()).for_each(|((dp, (p, th)), dg)| {
            for (((dp, &p), &th), &g) in dp.iter_mut().zip(p).zip(th).zip(dg) {
                dp.write(g * gelu_grad_from(p, th));
            }
        })
    };
    // SAFETY: the chunks cover dp, and every element is written.
    unsafe { written(p.len(), fill) }
}

fn dims(lx: &Layout, lw: &Layout, lb: &Layout, h: usize, eps: f64) -> Result<Dims> {
    let (b, t, c) = lx.shape().dims3()?;
    let d = Dims { b, t, c, h, eps };
    let params: usize = d.param_lens().iter().sum();
    if h == 0 || c % h != 0 || lw.shape().elem_count() != params || lb.dims() != [b, 1, t, t] {
        bail!(
            "gpt-block: x {:?}, {} parameters, bias {:?} and {h} heads do not fit",
            lx.dims(),
            lw.dims()[0],
            lb.dims()
        );
    }
    Ok(d)
}

custom_op! {
    CustomOp3 for Block, "gpt-block",
    fn cpu_fwd(&self, s1, l1, s2, l2, s3, l3) {
        let op = self.name();
        let d = dims(l1, l2, l3, self.n_head, self.eps)?;
        let saved: Box<dyn Any + Send + Sync>;
        let y = by_dtype!(op, s1, |T| {
            let (y, sv) = block_fwd::<T>(slice(s1, l1, op)?, slice(s2, l2, op)?, slice(s3, l3, op)?, d);
            saved = Box::new(sv);
            y
        });
        if self.saved.set(saved).is_err() {
            bail!("{op}: one node ran forward twice");
        }
        Ok((y, l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        bias: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let op = self.name();
        let Some(saved) = self.saved.get() else { bail!("{op}: backward before forward") };
        let dy = dy.contiguous()?;
        let (xs, lx) = x.storage_and_layout();
        let (ws, lw) = w.storage_and_layout();
        let (bs, lb) = bias.storage_and_layout();
        let (gs, lg) = dy.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(ws), Storage::Cpu(bs), Storage::Cpu(gs)) = (&*xs, &*ws, &*bs, &*gs) else {
            bail!("{op}: CPU tensors only")
        };
        let d = dims(lx, lw, lb, self.n_head, self.eps)?;
        macro_rules! grads {
            ($T:ty) => {{
                let Some(sv) = saved.downcast_ref::<Saved<$T>>() else { bail!("{op}: saved dtype differs") };
                let (a, b, c, g) = (slice(xs, lx, op)?, slice(ws, lw, op)?, slice(bs, lb, op)?, slice(gs, lg, op)?);
                let (dx, dw) = block_bwd::<$T>(a, b, c, sv, g, d);
                (Tensor::from_vec(dx, x.shape(), x.device())?, Tensor::from_vec(dw, w.shape(), w.device())?)
            }};
        }
        let (dx, dw) = match xs {
            CpuStorage::F32(_) => grads!(f32),
            CpuStorage::F64(_) => grads!(f64),
            _ => bail!("{op}: only f32/f64"),
        };
        Ok((Some(dx), w.track_op().then_some(dw), None))
    }
}
