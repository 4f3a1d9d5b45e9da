//! SFT, DPO, best-of-N and rejection sampling on the tiny GPT.

mod common;
use common::*;
use mismatch_policy::reward::RuleReward;
use mismatch_policy::train::{train, Algo, Demo, OnLog, PolicyConfig, PrefPair, RunOptions, TrainData};

#[test]
fn sft_lowers_the_loss_and_writes_a_loadable_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("random");
    write_random_policy(&raw, 7);
    let cfg = PolicyConfig {
        algo: Algo::Sft,
        steps: 30,
        batch_size: 16,
        learning_rate: 3e-3,
        save_steps: 10,
        seed: 1,
        ..Default::default()
    };
    // One fixed answer per prompt: learnable, so the loss must fall far below ln 48.
    let answers = ["the cat sat on the mat", "one big dog ran", "a bird flew over the river", "two fish swam"];
    let demos: Vec<Demo> =
        (0..64).map(|i| Demo { prompt: PROMPTS[i % 4].into(), completion: answers[i % 4].into() }).collect();
    let data = TrainData { demos, ..Default::default() };
    let out = tmp.path().join("sft");
    // The on_log hook sees each record as it is written to metrics.jsonl, in order.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log_seen = seen.clone();
    let hook = OnLog(std::sync::Arc::new(move |rec| {
        log_seen.lock().unwrap().push(serde_json::Value::Object(rec.clone()).to_string())
    }));
    let opts = RunOptions { on_log: Some(hook), ..Default::default() };
    let o = train(&cfg, raw.to_str().unwrap(), None, &data, &out, &opts).unwrap();
    let loss = col(&o.metrics, "loss");
    // Random init over 48 tokens: ≈ ln 48 = 3.87 nats.
    assert!((loss[0] - 48f64.ln()).abs() < 0.5, "{loss:?}");
    assert!(mean(&loss[25..]) < 0.5, "{loss:?}");
    let steps: Vec<usize> = o.checkpoints.iter().map(|c| c.0).collect();
    assert_eq!(steps, vec![10, 20, 30]);
    let lm = mismatch_models::load_causal_lm(o.checkpoints[2].1.to_str().unwrap(), &candle_core::Device::Cpu, false)
        .unwrap();
    assert_eq!(lm.tok.eos_ids, vec![2]);
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 30);
    assert_eq!(*seen.lock().unwrap(), lines.lines().collect::<Vec<_>>());
    assert!(out.join("train_config.json").exists());
    for f in ["trainer_state.json", "optimizer.safetensors", "tokenizer.json", "config.json", "model.safetensors"] {
        assert!(o.checkpoints[2].1.join(f).exists(), "{f}");
    }
}

/// Pairs where the chosen completion mentions "cat" and the rejected one "dog" (else random).
fn pairs(n: usize, seed: u64) -> Vec<PrefPair> {
    let d = demos(2 * n, seed);
    (0..n)
        .map(|i| PrefPair {
            prompt: d[2 * i].prompt.clone(),
            chosen: format!("{} cat", d[2 * i].completion),
            rejected: format!("{} dog", d[2 * i + 1].completion),
        })
        .collect()
}

#[test]
fn dpo_and_ipo_learn_held_out_preferences() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = sft_policy(tmp.path());
    for algo in [Algo::Dpo, Algo::Ipo] {
        let cfg = PolicyConfig {
            algo,
            steps: 20,
            batch_size: 16,
            learning_rate: 1e-3,
            save_steps: 10,
            beta: 0.1,
            ..Default::default()
        };
        let data = TrainData { pairs: pairs(128, 11), eval_pairs: pairs(64, 12), ..Default::default() };
        let out = tmp.path().join(algo.name());
        let o = train(&cfg, policy.to_str().unwrap(), None, &data, &out, &RunOptions::default()).unwrap();
        let acc = col(&o.metrics, "eval_rewards/accuracies");
        let margins = col(&o.metrics, "eval_rewards/margins");
        eprintln!("{algo:?}: eval acc at 10, 20: {}, {}; margins {}, {}", acc[9], acc[19], margins[9], margins[19]);
        assert!(acc[19] >= 0.9, "{algo:?} held-out accuracy {acc:?}");
        assert!(margins[19] > margins[9] && margins[9] > 0.0, "{algo:?} margins {margins:?}");
        // Policy = reference at step 1: implicit rewards are 0 up to float noise.
        assert!(col(&o.metrics, "rewards/margins")[0].abs() < 1e-4, "{:?}", col(&o.metrics, "rewards/margins"));
        for k in ["rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "loss"] {
            assert!(col(&o.metrics, k).iter().all(|v| v.is_finite()), "{k}");
        }
    }
}

#[test]
fn best_of_n_estimate_rises_with_n() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = sft_policy(tmp.path());
    let cfg = PolicyConfig {
        algo: Algo::Bon,
        num_generations: 16,
        batch_size: 4,
        max_new_tokens: 16,
        temperature: 1.0,
        ..Default::default()
    };
    let data = TrainData { prompts: prompts().into_iter().cycle().take(16).collect(), ..Default::default() };
    let out = tmp.path().join("bon");
    let o = train(
        &cfg,
        policy.to_str().unwrap(),
        Some(&RuleReward::Length { target: None }),
        &data,
        &out,
        &RunOptions::default(),
    )
    .unwrap();
    let est = col(&o.metrics, "objective/scores");
    let n = col(&o.metrics, "n");
    assert_eq!(n, vec![1.0, 2.0, 4.0, 8.0, 16.0]);
    eprintln!("BoN length estimates {est:?}");
    assert!(est.windows(2).all(|w| w[1] > w[0]), "{est:?}");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("bon.json")).unwrap()).unwrap();
    let c = &doc["curve"][2];
    assert!((c["kl_bound"].as_f64().unwrap() - (4f64.ln() - 0.75)).abs() < 1e-12);
    assert!(c["ci_low"].as_f64().unwrap() <= c["expected_score"].as_f64().unwrap());
    assert!(c["ci_high"].as_f64().unwrap() >= c["expected_score"].as_f64().unwrap());
    let samples = std::fs::read_to_string(out.join("samples.jsonl")).unwrap();
    assert_eq!(samples.lines().count(), 16 * 16);
    // n = 1 is the plain mean of every sample's reward.
    let all: Vec<f64> = samples
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["reward"].as_f64().unwrap())
        .collect();
    assert!((mean(&all) - est[0]).abs() < 1e-9);
}

#[test]
fn rejection_sampling_raises_the_score_over_iterations() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = sft_policy(tmp.path());
    let cfg = PolicyConfig {
        algo: Algo::Rs,
        rs_iterations: 3,
        steps: 10,
        num_generations: 8,
        batch_size: 16,
        learning_rate: 3e-3,
        max_new_tokens: 16,
        temperature: 1.0,
        ..Default::default()
    };
    let data = TrainData { prompts: prompts().into_iter().cycle().take(32).collect(), ..Default::default() };
    let out = tmp.path().join("rs");
    let o = train(
        &cfg,
        policy.to_str().unwrap(),
        Some(&RuleReward::Contains("cat".into())),
        &data,
        &out,
        &RunOptions::default(),
    )
    .unwrap();
    let s = col(&o.metrics, "objective/scores");
    eprintln!("RS scores per iteration {} {} {}", s[0], s[10], s[20]);
    assert!(s[20] > s[0] + 0.3, "{s:?}");
    let steps: Vec<usize> = o.checkpoints.iter().map(|c| c.0).collect();
    assert_eq!(steps, vec![10, 20, 30]);
}
