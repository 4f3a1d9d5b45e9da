//! `mismatch run` as a sweep of independent jobs, through the binary:
//!
//! - `emitted_slurm_tasks_merged_equal_the_single_run`: `--emit-slurm` writes a job array for a
//!   two-seed tiny experiment; its script is run by bash once per task (as Slurm would, with
//!   `SLURM_ARRAY_TASK_ID`), then the printed merge command; summary.json, report.html and the
//!   metrics files must be byte-identical to `mismatch run --config tiny.toml --seeds 2`'s.
//! - `sweep_mistakes_exit_2_and_write_nothing`: `--seed-only` past the last seed, a merge with a
//!   seed missing, with a seed twice and with a seed of another config: exit code 2, an error
//!   naming the seed index or the directory, nothing written to `--out`.
//!
//! The library's side (three seeds out of order, every file compared) is
//! `crates/experiment/tests/sweep.rs`.

use mismatch_testkit::TINY_EXPERIMENT;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_mismatch");

/// `cmd` run in `dir` with its own start-policy cache, as the user would from a shell.
fn in_dir(mut cmd: Command, dir: &Path) -> Output {
    cmd.current_dir(dir).env("MISMATCH_HOME", dir.join("home")).output().expect("run")
}

fn mismatch(args: &[&str], dir: &Path) -> Output {
    let mut c = Command::new(BIN);
    c.args(args);
    in_dir(c, dir)
}

fn ok(o: Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The stderr of a run that must fail with exit code 2 (and no panic).
fn refused(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "expected exit 2: {e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

fn setup() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("tiny.toml"), TINY_EXPERIMENT).unwrap();
    tmp
}

#[test]
fn emitted_slurm_tasks_merged_equal_the_single_run() {
    let tmp = setup();
    let d = tmp.path();
    ok(mismatch(&["run", "--config", "tiny.toml", "--seeds", "2", "--out", "single", "--no-progress"], d));

    let printed = ok(mismatch(&["run", "--config", "tiny.toml", "--seeds", "2", "--emit-slurm", "--out", "runs/x"], d));
    let script = std::fs::read_to_string(d.join("runs/x/sweep.slurm")).unwrap();
    assert!(script.contains("#SBATCH --array=0-1\n"), "{script}");
    assert!(printed.contains("jobid=$(sbatch --parsable runs/x/sweep.slurm)"), "{printed}");
    let merge_line = "sbatch --dependency=afterok:$jobid --job-name=mismatch-merge --wrap 'mismatch run --merge runs/x/seed-* --out runs/x'";
    assert!(printed.contains(merge_line), "{printed}");
    for task in ["1", "0"] {
        let mut bash = Command::new("bash");
        bash.arg("runs/x/sweep.slurm").env("SLURM_ARRAY_TASK_ID", task).env("MISMATCH", BIN);
        ok(in_dir(bash, d));
        assert!(d.join(format!("runs/x/seed-{task}/manifest.json")).exists());
    }
    // The merge as the dependent job runs it: sh expands the glob.
    let mut sh = Command::new("sh");
    sh.args(["-c", "\"$MISMATCH\" run --merge runs/x/seed-* --out runs/x"]).env("MISMATCH", BIN);
    ok(in_dir(sh, d));

    let single = d.join("single");
    let merged = d.join("runs/x");
    let mut compared = vec![];
    for f in ["summary.json", "report.html", "config.toml"] {
        assert!(std::fs::read(single.join(f)).unwrap() == std::fs::read(merged.join(f)).unwrap(), "{f} differs");
        compared.push(f.to_string());
    }
    for e in std::fs::read_dir(single.join("metrics")).unwrap() {
        let run = e.unwrap().file_name();
        let f = Path::new("metrics").join(&run).join("metrics.jsonl");
        assert!(std::fs::read(single.join(&f)).unwrap() == std::fs::read(merged.join(&f)).unwrap(), "{f:?} differs");
        compared.push(f.display().to_string());
    }
    assert_eq!(compared.len(), 3 + 2 * 2, "two seeds × (RL, DPO) metrics: {compared:?}");
    let summary = std::fs::read_to_string(merged.join("summary.json")).unwrap();
    assert!(summary.contains("\"command\": \"mismatch run --config tiny.toml --seeds 2\""), "{summary}");
}

#[test]
fn sweep_mistakes_exit_2_and_write_nothing() {
    let tmp = setup();
    let d = tmp.path();
    let e = refused(&mismatch(&["run", "--config", "tiny.toml", "--seed-only", "1", "--out", "p/seed-1"], d));
    assert!(e.contains("--seed-only 1: the experiment has 1 seed(s), indices 0 to 0"), "{e}");
    assert!(!d.join("p").exists(), "a refused --seed-only wrote its directory");

    for i in ["0", "1"] {
        let out = format!("p/seed-{i}");
        ok(mismatch(&["run", "--config", "tiny.toml", "--seeds", "2", "--seed-only", i, "--out", &out], d));
    }
    std::fs::write(
        d.join("other.toml"),
        format!("eval_prompts = 3\n{}", TINY_EXPERIMENT.replace("eval_prompts = 2\n", "")),
    )
    .unwrap();
    ok(mismatch(&["run", "--config", "other.toml", "--seeds", "2", "--seed-only", "1", "--out", "q/seed-1"], d));

    for (dirs, want) in [
        (&["p/seed-0"][..], "missing seed index 1"),
        (&["p/seed-0", "p/seed-1", "p/seed-0"][..], "p/seed-0: seed index 0 is also in p/seed-0"),
        (&["p/seed-0", "q/seed-1"][..], "q/seed-1: a different experiment config than p/seed-0"),
    ] {
        let mut args = vec!["run", "--merge"];
        args.extend(dirs);
        args.extend(["--out", "merged"]);
        let e = refused(&mismatch(&args, d));
        assert!(e.contains(want), "{dirs:?}: {e}");
        assert!(!d.join("merged").exists(), "{dirs:?}: a refused merge wrote its output");
    }
}
