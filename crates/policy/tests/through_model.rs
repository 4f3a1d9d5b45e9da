//! The losses drive a real (tiny, randomly initialised) GPT through `completion_logprobs`:
//! gradients reach the weights and a few SGD steps move each objective the right way.

mod common;

use candle_core::{DType, Device};
use candle_nn::{Optimizer, VarMap, SGD};
use mismatch_models::{completion_logprobs, Gpt, GptConfig};
use mismatch_policy::dpo::{preference_loss, PairLogps, PreferenceLoss};
use mismatch_policy::{masked, ppo, sft};

fn tiny(seed: u64) -> (Gpt, VarMap) {
    let cfg = GptConfig::new(16, 1, 2, 16, 32);
    let vm = VarMap::new();
    let m = Gpt::init(&cfg, &vm, seed, DType::F32, &Device::Cpu).unwrap();
    (m, vm)
}

#[test]
fn sft_loss_decreases() {
    let (model, vm) = tiny(1);
    let mut opt = SGD::new(vm.all_vars(), 0.5).unwrap();
    let prompts = vec![vec![1u32, 2, 3], vec![4, 5]];
    let completions = vec![vec![6u32, 7, 8, 9], vec![10, 11]];
    let mut losses = vec![];
    for _ in 0..10 {
        let c = completion_logprobs(&model, &prompts, &completions, 0).unwrap();
        let l = sft::sft_loss(&c).unwrap();
        losses.push(masked::scalar(&l).unwrap());
        opt.backward_step(&l).unwrap();
    }
    // Random init: loss ≈ ln 16 = 2.77 at the start.
    assert!((losses[0] - 16f64.ln()).abs() < 0.5, "{losses:?}");
    assert!(losses[9] < losses[0] - 0.3, "{losses:?}");
}

#[test]
fn dpo_widens_the_margin() {
    let (policy, vm) = tiny(2);
    let (reference, _) = tiny(2);
    let mut opt = SGD::new(vm.all_vars(), 0.5).unwrap();
    let prompts = vec![vec![1u32, 2], vec![3u32]];
    let chosen = vec![vec![5u32, 6, 7], vec![8u32]];
    let rejected = vec![vec![9u32, 10], vec![11u32, 12, 13]];
    let len = |v: &[Vec<u32>]| {
        candle_core::Tensor::new(v.iter().map(|x| x.len() as f32).collect::<Vec<_>>(), &Device::Cpu).unwrap()
    };
    let rc = completion_logprobs(&reference, &prompts, &chosen, 0).unwrap().sum().unwrap();
    let rr = completion_logprobs(&reference, &prompts, &rejected, 0).unwrap().sum().unwrap();
    let mut margins = vec![];
    for _ in 0..10 {
        let c = completion_logprobs(&policy, &prompts, &chosen, 0).unwrap().sum().unwrap();
        let r = completion_logprobs(&policy, &prompts, &rejected, 0).unwrap().sum().unwrap();
        let pair = PairLogps {
            chosen: c,
            rejected: r,
            ref_chosen: rc.clone(),
            ref_rejected: rr.clone(),
            chosen_len: len(&chosen),
            rejected_len: len(&rejected),
        };
        let (l, _, m) = preference_loss(&PreferenceLoss::Dpo { beta: 0.1, label_smoothing: 0.0 }, &pair).unwrap();
        margins.push(m["rewards/margins"]);
        opt.backward_step(&l).unwrap();
    }
    // Same weights as the reference at step 0: implicit rewards are exactly 0.
    assert!(margins[0].abs() < 1e-6, "{margins:?}");
    assert!(margins[9] > 0.05, "{margins:?}");
}

#[test]
fn ppo_step_raises_probability_of_positive_advantage_tokens() {
    let (model, vm) = tiny(3);
    let mut opt = SGD::new(vm.all_vars(), 0.5).unwrap();
    let prompts = vec![vec![1u32, 2], vec![3u32, 4]];
    let completions = vec![vec![5u32, 6], vec![7u32, 8]];
    let old = completion_logprobs(&model, &prompts, &completions, 0).unwrap();
    let old_lp = old.logprobs.detach();
    // Row 0 good, row 1 bad.
    let adv = candle_core::Tensor::new(&[[1f32, 1.0], [-1.0, -1.0]], &Device::Cpu).unwrap();
    for _ in 0..3 {
        let c = completion_logprobs(&model, &prompts, &completions, 0).unwrap();
        let pl = ppo::policy_loss(&c.logprobs, &old_lp, &adv, &c.mask, 0.2).unwrap();
        opt.backward_step(&pl.loss).unwrap();
    }
    let new = completion_logprobs(&model, &prompts, &completions, 0).unwrap();
    let d = (new.sum().unwrap() - old.sum().unwrap().detach()).unwrap().to_vec1::<f32>().unwrap();
    assert!(d[0] > 0.0 && d[1] < 0.0, "change in log π per row: {d:?}");
}

/// `Policy::logprobs_shared` equals `Policy::logprobs` on the expanded rows, both where the
/// prompts are long enough for each to run once and where they are not.
#[test]
fn shared_prompt_logprobs_match_the_expanded_rows() {
    let tmp = tempfile::tempdir().unwrap();
    common::write_random_policy(tmp.path(), 3);
    let policy = mismatch_policy::Policy::load(tmp.path().to_str().unwrap(), true, false).unwrap();
    let enc = |s: &str| policy.encode_prompt(s).unwrap();
    let long = (0..30).map(|j| common::WORDS[j % common::WORDS.len()]).collect::<Vec<_>>().join(" ");
    for prompts in [vec![enc(&long), enc("tell me a story")], vec![enc("a cat"), enc("the dog ran")]] {
        let group = [0usize, 0, 0, 1, 1, 1];
        let comps: Vec<Vec<u32>> =
            (0..6).map(|i| (0..(2 + i as u32 % 3)).map(|j| 4 + (i as u32 * 5 + j) % 40).collect()).collect();
        let expanded: Vec<Vec<u32>> = group.iter().map(|&i| prompts[i].clone()).collect();
        let a = policy.logprobs(&expanded, &comps).unwrap();
        let b = policy.logprobs_shared(&prompts, &group, &comps).unwrap();
        let m = &a.mask;
        let d = ((&a.logprobs * m).unwrap() - (&b.logprobs * m).unwrap()).unwrap().abs().unwrap();
        let d = d.flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-5, "prompts of {} tokens: {d}", prompts[0].len());
    }
}
