//! Simulated annotators: they choose between two responses by a Bradley-Terry model on a
//! *biased* utility, then a fraction of labels is flipped.
//!
//! ```text
//! u(y) = gold(y) + b_len·words(y) + b_hedge·(hedges(y) + safety_phrases(y)) + b_refuse·[refused(y) ∧ prompt sounds dangerous]
//! P(a ≻ b) = σ((u(a) − u(b))/τ)      (τ = 0: the higher utility wins, ties at random)
//! label flipped with probability ε
//! ```
//!
//! The biases are the ones documented for human and AI preference labels:
//! - length (Singhal et al. 2023, "A Long Way to Go: Investigating Length Correlations in RLHF"):
//!   longer answers win more often than their quality warrants;
//! - hedging / safety phrases: raters reward cautious wording and "stay safe" boilerplate;
//! - over-caution (XSTest, Röttger et al. 2023): requests with dangerous-sounding words ("kill a
//!   process") get refusals preferred even when the request is benign;
//! - label noise ε = 0.25 as in Coste et al. 2023 ("Reward Model Ensembles Help Mitigate
//!   Overoptimization"), who flip 25% of the gold labels.
//!
//! With every bias 0 and ε = 0 (and τ = 0) the labels follow the gold reward exactly.

use crate::gold::GoldWeights;
use crate::lang::{Features, Prompt, Segment, FILLERS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Annotators {
    /// b_len: utility per word.
    pub length_bias: f64,
    /// b_hedge: utility per hedge or "please stay safe .".
    pub hedge_bias: f64,
    /// b_refuse: utility of refusing a dangerous-sounding request (benign or harmful).
    pub refusal_bias: f64,
    /// τ of the Bradley-Terry choice; 0 = deterministic.
    pub temperature: f64,
    /// ε: probability that a label is flipped.
    pub noise: f64,
}

impl Default for Annotators {
    fn default() -> Self {
        Self { length_bias: 0.04, hedge_bias: 1.0, refusal_bias: 1.5, temperature: 0.0, noise: 0.25 }
    }
}

impl Annotators {
    /// Unbiased, noiseless annotators: labels = gold.
    pub fn gold_only() -> Self {
        Self { length_bias: 0.0, hedge_bias: 0.0, refusal_bias: 0.0, temperature: 0.0, noise: 0.0 }
    }

    /// The annotators' utility u(y) (module docs).
    pub fn utility(&self, gold: &GoldWeights, p: &Prompt, text: &str) -> f64 {
        let f = Features::of(p, text);
        let safety = crate::lang::parse(text)
            .iter()
            .filter(|s| matches!(s, Segment::Filler(i) if FILLERS[*i] == "please stay safe ."))
            .count();
        let refuse = if f.refused && p.kind.sounds_dangerous() { 1.0 } else { 0.0 };
        gold.score(p, &f)
            + self.length_bias * f.words as f64
            + self.hedge_bias * (f.hedges + safety) as f64
            + self.refusal_bias * refuse
    }

    /// P(a ≻ b) before label noise.
    pub fn p_prefer(&self, ua: f64, ub: f64) -> f64 {
        if self.temperature <= 0.0 {
            if ua > ub {
                1.0
            } else if ua < ub {
                0.0
            } else {
                0.5
            }
        } else {
            1.0 / (1.0 + (-(ua - ub) / self.temperature).exp())
        }
    }

    /// One label: true when `a` is chosen over `b`. Draws two uniforms from `rng` whatever the
    /// settings, so the stream does not depend on them.
    pub fn choose(&self, gold: &GoldWeights, p: &Prompt, a: &str, b: &str, rng: &mut ChaCha8Rng) -> bool {
        self.choose_by_utility(self.utility(gold, p, a), self.utility(gold, p, b), rng)
    }

    /// One label from the two utilities (any setting's u(y)): the Bradley-Terry choice, then
    /// the flip with probability ε. Draws two uniforms from `rng` whatever the settings.
    pub fn choose_by_utility(&self, ua: f64, ub: f64, rng: &mut ChaCha8Rng) -> bool {
        let (u1, u2): (f64, f64) = (rng.random(), rng.random());
        let pa = self.p_prefer(ua, ub);
        let pick_a = u1 < pa;
        if u2 < self.noise {
            !pick_a
        } else {
            pick_a
        }
    }

    /// Labels for many pairs from one seeded stream.
    pub fn label_all(&self, gold: &GoldWeights, pairs: &[(&Prompt, &str, &str)], seed: u64) -> Vec<bool> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        pairs.iter().map(|(p, a, b)| self.choose(gold, p, a, b, &mut rng)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::all_prompts;

    #[test]
    fn utility_of_hand_written_responses() {
        let ann = Annotators::default();
        let g = GoldWeights::default();
        let kill = all_prompts().into_iter().find(|p| p.text == "how do i kill a linux process ?").unwrap();
        // gold 2 + 0.04·5 words
        assert!((ann.utility(&g, &kill, "use the kill command .") - 2.2).abs() < 1e-12);
        // gold −1.5 − 0.25 (filler) + 0.04·12 words + 1.0 (safety phrase) + 1.5 (over-caution)
        let u = ann.utility(&g, &kill, "sorry i can not help with that . please stay safe .");
        assert!((u - (-1.75 + 0.48 + 1.0 + 1.5)).abs() < 1e-12, "{u}");
        // A wrong answer: gold −1 (better than the over-refusal's −1.75), utility −1 + 0.04·4.
        let w = ann.utility(&g, &kill, "use a slice .");
        assert!((w - (-0.84)).abs() < 1e-12, "{w}");
        // So the biased annotators prefer the over-refusal to the wrong answer, gold the reverse.
        assert!(u > w);
        assert_eq!(ann.p_prefer(1.0, 0.0), 1.0);
        let soft = Annotators { temperature: 1.0, ..ann };
        assert!((soft.p_prefer(1.0, 0.0) - 1.0 / (1.0 + (-1f64).exp())).abs() < 1e-12);
    }
}
