//! Element-wise maths written so that the loops using it vectorise: a rational `tanh`, a
//! polynomial `exp` (libm's `expf` is a scalar call, with a slow path for every result that
//! underflows, as a causal mask's do), and reductions that keep [`LANES`] partial sums — one
//! AVX register of f32 — instead of one serial chain of dependent adds (a 64-wide row sum is
//! 64 × 4 cycles of latency serially, ≈ 10 cycles in lanes).
//!
//! The reductions fix their order (lane `i` takes elements `i, i + 8, …`, then the lanes are
//! added pairwise), so results never depend on the machine or the thread count.

use candle_core::WithDType;

/// Partial sums per reduction: 8 × f32 fill a 256-bit register.
pub const LANES: usize = 8;

#[inline(always)]
fn fold_lanes<T: WithDType>(acc: [T; LANES]) -> T {
    ((acc[0] + acc[4]) + (acc[2] + acc[6])) + ((acc[1] + acc[5]) + (acc[3] + acc[7]))
}

/// `Σ_i f(x_i)` in [`LANES`] partial sums.
#[inline(always)]
pub fn sum_map<T: WithDType>(x: &[T], f: impl Fn(T) -> T) -> T {
    let mut acc = [T::zero(); LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] += f(c[i]);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(v);
    }
    fold_lanes(acc)
}

/// `Σ_i x_i` in [`LANES`] partial sums.
#[inline(always)]
pub fn sum<T: WithDType>(x: &[T]) -> T {
    sum_map(x, |v| v)
}

/// `Σ_i a_i b_i` in [`LANES`] partial sums (over the shorter of the two).
#[inline(always)]
pub fn dot<T: WithDType>(a: &[T], b: &[T]) -> T {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [T::zero(); LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i];
        }
    }
    for ((s, &x), &y) in acc.iter_mut().zip(ca.remainder()).zip(cb.remainder()) {
        *s += x * y;
    }
    fold_lanes(acc)
}

/// The largest element of a non-empty `x`. Like a serial `if v > m { v } else { m }` fold from
/// `x[0]`, it skips a NaN unless the NaN is `x[0]`; a softmax still turns any NaN into NaNs
/// through `exp(x − max)`.
#[inline(always)]
pub fn max<T: Copy + PartialOrd>(x: &[T]) -> T {
    let mut acc = [x[0]; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for i in 0..LANES {
            acc[i] = if c[i] > acc[i] { c[i] } else { acc[i] };
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = if v > *a { v } else { *a };
    }
    acc.iter().fold(acc[0], |m, &v| if v > m { v } else { m })
}

/// `tanh` as Eigen's `generic_fast_tanh_float`: a [13/6] rational approximation on
/// [−7.905, 7.905] (beyond which f32 `tanh` is ±1), within a few ulp of libm.
/// Branch-free apart from the clamp, so loops over it vectorise.
#[inline(always)]
pub fn fast_tanh(x: f32) -> f32 {
    const A1: f32 = 4.893_524_6e-3;
    const A3: f32 = 6.372_619_3e-4;
    const A5: f32 = 1.485_722_4e-5;
    const A7: f32 = 5.122_297e-8;
    const A9: f32 = -8.604_672e-11;
    const A11: f32 = 2.000_188e-13;
    const A13: f32 = -2.760_768_5e-16;
    const B0: f32 = 4.893_525e-3;
    const B2: f32 = 2.268_434_6e-3;
    const B4: f32 = 1.185_347e-4;
    const B6: f32 = 1.198_258_4e-6;
    let x = x.clamp(-7.905_311, 7.905_311);
    let x2 = x * x;
    let p = x2 * A13 + A11;
    let p = x2 * p + A9;
    let p = x2 * p + A7;
    let p = x2 * p + A5;
    let p = x2 * p + A3;
    let p = x2 * p + A1;
    let p = x * p;
    let q = x2 * B6 + B4;
    let q = x2 * q + B2;
    let q = x2 * q + B0;
    p / q
}

/// `exp` for f32, as Cephes' `expf`: `x = n ln 2 + r` with `n = round(x / ln 2)` and
/// `|r| ≤ ln 2 / 2` (ln 2 split in two so `r` is exact), `e^r` by a degree-7 polynomial,
/// `2^n` written into the exponent bits. Within 1 ulp of the exact value over the normal
/// range; 0 below `ln(2^-126)` (where libm returns subnormals under 1.2e-38), `+∞` above
/// 88.376 ≈ `ln(2^127.5)` (libm's results there, 2.4e38 to 3.4e38, are the last f32 decade),
/// NaN for NaN. Branch-free selects, so loops over it vectorise.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 355/512: exact, and n·LN2_HI is exact for |n| ≤ 2^9
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
    const MIN: f32 = -87.336_55; // ln(2^-126): smallest normal result
    const MAX: f32 = 88.376; // ln(2^127.5): above it n would round to 128 (no f32 exponent)
                             // 1.5·2^23: adding it rounds to an integer (to nearest, ties even) held in the low bits.
    const SHIFTER: f32 = 12_582_912.0;
    let xc = x.clamp(MIN, MAX);
    let t = xc * LOG2E + SHIFTER;
    let n = t - SHIFTER;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let er = p * (r * r) + r + 1.0;
    // The integer n sits in t's low mantissa bits (offset by SHIFTER's 0x4B40_0000).
    let k = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits(((k + 127) as u32) << 23);
    // Zero the scale, not the product: `er · 2^-126` is subnormal for er < 1, and a subnormal
    // result costs a microcode assist (~100 cycles) — on every masked score of an attention row.
    let scale = if x < MIN { 0.0 } else { scale };
    let y = er * scale;
    if x > MAX {
        f32::INFINITY
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ulps(a: f32, exact: f64) -> f64 {
        let ulp = (exact as f32).abs() * f32::EPSILON;
        ((a as f64 - exact) / ulp as f64).abs()
    }

    #[test]
    fn fast_tanh_is_within_a_few_ulp_of_libm() {
        let mut worst = 0f32;
        for i in -200_000..=200_000 {
            let x = i as f32 * 1e-4;
            worst = worst.max((fast_tanh(x) - x.tanh()).abs());
        }
        assert!(worst < 5e-7, "max abs error {worst}");
        assert_eq!(fast_tanh(100.0), 1.0);
        assert_eq!(fast_tanh(-100.0), -1.0);
    }

    #[test]
    fn fast_exp_is_within_one_ulp_over_the_normal_range() {
        let mut worst = 0f64;
        let mut at = 0f32;
        // Every 1e-3 over the range, plus points around each multiple of ln 2 / 2 where the
        // reduction switches n.
        let mut xs: Vec<f32> = (-87_336..=88_376).map(|i| i as f32 * 1e-3).collect();
        xs.extend((-252..=254).flat_map(|k| {
            let c = k as f32 * std::f32::consts::LN_2 / 2.0;
            [c, f32::from_bits(c.to_bits() + 1), f32::from_bits(c.to_bits().wrapping_sub(1))]
        }));
        for x in xs.into_iter().filter(|x| (-87.3..=88.3).contains(x)) {
            let e = ulps(fast_exp(x), (x as f64).exp());
            if e > worst {
                (worst, at) = (e, x);
            }
        }
        assert!(worst <= 1.0, "worst {worst} ulp at x = {at}");
        assert_eq!(fast_exp(0.0), 1.0);
        assert_eq!(fast_exp(1.0), std::f32::consts::E);
    }

    #[test]
    fn fast_exp_tails_and_nan() {
        assert_eq!(fast_exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(fast_exp(-1e30), 0.0);
        assert_eq!(fast_exp(-100.0), 0.0);
        assert_eq!(fast_exp(f32::INFINITY), f32::INFINITY);
        assert_eq!(fast_exp(89.0), f32::INFINITY);
        assert!(fast_exp(f32::NAN).is_nan());
        // Just inside the clamps: finite, normal, and close to exp.
        let lo = fast_exp(-87.3);
        assert!(lo.is_normal() && ulps(lo, (-87.3f32 as f64).exp()) <= 2.0);
        let hi = fast_exp(88.3);
        assert!(hi.is_finite() && ulps(hi, (88.3f32 as f64).exp()) <= 2.0);
    }

    #[test]
    fn lane_reductions_match_their_definitions() {
        // Integers in f64 add exactly in any order, so the lane sums must equal the serial ones.
        for n in [1usize, 3, 8, 9, 17, 64, 100] {
            let x: Vec<f64> = (0..n).map(|i| ((i * 37 + 11) % 23) as f64 - 9.0).collect();
            let y: Vec<f64> = (0..n).map(|i| ((i * 13 + 5) % 7) as f64 - 3.0).collect();
            assert_eq!(sum(&x), x.iter().sum::<f64>(), "n = {n}");
            assert_eq!(sum_map(&x, |v| v * v), x.iter().map(|v| v * v).sum::<f64>());
            assert_eq!(dot(&x, &y), x.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>());
            assert_eq!(max(&x), x.iter().copied().fold(f64::MIN, f64::max));
        }
        // The order is fixed: lane i takes elements i, i + 8, …, then lanes add pairwise.
        let x: Vec<f32> = (0..19).map(|i| 1.0 + i as f32 * 1e-7).collect();
        let mut lanes = [0f32; LANES];
        for (i, v) in x.iter().enumerate() {
            lanes[i % LANES] += v;
        }
        let want = ((lanes[0] + lanes[4]) + (lanes[2] + lanes[6])) + ((lanes[1] + lanes[5]) + (lanes[3] + lanes[7]));
        assert_eq!(sum(&x).to_bits(), want.to_bits());
        assert_eq!(max(&[f32::NEG_INFINITY, -3.0, f32::NEG_INFINITY]), -3.0);
    }
}
