//! Stand-alone `data` command, the same as `mismatch data …`:
//! `cargo run -p mismatch-data --example data -- check ../shared/data/pandalm/testset-v1.json`.

use clap::Parser;
use mismatch_data::cli::{run, DataCmd};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "data")]
struct Cli {
    #[command(subcommand)]
    cmd: DataCmd,
}

fn main() -> ExitCode {
    match run(Cli::parse().cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
