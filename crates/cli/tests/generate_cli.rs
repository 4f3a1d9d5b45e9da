//! `mismatch generate` end to end on the packaged SmolLM2-135M-Instruct (fetched on first use).

use std::process::{Command, Output};

fn mismatch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mismatch")).args(args).output().expect("run mismatch")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "mismatch failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn chat_answer_names_paris() {
    let o = mismatch(&[
        "generate",
        "--model",
        "smollm2-135m",
        "--chat",
        "--prompt",
        "What is the capital of France?",
        "--temperature",
        "0",
    ]);
    let text = stdout(&o);
    assert!(text.contains("Paris"), "{text}");
}

#[test]
fn sampling_is_reproducible_with_a_seed_and_varies_without() {
    let run = |seed: &str| {
        stdout(&mismatch(&[
            "generate",
            "--model",
            "smollm2-135m",
            "--prompt",
            "Once upon a time",
            "--prompt",
            "The best way to learn",
            "--max-new-tokens",
            "24",
            "--temperature",
            "1.0",
            "--top-p",
            "0.95",
            "--seed",
            seed,
            "--json",
        ]))
    };
    let (a, b, c) = (run("11"), run("11"), run("12"));
    assert_eq!(a, b, "same seed must give bit-identical output");
    assert_ne!(a, c, "a different seed should give a different sample");
    for line in a.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let n = v["tokens"].as_array().unwrap().len();
        assert!(n > 0 && n <= 24);
        assert_eq!(v["logprobs"].as_array().unwrap().len(), n);
        // Nucleus truncation renormalises, so each token is at least as likely under q as under π.
        for (q, p) in v["sampling_logprobs"].as_array().unwrap().iter().zip(v["logprobs"].as_array().unwrap()) {
            assert!(q.as_f64().unwrap() >= p.as_f64().unwrap() - 1e-4, "{q} < {p}");
        }
    }
}

#[test]
fn bad_inputs_exit_2_with_a_clear_message() {
    let o = mismatch(&["generate", "--model", "/no/such/model", "--prompt", "hi"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/no/such/model") && !err.contains("panicked"), "{err}");

    let long = "word ".repeat(9000);
    let o = mismatch(&["generate", "--model", "smollm2-135m", "--prompt", &long, "--max-new-tokens", "4"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("exceeds the model's context"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.gguf");
    std::fs::write(&bad, b"GGUF but not really").unwrap();
    let o = mismatch(&["generate", "--model", bad.to_str().unwrap(), "--prompt", "hi"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("broken.gguf") && !err.contains("panicked"), "{err}");
}

/// `--guide` on SmolLM2 with the length rule as the scorer: a seed fixes the output, RAD
/// reports its KL estimate and blockwise its bound, and a large β writes longer replies than
/// β = 0 (the scorer rewards every word and never the end of the reply).
#[test]
fn guided_decoding_follows_its_scorer() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            "smollm2-135m",
            "--chat",
            "--prompt",
            "Name a fruit.",
            "--prompt",
            "Say hello.",
            "--max-new-tokens",
            "16",
            "--seed",
            "3",
            "--json",
            "--guide",
            "rule:length",
        ];
        args.extend_from_slice(extra);
        let out = stdout(&mismatch(&args));
        out.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).collect::<Vec<_>>()
    };
    let rad = run(&["--guide-beta", "3", "--guide-top-k", "4"]);
    assert_eq!(rad, run(&["--guide-beta", "3", "--guide-top-k", "4"]), "same seed, same output");
    let base = run(&["--guide-beta", "0", "--guide-top-k", "4"]);
    let words = |rows: &[serde_json::Value]| rows.iter().map(|r| r["guide_score"].as_f64().unwrap()).sum::<f64>();
    assert!(words(&rad) > words(&base), "β = 3: {} words, β = 0: {}", words(&rad), words(&base));
    assert!(rad.iter().all(|r| r["kl"].as_f64().unwrap() >= 0.0 && r["tokens"].as_array().unwrap().len() <= 16));
    let block = run(&["--guide-method", "block", "--guide-block", "8", "--guide-candidates", "4"]);
    let bound = 4f64.ln() - 0.75;
    for r in &block {
        let blocks = r["tokens"].as_array().unwrap().len().div_ceil(8) as f64;
        assert!((r["kl_bound"].as_f64().unwrap() - blocks * bound).abs() < 1e-9, "{r}");
    }
}

#[test]
fn bad_guide_flags_are_refused() {
    let o = mismatch(&["generate", "--model", "smollm2-135m", "--prompt", "hi", "--guide-beta", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--guide"));
    let o = mismatch(&[
        "generate",
        "--model",
        "smollm2-135m",
        "--prompt",
        "hi",
        "--guide",
        "rule:length",
        "--guide-top-k",
        "0",
    ]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("top-k must be ≥ 1"), "{}", String::from_utf8_lossy(&o.stderr));
    let o = mismatch(&["generate", "--model", "smollm2-135m", "--prompt", "hi", "--guide", "rm:/no/such/rm"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/no/such/rm"));
    let o =
        mismatch(&["generate", "--model", "openai:http://127.0.0.1:9#m", "--prompt", "hi", "--guide", "rule:length"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not expose"));
}
