//! Milliseconds per training step of PPO, RLOO and GRPO on a tiny GPT (2 layers, 64 dims,
//! word vocabulary, ≤ 24 new tokens, 16 prompts; RLOO/GRPO 4 samples per prompt).
//! `cargo run --release -p mismatch-policy --example step_time`

#[path = "../tests/common/mod.rs"]
mod common;

use mismatch_policy::reward::RuleReward;
use mismatch_policy::train::{train, Algo, PolicyConfig, RunOptions, TrainData};

fn main() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = common::sft_policy(tmp.path());
    let reward = RuleReward::Length { target: None };
    let data = TrainData { prompts: common::prompts(), ..Default::default() };
    for (algo, epochs) in
        [(Algo::Ppo, 1), (Algo::Ppo, 4), (Algo::Rloo, 1), (Algo::Rloo, 4), (Algo::Grpo, 1), (Algo::Grpo, 4)]
    {
        let cfg = PolicyConfig {
            algo,
            steps: 20,
            batch_size: 16,
            num_generations: 4,
            max_new_tokens: 24,
            temperature: 1.0,
            learning_rate: 1e-4,
            num_ppo_epochs: epochs,
            num_mini_batches: 1,
            save_steps: 1000,
            ..Default::default()
        };
        let out = tmp.path().join(format!("{}-{epochs}", algo.name()));
        let (t, cpu0) = (std::time::Instant::now(), cpu_seconds());
        let o = train(&cfg, policy.to_str().unwrap(), Some(&reward), &data, &out, &RunOptions::default()).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1e3 / cfg.steps as f64;
        let cpu_ms = (cpu_seconds() - cpu0) * 1e3 / cfg.steps as f64;
        let len: f64 = o.metrics.iter().map(|m| m["completions/mean_length"].as_f64().unwrap()).sum::<f64>() / 20.0;
        let rows = if algo == Algo::Ppo { 16 } else { 64 };
        println!("{:>5} epochs={epochs}: {ms:6.1} ms/step wall, {cpu_ms:6.1} ms/step CPU ({rows} completions, mean length {len:.1} tokens; incl. final checkpoint)", algo.name());
    }
}

/// User + system CPU time of this process (all threads), from /proc/self/stat; 0 elsewhere.
/// Reported next to wall time because a shared machine inflates the latter.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the ")"; 100 ticks/s.
    (ticks(11) + ticks(12)) / 100.0
}
