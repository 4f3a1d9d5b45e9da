//! Sweeps as independent jobs (`mismatch run --seed-only` / `--merge`), through the library:
//!
//! - `seed_only_runs_merged_equal_the_single_run`: a three-seed tiny world experiment run in one
//!   process and as three seed runs (out of order) merged; summary.json, report.html,
//!   config.toml and every metrics file must be byte-identical.
//! - the same seed directories merged wrongly: a seed missing, a seed twice, a seed of another
//!   config, a directory that is no seed run, and `--seed-only` past the last seed: each is
//!   refused naming the seed index or the directory, and nothing is written to the output.
//!
//! The binary's side (exit code 2, `--emit-slurm`'s script run task by task) is
//! `crates/cli/tests/sweep_cli.rs`.

use mismatch_experiment::config::{parse_toml, RunConfig};
use mismatch_experiment::sweep::{merge, run_seed_only};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const COMMAND: &str = "mismatch run --config tiny.toml --seeds 3";

fn tiny() -> RunConfig {
    let mut c: RunConfig = parse_toml(Path::new("tiny.toml"), mismatch_testkit::TINY_EXPERIMENT).unwrap();
    c.seeds = 3;
    // Seeds side by side in the single run, one at a time in the seed runs: the same numbers.
    c.threads = 2;
    c.rl.mitigations = vec![mismatch_experiment::proxy::RmKind::Wco];
    c
}

/// Every file under `dir`, by path relative to it, except the final policies (`work/`).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                if p != root.join("work") {
                    walk(root, &p, out);
                }
            } else {
                out.insert(p.strip_prefix(root).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn refused(dirs: &[PathBuf], out: &Path) -> String {
    let e = merge(dirs, out).unwrap_err().to_string();
    assert!(!out.exists(), "a refused merge wrote {}: {e}", out.display());
    e
}

#[test]
fn seed_only_runs_merged_equal_the_single_run() {
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("MISMATCH_HOME", home.path());
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cfg = tiny();
    let single = d.join("single");
    mismatch_experiment::report::run_and_report(&cfg, &single, COMMAND, false).unwrap();

    let seed_dir = |i: usize| d.join(format!("parts/seed-{i}"));
    for i in [2, 0, 1] {
        let r = run_seed_only(&cfg, i, COMMAND, &seed_dir(i), false).unwrap();
        assert_eq!(r.seed, i as u64);
        for f in ["seed.json", "manifest.json"] {
            assert!(seed_dir(i).join(f).exists(), "{f}");
        }
    }
    let merged = d.join("merged");
    let dirs = [seed_dir(1), seed_dir(2), seed_dir(0)];
    let summary = merge(&dirs, &merged).unwrap();
    assert_eq!(summary["command"], COMMAND);
    assert_eq!(summary["seeds"], serde_json::json!([0, 1, 2]));

    let (want, got) = (files(&single), files(&merged));
    let names = |m: &BTreeMap<PathBuf, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "the merge writes the files the single run writes");
    let metrics = want.keys().filter(|p| p.starts_with("metrics")).count();
    assert_eq!(metrics, 3 * 3, "three seeds × (RL single, RL WCO, DPO): {:?}", names(&want));
    for (path, bytes) in &want {
        assert!(&got[path] == bytes, "{} differs between the single run and the merge", path.display());
    }

    // Merged wrongly: refused naming the seed index or the directory; nothing written.
    let out = d.join("bad");
    let e = refused(&[seed_dir(0), seed_dir(2)], &out);
    assert!(e.contains("missing seed index 1"), "{e}");
    let e = refused(&[seed_dir(0), seed_dir(1), seed_dir(2), seed_dir(1)], &out);
    assert!(e.contains("seed index 1 is also in") && e.contains("parts/seed-1"), "{e}");
    let not_a_seed = d.join("parts/empty");
    std::fs::create_dir_all(&not_a_seed).unwrap();
    let e = refused(&[seed_dir(0), not_a_seed, seed_dir(1)], &out);
    assert!(e.contains("parts/empty") && e.contains("no manifest.json"), "{e}");

    // A seed of another experiment (the DPO β differs): refused naming its directory and the line.
    let mut other = cfg.clone();
    other.dpo.beta *= 2.0;
    let stray = d.join("other/seed-2");
    run_seed_only(&other, 2, COMMAND, &stray, false).unwrap();
    let e = refused(&[seed_dir(0), seed_dir(1), stray], &out);
    assert!(e.contains("other/seed-2") && e.contains("a different experiment config") && e.contains("beta"), "{e}");

    // --seed-only past the last seed: refused before anything is written.
    let past = d.join("parts/seed-3");
    let e = run_seed_only(&cfg, 3, COMMAND, &past, false).unwrap_err().to_string();
    assert!(e.contains("--seed-only 3") && e.contains("3 seed(s), indices 0 to 2"), "{e}");
    assert!(!past.exists());
}
