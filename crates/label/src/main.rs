//! `mismatch-label`: the labelling app on its own (the `mismatch` binary offers the same as `mismatch label`).

use clap::Parser;

#[derive(Parser)]
#[command(
    name = "mismatch-label",
    about = "Label response pairs in the browser; export them for reward-model training."
)]
struct Cli {
    #[command(subcommand)]
    cmd: mismatch_label::cli::LabelCmd,
}

fn main() -> std::process::ExitCode {
    match mismatch_label::cli::run(Cli::parse().cmd) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
