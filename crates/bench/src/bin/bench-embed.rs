//! Sentence-embedding throughput of the candle MiniLM encoder (all-MiniLM-L6-v2), the
//! counterpart of `bench/torch_embed.py`. Prints one JSON line.
//!
//!     cargo run --release -p mismatch-bench --bin bench-embed -- [--batch 32] [--n 256] [--model DIR]

use anyhow::{bail, Context, Result};
use candle_core::Device;
use mismatch_models::bert::Encoder;

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SUBJECTS: [&str; 8] = [
    "the assistant",
    "a reward model",
    "the policy",
    "my neighbour",
    "the reviewer",
    "a small robot",
    "the committee",
    "our compiler",
];
const VERBS: [&str; 6] = [
    "carefully explained",
    "quickly rejected",
    "politely summarised",
    "wrongly predicted",
    "eagerly compared",
    "silently ignored",
];
const OBJECTS: [&str; 7] = [
    "the long answer about photosynthesis",
    "two completions of the same prompt",
    "a recipe for sourdough bread",
    "the proof of the central limit theorem",
    "an email asking for a refund",
    "the weather forecast for tomorrow",
    "a poem about autumn leaves",
];

/// Sentence `i` of the benchmark set (~30 tokens). `bench/torch_embed.py` builds the same list.
fn sentence(i: usize) -> String {
    format!(
        "Example {i}: {} {} {} before lunch, and then {} {} it again in far more detail.",
        SUBJECTS[i % 8],
        VERBS[i % 6],
        OBJECTS[i % 7],
        SUBJECTS[(i / 8) % 8],
        VERBS[(i / 6) % 6]
    )
}

fn main() -> Result<()> {
    let (mut batch, mut n, mut model) = (32usize, 256usize, None);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--batch" => batch = val()?.parse().context("--batch")?,
            "--n" => n = val()?.parse().context("--n")?,
            "--model" => model = Some(std::path::PathBuf::from(val()?)),
            other => bail!("unknown argument {other} (expected --batch B --n N [--model DIR])"),
        }
    }
    if batch == 0 || n == 0 {
        bail!("--batch and --n must be positive");
    }
    let dir = match model {
        Some(d) => d,
        None => mismatch_models::hub::model_dir("minilm-l6")?,
    };
    let enc = Encoder::load(&dir, &Device::Cpu, false)?;
    let sentences: Vec<String> = (0..n).map(sentence).collect();
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let tokens: usize =
        refs.iter().map(|s| enc.token_ids(s).map(|t| t.len())).sum::<mismatch_models::Result<usize>>()?;
    let run = || -> Result<()> {
        for chunk in refs.chunks(batch) {
            enc.embed(chunk)?;
        }
        Ok(())
    };
    run()?; // surface errors before timing
    let secs = mismatch_bench::median_secs(1, 5, || run().expect("embedding failed"));
    println!(
        "{}",
        serde_json::json!({
            "bench": "embed",
            "impl": "candle",
            "model": "all-MiniLM-L6-v2",
            "n": n,
            "batch": batch,
            "mean_tokens": tokens as f64 / n as f64,
            "threads": candle_core::utils::get_num_threads(),
            "secs": secs,
            "sentences_per_s": n as f64 / secs,
        })
    );
    Ok(())
}
