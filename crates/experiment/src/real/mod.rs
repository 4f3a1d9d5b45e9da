//! `mismatch run` on real models and data: the over-optimisation experiment of [`crate::pipeline`]
//! with a pre-trained policy (e.g. SmolLM2-135M-Instruct), reward models on a pre-trained
//! backbone (e.g. MiniLM) and human preference labels (e.g. Anthropic HH-RLHF) instead of the
//! embedded world. Selected by a `[real]` table in the experiment file ([`RealConfig`]).
//!
//! **What "gold" is here.** There is no true reward for open-ended text, so gold is replaced by
//! held-out human labels. The preference file is split by prompt (seed `real.split_seed`, the
//! same for every seed) into three disjoint parts:
//!
//! 1. a *test* part (`data.eval_pairs` pairs) whose human labels are never trained on;
//! 2. a *gold* part (`real.gold_pairs`, larger than any proxy's data) that trains one evaluation
//!    RM — the stand-in gold, as Gao et al. (2022) use a larger gold RM and Coste et al. (2023)
//!    an RM trained on the human labels;
//! 3. the *proxy* part: each seed permutes it and the proxies train on prefixes of
//!    `data.pair_sizes` pairs (single, mean / WCO / UWO ensembles, WARM; [`crate::proxy`]).
//!
//! The gold score of a completion is the gold RM's score, standardised (like every proxy) on
//! start-policy samples, so the start policy scores about 0. How far that stand-in can be
//! trusted is measured, not assumed: the summary's `annotators_acc_gold` is here the gold RM's
//! accuracy on the held-out human labels. For each proxy, `acc_annotators` is its accuracy on
//! the held-out human labels, `acc_gold` its agreement with the gold RM, `ece` its calibration
//! against the human labels.
//!
//! **A judge as gold.** With `real.judge` (a local model or `openai:URL#MODEL`) no gold RM is
//! trained: gold is the judge's swap-averaged preference for each completion over the start
//! policy's completion to the same prompt ([`judge`]), so mean gold is the win rate against the
//! start policy, the judge's agreement with the held-out human labels is `annotators_acc_gold`,
//! and the summary gains a `judge` section (position consistency, parse failures).
//!
//! **A verifiable task as gold.** With `real.task = "arithmetic"` ([`task`]) there is no
//! preference file: the task generates word problems with known answers, gold is a program
//! (correct final number, few words, no refusal), and the labelled pairs are two start-policy
//! samples per problem judged by simulated annotators with the world's biases (`real.annotators`).
//! Then `annotators_acc_gold` is the annotators' agreement with gold on the held-out pairs, as in
//! the embedded world, and `acc_gold` of a proxy is its agreement with the program.
//!
//! Then, per seed: best-of-n from one pool of start-policy samples; RLOO against the single
//! proxy at every `rl.kl_coefs` and against `rl.mitigations` at the first; DPO on the
//! single-turn proxy pairs (when `dpo.steps > 0`). Step 0 and every checkpoint are evaluated on
//! fixed prompts (XSTest's safe and unsafe prompts, or held-out HH prompts): KL to the start
//! policy, proxy and gold scores, and text meters ([`mismatch_eval::text`]). The results are the same
//! [`crate::pipeline::SeedResult`]s the world produces, so `summary.json` and `report.html` have the
//! same shape; the summary adds `"setting": "real"` and a `"gold"` description.

pub mod config;
pub mod data;
pub mod judge;
pub mod sample;
pub mod setting;
pub mod task;

pub use config::RealConfig;
pub use setting::RealSetting;

/// The summary's `gold` field in the real setting.
pub const GOLD_DESCRIPTION: &str = "No true reward exists for real text: gold is a larger reward model (the gold RM) \
trained on a part of the human preference labels that no proxy sees, standardised on start-policy samples. Each \
proxy's accuracy against held-out human labels is reported as acc_annotators and its agreement with the gold RM as \
acc_gold; annotators_acc_gold is the gold RM's own accuracy on the held-out human labels.";

/// The summary's `gold` field when gold is a judge (`real.judge`).
pub const JUDGE_GOLD_DESCRIPTION: &str = "No true reward exists for real text: gold is an LLM judge's swap-averaged \
preference for a completion over the start policy's completion to the same prompt (judged in both orders; 0.5 = as \
good as the start policy), so mean gold is the win rate against the start policy. Each proxy's accuracy against \
held-out human labels is reported as acc_annotators and its agreement with the judge on those pairs as acc_gold; \
annotators_acc_gold is the judge's own accuracy on the held-out human labels.";

/// The summary's `gold` field when gold is a verifiable task (`real.task`).
pub const TASK_GOLD_DESCRIPTION: &str = "Gold is a program: arithmetic word problems with known answers, gold(y) = \
1[last number in y = answer] − real.concision·words(y) − real.refusal_penalty·1[y refuses]. The proxies learn from \
simulated annotators (real.annotators: length, hedging and over-caution biases, label noise) comparing pairs of the start \
policy's own samples. acc_annotators is a proxy's accuracy on held-out annotator labels, acc_gold its agreement with \
the program; annotators_acc_gold is the annotators' own agreement with the program.";
