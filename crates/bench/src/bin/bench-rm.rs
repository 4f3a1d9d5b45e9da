//! Reward-model training throughput: one epoch of Bradley-Terry training of a fresh reward
//! model through `mismatch_reward::train_in_memory` (backbone load, tokenisation, forward,
//! backward, AdamW), the counterpart of `bench/torch_rm.py`. Prints one JSON line.
//!
//!     cargo run --release -p mismatch-bench --bin bench-rm -- [--pairs 32] [--batch 8] [--seq 128] [--runs 3]
//!     cargo run --release -p mismatch-bench --bin bench-rm -- --backbone tiny-gpt [--pairs 2000] [--batch 32] [--epochs 2] [--frozen]
//!
//! `minilm-l6` (default): all-MiniLM-L6-v2 fully fine-tuned (lr 2e-5), every input exactly
//! `--seq` tokens (`[CLS] prompt [SEP] completion [SEP]` of one-token words).
//! `smollm2-135m` (or any Llama-family spec): SmolLM2-135M fully fine-tuned (lr 2e-5) with
//! `--max-length SEQ` and gradient checkpointing (`--gradient-checkpointing on|off`, default
//! on), every input exactly `--seq` tokens (prompts longer than that, cut from the left:
//! `bench/torch_rm_decoder.py`, its counterpart, cuts the same tokens); prints the peak RSS too.
//!
//!     cargo run --release -p mismatch-bench --bin bench-rm -- --backbone smollm2-135m --pairs 16 --batch 8 --seq 512 --runs 1 --gradient-checkpointing on
//!
//! `tiny-gpt`: the embedded world's setting — a 2-layer, 64-dim GPT (random init, 200-word
//! vocabulary), pairs of ≤ 40-word texts, full fine-tune at lr 1e-3; no PyTorch counterpart.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use mismatch_reward::{Pair, TrainConfig};

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One-token words in BERT's uncased vocabulary. `bench/torch_rm.py` uses the same list.
const WORDS: [&str; 10] = ["the", "cat", "sat", "on", "mat", "and", "dog", "ran", "to", "a"];

/// `n` words, the i-th of text `seed` chosen by a fixed formula (same in Python).
fn words(n: usize, seed: usize) -> String {
    (0..n).map(|i| WORDS[(i * 7 + seed * 3 + i * seed) % WORDS.len()]).collect::<Vec<_>>().join(" ")
}

/// Pairs whose encoder input `[CLS] p [SEP] c [SEP]` is exactly `seq` tokens.
fn minilm_pairs(n: usize, seq: usize) -> Vec<Pair> {
    let p_len = (seq - 3) / 2;
    let c_len = seq - 3 - p_len;
    (0..n)
        .map(|i| Pair {
            prompt: words(p_len, i),
            chosen: words(c_len, i + 1),
            rejected: words(c_len, i + 2),
            margin: 0.0,
        })
        .collect()
}

/// Pairs for a decoder: `seq`-word prompts (at least `seq` tokens), 8-word completions, so every
/// input `prompt \n completion EOS` cut to its last `seq` tokens is exactly `seq` tokens.
fn decoder_pairs(n: usize, seq: usize) -> Vec<Pair> {
    (0..n)
        .map(|i| Pair { prompt: words(seq, i), chosen: words(8, i + 1), rejected: words(8, i + 2), margin: 0.0 })
        .collect()
}

/// Peak resident memory of this process so far (`VmHWM`), in MB.
fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// A tiny GPT directory (2 layers, 64 dims, 4 heads, context 64) with a word-level tokenizer.
fn tiny_gpt(dir: &std::path::Path) -> Result<()> {
    use serde_json::json;
    let mut vocab: Vec<String> = ["<pad>", "<bos>", "<eos>", "<unk>"].iter().map(|s| s.to_string()).collect();
    vocab.extend((0..200).map(|i| format!("w{i}")));
    let cfg = mismatch_models::GptConfig::new(vocab.len(), 2, 4, 64, 64);
    let vm = candle_nn::VarMap::new();
    mismatch_models::Gpt::init(&cfg, &vm, 0, DType::F32, &Device::Cpu)?.save(dir)?;
    let v: serde_json::Map<String, serde_json::Value> =
        vocab.iter().enumerate().map(|(i, w)| (w.clone(), json!(i))).collect();
    let sp = |id: usize, t: &str| {
        json!({"id": id, "content": t, "single_word": false, "lstrip": false,
        "rstrip": false, "normalized": false, "special": true})
    };
    let tok = json!({"version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [sp(0, "<pad>"), sp(1, "<bos>"), sp(2, "<eos>"), sp(3, "<unk>")],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<bos>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<bos>": {"id": "<bos>", "ids": [1], "tokens": ["<bos>"]}}},
        "decoder": null, "model": {"type": "WordLevel", "vocab": v, "unk_token": "<unk>"}});
    std::fs::write(dir.join("tokenizer.json"), tok.to_string())?;
    let tc = json!({"add_bos_token": true, "bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string())?;
    Ok(())
}

/// World-like pairs: 8-word prompts, 10–32-word completions (≤ 40 words per text).
fn world_pairs(n: usize) -> Vec<Pair> {
    let w =
        |len: usize, s: usize| (0..len).map(|i| format!("w{}", (i * 31 + s * 17 + i * s) % 200)).collect::<Vec<_>>();
    (0..n)
        .map(|i| Pair {
            prompt: w(8, i).join(" "),
            chosen: w(10 + i % 23, i + 1).join(" "),
            rejected: w(10 + (i * 5) % 23, i + 2).join(" "),
            margin: 0.0,
        })
        .collect()
}

fn main() -> Result<()> {
    let (mut backbone, mut pairs, mut batch, mut seq, mut runs) = ("minilm-l6".to_string(), None, None, 128usize, 3);
    let (mut frozen, mut epochs, mut checkpointing) = (false, 1usize, true);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--backbone" => backbone = val()?,
            "--pairs" => pairs = Some(val()?.parse::<usize>().context("--pairs")?),
            "--batch" => batch = Some(val()?.parse::<usize>().context("--batch")?),
            "--seq" => seq = val()?.parse().context("--seq")?,
            "--runs" => runs = val()?.parse().context("--runs")?,
            "--epochs" => epochs = val()?.parse().context("--epochs")?,
            "--frozen" => frozen = true,
            "--gradient-checkpointing" => {
                checkpointing = match val()?.as_str() {
                    "on" => true,
                    "off" => false,
                    v => bail!("--gradient-checkpointing is on or off, got {v}"),
                }
            }
            other => bail!("unknown argument {other} (expected --backbone B --pairs N --batch B --seq T --runs R)"),
        }
    }
    let tmp = std::env::temp_dir().join(format!("bench-rm-{}", std::process::id()));
    let (cfg, data, model, seq_out) = if backbone == "tiny-gpt" {
        std::fs::create_dir_all(&tmp)?;
        tiny_gpt(&tmp)?;
        let cfg = TrainConfig {
            batch_size: batch.unwrap_or(32),
            lr: 1e-3,
            ..TrainConfig::new(tmp.to_str().context("temp path")?)
        };
        (cfg, world_pairs(pairs.unwrap_or(2000)), "tiny-gpt-2x64".to_string(), None)
    } else if backbone != "minilm-l6" {
        let cfg = TrainConfig {
            batch_size: batch.unwrap_or(8),
            lr: 2e-5,
            max_length: seq,
            gradient_checkpointing: checkpointing,
            ..TrainConfig::new(&backbone)
        };
        (cfg, decoder_pairs(pairs.unwrap_or(16), seq), backbone.clone(), Some(seq))
    } else {
        if seq < 8 {
            bail!("--seq must be at least 8");
        }
        let cfg = TrainConfig { batch_size: batch.unwrap_or(8), lr: 2e-5, ..TrainConfig::new(&backbone) };
        (cfg, minilm_pairs(pairs.unwrap_or(32), seq), "all-MiniLM-L6-v2".to_string(), Some(seq))
    };
    let cfg = TrainConfig { frozen, epochs, lr: if frozen { 1e-3 } else { cfg.lr }, ..cfg };
    if data.is_empty() || cfg.batch_size == 0 {
        bail!("--pairs and --batch must be positive");
    }
    let run = || mismatch_reward::train_in_memory(&cfg, &data, &[], false).map(|_| ());
    run()?; // surface errors before timing
    let secs = mismatch_bench::median_secs(0, runs, || run().expect("training failed"));
    let _ = std::fs::remove_dir_all(&tmp);
    let n = data.len();
    let mut out = serde_json::json!({
        "bench": "rm",
        "impl": "candle",
        "model": model,
        "pairs": n,
        "epochs": cfg.epochs,
        "frozen": cfg.frozen,
        "batch": cfg.batch_size,
        "threads": candle_core::utils::get_num_threads(),
        "secs": secs,
        "pairs_per_s": (n * cfg.epochs) as f64 / secs,
    });
    if let Some(mb) = peak_rss_mb() {
        out["peak_rss_mb"] = mb.into();
    }
    if let Some(s) = seq_out {
        out["seq"] = s.into();
        // Two sequences of `seq` tokens per pair.
        out["tokens_per_s"] = (2.0 * (n * s * cfg.epochs) as f64 / secs).into();
    }
    println!("{out}");
    Ok(())
}
