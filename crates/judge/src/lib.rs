//! LLM-as-judge: a language model reads a question and one or two answers and says which answer
//! is better, or grades one. The judge is any causal LM mismatch can load, or any
//! OpenAI-compatible endpoint (`openai:URL#MODEL`), and the prompts and the reading of the
//! replies are those of MT-Bench (Zheng et al. 2023, "Judging LLM-as-a-Judge with MT-Bench and
//! Chatbot Arena", FastChat's `fastchat/llm_judge`) and AlpacaEval 2 (Dubois et al. 2024,
//! `tatsu-lab/alpaca_eval`), so that numbers are comparable with theirs.
//!
//! - [`template`]: judge prompts — the built-in MT-Bench `pair-v2`, `pair-math-v1`, `single-v1`,
//!   `single-math-v1` and AlpacaEval's `alpaca_eval_clf_gpt4_turbo`, or a user's Jinja file;
//! - [`verdict`]: a judge's reply to a [`Verdict`] (`[[A]]`/`[[B]]`/`[[C]]`, `Rating: [[x]]`,
//!   `m`/`M`), exactly as the originals read them; a reply that cannot be read is kept as
//!   [`Verdict::Unparsed`];
//! - [`logprob`]: AlpacaEval 2's weighted preference from the first token's log-probs, and the
//!   classifier's verdict from them (binarised, as `alpaca_eval_clf_gpt4_turbo` reads it);
//! - [`backend`]: where the judge runs — [`Local`] (a loaded model, greedy) or [`Remote`] (an
//!   endpoint through [`mismatch_openai::Client`], with its concurrency and cache);
//! - [`pairwise`]: each pair judged in both orders, swap-averaged preference, position
//!   consistency and the judge's rate of picking position A;
//! - [`single`]: single-answer grading on MT-Bench's 1–10 scale, mean with a bootstrap CI;
//! - [`mtbench`]: MT-Bench's question and reference-answer files.
//!
//! Every result type is `serde::Serialize`, for the CLI to write as JSON.

pub mod backend;
pub mod logprob;
pub mod mtbench;
pub mod pairwise;
pub mod single;
pub mod template;
pub mod verdict;

pub use backend::{from_spec, Backend, JudgeReply, JudgeRequest, Local, Remote};
pub use logprob::{preference_b, TokenLogprob};
pub use pairwise::{judge_pairs, summarise, PairItem, PairJudgement, PairReport, PairSummary, Winner};
pub use single::{judge_single, needs_reference, SingleItem, SingleJudgement, SingleReport, Turn};
pub use template::{Fill, FirstTurn, Kind, Output, Template};
pub use verdict::Verdict;

use std::path::PathBuf;

/// What both judges take besides the template.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JudgeOptions {
    /// The judge's reply length (default: the template's, as the original sets it).
    pub max_tokens: Option<usize>,
    /// Seeds the bootstrap resamples of the CIs.
    pub seed: u64,
}

/// What went wrong, with the file (and line) or the endpoint it concerns.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A template or data file that cannot be used; `at` is `FILE` or `FILE:LINE`.
    #[error("{at}: {message}")]
    Invalid { at: String, message: String },
    #[error("{}: {err}", path.display())]
    Io { path: PathBuf, err: std::io::Error },
    /// Loading or running the local model.
    #[error(transparent)]
    Model(#[from] mismatch_models::Error),
    /// The endpoint refused or could not be reached.
    #[error(transparent)]
    Endpoint(#[from] mismatch_openai::Error),
    /// A call that cannot work as asked (a template of the wrong kind, a missing answer).
    #[error("{0}")]
    Usage(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn invalid(at: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Invalid { at: at.into(), message: message.into() }
    }
}
