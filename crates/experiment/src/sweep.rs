//! Sweeps as independent jobs: `mismatch run --seed-only I` runs seed index I of an experiment
//! into a directory of its own, and `mismatch run --merge` builds the summary, the report and
//! the metrics from those directories, the same bytes the single-process run writes (each
//! seed's work depends only on its seed, [`crate::pipeline::seed_of`]). A cluster then runs the
//! seeds as separate jobs: `xargs -P`, or the Slurm array `--emit-slurm` writes
//! ([`slurm_script`]); there is no scheduler here.
//!
//! A seed directory holds `metrics/` and `work/` as a run's directory does, `seed.json` (the
//! seed's results, losslessly: [`crate::record`]) and `manifest.json` ([`Manifest`]), written
//! last, so a directory with a manifest holds a finished seed.
//!
//! The merged summary records the command of the equivalent single-process run (`mismatch run
//! [--config C] [--seeds N]`, as each seed run records it): that is the command that reproduces
//! it, and so the merged `summary.json` and `report.html` are byte-identical to that run's.
//! The seeds' final policies stay in their directories (`DIR/seed-I/work/`): the merge writes
//! what the report and the metrics need, not copies of the models.

use crate::config::{parse_toml, RunConfig};
use crate::pipeline::{metrics_path, run_dir_name, seed_of, SeedResult};
use mismatch_models::checkpoint::{read_json, write_atomic};
use mismatch_models::{Error, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub const SEED_FILE: &str = "seed.json";
pub const MANIFEST_FILE: &str = "manifest.json";

/// What a seed directory comes from; the merge takes seeds only from one experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The mismatch version that ran the seed: another version may compute other numbers.
    pub version: String,
    /// The command of the equivalent single-process run, which the merged summary records.
    pub command: String,
    /// The effective experiment config, as TOML.
    pub config: String,
    /// The seed's 0-based index into the config's seeds.
    pub seed_index: usize,
}

/// Runs seed index `index` of `cfg` alone into `out`: its metrics and final policies, then
/// `seed.json` and `manifest.json` (module doc). `command` is the single-process command the
/// merge will record. An index outside the config's seeds is refused before anything is written.
pub fn run_seed_only(cfg: &RunConfig, index: usize, command: &str, out: &Path, progress: bool) -> Result<SeedResult> {
    check_index(cfg, index)?;
    // A rerun into the same directory: it must not read as finished while it runs.
    let manifest_path = out.join(MANIFEST_FILE);
    if manifest_path.exists() {
        std::fs::remove_file(&manifest_path).map_err(|e| Error::io(&manifest_path, e))?;
    }
    let r = crate::report::run_seeds(cfg, &[index], out, progress)?.pop().expect("one seed ran");
    write_atomic(&out.join(SEED_FILE), crate::record::to_json(&r).as_bytes())?;
    let manifest = Manifest {
        version: env!("CARGO_PKG_VERSION").into(),
        command: command.into(),
        config: cfg.to_toml(),
        seed_index: index,
    };
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Usage(e.to_string()))?;
    write_atomic(&manifest_path, &bytes)?;
    Ok(r)
}

/// Refuses a seed index the config does not have.
pub fn check_index(cfg: &RunConfig, index: usize) -> Result<()> {
    if index >= cfg.seeds {
        return Err(Error::Usage(format!(
            "--seed-only {index}: the experiment has {} seed(s), indices 0 to {}",
            cfg.seeds,
            cfg.seeds - 1
        )));
    }
    Ok(())
}

/// One seed directory, read.
struct SeedDir {
    dir: PathBuf,
    manifest: Manifest,
    result: SeedResult,
}

/// Builds `summary.json`, `config.toml`, `report.html` and `metrics/` in `out` from the seed
/// directories `dirs` (any order) and returns the summary. Every directory is read and checked
/// first — one experiment (version, config, command), every seed index exactly once — so an
/// error names the directory at fault and leaves `out` untouched.
pub fn merge(dirs: &[PathBuf], out: &Path) -> Result<Value> {
    let mut seeds = dirs.iter().map(|d| read_seed_dir(d)).collect::<Result<Vec<_>>>()?;
    let first = seeds.first().ok_or_else(|| Error::Usage("--merge needs at least one seed directory".into()))?;
    for s in &seeds[1..] {
        same_experiment(first, s)?;
    }
    let manifest_path = first.dir.join(MANIFEST_FILE);
    let cfg: RunConfig = parse_toml(&manifest_path, &first.manifest.config)?;
    cfg.validate(&manifest_path)?;
    let command = first.manifest.command.clone();
    seeds.sort_by_key(|s| s.manifest.seed_index);
    for s in &seeds {
        let i = s.manifest.seed_index;
        if i >= cfg.seeds {
            return Err(Error::invalid(
                &s.dir,
                format!("seed index {i}, but the experiment has {} seed(s)", cfg.seeds),
            ));
        }
        if s.result.seed != seed_of(&cfg, i) {
            let m =
                format!("seed {}, but seed index {i} of the experiment is seed {}", s.result.seed, seed_of(&cfg, i));
            return Err(Error::invalid(s.dir.join(SEED_FILE), m));
        }
    }
    for w in seeds.windows(2) {
        if w[0].manifest.seed_index == w[1].manifest.seed_index {
            let m = format!("seed index {} is also in {}", w[0].manifest.seed_index, w[0].dir.display());
            return Err(Error::invalid(&w[1].dir, m));
        }
    }
    let have: Vec<usize> = seeds.iter().map(|s| s.manifest.seed_index).collect();
    let missing: Vec<String> = (0..cfg.seeds).filter(|i| !have.contains(i)).map(|i| i.to_string()).collect();
    if !missing.is_empty() {
        return Err(Error::Usage(format!(
            "missing seed index {} (the experiment has seed indices 0 to {}): no directory given holds it; \
             `mismatch run --seed-only I` runs seed index I",
            missing.join(", "),
            cfg.seeds - 1
        )));
    }
    let mut metrics = Vec::new();
    for s in &seeds {
        for run in &s.result.runs {
            let name = run_dir_name(&run.name, s.result.seed);
            let path = metrics_path(&s.dir, &name);
            metrics.push((name, std::fs::read(&path).map_err(|e| Error::io(&path, e))?));
        }
    }
    for (name, bytes) in &metrics {
        write_atomic(&metrics_path(out, name), bytes)?;
    }
    let results: Vec<SeedResult> = seeds.into_iter().map(|s| s.result).collect();
    crate::report::write_report(&cfg, &results, &command, out)
}

fn read_seed_dir(dir: &Path) -> Result<SeedDir> {
    if !dir.is_dir() {
        return Err(Error::invalid(dir, "no such directory"));
    }
    let mpath = dir.join(MANIFEST_FILE);
    if !mpath.exists() {
        let m = format!("no {MANIFEST_FILE}: not a `mismatch run --seed-only` directory, or its run has not finished");
        return Err(Error::invalid(dir, m));
    }
    let manifest: Manifest = read_json(&mpath)?;
    let rpath = dir.join(SEED_FILE);
    let text = std::fs::read_to_string(&rpath).map_err(|e| Error::io(&rpath, e))?;
    let result = crate::record::from_json(&text)
        .map_err(|e| Error::invalid(&rpath, format!("line {}, column {}: {e}", e.line(), e.column())))?;
    Ok(SeedDir { dir: dir.to_path_buf(), manifest, result })
}

/// Refuses `s` unless it comes from the experiment `first` comes from.
fn same_experiment(first: &SeedDir, s: &SeedDir) -> Result<()> {
    let (a, b) = (&first.manifest, &s.manifest);
    let against = first.dir.display();
    if a.version != b.version {
        return Err(Error::invalid(&s.dir, format!("run by mismatch {}, {against} by {}", b.version, a.version)));
    }
    if a.config != b.config {
        let (n, (x, y)) = a
            .config
            .lines()
            .chain(std::iter::repeat(""))
            .zip(b.config.lines().chain(std::iter::repeat("")))
            .enumerate()
            .find(|(_, (x, y))| x != y)
            .expect("configs differ");
        return Err(Error::invalid(
            &s.dir,
            format!("a different experiment config than {against}: line {} is `{y}` there `{x}`", n + 1),
        ));
    }
    if a.command != b.command {
        return Err(Error::invalid(
            &s.dir,
            format!("recorded the command `{}`, {against} `{}` (the summary records one)", b.command, a.command),
        ));
    }
    Ok(())
}

/// A Slurm array script that runs the experiment's `seeds` seeds as tasks 0..seeds−1, task I
/// as `<command> --seed-only I --out <out>/seed-I`, from directory `cwd` (where relative paths
/// in `command` and `out` resolve).
pub fn slurm_script(command: &str, seeds: usize, out: &Path, cwd: &Path) -> String {
    let out_q = quote(&out.to_string_lossy());
    let args = command.strip_prefix("mismatch ").unwrap_or(command);
    format!(
        "#!/bin/bash\n\
         # The experiment as a Slurm job array: task I runs seed index I into {out}/seed-I\n\
         # (`mismatch run --seed-only`). Submit it, then merge once every task has succeeded:\n\
         #   {merge}\n\
         # Each task runs one seed on one thread. Add the --time, --mem and --partition your cluster\n\
         # needs. `mismatch` must be on the nodes' PATH, or set MISMATCH to the binary:\n\
         #   sbatch --export=ALL,MISMATCH=/path/to/mismatch {script}\n\
         #SBATCH --job-name=mismatch\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --cpus-per-task=1\n\
         #SBATCH --chdir={cwd}\n\
         #SBATCH --output={out}/slurm-%A_%a.out\n\
         set -euo pipefail\n\
         \"${{MISMATCH:-mismatch}}\" {args} --seed-only \"$SLURM_ARRAY_TASK_ID\" --out {out_q}/seed-\"$SLURM_ARRAY_TASK_ID\" --no-progress\n",
        out = out.display(),
        merge = merge_command(out),
        script = quote(&out.join("sweep.slurm").to_string_lossy()),
        last = seeds - 1,
        cwd = cwd.display(),
    )
}

/// `mismatch run --merge <out>/seed-* --out <out>`, quoted for a shell (the glob left open).
pub fn merge_command(out: &Path) -> String {
    let o = quote(&out.to_string_lossy());
    format!("mismatch run --merge {o}/seed-* --out {o}")
}

/// `s` as one shell word: as it is when it has no character a shell treats specially, else in
/// single quotes.
pub fn quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_survive_quoting() {
        assert_eq!(quote("runs/x-1"), "runs/x-1");
        assert_eq!(quote("my runs"), "'my runs'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(merge_command(Path::new("a b")), "mismatch run --merge 'a b'/seed-* --out 'a b'");
    }

    #[test]
    fn the_slurm_script_runs_one_seed_per_task() {
        let s = slurm_script("mismatch run --config c.toml", 3, Path::new("runs/x"), Path::new("/home/u"));
        assert!(s.starts_with("#!/bin/bash\n"), "{s}");
        assert!(s.contains("\n#SBATCH --array=0-2\n") && s.contains("\n#SBATCH --chdir=/home/u\n"), "{s}");
        let task = "\"${MISMATCH:-mismatch}\" run --config c.toml --seed-only \"$SLURM_ARRAY_TASK_ID\" --out runs/x/seed-\"$SLURM_ARRAY_TASK_ID\" --no-progress\n";
        assert!(s.ends_with(task), "{s}");
        assert!(s.contains("#   mismatch run --merge runs/x/seed-* --out runs/x\n"), "{s}");
    }
}
