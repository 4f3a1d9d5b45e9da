//! Shared bits of the benchmark binaries in `src/bin/`: each prints one JSON line of results
//! that `bench/run.py` puts side by side with the PyTorch equivalent.

use std::time::Instant;

/// Median of `runs` timings (seconds) of `f`, after `warmup` untimed calls.
pub fn median_secs(warmup: usize, runs: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut t: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// The chat questions of the generation and serving benchmarks; `bench/torch_generate.py` asks
/// the same ones, row (client) `i` asking `QUESTIONS[i % 8]`.
pub const QUESTIONS: [&str; 8] = [
    "What is the capital of France?",
    "Explain photosynthesis in simple terms.",
    "Write a short poem about autumn leaves.",
    "How do I bake sourdough bread?",
    "What are the benefits of regular exercise?",
    "Summarise the plot of Romeo and Juliet.",
    "Why is the sky blue?",
    "Give me three tips for learning a new language.",
];
