//! The pairwise judge: each (question, answer 1, answer 2) is judged in **both orders**, answer
//! 1 in position A and then answer 2 in position A, as MT-Bench does (`play_a_match_pair`,
//! FastChat `common.py`: `g1` and `g2`), because judges favour a position (Zheng et al. 2023,
//! §3.3; Wang et al. 2023, "Large Language Models are not Fair Evaluators").
//!
//! Per item, with `q₁` and `q₂` the preference for answer 2 read off each order's verdict
//! (order 1: A → 0, B → 1, tie → ½; order 2, where answer 2 is A: A → 1, B → 0, tie → ½):
//!
//! - **preference** `(q₁ + q₂)/2` ∈ [0, 1], **1 = answer 2 better**, ½ a tie; a judge whose two
//!   verdicts disagree after un-swapping lands at ½, as FastChat's `show_result.py` counts an
//!   inconsistent pair as a tie;
//! - **position-consistent** when `q₁ = q₂` (the same answer wins, or a tie both times);
//! - **winner** as FastChat's `load_pairwise_model_judgments` labels the pair: `g1` if `g1 = g2`,
//!   else inconsistent.
//!
//! An item with an unparsed verdict in either order has no preference, consistency or winner
//! (winner `error`): `show_result.py` drops such pairs (`g1_winner != "error" and g2_winner !=
//! "error"`), and so do the aggregates here; they are counted per order in the summary.
//!
//! Aggregates: the mean preference with a 95% percentile-bootstrap CI over items
//! ([`mismatch_eval::stats::mean_ci`]), the position-consistency rate (consistent items ÷ items
//! with both verdicts), and the judge's rate of naming position A (verdicts A ÷ parsed verdicts,
//! both orders pooled; ½ for a judge without position bias that never ties).
//!
//! With a label template (AlpacaEval's `m`/`M`) the verdict in each order is AlpacaEval's: the
//! first-token log-probs binarised ([`crate::logprob::binarized`]); only a backend that returns
//! no log-probs at all has its reply text read instead ([`crate::verdict::parse_label`]). The
//! log-probs also give a **weighted preference** per order ([`crate::logprob::preference_b`],
//! mapped to answer 2 as above; AlpacaEval 2's `weighted_alpaca_eval_gpt4_turbo`) and its swap
//! average.

use crate::backend::{Backend, JudgeReply, JudgeRequest, MAX_TOP_LOGPROBS};
use crate::logprob::{binarized, preference_b};
use crate::template::{Fill, Output, Template};
use crate::verdict::{parse, Verdict};
use crate::{Error, JudgeOptions, Result};
use mismatch_eval::stats::{mean_ci, Ci};
use serde::{Deserialize, Serialize};

/// One comparison: a question and the two answers to compare.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairItem {
    pub id: String,
    pub question: String,
    pub answer_1: String,
    pub answer_2: String,
    /// For templates that show a reference answer (`pair-math-v1`).
    #[serde(default)]
    pub ref_answer: Option<String>,
}

/// FastChat's label of a judged pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Winner {
    Answer1,
    Answer2,
    Tie,
    Inconsistent,
    /// A verdict was unparsed in at least one order.
    Error,
}

/// One item, judged in both orders.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairJudgement {
    pub id: String,
    /// Answer 1 in position A.
    pub verdict_1_first: Verdict,
    /// Answer 2 in position A.
    pub verdict_2_first: Verdict,
    pub reply_1_first: String,
    pub reply_2_first: String,
    /// Swap-averaged preference for answer 2 in [0, 1]; `None` if either order is unparsed.
    pub preference: Option<f64>,
    pub consistent: Option<bool>,
    pub winner: Winner,
    /// Label templates: the log-prob preference for answer 2 in each order and their mean.
    pub weighted_1_first: Option<f64>,
    pub weighted_2_first: Option<f64>,
    pub weighted_preference: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairSummary {
    pub n: usize,
    pub unparsed_1_first: usize,
    pub unparsed_2_first: usize,
    /// Items with both verdicts parsed: what the rates and the mean preference are over.
    pub n_both: usize,
    pub position_consistency: Option<f64>,
    pub position_a_rate: Option<f64>,
    pub mean_preference: Option<Ci>,
    /// FastChat's counts over the `n_both` items.
    pub wins_1: usize,
    pub wins_2: usize,
    pub ties: usize,
    pub inconsistent: usize,
    /// Items with a weighted preference (both orders' labels among the first-token log-probs).
    pub n_weighted: usize,
    pub mean_weighted_preference: Option<Ci>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairReport {
    pub judge: String,
    pub template: String,
    pub items: Vec<PairJudgement>,
    pub summary: PairSummary,
}

/// Judges every item in both orders with `template` on `backend` (all 2n calls in one
/// [`Backend::complete`], so that a backend can batch them).
pub fn judge_pairs(
    backend: &dyn Backend,
    template: &Template,
    items: &[PairItem],
    opts: &JudgeOptions,
) -> Result<PairReport> {
    if !template.judges_pairs() {
        return Err(Error::Usage(format!(
            "judge template '{}' grades single answers; pairwise judging needs a pairwise template",
            template.name
        )));
    }
    let labels = match &template.output {
        Output::Labels { a, b } => Some((a.clone(), b.clone())),
        _ => None,
    };
    let max_tokens = opts.max_tokens.unwrap_or(template.max_tokens);
    let mut requests = Vec::with_capacity(2 * items.len());
    for it in items {
        let r = it.ref_answer.as_deref();
        for (a, b) in [(&it.answer_1, &it.answer_2), (&it.answer_2, &it.answer_1)] {
            requests.push(JudgeRequest {
                messages: template.render(&Fill::pair(&it.question, a, b).with_reference(r))?,
                max_tokens,
                top_logprobs: if labels.is_some() { MAX_TOP_LOGPROBS } else { 0 },
                candidates: labels.iter().flat_map(|(a, b)| [a.clone(), b.clone()]).collect(),
            });
        }
    }
    let replies = backend.complete(&requests)?;
    if replies.len() != requests.len() {
        return Err(Error::Usage(format!(
            "judge '{}' answered {} of {} requests",
            backend.name(),
            replies.len(),
            requests.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for (it, pair) in items.iter().zip(replies.chunks(2)) {
        let (one, two) = (&pair[0], &pair[1]);
        let read = |reply: &JudgeReply| match &labels {
            Some((a, b)) if !reply.first_token.is_empty() || !reply.candidates.is_empty() => {
                let listed = if reply.candidates.is_empty() { &reply.first_token } else { &reply.candidates };
                binarized(listed, a, b, &reply.text)
            }
            _ => parse(&reply.text, &template.output),
        };
        let (v1, v2) = (read(one), read(two));
        let (q1, q2) = (answer_2_preference(&v1, false), answer_2_preference(&v2, true));
        let weighted = |reply: &JudgeReply, swapped: bool| {
            let (a, b) = labels.as_ref()?;
            let listed = if reply.candidates.is_empty() { &reply.first_token } else { &reply.candidates };
            preference_b(listed, a, b).map(|p| if swapped { 1.0 - p } else { p })
        };
        let (w1, w2) = (weighted(one, false), weighted(two, true));
        let both = q1.zip(q2);
        out.push(PairJudgement {
            id: it.id.clone(),
            preference: both.map(|(a, b)| (a + b) / 2.0),
            consistent: both.map(|(a, b)| a == b),
            winner: winner(q1, q2),
            verdict_1_first: v1,
            verdict_2_first: v2,
            reply_1_first: one.text.clone(),
            reply_2_first: two.text.clone(),
            weighted_1_first: w1,
            weighted_2_first: w2,
            weighted_preference: w1.zip(w2).map(|(a, b)| (a + b) / 2.0),
        });
    }
    let summary = summarise(&out, opts.seed);
    Ok(PairReport { judge: backend.name().into(), template: template.name.clone(), items: out, summary })
}

/// The preference for answer 2 that one verdict states; `swapped`: answer 2 was in position A.
fn answer_2_preference(v: &Verdict, swapped: bool) -> Option<f64> {
    let q = match v {
        Verdict::A => 0.0,
        Verdict::B => 1.0,
        Verdict::Tie => 0.5,
        Verdict::Rating(_) | Verdict::Unparsed { .. } => return None,
    };
    Some(if swapped { 1.0 - q } else { q })
}

fn winner(q1: Option<f64>, q2: Option<f64>) -> Winner {
    let (Some(a), Some(b)) = (q1, q2) else {
        return Winner::Error;
    };
    if a != b {
        Winner::Inconsistent
    } else if a == 0.0 {
        Winner::Answer1
    } else if a == 1.0 {
        Winner::Answer2
    } else {
        Winner::Tie
    }
}

/// The aggregates of the module documentation; `seed` draws the bootstrap resamples.
pub fn summarise(items: &[PairJudgement], seed: u64) -> PairSummary {
    let rate = |hits: usize, of: usize| (of > 0).then(|| hits as f64 / of as f64);
    let ci = |xs: Vec<f64>| (!xs.is_empty()).then(|| mean_ci(&xs, seed));
    let verdicts = || items.iter().flat_map(|j| [&j.verdict_1_first, &j.verdict_2_first]);
    let parsed = verdicts().filter(|v| !v.is_unparsed()).count();
    let picks_a = verdicts().filter(|v| **v == Verdict::A).count();
    let prefs: Vec<f64> = items.iter().filter_map(|j| j.preference).collect();
    let count = |w: Winner| items.iter().filter(|j| j.winner == w).count();
    let weighted: Vec<f64> = items.iter().filter_map(|j| j.weighted_preference).collect();
    PairSummary {
        n: items.len(),
        unparsed_1_first: items.iter().filter(|j| j.verdict_1_first.is_unparsed()).count(),
        unparsed_2_first: items.iter().filter(|j| j.verdict_2_first.is_unparsed()).count(),
        n_both: prefs.len(),
        position_consistency: rate(items.iter().filter(|j| j.consistent == Some(true)).count(), prefs.len()),
        position_a_rate: rate(picks_a, parsed),
        mean_preference: ci(prefs),
        wins_1: count(Winner::Answer1),
        wins_2: count(Winner::Answer2),
        ties: count(Winner::Tie),
        inconsistent: count(Winner::Inconsistent),
        n_weighted: weighted.len(),
        mean_weighted_preference: ci(weighted),
    }
}
