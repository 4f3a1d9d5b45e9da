//! A learned reward end to end: a decoder reward model trained on "prefers completions with the
//! word good" is saved, loaded through `RmReward` / `parse_reward("rm:DIR")`, and RLOO against it
//! raises both the RM score and the rate of the word it learned to like.

mod common;
use common::*;
use mismatch_policy::reward::{parse_reward, Reward, RmReward};
use mismatch_policy::train::{train, Algo, RunOptions, TrainData};
use mismatch_reward::{train_in_memory, Pair, TrainConfig};
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

/// `rm train --ensemble 3 --aggregate wco` records the aggregate, and `--reward rm:DIR` then
/// scores with it: the minimum over the members' rewards (UWO: mean − λ·population variance).
#[test]
fn rm_train_writes_a_wco_or_uwo_ensemble_that_policy_rewards_use() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: mismatch_reward::cli::RmCmd,
    }
    let rm = |args: String| {
        let argv = std::iter::once("rm".to_string()).chain(args.split_whitespace().map(str::to_string));
        mismatch_reward::cli::run(Cli::try_parse_from(argv)?.cmd)
    };
    let tmp = tempfile::tempdir().unwrap();
    let backbone = tmp.path().join("backbone");
    write_random_policy(&backbone, 5);
    let data = tmp.path().join("pairs.jsonl");
    let lines: String = pairs(40, 3)
        .iter()
        .map(|p| serde_json::json!({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}).to_string() + "\n")
        .collect();
    std::fs::write(&data, lines).unwrap();
    let common = format!(
        "train --backbone {} --data {} --ensemble 3 --epochs 1 --batch-size 8 --lr 1e-3 --no-progress",
        backbone.display(),
        data.display()
    );
    let held_out = pairs(12, 99);
    let p: Vec<&str> = held_out.iter().map(|x| x.prompt.as_str()).collect();
    let c: Vec<&str> = held_out.iter().map(|x| x.chosen.as_str()).collect();
    for (flags, name, lambda) in [("--aggregate wco", "wco", 0.5), ("--aggregate uwo --uwo-lambda 2", "uwo", 2.0)] {
        let out = tmp.path().join(name);
        rm(format!("{common} {flags} --out {}", out.display())).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("model").join("config.json")).unwrap()).unwrap();
        assert_eq!((cfg["aggregate"].as_str(), cfg["uwo_lambda"].as_f64()), (Some(name), Some(lambda)));
        let reward = parse_reward(&format!("rm:{}", out.display())).unwrap();
        let got = reward.score(&p, &c).unwrap();
        let members = RmReward::load(&out).unwrap().model().score_members(&p, &c).unwrap();
        assert_eq!(members.len(), 3);
        for i in 0..p.len() {
            let r: Vec<f64> = members.iter().map(|m| m[i] as f64).collect();
            let mean = r.iter().sum::<f64>() / 3.0;
            let var = r.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 3.0;
            let want =
                if name == "wco" { r.iter().cloned().fold(f64::INFINITY, f64::min) } else { mean - lambda * var };
            assert!((got[i] as f64 - want).abs() < 1e-5, "{name} row {i}: {} vs {want} from {r:?}", got[i]);
        }
        // The members disagree somewhere, so the aggregate is not the mean.
        assert!(members[0] != members[1]);
    }
    // Aggregates that would mean nothing are refused before training.
    let e = rm(format!("train --backbone x --data y --aggregate wco --out {}", tmp.path().join("z").display()));
    assert!(e.unwrap_err().to_string().contains("--aggregate wco needs an ensemble"));
    let e =
        rm(format!("train --backbone x --data y --ensemble 2 --uwo-lambda 1 --out {}", tmp.path().join("z").display()));
    assert!(e.unwrap_err().to_string().contains("--uwo-lambda applies only to --aggregate uwo"));
    assert!(!tmp.path().join("z").exists());
}
