//! The kernels' element types ([`Real`]: f32, f64) and the branch-free f32 `exp` and `tanh` that
//! let their loops vectorise.

use super::*;

/// Element types of the kernels: f64 uses libm; f32 uses the rational `tanh` and the
/// polynomial `exp` below ([`fast_tanh`], [`fast_exp`]), which the compiler vectorises.
pub trait Real: WithDType + Send + Sync {
    fn sqrt_(self) -> Self;
    fn tanh_(self) -> Self;
    fn exp_(self) -> Self;
}
impl Real for f64 {
    fn sqrt_(self) -> Self {
        self.sqrt()
    }
    fn tanh_(self) -> Self {
        self.tanh()
    }
    fn exp_(self) -> Self {
        self.exp()
    }
}
impl Real for f32 {
    fn sqrt_(self) -> Self {
        self.sqrt()
    }
    fn tanh_(self) -> Self {
        fast_tanh(self)
    }
    fn exp_(self) -> Self {
        fast_exp(self)
    }
}

/// `exp` for f32 as Cephes' `expf`: `x = n ln 2 + r` with `n = round(x / ln 2)` and
/// `|r| ≤ ln 2 / 2` (ln 2 split in two so that `r` is exact), `e^r` by a degree-7
/// polynomial, `2^n` written into the exponent bits. Within 1 ulp of the exact value over
/// the normal range (test); 0 below `ln 2^-126`, where libm returns subnormals under
/// 1.2e-38; `+∞` above 88.376 ≈ `ln 2^127.5`; NaN for NaN. Branch-free, so loops over it
/// vectorise: libm's `expf` is a scalar call, with a slow path for every result that
/// underflows, as every masked attention score's (−1e9) does.
#[inline(always)]
pub fn fast_exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 355/512: n·LN2_HI is exact for |n| ≤ 2^9
    const LN2_LO: f32 = -2.121_944_4e-4; // ln 2 − LN2_HI
    const MIN: f32 = -87.336_55; // ln 2^-126: the smallest normal result
    const MAX: f32 = 88.376; // ln 2^127.5: above it n rounds to 128, past f32's exponents
    const SHIFTER: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer in the low bits
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
    let k = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    let scale = f32::from_bits(((k + 127) as u32) << 23);
    // Zero the scale, not the product: `er · 2^-126` is subnormal for er < 1, and a
    // subnormal result costs a microcode assist (~100 cycles).
    let scale = if x < MIN { 0.0 } else { scale };
    let y = er * scale;
    if x > MAX {
        f32::INFINITY
    } else {
        y
    }
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
