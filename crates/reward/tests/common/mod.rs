//! Shared test helpers: a tiny GPT backbone directory and synthetic preference data.
#![allow(dead_code)]

use candle_core::{DType, Device};
use candle_nn::VarMap;
use mismatch_models::{Gpt, GptConfig};
use mismatch_reward::Pair;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::path::{Path, PathBuf};

pub const WORDS: usize = 40;

/// A tiny GPT directory: random weights (seed 0), word-level tokenizer over `w0..w39` plus
/// `good`, `<pad> <bos> <eos> <unk>` specials, BOS prepended.
pub fn tiny_gpt(dir: &Path) -> PathBuf {
    let mut vocab: Vec<String> = ["<pad>", "<bos>", "<eos>", "<unk>"].iter().map(|s| s.to_string()).collect();
    vocab.extend((0..WORDS).map(|i| format!("w{i}")));
    vocab.push("good".into());
    let cfg = GptConfig::new(vocab.len(), 2, 2, 64, 64);
    let vm = VarMap::new();
    let gpt = Gpt::init(&cfg, &vm, 0, DType::F32, &Device::Cpu).unwrap();
    let p = dir.join("gpt");
    gpt.save(&p).unwrap();
    let v: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, w)| (w.clone(), json!(i))).collect();
    let special = |id: usize, t: &str| {
        json!({"id": id, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let tok = json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "<bos>"), special(2, "<eos>"), special(3, "<unk>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [1], "tokens": ["<bos>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": v, "unk_token": "<unk>"}
    });
    std::fs::write(p.join("tokenizer.json"), tok.to_string()).unwrap();
    let tc = json!({"tokenizer_class": "PreTrainedTokenizerFast", "add_bos_token": true,
                    "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>", "unk_token": "<unk>"});
    std::fs::write(p.join("tokenizer_config.json"), tc.to_string()).unwrap();
    p
}

/// Pairs where the chosen completion contains the word `good` and the rejected does not.
pub fn pairs(n: usize, seed: u64) -> Vec<Pair> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut words = |k: usize| -> Vec<String> { (0..k).map(|_| format!("w{}", rng.random_range(0..WORDS))).collect() };
    let mut out = Vec::new();
    for i in 0..n {
        let prompt = words(4).join(" ");
        let mut chosen = words(6);
        let rejected = words(6);
        chosen[(i * 7) % 6] = "good".into();
        out.push(Pair { prompt, chosen: chosen.join(" "), rejected: rejected.join(" "), margin: 0.0 });
    }
    out
}

/// Writes pairs as TRL JSONL (`prompt/chosen/rejected`), with a `subset` field when given.
pub fn write_jsonl(path: &Path, pairs: &[Pair], subsets: Option<&[&str]>) {
    let lines: String = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut v = json!({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected});
            if let Some(s) = subsets {
                v["subset"] = json!(s[i % s.len()]);
            }
            v.to_string() + "\n"
        })
        .collect();
    std::fs::write(path, lines).unwrap();
}

/// K-wise rankings: completion j contains `good` 3−j times (so the best has the most),
/// listed in shuffled order with `ranking` giving indices best first.
pub fn write_rankings(path: &Path, n: usize, seed: u64) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut lines = String::new();
    for _ in 0..n {
        let mut words =
            |k: usize| -> Vec<String> { (0..k).map(|_| format!("w{}", rng.random_range(0..WORDS))).collect() };
        let prompt = words(4).join(" ");
        let mut comps: Vec<String> = (0..4)
            .map(|j| {
                let mut w = words(6);
                for slot in w.iter_mut().take(3 - j) {
                    *slot = "good".into();
                }
                w.join(" ")
            })
            .collect();
        // Store in reverse (worst first): ranking = [3, 2, 1, 0].
        comps.reverse();
        lines += &(json!({"prompt": prompt, "completions": comps, "ranking": [3, 2, 1, 0]}).to_string() + "\n");
    }
    std::fs::write(path, lines).unwrap();
}
