//! Causal multi-head attention on a packed `[b, t, 3c]` q|k|v block: training (with backward)
//! and cached decoding.

use super::*;

/// See [`crate::ops::attention_qkv_fused`].
pub struct AttentionQkv {
    pub n_head: usize,
}
pub(super) struct AttentionQkvBwd {
    n_head: usize,
}

/// `dst[m×n] = alpha·dst + beta·(lhs[m×k] · rhs[k×n])` with explicit (row, column) strides,
/// single-threaded (tasks are already parallel).
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn mm<T: 'static>(
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
pub(super) unsafe fn attn_probs<T: Real>(
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

pub(super) fn attn_dims(l1: &Layout, l2: &Layout, h: usize) -> Result<(usize, usize, usize)> {
    let (b, t, c3) = l1.shape().dims3()?;
    if c3 % 3 != 0 || (c3 / 3) % h != 0 || l2.dims() != [b, 1, t, t] {
        bail!("fused-attention: qkv {:?} / bias {:?} / {h} heads do not fit", l1.dims(), l2.dims());
    }
    Ok((b, t, c3 / 3))
}

custom_op! {
    CustomOp2 for AttentionQkv, "fused-attention",
    fn cpu_fwd(&self, s1, l1, s2, l2) {
        let (b, t, c) = attn_dims(l1, l2, self.n_head)?;
        let y = attn_fwd_storage((s1, l1), (s2, l2), (b, t, c, self.n_head), 0, t, self.name())?;
        Ok((y, Shape::from((b, t, c))))
    }
    fn bwd(&self, qkv: &Tensor, bias: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dqkv = qkv.apply_op3_no_bwd(bias, &dy.contiguous()?, &AttentionQkvBwd { n_head: self.n_head })?;
        Ok((Some(dqkv), None))
    }
}

custom_op! {
    CustomOp3 for AttentionQkvBwd, "fused-attention-bwd",
    fn cpu_fwd(&self, s1, l1, s2, l2, s3, l3) {
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
pub(super) fn attn_fwd_storage(
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    (b, cap, c, h): (usize, usize, usize, usize),
    past: usize,
    t: usize,
    op: &str,
) -> Result<CpuStorage> {
    Ok(by_dtype!(op, s1, |T| attn_fwd::<T>(slice(s1, l1, op)?, slice(s2, l2, op)?, b, cap, c, h, past, t, None)))
}

/// See [`crate::ops::attention_cached`]. Inference only: it has no backward pass.
pub struct AttentionCached {
    pub n_head: usize,
    pub past: usize,
    pub t: usize,
}

custom_op! {
    CustomOp2 for AttentionCached, "fused-attention-cached",
    fn cpu_fwd(&self, s1, l1, s2, l2) {
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
