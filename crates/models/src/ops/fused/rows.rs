//! Plumbing every kernel shares: rows reduced together ([`ROWS`], [`row_sums`]), row-wise softmax
//! in place, contiguous slices of storages, outputs written without a zero fill and the task
//! sizes of the parallel loops.

use super::*;

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
pub(super) fn row_max<T: Real>(x: &[T]) -> T {
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
pub(super) fn softmax_rows_in_place<T: Real>(rows: &mut [T], c: usize) {
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
pub(super) fn softmax_grad_in_place<T: Real>(dp: &mut [T], p: &[T], c: usize, scale: T) {
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

/// A raw pointer that tasks may share: each task writes a disjoint region (attention: one
/// (batch, head); LayerNorm: its rows' statistics).
#[derive(Clone, Copy)]
pub(super) struct SendPtr<T>(pub(super) *mut T);
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}
impl<T> SendPtr<T> {
    pub(super) fn get(self) -> *mut T {
        self.0
    }
}
