//! Confidence intervals for report numbers.
//!
//! - Percentile bootstrap (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993, ch. 13):
//!   resample the data with replacement B = 2000 times, recompute the statistic, and take the
//!   2.5% and 97.5% quantiles (linear interpolation between order statistics, Hyndman & Fan
//!   type 7) as the 95% interval. Resampling uses a ChaCha8 stream seeded by `seed`, so an
//!   interval is reproducible bit for bit.
//! - Student-t interval for a handful of seeds: `x̄ ± t_{0.975, n−1} · s / √n` with the sample
//!   standard deviation `s` (divisor n − 1).
//!
//! Non-finite inputs are not dropped: they make the interval NaN, so a bad value stays visible.

use mismatch_reward::eval::spearman;
use rand::{Rng, SeedableRng};
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
    fn point(mean: f64, n: usize) -> Ci {
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

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Type-7 quantile of sorted values: interpolates at position `p (m − 1)`.
fn quantile(sorted: &[f64], p: f64) -> f64 {
    let pos = p * (sorted.len() - 1) as f64;
    let (i, frac) = (pos.floor() as usize, pos - pos.floor());
    if i + 1 < sorted.len() {
        sorted[i] + frac * (sorted[i + 1] - sorted[i])
    } else {
        sorted[i]
    }
}

/// Percentile interval of `stat` over [`RESAMPLES`] resamples of the indices `0..n`. Resamples
/// whose statistic is not finite (e.g. a correlation of a constant resample) are left out; if none
/// is finite the interval is NaN.
fn bootstrap(n: usize, seed: u64, point: f64, stat: impl Fn(&[usize]) -> f64) -> Ci {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut idx = vec![0usize; n];
    let mut boots = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        for k in idx.iter_mut() {
            *k = rng.random_range(0..n);
        }
        let s = stat(&idx);
        if s.is_finite() {
            boots.push(s);
        }
    }
    if boots.is_empty() {
        return Ci { mean: point, lo: f64::NAN, hi: f64::NAN, n };
    }
    boots.sort_by(|a, b| a.total_cmp(b));
    Ci { mean: point, lo: quantile(&boots, 0.025), hi: quantile(&boots, 0.975), n }
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
    let var = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1) as f64;
    let half = t_critical(n - 1) * (var / n as f64).sqrt();
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
/// replacement and then, inside each drawn cluster, its pairs with replacement (Davison &
/// Hinkley, "Bootstrap Methods and their Application", 1997, §3.8; Field & Welsh 2007). Unlike
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
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
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
    boots.sort_by(|a, b| a.total_cmp(b));
    Ci { mean: m, lo: quantile(&boots, 0.025), hi: quantile(&boots, 0.975), n }
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

    #[test]
    fn quantile_interpolates() {
        let s = [0.0, 10.0, 20.0, 30.0, 40.0];
        assert_eq!(quantile(&s, 0.0), 0.0);
        assert_eq!(quantile(&s, 1.0), 40.0);
        assert_eq!(quantile(&s, 0.5), 20.0);
        assert_eq!(quantile(&s, 0.1), 4.0);
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
}
