//! A tiny word-level GPT policy for the loop tests: 2 layers, 64 dims, ~50 words, saved with a
//! WordLevel `tokenizer.json` (BOS/EOS/PAD specials) and briefly SFT-ed on random short
//! sentences so that samples are varied and end with EOS.
#![allow(dead_code)]

use candle_core::{DType, Device};
use candle_nn::VarMap;
use mismatch_models::{Gpt, GptConfig};
use mismatch_policy::train::{train, Algo, Demo, PolicyConfig, RunOptions, TrainData};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

pub const WORDS: &[&str] = &[
    "the", "a", "cat", "dog", "bird", "fish", "sat", "ran", "flew", "swam", "on", "in", "under", "over", "mat", "tree",
    "house", "river", "big", "small", "red", "blue", "green", "old", "new", "happy", "sad", "fast", "slow", "good",
    "today", "then", "and", "but", "very", "quite", "one", "two", "three", "four", "tell", "me", "story", "about",
];

pub fn tokenizer_json() -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    for (i, w) in ["<pad>", "<s>", "</s>", "<unk>"].iter().chain(WORDS).enumerate() {
        vocab.insert(w.to_string(), serde_json::json!(i));
    }
    let special = |id: u32, c: &str| {
        serde_json::json!({"id": id, "content": c, "single_word": false, "lstrip": false, "rstrip": false,
                           "normalized": false, "special": true})
    };
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "<s>"), special(2, "</s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    })
}

/// A randomly initialised tiny GPT with its tokenizer at `dir`.
pub fn write_random_policy(dir: &Path, seed: u64) {
    let n = WORDS.len() + 4;
    let cfg = GptConfig::new(n, 2, 2, 64, 64);
    let vm = VarMap::new();
    let m = Gpt::init(&cfg, &vm, seed, DType::F32, &Device::Cpu).unwrap();
    m.save(dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json().to_string()).unwrap();
    let tc = serde_json::json!({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "add_bos_token": true});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string()).unwrap();
}

pub const PROMPTS: &[&str] =
    &["tell me a story", "tell me about the cat", "tell me about a dog", "a story about one bird"];

/// Random 2–7 word sentences (never containing "good"), for the warm-up SFT.
pub fn demos(n: usize, seed: u64) -> Vec<Demo> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let pool: Vec<&str> = WORDS.iter().copied().filter(|w| *w != "good").collect();
    (0..n)
        .map(|i| {
            let len = rng.random_range(2..8);
            let words: Vec<&str> = (0..len).map(|_| pool[rng.random_range(0..pool.len())]).collect();
            Demo { prompt: PROMPTS[i % PROMPTS.len()].into(), completion: words.join(" ") }
        })
        .collect()
}

pub fn prompts() -> Vec<String> {
    PROMPTS.iter().map(|s| s.to_string()).collect()
}

/// The warm-started policy: random init + 60 SFT steps; returns its checkpoint directory.
pub fn sft_policy(root: &Path) -> PathBuf {
    let raw = root.join("random");
    write_random_policy(&raw, 7);
    let cfg = PolicyConfig {
        algo: Algo::Sft,
        steps: 60,
        batch_size: 16,
        learning_rate: 3e-3,
        save_steps: 1000,
        seed: 1,
        ..Default::default()
    };
    let data = TrainData { demos: demos(256, 3), ..Default::default() };
    let out = root.join("sft");
    let o = train(&cfg, raw.to_str().unwrap(), None, &data, &out, &RunOptions::default()).unwrap();
    o.checkpoints.last().unwrap().1.clone()
}

pub fn col(metrics: &[serde_json::Map<String, serde_json::Value>], key: &str) -> Vec<f64> {
    metrics.iter().map(|m| m.get(key).and_then(|v| v.as_f64()).unwrap_or(f64::NAN)).collect()
}

pub fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Config for the sampling loops on the tiny policy.
pub fn rl_config(algo: Algo) -> PolicyConfig {
    PolicyConfig {
        algo,
        steps: 20,
        batch_size: 16,
        num_generations: 4,
        learning_rate: 3e-3,
        kl_coef: 0.01,
        max_new_tokens: 16,
        temperature: 1.0,
        num_ppo_epochs: 2,
        num_mini_batches: 2,
        save_steps: 1000,
        seed: 5,
        ..Default::default()
    }
}
