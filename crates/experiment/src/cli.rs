//! `mismatch run`: the command-line entry point.

use crate::config::RunConfig;
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone, Default)]
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
    /// Run only seed index I (0-based into the config's seeds) into `--out`, as one job of a
    /// sweep: its metrics, `seed.json` and `manifest.json`, for `--merge`.
    #[arg(long, value_name = "I", requires = "out", conflicts_with_all = ["report_only", "emit_slurm"])]
    pub seed_only: Option<usize>,
    /// Build `summary.json`, `report.html` and `metrics/` in `--out` from the `--seed-only`
    /// directories given (every seed of one experiment), byte-identical to the single-process run.
    #[arg(
        long,
        value_name = "DIR",
        num_args = 1..,
        requires = "out",
        conflicts_with_all = ["config", "seeds", "report_only", "seed_only", "emit_slurm", "print_config"]
    )]
    pub merge: Vec<PathBuf>,
    /// Write `--out`/sweep.slurm, a Slurm job array with one `--seed-only` task per seed, and
    /// print how to submit it and the merge after it.
    #[arg(long, requires = "out", conflicts_with = "report_only")]
    pub emit_slurm: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    if !args.merge.is_empty() {
        let out = args.out.as_deref().expect("clap: --merge requires --out");
        let summary = crate::sweep::merge(&args.merge, out)?;
        eprintln!(
            "merged {} seeds: {}; report: {}",
            args.merge.len(),
            headline(&summary),
            out.join("report.html").display()
        );
        return Ok(());
    }
    let cfg = load_config(args.config.as_deref(), args.seeds)?;
    let cfg_path = args.config.as_deref().unwrap_or(std::path::Path::new("<built-in config>"));
    cfg.validate(cfg_path)?;
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
    let command = single_run_command(&args);
    if args.emit_slurm {
        let cwd = std::env::current_dir().map_err(|e| mismatch_models::Error::io(".", e))?;
        let script = out.join("sweep.slurm");
        let text = crate::sweep::slurm_script(&command, cfg.seeds, &out, &cwd);
        mismatch_models::checkpoint::write_atomic(&script, text.as_bytes())?;
        let merge = crate::sweep::quote(&crate::sweep::merge_command(&out));
        println!(
            "wrote {} ({} tasks). Submit it, and the merge to run once every task has succeeded:",
            script.display(),
            cfg.seeds
        );
        println!("  jobid=$(sbatch --parsable {})", crate::sweep::quote(&script.to_string_lossy()));
        println!("  sbatch --dependency=afterok:$jobid --job-name=mismatch-merge --wrap {merge}");
        return Ok(());
    }
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let t0 = std::time::Instant::now();
    if let Some(i) = args.seed_only {
        crate::sweep::check_index(&cfg, i)?;
        check_start_corpora(&cfg, &[i], cfg_path)?;
        let r = crate::sweep::run_seed_only(&cfg, i, &command, &out, progress)?;
        eprintln!(
            "seed index {i} (seed {}) done in {:.1}s: {}; once every seed has run: mismatch run --merge SEED_DIRS... --out DIR",
            r.seed,
            t0.elapsed().as_secs_f64(),
            out.display(),
        );
        return Ok(());
    }
    let all: Vec<usize> = (0..cfg.seeds).collect();
    check_start_corpora(&cfg, &all, cfg_path)?;
    let summary = crate::report::run_and_report(&cfg, &out, &command, progress)?;
    let (secs, report) = (t0.elapsed().as_secs_f64(), out.join("report.html"));
    eprintln!("done in {secs:.1}s: {}; report: {}", headline(&summary), report.display());
    Ok(())
}

/// `mismatch run` with the flags that change results (`--config`, `--seeds`): what the summary
/// records as the command that reproduces it. The output directory does not change any result,
/// so it is left out: runs into different directories give byte-identical summaries. A
/// `--seed-only` run records this too, so that its merge records the command of the
/// single-process run it reproduces.
fn single_run_command(args: &RunArgs) -> String {
    command_line("mismatch run", &[("--config", path_flag(&args.config)), ("--seeds", flag(args.seeds))])
}

/// `base` followed by each flag that was given, its value shell-quoted.
fn command_line(base: &str, flags: &[(&str, Option<String>)]) -> String {
    let mut command = base.to_string();
    for (name, value) in flags {
        if let Some(v) = value {
            command += &format!(" {name} {}", crate::sweep::quote(v));
        }
    }
    command
}

fn flag(v: Option<usize>) -> Option<String> {
    v.map(|x| x.to_string())
}

fn path_flag(p: &Option<PathBuf>) -> Option<String> {
    p.as_ref().map(|p| p.to_string_lossy().into_owned())
}

/// The experiment file at `config` (the built-in one when None), with `--seeds` applied.
fn load_config(config: Option<&std::path::Path>, seeds: Option<usize>) -> anyhow::Result<RunConfig> {
    let mut cfg = match config {
        Some(p) => RunConfig::load(p)?,
        None => RunConfig::default(),
    };
    if let Some(s) = seeds {
        cfg.seeds = s;
    }
    Ok(cfg)
}

/// The line a finished run ends with: where gold peaked and ended.
fn headline(summary: &serde_json::Value) -> String {
    let h = &summary["headline"];
    format!(
        "gold peaked at {:.3} (step {}), ended at {:.3}",
        h["gold_peak"]["gold"].as_f64().unwrap_or(f64::NAN),
        h["gold_peak"]["step"],
        h["gold_final"]["gold"].as_f64().unwrap_or(f64::NAN),
    )
}

/// Before anything runs: the start policy of every seed at `indices` has a corpus long enough
/// to train on (a small `start.demos` can give fewer tokens than one row of
/// `start.block_size + 1`), so a run does not fail half-way with some seeds' metrics written.
/// Cached start policies are not checked again.
fn check_start_corpora(cfg: &RunConfig, indices: &[usize], path: &std::path::Path) -> mismatch_models::Result<()> {
    if cfg.real.is_some() {
        return Ok(());
    }
    let world = mismatch_world::world::World::new(&cfg.world)?;
    let mut seeds: Vec<u64> = indices.iter().map(|&i| cfg.start_seed_of(crate::pipeline::seed_of(cfg, i))).collect();
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

#[derive(clap::Args, Debug, Clone, Default)]
pub struct LoopArgs {
    /// Experiment config (TOML): the `[loop]` table and every table `mismatch run` reads
    /// (world, start, rm, rl, data.eval_pairs, eval_prompts, seeds).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Rounds (overrides `loop.rounds`).
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Number of seeds (overrides the config).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Labels from people: a `mismatch label serve` database each round's pairs are posted to
    /// (overrides `loop.labels_from`); the loop waits for `--per-item` labels a pair.
    #[arg(long, value_name = "DB")]
    pub labels_from: Option<PathBuf>,
    /// Labels each posted pair needs (overrides `loop.per_item`; the server's `--per-item`).
    #[arg(long)]
    pub per_item: Option<usize>,
    /// Output directory (default: runs/<UTC timestamp>).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Hide progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

/// `mismatch loop`: the outer loop of RLHF in the embedded world ([`crate::outer`]).
pub fn run_loop(args: LoopArgs) -> anyhow::Result<()> {
    let mut cfg = load_config(args.config.as_deref(), args.seeds)?;
    let mut lc = cfg.outer.clone().unwrap_or_default();
    if let Some(r) = args.rounds {
        lc.rounds = r;
    }
    if let Some(db) = &args.labels_from {
        lc.labels_from = db.to_string_lossy().into_owned();
    }
    if let Some(k) = args.per_item {
        lc.per_item = k;
    }
    cfg.outer = Some(lc);
    let cfg_path = args.config.as_deref().unwrap_or(std::path::Path::new("<built-in config>"));
    cfg.validate(cfg_path)?;
    let command = command_line(
        "mismatch loop",
        &[
            ("--config", path_flag(&args.config)),
            ("--rounds", flag(args.rounds)),
            ("--seeds", flag(args.seeds)),
            ("--labels-from", path_flag(&args.labels_from)),
            ("--per-item", flag(args.per_item)),
        ],
    );
    let out = args.out.clone().unwrap_or_else(crate::pipeline::default_out);
    check_start_corpora(&cfg, &(0..cfg.seeds).collect::<Vec<_>>(), cfg_path)?;
    let progress = !args.no_progress && std::io::stderr().is_terminal();
    let t0 = std::time::Instant::now();
    let s = crate::outer::run_loop(&cfg, &out, &command, progress)?;
    eprintln!(
        "done in {:.1}s: {}; gold {} → {}; report: {}",
        t0.elapsed().as_secs_f64(),
        s["finding"].as_str().unwrap_or(""),
        s["start"]["gold"]["mean"],
        s["rounds"]
            .as_array()
            .and_then(|r| r.last())
            .map_or(serde_json::Value::Null, |r| r["policy"]["gold"]["mean"].clone()),
        out.join("report.html").display()
    );
    Ok(())
}
