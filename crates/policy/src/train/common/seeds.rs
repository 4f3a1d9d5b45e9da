//! Seeds and batch order derived from (seed, step) alone, so a resumed run draws what an
//! uninterrupted one would.

/// A deterministic 64-bit seed from (seed, step, stream): [`mismatch_models::seed::mix`].
pub fn derive_seed(seed: u64, step: u64, stream: u64) -> u64 {
    mismatch_models::seed::mix(seed, step, stream)
}

/// Indices of step `step`'s batch of `bs` items out of `n`: consecutive slices of per-epoch
/// permutations, each seeded by (seed, epoch); batches may straddle two epochs.
pub fn batch_indices(n: usize, bs: usize, seed: u64, stream: u64, step: usize) -> Vec<usize> {
    let (start, end) = (step * bs, step * bs + bs);
    let mut out = Vec::with_capacity(bs);
    let mut epoch = start / n;
    let mut perm = permutation(n, derive_seed(seed, epoch as u64, stream));
    for pos in start..end {
        if pos / n != epoch {
            epoch = pos / n;
            perm = permutation(n, derive_seed(seed, epoch as u64, stream));
        }
        out.push(perm[pos % n]);
    }
    out
}

pub use mismatch_models::seed::permutation;
