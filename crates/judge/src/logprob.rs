//! AlpacaEval 2's weighted preference: instead of the label the judge wrote, the probability
//! it gave each label as its first token.
//!
//! With `ℓ_a`, `ℓ_b` the first token's log-probs of the labels of positions A and B (`m` and
//! `M` in `alpaca_eval_clf_gpt4_turbo`),
//!
//! ```text
//! p_B = P(b) / (P(a) + P(b)) = exp(ℓ_b − logsumexp(ℓ_a, ℓ_b))
//! ```
//!
//! the judge's probability that the answer in position B is better. A label missing from the
//! list counts as `ℓ = −∞`; if both are missing there is no preference (`None`, AlpacaEval's
//! `NaN`).
//!
//! Source: `alpaca_eval/completion_parsers.py::logprob_parser` with `numerator_token: "m"`,
//! `denominator_tokens: ["m", "M"]` (`weighted_alpaca_eval_gpt4_turbo/configs.yaml`) returns
//! `P(m) / (P(m) + P(M))`, the probability that `output_1` (shown as `m`) is better, and the
//! annotation's `preference` ∈ [1, 2] (1: `output_1` better, 2: `output_2` better) is
//! `2 − P(m)/(P(m)+P(M)) = 1 + p_B` in the order shown. So `p_B = preference − 1`; the test
//! `tests/alpaca_eval_annotations.rs` checks it on all 802 released annotations of
//! `results/alpaca-7b/weighted_alpaca_eval_gpt4_turbo` that carry log-probs (AlpacaEval shows
//! the outputs in a random order, so each matches `p_B` or `1 − p_B`). As in AlpacaEval, labels
//! match tokens exactly (`" m"` is not `m`), and a token listed twice counts with its last
//! log-prob.

use crate::verdict::Verdict;
use serde::{Deserialize, Serialize};

/// One alternative for a generated token, as OpenAI's `top_logprobs` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
}

/// `p_B` (see the module documentation) from the first token's alternatives.
pub fn preference_b(first_token: &[TokenLogprob], label_a: &str, label_b: &str) -> Option<f64> {
    let find = |label: &str| first_token.iter().rev().find(|t| t.token == label).map(|t| t.logprob);
    let (la, lb) = (find(label_a), find(label_b));
    if la.is_none() && lb.is_none() {
        return None;
    }
    let (la, lb) = (la.unwrap_or(f64::NEG_INFINITY), lb.unwrap_or(f64::NEG_INFINITY));
    let hi = la.max(lb);
    let lse = hi + ((la - hi).exp() + (lb - hi).exp()).ln();
    Some((lb - lse).exp())
}

/// The verdict `alpaca_eval_clf_gpt4_turbo` takes from the log-probs: `logprob_parser` with
/// `is_binarize: true` gives `float(P(a)/(P(a)+P(b)) > 0.5)`, so A when `p_B < ½` and B
/// otherwise (an exact ½ goes to B, as `0.5 > 0.5` is false); no label among the alternatives
/// is AlpacaEval's `NaN`, here [`Verdict::Unparsed`] with the reply `raw`.
pub fn binarized(first_token: &[TokenLogprob], label_a: &str, label_b: &str, raw: &str) -> Verdict {
    match preference_b(first_token, label_a, label_b) {
        Some(p) if 1.0 - p > 0.5 => Verdict::A,
        Some(_) => Verdict::B,
        None => Verdict::Unparsed { raw: raw.into() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(pairs: &[(&str, f64)]) -> Vec<TokenLogprob> {
        pairs.iter().map(|&(t, l)| TokenLogprob { token: t.into(), logprob: l }).collect()
    }

    #[test]
    fn hand_values() {
        // P(m) = 0.6, P(M) = 0.2 → 0.2 / 0.8 = 0.25.
        let p = preference_b(&top(&[("m", 0.6f64.ln()), ("The", 0.1f64.ln()), ("M", 0.2f64.ln())]), "m", "M");
        assert!((p.unwrap() - 0.25).abs() < 1e-12);
        // Equal log-probs: 1/2, however small (no underflow at −800).
        assert!((preference_b(&top(&[("m", -800.0), ("M", -800.0)]), "m", "M").unwrap() - 0.5).abs() < 1e-12);
        // One label missing: all of the mass on the other.
        assert_eq!(preference_b(&top(&[("M", -3.0)]), "m", "M"), Some(1.0));
        assert_eq!(preference_b(&top(&[("m", -0.1), ("x", -3.0)]), "m", "M"), Some(0.0));
        // Neither label in the list: no preference, never a guess.
        assert_eq!(preference_b(&top(&[("The", -0.1), (" m", -1.0), ("mM", -2.0)]), "m", "M"), None);
        assert_eq!(preference_b(&[], "m", "M"), None);
        // An annotation of alpaca-7b: "m" at −8.7763e-6, "M" at −11.796884 → preference 1.000007528.
        let p = preference_b(&top(&[("m", -8.7763e-06), ("M", -11.796884), ("The", -13.937509)]), "m", "M");
        assert!((p.unwrap() - 0.000007528).abs() < 1e-9, "{p:?}");
    }

    #[test]
    fn binarized_verdicts() {
        let v = |pairs: &[(&str, f64)]| binarized(&top(pairs), "m", "M", "raw");
        assert_eq!(v(&[("m", -0.1), ("M", -2.0)]), Verdict::A);
        assert_eq!(v(&[("M", -0.1), ("m", -2.0)]), Verdict::B);
        assert_eq!(v(&[("m", -1.0), ("M", -1.0)]), Verdict::B);
        assert_eq!(v(&[("m", -9.0)]), Verdict::A);
        assert_eq!(v(&[("The", -0.1)]), Verdict::Unparsed { raw: "raw".into() });
    }
}
