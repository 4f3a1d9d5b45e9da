//! PPO, RLOO and GRPO on a tiny GPT with a rule reward: the score rises while the KL to the
//! reference grows from 0; a large KL coefficient holds the KL down.

mod common;
use common::*;
use mismatch_policy::reward::RuleReward;
use mismatch_policy::train::{train, Algo, PolicyConfig, RunOptions, TrainData};

fn run(
    cfg: &PolicyConfig,
    policy: &std::path::Path,
    out: &std::path::Path,
) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let reward = RuleReward::Contains("good".into());
    let data = TrainData { prompts: prompts(), ..Default::default() };
    let t = std::time::Instant::now();
    let o = train(cfg, policy.to_str().unwrap(), Some(&reward), &data, out, &RunOptions::default()).unwrap();
    eprintln!("{:?}: {:.1} ms/step", cfg.algo, t.elapsed().as_secs_f64() * 1e3 / cfg.steps as f64);
    o.metrics
}

fn check_learns(algo: Algo) {
    let tmp = tempfile::tempdir().unwrap();
    let policy = sft_policy(tmp.path());
    let mut cfg = rl_config(algo);
    if algo == Algo::Grpo {
        // GRPO's token-mean loss has gradients about 1/length of RLOO's sequence-sum ones.
        cfg.learning_rate = 1e-2;
    }
    let m = run(&cfg, &policy, &tmp.path().join("run"));
    let s = col(&m, "objective/scores");
    let kl = col(&m, "objective/kl");
    eprintln!("{algo:?} scores {s:?}\nkl {kl:?}");
    let (early, late) = (mean(&s[..5]), mean(&s[s.len() - 5..]));
    assert!(late > early + 0.5, "{algo:?}: scores did not rise: {early} -> {late}");
    assert!(kl[0].abs() < 1e-4, "{algo:?}: KL at step 1 should be 0, got {}", kl[0]);
    assert!(mean(&kl[kl.len() - 5..]) > 0.5, "{algo:?}: KL did not grow: {kl:?}");
    for k in [
        "objective/entropy",
        "objective/rlhf_reward",
        "objective/non_score_reward",
        "loss/policy_avg",
        "policy/approxkl_avg",
        "policy/clipfrac_avg",
        "val/ratio",
        "completions/mean_length",
        "val/num_eos_tokens",
    ] {
        assert!(col(&m, k).iter().all(|v| v.is_finite()), "{algo:?}: {k} missing or not finite");
    }
}

#[test]
fn ppo_raises_the_score_and_the_kl() {
    check_learns(Algo::Ppo);
}

#[test]
fn rloo_raises_the_score_and_the_kl() {
    check_learns(Algo::Rloo);
}

#[test]
fn grpo_raises_the_score_and_the_kl() {
    check_learns(Algo::Grpo);
}

#[test]
fn a_large_kl_coefficient_keeps_the_policy_close() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = sft_policy(tmp.path());
    let free = run(&rl_config(Algo::Rloo), &policy, &tmp.path().join("free"));
    let tied = run(&PolicyConfig { kl_coef: 2.0, ..rl_config(Algo::Rloo) }, &policy, &tmp.path().join("tied"));
    let (kf, kt) = (mean(&col(&free, "objective/kl")[15..]), mean(&col(&tied, "objective/kl")[15..]));
    eprintln!("KL free {kf}, tied {kt}");
    assert!(kt < 0.25 * kf && kt < 0.5, "KL with β = 2: {kt}, with β = 0.01: {kf}");
}
