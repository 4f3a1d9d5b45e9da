//! LayerNorm over the last dimension, forward and backward in one pass each.

use super::*;

/// LayerNorm over the last dimension of a contiguous `x` with gain `w` and bias `b`.
pub struct LayerNorm {
    pub eps: f64,
}
pub(super) struct LayerNormBwd {
    eps: f64,
}

/// Mean and `1/√(var + eps)` of each of the `≤ ROWS` rows of width `c` in `x`.
pub(super) fn row_stats<T: Real>(x: &[T], c: usize, eps: f64) -> ([T; ROWS], [T; ROWS]) {
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
        let tasks = dx.par_chunks_mut(per_task * c).zip(x.par_chunks(per_task * c).zip(dy.par_chunks(per_task * c)));
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

custom_op! {
    CustomOp3 for LayerNorm, "fused-layer-norm",
    fn cpu_fwd(&self, s1, l1, s2, l2, s3, l3) {
        let n = self.name();
        let out =
            by_dtype!(n, s1, |T| ln_fwd::<T>(slice(s1, l1, n)?, slice(s2, l2, n)?, slice(s3, l3, n)?, self.eps, None));
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

custom_op! {
    CustomOp3 for LayerNormBwd, "fused-layer-norm-bwd",
    fn cpu_fwd(&self, s1, l1, s2, l2, s3, l3) {
        let n = self.name();
        let c = l2.shape().elem_count();
        let rows = l1.shape().elem_count() / c;
        let out =
            by_dtype!(n, s1, |T| ln_bwd::<T>(slice(s1, l1, n)?, slice(s2, l2, n)?, slice(s3, l3, n)?, self.eps, None));
        Ok((out, Shape::from((rows + 2, c))))
    }
}
