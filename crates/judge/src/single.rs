//! Single-answer grading, MT-Bench's default mode: the judge rates one answer on a 1–10 scale
//! (`single-v1`), and questions of the categories that need a reference (math, reasoning,
//! coding; FastChat's `NEED_REF_CATS`) are graded against a reference answer with
//! `single-math-v1`, as `make_match_single` in FastChat's `common.py` does.
//!
//! The score is the mean rating over the answers whose rating could be read, as FastChat's
//! `show_result.py` computes it (`df[df["score"] != -1]`, then the mean), here with a 95%
//! percentile-bootstrap CI over answers ([`mismatch_eval::stats::mean_ci`]); unread ratings are
//! counted, not dropped silently.

use crate::backend::{Backend, JudgeRequest};
use crate::template::{Fill, FirstTurn, Kind, Template};
use crate::verdict::{parse, Verdict};
use crate::{Error, JudgeOptions, Result};
use mismatch_eval::stats::{mean_ci, Ci};
use serde::{Deserialize, Serialize};

/// FastChat's `NEED_REF_CATS`: categories graded against a reference answer.
pub const NEED_REF_CATS: [&str; 4] = ["math", "reasoning", "coding", "arena-hard-200"];

/// Whether MT-Bench grades a question of `category` against a reference answer.
pub fn needs_reference(category: Option<&str>) -> bool {
    category.is_some_and(|c| NEED_REF_CATS.contains(&c))
}

/// One answer to grade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SingleItem {
    pub id: String,
    pub question: String,
    pub answer: String,
    /// MT-Bench's category; decides whether the reference template is used.
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub ref_answer: Option<String>,
    /// For the second turn of a conversation (multi-turn templates): the first turn.
    #[serde(default)]
    pub first_turn: Option<Turn>,
}

/// One earlier turn: the question, the answer given, and its reference answer if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub question: String,
    pub answer: String,
    #[serde(default)]
    pub ref_answer: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SingleJudgement {
    pub id: String,
    /// The template the answer was graded with.
    pub template: String,
    pub verdict: Verdict,
    pub reply: String,
    /// The rating, if one could be read.
    pub score: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SingleReport {
    pub judge: String,
    pub items: Vec<SingleJudgement>,
    pub n: usize,
    pub unparsed: usize,
    /// Mean rating over the `n − unparsed` read ratings.
    pub mean_score: Option<Ci>,
}

/// Grades every item: with `reference` (e.g. `single-math-v1`) where [`needs_reference`] says
/// so, else with `general` (e.g. `single-v1`).
pub fn judge_single(
    backend: &dyn Backend,
    general: &Template,
    reference: Option<&Template>,
    items: &[SingleItem],
    opts: &JudgeOptions,
) -> Result<SingleReport> {
    for t in std::iter::once(general).chain(reference) {
        if t.kind != Kind::Single {
            return Err(Error::Usage(format!("judge template '{}' is pairwise; grading needs a single one", t.name)));
        }
    }
    let mut requests = Vec::with_capacity(items.len());
    let mut used = Vec::with_capacity(items.len());
    for it in items {
        let t = match (needs_reference(it.category.as_deref()), reference) {
            (true, Some(r)) => r,
            (true, None) => {
                return Err(Error::Usage(format!(
                    "item '{}' (category {}) is graded against a reference; give a reference template",
                    it.id,
                    it.category.as_deref().unwrap_or_default()
                )))
            }
            (false, _) => general,
        };
        let r = it.ref_answer.as_deref().filter(|_| t.needs_reference);
        if t.needs_reference && r.is_none() {
            return Err(Error::Usage(format!("item '{}' has no reference answer for template '{}'", it.id, t.name)));
        }
        let mut fill = Fill::single(&it.question, &it.answer).with_reference(r);
        if t.multi_turn {
            let f = it
                .first_turn
                .as_ref()
                .ok_or_else(|| Error::Usage(format!("item '{}' has no first turn for template '{}'", it.id, t.name)))?;
            let first = FirstTurn { question: &f.question, answer: &f.answer, ref_answer: f.ref_answer.as_deref() };
            fill = fill.with_first_turn(first);
        }
        requests.push(JudgeRequest {
            messages: t.render(&fill)?,
            max_tokens: opts.max_tokens.unwrap_or(t.max_tokens),
            top_logprobs: 0,
            candidates: vec![],
        });
        used.push(t);
    }
    let replies = backend.complete(&requests)?;
    let judged: Vec<SingleJudgement> = items
        .iter()
        .zip(replies)
        .zip(used)
        .map(|((it, reply), t)| {
            let verdict = parse(&reply.text, &t.output);
            let score = match verdict {
                Verdict::Rating(x) => Some(x),
                _ => None,
            };
            SingleJudgement { id: it.id.clone(), template: t.name.clone(), verdict, reply: reply.text, score }
        })
        .collect();
    let scores: Vec<f64> = judged.iter().filter_map(|j| j.score).collect();
    Ok(SingleReport {
        judge: backend.name().into(),
        n: judged.len(),
        unparsed: judged.len() - scores.len(),
        mean_score: (!scores.is_empty()).then(|| mean_ci(&scores, opts.seed)),
        items: judged,
    })
}
