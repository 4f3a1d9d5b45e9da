//! `mismatch label …` subcommands. The CLI binary wires [`LabelCmd`] in; [`run`]'s error converts into
//! `anyhow::Error` and should end the process with a non-zero status.

use crate::error::{LabelError, Result};
use crate::export::Aggregate;
use crate::server::ServerConfig;
use clap::{Args, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Pairs to label: any file mismatch-data reads (TRL, HH-RLHF, OpenAI DPO, ShareGPT, PandaLM, rankings).
    /// Imported before serving; pairs already in the database are not added twice. Optional when the
    /// database already holds items.
    #[arg(long)]
    pub pairs: Option<PathBuf>,
    /// The labels database (SQLite; created if missing).
    #[arg(long)]
    pub db: PathBuf,
    /// How many annotators label each item.
    #[arg(long, default_value_t = 3)]
    pub per_item: usize,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (printed).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Bootstrap resamples for the dashboard's 95% intervals.
    #[arg(long, default_value_t = 1000)]
    pub bootstrap: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Args)]
pub struct AddAnnotatorArgs {
    #[arg(long)]
    pub db: PathBuf,
    /// The annotator's name (unique; shown on the dashboard, never to other annotators).
    pub name: String,
    /// May see the dashboard and /api/stats.
    #[arg(long)]
    pub admin: bool,
    /// The name exists: issue a new link (the old one stops working, their sessions end).
    #[arg(long)]
    pub rotate: bool,
    /// Where the server is reached, for the printed link.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long)]
    pub db: PathBuf,
    /// Output JSONL (prompt/chosen/rejected/annotator/margin), written atomically.
    #[arg(long)]
    pub out: PathBuf,
    /// majority: one row per item with a strict majority for one response; all: one row per label. Ties and
    /// both-bad labels are dropped either way.
    #[arg(long, value_enum, default_value_t = Aggregate::Majority)]
    pub aggregate: Aggregate,
    /// Only items with at least this many labels give rows (pass K for fully labelled items only).
    #[arg(long, default_value_t = 1)]
    pub min_labels: usize,
}

#[derive(Debug, Subcommand)]
pub enum LabelCmd {
    /// Serve the labelling web app (imports --pairs first).
    Serve(ServeArgs),
    /// Add an annotator and print their login link (only a hash of its token is stored).
    AddAnnotator(AddAnnotatorArgs),
    /// Export labels as TRL-style preference pairs for `mismatch rm train`.
    Export(ExportArgs),
}

/// The login link for a token.
pub fn login_link(url: &str, token: &str) -> String {
    format!("{}/login?token={token}", url.trim_end_matches('/'))
}

/// Runs a subcommand, printing what it did to stdout.
pub fn run(cmd: LabelCmd) -> Result<()> {
    match cmd {
        LabelCmd::Serve(a) => {
            if let Some(pairs) = &a.pairs {
                let r = crate::import::import_file(&a.db, pairs)?;
                println!(
                    "{}: {} pairs, {} new, {} already in {}",
                    pairs.display(),
                    r.read,
                    r.added,
                    r.existing,
                    a.db.display()
                );
            }
            let cfg = ServerConfig {
                db: a.db.clone(),
                host: a.host,
                port: a.port,
                per_item: a.per_item,
                bootstrap: a.bootstrap,
                seed: a.seed,
            };
            crate::server::serve(&cfg, |addr| {
                // Written without println!: a closed stdout (a parent that stopped reading) must not stop
                // the server.
                use std::io::Write;
                let mut out = std::io::stdout();
                let _ =
                    writeln!(out, "listening on http://{addr} ({} annotators per item); Ctrl-C stops", cfg.per_item);
                let _ = writeln!(
                    out,
                    "add people with: mismatch label add-annotator --db {} NAME [--admin]",
                    cfg.db.display()
                );
                let _ = out.flush();
            })
        }
        LabelCmd::AddAnnotator(a) => {
            let mut conn = crate::db::open(&a.db)?;
            let token = crate::auth::add_annotator(&mut conn, &a.name, a.admin, a.rotate).map_err(|e| match e {
                LabelError::Usage(m) => LabelError::Usage(format!("{}: {m}", a.db.display())),
                e => e,
            })?;
            let role = if a.admin { "admin" } else { "annotator" };
            println!("{role} {}: {}", a.name.trim(), login_link(&a.url, &token));
            Ok(())
        }
        LabelCmd::Export(a) => {
            let r = crate::export::export(&a.db, &a.out, a.aggregate, a.min_labels)?;
            let what = match a.aggregate {
                Aggregate::All => "tie/both-bad labels or labels of items with too few",
                Aggregate::Majority => "items without a majority for one response or with too few labels",
            };
            println!("{}: {} rows from {} labels ({} {what} dropped)", a.out.display(), r.rows, r.labels, r.dropped);
            Ok(())
        }
    }
}
