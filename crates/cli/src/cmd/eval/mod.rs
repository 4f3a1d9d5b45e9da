//! `mismatch eval`: evaluation suites over files — win rates against a baseline (AlpacaEval's
//! length-controlled one too), ratings of many models, XSTest over-refusal — each writing JSON
//! and a small HTML page into `--out`.

mod agreement;
mod io;
mod judging;
mod mtbench;
mod rank;
mod refusal;
mod winrate;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum EvalCmd {
    /// Win rate and length-controlled win rate against a baseline: from an AlpacaEval
    /// annotations file, or by judging two output files with an LLM judge.
    Winrate(winrate::WinrateArgs),
    /// Ratings of N models from pairwise judgements (Bradley–Terry or Elo) with bootstrap
    /// intervals and the win-probability matrix, as Chatbot Arena computes them.
    Rank(rank::RankArgs),
    /// XSTest over-refusal: string-match and judge labels, refusal rates on safe and unsafe
    /// prompts, and the two labelings' agreement.
    Refusal(refusal::RefusalArgs),
    /// Judge–human agreement on a multi-annotator file (PandaLM), beside human–human agreement
    /// and the human leave-one-out ceiling; for an LLM judge or a reward model.
    Agreement(agreement::AgreementArgs),
    /// MT-Bench single-answer grading: both turns of the 80 questions graded 1–10 by a judge,
    /// scores per category and turn with CIs.
    Mtbench(mtbench::MtBenchArgs),
}

pub fn run(c: EvalCmd) -> anyhow::Result<()> {
    match c {
        EvalCmd::Winrate(a) => winrate::run(a),
        EvalCmd::Rank(a) => rank::run(a),
        EvalCmd::Refusal(a) => refusal::run(a),
        EvalCmd::Agreement(a) => agreement::run(a),
        EvalCmd::Mtbench(a) => mtbench::run(a),
    }
}
