//! The one statistics module: every interval mismatch reports comes from here.
//!
//! - **Percentile bootstrap** (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993,
//!   ch. 13): resample the data with replacement B = [`RESAMPLES`] times, recompute the
//!   statistic, take the 2.5% and 97.5% quantiles of the replicates (linear interpolation between
//!   order statistics, Hyndman & Fan type 7, numpy's default) as the 95% interval.
//! - **BCa bootstrap** (Efron 1987, "Better Bootstrap Confidence Intervals", JASA 82; Efron &
//!   Tibshirani 1993, §14.3): the percentile interval taken at corrected levels
//!   `α₁ = Φ(ẑ₀ + (ẑ₀ + z_{α})/(1 − â(ẑ₀ + z_{α})))`, `α₂` the same with `z_{1−α}`, where the
//!   bias correction `ẑ₀ = Φ⁻¹((#{θ*_b < θ̂} + #{θ*_b ≤ θ̂})/2B)` (ties count half, as in
//!   scipy.stats.bootstrap, which matters for discrete statistics such as accuracies) and the acceleration
//!   `â = Σᵢ(θ̄₍.₎ − θ₍ᵢ₎)³ / (6 [Σᵢ(θ̄₍.₎ − θ₍ᵢ₎)²]^{3/2})` from the jackknife values `θ₍ᵢ₎`.
//!   Second-order accurate, so better than the percentile interval for skewed or bounded
//!   statistics such as an accuracy near 1.
//! - **Clustered two-stage bootstrap** (Davison & Hinkley, "Bootstrap Methods and their
//!   Application", 1997, §3.8; Field & Welsh 2007): draw clusters with replacement, then units
//!   inside each drawn cluster, so the interval carries the between-cluster (run-to-run) spread.
//! - **Stratified bootstrap** (Davison & Hinkley 1997, §3.7): resample within each stratum, so
//!   every stratum keeps its size (RewardBench sections weighted by subset).
//! - **Student-t interval** for a handful of seeds: `x̄ ± t_{0.975, n−1} · s/√n`, s the sample
//!   standard deviation (divisor n − 1).
//! - **Normal interval** for a batch mean: `x̄ ± 1.96 · s/√n`.
//!
//! Resampling draws from a ChaCha8 stream seeded by `seed`, n uniform indices per resample in
//! order, so an interval is reproducible bit for bit. Non-finite inputs are not dropped: they
//! make the interval NaN, so a bad value stays visible.

use crate::rank::spearman;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Number of bootstrap resamples.
pub const RESAMPLES: usize = 2000;

/// A point estimate with a 95% interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ci {
    /// The point estimate on the full data (the mean, mean difference, or Spearman's ρ).
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    /// Sample size (number of values, or of pairs).
    pub n: usize,
}

impl Ci {
    /// An estimate without spread (lo = hi = the estimate).
    pub fn point(mean: f64, n: usize) -> Ci {
        Ci { mean, lo: mean, hi: mean, n }
    }

    /// `"0.512 [0.480, 0.545]"` with `decimals` decimals.
    pub fn fmt(&self, decimals: usize) -> String {
        format!("{:.p$} [{:.p$}, {:.p$}]", self.mean, self.lo, self.hi, p = decimals)
    }

    /// Whether the interval excludes `v` (e.g. 0 for "a real change").
    pub fn excludes(&self, v: f64) -> bool {
        v < self.lo || v > self.hi
    }
}

/// Arithmetic mean (NaN for no values).
pub fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample variance, divisor n − 1 (NaN for fewer than two values).
pub fn variance(xs: &[f64]) -> f64 {
    let m = mean(xs);
    xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() as f64 - 1.0)
}

/// The logistic function σ(x) = 1/(1 + e⁻ˣ), the link of the Bradley-Terry and logistic
/// likelihoods, computed without overflow on either side.
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// ln(1 + eˣ) = −ln σ(−x), without overflow.
pub fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

/// Type-7 quantile of sorted values: interpolates at position `p (m − 1)`; NaN when empty.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 < sorted.len() {
        sorted[i] + frac * (sorted[i + 1] - sorted[i])
    } else {
        sorted[i]
    }
}

/// Resamples of the indices `0..n` with replacement: each [`Resampler::draw`] takes n uniform
/// indices, in order, from one ChaCha8 stream seeded once.
pub struct Resampler {
    rng: ChaCha8Rng,
    idx: Vec<usize>,
}

impl Resampler {
    pub fn new(n: usize, seed: u64) -> Self {
        Resampler { rng: ChaCha8Rng::seed_from_u64(seed), idx: vec![0; n] }
    }

    /// The next resample (n indices).
    pub fn draw(&mut self) -> &[usize] {
        let n = self.idx.len();
        for k in self.idx.iter_mut() {
            *k = self.rng.random_range(0..n);
        }
        &self.idx
    }
}

/// The percentile interval of bootstrap replicates around `point`: non-finite replicates (e.g. a
/// correlation of a constant resample) are left out; if none is finite the interval is NaN.
pub fn percentile_ci(point: f64, n: usize, mut boots: Vec<f64>) -> Ci {
    boots.retain(|b| b.is_finite());
    if boots.is_empty() {
        return Ci { mean: point, lo: f64::NAN, hi: f64::NAN, n };
    }
    boots.sort_by(|a, b| a.total_cmp(b));
    Ci { mean: point, lo: quantile(&boots, 0.025), hi: quantile(&boots, 0.975), n }
}

/// `resamples` replicates of `stat` over resamples of the indices `0..n`.
pub fn replicates(n: usize, resamples: usize, seed: u64, stat: impl Fn(&[usize]) -> f64) -> Vec<f64> {
    let mut r = Resampler::new(n, seed);
    (0..resamples).map(|_| stat(r.draw())).collect()
}

/// Percentile interval of `stat` over [`RESAMPLES`] resamples of the indices `0..n`.
pub fn bootstrap(n: usize, seed: u64, point: f64, stat: impl Fn(&[usize]) -> f64) -> Ci {
    percentile_ci(point, n, replicates(n, RESAMPLES, seed, stat))
}

/// Mean with a percentile-bootstrap 95% CI. For n < 2, lo = hi = mean (NaN for n = 0).
pub fn mean_ci(xs: &[f64], seed: u64) -> Ci {
    let n = xs.len();
    let m = mean(xs);
    if n < 2 || !m.is_finite() {
        return Ci::point(m, n);
    }
    bootstrap(n, seed, m, |idx| idx.iter().map(|&i| xs[i]).sum::<f64>() / n as f64)
}

/// Standard normal CDF Φ(x) = erfc(−x/√2)/2.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Standard normal quantile Φ⁻¹(p): Acklam's rational approximation (relative error 1.15e-9)
/// refined by one Halley step on Φ, which brings it to about machine precision.
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383_577_518_672_69e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    let x = if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    };
    let e = normal_cdf(x) - p;
    let u = e * (2.0 * std::f64::consts::PI).sqrt() * (x * x / 2.0).exp();
    x - u / (1.0 + x * u / 2.0)
}

/// The BCa 95% interval from the point estimate, its bootstrap replicates and its jackknife
/// values (module doc). When the replicates are all equal the interval is the point; when the
/// point lies outside every replicate (ẑ₀ infinite) BCa is undefined and the percentile interval
/// is returned. Non-finite replicates are left out.
pub fn bca_interval(point: f64, n: usize, boots: Vec<f64>, jackknife: &[f64]) -> Ci {
    let mut boots: Vec<f64> = boots.into_iter().filter(|b| b.is_finite()).collect();
    if boots.is_empty() || !point.is_finite() || jackknife.iter().any(|j| !j.is_finite()) {
        return Ci { mean: point, lo: f64::NAN, hi: f64::NAN, n };
    }
    boots.sort_by(|a, b| a.total_cmp(b));
    if boots[0] == boots[boots.len() - 1] {
        return Ci::point(point, n);
    }
    let below = boots.iter().filter(|&&b| b < point).count() + boots.iter().filter(|&&b| b <= point).count();
    let below = below as f64 / (2 * boots.len()) as f64;
    let z0 = normal_quantile(below);
    if !z0.is_finite() {
        return percentile_ci(point, n, boots);
    }
    let jm = mean(jackknife);
    let (num, den) = jackknife.iter().fold((0.0, 0.0), |(s3, s2), j| (s3 + (jm - j).powi(3), s2 + (jm - j).powi(2)));
    let a = if den > 0.0 { num / (6.0 * den.powf(1.5)) } else { 0.0 };
    let level = |z: f64| normal_cdf(z0 + (z0 + z) / (1.0 - a * (z0 + z)));
    let (za, zb) = (normal_quantile(0.025), normal_quantile(0.975));
    Ci { mean: point, lo: quantile(&boots, level(za)), hi: quantile(&boots, level(zb)), n }
}

/// Mean with a BCa 95% CI over [`RESAMPLES`] resamples (the same resamples as [`mean_ci`] with
/// this seed); the jackknife values of the mean are `(Σx − xᵢ)/(n − 1)`. For n < 2,
/// lo = hi = mean (NaN for n = 0).
pub fn bca_mean_ci(xs: &[f64], seed: u64) -> Ci {
    let n = xs.len();
    let m = mean(xs);
    if n < 2 || !m.is_finite() {
        return Ci::point(m, n);
    }
    let total: f64 = xs.iter().sum();
    let jack: Vec<f64> = xs.iter().map(|x| (total - x) / (n - 1) as f64).collect();
    let boots = replicates(n, RESAMPLES, seed, |idx| idx.iter().map(|&i| xs[i]).sum::<f64>() / n as f64);
    bca_interval(m, n, boots, &jack)
}

/// Share of `true` with a BCa 95% CI (accuracy, win rate). NaN for no outcomes.
pub fn proportion_ci(hits: &[bool], seed: u64) -> Ci {
    let xs: Vec<f64> = hits.iter().map(|&h| h as u8 as f64).collect();
    bca_mean_ci(&xs, seed)
}

/// Mean with a normal-approximation 95% CI, `x̄ ± 1.96·s/√n` (for a batch of samples, where
/// the sample is large). For n = 1, lo = hi = mean; for n = 0 all NaN.
pub fn normal_ci(xs: &[f64]) -> Ci {
    let n = xs.len();
    if n == 0 {
        return Ci { mean: f64::NAN, lo: f64::NAN, hi: f64::NAN, n };
    }
    let nf = n as f64;
    let m = mean(xs);
    if n < 2 {
        return Ci::point(m, n);
    }
    let half = 1.96 * (variance(xs) / nf).sqrt();
    Ci { mean: m, lo: m - half, hi: m + half, n }
}

/// Two-sided 95% critical values t_{0.975, df} for df = 1..=30 (standard tables, e.g. NIST/SEMATECH
/// e-Handbook §1.3.6.7.2).
const T_975: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
    2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// t_{0.975, df}: the table for df ≤ 30, then the df = 40, 60, 120 rows used conservatively (the
/// value for the largest tabulated df not above `df`), then the normal 1.96.
pub fn t_critical(df: usize) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T_975[df - 1],
        31..=39 => 2.042,
        40..=59 => 2.021,
        60..=119 => 2.000,
        120..=999 => 1.980,
        _ => 1.960,
    }
}

/// Student-t 95% interval for the mean, for spreads over a few seeds:
/// `x̄ ± t_{0.975, n−1} · s/√n`. For n < 2, lo = hi = mean (NaN for n = 0).
pub fn t_ci(xs: &[f64]) -> Ci {
    let n = xs.len();
    let m = mean(xs);
    if n < 2 {
        return Ci::point(m, n);
    }
    let half = t_critical(n - 1) * (variance(xs) / n as f64).sqrt();
    Ci { mean: m, lo: m - half, hi: m + half, n }
}

/// Spearman's ρ between paired `x` and `y` (e.g. training reward and gold score across
/// checkpoints) with a 95% CI from resampling the pairs. For n < 2, lo = hi = ρ.
///
/// Panics if `x` and `y` differ in length (a caller bug, not bad input).
pub fn spearman_ci(x: &[f64], y: &[f64], seed: u64) -> Ci {
    assert_eq!(x.len(), y.len(), "spearman_ci: x and y must be paired");
    let n = x.len();
    let rho = if n == 0 { f64::NAN } else { spearman(x, y) };
    if n < 2 || x.iter().chain(y).any(|v| !v.is_finite()) {
        return Ci::point(rho, n);
    }
    bootstrap(n, seed, rho, |idx| {
        let xs: Vec<f64> = idx.iter().map(|&i| x[i]).collect();
        let ys: Vec<f64> = idx.iter().map(|&i| y[i]).collect();
        spearman(&xs, &ys)
    })
}

/// Mean paired difference `a[i] − b[i]` with a percentile-bootstrap 95% CI (pairs resampled
/// together). `diff_ci(before, after, seed)` reads as "fell by mean [lo, hi]".
///
/// Panics if `a` and `b` differ in length (a caller bug, not bad input).
pub fn diff_ci(a: &[f64], b: &[f64], seed: u64) -> Ci {
    assert_eq!(a.len(), b.len(), "diff_ci: a and b must be paired");
    let d: Vec<f64> = a.iter().zip(b).map(|(a, b)| a - b).collect();
    mean_ci(&d, seed)
}

/// Mean paired difference `a − b` over clustered pairs (e.g. prompts within independent seeds),
/// with a two-stage percentile-bootstrap 95% CI: each resample draws the clusters with
/// replacement and then, inside each drawn cluster, its pairs with replacement. Unlike
/// [`diff_ci`] on the pooled pairs, the interval carries the run-to-run spread of the clusters,
/// which dominates when each cluster is one training run. The point estimate is the mean over
/// all pairs; `n` counts pairs.
///
/// Panics if a cluster's `a` and `b` differ in length (a caller bug, not bad input).
pub fn clustered_diff_ci(clusters: &[(Vec<f64>, Vec<f64>)], seed: u64) -> Ci {
    let diffs: Vec<Vec<f64>> = clusters
        .iter()
        .map(|(a, b)| {
            assert_eq!(a.len(), b.len(), "clustered_diff_ci: a and b must be paired");
            a.iter().zip(b).map(|(a, b)| a - b).collect()
        })
        .filter(|d: &Vec<f64>| !d.is_empty())
        .collect();
    let n: usize = diffs.iter().map(Vec::len).sum();
    let m = diffs.iter().flatten().sum::<f64>() / n as f64;
    if n < 2 || !m.is_finite() {
        return Ci::point(m, n);
    }
    let k = diffs.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut boots = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        let (mut sum, mut count) = (0.0, 0usize);
        for _ in 0..k {
            let d = &diffs[rng.random_range(0..k)];
            for _ in 0..d.len() {
                sum += d[rng.random_range(0..d.len())];
            }
            count += d.len();
        }
        boots.push(sum / count as f64);
    }
    percentile_ci(m, n, boots)
}

/// [`RESAMPLES`] stratified resamples: for each resample, each stratum (of the given sizes, in
/// order) is resampled within itself, `sizes[s]` indices into `0..sizes[s]`, and `stat` sees the
/// per-stratum index lists. Returns the replicates of each of `stat`'s outputs.
pub fn stratified_replicates(
    sizes: &[usize],
    seed: u64,
    mut stat: impl FnMut(&[Vec<usize>]) -> Vec<f64>,
) -> Vec<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut idx: Vec<Vec<usize>> = sizes.iter().map(|&s| vec![0; s]).collect();
    let mut out: Vec<Vec<f64>> = Vec::new();
    for _ in 0..RESAMPLES {
        for (v, &s) in idx.iter_mut().zip(sizes) {
            for k in v.iter_mut() {
                *k = rng.random_range(0..s);
            }
        }
        let vals = stat(&idx);
        out.resize(vals.len(), Vec::with_capacity(RESAMPLES));
        for (o, v) in out.iter_mut().zip(vals) {
            o.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// By hand: xs = (1, 2, 3, 4, 5): mean 3, s² = (4+1+0+1+4)/4 = 2.5, s/√n = √0.5 =
    /// 0.70710678, t_{0.975,4} = 2.776, half-width 2.776·0.70710678 = 1.96292842.
    #[test]
    fn t_interval_by_hand() {
        let ci = t_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]);
        assert_eq!(ci.mean, 3.0);
        assert!((ci.lo - 1.03707158).abs() < 1e-8, "{ci:?}");
        assert!((ci.hi - 4.96292842).abs() < 1e-8, "{ci:?}");
        assert_eq!(ci.n, 5);
        // Two seeds: mean 0.5, s = √0.5, s/√2 = 0.5, t_{0.975,1} = 12.706.
        let ci = t_ci(&[0.0, 1.0]);
        assert!((ci.lo - (0.5 - 6.353)).abs() < 1e-12 && (ci.hi - (0.5 + 6.353)).abs() < 1e-12);
        assert_eq!(t_ci(&[2.0]), Ci { mean: 2.0, lo: 2.0, hi: 2.0, n: 1 });
        assert!(t_ci(&[]).mean.is_nan());
        assert_eq!(t_critical(30), 2.042);
        assert_eq!(t_critical(45), 2.021);
        assert_eq!(t_critical(5000), 1.96);
    }

    /// By hand: (1, 2, 3, 4): mean 2.5, s² = 5/3, half-width 1.96·√(5/12) = 1.26515.
    #[test]
    fn normal_interval_by_hand() {
        let ci = normal_ci(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(ci.mean, 2.5);
        assert!((ci.hi - 2.5 - 1.96 * (5.0f64 / 12.0).sqrt()).abs() < 1e-12);
        assert!((ci.lo - 2.5 + 1.96 * (5.0f64 / 12.0).sqrt()).abs() < 1e-12);
        assert_eq!(normal_ci(&[3.0]), Ci::point(3.0, 1));
        assert!(normal_ci(&[]).lo.is_nan());
    }

    #[test]
    fn quantile_interpolates() {
        let s = [0.0, 10.0, 20.0, 30.0, 40.0];
        assert_eq!(quantile(&s, 0.0), 0.0);
        assert_eq!(quantile(&s, 1.0), 40.0);
        assert_eq!(quantile(&s, 0.5), 20.0);
        assert_eq!(quantile(&s, 0.1), 4.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    /// Values from scipy.stats.norm (cdf / ppf), 16 digits.
    #[test]
    fn normal_cdf_and_quantile_match_scipy() {
        assert!((normal_cdf(1.959963984540054) - 0.975).abs() < 1e-15);
        assert!((normal_cdf(-1.0) - 0.15865525393145707).abs() < 1e-15);
        assert!((normal_quantile(0.975) - 1.959963984540054).abs() < 1e-13);
        assert!((normal_quantile(0.001) - -3.090232306167813).abs() < 1e-12);
        assert!((normal_quantile(0.3) - -0.5244005127080409).abs() < 1e-13);
        assert_eq!(normal_quantile(0.5), 0.0);
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert!(normal_quantile(1.5).is_nan());
    }

    #[test]
    fn bootstrap_is_deterministic_and_contains_the_mean() {
        let xs: Vec<f64> = (0..40).map(|i| ((i * 37) % 11) as f64 * 0.3 - 1.0).collect();
        let a = mean_ci(&xs, 7);
        assert_eq!(a, mean_ci(&xs, 7), "same seed, same interval");
        assert_ne!(a, mean_ci(&xs, 8), "another seed resamples differently");
        assert!(a.lo < a.mean && a.mean < a.hi, "{a:?}");
        assert_eq!(a.mean, mean(&xs));
        // For n = 40 the bootstrap interval is close to the t interval (same data, same level).
        let t = t_ci(&xs);
        let (wb, wt) = (a.hi - a.lo, t.hi - t.lo);
        assert!((wb / wt - 1.0).abs() < 0.15, "bootstrap width {wb} vs t width {wt}");
    }

    #[test]
    fn degenerate_samples() {
        assert_eq!(mean_ci(&[4.0], 0), Ci { mean: 4.0, lo: 4.0, hi: 4.0, n: 1 });
        assert_eq!(mean_ci(&[2.0; 6], 0), Ci { mean: 2.0, lo: 2.0, hi: 2.0, n: 6 });
        let e = mean_ci(&[], 0);
        assert!(e.mean.is_nan() && e.n == 0);
        let bad = mean_ci(&[1.0, f64::NAN, 2.0], 0);
        assert!(bad.mean.is_nan() && bad.lo.is_nan(), "NaN must not be hidden");
        assert_eq!(proportion_ci(&[true; 9], 0), Ci::point(1.0, 9));
        assert!(proportion_ci(&[], 0).mean.is_nan());
    }

    #[test]
    fn spearman_interval() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let up = [0.1, 0.3, 0.2, 0.5, 0.9, 1.4];
        let c = spearman_ci(&x, &[1.0, 4.0, 9.0, 16.0, 25.0, 36.0], 3);
        // Every resample of a monotone relation with two distinct x values has ρ = 1 (constant
        // resamples give NaN and are left out).
        assert_eq!((c.mean, c.lo, c.hi, c.n), (1.0, 1.0, 1.0, 6));
        let c = spearman_ci(&x, &[6.0, 5.0, 4.0, 3.0, 2.0, 1.0], 3);
        assert_eq!((c.mean, c.lo, c.hi), (-1.0, -1.0, -1.0));
        // By hand: ranks of `up` are (1, 3, 2, 4, 5, 6), Σd² = 2, ρ = 1 − 6·2/(6·35) = 0.942857.
        let c = spearman_ci(&x, &up, 3);
        assert!((c.mean - (1.0 - 12.0 / 210.0)).abs() < 1e-12, "{c:?}");
        assert!(c.lo <= c.mean && c.hi <= 1.0 && c.lo > 0.0, "{c:?}");
        assert_eq!(c, spearman_ci(&x, &up, 3));
    }

    #[test]
    fn paired_difference() {
        let before = [1.0, 2.0, 3.0, 4.0];
        let after: Vec<f64> = before.iter().map(|v| v - 0.5).collect();
        let c = diff_ci(&before, &after, 1);
        assert!((c.mean - 0.5).abs() < 1e-12 && (c.lo - 0.5).abs() < 1e-12 && (c.hi - 0.5).abs() < 1e-12);
        // The pairing matters: unpaired, these samples overlap, but every pair fell.
        let after = [0.8, 1.7, 2.9, 3.6];
        let c = diff_ci(&before, &after, 1);
        assert!(c.lo > 0.0 && c.excludes(0.0), "{c:?}");
        assert_eq!(c.fmt(2), format!("{:.2} [{:.2}, {:.2}]", c.mean, c.lo, c.hi));
    }

    /// Clusters whose means differ widen the interval beyond the pooled one; identical clusters
    /// do not; the point estimate is the pooled mean difference; one cluster is the ordinary
    /// paired bootstrap's setting.
    #[test]
    fn clustered_interval_carries_between_cluster_spread() {
        let within: Vec<f64> = (0..40).map(|i| (i % 5) as f64 * 0.1).collect();
        let zeros = vec![0.0; 40];
        let shifted = |c: f64| (within.iter().map(|x| x + c).collect::<Vec<_>>(), zeros.clone());
        let spread = vec![shifted(0.0), shifted(1.0), shifted(2.0)];
        let same = vec![shifted(1.0), shifted(1.0), shifted(1.0)];
        let c_spread = clustered_diff_ci(&spread, 3);
        let c_same = clustered_diff_ci(&same, 3);
        // Pooled mean: within-mean 0.2 plus the mean shift 1.0.
        assert!((c_spread.mean - 1.2).abs() < 1e-12 && (c_same.mean - 1.2).abs() < 1e-12);
        assert_eq!(c_spread.n, 120);
        let pooled_a: Vec<f64> = spread.iter().flat_map(|c| c.0.clone()).collect();
        let pooled = diff_ci(&pooled_a, &vec![0.0; 120], 3);
        assert!(c_spread.hi - c_spread.lo > 3.0 * (pooled.hi - pooled.lo), "{c_spread:?} vs {pooled:?}");
        // Identical clusters: only the within-cluster noise, about the pooled width.
        let w = c_same.hi - c_same.lo;
        assert!(w > 0.02 && w < 0.15, "{c_same:?}");
        assert!(c_same.lo < 1.2 && 1.2 < c_same.hi);
        // Three clusters at 0, 1, 2 (+0.2): a resample can draw the top cluster thrice, so the
        // upper end lies near 2.2 and the lower near 0.2, never beyond.
        assert!(c_spread.lo >= 0.0 && c_spread.hi <= 2.4, "{c_spread:?}");
        assert_eq!(clustered_diff_ci(&spread, 3), c_spread, "seeded: reproducible");
    }

    /// Each stratum is resampled within itself: a stratum of constant values keeps its value in
    /// every replicate, and the replicate count is RESAMPLES.
    #[test]
    fn stratified_resamples_stay_in_their_stratum() {
        let strata = [vec![1.0; 5], vec![0.0, 10.0, 20.0]];
        let reps = stratified_replicates(&[5, 3], 9, |idx| {
            idx.iter().zip(&strata).map(|(ix, s)| ix.iter().map(|&i| s[i]).sum::<f64>() / ix.len() as f64).collect()
        });
        assert_eq!(reps.len(), 2);
        assert_eq!(reps[0].len(), RESAMPLES);
        assert!(reps[0].iter().all(|&v| v == 1.0));
        assert!(reps[1].iter().all(|&v| (0.0..=20.0).contains(&v)));
        assert!(reps[1].iter().any(|&v| v != reps[1][0]));
    }
}
