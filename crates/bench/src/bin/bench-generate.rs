//! Generation throughput of SmolLM2-135M-Instruct (f32, dequantised from the Q4_1 GGUF) with
//! mismatch's KV-cached `generate`, the counterpart of `bench/torch_generate.py`: same chat
//! prompts (left-padded), exactly `--new-tokens` tokens per row (no stop token), median of 3
//! runs after 1 warm-up. Prints one JSON line; `tokens_per_s` counts generated tokens only.
//!
//!     cargo run --release -p mismatch-bench --bin bench-generate -- [--batch 8] [--new-tokens 128] [--temperature 0] [--model FILE]

use anyhow::{bail, Context, Result};
use candle_core::Device;
use mismatch_models::{generate, ChatMessage, Llama, SamplingParams};

use mismatch_bench::QUESTIONS;

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let (mut batch, mut new_tokens, mut temperature, mut model) = (1usize, 128usize, 0.0f64, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--batch" => batch = val()?.parse().context("--batch")?,
            "--new-tokens" => new_tokens = val()?.parse().context("--new-tokens")?,
            "--temperature" => temperature = val()?.parse().context("--temperature")?,
            "--model" => model = Some(std::path::PathBuf::from(val()?)),
            other => {
                bail!("unknown argument {other} (expected --batch B --new-tokens N [--temperature T] [--model FILE])")
            }
        }
    }
    if batch == 0 || new_tokens == 0 {
        bail!("--batch and --new-tokens must be positive");
    }
    let path = match model {
        Some(p) => p,
        None => mismatch_models::hub::model_dir("smollm2-135m")?.join("SmolLM2-135M-Instruct.Q4_1.gguf"),
    };
    let (m, tok) = Llama::load(&path, &Device::Cpu, false)?;
    let prompts = (0..batch)
        .map(|i| tok.encode(&tok.apply_chat_template(&[ChatMessage::new("user", QUESTIONS[i % 8])], true)?, false))
        .collect::<mismatch_models::Result<Vec<_>>>()?;
    let params = SamplingParams { max_new_tokens: new_tokens, temperature, seed: 0, ..Default::default() };
    let mut first = None;
    let secs = mismatch_bench::median_secs(1, 3, || {
        let g = generate(&m, &prompts, &params, tok.pad_id).expect("generation failed");
        first.get_or_insert(g);
    });
    let g = first.expect("ran");
    let generated: usize = g.tokens.iter().map(Vec::len).sum();
    println!(
        "{}",
        serde_json::json!({
            "bench": "generate",
            "impl": "candle",
            "model": "SmolLM2-135M-Instruct (f32 from Q4_1 GGUF)",
            "batch": batch,
            "new_tokens": new_tokens,
            "temperature": temperature,
            "prompt_tokens": prompts.iter().map(Vec::len).max(),
            "threads": candle_core::utils::get_num_threads(),
            "secs": secs,
            "tokens_per_s": generated as f64 / secs,
            "sample": tok.decode(&g.tokens[0], true)?,
        })
    );
    Ok(())
}
