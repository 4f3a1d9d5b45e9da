//! Seed derivation: every place that turns a user seed into the seed of one random stream goes
//! through these functions, so no user seed (up to `u64::MAX`) can overflow.
//!
//! The scheme, unchanged from the arithmetic the call sites used before (so every seed that did
//! not overflow derives exactly what it did, and results are bit-identical):
//!
//! - [`derive`]`(seed, k)` = `seed · 1000 + k`: stream `k` of one experiment seed (`mismatch
//!   run`: 1, 3 pair sampling; 2, 4 annotator labels; 5 best-of-n pool; 6 evaluation; 8 RL;
//!   9 DPO).
//! - [`scaled`]`(seed, m, k)` = `seed · m + k`, the same with another multiplier (`seed · 100 + 7`:
//!   the proxy reward-model ensemble; `split_seed · 100 + 3`: the real run's gold RM).
//! - [`offset`]`(seed, i)` = `seed + i`: the i-th of consecutive seeds (ensemble members, chunks,
//!   bootstrap streams, the start seed of experiment seed i).
//! - [`mix`]`(seed, step, stream)`: a SplitMix64 finaliser on a mix of the three, for the training
//!   loops, whose step-s randomness is a function of (seed, s) alone.
//! - [`permutation`]`(n, seed)`: the seeded shuffle of `0..n` (ChaCha8) that batch orders and
//!   data splits are cut from.
//!
//! All arithmetic is modulo 2⁶⁴ (wrapping): a seed near `u64::MAX` derives a valid, if no longer
//! "readable", seed instead of panicking (debug) or silently depending on the build (release).
//! Distinct streams of one seed stay distinct as long as `k < m`.

/// Stream `stream` of seed `seed`: `seed · 1000 + stream`, modulo 2⁶⁴.
pub fn derive(seed: u64, stream: u64) -> u64 {
    scaled(seed, 1000, stream)
}

/// `seed · mul + stream`, modulo 2⁶⁴.
pub fn scaled(seed: u64, mul: u64, stream: u64) -> u64 {
    seed.wrapping_mul(mul).wrapping_add(stream)
}

/// `seed + i`, modulo 2⁶⁴.
pub fn offset(seed: u64, i: u64) -> u64 {
    seed.wrapping_add(i)
}

/// A deterministic 64-bit seed from (seed, step, stream) (SplitMix64 finaliser on a mix), so
/// that every step's randomness is a function of the step alone and resuming needs no RNG state.
pub fn mix(seed: u64, step: u64, stream: u64) -> u64 {
    let mut z = seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded permutation of `0..n`: `0..n` shuffled by a ChaCha8 stream seeded with `seed`, so the
/// same (n, seed) gives the same order on every machine.
pub fn permutation(n: usize, seed: u64) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_the_old_formulas_where_they_did_not_overflow_and_wraps_where_they_did() {
        for seed in [0u64, 1, 4, 42, 1 << 40] {
            for k in 0..10 {
                assert_eq!(derive(seed, k), seed * 1000 + k);
                assert_eq!(scaled(seed, 100, k), seed * 100 + k);
                assert_eq!(offset(seed, k), seed + k);
            }
        }
        let max = u64::MAX;
        assert_eq!(derive(max, 1), max.wrapping_mul(1000).wrapping_add(1));
        assert_eq!(derive(max, 1), 0u64.wrapping_sub(999));
        assert_eq!(scaled(max, 100, 7), 0u64.wrapping_sub(93));
        assert_eq!(offset(max, 1), 0);
        // Distinct streams of the largest seed stay distinct.
        let s: std::collections::BTreeSet<u64> = (0..10).map(|k| derive(max, k)).collect();
        assert_eq!(s.len(), 10);
        // mix: the SplitMix64 finaliser (values fixed: resumed runs depend on them).
        assert_eq!(mix(0, 0, 0), 0);
        assert_ne!(mix(max, max, max), mix(max, max, 0));
    }
}
