//! `rm train` / `rm eval` end to end. The training machinery (ensembles, resume, metrics,
//! WARM, K-wise losses, probabilistic head, subsets) runs on a tiny GPT backbone built here
//! (milliseconds per step); MiniLM is used where the real encoder is the point: frozen
//! features on a slice of HH-RLHF, and a full fine-tune that must move the BERT weights.

mod common;

use clap::Parser;
use common::{pairs, tiny_gpt, write_jsonl, write_rankings};
use mismatch_reward::cli::{run, RmCmd};
use mismatch_reward::{HeadKind, RewardModel};
use std::path::Path;

/// Real HH-RLHF pairs from the data folder beside the checkout (`../shared/data`).
const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/hh-rlhf/harmless-base-test.jsonl.gz");

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

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    let text = String::from_utf8(read(&dir.join("metrics.jsonl"))).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn train_resume_eval_ensemble_warm_and_subsets() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt = tiny_gpt(tmp.path());
    let data = tmp.path().join("pairs.jsonl");
    write_jsonl(&data, &pairs(60, 11), None);
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    let common = format!(
        "train --backbone {} --data {} --ensemble 2 --epochs 2 --batch-size 8 --lr 1e-3 --seed 7 --no-progress",
        gpt.display(),
        data.display()
    );
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
    // Resuming with other options is refused.
    let e = rm(&format!("{common} --weight-decay 0.1 --resume --out {}", b.display())).unwrap_err().to_string();
    assert!(e.contains("different options"), "{e}");

    // TRL-named metrics, one line per member and epoch.
    let lines = metrics(&a);
    assert_eq!(lines.len(), 4);
    for k in ["loss", "accuracy", "margin", "mean_reward", "min_reward", "max_reward", "eval_loss", "eval_accuracy"] {
        assert!(lines[3][k].as_f64().unwrap().is_finite(), "{k}");
    }
    assert!(lines[1]["loss"].as_f64() < lines[0]["loss"].as_f64());

    let model = RewardModel::load(&a.join("model"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(model.members.len(), 2);
    assert!(model.config.temperature > 0.0);

    // Eval on data with a `subset` field: per-subset accuracy and RewardBench sections.
    let ev_data = tmp.path().join("eval.jsonl");
    write_jsonl(&ev_data, &pairs(24, 12), Some(&["alpacaeval-easy", "hep-go", "my-own-subset"]));
    let ev = tmp.path().join("eval");
    rm(&format!("eval --model {} --data {} --out {}", a.display(), ev_data.display(), ev.display())).unwrap();
    let rep: serde_json::Value = serde_json::from_slice(&read(&ev.join("eval.json"))).unwrap();
    let acc = &rep["accuracy"];
    assert!(acc["ci_low"].as_f64() <= acc["accuracy"].as_f64() && acc["accuracy"].as_f64() <= acc["ci_high"].as_f64());
    assert_eq!(acc["n"], 24);
    assert!(rep["member_margin_std"].as_f64().unwrap() > 0.0);
    assert_eq!(rep["consistency"].as_array().unwrap().len(), mismatch_reward::eval::EDITS.len());
    assert_eq!(rep["reliability"].as_array().unwrap().iter().map(|b| b["count"].as_u64().unwrap()).sum::<u64>(), 24);
    let subs = rep["subsets"]["subsets"].as_array().unwrap();
    assert_eq!(subs.len(), 3);
    assert!(subs.iter().all(|s| s["accuracy"]["n"] == 8));
    let secs: Vec<&str> =
        rep["subsets"]["sections"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(secs, ["Chat", "Reasoning"]);
    // Single-subset sections: the section score is that subset's accuracy; headline their mean.
    let sub_acc =
        |name: &str| subs.iter().find(|s| s["subset"] == name).unwrap()["accuracy"]["accuracy"].as_f64().unwrap();
    let head = rep["subsets"]["rewardbench"]["score"].as_f64().unwrap();
    assert!((head - (sub_acc("alpacaeval-easy") + sub_acc("hep-go")) / 2.0).abs() < 1e-12);

    // WARM: one merged member, loadable and evaluable.
    let w = tmp.path().join("w");
    rm(&format!("{common} --warm --out {}", w.display())).unwrap();
    let warm = RewardModel::load(&w.join("model"), &candle_core::Device::Cpu).unwrap();
    assert!(warm.config.warm && warm.members.len() == 1);
    assert_eq!(RewardModel::load(&w.join("ensemble"), &candle_core::Device::Cpu).unwrap().members.len(), 2);
    rm(&format!("eval --model {} --data {} --limit 8 --out {}", w.display(), data.display(), ev.display())).unwrap();
}

#[test]
fn kwise_and_plackett_luce_on_rankings() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt = tiny_gpt(tmp.path());
    let data = tmp.path().join("rank.jsonl");
    write_rankings(&data, 40, 3);
    for loss in ["kwise", "pl"] {
        let out = tmp.path().join(loss);
        rm(&format!(
            "train --backbone {} --data {} --loss {loss} --epochs 3 --batch-size 8 --lr 3e-3 --eval-split 0.25 --no-progress --out {}",
            gpt.display(),
            data.display(),
            out.display()
        ))
        .unwrap();
        let lines = metrics(&out);
        assert_eq!(lines.len(), 3);
        assert!(lines[2]["loss"].as_f64() < lines[0]["loss"].as_f64(), "{loss}: {lines:?}");
        // Eval pairs are the held-out rankings' C(4,2) = 6 pairs each.
        assert!(lines[2]["eval_accuracy"].as_f64().unwrap() > 0.5, "{loss}: {lines:?}");
    }
    // The K-wise losses need ranking data.
    let pairs_file = tmp.path().join("pairs.jsonl");
    write_jsonl(&pairs_file, &pairs(8, 1), None);
    let e = rm(&format!(
        "train --backbone {} --data {} --loss kwise --no-progress --out {}",
        gpt.display(),
        pairs_file.display(),
        tmp.path().join("x").display()
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("pairs.jsonl") && e.contains("ranking"), "{e}");
}

#[test]
fn probabilistic_head_trains_and_reports_variance() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt = tiny_gpt(tmp.path());
    let data = tmp.path().join("pairs.jsonl");
    write_jsonl(&data, &pairs(64, 21), None);
    let out = tmp.path().join("p");
    rm(&format!(
        "train --backbone {} --data {} --head probabilistic --epochs 3 --batch-size 8 --lr 3e-3 --no-progress --out {}",
        gpt.display(),
        data.display(),
        out.display()
    ))
    .unwrap();
    let lines = metrics(&out);
    assert!(lines[2]["loss"].as_f64() < lines[0]["loss"].as_f64(), "{lines:?}");
    let m = RewardModel::load(&out.join("model"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(m.config.head, HeadKind::Probabilistic);
    let p = pairs(4, 22);
    let prompts: Vec<&str> = p.iter().map(|x| x.prompt.as_str()).collect();
    let c: Vec<&str> = p.iter().map(|x| x.chosen.as_str()).collect();
    let o = &m.outputs_members(&prompts, &c).unwrap()[0];
    assert_eq!(o.dims(), &[4, 2]);
    let lv = o.to_vec2::<f32>().unwrap();
    assert!(lv.iter().all(|r| r[1].is_finite()));
    // The variance head trained away from its initial log σ² = 0.
    assert!(lv.iter().any(|r| r[1].abs() > 1e-3), "{lv:?}");
    // Only BT is defined for the probabilistic head.
    let e = rm(&format!(
        "train --backbone {} --data {} --head probabilistic --loss margin --no-progress --out {}",
        gpt.display(),
        data.display(),
        tmp.path().join("x").display()
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("probabilistic"), "{e}");
}

#[test]
fn minilm_frozen_on_hh_rlhf() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    rm(&format!(
        "train --data {DATA} --limit 8 --eval-split 0.25 --frozen --ensemble 2 --epochs 2 --batch-size 2 --lr 3e-3 --no-progress --out {}",
        a.display()
    ))
    .unwrap();
    let lines = metrics(&a);
    assert_eq!(lines.len(), 4);
    assert!(lines[1]["loss"].as_f64() < lines[0]["loss"].as_f64());
    let model = RewardModel::load(&a.join("model"), &candle_core::Device::Cpu).unwrap();
    assert_eq!(model.config.backbone_kind, mismatch_reward::BackboneKind::Encoder);
    let ev = tmp.path().join("eval");
    rm(&format!("eval --model {} --data {DATA} --limit 2 --out {}", a.display(), ev.display())).unwrap();
    let rep: serde_json::Value = serde_json::from_slice(&read(&ev.join("eval.json"))).unwrap();
    assert_eq!(rep["accuracy"]["n"], 2);
    assert!(rep.get("subsets").is_none());
}

#[test]
fn full_fine_tune_moves_minilm() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("short.jsonl");
    let p: Vec<mismatch_reward::Pair> = ["a", "b", "c"]
        .iter()
        .map(|x| mismatch_reward::Pair {
            prompt: format!("Question {x}?"),
            chosen: "A helpful answer.".into(),
            rejected: "No.".into(),
            margin: 0.0,
        })
        .collect();
    write_jsonl(&data, &p, None);
    let out = tmp.path().join("ft");
    rm(&format!(
        "train --data {} --eval-split 0.34 --epochs 1 --batch-size 2 --no-progress --out {}",
        data.display(),
        out.display()
    ))
    .unwrap();
    let m = RewardModel::load(&out.join("model"), &candle_core::Device::Cpu).unwrap();
    assert!(!m.config.frozen_backbone);
    // The backbone moved: its weights differ from the pretrained ones.
    let base = mismatch_models::hub::model_dir("minilm-l6").unwrap();
    let t0 = candle_core::safetensors::load(base.join("model.safetensors"), &candle_core::Device::Cpu).unwrap();
    let t1 = candle_core::safetensors::load(out.join("model/member-0/model.safetensors"), &candle_core::Device::Cpu)
        .unwrap();
    let name = "encoder.layer.0.attention.self.query.weight";
    let d = (&t0[name] - &t1[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(d > 0.0, "{name} did not move");
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
    let e = rm(&format!(
        "train --backbone {} --data {DATA} --out {}",
        tmp.path().display(),
        tmp.path().join("o").display()
    ))
    .unwrap_err()
    .to_string();
    assert!(e.contains("no .gguf") || e.contains("config.json"), "{e}");
}
