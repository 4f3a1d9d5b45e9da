//! `rm train` / `rm eval` end to end on a slice of HH-RLHF harmless-base with the frozen
//! MiniLM backbone (embeddings cached once; seconds on CPU).

use clap::Parser;
use mismatch_reward::cli::{run, RmCmd};
use mismatch_reward::RewardModel;
use std::path::Path;

const DATA: &str = "/work/shared/data/hh-rlhf/harmless-base-test.jsonl.gz";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: RmCmd,
}

fn rm(args: &str) -> anyhow::Result<()> {
    let argv = std::iter::once("rm").chain(args.split_whitespace());
    run(Cli::try_parse_from(argv)?.cmd)
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn train_resume_eval_ensemble_and_warm() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let common = format!("train --data {DATA} --limit 48 --frozen --ensemble 2 --epochs 2 --batch-size 8 --lr 3e-3 --seed 7 --no-progress");
    rm(&format!("{common} --out {}", a.display())).unwrap();

    // Interrupted after one epoch, then resumed: bit-identical weights and metrics.
    let e = rm(&format!("{common} --stop-after-epochs 1 --out {}", b.display())).unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
    rm(&format!("{common} --resume --out {}", b.display())).unwrap();
    for m in ["member-0", "member-1"] {
        let f = Path::new("model").join(m).join("model.safetensors");
        assert!(read(&a.join(&f)) == read(&b.join(&f)), "{m} differs after resume");
    }
    assert_eq!(read(&a.join("metrics.jsonl")), read(&b.join("metrics.jsonl")));

    // TRL-named metrics, one line per member and epoch.
    let text = String::from_utf8(read(&a.join("metrics.jsonl"))).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    for k in ["loss", "accuracy", "margin", "mean_reward", "min_reward", "max_reward", "eval_loss", "eval_accuracy"] {
        assert!(lines[3][k].as_f64().unwrap().is_finite(), "{k}");
    }
    // Training reduces the loss on the training pairs.
    assert!(lines[1]["loss"].as_f64() < lines[0]["loss"].as_f64());

    let model = RewardModel::load(&a.join("model"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(model.members.len(), 2);
    assert!(model.config.temperature > 0.0);

    let ev = tmp.path().join("eval");
    rm(&format!("eval --model {} --data {DATA} --limit 16 --out {}", a.display(), ev.display())).unwrap();
    let rep: serde_json::Value = serde_json::from_slice(&read(&ev.join("eval.json"))).unwrap();
    let acc = &rep["accuracy"];
    assert!(acc["ci_low"].as_f64() <= acc["accuracy"].as_f64() && acc["accuracy"].as_f64() <= acc["ci_high"].as_f64());
    assert_eq!(acc["n"], 16);
    assert!(rep["member_margin_std"].as_f64().unwrap() > 0.0);
    assert_eq!(rep["consistency"].as_array().unwrap().len(), mismatch_reward::eval::EDITS.len());
    assert_eq!(rep["reliability"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum::<u64>(), 16);

    // WARM: one merged member, loadable and evaluable.
    let w = tmp.path().join("w");
    rm(&format!(
        "train --data {DATA} --limit 24 --frozen --ensemble 2 --warm --epochs 1 --no-progress --out {}",
        w.display()
    ))
    .unwrap();
    let warm = RewardModel::load(&w.join("model"), &candle_core::Device::Cpu).unwrap();
    assert!(warm.config.warm && warm.members.len() == 1);
    rm(&format!("eval --model {} --data {DATA} --limit 8 --out {}", w.display(), ev.display())).unwrap();
}

#[test]
fn full_fine_tune_runs_on_a_handful_of_pairs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("ft");
    rm(&format!(
        "train --data {DATA} --limit 6 --eval-split 0.34 --epochs 1 --batch-size 4 --no-progress --out {}",
        out.display()
    ))
    .unwrap();
    let m = RewardModel::load(&out.join("model"), &candle_core::Device::Cpu).unwrap();
    assert!(!m.config.frozen_backbone);
    // The backbone moved: its weights differ from the pretrained ones.
    let base = mismatch_models::hub::model_dir("minilm-l6").unwrap();
    assert!(read(&base.join("model.safetensors")) != read(&out.join("model/member-0/model.safetensors")));
}

#[test]
fn bad_input_is_a_named_error() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"nonsense\": 1}\n").unwrap();
    let e = rm(&format!("train --data {} --frozen --out {}", bad.display(), tmp.path().join("o").display()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.jsonl"), "{e}");
    let e = rm(&format!("eval --model {} --data {DATA} --out {}", tmp.path().display(), tmp.path().display()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("config.json"), "{e}");
}
