//! The tiny GPT: exact gradients, training that learns, seeded reproducibility, KV-cache
//! consistency and checkpoint round trips.

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use mismatch_models::{generate, ops, CausalLm, Gpt, GptConfig, KvCache, Positions, SamplingParams};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Public domain: Abraham Lincoln, the Gettysburg Address (1863), Bliss copy.
const CORPUS: &str = "Four score and seven years ago our fathers brought forth on this continent, a new nation, \
conceived in Liberty, and dedicated to the proposition that all men are created equal. Now we are engaged in a \
great civil war, testing whether that nation, or any nation so conceived and so dedicated, can long endure. We \
are met on a great battle-field of that war. We have come to dedicate a portion of that field, as a final resting \
place for those who here gave their lives that that nation might live. It is altogether fitting and proper that \
we should do this. But, in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow -- \
this ground. The brave men, living and dead, who struggled here, have consecrated it, far above our poor power \
to add or detract. The world will little note, nor long remember what we say here, but it can never forget what \
they did here. It is for us the living, rather, to be dedicated here to the unfinished work which they who \
fought here have thus far so nobly advanced. It is rather for us to be here dedicated to the great task \
remaining before us -- that from these honored dead we take increased devotion to that cause for which they \
gave the last full measure of devotion -- that we here highly resolve that these dead shall not have died in \
vain -- that this nation, under God, shall have a new birth of freedom -- and that government of the people, \
by the people, for the people, shall not perish from the earth.";

/// Character-level tokenisation of [`CORPUS`]: (ids, vocabulary size).
fn corpus_ids() -> (Vec<u32>, usize) {
    let mut chars: Vec<char> = CORPUS.chars().collect();
    chars.sort_unstable();
    chars.dedup();
    let ids = CORPUS.chars().map(|c| chars.binary_search(&c).unwrap() as u32).collect();
    (ids, chars.len())
}

/// Entropy (nats) of the corpus's character distribution: the loss of the best model that
/// ignores context.
fn unigram_entropy(ids: &[u32], vocab: usize) -> f64 {
    let mut counts = vec![0usize; vocab];
    ids.iter().for_each(|&i| counts[i as usize] += 1);
    let n = ids.len() as f64;
    counts.iter().filter(|&&c| c > 0).map(|&c| -(c as f64 / n) * (c as f64 / n).ln()).sum()
}

/// A batch of random windows of `ids`: inputs and next-token targets, `[b, t]` each.
fn batch(ids: &[u32], b: usize, t: usize, rng: &mut ChaCha8Rng, dev: &Device) -> (Tensor, Tensor) {
    let (mut x, mut y) = (Vec::with_capacity(b * t), Vec::with_capacity(b * t));
    for _ in 0..b {
        let s = rng.random_range(0..ids.len() - t - 1);
        x.extend_from_slice(&ids[s..s + t]);
        y.extend_from_slice(&ids[s + 1..s + t + 1]);
    }
    (Tensor::from_vec(x, (b, t), dev).unwrap(), Tensor::from_vec(y, (b, t), dev).unwrap())
}

/// Trains a fresh model for `steps` AdamW steps and returns the loss curve.
fn train(cfg: &GptConfig, seed: u64, steps: usize, b: usize, lr: f64) -> Vec<f32> {
    let dev = Device::Cpu;
    let (ids, _) = corpus_ids();
    let varmap = VarMap::new();
    let model = Gpt::init(cfg, &varmap, seed, DType::F32, &dev).unwrap();
    let params = ParamsAdamW { lr, weight_decay: 0.01, ..Default::default() };
    let mut opt = AdamW::new(varmap.all_vars(), params).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    (0..steps)
        .map(|_| {
            let (x, y) = batch(&ids, b, cfg.block_size, &mut rng, &dev);
            let loss = model.loss(&x, &y).unwrap();
            opt.backward_step(&loss).unwrap();
            loss.to_scalar::<f32>().unwrap()
        })
        .collect()
}

fn var_by_name(varmap: &VarMap, name: &str) -> Var {
    varmap.data().lock().unwrap().get(name).unwrap_or_else(|| panic!("no variable {name}")).clone()
}

#[test]
fn gradients_match_central_finite_differences() {
    let dev = Device::Cpu;
    let cfg = GptConfig::new(11, 2, 2, 8, 6);
    let varmap = VarMap::new();
    let model = Gpt::init(&cfg, &varmap, 7, DType::F64, &dev).unwrap();
    // Larger-than-init weights make every term of the gradient matter (init at std 0.02 leaves
    // the attention almost uniform and the LayerNorm gains at exactly 1).
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for var in varmap.all_vars() {
        let n = var.elem_count();
        let noise: Vec<f64> = (0..n).map(|_| rng.random_range(-0.5..0.5)).collect();
        let noise = Tensor::from_vec(noise, var.shape(), &dev).unwrap();
        var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
    }
    let x = Tensor::new(&[[1u32, 5, 9, 2, 2, 10], [0, 3, 3, 7, 4, 8]], &dev).unwrap();
    let y = Tensor::new(&[[5u32, 9, 2, 2, 10, 1], [3, 3, 7, 4, 8, 6]], &dev).unwrap();
    let loss = |m: &Gpt| m.loss(&x, &y).unwrap().to_scalar::<f64>().unwrap();
    let grads = model.loss(&x, &y).unwrap().backward().unwrap();
    let names = [
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.0.ln_1.weight",
        "transformer.h.0.ln_1.bias",
        "transformer.h.0.attn.c_attn.weight",
        "transformer.h.0.attn.c_attn.bias",
        "transformer.h.1.attn.c_proj.weight",
        "transformer.h.1.ln_2.weight",
        "transformer.h.1.mlp.c_fc.weight",
        "transformer.h.1.mlp.c_fc.bias",
        "transformer.h.0.mlp.c_proj.weight",
        "transformer.ln_f.weight",
        "transformer.ln_f.bias",
    ];
    let h = 1e-5;
    let mut worst = 0f64;
    for name in names {
        let var = var_by_name(&varmap, name);
        let analytic = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let orig = var.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        for k in 0..4 {
            let i = (k * 7919 + 13) % orig.len();
            let eval = |delta: f64| {
                let mut w = orig.clone();
                w[i] += delta;
                var.set(&Tensor::from_vec(w, var.shape(), &dev).unwrap()).unwrap();
                loss(&model)
            };
            let numeric = (eval(h) - eval(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(orig.clone(), var.shape(), &dev).unwrap()).unwrap();
            let a = analytic[i];
            // Relative error, with an absolute floor of 1e-9: the key biases have an exactly zero
            // gradient (softmax is shift-invariant) and the difference quotient's rounding noise
            // is ~ε·loss/h ≈ 1e-11.
            let rel = (a - numeric).abs() / (a.abs() + numeric.abs()).max(1e-3);
            assert!(rel < 1e-6, "{name}[{i}]: analytic {a:e}, numeric {numeric:e}, rel {rel:e}");
            if a.abs() > 1e-6 {
                worst = worst.max(rel);
            }
        }
    }
    eprintln!("finite differences: worst relative error {worst:e}");
}

#[test]
fn one_backward_reaches_every_variable() {
    let dev = Device::Cpu;
    let cfg = GptConfig::new(17, 2, 2, 16, 8);
    let varmap = VarMap::new();
    let model = Gpt::init(&cfg, &varmap, 3, DType::F32, &dev).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    // Every token id and every position appear, so no embedding row is legitimately unused.
    let ids: Vec<u32> = (0..4 * 8).map(|i| if i < 17 { i } else { rng.random_range(0..17) }).collect();
    let x = Tensor::from_vec(ids, (4, 8), &dev).unwrap();
    let y = x.flip(&[1]).unwrap().contiguous().unwrap();
    let grads = model.loss(&x, &y).unwrap().backward().unwrap();
    let data = varmap.data().lock().unwrap();
    assert_eq!(data.len(), 4 + 12 * 2);
    let total: usize = data.values().map(|v| v.elem_count()).sum();
    assert_eq!(total, cfg.num_params());
    for (name, var) in data.iter() {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("{name}: no gradient"));
        let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(g.iter().all(|v| v.is_finite()), "{name}: non-finite gradient");
        assert!(g.iter().any(|&v| v != 0.0), "{name}: all-zero gradient");
    }
}

#[test]
fn adamw_training_beats_the_unigram_entropy() {
    let (ids, vocab) = corpus_ids();
    let h = unigram_entropy(&ids, vocab);
    let cfg = GptConfig::new(vocab, 2, 4, 64, 32);
    let curve = train(&cfg, 42, 300, 16, 3e-3);
    let first = curve[0] as f64;
    let last = curve[curve.len() - 20..].iter().map(|&v| v as f64).sum::<f64>() / 20.0;
    eprintln!("vocab {vocab}, unigram entropy {h:.3} nats, loss {first:.3} -> {last:.3}");
    // At init the model predicts ~uniformly: loss ≈ ln(vocab) > H.
    assert!((first - (vocab as f64).ln()).abs() < 0.1, "initial loss {first}");
    assert!(last < 0.5 * h, "final loss {last} not well below unigram entropy {h}");
}

#[test]
fn same_seed_gives_a_bit_identical_loss_curve() {
    let (_, vocab) = corpus_ids();
    let cfg = GptConfig::new(vocab, 2, 2, 32, 16);
    let a = train(&cfg, 5, 25, 8, 1e-3);
    let b = train(&cfg, 5, 25, 8, 1e-3);
    let c = train(&cfg, 6, 25, 8, 1e-3);
    assert_eq!(a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), b.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    assert_ne!(a, c, "a different seed must change the run");
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn kv_cached_decoding_matches_uncached_logits_with_left_padding() {
    let dev = Device::Cpu;
    let cfg = GptConfig::new(23, 3, 4, 32, 24);
    let varmap = VarMap::new();
    let model = Gpt::init(&cfg, &varmap, 11, DType::F32, &dev).unwrap();
    // Random weights of a trained-like scale, so the check is not dominated by near-zero logits.
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for var in varmap.all_vars() {
        let noise: Vec<f32> = (0..var.elem_count()).map(|_| rng.random_range(-0.2..0.2)).collect();
        var.set(&(var.as_tensor() + Tensor::from_vec(noise, var.shape(), &dev).unwrap()).unwrap()).unwrap();
    }
    let long: Vec<u32> = (0..12).map(|_| rng.random_range(0..23)).collect();
    let short: Vec<u32> = long[..9].to_vec();
    let full =
        |row: &[u32]| model.logits(&Tensor::new(row, &dev).unwrap().unsqueeze(0).unwrap()).unwrap().squeeze(0).unwrap();
    let (full_long, full_short) = (full(&long), full(&short));

    // Batch [pad pad pad short; long], prefill 5 columns, then decode one column at a time:
    // through the differentiable cache (the trainable model) and the packed one (detached).
    let detached = model.detached().unwrap();
    for m in [&model as &dyn CausalLm, detached.as_ref()] {
        let pad = 3;
        let rows = [[vec![0u32; pad], short.clone()].concat(), long.clone()];
        let mask = [[vec![0u8; pad], vec![1u8; short.len()]].concat(), vec![1u8; long.len()]];
        let mut cache = KvCache::new(cfg.n_layer);
        let mut worst = 0f32;
        let mut col = 0;
        for step in [5usize, 1, 1, 1, 1, 1, 1, 1] {
            let ids: Vec<u32> = rows.iter().flat_map(|r| r[col..col + step].to_vec()).collect();
            let ids = Tensor::from_vec(ids, (2, step), &dev).unwrap();
            let mk: Vec<Vec<u8>> = mask.iter().map(|m| m[..col + step].to_vec()).collect();
            let pos = Positions::from_mask(&mk, step, &dev).unwrap();
            let logits = m.lm_logits(&m.hidden(&ids, &pos, Some(&mut cache)).unwrap()).unwrap();
            for j in 0..step {
                let c = col + j;
                let got_long = logits.get(1).unwrap().get(j).unwrap();
                worst = worst.max(max_abs_diff(&got_long, &full_long.get(c).unwrap()));
                if c >= pad {
                    let got_short = logits.get(0).unwrap().get(j).unwrap();
                    worst = worst.max(max_abs_diff(&got_short, &full_short.get(c - pad).unwrap()));
                }
            }
            col += step;
        }
        assert_eq!(cache.len(), 12);
        assert!(worst < 1e-5, "cached vs uncached logits differ by {worst}");
    }

    // Greedy generation (KV cache inside) picks the argmax of uncached logits at every step,
    // and reports their log-softmax as the raw log-prob.
    let params = SamplingParams { max_new_tokens: 8, temperature: 0.0, ..Default::default() };
    let gen = generate(&model, &[short.clone(), long[..4].to_vec()], &params, 0).unwrap();
    for (prompt, (toks, lps)) in
        [short.clone(), long[..4].to_vec()].iter().zip(gen.tokens.iter().zip(&gen.raw_logprobs))
    {
        let mut seq = prompt.clone();
        for (&tok, &lp) in toks.iter().zip(lps) {
            let logits = full(&seq);
            let last = ops::log_softmax_last_dim(&logits.get(seq.len() - 1).unwrap()).unwrap();
            let want = last.argmax(D::Minus1).unwrap().to_scalar::<u32>().unwrap();
            assert_eq!(tok, want);
            let want_lp = last.get(want as usize).unwrap().to_scalar::<f32>().unwrap();
            assert!((lp - want_lp).abs() < 1e-5, "{lp} vs {want_lp}");
            seq.push(tok);
        }
    }
}

#[test]
fn seeded_init_is_reproducible_with_gpt2_statistics() {
    let dev = Device::Cpu;
    let cfg = GptConfig::new(100, 4, 4, 128, 64);
    let (a, b, c) = (VarMap::new(), VarMap::new(), VarMap::new());
    Gpt::init(&cfg, &a, 1, DType::F32, &dev).unwrap();
    Gpt::init(&cfg, &b, 1, DType::F32, &dev).unwrap();
    Gpt::init(&cfg, &c, 2, DType::F32, &dev).unwrap();
    let get = |m: &VarMap, n: &str| var_by_name(m, n).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let names: Vec<String> = a.data().lock().unwrap().keys().cloned().collect();
    for name in &names {
        assert_eq!(get(&a, name), get(&b, name), "{name}");
    }
    assert_ne!(get(&a, "transformer.wte.weight"), get(&c, "transformer.wte.weight"));
    let std = |v: &[f32]| {
        let m = v.iter().sum::<f32>() / v.len() as f32;
        (v.iter().map(|x| (x - m) * (x - m)).sum::<f32>() / v.len() as f32).sqrt()
    };
    let s = std(&get(&a, "transformer.h.0.mlp.c_fc.weight"));
    assert!((s - 0.02).abs() < 0.02 * 0.02, "c_fc std {s}");
    let s = std(&get(&a, "transformer.h.3.mlp.c_proj.weight"));
    let want = 0.02 / (8f32).sqrt();
    assert!((s - want).abs() < want * 0.02, "c_proj std {s} vs {want}");
    assert!(get(&a, "transformer.h.1.ln_2.weight").iter().all(|&v| v == 1.0));
    assert!(get(&a, "transformer.h.1.attn.c_attn.bias").iter().all(|&v| v == 0.0));
}

fn load_err(dir: &std::path::Path) -> String {
    match Gpt::load(dir, &Device::Cpu, false) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn checkpoint_roundtrip_is_bit_identical_and_bad_files_are_named() {
    let dev = Device::Cpu;
    let cfg = GptConfig::new(30, 2, 2, 16, 10);
    let varmap = VarMap::new();
    let model = Gpt::init(&cfg, &varmap, 9, DType::F32, &dev).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("gpt");
    model.save(&dir).unwrap();
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved["model_type"], "mismatch-gpt");
    let x = Tensor::new(&[[1u32, 2, 3, 29, 0]], &dev).unwrap();
    let want = model.logits(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for trainable in [false, true] {
        let (back, vm) = Gpt::load(&dir, &dev, trainable).unwrap();
        assert_eq!(vm.is_some(), trainable);
        assert_eq!(back.config(), &cfg);
        let got = back.logits(&x).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        if trainable {
            assert_eq!(got, want);
        } else {
            // Constant weights take candle's inference kernels (ops.rs), which round differently.
            let d = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(d < 1e-5, "logits differ by {d}");
        }
    }
    let (_, vm) = Gpt::load(&dir, &dev, true).unwrap();
    let vm = vm.unwrap();
    for (name, var) in varmap.data().lock().unwrap().iter() {
        let a = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let b = var_by_name(&vm, name).flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(
            a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "{name}"
        );
    }

    // Wrong model type, inconsistent shapes and missing files are errors naming the file.
    let mut bad = saved.clone();
    bad["model_type"] = "llama".into();
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&bad).unwrap()).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("config.json") && err.contains("model_type"), "{err}");
    let mut bad = saved.clone();
    bad["n_embd"] = 24.into();
    std::fs::write(dir.join("config.json"), serde_json::to_vec(&bad).unwrap()).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("model.safetensors") && err.contains("shape"), "{err}");
    std::fs::write(dir.join("config.json"), b"{ not json").unwrap();
    let err = load_err(&dir);
    assert!(err.contains("config.json") && err.contains("line 1"), "{err}");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn out_of_range_tokens_and_positions_are_errors_not_panics() {
    let dev = Device::Cpu;
    let cfg = GptConfig::new(10, 1, 1, 8, 4);
    let model = Gpt::init(&cfg, &VarMap::new(), 0, DType::F32, &dev).unwrap();
    let err = model.logits(&Tensor::new(&[[1u32, 10]], &dev).unwrap()).unwrap_err().to_string();
    assert!(err.contains("vocabulary"), "{err}");
    let err = model.logits(&Tensor::new(&[[1u32, 2, 3, 4, 5]], &dev).unwrap()).unwrap_err().to_string();
    assert!(err.contains("context"), "{err}");
}

/// `detached()` is the same function on the same storage: bit-identical logits, no graph, and
/// an in-place update of the trainable original is seen through it.
#[test]
fn detached_model_shares_weights_and_builds_no_graph() {
    let dev = Device::Cpu;
    let cfg = GptConfig::new(40, 2, 2, 16, 32);
    let vm = VarMap::new();
    let m = Gpt::init(&cfg, &vm, 3, DType::F32, &dev).unwrap();
    let d = m.detached().unwrap();
    let ids = Tensor::new(&[[1u32, 5, 9, 33, 2], [1, 7, 7, 3, 30]], &dev).unwrap();
    let (a, b) = (m.logits(&ids).unwrap(), d.logits(&ids).unwrap());
    assert!(a.track_op() && !b.track_op());
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    let wte = var_by_name(&vm, "transformer.wte.weight");
    wte.set(&(wte.as_tensor() * 2.0).unwrap()).unwrap();
    let (a, b) = (m.logits(&ids).unwrap(), d.logits(&ids).unwrap());
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
}
