//! `mismatch data …` subcommands. The CLI binary wires [`DataCmd`] in and maps a [`DataError`] to exit code 2.

use crate::error::{DataError, Result};
use crate::read::{read_dataset, ReadOptions};
use crate::types::Format;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct InputArgs {
    /// Preference file: JSONL or JSON array, optionally gzip-compressed.
    pub file: PathBuf,
    /// Skip detection: trl, hh, openai, sharegpt, pandalm or ranking.
    #[arg(long)]
    pub format: Option<Format>,
    /// Reject HH-RLHF pairs whose transcripts diverge before the final assistant turn.
    #[arg(long)]
    pub strict: bool,
}

impl InputArgs {
    fn options(&self) -> ReadOptions {
        ReadOptions { format: self.format, strict: self.strict }
    }
}

#[derive(Debug, Subcommand)]
pub enum DataCmd {
    /// Validate a preference file and summarise it (format, rows, lengths, duplicates).
    Check {
        #[command(flatten)]
        input: InputArgs,
    },
    /// Convert any supported file to TRL-style JSONL (prompt/chosen/rejected), written atomically.
    Convert {
        #[command(flatten)]
        input: InputArgs,
        #[arg(long)]
        out: PathBuf,
    },
    /// Split by prompt into seeded, prompt-disjoint JSONL files (records kept as they are).
    Split {
        #[command(flatten)]
        input: InputArgs,
        #[arg(long)]
        out_dir: PathBuf,
        /// Comma-separated fractions summing to 1.
        #[arg(long, value_delimiter = ',', default_value = "0.8,0.2")]
        ratios: Vec<f64>,
        /// Comma-separated file names (default train,test or train,validation,test).
        #[arg(long, value_delimiter = ',')]
        names: Option<Vec<String>>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Inter-annotator agreement of multi-annotator pairs (PandaLM): pairwise %, Fleiss' kappa, accuracy ceiling.
    Agreement {
        #[command(flatten)]
        input: InputArgs,
        /// Bootstrap resamples for the 95% CIs.
        #[arg(long, default_value_t = 1000)]
        bootstrap: usize,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

/// Runs a subcommand, printing its report to stdout; the text is what [`run_to_string`] returns.
pub fn run(cmd: DataCmd) -> std::result::Result<(), DataError> {
    println!("{}", run_to_string(cmd)?);
    Ok(())
}

/// Runs a subcommand and returns its report instead of printing it (for tests and embedding).
pub fn run_to_string(cmd: DataCmd) -> Result<String> {
    match cmd {
        DataCmd::Check { input } => {
            let ds = read_dataset(&input.file, input.options())?;
            Ok(crate::stats::summarize(&ds).to_string().trim_end().to_string())
        }
        DataCmd::Convert { input, out } => {
            let ds = read_dataset(&input.file, input.options())?;
            let r = crate::write::convert(&ds, &out)?;
            let mut s = format!(
                "{}: wrote {} TRL-style pairs from {} {} records",
                out.display(),
                r.written,
                ds.records.len(),
                ds.format
            );
            if r.dropped > 0 {
                s += &format!(" ({} items without a decisive majority label skipped)", r.dropped);
            }
            Ok(s)
        }
        DataCmd::Split { input, out_dir, ratios, names, seed } => {
            let ds = read_dataset(&input.file, input.options())?;
            let names = names.unwrap_or_else(|| crate::write::default_names(ratios.len()));
            let parts = crate::write::split(&ds, &out_dir, &ratios, &names, seed)?;
            let lines: Vec<_> =
                parts.iter().map(|p| format!("{}: {} rows, {} prompts", p.path.display(), p.rows, p.prompts)).collect();
            Ok(format!("split {} rows by prompt (seed {seed}):\n{}", ds.records.len(), lines.join("\n")))
        }
        DataCmd::Agreement { input, bootstrap, seed } => {
            let ds = read_dataset(&input.file, input.options())?;
            Ok(crate::agreement::agreement(&ds, bootstrap, seed)?.to_string())
        }
    }
}
