//! Softmax over the last dimension, with backward.

use super::*;

/// Softmax over the last dimension; backward `dx = y ⊙ (dy − Σ dy ⊙ y)`.
pub struct Softmax;
pub(super) struct SoftmaxBwd;

pub(super) fn softmax_rows<T: Real>(x: &[T], c: usize) -> Vec<T> {
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

pub(super) fn softmax_bwd_rows<T: Real>(y: &[T], dy: &[T], c: usize) -> Vec<T> {
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

custom_op! {
    CustomOp1 for Softmax, "fused-softmax",
    fn cpu_fwd(&self, s, l) {
        let c = l.dims().last().copied().unwrap_or(1);
        let out = by_dtype!(self.name(), s, |T| softmax_rows(slice::<T>(s, l, self.name())?, c));
        Ok((out, l.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&dy.contiguous()?, &SoftmaxBwd)?))
    }
}

custom_op! {
    CustomOp2 for SoftmaxBwd, "fused-softmax-bwd",
    fn cpu_fwd(&self, s1, l1, s2, l2) {
        let c = l1.dims().last().copied().unwrap_or(1);
        let n = self.name();
        let out = by_dtype!(n, s1, |T| softmax_bwd_rows(slice::<T>(s1, l1, n)?, slice(s2, l2, n)?, c));
        Ok((out, l1.shape().clone()))
    }
}
