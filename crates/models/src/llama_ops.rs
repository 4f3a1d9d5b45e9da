//! Fused CPU kernels with hand-written backward passes for training the Llama family: the
//! no-bias linear map, RMSNorm, the rotary embedding and the SwiGLU gate.
//!
//! Each replaces a chain of candle primitives. candle's backprop costs every graph node a
//! zero-filled gradient buffer, an add and fresh allocations, and the composed linear map
//! (candle_nn's broadcast batched matmul) made the weight gradient a `[batch, in, out]` tensor
//! summed afterwards plus a strided transpose copy: on SmolLM2-135M the backward took ~8× the
//! forward. Here each function is one node; `tests` checks values and gradients against the
//! composed form in f64.

use crate::ops::fused::{
    by_dtype, custom_op, linear_fwd, row_sums, rows_per_task, slice, written, LinearBwd, Real, ROWS,
};
use crate::ops::fused_cpu;
use candle_core::{bail, CpuStorage, Result, Shape, Tensor, D};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// `y = x Wᵀ` over the last dimension: `x` `[..., in]`, `w` `[out, in]` (PyTorch `nn.Linear`
/// layout, no bias). On CPU one node: the forward is one GEMM over all rows, the backward
/// `dx = dy W` and `dW = dyᵀ x`, the latter written straight in W's layout.
pub fn linear_no_bias(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    linear_no_bias_op(x, w, LinearNoBias { sink: true })
}

/// [`linear_no_bias`] for a weight that candle's own ops also use (a tied embedding): its
/// gradient stays in candle's store, where the lookup's gradient is added into it in place, so
/// the sum keeps candle's order ([`crate::backprop`]).
pub fn linear_no_bias_shared(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    linear_no_bias_op(x, w, LinearNoBias { sink: false })
}

fn linear_no_bias_op(x: &Tensor, w: &Tensor, op: LinearNoBias) -> Result<Tensor> {
    if fused_cpu(x) && w.dtype() == x.dtype() {
        return x.contiguous()?.apply_op2(&w.contiguous()?, op);
    }
    linear_no_bias_composed(x, w)
}

/// [`linear_no_bias`] from candle primitives (reference; non-CPU devices).
pub fn linear_no_bias_composed(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let inp = dims.pop().unwrap_or(1);
    let rows: usize = dims.iter().product();
    dims.push(w.dim(0)?);
    x.reshape((rows, inp))?.matmul(&w.t()?)?.reshape(dims)
}

/// RMSNorm (Zhang & Sennrich 2019) over the last dimension: `y = x · r · w` with
/// `r = 1/√(mean(x²) + eps)`. Backward, with `x̂ = x r` and `g = dy ⊙ w`:
/// `dx = r (g − x̂ · mean(g ⊙ x̂))`, `dw = Σ_rows dy ⊙ x̂`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if fused_cpu(x) && w.dtype() == x.dtype() {
        return x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps });
    }
    crate::ops::rms_norm_composed(x, w, eps)
}

/// Rotary position embedding (Su et al. 2021) in the "rotate half" layout of HF Llama: for
/// `i < d/2`, `y_i = x_i cos θ_i − x_{i+d/2} sin θ_i` and `y_{i+d/2} = x_{i+d/2} cos θ_i + x_i sin θ_i`.
/// `x` `[b, h, t, d]`, `cos`/`sin` `[b, t, d/2]` (per row and position). The backward is the
/// rotation by `−θ`: the same kernel with `−sin`. `cos` and `sin` get no gradient.
pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, _, t, d) = x.dims4()?;
    if cos.dims() != [b, t, d / 2] || sin.dims() != [b, t, d / 2] {
        bail!("rope: x {:?} needs cos/sin [{b}, {t}, {}], got {:?} and {:?}", x.dims(), d / 2, cos.dims(), sin.dims());
    }
    if fused_cpu(x) && cos.dtype() == x.dtype() && sin.dtype() == x.dtype() {
        return x.contiguous()?.apply_op3(&cos.contiguous()?, &sin.contiguous()?, Rope);
    }
    rope_composed(x, cos, sin)
}

/// [`rope`] from candle primitives (reference; non-CPU devices).
pub fn rope_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, _, t, d) = x.dims4()?;
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?.reshape((b, 1, t, d))?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?.reshape((b, 1, t, d))?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}

/// The SwiGLU gate of the Llama MLP (Shazeer 2020): `y = silu(g) ⊙ u`, `silu(g) = g σ(g)`.
/// Backward: `dg = dy ⊙ u ⊙ σ(g) (1 + g (1 − σ(g)))`, `du = dy ⊙ silu(g)`.
pub fn swiglu(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    if fused_cpu(g) && u.dtype() == g.dtype() && g.shape() == u.shape() {
        return g.contiguous()?.apply_op2(&u.contiguous()?, SwiGlu);
    }
    swiglu_composed(g, u)
}

/// [`swiglu`] from candle primitives (reference; non-CPU devices).
pub fn swiglu_composed(g: &Tensor, u: &Tensor) -> Result<Tensor> {
    g.silu()? * u
}

/// `sink`: give the weight's gradient to [`crate::backprop`]'s sink.
struct LinearNoBias {
    sink: bool,
}

custom_op! {
    CustomOp2 for LinearNoBias, "linear-no-bias",
    fn cpu_fwd(&self, s1, l1, s2, l2) {
        let n = self.name();
        let (out, inp) = l2.shape().dims2()?;
        if l1.dims().last() != Some(&inp) {
            bail!("{n}: x {:?} and w {:?} do not fit", l1.dims(), l2.dims());
        }
        let rows = l1.shape().elem_count() / inp.max(1);
        let y = by_dtype!(n, s1, |T| linear_fwd::<T>(slice(s1, l1, n)?, slice(s2, l2, n)?, None, rows, inp, out));
        let mut dims = l1.dims().to_vec();
        *dims.last_mut().expect("rank ≥ 1") = out;
        Ok((y, Shape::from(dims)))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (out, inp) = w.dims2()?;
        let g = x.apply_op3_no_bwd(w, &dy.contiguous()?, &LinearBwd { bias: false })?;
        let rows = x.elem_count() / inp.max(1);
        let dx = g.narrow(0, 0, rows * inp)?.reshape(x.shape())?;
        let dw = g.narrow(0, rows * inp, out * inp)?.reshape((out, inp))?;
        Ok((Some(dx), if self.sink { crate::backprop::sink_weight_grad(w, dw) } else { Some(dw) }))
    }
}

struct RmsNorm {
    eps: f64,
}
struct RmsNormBwd {
    eps: f64,
}

/// `1/√(mean(x²) + eps)` of each row of `x` (at most [`ROWS`] rows of `c`), each row's sum of
/// squares in index order: the bits of a serial fold, with the rows' chains overlapping.
fn rstd_rows<T: Real>(x: &[T], c: usize, eps: f64) -> [T; ROWS] {
    let ss = row_sums(x.len() / c, c, |r, j| x[r * c + j] * x[r * c + j]);
    ss.map(|s| T::from_f64(1.0) / (s / T::from_f64(c as f64) + T::from_f64(eps)).sqrt_())
}

fn rms_fwd<T: Real>(x: &[T], w: &[T], eps: f64) -> Vec<T> {
    let c = w.len();
    let rows = x.len() / c;
    let chunk = rows_per_task(rows, c) * c;
    let fill = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(y, x)| {
            for (y, x) in y.chunks_mut(ROWS * c).zip(x.chunks(ROWS * c)) {
                let r = rstd_rows(x, c, eps);
                for (k, (y, x)) in y.chunks_mut(c).zip(x.chunks(c)).enumerate() {
                    for i in 0..c {
                        y[i].write(x[i] * r[k] * w[i]);
                    }
                }
            }
        })
    };
    // SAFETY: the chunks cover y, and every element of every row is written.
    unsafe { written(x.len(), fill) }
}

/// `[rows + 1, c]`: dx, then dw. Partial dw sums per fixed chunk, added in order, so that the
/// result does not depend on rayon's work stealing; within a chunk dw adds its rows in order.
fn rms_bwd<T: Real>(x: &[T], w: &[T], dy: &[T], eps: f64) -> Vec<T> {
    let c = w.len();
    let rows = x.len() / c;
    let mut out = vec![T::zero(); x.len() + c];
    let chunk = rows_per_task(rows, c) * c;
    let n = T::from_f64(c as f64);
    let partials: Vec<Vec<T>> = out[..x.len()]
        .par_chunks_mut(chunk)
        .zip(x.par_chunks(chunk).zip(dy.par_chunks(chunk)))
        .map(|(dx, (x, dy))| {
            let mut dw = vec![T::zero(); c];
            for ((dx, x), dy) in dx.chunks_mut(ROWS * c).zip(x.chunks(ROWS * c)).zip(dy.chunks(ROWS * c)) {
                let r = rstd_rows(x, c, eps);
                let sgx = row_sums(x.len() / c, c, |k, i| dy[k * c + i] * w[i] * (x[k * c + i] * r[k]));
                for (k, ((dx, x), dy)) in dx.chunks_mut(c).zip(x.chunks(c)).zip(dy.chunks(c)).enumerate() {
                    let m = sgx[k] / n;
                    for i in 0..c {
                        dw[i] += dy[i] * (x[i] * r[k]);
                        dx[i] = r[k] * (dy[i] * w[i] - x[i] * r[k] * m);
                    }
                }
            }
            dw
        })
        .collect();
    let dw = &mut out[x.len()..];
    for p in partials {
        dw.iter_mut().zip(p).for_each(|(a, v)| *a += v);
    }
    out
}

custom_op! {
    CustomOp2 for RmsNorm, "rms-norm",
    fn cpu_fwd(&self, s1, l1, s2, l2) {
        let n = self.name();
        if l1.dims().last() != Some(&l2.shape().elem_count()) {
            bail!("{n}: x {:?} and w {:?} do not fit", l1.dims(), l2.dims());
        }
        let y = by_dtype!(n, s1, |T| rms_fwd::<T>(slice(s1, l1, n)?, slice(s2, l2, n)?, self.eps));
        Ok((y, l1.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, w: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let c = w.elem_count();
        let rows = x.elem_count() / c;
        let packed = x.apply_op3_no_bwd(w, &dy.contiguous()?, &RmsNormBwd { eps: self.eps })?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows, 1)?.reshape(w.shape())?;
        Ok((Some(dx), crate::backprop::sink_weight_grad(w, dw)))
    }
}

custom_op! {
    CustomOp3 for RmsNormBwd, "rms-norm-bwd",
    fn cpu_fwd(&self, s1, l1, s2, l2, s3, l3) {
        let n = self.name();
        let c = l2.shape().elem_count();
        let rows = l1.shape().elem_count() / c;
        let out = by_dtype!(n, s1, |T| rms_bwd::<T>(slice(s1, l1, n)?, slice(s2, l2, n)?, slice(s3, l3, n)?, self.eps));
        Ok((out, Shape::from((rows + 1, c))))
    }
}

struct Rope;

/// Rotates each `d`-row of `x` (`[b, h, t, d]`) by its (row, position)'s angles.
fn rope_rows<T: Real>(x: &[T], cos: &[T], sin: &[T], (h, t, d): (usize, usize, usize)) -> Vec<T> {
    let half = d / 2;
    // One task per (batch, head): t rows of d.
    let fill = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut(t * d).zip(x.par_chunks(t * d)).enumerate().for_each(|(bh, (y, x))| {
            let bi = bh / h;
            for ti in 0..t {
                let (c, s) = (&cos[(bi * t + ti) * half..][..half], &sin[(bi * t + ti) * half..][..half]);
                let (x, y) = (&x[ti * d..][..d], &mut y[ti * d..][..d]);
                for i in 0..half {
                    let (a, b) = (x[i], x[i + half]);
                    y[i].write(a * c[i] - b * s[i]);
                    y[i + half].write(b * c[i] + a * s[i]);
                }
            }
        })
    };
    // SAFETY: one task per (batch, head) covers y, writing both halves of every row (d is
    // even: checked by the op).
    unsafe { written(x.len(), fill) }
}

custom_op! {
    CustomOp3 for Rope, "rope",
    fn cpu_fwd(&self, s1, l1, s2, l2, s3, l3) {
        let n = self.name();
        let (_, h, t, d) = l1.shape().dims4()?;
        if !d.is_multiple_of(2) {
            bail!("rope: head dimension {d} is odd");
        }
        let y =
            by_dtype!(n, s1, |T| rope_rows::<T>(slice(s1, l1, n)?, slice(s2, l2, n)?, slice(s3, l3, n)?, (h, t, d)));
        Ok((y, l1.shape().clone()))
    }
    fn bwd(
        &self,
        _x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = dy.contiguous()?.apply_op3_no_bwd(cos, &sin.neg()?, &Rope)?;
        Ok((Some(dx), None, None))
    }
}

struct SwiGlu;
struct SwiGluBwd;

fn sigmoid<T: Real>(g: T) -> T {
    T::from_f64(1.0) / (T::from_f64(1.0) + (T::zero() - g).exp_())
}

fn swiglu_fwd<T: Real>(g: &[T], u: &[T]) -> Vec<T> {
    let fill = |y: &mut [MaybeUninit<T>]| {
        y.par_chunks_mut(16_384).zip(g.par_chunks(16_384).zip(u.par_chunks(16_384))).for_each(|(y, (g, u))| {
            for ((y, &g), &u) in y.iter_mut().zip(g).zip(u) {
                y.write(g * sigmoid(g) * u);
            }
        })
    };
    // SAFETY: the chunks cover y, and every element is written.
    unsafe { written(g.len(), fill) }
}

/// `[2, n]`: dg, then du.
fn swiglu_bwd<T: Real>(g: &[T], u: &[T], dy: &[T]) -> Vec<T> {
    let n = g.len();
    let one = T::from_f64(1.0);
    let fill = |out: &mut [MaybeUninit<T>]| {
        let (dg, du) = out.split_at_mut(n);
        dg.par_chunks_mut(16_384)
            .zip(du.par_chunks_mut(16_384))
            .zip(g.par_chunks(16_384).zip(u.par_chunks(16_384)).zip(dy.par_chunks(16_384)))
            .for_each(|((dg, du), ((g, u), dy))| {
                for i in 0..g.len() {
                    let s = sigmoid(g[i]);
                    dg[i].write(dy[i] * u[i] * s * (one + g[i] * (one - s)));
                    du[i].write(dy[i] * g[i] * s);
                }
            })
    };
    // SAFETY: the chunks cover dg and du, every element of both written.
    unsafe { written(2 * n, fill) }
}

custom_op! {
    CustomOp2 for SwiGlu, "swiglu",
    fn cpu_fwd(&self, s1, l1, s2, l2) {
        let n = self.name();
        let y = by_dtype!(n, s1, |T| swiglu_fwd::<T>(slice(s1, l1, n)?, slice(s2, l2, n)?));
        Ok((y, l1.shape().clone()))
    }
    fn bwd(&self, g: &Tensor, u: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = g.elem_count();
        let packed = g.apply_op3_no_bwd(u, &dy.contiguous()?, &SwiGluBwd)?;
        let dg = packed.narrow(0, 0, n)?.reshape(g.shape())?;
        let du = packed.narrow(0, n, n)?.reshape(g.shape())?;
        Ok((Some(dg), Some(du)))
    }
}

custom_op! {
    CustomOp3 for SwiGluBwd, "swiglu-bwd",
    fn cpu_fwd(&self, s1, l1, s2, l2, s3, l3) {
        let n = self.name();
        let out = by_dtype!(n, s1, |T| swiglu_bwd::<T>(slice(s1, l1, n)?, slice(s2, l2, n)?, slice(s3, l3, n)?));
        Ok((out, Shape::from(2 * l1.shape().elem_count())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};

    /// The RMSNorm kernels one row at a time with serial folds (as before rows were grouped):
    /// `y`, and `[dx | dw]` with dw summed over rows in order.
    fn rms_serial(x: &[f32], w: &[f32], dy: &[f32], eps: f64) -> (Vec<f32>, Vec<f32>) {
        let c = w.len();
        let rstd = |x: &[f32]| 1.0 / (x.iter().fold(0f32, |a, &v| a + v * v) / c as f32 + eps as f32).sqrt();
        let (mut y, mut dx, mut dw) = (vec![0f32; x.len()], vec![0f32; x.len()], vec![0f32; c]);
        for (row, (x, dy)) in x.chunks(c).zip(dy.chunks(c)).enumerate() {
            let r = rstd(x);
            let mut sgx = 0f32;
            for i in 0..c {
                y[row * c + i] = x[i] * r * w[i];
                let xhat = x[i] * r;
                sgx += dy[i] * w[i] * xhat;
                dw[i] += dy[i] * xhat;
            }
            let m = sgx / c as f32;
            for i in 0..c {
                dx[row * c + i] = r * (dy[i] * w[i] - x[i] * r * m);
            }
        }
        dx.extend(dw);
        (y, dx)
    }

    /// Grouping rows for their sums keeps the bits of the serial kernels (7 rows: a full group
    /// and a ragged one, in one task).
    #[test]
    fn rms_norm_rows_match_serial_bit_for_bit() {
        let wave = |n: usize, f: f32| (0..n).map(|i| (i as f32 * f).sin() * 1.7).collect::<Vec<f32>>();
        let c = 48;
        let (x, dy, w) = (wave(7 * c, 0.37), wave(7 * c, 0.11), wave(c, 0.5));
        let (y, g) = rms_serial(&x, &w, &dy, 1e-5);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&rms_fwd(&x, &w, 1e-5)), bits(&y));
        assert_eq!(bits(&rms_bwd(&x, &w, &dy, 1e-5)), bits(&g));
    }

    /// Values and gradients (of a fixed, non-uniform linear functional of the output) of
    /// `fused` and `composed` on the same inputs; returns the max abs differences. Inputs past
    /// the first `diff` are held constant (no gradient compared).
    fn compare(
        inputs: &[Tensor],
        diff: usize,
        fused: impl Fn(&[Tensor]) -> Result<Tensor>,
        composed: impl Fn(&[Tensor]) -> Result<Tensor>,
    ) -> (f64, f64) {
        let run = |f: &dyn Fn(&[Tensor]) -> Result<Tensor>| {
            let vars: Vec<Var> = inputs[..diff].iter().map(|t| Var::from_tensor(t).unwrap()).collect();
            let ts: Vec<Tensor> =
                vars.iter().map(|v| v.as_tensor().clone()).chain(inputs[diff..].iter().cloned()).collect();
            let y = f(&ts).unwrap();
            let r: Vec<f64> = (0..y.elem_count()).map(|i| ((i * 7919 % 101) as f64 / 50.0) - 1.0).collect();
            let r = Tensor::from_vec(r, y.shape(), y.device()).unwrap().to_dtype(y.dtype()).unwrap();
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            let grads: Vec<Tensor> = vars.iter().map(|v| g.get(v.as_tensor()).unwrap().clone()).collect();
            (y, grads)
        };
        let ((yf, gf), (yc, gc)) = (run(&fused), run(&composed));
        let maxdiff = |a: &Tensor, b: &Tensor| {
            assert_eq!(a.dims(), b.dims());
            let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            d.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
        };
        let g = gf.iter().zip(&gc).map(|(a, b)| maxdiff(a, b)).fold(0.0, f64::max);
        (maxdiff(&yf, &yc), g)
    }

    fn randn(shape: &[usize], mean: f64, std: f64) -> Tensor {
        Tensor::randn(mean, std, shape, &Device::Cpu).unwrap().to_dtype(DType::F64).unwrap()
    }

    #[test]
    fn fused_kernels_match_composed_values_and_gradients() {
        let cases: Vec<(&str, (f64, f64))> = vec![
            ("linear", {
                let (x, w) = (randn(&[2, 5, 12], 0.0, 1.0), randn(&[7, 12], 0.0, 0.5));
                compare(&[x, w], 2, |t| linear_no_bias(&t[0], &t[1]), |t| linear_no_bias_composed(&t[0], &t[1]))
            }),
            ("rms_norm", {
                let (x, w) = (randn(&[2, 5, 12], 0.3, 1.0), randn(&[12], 1.0, 0.2));
                compare(
                    &[x, w],
                    2,
                    |t| rms_norm(&t[0], &t[1], 1e-5),
                    |t| crate::ops::rms_norm_composed(&t[0], &t[1], 1e-5),
                )
            }),
            ("rope", {
                let x = randn(&[2, 3, 5, 8], 0.0, 1.0);
                let angles = randn(&[2, 5, 4], 0.0, 2.0);
                let (c, s) = (angles.cos().unwrap(), angles.sin().unwrap());
                compare(&[x, c, s], 1, |t| rope(&t[0], &t[1], &t[2]), |t| rope_composed(&t[0], &t[1], &t[2]))
            }),
            ("swiglu", {
                let (g, u) = (randn(&[3, 11], 0.0, 2.0), randn(&[3, 11], 0.0, 1.0));
                compare(&[g, u], 2, |t| swiglu(&t[0], &t[1]), |t| swiglu_composed(&t[0], &t[1]))
            }),
        ];
        for (name, (fwd, bwd)) in cases {
            assert!(fwd < 1e-12 && bwd < 1e-12, "{name}: values differ by {fwd}, gradients by {bwd}");
        }
    }

    #[test]
    fn hand_computed_values() {
        let dev = Device::Cpu;
        // RMS of [3, 4] is √12.5; with w = [1, 2]: y = [3, 8]/√12.5.
        let y = rms_norm(&Tensor::new(&[[3f32, 4.0]], &dev).unwrap(), &Tensor::new(&[1f32, 2.0], &dev).unwrap(), 0.0)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let r = 12.5f32.sqrt();
        assert!((y[0][0] - 3.0 / r).abs() < 1e-6 && (y[0][1] - 8.0 / r).abs() < 1e-6);
        // Rotating (1, 0) by 90°: (cos, sin) = (0, 1) → (0, 1).
        let x = Tensor::new(&[1f32, 0.0], &dev).unwrap().reshape((1, 1, 1, 2)).unwrap();
        let c = Tensor::new(&[0f32], &dev).unwrap().reshape((1, 1, 1)).unwrap();
        let s = Tensor::new(&[1f32], &dev).unwrap().reshape((1, 1, 1)).unwrap();
        assert_eq!(rope(&x, &c, &s).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0.0, 1.0]);
        // silu(1)·2 = 2/(1 + e⁻¹).
        let y = swiglu(&Tensor::new(&[1f32], &dev).unwrap(), &Tensor::new(&[2f32], &dev).unwrap()).unwrap();
        assert!((y.to_vec1::<f32>().unwrap()[0] - 2.0 / (1.0 + (-1f32).exp())).abs() < 1e-6);
    }
}
