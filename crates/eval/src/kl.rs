//! Sequence KL of a policy to a reference, estimated from the policy's own samples.
//!
//! With `y ~ π` and per-token log-probabilities `log π(y_t)` and `log π_ref(y_t)`, the k1
//! estimator (Schulman 2020, "Approximating KL divergence") of the sequence KL is
//! `Σ_t (log π(y_t) − log π_ref(y_t))`: unbiased for `KL(π ‖ π_ref)` averaged over samples, and
//! what Gao et al. (2022) report on their x-axis (as d = √KL). A single sample's value can be
//! negative; the mean over samples cannot be, in expectation.

/// k1 sequence KL of one sample from per-token log-probs under the policy and the reference
/// (summed in f64, token by token).
pub fn sequence_kl_k1(logp: &[f32], ref_logp: &[f32]) -> f64 {
    logp.iter().zip(ref_logp).map(|(a, b)| (*a - *b) as f64).sum()
}

/// k1 sequence KL when the policy's log-prob is already a sequence total.
pub fn sequence_kl_k1_total(logp_total: f64, ref_logp: &[f32]) -> f64 {
    logp_total - ref_logp.iter().map(|&x| x as f64).sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k1_by_hand() {
        // (−1 − −1.5) + (−2 − −1) = 0.5 − 1 = −0.5.
        assert_eq!(sequence_kl_k1(&[-1.0, -2.0], &[-1.5, -1.0]), -0.5);
        assert_eq!(sequence_kl_k1_total(-3.0, &[-1.5, -1.0]), -0.5);
        assert_eq!(sequence_kl_k1(&[], &[]), 0.0);
    }
}
