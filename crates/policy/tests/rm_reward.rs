//! A learned reward end to end: a decoder reward model trained on "prefers completions with the
//! word good" is saved, loaded through `RmReward` / `parse_reward("rm:DIR")`, and RLOO against it
//! raises both the RM score and the rate of the word it learned to like.

mod common;
use common::*;
use mismatch_policy::reward::{parse_reward, Reward, RmReward};
use mismatch_policy::train::{train, Algo, RunOptions, TrainData};
use mismatch_reward::train::{train_in_memory, Pair, TrainConfig};
use rand::{Rng, SeedableRng};

fn pairs(n: usize, seed: u64) -> Vec<Pair> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let d = demos(n, seed);
    d.into_iter()
        .map(|x| {
            let words: Vec<&str> = x.completion.split(' ').collect();
            let at = rng.random_range(0..=words.len());
            let mut good = words.clone();
            good.insert(at, "good");
            Pair { prompt: x.prompt, chosen: good.join(" "), rejected: x.completion, margin: 0.0 }
        })
        .collect()
}

#[test]
fn rloo_against_a_learned_reward_model() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = sft_policy(tmp.path());
    let cfg =
        TrainConfig { epochs: 3, batch_size: 32, lr: 1e-3, seed: 11, ..TrainConfig::new(policy.to_str().unwrap()) };
    let rm = train_in_memory(&cfg, &pairs(300, 21), &[], false).unwrap();
    let rm_dir = tmp.path().join("rm");
    rm.save(&rm_dir).unwrap();

    let reward = RmReward::load(&rm_dir).unwrap();
    let held_out = pairs(60, 99);
    let p: Vec<&str> = held_out.iter().map(|x| x.prompt.as_str()).collect();
    let c: Vec<&str> = held_out.iter().map(|x| x.chosen.as_str()).collect();
    let r: Vec<&str> = held_out.iter().map(|x| x.rejected.as_str()).collect();
    let (sc, sr) = (reward.score(&p, &c).unwrap(), reward.score(&p, &r).unwrap());
    let acc = sc.iter().zip(&sr).filter(|(a, b)| a > b).count() as f64 / sc.len() as f64;
    assert!(acc > 0.9, "reward model held-out accuracy {acc}");
    // The spec form loads the same model and gives bit-identical scores.
    let by_spec = parse_reward(&format!("rm:{}", rm_dir.display())).unwrap();
    assert_eq!(by_spec.score(&p, &c).unwrap(), sc);

    let mut pc = rl_config(Algo::Rloo);
    pc.steps = 16;
    let data = TrainData { prompts: prompts(), ..Default::default() };
    let o = train(&pc, policy.to_str().unwrap(), Some(&reward), &data, &tmp.path().join("run"), &RunOptions::default())
        .unwrap();
    let s = col(&o.metrics, "objective/scores");
    let (early, late) = (mean(&s[..4]), mean(&s[s.len() - 4..]));
    eprintln!("RM scores {s:?}");
    assert!(late > early + 0.5, "RLOO did not raise the learned reward: {early} -> {late}");
}
