//! Step time of the policy training loops (PPO, RLOO, DPO) of `mismatch-policy` on a tiny GPT:
//! the real `mismatch_policy::train::train` loop, timed step by step, against the same
//! algorithm written plainly in PyTorch in `bench/torch_policy.py`.
//!
//! One step = rollout (KV-cached sampling of `--new-tokens` tokens for every row, temperature 1),
//! scoring, π_old / π_ref log-probs and one clipped-surrogate update with AdamW (PPO, RLOO;
//! `num_ppo_epochs = num_mini_batches = 1`), or one DPO update on `rows / 2` pairs. Rows =
//! `--prompts × --samples`: RLOO samples `--samples` completions per prompt; PPO (one sample per
//! prompt, as in TRL) gets that many prompts; DPO gets `rows / 2` (chosen, rejected) pairs, so
//! every algorithm pushes the same number of completion tokens through the model per step.
//!
//! The policy is a randomly initialised GPT with a word-level tokenizer that has no EOS token,
//! so every completion is exactly `--new-tokens` long and both frameworks do the same work.
//! Step boundaries are the instants the loop logs each step's metrics record (the
//! `RunOptions::on_log` hook), so the timed loop is the library's own, unmodified; the median
//! step after `--warmup` steps is reported. (A thread polling `metrics.jsonl` read the time
//! to within 4 ms only — a scheduler tick — while training held both cores.)
//! `tokens_per_s` = completion tokens per step / median step seconds.
//!
//! `--model SPEC` (PPO and RLOO only) runs a real checkpoint instead, e.g. the SmolLM2-135M GGUF:
//! it is loaded as `load_causal_lm` does, saved as an f32 HF directory whose tokenizer has no
//! EOS (again so that no row stops early), and prompt `i` of the pool is one sentence about
//! animal `i` ([`SENTENCE`], [`ANIMALS`]; `bench/torch_policy.py` encodes the same texts with the
//! model's own tokenizer), written `--prompt-repeat` times (default 1) for prompts as long as
//! real RLHF prompts.
//!
//! Usage: `bench-policy [--algo ppo|rloo|dpo] [--threads 2] [--prompts 16] [--samples 4]
//! [--new-tokens 24] [--prompt-len 8] [--vocab 64] [--n-layer 2] [--n-embd 64] [--n-head 2]
//! [--block 64] [--steps 8] [--warmup 2] [--seed 0] [--model SPEC] [--prompt-repeat 1]`. Prints one
//! JSON line.

use candle_core::{DType, Device};
use candle_nn::VarMap;
use mismatch_models::{load_causal_lm, AnyLm, Gpt, GptConfig};
use mismatch_policy::reward::RuleReward;
use mismatch_policy::train::{train, Algo, OnLog, PolicyConfig, PrefPair, RunOptions, TrainData};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SPECIALS: [&str; 3] = ["<pad>", "<s>", "<unk>"];

/// The prompts with `--model` (the same texts as `SENTENCE` and `ANIMALS` in torch_policy.py):
/// `{}` takes an animal, each a single SmolLM2 token, so that prompts differ but all have 13 tokens.
const SENTENCE: &str = "Tell me a short story about a {} who learns to swim.";
const ANIMALS: [&str; 16] =
    ["cat", "dog", "fox", "cow", "pig", "owl", "bat", "rat", "hen", "bee", "ant", "elk", "eel", "ape", "bear", "wolf"];

fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::fmt::Display,
{
    match args.iter().position(|a| a == name) {
        Some(i) => {
            let v = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?;
            v.parse().map_err(|e| anyhow::anyhow!("{name} {v}: {e}"))
        }
        None => Ok(default),
    }
}

/// A random GPT plus a WordLevel tokenizer (`<pad>`, `<s>`, `<unk>`, then `w3`, `w4`, ...)
/// with BOS and PAD but no EOS, so sampling never stops early.
fn write_policy(dir: &Path, cfg: &GptConfig, seed: u64) -> anyhow::Result<()> {
    let vm = VarMap::new();
    Gpt::init(cfg, &vm, seed, DType::F32, &Device::Cpu)?.save(dir)?;
    let mut vocab = serde_json::Map::new();
    for i in 0..cfg.vocab_size {
        let w = SPECIALS.get(i).map(|s| s.to_string()).unwrap_or_else(|| format!("w{i}"));
        vocab.insert(w, serde_json::json!(i));
    }
    let special = |id: u32, c: &str| {
        serde_json::json!({"id": id, "content": c, "single_word": false, "lstrip": false, "rstrip": false,
                           "normalized": false, "special": true})
    };
    let tj = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null,
        "added_tokens": [special(0, "<pad>"), special(1, "<s>")],
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
    });
    std::fs::write(dir.join("tokenizer.json"), tj.to_string())?;
    let tc = serde_json::json!({"bos_token": "<s>", "pad_token": "<pad>", "add_bos_token": true});
    std::fs::write(dir.join("tokenizer_config.json"), tc.to_string())?;
    Ok(())
}

/// `n` texts of `len` random ordinary words (an LCG; only shapes matter).
fn texts(n: usize, len: usize, vocab: usize, state: &mut u64) -> Vec<String> {
    (0..n)
        .map(|_| {
            (0..len)
                .map(|_| {
                    *state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    format!("w{}", SPECIALS.len() as u64 + (*state >> 33) % (vocab - SPECIALS.len()) as u64)
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let known = [
        "--algo",
        "--threads",
        "--prompts",
        "--samples",
        "--new-tokens",
        "--prompt-len",
        "--vocab",
        "--n-layer",
        "--n-embd",
        "--n-head",
        "--block",
        "--steps",
        "--warmup",
        "--seed",
        "--model",
        "--prompt-repeat",
    ];
    for a in args.iter().skip(1).step_by(2) {
        anyhow::ensure!(known.contains(&a.as_str()), "unknown argument {a}; expected one of {known:?}");
    }
    let threads: usize = arg(&args, "--threads", 2)?;
    anyhow::ensure!(threads >= 1, "--threads must be at least 1");
    // GEMMs run on rayon's pool (RAYON_NUM_THREADS); candle's own elementwise pool gets one
    // thread, as in bench-train (two spinning pools contend on 2 cores). Set before any op.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    // SAFETY: mi_option_set only stores an option value; 15 is mi_option_purge_delay (v3).
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };

    let algo_name: String = arg(&args, "--algo", "rloo".to_string())?;
    let algo = match algo_name.as_str() {
        "ppo" => Algo::Ppo,
        "rloo" => Algo::Rloo,
        "dpo" => Algo::Dpo,
        other => anyhow::bail!("--algo {other}: expected ppo, rloo or dpo"),
    };
    let (prompts, samples) = (arg(&args, "--prompts", 16usize)?, arg(&args, "--samples", 4usize)?);
    let (new_tokens, prompt_len) = (arg(&args, "--new-tokens", 24usize)?, arg(&args, "--prompt-len", 8usize)?);
    let (steps, warmup, seed) =
        (arg(&args, "--steps", 8usize)?, arg(&args, "--warmup", 2usize)?, arg(&args, "--seed", 0u64)?);
    let cfg = GptConfig::new(
        arg(&args, "--vocab", 64)?,
        arg(&args, "--n-layer", 2)?,
        arg(&args, "--n-head", 2)?,
        arg(&args, "--n-embd", 64)?,
        arg(&args, "--block", 64)?,
    );
    anyhow::ensure!(cfg.vocab_size > SPECIALS.len() + 1, "--vocab must be above {}", SPECIALS.len() + 1);
    anyhow::ensure!(prompt_len >= 2, "--prompt-len counts the BOS token and must be at least 2");
    anyhow::ensure!(prompt_len + new_tokens <= cfg.block_size, "--prompt-len + --new-tokens exceed --block");
    let rows = prompts * samples;
    anyhow::ensure!(algo != Algo::Dpo || rows % 2 == 0, "DPO needs an even number of rows (pairs of two)");
    anyhow::ensure!(steps >= 1, "--steps must be at least 1");

    let model: Option<String> = args.iter().position(|a| a == "--model").map(|i| args[i + 1].clone());
    let repeat: usize = arg(&args, "--prompt-repeat", 1)?;
    anyhow::ensure!(repeat >= 1 && (repeat == 1 || model.is_some()), "--prompt-repeat needs --model and ≥ 1");
    let sentence = |i: usize| vec![SENTENCE.replace("{}", ANIMALS[i % ANIMALS.len()]); repeat].join(" ");
    anyhow::ensure!(model.is_none() || algo != Algo::Dpo, "--model runs PPO and RLOO only");
    let tmp = tempfile::tempdir()?;
    let policy = tmp.path().join("policy");
    std::fs::create_dir_all(&policy)?;
    let (params, prompt_tokens) = match &model {
        None => {
            write_policy(&policy, &cfg, seed)?;
            (cfg.num_params(), prompt_len)
        }
        Some(spec) => {
            let mut lm = load_causal_lm(spec, &Device::Cpu, false)?;
            let AnyLm::Llama(m) = &lm.model else { anyhow::bail!("--model {spec}: expected a Llama-family model") };
            lm.tok.eos_ids.clear();
            m.save(&policy, &lm.tok)?;
            let n: usize = m.named_tensors().iter().map(|(_, t)| t.elem_count()).sum();
            (n, lm.tok.encode(&sentence(0), true)?.len())
        }
    };
    let mut state = seed.wrapping_add(1);
    // A pool of two batches, so that batches come from a shuffled pool as in real training.
    let (pool, batch_size, num_generations) = match algo {
        Algo::Ppo => (2 * rows, rows, 1),
        Algo::Dpo => (rows, rows / 2, 1),
        _ => (2 * prompts, prompts, samples),
    };
    let mut data = TrainData::default();
    if algo == Algo::Dpo {
        let p = texts(pool, prompt_len - 1, cfg.vocab_size, &mut state);
        let c = texts(pool, new_tokens, cfg.vocab_size, &mut state);
        let r = texts(pool, new_tokens, cfg.vocab_size, &mut state);
        data.pairs = (0..pool)
            .map(|i| PrefPair { prompt: p[i].clone(), chosen: c[i].clone(), rejected: r[i].clone() })
            .collect();
    } else {
        data.prompts = match model {
            None => texts(pool, prompt_len - 1, cfg.vocab_size, &mut state),
            Some(_) => (0..pool).map(sentence).collect(),
        };
    }
    let total = warmup + steps + 1;
    let pc = PolicyConfig {
        algo,
        steps: total,
        batch_size,
        num_generations,
        learning_rate: 1e-4,
        max_new_tokens: new_tokens,
        temperature: 1.0,
        num_ppo_epochs: 1,
        num_mini_batches: 1,
        save_steps: total + 1,
        seed,
        ..Default::default()
    };
    let out = tmp.path().join("out");
    let reward = RuleReward::Length { target: None };
    let at = Arc::new(Mutex::new(Vec::new()));
    let log_at = at.clone();
    let opts = RunOptions {
        on_log: Some(OnLog(Arc::new(move |_| log_at.lock().expect("timing lock").push(Instant::now())))),
        ..Default::default()
    };
    let outcome = train(&pc, policy.to_str().expect("utf-8 temp path"), Some(&reward), &data, &out, &opts)?;
    let at = at.lock().expect("timing lock").clone();
    anyhow::ensure!(at.len() == total, "saw {} of {total} metrics records", at.len());
    // at[i] is the end of step i + 1; intervals from the end of warm-up on are whole steps.
    let mut secs: Vec<f64> = at.windows(2).skip(warmup).map(|w| (w[1] - w[0]).as_secs_f64()).collect();
    let all = secs.clone();
    secs.sort_by(f64::total_cmp);
    let step_s = secs[secs.len() / 2];
    let last = outcome.metrics.last().ok_or_else(|| anyhow::anyhow!("no metrics logged"))?;
    if algo != Algo::Dpo {
        // Both frameworks must sample full-length completions for the comparison to hold.
        for m in &outcome.metrics {
            let len = m["completions/mean_length"].as_f64().unwrap_or(f64::NAN);
            anyhow::ensure!(len == new_tokens as f64, "mean completion length {len}, expected {new_tokens}");
        }
    }
    let loss = ["loss/policy_avg", "loss"].iter().find_map(|k| last.get(*k)).cloned();
    let tokens = (rows * new_tokens) as f64;
    let mut line = serde_json::json!({
        "bench": "policy",
        "impl": "candle",
        "algo": algo_name,
        "threads": threads,
        "rows": rows,
        "new_tokens": new_tokens,
        "prompt_len": prompt_tokens,
        "model": model.as_deref().unwrap_or("tiny-gpt"),
        "params": params,
        "step_s": step_s,
        "step_s_all": all,
        "steps_per_s": 1.0 / step_s,
        "tokens_per_s": tokens / step_s,
        "loss": loss,
    });
    if model.is_none() {
        let tiny = serde_json::json!({"n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_head": cfg.n_head,
                                      "block": cfg.block_size, "vocab": cfg.vocab_size});
        line.as_object_mut().expect("object").extend(tiny.as_object().expect("object").clone());
    }
    println!("{line}");
    Ok(())
}
