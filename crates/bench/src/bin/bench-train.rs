//! Training throughput of the tiny GPT: tokens per second of one forward + backward + AdamW
//! step (Loshchilov & Hutter 2019) on random tokens, the quantity `bench/torch_train.py`
//! measures for the same model in PyTorch.
//!
//! Usage: `bench-train [--n-layer 4] [--n-embd 256] [--n-head 4] [--block 128] [--batch 16]
//! [--vocab 96] [--steps 10] [--warmup 3] [--seed 0]`. Prints one JSON line.

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use mismatch_models::{Gpt, GptConfig};

#[global_allocator]
static A: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn arg(args: &[String], name: &str, default: usize) -> anyhow::Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => {
            let v = args.get(i + 1).ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?;
            v.parse().map_err(|e| anyhow::anyhow!("{name} {v}: {e}"))
        }
        None => Ok(default),
    }
}

fn main() -> anyhow::Result<()> {
    // candle runs elementwise ops on its own spin-waiting thread pool while gemm uses rayon's;
    // on 2 cores the two pools contend (measured: 1,190 vs 2,020 tok/s). One elementwise
    // thread leaves the cores to the GEMMs and the rayon-parallel fused ops of ops.rs.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    // mimalloc returns freed pages to the OS after 1 s by default; a training step frees and
    // reallocates megabytes of activations, so every step re-faults zeroed pages (measured:
    // ~47k page faults per run, ~13% of the time in the kernel's clear_page). Never purge.
    // SAFETY: mi_option_set only stores an option value; 15 is mi_option_purge_delay (v3).
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    let args: Vec<String> = std::env::args().collect();
    let known = ["--n-layer", "--n-embd", "--n-head", "--block", "--batch", "--vocab", "--steps", "--warmup", "--seed"];
    for a in args.iter().skip(1).step_by(2) {
        anyhow::ensure!(known.contains(&a.as_str()), "unknown argument {a}; expected one of {known:?}");
    }
    let cfg = GptConfig::new(
        arg(&args, "--vocab", 96)?,
        arg(&args, "--n-layer", 4)?,
        arg(&args, "--n-head", 4)?,
        arg(&args, "--n-embd", 256)?,
        arg(&args, "--block", 128)?,
    );
    let (batch, steps, warmup) = (arg(&args, "--batch", 16)?, arg(&args, "--steps", 10)?, arg(&args, "--warmup", 3)?);
    let seed = arg(&args, "--seed", 0)? as u64;
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let model = Gpt::init(&cfg, &varmap, seed, DType::F32, &dev)?;
    let mut opt = AdamW::new(varmap.all_vars(), ParamsAdamW { lr: 3e-4, weight_decay: 0.1, ..Default::default() })?;
    // Fixed pseudo-random tokens (an LCG), so both frameworks see data of the same shape.
    let n = batch * (cfg.block_size + 1);
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let toks: Vec<u32> = (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % cfg.vocab_size as u64) as u32
        })
        .collect();
    let all = Tensor::from_vec(toks, (batch, cfg.block_size + 1), &dev)?;
    let x = all.narrow(1, 0, cfg.block_size)?.contiguous()?;
    let y = all.narrow(1, 1, cfg.block_size)?.contiguous()?;
    let mut last_loss = 0f32;
    let mut err = None;
    let secs = mismatch_bench::median_secs(warmup, steps, || {
        let r = model.loss(&x, &y).and_then(|l| {
            opt.backward_step(&l)?;
            l.to_scalar::<f32>()
        });
        match r {
            Ok(l) => last_loss = l,
            Err(e) => err = Some(e),
        }
    });
    if let Some(e) = err {
        return Err(e.into());
    }
    // The step's largest GEMM shape (MLP up-projection, [b·t, c] × [c, 4c]) on its own: the
    // ceiling a GEMM-bound step cannot beat, and the figure to compare with PyTorch's BLAS.
    let (m, k, n) = (batch * cfg.block_size, cfg.n_embd, 4 * cfg.n_embd);
    let a = Tensor::ones((m, k), DType::F32, &dev)?;
    let b = Tensor::ones((k, n), DType::F32, &dev)?;
    let gemm_s = mismatch_bench::median_secs(2, 10, || {
        let _ = a.matmul(&b);
    });
    let tokens = (batch * cfg.block_size) as f64;
    let line = serde_json::json!({
        "bench": "train",
        "impl": "candle",
        "n_layer": cfg.n_layer, "n_embd": cfg.n_embd, "n_head": cfg.n_head,
        "block": cfg.block_size, "batch": batch, "vocab": cfg.vocab_size,
        "params": cfg.num_params(),
        "threads": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "step_s": secs,
        "loss": last_loss,
        "tokens_per_s": tokens / secs,
        "gemm_gflops": 2.0 * (m * k * n) as f64 / gemm_s / 1e9,
    });
    println!("{line}");
    Ok(())
}
