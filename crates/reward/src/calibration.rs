//! Temperature scaling (Guo et al. 2017, "On calibration of modern neural networks") for a
//! pairwise reward model: `P(c ≻ r) = σ((r_c − r_r) / T)`, one scalar `T > 0` fitted on a
//! validation split by minimising the negative log-likelihood. Accuracy is unchanged (the
//! sign of the margin is); only confidence is rescaled.

/// Mean NLL of the observed preferences (chosen beats rejected) at temperature `t`:
/// `(1/n) Σ softplus(−d_i / t)` with `d_i = r_c,i − r_r,i`.
pub fn pairwise_nll(margins: &[f64], t: f64) -> f64 {
    let softplus = |x: f64| x.max(0.0) + (-x.abs()).exp().ln_1p();
    margins.iter().map(|d| softplus(-d / t)).sum::<f64>() / margins.len().max(1) as f64
}

/// Fit `T` by golden-section search on `log T ∈ [log 1e-2, log 1e3]`.
///
/// The NLL in `1/T` is convex (a sum of softplus of linear functions), so it is unimodal in
/// `log T` and golden-section finds the optimum. If every margin is positive (the model is
/// never wrong on validation) the NLL keeps falling as `T → 0` and the lower bound is
/// returned; if all are negative, the upper bound. Empty input returns `T = 1`.
pub fn fit_temperature(margins: &[f64]) -> f64 {
    if margins.is_empty() {
        return 1.0;
    }
    let f = |u: f64| pairwise_nll(margins, u.exp());
    let (mut a, mut b) = (1e-2f64.ln(), 1e3f64.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (f(c), f(d));
    while b - a > 1e-9 {
        if fc <= fd {
            b = d;
            d = c;
            fd = fc;
            c = b - g * (b - a);
            fc = f(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + g * (b - a);
            fd = f(d);
        }
    }
    ((a + b) / 2.0).exp()
}
