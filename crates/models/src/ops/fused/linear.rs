//! `y = x Wᵀ + b`, alone and followed by GELU, with backward passes that return every gradient
//! in one buffer.

use super::*;

/// `y = x Wᵀ + b`; see [`crate::ops::linear`].
pub struct Linear;

/// `y[rows, out] = x[rows, inp] · Wᵀ (+ b)` with `W` `[out, inp]` row-major: one GEMM,
/// accumulating onto the bias rows, or without a bias written straight into an unfilled
/// buffer (no zero-fill). Serves [`Linear`] and the Llama's no-bias linear.
pub(crate) fn linear_fwd<T: Real>(x: &[T], w: &[T], b: Option<&[T]>, rows: usize, inp: usize, out: usize) -> Vec<T> {
    // x is [rows, inp] row-major, and Wᵀ is read from W [out, inp] with swapped strides;
    // y is [rows, out] row-major.
    let (x, wt) = (Strided::rows(x, inp), Strided::transposed(w, inp));
    match b {
        Some(b) => {
            let mut y = b.repeat(rows);
            // SAFETY: as above; the GEMM accumulates onto the bias rows.
            unsafe { crate::ops::gemm_split(rows, out, inp, y.as_mut_ptr(), out as isize, true, x, wt) };
            y
        }
        // SAFETY: as above; the GEMM writes every element without reading it (read_dst =
        // false, also when inp = 0).
        None => unsafe {
            written(rows * out, |y| {
                crate::ops::gemm_split(rows, out, inp, y.as_mut_ptr().cast(), out as isize, false, x, wt)
            })
        },
    }
}

custom_op! {
    CustomOp3 for Linear, "fused-linear",
    fn cpu_fwd(&self, s1, l1, s2, l2, s3, l3) {
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
pub(super) type Grads3 = (Option<Tensor>, Option<Tensor>, Option<Tensor>);
pub(super) fn unpack_linear_grads(packed: &Tensor, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Grads3> {
    let (out, inp) = w.dims2()?;
    let rows = x.elem_count() / inp;
    let dx = packed.narrow(0, 0, rows * inp)?.reshape(x.shape())?;
    let dw = packed.narrow(0, rows * inp, out * inp)?.reshape((out, inp))?;
    let db = packed.narrow(0, (rows + out) * inp, out)?;
    Ok((Some(dx), sink_weight_grad(w, dw), sink_weight_grad(b, db)))
}

/// `gelu(x Wᵀ + b)`; see [`crate::ops::linear_gelu_fused`]. `pre` keeps `x Wᵀ + b` from the
/// forward pass for the backward.
#[derive(Default)]
pub struct LinearGelu {
    pre: std::sync::OnceLock<CpuStorage>,
}

/// The gradients of [`LinearGelu`] as one buffer `[dx | dW | db]`, from its pre-activation.
pub(super) struct LinearGeluBwd<'a> {
    pre: &'a CpuStorage,
}

custom_op! {
    CustomOp3 for LinearGelu, "fused-linear-gelu",
    fn cpu_fwd(&self, s1, l1, s2, l2, s3, l3) {
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

custom_op! {
    CustomOp3 for LinearGeluBwd<'_>, "fused-linear-gelu-bwd",
    fn cpu_fwd(&self, s1, l1, s2, l2, s3, l3) {
        let n = self.name();
        // dA = dY ⊙ gelu′(A), then the linear's gradients from dA.
        let da = by_dtype!(n, s3, |T| map2(self.pre.as_slice::<T>()?, slice::<T>(s3, l3, n)?, |a, g| g * gelu_grad(a)));
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
        crate::ops::gemm_split(rows, inp, out, dx, inp_s, false, Strided::rows(dy, out), Strided::rows(w, inp));
        // dyᵀ [out, rows]: element (o, r) is dy[r·out + o].
        crate::ops::gemm_split(out, inp, rows, dw, inp_s, false, Strided::transposed(dy, out), Strided::rows(x, inp));
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

custom_op! {
    CustomOp3 for LinearBwd, "fused-linear-bwd",
    fn cpu_fwd(&self, s1, l1, s2, l2, s3, l3) {
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
