//! The demonstration corpus the start policy is trained on: responses sampled from a
//! deliberately mediocre mixture (often wrong, sometimes hedged, verbose or refusing, rarely
//! repetitive), so that the start policy is diverse and leaves room both to improve and to
//! be led astray.

use crate::lang::{Kind, Prompt, FILLERS, HEDGES, REFUSAL};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mixture {
    /// P(correct core | not refusing) on lookup / compare / benign prompts.
    pub p_correct: f64,
    /// P(refuse) on lookup / compare, on benign and on harmful prompts.
    pub p_refuse_plain: f64,
    pub p_refuse_benign: f64,
    pub p_refuse_harmful: f64,
    /// P(one hedge before the core).
    pub p_hedge: f64,
    /// P(0, 1, 2, 3 filler sentences after the core).
    pub p_fillers: Vec<f64>,
    /// P(the core is said twice).
    pub p_repeat: f64,
    /// P(1–3 random words are dropped into the response): rambling the annotators dislike too.
    pub p_garbage: f64,
}

impl Default for Mixture {
    fn default() -> Self {
        Self {
            p_correct: 0.6,
            p_refuse_plain: 0.05,
            p_refuse_benign: 0.2,
            p_refuse_harmful: 0.5,
            p_hedge: 0.25,
            p_fillers: vec![0.55, 0.3, 0.1, 0.05],
            p_repeat: 0.08,
            p_garbage: 0.2,
        }
    }
}

fn pick<'a>(xs: &'a [&'a str], rng: &mut ChaCha8Rng) -> &'a str {
    xs[rng.random_range(0..xs.len())]
}

impl Mixture {
    /// One response to `p`.
    pub fn sample(&self, p: &Prompt, rng: &mut ChaCha8Rng) -> String {
        let p_refuse = match p.kind {
            Kind::Harmful => self.p_refuse_harmful,
            Kind::Benign => self.p_refuse_benign,
            _ => self.p_refuse_plain,
        };
        let core = if rng.random::<f64>() < p_refuse {
            REFUSAL.to_string()
        } else if p.kind != Kind::Harmful && rng.random::<f64>() < self.p_correct {
            p.answer.clone()
        } else {
            p.wrong[rng.random_range(0..p.wrong.len())].clone()
        };
        let mut parts: Vec<String> = Vec::new();
        if rng.random::<f64>() < self.p_hedge {
            parts.push(pick(HEDGES, rng).into());
        }
        parts.push(core.clone());
        if rng.random::<f64>() < self.p_repeat {
            parts.push(core);
        }
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut k = self.p_fillers.len().saturating_sub(1);
        for (i, &q) in self.p_fillers.iter().enumerate() {
            acc += q;
            if u < acc {
                k = i;
                break;
            }
        }
        for _ in 0..k {
            parts.push(pick(FILLERS, rng).into());
        }
        if rng.random::<f64>() < self.p_garbage {
            let vocab = crate::lang::vocabulary();
            for _ in 0..rng.random_range(1..=3) {
                let w = vocab[rng.random_range(4..vocab.len())].clone();
                let at = rng.random_range(0..=parts.len());
                parts.insert(at, w);
            }
        }
        parts.join(" ")
    }

    /// `n` (prompt index, response) demonstrations over `prompts` (indices into `all`), prompts
    /// drawn by [`sample_prompt`].
    pub fn corpus(&self, all: &[Prompt], prompts: &[usize], n: usize, rng: &mut ChaCha8Rng) -> Vec<(usize, String)> {
        (0..n)
            .map(|_| {
                let i = sample_prompt(all, prompts, rng);
                (i, self.sample(&all[i], rng))
            })
            .collect()
    }
}

/// A prompt from `prompts` with every kind equally likely (there are 18 safety prompts and
/// hundreds of compositional ones; uniform draws would almost never test safety).
pub fn sample_prompt(all: &[Prompt], prompts: &[usize], rng: &mut ChaCha8Rng) -> usize {
    let kinds: Vec<Kind> = Kind::ALL.into_iter().filter(|k| prompts.iter().any(|&i| all[i].kind == *k)).collect();
    let k = kinds[rng.random_range(0..kinds.len())];
    let of: Vec<usize> = prompts.iter().copied().filter(|&i| all[i].kind == k).collect();
    of[rng.random_range(0..of.len())]
}
