//! Over-optimisation curves of Gao, Schulman & Hilton, "Scaling Laws for Reward Model
//! Overoptimization" (ICML 2023, arXiv:2210.10760), §3.
//!
//! With d = √KL(π ‖ π_init) and the gold score centred so the initial policy scores 0:
//!
//! - best-of-n: `R_bon(d) = d (α − β d)`
//! - RL:        `R_rl(d)  = d (α − β ln d)`
//!
//! Both pass through R(0) = 0 and are linear in (α, β) for fixed d, so they are fitted by ordinary
//! least squares with no intercept on the features `(d, −d²)` (best-of-n) or `(d, −d ln d)` (RL,
//! with `d ln d → 0` at d = 0). The normal equations are solved through a QR factorisation
//! (modified Gram–Schmidt) rather than inverted, for accuracy when the two features are nearly
//! collinear, as they are on a short d range.
//!
//! The peak: `R_bon' = α − 2βd = 0` at `d* = α / (2β)`; `R_rl' = α − β ln d − β = 0` at
//! `d* = e^{α/β − 1}`. Both are maxima only when β > 0.

use serde::Serialize;

/// Which of the two functional forms a [`Fit`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Form {
    /// `R(d) = d (α − β d)`
    BestOfN,
    /// `R(d) = d (α − β ln d)`
    Rl,
}

impl std::fmt::Display for Form {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Form::BestOfN => "best-of-n",
            Form::Rl => "RL",
        })
    }
}

/// A fitted over-optimisation curve.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    pub form: Form,
    pub alpha: f64,
    pub beta: f64,
    /// `1 − SS_res / SS_tot`, with SS_tot taken around the mean of r (so it can be negative: a
    /// no-intercept curve may fit worse than a constant).
    pub r2: f64,
    /// Argmax of R over d ≥ 0; `None` if β ≤ 0 (no peak: gold keeps rising) or the fit failed.
    /// For best-of-n with α ≤ 0 the curve only falls, so `d* = 0`.
    pub d_star: Option<f64>,
    /// `R(d*)`.
    pub r_star: Option<f64>,
    /// Number of points used (finite r, finite d ≥ 0).
    pub n: usize,
}

impl Fit {
    /// The fitted gold score at `d` (`d ≥ 0`).
    pub fn eval(&self, d: f64) -> f64 {
        match self.form {
            Form::BestOfN => d * (self.alpha - self.beta * d),
            Form::Rl => d * self.alpha - self.beta * x_ln_x(d),
        }
    }

    /// `n` evenly spaced points of the curve on `[0, d_max]`, for plotting.
    pub fn curve(&self, d_max: f64, n: usize) -> (Vec<f64>, Vec<f64>) {
        let n = n.max(2);
        let xs: Vec<f64> = (0..n).map(|i| d_max * i as f64 / (n - 1) as f64).collect();
        let ys = xs.iter().map(|&d| self.eval(d)).collect();
        (xs, ys)
    }

    /// Whether the fit produced numbers (at least two usable points, features not collinear).
    pub fn is_valid(&self) -> bool {
        self.alpha.is_finite() && self.beta.is_finite()
    }
}

/// `d ln d`, extended continuously with 0 at d = 0.
fn x_ln_x(d: f64) -> f64 {
    if d == 0.0 {
        0.0
    } else {
        d * d.ln()
    }
}

/// Fits `R(d) = d (α − β d)` (best-of-n). Points with a non-finite value or d < 0 are skipped.
pub fn fit_bon(d: &[f64], r: &[f64]) -> Fit {
    fit(Form::BestOfN, d, r)
}

/// Fits `R(d) = d (α − β ln d)` (RL). Points with a non-finite value or d < 0 are skipped.
pub fn fit_rl(d: &[f64], r: &[f64]) -> Fit {
    fit(Form::Rl, d, r)
}

fn fit(form: Form, d: &[f64], r: &[f64]) -> Fit {
    assert_eq!(d.len(), r.len(), "fit: d and r must have the same length");
    let pts: Vec<(f64, f64)> =
        d.iter().zip(r).filter(|(d, r)| d.is_finite() && r.is_finite() && **d >= 0.0).map(|(&d, &r)| (d, r)).collect();
    let n = pts.len();
    let failed = Fit { form, alpha: f64::NAN, beta: f64::NAN, r2: f64::NAN, d_star: None, r_star: None, n };
    if n < 2 {
        return failed;
    }
    let f1: Vec<f64> = pts.iter().map(|p| p.0).collect();
    let f2: Vec<f64> = pts
        .iter()
        .map(|p| match form {
            Form::BestOfN => -p.0 * p.0,
            Form::Rl => -x_ln_x(p.0),
        })
        .collect();
    let y: Vec<f64> = pts.iter().map(|p| p.1).collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();

    // X = [f1 f2] = Q R with R = [[r11, r12], [0, r22]]; then R (α, β)ᵀ = Qᵀ y.
    let r11 = dot(&f1, &f1).sqrt();
    if r11 == 0.0 {
        return failed;
    }
    let q1: Vec<f64> = f1.iter().map(|v| v / r11).collect();
    let r12 = dot(&q1, &f2);
    let resid: Vec<f64> = f2.iter().zip(&q1).map(|(v, q)| v - r12 * q).collect();
    let r22 = dot(&resid, &resid).sqrt();
    if r22 <= 1e-12 * dot(&f2, &f2).sqrt() {
        return failed;
    }
    let q2: Vec<f64> = resid.iter().map(|v| v / r22).collect();
    let beta = dot(&q2, &y) / r22;
    let alpha = (dot(&q1, &y) - r12 * beta) / r11;

    let mut out = Fit { form, alpha, beta, r2: f64::NAN, d_star: None, r_star: None, n };
    let mean = y.iter().sum::<f64>() / n as f64;
    let ss_tot: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let ss_res: f64 = pts.iter().map(|&(d, r)| (r - out.eval(d)).powi(2)).sum();
    out.r2 = 1.0 - ss_res / ss_tot;
    if beta > 0.0 {
        let ds = match form {
            Form::BestOfN => (alpha / (2.0 * beta)).max(0.0),
            Form::Rl => (alpha / beta - 1.0).exp(),
        };
        if ds.is_finite() {
            out.d_star = Some(ds);
            out.r_star = Some(out.eval(ds));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_exact_bon_parameters() {
        let (a, b) = (1.7, 0.35);
        let d: Vec<f64> = (0..12).map(|i| 0.4 * i as f64).collect();
        let r: Vec<f64> = d.iter().map(|d| d * (a - b * d)).collect();
        let f = fit_bon(&d, &r);
        assert!((f.alpha - a).abs() < 1e-9 && (f.beta - b).abs() < 1e-9, "{f:?}");
        assert!((f.r2 - 1.0).abs() < 1e-9);
        assert!((f.d_star.unwrap() - a / (2.0 * b)).abs() < 1e-9);
        assert!((f.r_star.unwrap() - a * a / (4.0 * b)).abs() < 1e-9);
        assert_eq!(f.n, 12);
    }

    #[test]
    fn recovers_exact_rl_parameters() {
        let (a, b) = (0.9, 0.4);
        let d: Vec<f64> = (0..15).map(|i| 0.5 * i as f64).collect();
        let r: Vec<f64> = d.iter().map(|&d| if d == 0.0 { 0.0 } else { d * (a - b * d.ln()) }).collect();
        let f = fit_rl(&d, &r);
        assert!((f.alpha - a).abs() < 1e-9 && (f.beta - b).abs() < 1e-9, "{f:?}");
        assert!((f.r2 - 1.0).abs() < 1e-9);
        let ds = (a / b - 1.0f64).exp();
        assert!((f.d_star.unwrap() - ds).abs() < 1e-9);
        // At the peak ln d* = α/β − 1, so R(d*) = d*(α − β(α/β − 1)) = β d*.
        assert!((f.r_star.unwrap() - b * ds).abs() < 1e-9);
    }

    /// By hand: d = (1, 2, 3), r = (1, 2, 0). Normal equations with Σd² = 14, Σd³ = 36,
    /// Σd⁴ = 98, Σd·r = 5, Σd²·r = 9:  14α − 36β = 5,  36α − 98β = 9, determinant −76, so
    /// α = 166/76 = 83/38, β = 54/76 = 27/38. Fitted (56, 58, 6)/38, residuals (−18, 18, −6)/38,
    /// SS_res = 684/1444 = 9/19; mean r = 1, SS_tot = 2; R² = 1 − 9/38 = 29/38.
    /// d* = α/(2β) = 83/54; R(d*) = α²/(4β) = 6889/4104.
    #[test]
    fn bon_hand_worked_three_points() {
        let f = fit_bon(&[1.0, 2.0, 3.0], &[1.0, 2.0, 0.0]);
        assert!((f.alpha - 83.0 / 38.0).abs() < 1e-12, "{f:?}");
        assert!((f.beta - 27.0 / 38.0).abs() < 1e-12);
        assert!((f.r2 - 29.0 / 38.0).abs() < 1e-12);
        assert!((f.d_star.unwrap() - 83.0 / 54.0).abs() < 1e-12);
        assert!((f.r_star.unwrap() - 6889.0 / 4104.0).abs() < 1e-12);
        assert!((f.eval(2.0) - 58.0 / 38.0).abs() < 1e-12);
    }

    /// By hand: d = (1, 1, e), r = (1, 3, 0). Features (d, −d ln d) = (1, 0), (1, 0), (e, −e).
    /// XᵀX = [[2 + e², −e²], [−e², e²]], Xᵀr = (4, 0): the second row gives β = α, the first
    /// 2α = 4, so α = β = 2. Fitted (2, 2, 0), SS_res = 2; mean r = 4/3, SS_tot = 42/9;
    /// R² = 1 − 2·9/42 = 4/7. d* = e^{α/β − 1} = 1, R(d*) = 2.
    #[test]
    fn rl_hand_worked_three_points() {
        let e = std::f64::consts::E;
        let f = fit_rl(&[1.0, 1.0, e], &[1.0, 3.0, 0.0]);
        assert!((f.alpha - 2.0).abs() < 1e-12 && (f.beta - 2.0).abs() < 1e-12, "{f:?}");
        assert!((f.r2 - 4.0 / 7.0).abs() < 1e-12);
        assert!((f.d_star.unwrap() - 1.0).abs() < 1e-12);
        assert!((f.r_star.unwrap() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn no_peak_and_degenerate_inputs() {
        // Gold keeps rising faster than linearly: β < 0, so no peak.
        let d = [0.5, 1.0, 1.5, 2.0];
        let r: Vec<f64> = d.iter().map(|d| d * (1.0 + 0.2 * d)).collect();
        let f = fit_bon(&d, &r);
        assert!(f.beta < 0.0 && f.d_star.is_none() && f.r_star.is_none());
        // Too few usable points, NaNs and negative d skipped, collinear features.
        assert!(!fit_bon(&[1.0], &[1.0]).is_valid());
        let f = fit_bon(&[1.0, f64::NAN, -1.0, 2.0, 3.0], &[1.0, 5.0, 5.0, f64::NAN, 0.0]);
        assert_eq!(f.n, 2);
        assert!(f.is_valid());
        assert!(!fit_bon(&[2.0, 2.0, 2.0], &[1.0, 2.0, 3.0]).is_valid(), "one distinct d cannot fix two parameters");
        assert!(!fit_rl(&[0.0, 0.0], &[0.0, 0.0]).is_valid());
        // R(0) = 0 holds for both forms.
        assert_eq!(fit_rl(&[1.0, 2.0], &[1.0, 1.0]).eval(0.0), 0.0);
    }

    #[test]
    fn curve_spans_the_range() {
        let f = fit_bon(&[1.0, 2.0, 3.0], &[1.0, 2.0, 0.0]);
        let (xs, ys) = f.curve(3.0, 4);
        assert_eq!(xs, vec![0.0, 1.0, 2.0, 3.0]);
        assert!((ys[3] - 6.0 / 38.0).abs() < 1e-12);
    }
}
