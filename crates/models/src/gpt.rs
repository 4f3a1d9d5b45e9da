//! A small GPT trained from scratch: nanoGPT (Karpathy 2022), i.e. GPT-2 (Radford et al. 2019)
//! without dropout. Learned token and position embeddings, `n_layer` pre-LN blocks
//!
//! ```text
//! x = x + c_proj(attn(ln_1(x)))        attn: causal multi-head softmax(q kᵀ/√d + bias) v
//! x = x + mlp.c_proj(gelu(c_fc(ln_2(x))))   4× expansion, tanh-approximated GELU
//! ```
//!
//! a final LayerNorm, and an LM head tied to the token embedding (Press & Wolf 2017).
//! Weights are initialised as GPT-2: N(0, 0.02) everywhere, residual projections (`c_proj`)
//! N(0, 0.02/√(2·n_layer)), biases 0, LayerNorm gains 1. Initialisation draws from a ChaCha
//! stream seeded by the caller, so a seed gives bit-identical weights on every machine.
//!
//! Tensor names follow nanoGPT's `nn.Linear` layout (`[out, in]`), e.g.
//! `transformer.h.0.attn.c_attn.weight`; the tied head is stored once, as `transformer.wte.weight`.

use crate::attention::{attention, KvCache, Positions};
use crate::checkpoint::{load_safetensors, missing_layer, read_json, save_checkpoint};
use crate::decoder::CausalLm;
use crate::error::{Error, Result};
use crate::ops;
use candle_core::{bail, DType, Device, Tensor, Var, D};
use candle_nn::{VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::Path;

pub const MODEL_TYPE: &str = "mismatch-gpt";
const LN_EPS: f64 = 1e-5;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GptConfig {
    pub vocab_size: usize,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_embd: usize,
    /// Context length: number of learned positions.
    pub block_size: usize,
    #[serde(default = "model_type")]
    pub model_type: String,
}

fn model_type() -> String {
    MODEL_TYPE.to_string()
}

impl GptConfig {
    pub fn new(vocab_size: usize, n_layer: usize, n_head: usize, n_embd: usize, block_size: usize) -> Self {
        Self { vocab_size, n_layer, n_head, n_embd, block_size, model_type: model_type() }
    }

    /// Checks the invariants the model relies on; `what` names the source in the message.
    pub fn validate(&self, what: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(what, m));
        if self.model_type != MODEL_TYPE {
            return bad(format!("model_type is {:?}, expected {MODEL_TYPE:?}", self.model_type));
        }
        if self.vocab_size == 0 || self.n_layer == 0 || self.n_head == 0 || self.block_size == 0 {
            return bad("vocab_size, n_layer, n_head and block_size must be positive".into());
        }
        if self.n_embd == 0 || !self.n_embd.is_multiple_of(self.n_head) {
            return bad(format!("n_embd ({}) must be a positive multiple of n_head ({})", self.n_embd, self.n_head));
        }
        if self.checked_num_params().is_none() {
            return bad(format!(
                "vocab_size {}, n_layer {}, n_embd {} and block_size {} make more parameters than can be counted",
                self.vocab_size, self.n_layer, self.n_embd, self.block_size
            ));
        }
        Ok(())
    }

    /// Number of parameters (the tied head counted once); `usize::MAX` when it overflows.
    pub fn num_params(&self) -> usize {
        self.checked_num_params().unwrap_or(usize::MAX)
    }

    /// Number of parameters, `None` when it overflows `usize` (then so may a tensor's shape).
    fn checked_num_params(&self) -> Option<usize> {
        let c = self.n_embd;
        // Per block: 2 layer norms (4c), c_attn (3c² + 3c), attn c_proj (c² + c), c_fc (4c² + 4c),
        // mlp c_proj (4c² + c); every shape's size is at most this.
        let block = c.checked_mul(c)?.checked_mul(12)?.checked_add(c.checked_mul(13)?)?;
        [self.vocab_size.checked_mul(c)?, self.block_size.checked_mul(c)?, self.n_layer.checked_mul(block)?, 2 * c]
            .into_iter()
            .try_fold(0usize, usize::checked_add)
    }

    /// Every parameter's name, shape and init standard deviation (0: zeros, `None`: ones),
    /// in a fixed order that defines the seeded initialisation stream.
    fn param_specs(&self) -> Vec<(String, Vec<usize>, Option<f64>)> {
        let c = self.n_embd;
        let std = 0.02;
        let proj_std = 0.02 / (2.0 * self.n_layer as f64).sqrt();
        let mut v = vec![
            ("transformer.wte.weight".to_string(), vec![self.vocab_size, c], Some(std)),
            ("transformer.wpe.weight".to_string(), vec![self.block_size, c], Some(std)),
        ];
        for i in 0..self.n_layer {
            let p = |s: &str| format!("transformer.h.{i}.{s}");
            v.extend([
                (p("ln_1.weight"), vec![c], None),
                (p("ln_1.bias"), vec![c], Some(0.0)),
                (p("attn.c_attn.weight"), vec![3 * c, c], Some(std)),
                (p("attn.c_attn.bias"), vec![3 * c], Some(0.0)),
                (p("attn.c_proj.weight"), vec![c, c], Some(proj_std)),
                (p("attn.c_proj.bias"), vec![c], Some(0.0)),
                (p("ln_2.weight"), vec![c], None),
                (p("ln_2.bias"), vec![c], Some(0.0)),
                (p("mlp.c_fc.weight"), vec![4 * c, c], Some(std)),
                (p("mlp.c_fc.bias"), vec![4 * c], Some(0.0)),
                (p("mlp.c_proj.weight"), vec![c, 4 * c], Some(proj_std)),
                (p("mlp.c_proj.bias"), vec![c], Some(0.0)),
            ]);
        }
        v.push(("transformer.ln_f.weight".to_string(), vec![c], None));
        v.push(("transformer.ln_f.bias".to_string(), vec![c], Some(0.0)));
        v
    }
}

/// Standard normal by Box–Muller from a seeded stream (rand 0.9 has no normal distribution
/// without `rand_distr`; this keeps the dependency set and the stream fixed).
fn normal(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]: ln stays finite
        let u2: f64 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt() * std;
        let a = 2.0 * std::f64::consts::PI * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}

#[derive(Debug, Clone)]
struct Linear {
    w: Tensor, // [out, in]
    b: Tensor, // [out]
}

impl Linear {
    fn load(vb: &VarBuilder, out: usize, inp: usize) -> candle_core::Result<Self> {
        Ok(Self { w: vb.get((out, inp), "weight")?, b: vb.get(out, "bias")? })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ops::linear_fused(x, &self.w, &self.b)
    }
}

#[derive(Debug, Clone)]
struct LayerNorm {
    w: Tensor,
    b: Tensor,
}

impl LayerNorm {
    fn load(vb: &VarBuilder, c: usize) -> candle_core::Result<Self> {
        Ok(Self { w: vb.get(c, "weight")?, b: vb.get(c, "bias")? })
    }
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        ops::layer_norm_fused(x, &self.w, &self.b, LN_EPS)
    }
}

#[derive(Debug, Clone)]
struct Block {
    ln_1: LayerNorm,
    c_attn: Linear,
    attn_proj: Linear,
    ln_2: LayerNorm,
    c_fc: Linear,
    mlp_proj: Linear,
    n_head: usize,
}

impl Block {
    fn load(vb: VarBuilder, cfg: &GptConfig) -> candle_core::Result<Self> {
        let c = cfg.n_embd;
        Ok(Self {
            ln_1: LayerNorm::load(&vb.pp("ln_1"), c)?,
            c_attn: Linear::load(&vb.pp("attn.c_attn"), 3 * c, c)?,
            attn_proj: Linear::load(&vb.pp("attn.c_proj"), c, c)?,
            ln_2: LayerNorm::load(&vb.pp("ln_2"), c)?,
            c_fc: Linear::load(&vb.pp("mlp.c_fc"), 4 * c, c)?,
            mlp_proj: Linear::load(&vb.pp("mlp.c_proj"), c, 4 * c)?,
            n_head: cfg.n_head,
        })
    }

    fn forward(&self, x: &Tensor, bias: &Tensor, cache: Option<(&mut KvCache, usize)>) -> candle_core::Result<Tensor> {
        let params = self.params();
        // Training on CPU: the block is one node of the graph (its own backward), with the
        // values and gradients of the op-by-op path below.
        if cache.is_none() && x.track_op() && ops::fused_cpu(x) && params.iter().all(|p| p.dtype() == x.dtype()) {
            return crate::gpt_block::block(x, bias, &params, self.n_head, LN_EPS);
        }
        self.forward_ops(x, bias, cache)
    }

    /// The parameters in [`GptConfig`]'s order.
    fn params(&self) -> [&Tensor; 12] {
        let (l1, a, p, l2, f, m) = (&self.ln_1, &self.c_attn, &self.attn_proj, &self.ln_2, &self.c_fc, &self.mlp_proj);
        [&l1.w, &l1.b, &a.w, &a.b, &p.w, &p.b, &l2.w, &l2.b, &f.w, &f.b, &m.w, &m.b]
    }

    /// The block op by op: inference, with or without a cache, and scoring through a cache.
    fn forward_ops(
        &self,
        x: &Tensor,
        bias: &Tensor,
        cache: Option<(&mut KvCache, usize)>,
    ) -> candle_core::Result<Tensor> {
        let h = self.n_head;
        let qkv = self.c_attn.forward(&self.ln_1.forward(x)?)?;
        let y = match cache {
            None => ops::attention_qkv_fused(&qkv, bias, h)?,
            // Sampling: the packed cache, written in place, and the fused kernel.
            Some((cache, layer)) if !qkv.track_op() && ops::fused_cpu(&qkv) => {
                let (buf, past) = cache.append_packed(layer, &qkv)?;
                ops::attention_cached(&buf, bias, h, past, qkv.dim(1)?)?
            }
            // Scoring through a cache with gradients (shared prompts): differentiable pieces.
            Some(cache) => Self::cached_attention(&qkv, bias, h, cache)?,
        };
        let x = (x + self.attn_proj.forward(&y)?)?;
        let m = ops::linear_gelu_fused(&self.ln_2.forward(&x)?, &self.c_fc.w, &self.c_fc.b)?;
        x + self.mlp_proj.forward(&m)?
    }

    fn cached_attention(
        qkv: &Tensor,
        bias: &Tensor,
        h: usize,
        (cache, layer): (&mut KvCache, usize),
    ) -> candle_core::Result<Tensor> {
        let (b, t, c3) = qkv.dims3()?;
        let (c, d) = (c3 / 3, c3 / 3 / h);
        let heads = |i: usize| qkv.narrow(D::Minus1, i * c, c)?.reshape((b, t, h, d))?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
        let (k, v) = cache.append(layer, &k, &v)?;
        attention(&q, &k, &v, bias)?.transpose(1, 2)?.reshape((b, t, c))
    }
}

/// The GPT. Holds its parameters as tensors; when built from a [`VarMap`] they are the
/// map's [`Var`]s, so an optimiser stepping `varmap.all_vars()` updates the model in place.
#[derive(Debug, Clone)]
pub struct Gpt {
    cfg: GptConfig,
    wte: Tensor,
    wpe: Tensor,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    /// Every parameter by name, for `save`.
    params: HashMap<String, Tensor>,
    device: Device,
}

impl Gpt {
    /// Builds the model from `vb` (which must hold every parameter: a checkpoint or a
    /// [`VarMap`] filled by [`Gpt::init`]).
    pub fn new(cfg: &GptConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate(Path::new("<config>"))?;
        let mut params = HashMap::new();
        for (name, shape, _) in cfg.param_specs() {
            params.insert(name.clone(), vb.get(shape, &name)?);
        }
        let t = vb.pp("transformer");
        let blocks = (0..cfg.n_layer)
            .map(|i| Block::load(t.pp(format!("h.{i}")), cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            cfg: cfg.clone(),
            wte: t.get((cfg.vocab_size, cfg.n_embd), "wte.weight")?,
            wpe: t.get((cfg.block_size, cfg.n_embd), "wpe.weight")?,
            blocks,
            ln_f: LayerNorm::load(&t.pp("ln_f"), cfg.n_embd)?,
            params,
            device: vb.device().clone(),
        })
    }

    /// Fills `varmap` with freshly initialised, trainable parameters (GPT-2 scheme, seeded)
    /// and builds the model on them. `dtype` F64 is meant for gradient checks.
    pub fn init(cfg: &GptConfig, varmap: &VarMap, seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        cfg.validate(Path::new("<config>"))?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        {
            let mut data = varmap.data().lock().map_err(|_| Error::Usage("VarMap lock poisoned".into()))?;
            for (name, shape, std) in cfg.param_specs() {
                let n: usize = shape.iter().product();
                let t = match std {
                    None => Tensor::ones(shape, dtype, device)?,
                    Some(0.0) => Tensor::zeros(shape, dtype, device)?,
                    Some(s) => Tensor::from_vec(normal(&mut rng, n, s), shape, device)?.to_dtype(dtype)?,
                };
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        Self::new(cfg, VarBuilder::from_varmap(varmap, dtype, device))
    }

    /// Loads a checkpoint written by [`Gpt::save`]. With `trainable`, the weights are copied
    /// into a fresh [`VarMap`] (returned) for further training; otherwise they are constants.
    pub fn load(dir: &Path, device: &Device, trainable: bool) -> Result<(Self, Option<VarMap>)> {
        let cfg_path = dir.join("config.json");
        let cfg: GptConfig = read_json(&cfg_path)?;
        cfg.validate(&cfg_path)?;
        let st_path = dir.join("model.safetensors");
        let tensors = load_safetensors(&st_path, device)?;
        if let Some(name) = missing_layer(cfg.n_layer, tensors.len(), |i| {
            let name = format!("transformer.h.{i}.ln_1.weight");
            (!tensors.contains_key(&name)).then_some(name)
        }) {
            return Err(Error::invalid(&st_path, format!("missing tensor {name} (n_layer is {})", cfg.n_layer)));
        }
        let mut checked = HashMap::new();
        for (name, shape, _) in cfg.param_specs() {
            let t = tensors.get(&name).ok_or_else(|| Error::invalid(&st_path, format!("missing tensor {name}")))?;
            if t.dims() != shape.as_slice() {
                return Err(Error::invalid(
                    &st_path,
                    format!("tensor {name} has shape {:?}, config implies {shape:?}", t.dims()),
                ));
            }
            if t.dtype() != DType::F32 && t.dtype() != DType::F64 {
                return Err(Error::invalid(
                    &st_path,
                    format!("tensor {name} has dtype {:?}, expected f32 or f64", t.dtype()),
                ));
            }
            checked.insert(name, t.clone());
        }
        let dtype = checked["transformer.wte.weight"].dtype();
        if trainable {
            let varmap = VarMap::new();
            {
                let mut data = varmap.data().lock().map_err(|_| Error::Usage("VarMap lock poisoned".into()))?;
                for (name, t) in checked {
                    data.insert(name, Var::from_tensor(&t.to_dtype(dtype)?)?);
                }
            }
            let m = Self::new(&cfg, VarBuilder::from_varmap(&varmap, dtype, device))?;
            Ok((m, Some(varmap)))
        } else {
            let m = Self::new(&cfg, VarBuilder::from_tensors(checked, dtype, device))?;
            Ok((m, None))
        }
    }

    /// Writes `dir/model.safetensors` and `dir/config.json` atomically (HF layout).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let cfg = serde_json::to_value(&self.cfg).map_err(|e| Error::Usage(format!("config: {e}")))?;
        // Detached copies: a Var's storage may be stepped by an optimiser while we serialise.
        let tensors =
            self.params.iter().map(|(k, v)| Ok((k.clone(), v.copy()?))).collect::<candle_core::Result<_>>()?;
        save_checkpoint(dir, &tensors, &cfg, vec![])
    }

    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.wte.dtype()
    }

    /// Mean next-token cross-entropy `−(1/N) Σ log softmax(logits)[target]` over a full,
    /// unpadded batch: `ids` and `targets` `[b, t]` u32.
    pub fn loss(&self, ids: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
        let logits = self.logits(ids)?;
        ops::cross_entropy(&logits.flatten_to(1)?, &targets.flatten_all()?)
    }
}

impl CausalLm for Gpt {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn hidden_size(&self) -> usize {
        self.cfg.n_embd
    }
    fn num_layers(&self) -> usize {
        self.cfg.n_layer
    }
    fn max_seq_len(&self) -> usize {
        self.cfg.block_size
    }
    fn device(&self) -> &Device {
        &self.device
    }

    fn hidden(&self, ids: &Tensor, pos: &Positions, mut cache: Option<&mut KvCache>) -> candle_core::Result<Tensor> {
        let (b, t) = ids.dims2()?;
        let c = self.cfg.n_embd;
        let flat_pos = pos.positions.flatten_all()?;
        let max_pos = flat_pos.max(0)?.to_scalar::<u32>()? as usize;
        if max_pos >= self.cfg.block_size {
            bail!("position {max_pos} is beyond the model's context of {} tokens", self.cfg.block_size);
        }
        let max_id = ids.flatten_all()?.max(0)?.to_scalar::<u32>()? as usize;
        if max_id >= self.cfg.vocab_size {
            bail!("token id {max_id} is outside the vocabulary of {} tokens", self.cfg.vocab_size);
        }
        let tok = self.wte.embedding(&ids.flatten_all()?)?;
        let p = self.wpe.index_select(&flat_pos, 0)?;
        let mut x = (tok + p)?.reshape((b, t, c))?;
        let bias = pos.bias.to_dtype(x.dtype())?;
        for (i, block) in self.blocks.iter().enumerate() {
            x = block.forward(&x, &bias, cache.as_deref_mut().map(|c| (c, i)))?;
        }
        self.ln_f.forward(&x)
    }

    /// The GPT takes the same fused kernels with and without a graph, so a detached copy
    /// computes exactly what the tracked model does.
    fn detached(&self) -> candle_core::Result<Box<dyn CausalLm>> {
        let params: HashMap<String, Tensor> = self.params.iter().map(|(k, v)| (k.clone(), v.detach())).collect();
        let vb = VarBuilder::from_tensors(params, self.dtype(), &self.device);
        Ok(Box::new(Self::new(&self.cfg, vb).map_err(candle_core::Error::wrap)?))
    }

    fn lm_logits(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, c) = hidden.dims3()?;
        hidden.reshape((b * t, c))?.matmul(&self.wte.t()?)?.reshape((b, t, self.cfg.vocab_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::Positions;

    /// The block as one node (`forward` on a tracked input) computes the values and gradients
    /// of the op-by-op graph (`forward_ops`) bit for bit: with the attention probabilities kept
    /// (t ≤ 3·head size) and recomputed, with rows that leave a partial group of four and, in
    /// the long case, two LayerNorm tasks.
    #[test]
    fn fused_block_equals_the_op_by_op_graph_bit_for_bit() {
        let dev = Device::Cpu;
        for (b, t, dtype) in [(3usize, 7usize, DType::F32), (3, 7, DType::F64), (2, 531, DType::F32)] {
            let cfg = GptConfig::new(11, 1, 2, 16, t);
            let varmap = VarMap::new();
            let model = Gpt::init(&cfg, &varmap, 5, dtype, &dev).unwrap();
            // Fixed, irregular values: sin(k·i + φ).
            let wave = |shape: &[usize], k: f64, phase: f64| {
                let n: usize = shape.iter().product();
                let v: Vec<f64> = (0..n).map(|i| (k * i as f64 + phase).sin()).collect();
                Tensor::from_vec(v, shape, &dev).unwrap().to_dtype(dtype).unwrap()
            };
            // Non-trivial gains and biases: the init's ones and zeros would hide a swapped slot.
            let vars = varmap.data().lock().unwrap();
            for (i, (name, _, _)) in cfg.param_specs().iter().skip(2).take(12).enumerate() {
                let v = &vars[name];
                let noise = (wave(v.dims(), 0.731, i as f64) * 0.3).unwrap();
                v.set(&(v.as_tensor() + noise).unwrap()).unwrap();
            }
            drop(vars);
            let block = &model.blocks[0];
            let x = Var::from_tensor(&wave(&[b, t, 16], 0.377, 0.5)).unwrap();
            let mask: Vec<Vec<u8>> = (0..b).map(|i| (0..t).map(|j| u8::from(j >= i)).collect()).collect();
            let bias = Positions::from_mask(&mask, t, &dev).unwrap().bias.to_dtype(dtype).unwrap();
            let dy = wave(&[b, t, 16], 0.913, 1.5);
            // `sink`: through `backprop::backward`, which takes the op-by-op graph's weight
            // gradients out of candle's store.
            let run = |fused: bool, sink: bool| {
                let y = match fused {
                    true => block.forward(x.as_tensor(), &bias, None).unwrap(),
                    false => block.forward_ops(x.as_tensor(), &bias, None).unwrap(),
                };
                let loss = (&y * &dy).unwrap().sum_all().unwrap();
                let grads = if sink { crate::backprop::backward(&loss) } else { loss.backward() }.unwrap();
                let mut all = vec![y];
                all.push(grads.get(x.as_tensor()).unwrap().clone());
                for p in block.params() {
                    all.push(grads.get(p).expect("every parameter has a gradient").clone());
                }
                all.iter()
                    .map(|t| t.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1::<f64>().unwrap())
                    .collect::<Vec<_>>()
            };
            let ops = run(false, false);
            for (fused, sink) in [(true, false), (true, true), (false, true)] {
                for (i, (f, o)) in run(fused, sink).iter().zip(&ops).enumerate() {
                    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(f),
                        bits(o),
                        "b {b}, t {t}, {dtype:?}, fused {fused}, sink {sink}: output {i} (0 = y, 1 = dx, then the parameters)"
                    );
                }
            }
        }
    }
}
