//! `backprop::backward` (weight gradients kept out of candle's gradient store) gives the
//! gradients of `Tensor::backward`, bit for bit, on every model family that trains: a Llama with
//! tied embeddings (the tied weight's two gradients are merged from the sink and the store), an
//! untied Llama, a Qwen2 (biased projections) and the tiny GPT (fused linear + bias, LayerNorm).
//! A Llama that recomputes its layers in the backward pass gives the same gradients too.

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use mismatch_models::{backprop, ops, CausalLm, Gpt, GptConfig, Llama, LlamaConfig, Positions};

fn llama_config(model_type: &str, tie: bool) -> LlamaConfig {
    serde_json::from_value(serde_json::json!({
        "model_type": model_type, "vocab_size": 50, "hidden_size": 32, "intermediate_size": 48,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 64, "tie_word_embeddings": tie
    }))
    .unwrap()
}

/// Mean negative log-likelihood of the next token on a fixed batch.
fn nll(model: &dyn CausalLm) -> Tensor {
    let dev = Device::Cpu;
    let ids = Tensor::new(&[[3u32, 7, 1, 0, 40, 12, 9], [5, 5, 9, 2, 8, 30, 11]], &dev).unwrap();
    let targets = Tensor::new(&[[7u32, 1, 0, 40, 12, 9, 4], [5, 9, 2, 8, 30, 11, 1]], &dev).unwrap();
    let lp = ops::gather_last(&ops::log_softmax_last_dim(&model.logits(&ids).unwrap()).unwrap(), &targets).unwrap();
    lp.mean_all().unwrap().neg().unwrap()
}

fn assert_same(varmap: &VarMap, plain: &GradStore, sunk: &GradStore, what: &str) {
    let vars = varmap.data().lock().unwrap();
    assert!(!vars.is_empty());
    for (name, v) in vars.iter() {
        let bits = |g: &GradStore| {
            let g = g.get(v.as_tensor()).unwrap_or_else(|| panic!("{what}: no gradient for {name}"));
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(bits(plain), bits(sunk), "{what}: {name}");
    }
}

#[test]
fn llama_gradients_equal_candles_bit_for_bit() {
    for (ty, tie) in [("llama", true), ("llama", false), ("qwen2", false)] {
        let m = Llama::random(&llama_config(ty, tie), &Device::Cpu).unwrap();
        let plain = nll(&m).backward().unwrap();
        let sunk = backprop::backward(&nll(&m)).unwrap();
        assert_same(m.varmap().unwrap(), &plain, &sunk, &format!("{ty}, tied {tie}"));
    }
}

#[test]
fn gpt_gradients_equal_candles_bit_for_bit() {
    let vm = VarMap::new();
    let m = Gpt::init(&GptConfig::new(50, 2, 2, 32, 16), &vm, 3, DType::F32, &Device::Cpu).unwrap();
    let plain = nll(&m).backward().unwrap();
    let sunk = backprop::backward(&nll(&m)).unwrap();
    assert_same(&vm, &plain, &sunk, "gpt");
}

/// As [`nll`] on a left-padded batch (row 1 has three pads), read through `hidden`.
fn nll_padded(model: &dyn CausalLm) -> Tensor {
    let dev = Device::Cpu;
    let ids = Tensor::new(&[[3u32, 7, 1, 0, 40, 12, 9], [0, 0, 0, 2, 8, 30, 11]], &dev).unwrap();
    let targets = Tensor::new(&[[7u32, 1, 0, 40, 12, 9, 4], [0, 0, 0, 8, 30, 11, 1]], &dev).unwrap();
    let mask = vec![vec![1u8; 7], vec![0, 0, 0, 1, 1, 1, 1]];
    let pos = Positions::from_mask(&mask, 7, &dev).unwrap();
    let h = model.hidden(&ids, &pos, None).unwrap();
    let lp = ops::gather_last(&ops::log_softmax_last_dim(&model.lm_logits(&h).unwrap()).unwrap(), &targets).unwrap();
    let keep = Tensor::new(&[[1f32; 7], [0., 0., 0., 1., 1., 1., 1.]], &dev).unwrap();
    (lp * keep).unwrap().sum_all().unwrap().neg().unwrap()
}

#[test]
fn llama_recomputed_layers_give_the_plain_gradients_bit_for_bit() {
    for (ty, tie) in [("llama", true), ("llama", false), ("qwen2", false)] {
        let m = Llama::random(&llama_config(ty, tie), &Device::Cpu).unwrap();
        let r = m.clone().with_recompute(true);
        for (loss, which) in [(nll as fn(&dyn CausalLm) -> Tensor, "causal"), (nll_padded, "left-padded")] {
            let plain = backprop::backward(&loss(&m)).unwrap();
            let recomputed = backprop::backward(&loss(&r)).unwrap();
            assert_same(m.varmap().unwrap(), &plain, &recomputed, &format!("{ty}, tied {tie}, {which}, recomputed"));
        }
    }
}

/// Layers recomputed one row at a time: the weight gradients are sums over rows, the plain
/// ones up to rounding.
#[test]
fn llama_layers_recomputed_in_row_chunks_give_the_plain_gradients() {
    for (ty, tie) in [("llama", true), ("qwen2", false)] {
        let m = Llama::random(&llama_config(ty, tie), &Device::Cpu).unwrap();
        let r = m.clone().with_recompute(true).with_recompute_chunk(7);
        let plain = backprop::backward(&nll_padded(&m)).unwrap();
        let chunked = backprop::backward(&nll_padded(&r)).unwrap();
        for (name, v) in m.varmap().unwrap().data().lock().unwrap().iter() {
            let (a, b) = (plain.get(v.as_tensor()).unwrap(), chunked.get(v.as_tensor()).unwrap());
            let scale = a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap().max(1e-6);
            let d = (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d <= 1e-5 * scale, "{ty}: {name}: max |Δ| {d} (max |g| {scale})");
        }
    }
}

#[test]
fn recomputed_layers_refuse_candles_own_backward() {
    let m = Llama::random(&llama_config("llama", false), &Device::Cpu).unwrap().with_recompute(true);
    let err = nll(&m).backward().unwrap_err().to_string();
    assert!(err.contains("mismatch_models::backprop::backward"), "{err}");
}
