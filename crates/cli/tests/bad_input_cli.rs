//! The `mismatch` binary on bad input: a clear error naming the file and the field or flag,
//! exit code 2, no panic and nothing half-written.

use std::path::Path;
use std::process::{Command, Output};

fn mismatch(args: &[&str], home: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mismatch")).args(args).env("MISMATCH_HOME", home).output().expect("run mismatch")
}

/// The stderr of a run that must fail with exit code 2 (and no panic).
fn refused(o: &Output) -> String {
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(2), "expected exit 2: {e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

use mismatch_testkit::TINY_EXPERIMENT as TINY;

#[test]
fn run_refuses_a_config_that_would_panic_naming_file_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    for (toml, field) in [
        ("[start]\ndemos = 0\n", "start.demos"),
        // Too few demonstrations for one row of block_size + 1 tokens.
        ("seeds = 3\n[start]\ndemos = 1\n", "field `start.demos`: 1 demonstrations (start seed"),
        ("eval_prompts = 0\n", "eval_prompts"),
        ("[bon]\nns = []\n", "bon.ns"),
        ("[start]\nn_head = 3\n", "start.n_embd"),
        // TOML integers are i64: u64::MAX cannot be written in a config.
        ("seed = 18446744073709551615\n", "line 1, field seed"),
    ] {
        let cfg = d.join("exp.toml");
        std::fs::write(&cfg, toml).unwrap();
        let out = d.join("out");
        let e = refused(&mismatch(&["run", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap()], d));
        assert!(e.contains("exp.toml") && e.contains(field), "{toml}: {e}");
        assert!(!out.exists(), "{toml}: nothing may be written");
    }
}

#[test]
fn run_with_the_largest_writable_seed_wraps_its_derived_seeds_without_panicking() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let cfg = d.join("exp.toml");
    std::fs::write(&cfg, format!("seed = 9223372036854775807\nstart_seed = 9223372036854775807\n{TINY}")).unwrap();
    let out = d.join("out");
    let o = mismatch(&["run", "--config", cfg.to_str().unwrap(), "--out", out.to_str().unwrap(), "--no-progress"], d);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary = std::fs::read_to_string(out.join("summary.json")).unwrap();
    assert!(summary.contains("9223372036854775807"), "the seed is recorded");
}

#[test]
fn data_split_refuses_duplicate_names_and_paths_writing_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let input = d.join("pairs.jsonl");
    let rows: String = (0..10)
        .map(|i| format!("{{\"prompt\": \"q{i}\", \"chosen\": \"good {i}\", \"rejected\": \"bad {i}\"}}\n"))
        .collect();
    std::fs::write(&input, rows).unwrap();
    let out = d.join("split");
    let o = out.to_str().unwrap();
    for (names, want) in [
        ("a,a", "--names: \"a\" given twice"),
        ("../x,y", "--names: \"../x\" is not a plain file name"),
        ("x,sub/y", "--names: \"sub/y\" is not a plain file name"),
        ("..,y", "--names: \"..\" is not a plain file name"),
        ("x,", "--names: empty name"),
    ] {
        let e = refused(&mismatch(&["data", "split", input.to_str().unwrap(), "--out-dir", o, "--names", names], d));
        assert!(e.contains(want), "{names}: {e}");
        assert!(!out.exists() && !d.join("x.jsonl").exists(), "{names}: nothing may be written");
    }
    let ok = mismatch(&["data", "split", input.to_str().unwrap(), "--out-dir", o, "--names", "fit,held"], d);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(out.join("fit.jsonl").exists() && out.join("held.jsonl").exists());
}

#[test]
fn policy_train_refuses_flags_the_algorithm_does_not_use() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = d.join("out");
    // The flags are checked before any file is read, so none needs to exist.
    for (algo, extra, flag) in [
        ("dpo", &["--reward", "rule:length"][..], "--reward"),
        ("ipo", &["--reward", "rule:length"][..], "--reward"),
        ("sft", &["--reward", "rule:length"][..], "--reward"),
        ("simpo", &["--reward", "rule:length"][..], "--reward"),
        ("dpo", &["--prompts", "p.jsonl"][..], "--prompts"),
        ("rloo", &["--data", "d.jsonl"][..], "--data"),
        ("rloo", &["--eval-data", "d.jsonl"][..], "--eval-data"),
        ("dpo", &["--kl-coef", "0.1"][..], "--kl-coef"),
        ("sft", &["--target-kl", "6"][..], "--target-kl"),
        ("bon", &["--kl-estimator", "k3"][..], "--kl-estimator"),
        ("ppo", &["--num-generations", "4"][..], "--num-generations"),
        ("dpo", &["--num-generations", "4"][..], "--num-generations"),
        ("bon", &["--steps", "3"][..], "--steps"),
        ("bon", &["--learning-rate", "0.1"][..], "--learning-rate"),
        ("sft", &["--temperature", "1"][..], "--temperature"),
        ("ipo", &["--max-new-tokens", "8"][..], "--max-new-tokens"),
        ("rloo", &["--beta", "0.2"][..], "--beta"),
        ("dpo", &["--simpo-gamma", "1"][..], "--simpo-gamma"),
        ("bon", &["--resume"][..], "--resume"),
        ("rs", &["--save-steps", "2"][..], "--save-steps"),
    ] {
        let mut args = vec!["policy", "train", "--algo", algo, "--policy", "nowhere", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let e = refused(&mismatch(&args, d));
        let want = format!("error: {flag} does not apply to --algo {algo} (it is used by ");
        assert!(e.contains(&want), "{algo} {extra:?}: {e}");
        assert!(!out.exists(), "{algo} {extra:?}: nothing may be written");
    }
    // Flags the algorithm uses pass the check (the run then fails on the missing data file).
    for (algo, extra) in [
        ("simpo", &["--simpo-gamma", "1", "--beta", "2", "--data", "missing.jsonl"][..]),
        ("ppo", &["--kl-coef", "0.1", "--reward", "rule:length", "--prompts", "missing.jsonl"][..]),
        ("bon", &["--num-generations", "4", "--reward", "rule:length", "--prompts", "missing.jsonl"][..]),
    ] {
        let mut args = vec!["policy", "train", "--algo", algo, "--policy", "nowhere", "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let e = refused(&mismatch(&args, d));
        assert!(!e.contains("does not apply") && e.contains("missing.jsonl"), "{algo}: {e}");
    }
}

#[test]
fn rm_train_refuses_an_aggregate_without_an_ensemble() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let out = d.join("rm");
    let o = out.to_str().unwrap();
    for (extra, want) in [
        (
            &["--aggregate", "wco"][..],
            "error: --aggregate wco needs an ensemble (--ensemble K with K ≥ 2), got --ensemble 1",
        ),
        (&["--ensemble", "2", "--uwo-lambda", "1"][..], "error: --uwo-lambda applies only to --aggregate uwo"),
        (
            &["--ensemble", "2", "--aggregate", "uwo", "--uwo-lambda=-1"][..],
            "error: --uwo-lambda must be a finite number ≥ 0",
        ),
    ] {
        let mut args = vec!["rm", "train", "--data", "missing.jsonl", "--out", o];
        args.extend_from_slice(extra);
        let e = refused(&mismatch(&args, d));
        assert!(e.contains(want), "{extra:?}: {e}");
        assert!(!out.exists());
    }
}
