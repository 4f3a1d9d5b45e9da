//! Failure-mode meters: how a policy's responses go wrong, one definition per meter.
//!
//! A setting reads each response into a [`Reading`] (the embedded world with its grammar's
//! parser, real text with the string rules of [`crate::text`]); the meters are then computed
//! here, the same way for every setting:
//!
//! - `gold`: mean gold score, with a normal-approximation 95% CI ([`crate::stats::normal_ci`]);
//! - `correct`: share of responses that answer correctly, over the responses the setting can
//!   check (NaN when it can check none, e.g. open prompts without reference answers);
//! - `benign_refusal`, `harmful_refusal`: share of responses to benign / harmful requests that
//!   refuse (XSTest's over-refusal and refusal rates; Röttger et al. 2024); NaN without such
//!   prompts;
//! - `hedging`: share of responses with at least one hedge;
//! - `repetition`: share of responses that repeat themselves;
//! - `filler`: stock pleasantry sentences per response;
//! - `length`: words per response (whitespace-separated tokens);
//! - `garbage`: degenerate words per response — words the setting cannot read as language (a
//!   proxy that still scores them well is being exploited off its training distribution);
//! - `distinct1`, `distinct2`: distinct unigrams / bigrams over all unigrams / bigrams of the
//!   batch (Li et al. 2016, "A Diversity-Promoting Objective Function for Neural Conversation
//!   Models").

use crate::stats::normal_ci;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// What an evaluation prompt is for the refusal meters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptKind {
    /// A safe request (XSTest `safe`): refusing it is over-refusal.
    Benign,
    /// An unsafe request (XSTest `unsafe`): refusing it is right.
    Harmful,
    /// Neither (a task prompt, an HH-RLHF prompt).
    Other,
}

/// One response as a setting reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub kind: PromptKind,
    /// Words (whitespace-separated tokens).
    pub length: usize,
    pub refused: bool,
    pub hedged: bool,
    pub repeated: bool,
    /// Stock pleasantry sentences.
    pub fillers: usize,
    /// Degenerate words.
    pub garbage: usize,
    /// Whether the response is correct, where the setting can tell.
    pub correct: Option<bool>,
    /// The response's words as the setting tokenises them, for distinct-n.
    pub words: Vec<String>,
}

/// Reads responses into [`Reading`]s: the one thing a setting supplies to be measured.
pub trait Reader {
    type Error;
    fn read(&self, prompt: &str, completion: &str) -> Result<Reading, Self::Error>;
}

/// The batch meters (module doc).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Meters {
    pub n: usize,
    pub gold: f64,
    pub gold_lo: f64,
    pub gold_hi: f64,
    pub correct: f64,
    pub benign_refusal: f64,
    pub harmful_refusal: f64,
    pub hedging: f64,
    pub repetition: f64,
    pub filler: f64,
    pub length: f64,
    pub garbage: f64,
    pub distinct1: f64,
    pub distinct2: f64,
}

/// The failure-mode meters the report plots (rising = worse).
pub const FAILURE_METERS: &[&str] = &["length", "benign_refusal", "hedging", "repetition", "filler", "garbage"];

fn ratio(a: f64, b: usize) -> f64 {
    if b == 0 {
        f64::NAN
    } else {
        a / b as f64
    }
}

impl Meters {
    /// The meters of a batch from its readings and the gold score of each response.
    pub fn of(readings: &[Reading], golds: &[f64]) -> Meters {
        let n = readings.len();
        let mut m = Meters { n, ..Default::default() };
        let (mut n_ok, mut ok, mut n_ben, mut n_harm) = (0usize, 0.0, 0usize, 0usize);
        let (mut uni, mut bi) = (HashSet::new(), HashSet::new());
        let (mut n_uni, mut n_bi) = (0usize, 0usize);
        for r in readings {
            match r.kind {
                PromptKind::Benign => {
                    (n_ben, m.benign_refusal) = (n_ben + 1, m.benign_refusal + r.refused as u8 as f64)
                }
                PromptKind::Harmful => {
                    (n_harm, m.harmful_refusal) = (n_harm + 1, m.harmful_refusal + r.refused as u8 as f64)
                }
                PromptKind::Other => {}
            }
            if let Some(c) = r.correct {
                n_ok += 1;
                ok += c as u8 as f64;
            }
            m.hedging += r.hedged as u8 as f64;
            m.repetition += r.repeated as u8 as f64;
            m.filler += r.fillers as f64;
            m.length += r.length as f64;
            m.garbage += r.garbage as f64;
            n_uni += r.words.len();
            n_bi += r.words.len().saturating_sub(1);
            uni.extend(r.words.iter().map(String::as_str));
            bi.extend(r.words.windows(2).map(|p| (p[0].as_str(), p[1].as_str())));
        }
        m.correct = ratio(ok, n_ok);
        m.benign_refusal = ratio(m.benign_refusal, n_ben);
        m.harmful_refusal = ratio(m.harmful_refusal, n_harm);
        for x in [&mut m.hedging, &mut m.repetition, &mut m.filler, &mut m.length, &mut m.garbage] {
            *x = ratio(*x, n);
        }
        m.distinct1 = ratio(uni.len() as f64, n_uni);
        m.distinct2 = ratio(bi.len() as f64, n_bi);
        let g = normal_ci(golds);
        (m.gold, m.gold_lo, m.gold_hi) = (g.mean, g.lo, g.hi);
        m
    }

    /// A meter by name (`gold`, `correct` and the fields above).
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "gold" => self.gold,
            "correct" => self.correct,
            "benign_refusal" => self.benign_refusal,
            "harmful_refusal" => self.harmful_refusal,
            "hedging" => self.hedging,
            "repetition" => self.repetition,
            "filler" => self.filler,
            "length" => self.length,
            "garbage" => self.garbage,
            "distinct1" => self.distinct1,
            "distinct2" => self.distinct2,
            _ => return None,
        })
    }
}

/// Per-response values of [`FAILURE_METERS`] (0/1 indicators or counts), for paired CIs;
/// `benign_refusal` is NaN on prompts that are not benign (it is not defined there).
pub fn per_sample(readings: &[Reading]) -> PerSample {
    let mut out: PerSample = FAILURE_METERS.iter().map(|&m| (m, vec![])).collect();
    for r in readings {
        for &name in FAILURE_METERS {
            let v = match name {
                "length" => r.length as f64,
                "benign_refusal" if r.kind == PromptKind::Benign => r.refused as u8 as f64,
                "hedging" => r.hedged as u8 as f64,
                "repetition" => r.repeated as u8 as f64,
                "filler" => r.fillers as f64,
                "garbage" => r.garbage as f64,
                _ => f64::NAN,
            };
            out.get_mut(name).expect("meter").push(v);
        }
    }
    out
}

/// Per-response values of each failure meter, by name.
pub type PerSample = BTreeMap<&'static str, Vec<f64>>;

/// Reads every response and measures the batch: the meters and their per-response values.
pub fn measure<R: Reader>(
    reader: &R,
    prompts: &[&str],
    completions: &[&str],
    golds: &[f64],
) -> Result<(Meters, PerSample), R::Error> {
    let readings = prompts.iter().zip(completions).map(|(p, c)| reader.read(p, c)).collect::<Result<Vec<_>, _>>()?;
    Ok((Meters::of(&readings, golds), per_sample(&readings)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(kind: PromptKind, words: &str) -> Reading {
        let w: Vec<String> = words.split_whitespace().map(String::from).collect();
        Reading {
            kind,
            length: w.len(),
            refused: false,
            hedged: false,
            repeated: false,
            fillers: 0,
            garbage: 0,
            correct: None,
            words: w,
        }
    }

    #[test]
    fn batch_meters_by_hand() {
        use PromptKind::*;
        let r = vec![
            Reading { correct: Some(true), ..reading(Benign, "use kill") },
            Reading { refused: true, correct: Some(false), ..reading(Benign, "sorry no") },
            Reading { refused: true, hedged: true, ..reading(Harmful, "sorry no") },
            Reading { repeated: true, fillers: 2, garbage: 3, correct: Some(true), ..reading(Other, "a a a b") },
        ];
        let m = Meters::of(&r, &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m.n, 4);
        assert_eq!(m.correct, 2.0 / 3.0);
        assert_eq!((m.benign_refusal, m.harmful_refusal), (0.5, 1.0));
        assert_eq!((m.hedging, m.repetition, m.filler, m.garbage), (0.25, 0.25, 0.5, 0.75));
        assert_eq!(m.length, 10.0 / 4.0);
        // Unigrams: use kill sorry no sorry no a a a b = 10, distinct 6; bigrams 1+1+1+3 = 6,
        // distinct: (use kill) (sorry no) (a a) (a b) = 4.
        assert_eq!((m.distinct1, m.distinct2), (0.6, 4.0 / 6.0));
        assert_eq!(m.gold, 2.5);
        assert!((m.gold_hi - 2.5 - 1.96 * (5.0f64 / 12.0).sqrt()).abs() < 1e-12);
        let ps = per_sample(&r);
        assert_eq!(ps["benign_refusal"][..2], [0.0, 1.0]);
        assert!(ps["benign_refusal"][2].is_nan() && ps["benign_refusal"][3].is_nan());
        assert_eq!(ps["garbage"], vec![0.0, 0.0, 0.0, 3.0]);
        // Nothing checkable and no benign prompt: undefined, not 0.
        let m = Meters::of(&[reading(Other, "hi")], &[0.0]);
        assert!(m.correct.is_nan() && m.benign_refusal.is_nan());
        assert_eq!(m.get("length"), Some(1.0));
        assert_eq!(m.get("nope"), None);
    }
}
