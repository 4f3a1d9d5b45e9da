//! `cli::run` on bad inputs (messages name the file, line and field) and a small end-to-end run.

mod common;
use clap::Parser;
use common::*;
use mismatch_policy::cli::{run, PolicyCmd};

#[derive(Parser)]
struct Top {
    #[command(subcommand)]
    cmd: PolicyCmd,
}

fn cli(args: &[&str]) -> anyhow::Result<()> {
    let mut v = vec!["mismatch", "train"];
    v.extend_from_slice(args);
    run(Top::try_parse_from(v)?.cmd)
}

fn err(args: &[&str]) -> String {
    format!("{:#}", cli(args).unwrap_err())
}

#[test]
fn bad_inputs_give_errors_naming_file_line_and_field() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let policy = d.join("policy");
    write_random_policy(&policy, 1);
    let p = policy.to_str().unwrap();
    let out = d.join("out");
    let o = out.to_str().unwrap();

    let missing = d.join("nope.jsonl");
    let e = err(&[
        "--algo",
        "rloo",
        "--policy",
        p,
        "--reward",
        "rule:length",
        "--prompts",
        missing.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert!(e.contains("nope.jsonl"), "{e}");

    let bad = d.join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\": \"tell me\"}\n{\"prompt\": \"a\", oops}\n").unwrap();
    let e = err(&[
        "--algo",
        "rloo",
        "--policy",
        p,
        "--reward",
        "rule:length",
        "--prompts",
        bad.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert!(e.contains("bad.jsonl:2"), "{e}");

    std::fs::write(&bad, "{\"prompt\": \"tell me\"}\n\n{\"text\": \"a\"}\n").unwrap();
    let e = err(&[
        "--algo",
        "rloo",
        "--policy",
        p,
        "--reward",
        "rule:length",
        "--prompts",
        bad.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert!(e.contains("bad.jsonl:3") && e.contains("\"prompt\""), "{e}");

    std::fs::write(&bad, "{\"prompt\": 5}\n").unwrap();
    let e = err(&[
        "--algo",
        "rloo",
        "--policy",
        p,
        "--reward",
        "rule:length",
        "--prompts",
        bad.to_str().unwrap(),
        "--out",
        o,
    ]);
    assert!(e.contains("bad.jsonl:1") && e.contains("prompt"), "{e}");

    let good = d.join("prompts.jsonl");
    std::fs::write(&good, "{\"prompt\": \"tell me a story\"}\n").unwrap();
    let g = good.to_str().unwrap();
    let e = err(&["--algo", "rloo", "--policy", p, "--reward", "rule:nonsense", "--prompts", g, "--out", o]);
    assert!(e.contains("rule:nonsense"), "{e}");
    let e = err(&["--algo", "rloo", "--policy", p, "--prompts", g, "--out", o]);
    assert!(e.contains("--reward"), "{e}");
    let e = err(&[
        "--algo",
        "rloo",
        "--policy",
        p,
        "--reward",
        "rule:length",
        "--prompts",
        g,
        "--out",
        o,
        "--num-generations",
        "1",
    ]);
    assert!(e.contains("num_generations"), "{e}");

    let toml = d.join("cfg.toml");
    std::fs::write(&toml, "algo = \"rloo\"\nsteps = 2\nlerning_rate = 0.1\n").unwrap();
    let e = err(&[
        "--config",
        toml.to_str().unwrap(),
        "--policy",
        p,
        "--reward",
        "rule:length",
        "--prompts",
        g,
        "--out",
        o,
    ]);
    assert!(e.contains("cfg.toml: line 3, field lerning_rate"), "{e}");
    std::fs::write(&toml, "algo = \"rloo\"\nsteps = \"two\"\n").unwrap();
    let e = err(&[
        "--config",
        toml.to_str().unwrap(),
        "--policy",
        p,
        "--reward",
        "rule:length",
        "--prompts",
        g,
        "--out",
        o,
    ]);
    assert!(e.contains("cfg.toml: line 2, field steps"), "{e}");

    let prefs = d.join("prefs.jsonl");
    std::fs::write(
        &prefs,
        "{\"prompt\": \"a\", \"chosen\": \"cat\", \"rejected\": \"dog\"}\n{\"prompt\": \"a\", \"chosen\": \"cat\"}\n",
    )
    .unwrap();
    let e = err(&["--algo", "dpo", "--policy", p, "--data", prefs.to_str().unwrap(), "--out", o]);
    assert!(e.contains("prefs.jsonl:2") && e.contains("rejected"), "{e}");

    let e = err(&["--algo", "dpo", "--policy", d.join("no-model").to_str().unwrap(), "--data", g, "--out", o]);
    assert!(!e.is_empty());
}

#[test]
fn config_file_and_flags_run_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let policy = d.join("policy");
    write_random_policy(&policy, 1);
    let p = policy.to_str().unwrap();
    let demos_path = d.join("demos.jsonl");
    let lines: String = demos(32, 1)
        .iter()
        .map(|x| serde_json::json!({"prompt": x.prompt, "completion": x.completion}).to_string() + "\n")
        .collect();
    std::fs::write(&demos_path, lines).unwrap();
    let toml = d.join("cfg.toml");
    std::fs::write(&toml, "algo = \"sft\"\nsteps = 3\nbatch_size = 4\nlearning_rate = 0.001\n").unwrap();
    let out = d.join("sft");
    cli(&[
        "--config",
        toml.to_str().unwrap(),
        "--steps",
        "4",
        "--policy",
        p,
        "--data",
        demos_path.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ])
    .unwrap();
    // The flag overrode the file's steps = 3.
    assert!(out.join("checkpoint-4").join("model.safetensors").exists());
    let prompts_path = d.join("prompts.jsonl");
    std::fs::write(
        &prompts_path,
        "{\"prompt\": \"tell me a story\"}\n{\"prompt\": [{\"role\": \"user\", \"content\": \"tell me\"}]}\n",
    )
    .unwrap();
    let ck = out.join("checkpoint-4");
    let rl = d.join("rloo");
    cli(&[
        "--algo",
        "rloo",
        "--policy",
        ck.to_str().unwrap(),
        "--reward",
        "rule:contains:cat",
        "--prompts",
        prompts_path.to_str().unwrap(),
        "--steps",
        "2",
        "--batch-size",
        "2",
        "--num-generations",
        "2",
        "--max-new-tokens",
        "8",
        "--kl-estimator",
        "k3",
        "--out",
        rl.to_str().unwrap(),
        "--no-progress",
    ])
    .unwrap();
    let m = std::fs::read_to_string(rl.join("metrics.jsonl")).unwrap();
    assert_eq!(m.lines().count(), 2);
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(rl.join("train_config.json")).unwrap()).unwrap();
    assert_eq!(tc["config"]["kl_estimator"], "k3");
    assert_eq!(tc["reward"], "rule:contains:cat");
}

#[test]
fn simpo_is_selectable_and_trains_on_its_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let policy = d.join("policy");
    write_random_policy(&policy, 3);
    let prefs = d.join("prefs.jsonl");
    std::fs::write(&prefs, "{\"prompt\": \"tell me\", \"chosen\": \"the cat sat\", \"rejected\": \"dog\"}\n").unwrap();
    let out = d.join("simpo");
    let (beta, gamma) = (2.0, 0.5);
    cli(&[
        "--algo",
        "simpo",
        "--policy",
        policy.to_str().unwrap(),
        "--data",
        prefs.to_str().unwrap(),
        "--beta",
        "2",
        "--simpo-gamma",
        "0.5",
        "--batch-size",
        "1",
        "--steps",
        "2",
        "--learning-rate",
        "0.01",
        "--out",
        out.to_str().unwrap(),
        "--no-progress",
    ])
    .unwrap();
    let tc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("train_config.json")).unwrap()).unwrap();
    assert_eq!((tc["config"]["algo"].as_str(), tc["config"]["simpo_gamma"].as_f64()), (Some("simpo"), Some(gamma)));
    let m: Vec<serde_json::Value> = std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(m.len(), 2);
    let g = |k: &str| m[0][k].as_f64().unwrap();
    // SimPO's rewards are β·(log π(y)/|y|), no reference: |y| = β·logps/rewards is a token count,
    // and the chosen response has two more tokens than the rejected one.
    let (nw, nl) = (beta * g("logps/chosen") / g("rewards/chosen"), beta * g("logps/rejected") / g("rewards/rejected"));
    assert!(
        (nw - nw.round()).abs() < 1e-3 && (nl - nl.round()).abs() < 1e-3 && (nw - nl - 2.0).abs() < 1e-3,
        "{nw} {nl}"
    );
    // L = −log σ(r_w − r_l − γ).
    let h = g("rewards/chosen") - g("rewards/rejected") - gamma;
    let want = (1.0 + (-h).exp()).ln();
    assert!((g("loss") - want).abs() < 1e-4, "loss {} vs {want}", g("loss"));
    // A step against the loss raises the length-normalised margin.
    assert!(m[1]["rewards/margins"].as_f64().unwrap() > g("rewards/margins"), "{m:?}");
}
