//! Llama-family decoder (Touvron et al. 2023, "LLaMA"; also SmolLM2 and Qwen2), matching
//! transformers' `LlamaForCausalLM` / `Qwen2ForCausalLM`:
//!
//! ```text
//! h_0 = E[ids]
//! a_l = h_{l-1} + W_o · Attn(RoPE(W_q n), RoPE(W_k n), W_v n),   n = RMSNorm(h_{l-1})
//! h_l = a_l + W_down (SiLU(W_gate m) ⊙ W_up m),                  m = RMSNorm(a_l)
//! logits = W_lm · RMSNorm(h_L)        (W_lm = E when embeddings are tied)
//! ```
//!
//! with grouped-query attention (Ainslie et al. 2023), rotate-half RoPE (Su et al. 2021),
//! SwiGLU (Shazeer 2020) and RMSNorm (Zhang & Sennrich 2019). Every op is differentiable
//! (see [`crate::ops`]), so the same code serves inference and training.

use crate::attention::{attention, KvCache, Positions};
use crate::checkpoint::{self, CheckpointFile};
use crate::decoder::CausalLm;
use crate::error::{Error, Result};
use crate::gguf::Gguf;
use crate::ops::{rms_norm, Rotary};
use crate::tokenizer::Tok;
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{Embedding, Init, Linear, VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::Path;

mod config;
mod recompute;
mod skinny;
pub use config::{LlamaConfig, TokenIds};
use skinny::{skinny_supported, SkinnyMatmul, SKINNY_MAX_ROWS};

#[derive(Debug, Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

fn linear(vb: &VarBuilder, inp: usize, out: usize, bias: bool) -> candle_core::Result<Linear> {
    let w = vb.get_with_hints((out, inp), "weight", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
    let b = if bias { Some(vb.get_with_hints(out, "bias", Init::Const(0.0))?) } else { None };
    Ok(Linear::new(w, b))
}

impl Attention {
    fn load(vb: VarBuilder, cfg: &LlamaConfig) -> candle_core::Result<Self> {
        let (h, kv, d, hid) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim(), cfg.hidden_size);
        Ok(Self {
            q: linear(&vb.pp("q_proj"), hid, h * d, cfg.qkv_bias())?,
            k: linear(&vb.pp("k_proj"), hid, kv * d, cfg.qkv_bias())?,
            v: linear(&vb.pp("v_proj"), hid, kv * d, cfg.qkv_bias())?,
            o: linear(&vb.pp("o_proj"), h * d, hid, cfg.o_bias())?,
            heads: h,
            kv_heads: kv,
            head_dim: d,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        pos: &Positions,
        rot: &Rope,
        cache: Option<(&mut KvCache, usize)>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let split = |y: Tensor, n: usize| y.reshape((b, t, n, self.head_dim))?.transpose(1, 2);
        let q = rot.apply(&split(lin(&self.q, x)?, self.heads)?, &pos.positions)?;
        let k = rot.apply(&split(lin(&self.k, x)?, self.kv_heads)?, &pos.positions)?;
        let v = split(lin(&self.v, x)?, self.kv_heads)?;
        let (k, v) = match cache {
            Some((c, layer)) => c.append(layer, &k, &v)?,
            None => (k, v),
        };
        let tracked = q.track_op() || k.track_op() || v.track_op();
        if tracked && crate::ops::fused_cpu(&q) && k.dim(2)? == t {
            return lin(&self.o, &packed_attention(&q, &k, &v, &pos.bias)?);
        }
        let y = if tracked { attention(&q, &k, &v, &pos.bias)? } else { grouped_attention(&q, &k, &v, &pos.bias)? };
        lin(&self.o, &y.transpose(1, 2)?.reshape((b, t, self.heads * self.head_dim))?)
    }
}

/// Training attention on CPU through the fused kernel [`crate::ops::attention_qkv_fused`]:
/// q, k and v (`[b, heads, t, d]`, k and v with `kv_heads`) are laid out as one packed
/// `[b, t, 3·heads·d]` block, each KV head repeated for its query heads. The kernel keeps
/// no `[b, heads, t, t]` probabilities for the backward pass (it recomputes them), so a
/// layer's attention memory is linear in `t`; the result is `[b, t, heads·d]`.
fn packed_attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let n = h / k.dim(1)?;
    let merge = |x: Tensor| x.transpose(1, 2)?.reshape((b, t, h * d));
    let (k, v) = (crate::attention::repeat_kv(k, n)?, crate::attention::repeat_kv(v, n)?);
    let qkv = Tensor::cat(&[merge(q.clone())?, merge(k)?, merge(v)?], 2)?;
    crate::ops::attention_qkv_fused(&qkv, bias, h)
}

/// Inference-only form of [`attention`] for grouped-query heads: the `n = h/kv` query heads that
/// share a KV head are stacked along the query axis (`[b, kv, n·t, d]`), so keys and values are
/// used in place instead of being repeated `n` times and copied every decoding step.
fn grouped_attention(q: &Tensor, k: &Tensor, v: &Tensor, bias: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, t, d) = q.dims4()?;
    let (kv, s) = (k.dim(1)?, k.dim(2)?);
    let n = h / kv;
    let q = (q.contiguous()?.reshape((b, kv, n * t, d))? * (1.0 / (d as f64).sqrt()))?;
    let att = q.matmul(&k.contiguous()?.t()?)?.reshape((b, kv, n, t, s))?;
    let att = att.broadcast_add(&bias.unsqueeze(1)?)?;
    let att = crate::ops::softmax_last_dim(&att)?.reshape((b, kv, n * t, s))?;
    att.matmul(&v.contiguous()?)?.reshape((b, h, t, d))
}

#[derive(Debug, Clone)]
struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Mlp {
    fn load(vb: VarBuilder, cfg: &LlamaConfig) -> candle_core::Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate: linear(&vb.pp("gate_proj"), h, i, false)?,
            up: linear(&vb.pp("up_proj"), h, i, false)?,
            down: linear(&vb.pp("down_proj"), i, h, false)?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        lin(&self.down, &crate::llama_ops::swiglu(&lin(&self.gate, x)?, &lin(&self.up, x)?)?)
    }
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: Tensor,
    attn: Attention,
    mlp_norm: Tensor,
    mlp: Mlp,
}

impl Block {
    /// `h + Attn(RMSNorm(h))`, then `+ MLP(RMSNorm(·))`: one layer of the module doc's equations.
    fn forward(
        &self,
        x: &Tensor,
        pos: &Positions,
        rope: &Rope,
        cache: Option<(&mut KvCache, usize)>,
        eps: f64,
    ) -> candle_core::Result<Tensor> {
        let x = (x + self.attn.forward(&rms_norm(x, &self.attn_norm, eps)?, pos, rope, cache)?)?;
        &x + self.mlp.forward(&rms_norm(&x, &self.mlp_norm, eps)?)?
    }

    /// Every parameter of the layer.
    fn weights(&self) -> Vec<&Tensor> {
        let mut out = vec![&self.attn_norm, &self.mlp_norm];
        for l in [&self.attn.q, &self.attn.k, &self.attn.v, &self.attn.o, &self.mlp.gate, &self.mlp.up, &self.mlp.down]
        {
            out.push(l.weight());
            out.extend(l.bias());
        }
        out
    }

    fn load(vb: VarBuilder, cfg: &LlamaConfig) -> candle_core::Result<Self> {
        Ok(Self {
            attn_norm: vb.get_with_hints(cfg.hidden_size, "input_layernorm.weight", Init::Const(1.0))?,
            attn: Attention::load(vb.pp("self_attn"), cfg)?,
            mlp_norm: vb.get_with_hints(cfg.hidden_size, "post_attention_layernorm.weight", Init::Const(1.0))?,
            mlp: Mlp::load(vb.pp("mlp"), cfg)?,
        })
    }
}

/// RoPE tables computed exactly as [`Rotary::new`] does: `cos/sin(p · θ^(−2i/d))` in f32.
fn rope_tables(head_dim: usize, max_pos: usize, theta: f64, device: &Device) -> candle_core::Result<(Tensor, Tensor)> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half).map(|i| (1.0 / theta.powf(2.0 * i as f64 / head_dim as f64)) as f32).collect();
    let inv = Tensor::from_vec(inv, (1, half), device)?;
    let pos = Tensor::arange(0u32, max_pos as u32, device)?.to_dtype(DType::F32)?.reshape((max_pos, 1))?;
    let freqs = pos.broadcast_mul(&inv)?;
    Ok((freqs.cos()?, freqs.sin()?))
}

/// Rotary embedding for one forward pass: candle's fused `rope` (which has no backward) for
/// untracked inputs, [`Rotary`]'s differentiable composition for tracked ones. Deciding per input
/// rather than per model keeps gradients right when only some layers are trained.
#[derive(Clone)]
struct Rope {
    rotary: Rotary,
    /// `[b, t, head_dim/2]`, gathered once per forward for all layers.
    cos: Tensor,
    sin: Tensor,
}

impl Rope {
    fn apply(&self, x: &Tensor, positions: &Tensor) -> candle_core::Result<Tensor> {
        if x.dtype() != DType::F32 || !x.device().is_cpu() {
            self.rotary.apply(x, positions)
        } else if x.track_op() {
            crate::llama_ops::rope(x, &self.cos, &self.sin)
        } else {
            candle_nn::rotary_emb::rope(&x.contiguous()?, &self.cos, &self.sin)
        }
    }
}

/// Default tokens per chunk of a recomputed layer: a SmolLM2-135M layer's activations for
/// 2,048 tokens are about 130 MB, and GEMMs over 2,048 rows run at full speed.
pub const RECOMPUTE_CHUNK_TOKENS: usize = 2048;

/// A Llama-family causal LM. Built from a [`VarBuilder`]: over a [`VarMap`] when trainable (the
/// optimiser updates the map's variables in place), over plain tensors for inference.
#[derive(Clone)]
pub struct Llama {
    pub cfg: LlamaConfig,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: Tensor,
    /// `None` when tied to the embeddings.
    lm_head: Option<Linear>,
    rotary: Rotary,
    /// `[max_pos, head_dim/2]` tables for the fused inference kernel, same values as `rotary`'s.
    rope_cos: Tensor,
    rope_sin: Tensor,
    device: Device,
    varmap: Option<VarMap>,
    /// Recompute each layer's activations in the backward pass instead of keeping them
    /// ([`Llama::with_recompute`]).
    recompute: bool,
    /// Tokens (rows × sequence length) per recomputation chunk ([`Llama::with_recompute_chunk`]).
    recompute_tokens: usize,
}

impl Llama {
    /// Builds the model from `vb` (HF parameter names). With a [`VarMap`]-backed builder, missing
    /// parameters are created with a random init, which is how a model is trained from scratch.
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let m = vb.pp("model");
        let embed_w = m.get_with_hints(
            (cfg.vocab_size, cfg.hidden_size),
            "embed_tokens.weight",
            Init::Randn { mean: 0.0, stdev: 0.02 },
        )?;
        let blocks = (0..cfg.num_hidden_layers)
            .map(|i| Block::load(m.pp(format!("layers.{i}")), cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let norm = m.get_with_hints(cfg.hidden_size, "norm.weight", Init::Const(1.0))?;
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(linear(&vb.pp("lm_head"), cfg.hidden_size, cfg.vocab_size, false)?)
        };
        let device = vb.device().clone();
        let (rope_cos, rope_sin) = rope_tables(cfg.head_dim(), cfg.max_position_embeddings, cfg.rope_theta, &device)?;
        Ok(Self {
            cfg: cfg.clone(),
            embed: Embedding::new(embed_w, cfg.hidden_size),
            blocks,
            norm,
            lm_head,
            rotary: Rotary::new(cfg.head_dim(), cfg.max_position_embeddings, cfg.rope_theta, &device)?,
            rope_cos,
            rope_sin,
            device,
            varmap: None,
            recompute: false,
            recompute_tokens: RECOMPUTE_CHUNK_TOKENS,
        })
    }

    /// With `on`, a training forward on CPU keeps only each layer's input for the backward
    /// pass and recomputes the layer from it there ("gradient checkpointing", Chen et al.
    /// 2016, "Training Deep Nets with Sublinear Memory Cost"): activation memory goes from
    /// `layers × per-layer activations` to `layers × [b, t, hidden] + one layer's`, for about
    /// one more forward pass of compute. Gradients are those of the plain backward pass
    /// (`tests/backprop.rs`). Needs [`crate::backprop::backward`] (the optimisers use it).
    pub fn with_recompute(mut self, on: bool) -> Self {
        self.recompute = on;
        self
    }

    /// Recomputed layers run over the batch a few rows at a time, at most `tokens` tokens
    /// (rows × sequence length, at least one row) per run (default [`RECOMPUTE_CHUNK_TOKENS`]):
    /// a layer's activation memory is that of a chunk. See `llama/recompute.rs`.
    pub fn with_recompute_chunk(mut self, tokens: usize) -> Self {
        self.recompute_tokens = tokens.max(1);
        self
    }

    /// Builds from named f32 tensors; `trainable` puts them in a fresh [`VarMap`].
    /// `path` names the source in errors (missing or mis-shaped tensors).
    pub fn from_tensors(
        cfg: &LlamaConfig,
        tensors: HashMap<String, Tensor>,
        trainable: bool,
        device: &Device,
        path: &Path,
    ) -> Result<Self> {
        cfg.validate(path)?;
        let layers = cfg.num_hidden_layers;
        if let Some(name) = checkpoint::missing_layer(layers, tensors.len(), |i| {
            let name = format!("model.layers.{i}.input_layernorm.weight");
            (!tensors.contains_key(&name)).then_some(name)
        }) {
            return Err(Error::invalid(path, format!("missing tensor {name} (num_hidden_layers is {layers})")));
        }
        let mut expected = Self::parameter_shapes(cfg);
        let mut tensors = tensors;
        // Tied checkpoints may still carry a copy of the embeddings as lm_head.
        if cfg.tie_word_embeddings {
            tensors.remove("lm_head.weight");
        }
        for (name, t) in &tensors {
            match expected.remove(name) {
                None => return Err(Error::invalid(path, format!("unexpected tensor {name}"))),
                Some(shape) if t.dims() != shape.as_slice() => {
                    return Err(Error::invalid(
                        path,
                        format!("tensor {name} has shape {:?}, config implies {shape:?}", t.dims()),
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(name) = expected.keys().min() {
            return Err(Error::invalid(path, format!("missing tensor {name}")));
        }
        let tensors: HashMap<String, Tensor> = tensors
            .into_iter()
            .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?.to_device(device)?)))
            .collect::<candle_core::Result<_>>()?;
        if trainable {
            let varmap = VarMap::new();
            {
                let mut data = varmap.data().lock().expect("fresh varmap");
                for (k, v) in tensors {
                    data.insert(k, Var::from_tensor(&v)?);
                }
            }
            let mut m = Self::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
            m.varmap = Some(varmap);
            Ok(m)
        } else {
            Ok(Self::new(cfg, VarBuilder::from_tensors(tensors, DType::F32, device))?)
        }
    }

    /// A randomly initialised trainable model (for tests and training from scratch).
    pub fn random(cfg: &LlamaConfig, device: &Device) -> Result<Self> {
        cfg.validate(Path::new("<config>"))?;
        let varmap = VarMap::new();
        let mut m = Self::new(cfg, VarBuilder::from_varmap(&varmap, DType::F32, device))?;
        m.varmap = Some(varmap);
        Ok(m)
    }

    /// Loads a model and its tokenizer from a GGUF file or an HF checkpoint directory.
    pub fn load(path: &Path, device: &Device, trainable: bool) -> Result<(Self, Tok)> {
        if path.is_dir() {
            Self::load_hf_dir(path, device, trainable)
        } else {
            Self::load_gguf(path, device, trainable)
        }
    }

    /// Loads a llama/qwen2 GGUF file, every tensor dequantised to f32.
    pub fn load_gguf(path: &Path, device: &Device, trainable: bool) -> Result<(Self, Tok)> {
        let g = Gguf::open(path)?;
        let cfg = g.llama_config()?;
        cfg.validate(path)?;
        let tok = Tok::from_gguf(&g)?;
        tok.check_vocab(cfg.vocab_size)?;
        let tensors = g.tensors_f32(&cfg, device)?;
        Ok((Self::from_tensors(&cfg, tensors, trainable, device, path)?, tok))
    }

    /// Loads an HF directory: `config.json`, `model.safetensors` or the shards listed in
    /// `model.safetensors.index.json`, and the tokenizer files.
    pub fn load_hf_dir(dir: &Path, device: &Device, trainable: bool) -> Result<(Self, Tok)> {
        let cfg_path = dir.join("config.json");
        let cfg: LlamaConfig = checkpoint::read_json(&cfg_path)?;
        cfg.validate(&cfg_path)?;
        let tok = Tok::from_hf_dir(dir)?;
        tok.check_vocab(cfg.vocab_size)?;
        let single = dir.join("model.safetensors");
        let index = dir.join("model.safetensors.index.json");
        let mut tensors = HashMap::new();
        let source = if single.exists() {
            tensors = checkpoint::load_safetensors(&single, device)?;
            single
        } else if index.exists() {
            let idx: serde_json::Value = checkpoint::read_json(&index)?;
            let map = idx["weight_map"].as_object().ok_or_else(|| Error::invalid(&index, "no weight_map object"))?;
            let mut shards: Vec<&str> = map.values().filter_map(|v| v.as_str()).collect();
            shards.sort();
            shards.dedup();
            for s in shards {
                tensors.extend(checkpoint::load_safetensors(&dir.join(s), device)?);
            }
            index
        } else {
            return Err(Error::invalid(dir, "no model.safetensors or model.safetensors.index.json"));
        };
        Ok((Self::from_tensors(&cfg, tensors, trainable, device, &source)?, tok))
    }

    /// The variables an optimiser updates (`None` for an inference-only model).
    pub fn varmap(&self) -> Option<&VarMap> {
        self.varmap.as_ref()
    }

    /// Every parameter under its HF name (the tied lm_head is not repeated).
    pub fn named_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("model.embed_tokens.weight".to_string(), self.embed.embeddings().clone())];
        let mut lin = |p: String, l: &Linear| {
            out.push((format!("{p}.weight"), l.weight().clone()));
            if let Some(b) = l.bias() {
                out.push((format!("{p}.bias"), b.clone()));
            }
        };
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{i}");
            lin(format!("{p}.self_attn.q_proj"), &b.attn.q);
            lin(format!("{p}.self_attn.k_proj"), &b.attn.k);
            lin(format!("{p}.self_attn.v_proj"), &b.attn.v);
            lin(format!("{p}.self_attn.o_proj"), &b.attn.o);
            lin(format!("{p}.mlp.gate_proj"), &b.mlp.gate);
            lin(format!("{p}.mlp.up_proj"), &b.mlp.up);
            lin(format!("{p}.mlp.down_proj"), &b.mlp.down);
        }
        if let Some(h) = &self.lm_head {
            lin("lm_head".to_string(), h);
        }
        for (i, b) in self.blocks.iter().enumerate() {
            out.push((format!("model.layers.{i}.input_layernorm.weight"), b.attn_norm.clone()));
            out.push((format!("model.layers.{i}.post_attention_layernorm.weight"), b.mlp_norm.clone()));
        }
        out.push(("model.norm.weight".to_string(), self.norm.clone()));
        out
    }

    fn parameter_shapes(cfg: &LlamaConfig) -> HashMap<String, Vec<usize>> {
        let (h, kv, d, hid, i) =
            (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim(), cfg.hidden_size, cfg.intermediate_size);
        let mut s = HashMap::new();
        s.insert("model.embed_tokens.weight".to_string(), vec![cfg.vocab_size, hid]);
        s.insert("model.norm.weight".to_string(), vec![hid]);
        if !cfg.tie_word_embeddings {
            s.insert("lm_head.weight".to_string(), vec![cfg.vocab_size, hid]);
        }
        for l in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut add = |n: &str, shape: Vec<usize>| s.insert(format!("{p}.{n}"), shape);
            add("input_layernorm.weight", vec![hid]);
            add("post_attention_layernorm.weight", vec![hid]);
            add("self_attn.q_proj.weight", vec![h * d, hid]);
            add("self_attn.k_proj.weight", vec![kv * d, hid]);
            add("self_attn.v_proj.weight", vec![kv * d, hid]);
            add("self_attn.o_proj.weight", vec![hid, h * d]);
            if cfg.qkv_bias() {
                add("self_attn.q_proj.bias", vec![h * d]);
                add("self_attn.k_proj.bias", vec![kv * d]);
                add("self_attn.v_proj.bias", vec![kv * d]);
            }
            if cfg.o_bias() {
                add("self_attn.o_proj.bias", vec![hid]);
            }
            add("mlp.gate_proj.weight", vec![i, hid]);
            add("mlp.up_proj.weight", vec![i, hid]);
            add("mlp.down_proj.weight", vec![hid, i]);
        }
        s
    }

    /// Writes an HF checkpoint directory (f32 `model.safetensors`, `config.json`, and the
    /// tokenizer files) atomically; [`Llama::load_hf_dir`] reads it back bit-identically.
    pub fn save(&self, dir: &Path, tok: &Tok) -> Result<()> {
        let tensors: HashMap<String, Tensor> = self
            .named_tensors()
            .into_iter()
            .map(|(k, v)| Ok((k, v.detach().to_dtype(DType::F32)?)))
            .collect::<candle_core::Result<_>>()?;
        let extra = vec![
            CheckpointFile::Bytes("tokenizer.json", tok.to_tokenizer_json()?.into_bytes()),
            CheckpointFile::Bytes(
                "tokenizer_config.json",
                serde_json::to_vec_pretty(&tok.tokenizer_config()).expect("json"),
            ),
        ];
        checkpoint::save_checkpoint(dir, &tensors, &self.cfg.to_hf_json(), extra)
    }
}

impl std::fmt::Debug for Llama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Llama").field("cfg", &self.cfg).field("trainable", &self.varmap.is_some()).finish()
    }
}

impl CausalLm for Llama {
    fn vocab_size(&self) -> usize {
        self.cfg.vocab_size
    }
    fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }
    fn num_layers(&self) -> usize {
        self.cfg.num_hidden_layers
    }
    fn max_seq_len(&self) -> usize {
        self.cfg.max_position_embeddings
    }
    fn device(&self) -> &Device {
        &self.device
    }

    fn hidden(&self, ids: &Tensor, pos: &Positions, mut cache: Option<&mut KvCache>) -> candle_core::Result<Tensor> {
        let eps = self.cfg.rms_norm_eps;
        let mut x = self.embed.forward(ids)?;
        let rope = {
            let (b, t) = pos.positions.dims2()?;
            let flat = pos.positions.flatten_all()?;
            let half = self.cfg.head_dim() / 2;
            let cos = self.rope_cos.index_select(&flat, 0)?.reshape((b, t, half))?;
            let sin = self.rope_sin.index_select(&flat, 0)?.reshape((b, t, half))?;
            Rope { rotary: self.rotary.clone(), cos, sin }
        };
        let recompute = self.recompute && cache.is_none() && x.track_op() && x.device().is_cpu();
        for (i, b) in self.blocks.iter().enumerate() {
            x = if recompute {
                x.contiguous()?.apply_op1(recompute::Recompute::new(b, pos, &rope, eps, self.recompute_tokens))?
            } else {
                b.forward(&x, pos, &rope, cache.as_deref_mut().map(|c| (c, i)), eps)?
            };
        }
        rms_norm(&x, &self.norm, eps)
    }

    fn detached(&self) -> candle_core::Result<Box<dyn CausalLm>> {
        let named = self.named_tensors().into_iter().map(|(k, v)| (k, v.detach())).collect();
        let m = Self::from_tensors(&self.cfg, named, false, &self.device, Path::new("<detached>"))
            .map_err(candle_core::Error::wrap)?;
        Ok(Box::new(m))
    }

    fn lm_logits(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        match &self.lm_head {
            Some(h) => lin(h, hidden),
            None => lin_with(&Linear::new(self.embed.embeddings().clone(), None), hidden, Grad::Shared),
        }
    }
}

/// `x · Wᵀ + b`. Decoding feeds a handful of rows through each weight matrix; there gemm's
/// packing of the whole weight on every call costs more than the product itself (it dominated
/// profiles of batched generation), so few-row inference products on CPU go through
/// [`SkinnyMatmul`], which streams each weight row once. Everything else (and training) is one
/// differentiable GEMM over all rows.
fn lin(l: &Linear, x: &Tensor) -> candle_core::Result<Tensor> {
    lin_with(l, x, Grad::Own)
}

/// Whether a weight is used only by its linear map, or also by candle's ops (a tied embedding).
enum Grad {
    Own,
    Shared,
}

fn lin_with(l: &Linear, x: &Tensor, grad: Grad) -> candle_core::Result<Tensor> {
    let w = l.weight();
    let (rows, k) = (x.elem_count() / x.dim(candle_core::D::Minus1)?, x.dim(candle_core::D::Minus1)?);
    let fast = rows <= SKINNY_MAX_ROWS
        && !x.track_op()
        && !w.track_op()
        && x.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && w.is_contiguous()
        && skinny_supported();
    if !fast {
        // One GEMM over all rows (candle_nn's Linear broadcasts W over the batch, which makes its
        // gradient a [batch, in, out] tensor summed afterwards).
        return match l.bias() {
            Some(b) => crate::ops::linear(x, w, b),
            None => match grad {
                Grad::Own => crate::llama_ops::linear_no_bias(x, w),
                Grad::Shared => crate::llama_ops::linear_no_bias_shared(x, w),
            },
        };
    }
    let mut out_shape = x.dims().to_vec();
    *out_shape.last_mut().expect("x has a last dim") = w.dim(0)?;
    let y = x.contiguous()?.reshape((rows, k))?.apply_op2_no_bwd(w, &SkinnyMatmul)?.reshape(out_shape)?;
    match l.bias() {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(model_type: &str, tie: bool) -> LlamaConfig {
        LlamaConfig {
            model_type: model_type.into(),
            vocab_size: 40,
            hidden_size: 16,
            intermediate_size: 24,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: Some(2),
            head_dim: None,
            rms_norm_eps: 1e-5,
            rope_theta: 10_000.0,
            max_position_embeddings: 64,
            tie_word_embeddings: tie,
            attention_bias: false,
            bos_token_id: None,
            eos_token_id: None,
            rope_scaling: None,
        }
    }

    fn ids(dev: &Device) -> Tensor {
        Tensor::new(&[[3u32, 7, 1, 0, 39, 12], [5, 5, 9, 2, 8, 30]], dev).unwrap()
    }

    #[test]
    fn every_parameter_gets_a_finite_nonzero_gradient() {
        let dev = Device::Cpu;
        for (ty, tie) in [("llama", false), ("llama", true), ("qwen2", false)] {
            let m = Llama::random(&tiny(ty, tie), &dev).unwrap();
            let logits = m.logits(&ids(&dev)).unwrap();
            let targets = Tensor::new(&[[7u32, 1, 0, 39, 12, 4], [5, 9, 2, 8, 30, 1]], &dev).unwrap();
            let lp = crate::ops::gather_last(&crate::ops::log_softmax_last_dim(&logits).unwrap(), &targets).unwrap();
            let loss = lp.mean_all().unwrap().neg().unwrap();
            let grads = loss.backward().unwrap();
            let vars = m.varmap().unwrap().data().lock().unwrap();
            assert_eq!(vars.len(), m.named_tensors().len(), "{ty}");
            for (name, v) in vars.iter() {
                let g = grads.get(v.as_tensor()).unwrap_or_else(|| panic!("{ty}/{tie}: no gradient for {name}"));
                let g = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                assert!(g.iter().all(|x| x.is_finite()), "{name}: non-finite gradient");
                assert!(g.iter().any(|&x| x != 0.0), "{ty}/{tie}: zero gradient for {name}");
            }
        }
    }

    #[test]
    fn packed_training_attention_matches_the_composed_one_with_its_gradients() {
        let dev = Device::Cpu;
        let (b, h, kv, t, d) = (2, 4, 2, 5, 3);
        let q = Var::randn(0f32, 1.0, (b, h, t, d), &dev).unwrap();
        let k = Var::randn(0f32, 1.0, (b, kv, t, d), &dev).unwrap();
        let v = Var::randn(0f32, 1.0, (b, kv, t, d), &dev).unwrap();
        let mask = vec![vec![1u8; t], vec![0, 0, 1, 1, 1]];
        let bias = Positions::from_mask(&mask, t, &dev).unwrap().bias;
        let r = Tensor::randn(0f32, 1.0, (b, t, h * d), &dev).unwrap();
        let packed = packed_attention(&q, &k, &v, &bias).unwrap();
        let composed = attention(&q, &k, &v, &bias).unwrap().transpose(1, 2).unwrap().reshape((b, t, h * d)).unwrap();
        let max_diff =
            |a: &Tensor, b: &Tensor| (a - b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(max_diff(&packed, &composed) < 1e-5, "forward: {}", max_diff(&packed, &composed));
        let gp = (&packed * &r).unwrap().sum_all().unwrap().backward().unwrap();
        let gc = (&composed * &r).unwrap().sum_all().unwrap().backward().unwrap();
        for (name, x) in [("q", &q), ("k", &k), ("v", &v)] {
            let (a, c) = (gp.get(x.as_tensor()).unwrap(), gc.get(x.as_tensor()).unwrap());
            assert!(max_diff(a, c) < 1e-5, "d{name}: {}", max_diff(a, c));
        }
    }

    #[test]
    fn trainable_and_inference_paths_agree_and_cache_matches_full_forward() {
        let dev = Device::Cpu;
        let m = Llama::random(&tiny("qwen2", false), &dev).unwrap();
        let tensors: HashMap<String, Tensor> = m.named_tensors().into_iter().map(|(k, v)| (k, v.detach())).collect();
        let frozen = Llama::from_tensors(&m.cfg, tensors, false, &dev, Path::new("<test>")).unwrap();
        let x = ids(&dev);
        let a = m.logits(&x).unwrap();
        let b = frozen.logits(&x).unwrap();
        let d = (&a - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-4, "fused vs differentiable: {d}");
        // `detached` is the frozen model on the same storage: same logits, no graph.
        let c = m.detached().unwrap().logits(&x).unwrap();
        assert!(a.track_op() && !c.track_op());
        assert_eq!(
            c.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );

        // Prefill 4 tokens, then 2 one at a time through the cache.
        let mut cache = KvCache::new(2);
        let mask = vec![vec![1u8; 6]; 2];
        let mut steps = vec![];
        let pre = Positions::from_mask(&[mask[0][..4].to_vec(), mask[1][..4].to_vec()], 4, &dev).unwrap();
        steps.push(frozen.hidden(&x.narrow(1, 0, 4).unwrap(), &pre, Some(&mut cache)).unwrap());
        for t in 4..6 {
            let p = Positions::from_mask(&[mask[0][..=t].to_vec(), mask[1][..=t].to_vec()], 1, &dev).unwrap();
            steps.push(frozen.hidden(&x.narrow(1, t, 1).unwrap(), &p, Some(&mut cache)).unwrap());
        }
        let cached = frozen.lm_logits(&Tensor::cat(&steps, 1).unwrap()).unwrap();
        let d = (&cached - &b).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-5, "cached vs full: {d}");
    }

    #[test]
    fn skinny_matmul_matches_gemm() {
        if !skinny_supported() {
            return;
        }
        let dev = Device::Cpu;
        // k and n not multiples of the 8-wide lanes, 4-row groups or 32-row blocks.
        let w = Tensor::randn(0f32, 1.0, (70, 37), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 70, &dev).unwrap();
        let l = Linear::new(w.clone(), Some(b));
        for m in [1usize, 2, 3, 8, 16] {
            let x = Tensor::randn(0f32, 1.0, (m, 1, 37), &dev).unwrap();
            let fast = lin(&l, &x).unwrap();
            let slow = l.forward(&x).unwrap();
            assert_eq!(fast.dims(), &[m, 1, 70]);
            let d = (fast - slow).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
            assert!(d < 1e-4, "m={m}: {d}");
        }
        // Both kernels directly (`lin` takes one of them), against a plain dot product.
        let (wv, k) = (w.flatten_all().unwrap().to_vec1::<f32>().unwrap(), 37);
        for m in [1usize, 3, 4, 5, 8, 16] {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 97) as f32 - 48.0) / 50.0).collect();
            let want: Vec<f32> =
                (0..70 * m).map(|o| (0..k).map(|c| wv[(o / m) * k + c] * x[(o % m) * k + c]).sum()).collect();
            let mut kernels: Vec<(&str, unsafe fn(&[f32], usize, usize, &[f32], usize, &mut [f32]))> =
                vec![("avx2", skinny::kernels::block)];
            if std::is_x86_feature_detected!("avx512f") {
                kernels.push(("avx512", skinny::kernels::block_avx512));
            }
            for (name, kernel) in kernels {
                let mut out = vec![0f32; 70 * m];
                // SAFETY: avx2/fma checked above (`skinny_supported`), avx512f where pushed.
                unsafe { kernel(&x, m, k, &wv, 70, &mut out) };
                let d = out.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(d < 1e-4, "{name}, m={m}: {d}");
            }
            // The AVX2 tiles differ only in which products share a pass: the same bits.
            let tiles: [unsafe fn(&[f32], usize, usize, &[f32], usize, &mut [f32]); 3] =
                [skinny::kernels::tile::<4, 2>, skinny::kernels::tile::<2, 4>, skinny::kernels::tile::<1, 1>];
            let outs: Vec<Vec<u32>> = tiles
                .iter()
                .map(|tile| {
                    let mut out = vec![0f32; 70 * m];
                    // SAFETY: avx2/fma checked above (`skinny_supported`).
                    unsafe { tile(&x, m, k, &wv, 70, &mut out) };
                    out.iter().map(|v| v.to_bits()).collect()
                })
                .collect();
            assert!(outs.iter().all(|o| o == &outs[0]), "m={m}: the tiles' bits differ");
        }
    }

    #[test]
    fn bad_configs_are_refused_naming_the_file() {
        let mut c = tiny("llama", false);
        c.num_key_value_heads = Some(3);
        let e = c.validate(Path::new("/x/config.json")).unwrap_err().to_string();
        assert!(e.starts_with("/x/config.json:") && e.contains("multiple"), "{e}");
        let mut c = tiny("mistral", false);
        assert!(c.validate(Path::new("c.json")).unwrap_err().to_string().contains("mistral"));
        c.model_type = "llama".into();
        c.rope_scaling = Some(serde_json::json!({"rope_type": "llama3"}));
        assert!(c.validate(Path::new("c.json")).unwrap_err().to_string().contains("rope_scaling"));
    }
}
