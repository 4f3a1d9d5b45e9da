//! Value-guided decoding on the tiny SFT-ed GPT (replies of 2–7 words) with the length reward:
//! RAD at β = 0 over the whole vocabulary is plain sampling; a larger β or more blockwise
//! candidates raise the reward and the KL; PPO's value head scores prefixes.

mod common;
use candle_core::{DType, Device, Tensor};
use common::*;
use mismatch_models::{generate, load_causal_lm, CausalLm, LoadedLm, Positions, SamplingParams};
use mismatch_policy::guided::{guided_generate, Guide, GuideParams, Guided, Prompts};
use mismatch_policy::reward::{parse_reward, Reward, RuleReward};

const EOS: u32 = 2;

fn decode_with(lm: &LoadedLm) -> impl Fn(&[u32]) -> mismatch_policy::Result<String> + '_ {
    move |ids| lm.tok.decode(ids, true)
}

fn run(lm: &LoadedLm, texts: &[&str], reward: &dyn Reward, guide: Guide, seed: u64) -> Guided {
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| lm.tok.encode(t, true).unwrap()).collect();
    let p = GuideParams { guide, max_new_tokens: 12, temperature: 1.0, stop_tokens: vec![EOS], seed };
    guided_generate(&lm.model, &Prompts { ids: &ids, texts }, &decode_with(lm), reward, &p, lm.tok.pad_id).unwrap()
}

fn rows(n: usize) -> Vec<&'static str> {
    (0..n).map(|i| PROMPTS[i % PROMPTS.len()]).collect()
}

fn mean_reward(lm: &LoadedLm, texts: &[&str], g: &Guided, reward: &dyn Reward) -> f64 {
    let comps: Vec<String> = g.tokens.iter().map(|t| lm.tok.decode(t, true).unwrap()).collect();
    let c: Vec<&str> = comps.iter().map(String::as_str).collect();
    mean(&reward.score(texts, &c).unwrap().iter().map(|&x| x as f64).collect::<Vec<_>>())
}

#[test]
fn rad_at_beta_zero_over_the_whole_vocabulary_is_sampling() {
    let tmp = tempfile::tempdir().unwrap();
    let lm = load_causal_lm(sft_policy(tmp.path()).to_str().unwrap(), &Device::Cpu, false).unwrap();
    let texts = rows(16);
    let vocab = WORDS.len() + 4;
    let reward = RuleReward::Contains("good".into());
    let g = run(&lm, &texts, &reward, Guide::Rad { top_k: vocab, beta: 0.0 }, 11);
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| lm.tok.encode(t, true).unwrap()).collect();
    let p =
        SamplingParams { max_new_tokens: 12, temperature: 1.0, stop_tokens: vec![EOS], seed: 11, ..Default::default() };
    let plain = generate(&lm.model, &ids, &p, lm.tok.pad_id).unwrap();
    assert_eq!(g.tokens, plain.tokens);
    assert_eq!(g.finished, plain.finished);
    assert!(g.kl.iter().all(|k| k.abs() < 1e-6), "{:?}", g.kl);
    assert!(!g.kl_is_bound);
    let tokens: usize = g.tokens.iter().map(Vec::len).sum();
    assert_eq!(g.reward_calls, tokens * vocab);
}

#[test]
fn rad_raises_the_reward_and_the_kl_with_beta() {
    let tmp = tempfile::tempdir().unwrap();
    let lm = load_causal_lm(sft_policy(tmp.path()).to_str().unwrap(), &Device::Cpu, false).unwrap();
    let texts = rows(32);
    let reward = RuleReward::Length { target: None };
    let vocab = WORDS.len() + 4;
    let mut last = (f64::NEG_INFINITY, -1.0);
    for beta in [0.0, 1.0, 4.0] {
        let g = run(&lm, &texts, &reward, Guide::Rad { top_k: vocab, beta }, 3);
        let (r, kl) = (mean_reward(&lm, &texts, &g, &reward), mean(&g.kl));
        eprintln!("β {beta}: reward {r:.3}, KL {kl:.3}");
        assert!(r > last.0 && kl > last.1, "β {beta}: reward {r}, KL {kl} after {last:?}");
        last = (r, kl);
        assert!(g.kl.iter().all(|&k| k >= -1e-6));
    }
    // A seed fixes the output.
    let a = run(&lm, &texts, &reward, Guide::Rad { top_k: 8, beta: 2.0 }, 9);
    assert_eq!(a, run(&lm, &texts, &reward, Guide::Rad { top_k: 8, beta: 2.0 }, 9));
    assert!(a.tokens.iter().flatten().all(|&t| (t as usize) < vocab));
}

#[test]
fn blockwise_best_of_k_raises_the_reward_within_its_bound() {
    let tmp = tempfile::tempdir().unwrap();
    let lm = load_causal_lm(sft_policy(tmp.path()).to_str().unwrap(), &Device::Cpu, false).unwrap();
    let texts = rows(32);
    let reward = RuleReward::Length { target: None };
    let one = run(&lm, &texts, &reward, Guide::Block { block: 4, candidates: 1 }, 5);
    assert!(one.kl.iter().all(|&k| k == 0.0) && one.kl_is_bound);
    let eight = run(&lm, &texts, &reward, Guide::Block { block: 4, candidates: 8 }, 5);
    let (r1, r8) = (mean_reward(&lm, &texts, &one, &reward), mean_reward(&lm, &texts, &eight, &reward));
    eprintln!("blockwise: reward K=1 {r1:.3}, K=8 {r8:.3}");
    assert!(r8 > r1 + 1.0, "K = 8: {r8}, K = 1: {r1}");
    let bound = 8f64.ln() - 7.0 / 8.0;
    for (t, (&k, &f)) in eight.tokens.iter().zip(eight.kl.iter().zip(&eight.finished)) {
        // Blocks drawn: all full blocks of 4, and the last (partial when finished early).
        let blocks = t.len().div_ceil(4);
        assert!((k - blocks as f64 * bound).abs() < 1e-9, "{} tokens, KL {k}", t.len());
        assert!(f || t.len() == 12);
    }
    assert_eq!(eight.reward_calls, 8 * eight.tokens.iter().map(|t| t.len().div_ceil(4)).sum::<usize>());
}

/// `value:DIR` is w·h + b on the policy's last hidden state after prompt + completion, with the
/// head's weights as written.
#[test]
fn the_value_head_scores_the_state_after_the_last_token() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = sft_policy(tmp.path());
    let lm = load_causal_lm(dir.to_str().unwrap(), &Device::Cpu, false).unwrap();
    let hidden = 64;
    let w: Vec<f32> = (0..hidden).map(|i| ((i * 7 % 11) as f32 - 5.0) / 10.0).collect();
    let head = std::collections::HashMap::from([
        ("v_head.weight".to_string(), Tensor::from_vec(w.clone(), (1, hidden), &Device::Cpu).unwrap()),
        ("v_head.bias".to_string(), Tensor::new(&[0.25f32], &Device::Cpu).unwrap()),
    ]);
    assert!(parse_reward(&format!("value:{}", dir.display())).err().unwrap().to_string().contains("no value head"));
    candle_core::safetensors::save(&head, dir.join("value_head.safetensors")).unwrap();
    let v = parse_reward(&format!("value:{}", dir.display())).unwrap();
    let (p, c) = (["tell me a story", "tell me about the cat"], ["the dog sat on the mat", ""]);
    let got = v.score(&p, &c).unwrap();
    for i in 0..2 {
        let mut ids = lm.tok.encode(p[i], true).unwrap();
        ids.extend(lm.tok.encode(c[i], false).unwrap());
        let t = ids.len();
        let x = Tensor::from_vec(ids, (1, t), &Device::Cpu).unwrap();
        let h = lm.model.hidden(&x, &Positions::causal(1, t, &Device::Cpu).unwrap(), None).unwrap();
        let last = h.get(0).unwrap().get(t - 1).unwrap().to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        let want = last.iter().zip(&w).map(|(a, b)| a * b).sum::<f32>() + 0.25;
        assert!((got[i] - want).abs() < 1e-4, "row {i}: {} vs {want}", got[i]);
    }
}
