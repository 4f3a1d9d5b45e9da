//! `mismatch run`: the command-line entry point.

use crate::config::RunConfig;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Experiment config (TOML); every field is optional and defaults to the built-in config.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Output directory (default: runs/<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Number of seeds (overrides the config).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Hide progress bars.
    #[arg(long)]
    pub no_progress: bool,
    /// Print the effective config as TOML and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Only rewrite `report.html` from the `summary.json` already in `--out` (no experiment):
    /// a report from an older version rendered by this one.
    #[arg(long, requires = "out")]
    pub report_only: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut cfg = match &args.config {
        Some(p) => RunConfig::load(p)?,
        None => RunConfig::default(),
    };
    if let Some(s) = args.seeds {
        cfg.seeds = s;
    }
    cfg.validate(args.config.as_deref().unwrap_or(std::path::Path::new("<built-in config>")))?;
    if args.print_config {
        print!("{}", cfg.to_toml());
        return Ok(());
    }
    let out = args.out.clone().unwrap_or_else(crate::pipeline::default_out);
    if args.report_only {
        let path = out.join("summary.json");
        let summary: serde_json::Value = mismatch_models::checkpoint::read_json(&path)?;
        let page = crate::report::render(&summary);
        mismatch_models::checkpoint::write_atomic(&out.join("report.html"), page.as_bytes())?;
        eprintln!("report: {}", out.join("report.html").display());
        return Ok(());
    }
    check_start_corpora(&cfg, args.config.as_deref().unwrap_or(std::path::Path::new("<built-in config>")))?;
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let mut command = String::from("mismatch run");
    if let Some(c) = &args.config {
        command += &format!(" --config {}", c.display());
    }
    if let Some(s) = args.seeds {
        command += &format!(" --seeds {s}");
    }
    // The output directory does not change any result, so it is left out: runs into different
    // directories give byte-identical summaries.
    let t0 = std::time::Instant::now();
    let summary = crate::report::run_and_report(&cfg, &out, &command, progress)?;
    let h = &summary["headline"];
    eprintln!(
        "done in {:.1}s: gold peaked at {:.3} (step {}), ended at {:.3}; report: {}",
        t0.elapsed().as_secs_f64(),
        h["gold_peak"]["gold"].as_f64().unwrap_or(f64::NAN),
        h["gold_peak"]["step"],
        h["gold_final"]["gold"].as_f64().unwrap_or(f64::NAN),
        out.join("report.html").display()
    );
    Ok(())
}

/// Before anything runs: every seed's start policy has a corpus long enough to train on (a
/// small `start.demos` can give fewer tokens than one row of `start.block_size + 1`), so a run
/// does not fail half-way with some seeds' metrics written. Cached start policies are not
/// checked again.
fn check_start_corpora(cfg: &RunConfig, path: &std::path::Path) -> mismatch_models::Result<()> {
    if cfg.real.is_some() {
        return Ok(());
    }
    let world = mismatch_world::world::World::new(&cfg.world)?;
    let mut seeds: Vec<u64> =
        (0..cfg.seeds as u64).map(|i| cfg.start_seed_of(mismatch_models::seed::offset(cfg.seed, i))).collect();
    seeds.dedup();
    let root = mismatch_world::start::home()?;
    for s in seeds {
        let key = mismatch_world::start::cache_key(&cfg.world, &cfg.start, s);
        if root.join("worlds").join(key).join("policy").join("model.safetensors").exists() {
            continue; // trained before: its corpus was long enough
        }
        if let Err(msg) = mismatch_world::start::check_corpus(&world, &cfg.start, s) {
            let m = format!("field `start.demos`: {} demonstrations (start seed {s}): {msg}", cfg.start.demos);
            return Err(mismatch_models::Error::invalid(path, m));
        }
    }
    Ok(())
}
