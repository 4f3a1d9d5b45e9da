//! Everything mismatch measures, in one place: the evaluation vertex of the pipeline
//! data → reward → policy → eval. It reads numbers and text, never models: scoring is the
//! caller's part, so every crate (data, reward, policy, the experiment, the report) measures
//! through the same definitions.
//!
//! - [`stats`]: the one statistics module (percentile and BCa bootstrap, clustered and
//!   stratified bootstrap, Student-t and normal intervals);
//! - [`rank`]: Pearson and Spearman correlation;
//! - [`arena`]: ratings of N models from pairwise judgements as Chatbot Arena computes them
//!   (Bradley–Terry MLE on the Elo scale, online Elo, bootstrap intervals of ratings and ranks);
//! - [`rm`]: reward-model evaluation (accuracy with RewardBench's tie rule, ECE, length bias,
//!   consistency, ensemble disagreement, agreement with a reference); [`subsets`]: RewardBench
//!   sections;
//! - [`bon`]: best-of-n — the unbiased estimator from one pool, the KL bound and Beirami et al.'s
//!   KL estimate;
//! - [`kl`]: sequence KL to a reference from samples;
//! - [`meters`]: failure-mode meters (one definition each) over [`meters::Reading`]s; [`text`]:
//!   the string rules that read real text;
//! - [`winrate`]: win rates against a baseline and AlpacaEval 2's length-controlled win rate;
//! - [`agreement`]: a judge's (or reward model's) agreement with several human annotators beside
//!   the humans' own, and leave-one-out accuracies against the others' majority;
//! - [`refusal`]: XSTest over-refusal — string-match and judge labels (full compliance, full
//!   refusal, partial refusal), the prompt file, refusal rates with CIs, Cohen's κ between
//!   labelings.

pub mod agreement;
pub mod arena;
pub mod bon;
pub mod kl;
pub mod meters;
pub mod rank;
pub mod refusal;
pub mod rm;
pub mod stats;
pub mod subsets;
pub mod text;
pub mod winrate;

pub use meters::{Meters, PromptKind, Reader, Reading, FAILURE_METERS};
pub use stats::Ci;

/// Bad input to an estimator (sizes that do not match, values out of range).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Usage(String),
}

pub type Result<T> = std::result::Result<T, Error>;
