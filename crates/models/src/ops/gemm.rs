//! The CPU GEMM driver of the fused kernels: gemm's single-threaded kernel on one block per
//! thread, cut so that the bits are those of one call.

use super::fused;
use rayon::prelude::*;

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
pub(super) unsafe fn gemm_blocks<T: fused::Real>(
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
