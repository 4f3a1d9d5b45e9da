//! Serving throughput: `mismatch serve` on SmolLM2-135M-Instruct (f32 from the Q4_1 GGUF) with
//! `--batch` clients sending one chat request each at once over HTTP, every request exactly
//! `--new-tokens` tokens long (`ignore_eos`). The counterpart on the PyTorch side is
//! `bench/torch_generate.py` at the same batch: transformers' `generate` over the same prompts
//! as one batch, the most a transformers loop gets out of that many requests arriving together.
//! Median of 3 rounds after 1 warm-up; also the same requests sent one after another, to show
//! what continuous batching gains. Prints one JSON line; `tokens_per_s` counts generated tokens.
//!
//!     cargo run --release -p mismatch-bench --bin bench-serve -- [--batch 16] [--new-tokens 32] [--temperature 0]

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use mismatch_bench::QUESTIONS;

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<()> {
    let (mut clients, mut new_tokens, mut temperature) = (1usize, 32usize, 0.0f64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--batch" => clients = val()?.parse().context("--batch")?,
            "--new-tokens" => new_tokens = val()?.parse().context("--new-tokens")?,
            "--temperature" => temperature = val()?.parse().context("--temperature")?,
            other => bail!("unknown argument {other} (expected --batch CLIENTS --new-tokens N [--temperature T])"),
        }
    }
    if clients == 0 || new_tokens == 0 {
        bail!("--batch and --new-tokens must be positive");
    }
    let addr = mismatch_serve::spawn(mismatch_serve::ServeArgs {
        max_batch: clients,
        ..mismatch_serve::ServeArgs::new("smollm2-135m")
    })?;
    let url = format!("http://{addr}/v1/chat/completions");
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let ask = |i: usize| -> usize {
        let body = json!({"model": "smollm2-135m", "messages": [{"role": "user", "content": QUESTIONS[i % 8]}],
            "max_tokens": new_tokens, "temperature": temperature, "seed": i, "ignore_eos": true});
        let mut r = agent.post(&url).send(body.to_string()).expect("request");
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().expect("body")).expect("json");
        v["usage"]["completion_tokens"].as_u64().unwrap_or_else(|| panic!("no usage in {v}")) as usize
    };
    let mut generated = 0;
    let secs = mismatch_bench::median_secs(1, 3, || {
        generated = std::thread::scope(|s| {
            let hs: Vec<_> = (0..clients).map(|i| s.spawn(move || ask(i))).collect();
            hs.into_iter().map(|h| h.join().expect("client")).sum()
        });
    });
    let t = std::time::Instant::now();
    let one_by_one: usize = (0..clients).map(ask).sum();
    let sequential = t.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({
            "bench": "serve",
            "impl": "candle",
            "model": "SmolLM2-135M-Instruct (f32 from Q4_1 GGUF)",
            "batch": clients,
            "new_tokens": new_tokens,
            "temperature": temperature,
            "threads": candle_core::utils::get_num_threads(),
            "secs": secs,
            "tokens_per_s": generated as f64 / secs,
            "sequential_tokens_per_s": one_by_one as f64 / sequential,
            "concurrent_over_sequential": (generated as f64 / secs) / (one_by_one as f64 / sequential),
        })
    );
    Ok(())
}
