//! `convert` round trips and `split` determinism / prompt-disjointness.

mod common;
use common::*;
use mismatch_data::cli::{run_to_string, DataCmd, InputArgs};
use mismatch_data::*;
use std::collections::HashSet;

fn input(file: std::path::PathBuf) -> InputArgs {
    InputArgs { file, format: None, strict: false }
}

#[test]
fn convert_round_trips_every_pairwise_format() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "hh-rlhf/harmless-base-test.jsonl.gz",
        "orca-dpo-pairs/validation.jsonl",
        "llama-factory-demo/dpo_en_demo.json",
    ] {
        let src = read(&shared(f));
        let out = dir.path().join("out.jsonl");
        let msg = run_to_string(DataCmd::Convert { input: input(shared(f)), out: out.clone() }).unwrap();
        assert!(msg.contains(&format!("wrote {} TRL-style pairs", src.records.len())), "{msg}");
        let back = read(&out);
        assert_eq!(back.format, Format::Trl, "{f}");
        let (Records::Pairs(a), Records::Pairs(b)) = (&src.records, &back.records) else { panic!() };
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert_eq!(
                (&x.prompt, &x.chosen, &x.rejected, x.margin),
                (&y.prompt, &y.chosen, &y.rejected, y.margin),
                "{f}:{}",
                x.line
            );
        }
    }
    // No temporary files left behind by the atomic write.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec![std::ffi::OsString::from("out.jsonl")]);
}

#[test]
fn convert_pandalm_writes_majority_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.jsonl");
    let msg =
        run_to_string(DataCmd::Convert { input: input(shared("pandalm/testset-v1.json")), out: out.clone() }).unwrap();
    assert!(
        msg.ends_with(
            "wrote 894 TRL-style pairs from 999 pandalm records (105 items without a decisive majority label skipped)"
        ),
        "{msg}"
    );
    assert_eq!(read(&out).records.len(), 894);
}

fn lines(p: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(p).unwrap().lines().map(str::to_owned).collect()
}

#[test]
fn split_is_seeded_deterministic_and_prompt_disjoint() {
    for f in ["pandalm/testset-v1.json", "hh-rlhf/harmless-base-test.jsonl.gz"] {
        let src = read(&shared(f));
        let dir = tempfile::tempdir().unwrap();
        let run = |sub: &str, seed: u64| {
            let d = dir.path().join(sub);
            run_to_string(DataCmd::Split {
                input: input(shared(f)),
                out_dir: d.clone(),
                ratios: vec![0.8, 0.2],
                names: None,
                seed,
            })
            .unwrap();
            (lines(&d.join("train.jsonl")), lines(&d.join("test.jsonl")), d)
        };
        let (train, test, d) = run("a", 3);
        let (train2, test2, _) = run("b", 3);
        let (train3, _, _) = run("c", 4);
        assert_eq!((&train, &test), (&train2, &test2), "{f}: same seed, same bytes");
        assert_ne!(train, train3, "{f}: another seed, another split");
        assert_eq!(train.len() + test.len(), src.records.len());
        let n = src.records.len() as f64;
        assert!((train.len() as f64 / n - 0.8).abs() < 0.03, "{f}: {} / {}", train.len(), n);
        // Records are written unchanged, so reading a split gives the same records; prompts never cross.
        let prompts = |p: &std::path::Path| -> HashSet<String> {
            let ds = read(p);
            (0..ds.records.len()).map(|i| ds.records.prompt(i).key()).collect()
        };
        let (a, b) = (prompts(&d.join("train.jsonl")), prompts(&d.join("test.jsonl")));
        assert!(a.is_disjoint(&b), "{f}");
        let all: HashSet<String> = (0..src.records.len()).map(|i| src.records.prompt(i).key()).collect();
        assert_eq!(a.len() + b.len(), all.len());
    }
}

#[test]
fn split_three_ways_and_bad_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let f = shared("orca-dpo-pairs/validation.jsonl");
    let out = run_to_string(DataCmd::Split {
        input: input(f.clone()),
        out_dir: dir.path().into(),
        ratios: vec![0.5, 0.25, 0.25],
        names: None,
        seed: 0,
    })
    .unwrap();
    let sizes: Vec<usize> =
        ["train", "validation", "test"].iter().map(|n| lines(&dir.path().join(format!("{n}.jsonl"))).len()).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 284, "{out}");
    assert!(sizes.iter().zip([142.0, 71.0, 71.0]).all(|(&s, t)| (s as f64 - t).abs() <= 1.0), "{sizes:?}");
    let e = run_to_string(DataCmd::Split {
        input: input(f.clone()),
        out_dir: dir.path().into(),
        ratios: vec![0.8, 0.3],
        names: None,
        seed: 0,
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "--ratios: must sum to 1, they sum to 1.1");
    let e = run_to_string(DataCmd::Split {
        input: input(f),
        out_dir: dir.path().into(),
        ratios: vec![1.0],
        names: None,
        seed: 0,
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "--ratios: need at least two positive numbers, got [1.0]");
}

#[test]
fn check_command_reports_the_summary() {
    let out = run_to_string(DataCmd::Check { input: input(shared("hh-rlhf/harmless-base-test.jsonl.gz")) }).unwrap();
    assert!(out.contains("format:           hh (conversational, gzip)"), "{out}");
    assert!(out.contains("rows:             2312"), "{out}");
    assert!(out.contains("lines 1255, 1689, 1951, 1953, 2037"), "{out}");
    let forced =
        InputArgs { file: shared("orca-dpo-pairs/validation.jsonl"), format: Some(Format::Trl), strict: false };
    let e = run_to_string(DataCmd::Check { input: forced }).unwrap_err();
    assert!(e.to_string().ends_with("validation.jsonl:1: missing field `chosen`"), "{e}");
}
