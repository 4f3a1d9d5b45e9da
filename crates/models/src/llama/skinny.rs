//! The few-row inference product of the Llama decoder: `y = x · Wᵀ` for at most
//! [`SKINNY_MAX_ROWS`] rows of `x`, as in batched decoding. There gemm's packing of the whole
//! weight on every call costs more than the product itself, so [`SkinnyMatmul`] streams each
//! weight row once through hand-written AVX2/FMA or AVX-512 dot products.

use candle_core::{CpuStorage, Layout, Shape};

/// The most rows of `x` that take [`SkinnyMatmul`].
pub(super) const SKINNY_MAX_ROWS: usize = 16;

/// Whether [`SkinnyMatmul`] takes its AVX-512 kernel (twice the lanes, half the passes over
/// the weights for 8 rows): on CPUs with avx512f. SmolLM2-135M, 8 rows, greedy, on an Intel
/// Xeon: 115–119 against 98–100 generated tokens/s with the AVX2 kernel as it was before it
/// prefetched too (on an AMD EPYC, AVX2 only, the prefetch took 131–137 to 146–153).
fn skinny_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`SkinnyMatmul`] can run here at all: on x86-64 CPUs with AVX2 and FMA.
pub(super) fn skinny_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `y[m, n] = x[m, k] · w[n, k]ᵀ` for small `m`: each thread takes a block of weight rows and
/// dots each against every row of `x`, so the weights are read from memory exactly once.
pub(super) struct SkinnyMatmul;

impl candle_core::CustomOp2 for SkinnyMatmul {
    fn name(&self) -> &'static str {
        "skinny-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (m, k) = l1.shape().dims2()?;
        let (n, k2) = l2.shape().dims2()?;
        if k != k2 {
            candle_core::bail!("skinny-matmul: inner dimensions {k} and {k2} differ");
        }
        let (CpuStorage::F32(x), CpuStorage::F32(w)) = (s1, s2) else {
            candle_core::bail!("skinny-matmul: f32 only");
        };
        let (Some((x0, x1)), Some((w0, w1))) = (l1.contiguous_offsets(), l2.contiguous_offsets()) else {
            candle_core::bail!("skinny-matmul: contiguous inputs only");
        };
        let (x, w) = (&x[x0..x1], &w[w0..w1]);
        // yt[j, i] = y[i, j]: threads own contiguous blocks of output features.
        let mut yt = vec![0f32; n * m];
        const BLOCK: usize = 32;
        use rayon::prelude::*;
        yt.par_chunks_mut(BLOCK * m).enumerate().for_each(|(blk, out)| {
            let j0 = blk * BLOCK;
            let rows = out.len() / m;
            #[cfg(target_arch = "x86_64")]
            // SAFETY: only reached when avx2 and fma were detected (`skinny_supported`), and the
            // AVX-512 kernel only when avx512f was.
            unsafe {
                let w = &w[j0 * k..(j0 + rows) * k];
                match skinny_avx512() {
                    true => kernels::block_avx512(x, m, k, w, rows, out),
                    false => kernels::block(x, m, k, w, rows, out),
                }
            }
        });
        let mut y = vec![0f32; m * n];
        for j in 0..n {
            for i in 0..m {
                y[i * n + j] = yt[j * m + i];
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((m, n))))
    }
}

/// The AVX2/FMA and AVX-512 kernels.
#[cfg(target_arch = "x86_64")]
pub(super) mod kernels {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// `out[r·m + i] = w[r] · x[i]` for the `rows` weight rows in `w`, on the tile that suits
    /// `m`: two weight rows against four inputs when there are at least four (fewer passes over
    /// each weight row), else four rows against two (eight independent FMA chains hide the FMA
    /// latency even when m = 1). Every element is the same 8-lane sum either way.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn block(x: &[f32], m: usize, k: usize, w: &[f32], rows: usize, out: &mut [f32]) {
        match m >= 4 {
            true => tile::<2, 4>(x, m, k, w, rows, out),
            false => tile::<4, 2>(x, m, k, w, rows, out),
        }
    }

    /// [`block`] with `NR` weight rows against `NI` inputs at a time. Lane `l` of an element's
    /// accumulator sums `w[c]·x[c]` over `c ≡ l (mod 8)` in increasing `c`; then the lanes are
    /// added by [`hsum`] and the `k mod 8` tail after them, so the tile changes no bit.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile<const NR: usize, const NI: usize>(
        x: &[f32],
        m: usize,
        k: usize,
        w: &[f32],
        rows: usize,
        out: &mut [f32],
    ) {
        let k8 = k / 8 * 8;
        let xp = x.as_ptr();
        let wp = w.as_ptr();
        let mut r = 0;
        while r < rows {
            let nr = (rows - r).min(NR);
            let mut i = 0;
            while i < m {
                let ni = (m - i).min(NI);
                let mut acc = [[_mm256_setzero_ps(); NI]; NR];
                let mut c = 0;
                while c < k8 {
                    // Past the last row or input (nr < NR, ni < NI) the last one is recomputed
                    // and discarded.
                    let xv: [__m256; NI] =
                        std::array::from_fn(|b| _mm256_loadu_ps(xp.add((i + b.min(ni - 1)) * k + c)));
                    for (a, acc) in acc.iter_mut().enumerate() {
                        let wv = _mm256_loadu_ps(wp.add((r + a.min(nr - 1)) * k + c));
                        if i == 0 && r + NR + a < rows {
                            // The weights stream from memory once; fetching the next rows while
                            // these are multiplied took 15-25 % off (AMD EPYC, SmolLM2 shapes).
                            _mm_prefetch(wp.add((r + NR + a) * k + c) as *const i8, _MM_HINT_T0);
                        }
                        for (acc, xv) in acc.iter_mut().zip(&xv) {
                            *acc = _mm256_fmadd_ps(wv, *xv, *acc);
                        }
                    }
                    c += 8;
                }
                for (a, acc) in acc.iter().enumerate().take(nr) {
                    for (b, acc) in acc.iter().enumerate().take(ni) {
                        let mut s = hsum(*acc);
                        for c in k8..k {
                            s += *wp.add((r + a) * k + c) * *xp.add((i + b) * k + c);
                        }
                        out[(r + a) * m + i + b] = s;
                    }
                }
                i += ni;
            }
            r += nr;
        }
    }

    /// The AVX-512 form of [`block`]: four weight rows against four inputs at a time, sixteen
    /// independent 16-lane FMA chains.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn block_avx512(x: &[f32], m: usize, k: usize, w: &[f32], rows: usize, out: &mut [f32]) {
        let k16 = k / 16 * 16;
        let xp = x.as_ptr();
        let wp = w.as_ptr();
        let mut r = 0;
        while r < rows {
            let nr = (rows - r).min(4);
            let mut i = 0;
            while i < m {
                let ni = (m - i).min(4);
                let mut acc = [[_mm512_setzero_ps(); 4]; 4];
                let mut c = 0;
                while c < k16 {
                    // Past the last row or input (nr, ni < 4) the last one is recomputed and discarded.
                    let xv = [0, 1, 2, 3].map(|b: usize| _mm512_loadu_ps(xp.add((i + b.min(ni - 1)) * k + c)));
                    for (a, acc) in acc.iter_mut().enumerate() {
                        let wv = _mm512_loadu_ps(wp.add((r + a.min(nr - 1)) * k + c));
                        if i == 0 && r + 4 + a < rows {
                            // The next four rows, one cache line per line used: the weights stream
                            // from memory once, so their latency is what there is to hide.
                            _mm_prefetch(wp.add((r + 4 + a) * k + c) as *const i8, _MM_HINT_T0);
                        }
                        for b in 0..4 {
                            acc[b] = _mm512_fmadd_ps(wv, xv[b], acc[b]);
                        }
                    }
                    c += 16;
                }
                for a in 0..nr {
                    for b in 0..ni {
                        let mut s = _mm512_reduce_add_ps(acc[a][b]);
                        for c in k16..k {
                            s += *wp.add((r + a) * k + c) * *xp.add((i + b) * k + c);
                        }
                        out[(r + a) * m + i + b] = s;
                    }
                }
                i += ni;
            }
            r += nr;
        }
    }
}
