//! A reward model on a Llama-family backbone, fine-tuned: a 2-layer, 16-dim Llama built here
//! with SmolLM2's tokenizer (random weights). Gradient checkpointing trains bit-identically to
//! the plain backward pass, and `max_length` bounds every input, cutting the prompt from the
//! left, is recorded in the checkpoint and can be overridden when scoring.

use candle_core::Device;
use mismatch_models::{load_causal_lm, Llama, LlamaConfig};
use mismatch_reward::member::Inputs;
use mismatch_reward::train::train_in_memory;
use mismatch_reward::{Pair, RewardModel, TrainConfig};
use std::path::{Path, PathBuf};

/// A random tiny Llama in `dir`, or `None` (test skipped) when SmolLM2's files are absent.
fn tiny_llama(dir: &Path) -> Option<PathBuf> {
    let smol = mismatch_models::hub::cache_root().unwrap().join("models/smollm2-135m");
    if !smol.exists() {
        println!("SKIPPED: {} is absent (run `mismatch models fetch smollm2-135m`)", smol.display());
        return None;
    }
    let tok = load_causal_lm("smollm2-135m", &Device::Cpu, false).unwrap().tok;
    let cfg: LlamaConfig = serde_json::from_value(serde_json::json!({
        "model_type": "llama", "vocab_size": 49152, "hidden_size": 16, "intermediate_size": 32,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 256, "tie_word_embeddings": true,
        "bos_token_id": 1, "eos_token_id": 2
    }))
    .unwrap();
    let out = dir.join("tiny-llama");
    Llama::random(&cfg, &Device::Cpu).unwrap().save(&out, &tok).unwrap();
    Some(out)
}

fn pairs() -> Vec<Pair> {
    let long = "Here is a long conversation that goes on and on about many unrelated things before the question. ";
    (0..6)
        .map(|i| Pair {
            prompt: format!("{}Question {i}: what is {i} plus one?", long.repeat(1 + i % 2)),
            chosen: format!("It is {}.", i + 1),
            rejected: "I cannot help with that request.".into(),
            margin: 0.0,
        })
        .collect()
}

fn ids(rm: &RewardModel, p: &[Pair]) -> Vec<Vec<u32>> {
    let prompts: Vec<&str> = p.iter().map(|x| x.prompt.as_str()).collect();
    let c: Vec<&str> = p.iter().map(|x| x.chosen.as_str()).collect();
    match rm.prepare(&prompts, &c).unwrap() {
        Inputs::Ids(v) => v,
        Inputs::Texts(_) => panic!("a decoder reads token ids"),
    }
}

fn scores(rm: &RewardModel, p: &[Pair]) -> Vec<f32> {
    let prompts: Vec<&str> = p.iter().map(|x| x.prompt.as_str()).collect();
    let c: Vec<&str> = p.iter().map(|x| x.chosen.as_str()).collect();
    rm.score(&prompts, &c).unwrap()
}

#[test]
fn gradient_checkpointing_trains_bit_identically_and_max_length_bounds_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(dir) = tiny_llama(tmp.path()) else { return };
    let data = pairs();
    let base = TrainConfig {
        epochs: 2,
        batch_size: 3,
        lr: 1e-2,
        max_length: 24,
        group_by_length: true,
        ..TrainConfig::new(dir.to_str().unwrap())
    };
    let on = train_in_memory(&TrainConfig { gradient_checkpointing: true, ..base.clone() }, &data, &[], false).unwrap();
    let off = train_in_memory(&TrainConfig { gradient_checkpointing: false, ..base }, &data, &[], false).unwrap();
    let (s_on, s_off) = (scores(&on, &data), scores(&off, &data));
    assert_eq!(
        s_on.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        s_off.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );

    // Every input is at most 24 tokens: the last 24 of the full input (the prompt's tail, the
    // completion, EOS; SmolLM2's tokenizer adds no BOS, which would otherwise be kept first).
    assert_eq!(on.config.max_length, Some(24));
    let cut = ids(&on, &data);
    let wide = on.with_max_length(256).unwrap();
    let full = ids(&wide, &data);
    let on = wide.with_max_length(24).unwrap();
    for (f, c) in full.iter().zip(&cut) {
        assert!(f.len() > 24, "the prompts are longer than 24 tokens ({})", f.len());
        assert_eq!(c.len(), 24);
        assert_eq!(c[..], f[f.len() - 24..], "the input's last 24 tokens");
    }

    // The limit is saved with the model and read back; `with_max_length` overrides it.
    on.save(&tmp.path().join("rm")).unwrap();
    let back = RewardModel::load(&tmp.path().join("rm"), &Device::Cpu).unwrap();
    assert_eq!(back.config.max_length, Some(24));
    assert_eq!(back.max_input_len(), 24);
    assert_eq!(scores(&back, &data), scores(&on, &data));
    assert!(ids(&back.with_max_length(8).unwrap(), &data).iter().all(|r| r.len() == 8));
    let err =
        train_in_memory(&TrainConfig { max_length: 0, ..TrainConfig::new(dir.to_str().unwrap()) }, &data, &[], false)
            .err()
            .unwrap()
            .to_string();
    assert!(err.contains("--max-length"), "{err}");
}
