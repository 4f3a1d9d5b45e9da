//! Resuming reproduces an uninterrupted run bit for bit; a NaN reward stops the run with a clear
//! error and leaves the last good checkpoint loadable.

mod common;
use common::*;
use mismatch_policy::reward::{Reward, RuleReward};
use mismatch_policy::train::{train, Algo, PolicyConfig, RunOptions, TrainData};
use std::sync::atomic::{AtomicUsize, Ordering};

fn cfg(algo: Algo) -> PolicyConfig {
    PolicyConfig { steps: 6, save_steps: 2, target_kl: Some(0.5), batch_size: 8, ..rl_config(algo) }
}

fn check_resume(algo: Algo) {
    check_resume_on(algo, prompts());
}

fn check_resume_on(algo: Algo, prompts: Vec<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let policy = sft_policy(tmp.path());
    let spec = policy.to_str().unwrap();
    let reward = RuleReward::Contains("good".into());
    let data = TrainData { prompts, demos: demos(32, 9), ..Default::default() };
    let cfg = PolicyConfig { ptx_coef: if algo == Algo::Ppo { 0.5 } else { 0.0 }, ..cfg(algo) };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train(&cfg, spec, Some(&reward), &data, &a, &RunOptions::default()).unwrap();
    let first =
        train(&cfg, spec, Some(&reward), &data, &b, &RunOptions { stop_after: Some(3), ..Default::default() }).unwrap();
    assert_eq!(first.checkpoints.iter().map(|c| c.0).collect::<Vec<_>>(), vec![2, 3]);
    // A fresh start into a directory with checkpoints is refused.
    let err = train(&cfg, spec, Some(&reward), &data, &b, &RunOptions::default()).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
    let rest = train(&cfg, spec, Some(&reward), &data, &b, &RunOptions { resume: true, ..Default::default() }).unwrap();
    assert_eq!(rest.metrics.len(), 3);
    let read = |d: &std::path::Path, f: &str| std::fs::read(d.join(f)).unwrap();
    let (ma, mb) = (read(&a, "metrics.jsonl"), read(&b, "metrics.jsonl"));
    assert_eq!(String::from_utf8_lossy(&ma).lines().count(), 6);
    assert_eq!(ma, mb, "{algo:?}: metrics.jsonl differs after resume");
    for f in ["model.safetensors", "optimizer.safetensors", "trainer_state.json"] {
        assert_eq!(read(&a.join("checkpoint-6"), f), read(&b.join("checkpoint-6"), f), "{algo:?}: {f}");
    }
    if algo == Algo::Ppo {
        assert_eq!(
            read(&a.join("checkpoint-6"), "value_head.safetensors"),
            read(&b.join("checkpoint-6"), "value_head.safetensors")
        );
        // The adaptive controller moved β away from its start and the move survived the restart.
        let st: serde_json::Value =
            serde_json::from_slice(&read(&b.join("checkpoint-6"), "trainer_state.json")).unwrap();
        assert_ne!(st["kl_coef"].as_f64().unwrap(), cfg.kl_coef);
    }
}

#[test]
fn ppo_resume_is_bit_identical() {
    check_resume(Algo::Ppo);
}

/// 40-word prompts: the 4 samples of a prompt share its forward pass (`Policy::logprobs_shared`).
#[test]
fn rloo_with_shared_long_prompts_resumes_bit_identically() {
    let long = |i: usize| (0..40).map(|j| WORDS[(i * 7 + j * 3) % WORDS.len()]).collect::<Vec<_>>().join(" ");
    check_resume_on(Algo::Rloo, (0..4).map(long).collect());
}

#[test]
fn grpo_resume_is_bit_identical() {
    check_resume(Algo::Grpo);
}

#[test]
fn dpo_resume_is_bit_identical() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = sft_policy(tmp.path());
    let spec = policy.to_str().unwrap();
    let d = demos(64, 4);
    let pairs: Vec<_> = d
        .chunks(2)
        .map(|c| mismatch_policy::train::PrefPair {
            prompt: c[0].prompt.clone(),
            chosen: c[0].completion.clone(),
            rejected: c[1].completion.clone(),
        })
        .collect();
    let data = TrainData { pairs: pairs[..24].to_vec(), eval_pairs: pairs[24..].to_vec(), ..Default::default() };
    let cfg = PolicyConfig {
        algo: Algo::Dpo,
        steps: 5,
        save_steps: 2,
        batch_size: 8,
        learning_rate: 1e-3,
        ..Default::default()
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train(&cfg, spec, None, &data, &a, &RunOptions::default()).unwrap();
    train(&cfg, spec, None, &data, &b, &RunOptions { stop_after: Some(3), ..Default::default() }).unwrap();
    train(&cfg, spec, None, &data, &b, &RunOptions { resume: true, ..Default::default() }).unwrap();
    assert_eq!(std::fs::read(a.join("metrics.jsonl")).unwrap(), std::fs::read(b.join("metrics.jsonl")).unwrap());
}

/// The rule reward, except that call number `bad` returns NaN for one completion.
struct NanAt {
    calls: AtomicUsize,
    bad: usize,
}

impl Reward for NanAt {
    fn name(&self) -> String {
        "nan-at".into()
    }
    fn score(&self, p: &[&str], c: &[&str]) -> mismatch_policy::Result<Vec<f32>> {
        let call = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let mut s = RuleReward::Length { target: None }.score(p, c)?;
        if call == self.bad {
            s[3] = f32::NAN;
        }
        Ok(s)
    }
}

#[test]
fn a_nan_reward_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = sft_policy(tmp.path());
    let data = TrainData { prompts: prompts(), ..Default::default() };
    let out = tmp.path().join("run");
    let reward = NanAt { calls: AtomicUsize::new(0), bad: 4 };
    let err = train(&cfg(Algo::Ppo), policy.to_str().unwrap(), Some(&reward), &data, &out, &RunOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("step 4") && err.contains("NaN") && err.contains("nan-at"), "{err}");
    assert!(out.join("checkpoint-2").exists() && !out.join("checkpoint-4").exists());
    let ck = out.join("checkpoint-2");
    mismatch_models::load_causal_lm(ck.to_str().unwrap(), &candle_core::Device::Cpu, false).unwrap();
    let st: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ck.join("trainer_state.json")).unwrap()).unwrap();
    assert_eq!(st["step"], 2);
    let lines = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 3);
    // The run resumes from checkpoint-2 once the reward behaves.
    let ok = RuleReward::Length { target: None };
    let rest = train(
        &cfg(Algo::Ppo),
        policy.to_str().unwrap(),
        Some(&ok),
        &data,
        &out,
        &RunOptions { resume: true, ..Default::default() },
    )
    .unwrap();
    assert_eq!(rest.metrics.len(), 4);
    assert_eq!(std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().count(), 6);
}

#[test]
fn rejection_sampling_resumes_per_iteration() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = sft_policy(tmp.path());
    let spec = policy.to_str().unwrap();
    let reward = RuleReward::Contains("cat".into());
    let data = TrainData { prompts: prompts(), ..Default::default() };
    let cfg = PolicyConfig {
        algo: Algo::Rs,
        rs_iterations: 3,
        steps: 2,
        num_generations: 4,
        batch_size: 4,
        max_new_tokens: 8,
        learning_rate: 3e-3,
        ..Default::default()
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train(&cfg, spec, Some(&reward), &data, &a, &RunOptions::default()).unwrap();
    let first =
        train(&cfg, spec, Some(&reward), &data, &b, &RunOptions { stop_after: Some(1), ..Default::default() }).unwrap();
    assert_eq!(first.checkpoints.iter().map(|c| c.0).collect::<Vec<_>>(), vec![2]);
    train(&cfg, spec, Some(&reward), &data, &b, &RunOptions { resume: true, ..Default::default() }).unwrap();
    assert_eq!(std::fs::read(a.join("metrics.jsonl")).unwrap(), std::fs::read(b.join("metrics.jsonl")).unwrap());
    assert_eq!(
        std::fs::read(a.join("checkpoint-6/model.safetensors")).unwrap(),
        std::fs::read(b.join("checkpoint-6/model.safetensors")).unwrap()
    );
}
