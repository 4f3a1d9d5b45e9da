//! Reading llama.cpp GGUF files (<https://github.com/ggml-org/ggml/blob/master/docs/gguf.md>):
//! metadata, the model config it implies, and every tensor dequantised to f32 under its
//! Hugging Face name.
//!
//! The mapping follows transformers' GGUF loader (`modeling_gguf_pytorch_utils.py`,
//! `integrations/ggml.py`), so a model loaded here computes the same function as
//! `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`.

use crate::error::{Error, Result};
use crate::llama::{LlamaConfig, TokenIds};
use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

/// Architectures whose GGUF tensors map onto [`crate::llama::Llama`].
pub const SUPPORTED_ARCHITECTURES: [&str; 2] = ["llama", "qwen2"];

/// An opened GGUF file: its header and metadata; tensors are read on demand.
#[derive(Debug)]
pub struct Gguf {
    pub path: PathBuf,
    pub content: Content,
    file_len: u64,
}

impl Gguf {
    /// Parses the header and checks that every tensor lies inside the file, so a truncated
    /// download is reported up front rather than halfway through loading.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader)
            .map_err(|e| Error::invalid(path, format!("not a valid GGUF file: {}", crate::error::candle_msg(&e))))?;
        let g = Self { path: path.to_path_buf(), content, file_len };
        for (name, info) in &g.content.tensor_infos {
            // Checked: a corrupt shape or offset must be an error, not an overflow panic.
            let dims = info.shape.dims();
            let Some(elems) = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
                return Err(g.invalid(format!("tensor {name}: shape {dims:?} has more elements than fit in memory")));
            };
            let block = info.ggml_dtype.block_size();
            if elems % block != 0 {
                return Err(
                    g.invalid(format!("tensor {name}: {elems} elements is not a multiple of the block size {block}"))
                );
            }
            let end = ((elems / block) as u64)
                .checked_mul(info.ggml_dtype.type_size() as u64)
                .and_then(|n| n.checked_add(info.offset))
                .and_then(|n| n.checked_add(g.content.tensor_data_offset));
            if end.is_none_or(|end| end > file_len) {
                let end = end.map_or("past byte 2^64".to_string(), |e| format!("at byte {e}"));
                return Err(g.invalid(format!(
                    "truncated file: tensor {name} ends {end} but the file has only {file_len} bytes"
                )));
            }
        }
        Ok(g)
    }

    fn invalid(&self, msg: impl Into<String>) -> Error {
        Error::invalid(&self.path, msg)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// Any unsigned or non-negative integer value as u64.
    pub fn uint(&self, key: &str) -> Result<Option<u64>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        as_uint(v).map(Some).ok_or_else(|| self.invalid(format!("metadata {key}: expected an integer, got {v:?}")))
    }

    fn need_uint(&self, key: &str) -> Result<usize> {
        self.uint(key)?.map(|v| v as usize).ok_or_else(|| self.invalid(format!("missing metadata key {key}")))
    }

    pub fn float(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v as f64)),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(v) => Err(self.invalid(format!("metadata {key}: expected a float, got {v:?}"))),
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.invalid(format!("metadata {key}: expected a string, got {:?}", v.value_type()))),
        }
    }

    pub fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.invalid(format!("metadata {key}: expected a bool, got {v:?}"))),
        }
    }

    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let Value::Array(a) = v else {
            return Err(self.invalid(format!("metadata {key}: expected an array of strings")));
        };
        a.iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(self.invalid(format!("metadata {key}: expected an array of strings"))),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub fn ints(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(v) = self.get(key) else { return Ok(None) };
        let Value::Array(a) = v else {
            return Err(self.invalid(format!("metadata {key}: expected an array of integers")));
        };
        a.iter()
            .map(|v| as_int(v).ok_or_else(|| self.invalid(format!("metadata {key}: expected an array of integers"))))
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// `general.architecture`, refused unless it is one [`crate::llama::Llama`] implements.
    pub fn architecture(&self) -> Result<&str> {
        let arch = self
            .string("general.architecture")?
            .ok_or_else(|| self.invalid("missing metadata key general.architecture"))?;
        if !SUPPORTED_ARCHITECTURES.contains(&arch) {
            return Err(self.invalid(format!(
                "unsupported architecture \"{arch}\" (supported: {})",
                SUPPORTED_ARCHITECTURES.join(", ")
            )));
        }
        Ok(arch)
    }

    /// The HF config these tensors imply (transformers' `GGUF_CONFIG_MAPPING`).
    pub fn llama_config(&self) -> Result<LlamaConfig> {
        let arch = self.architecture()?.to_string();
        let k = |s: &str| format!("{arch}.{s}");
        let heads = self.need_uint(&k("attention.head_count"))?;
        let vocab = match self.uint(&k("vocab_size"))? {
            Some(v) => v as usize,
            None => self.strings("tokenizer.ggml.tokens")?.map(|t| t.len()).ok_or_else(|| {
                self.invalid(format!("missing metadata key {} and no tokenizer.ggml.tokens", k("vocab_size")))
            })?,
        };
        if let Some(Value::String(t)) = self.get(&k("rope.scaling.type")) {
            if t != "none" {
                return Err(self.invalid(format!("unsupported RoPE scaling \"{t}\"")));
            }
        }
        let eos = self.uint("tokenizer.ggml.eos_token_id")?.map(|v| TokenIds::One(v as u32));
        Ok(LlamaConfig {
            model_type: arch.clone(),
            vocab_size: vocab,
            hidden_size: self.need_uint(&k("embedding_length"))?,
            intermediate_size: self.need_uint(&k("feed_forward_length"))?,
            num_hidden_layers: self.need_uint(&k("block_count"))?,
            num_attention_heads: heads,
            num_key_value_heads: Some(self.uint(&k("attention.head_count_kv"))?.map_or(heads, |v| v as usize)),
            head_dim: self.uint(&k("rope.dimension_count"))?.map(|v| v as usize),
            rms_norm_eps: self.float(&k("attention.layer_norm_rms_epsilon"))?.ok_or_else(|| {
                self.invalid(format!("missing metadata key {}", k("attention.layer_norm_rms_epsilon")))
            })?,
            rope_theta: self.float(&k("rope.freq_base"))?.unwrap_or(10_000.0),
            max_position_embeddings: self.need_uint(&k("context_length"))?,
            tie_word_embeddings: !self.content.tensor_infos.contains_key("output.weight"),
            attention_bias: arch == "qwen2",
            bos_token_id: self.uint("tokenizer.ggml.bos_token_id")?.map(|v| v as u32),
            eos_token_id: eos,
            rope_scaling: None,
        })
    }

    /// Every tensor dequantised to f32, under its HF name, with llama.cpp's Q/K row
    /// permutation undone for the llama architecture.
    pub fn tensors_f32(&self, cfg: &LlamaConfig, device: &Device) -> Result<HashMap<String, Tensor>> {
        let arch = self.architecture()?;
        let file = File::open(&self.path).map_err(|e| Error::io(&self.path, e))?;
        let mut reader = BufReader::new(file);
        let mut names: Vec<&String> = self.content.tensor_infos.keys().collect();
        names.sort();
        let mut out = HashMap::with_capacity(names.len());
        for name in names {
            let hf =
                hf_name(name).ok_or_else(|| self.invalid(format!("unexpected tensor {name} for a {arch} model")))?;
            let q = self
                .content
                .tensor(&mut reader, name, &Device::Cpu)
                .map_err(|e| self.invalid(format!("reading tensor {name}: {}", crate::error::candle_msg(&e))))?;
            let mut t = q
                .dequantize(&Device::Cpu)
                .map_err(|e| self.invalid(format!("dequantising tensor {name}: {}", crate::error::candle_msg(&e))))?;
            if arch == "llama" {
                if name.contains(".attn_q.") {
                    t = unpermute_rows(&t, cfg.num_attention_heads)?;
                } else if name.contains(".attn_k.") {
                    t = unpermute_rows(&t, cfg.kv_heads())?;
                }
            }
            out.insert(hf, t.to_device(device)?);
        }
        Ok(out)
    }

    pub fn file_len(&self) -> u64 {
        self.file_len
    }
}

fn as_uint(v: &Value) -> Option<u64> {
    as_int(v).and_then(|i| u64::try_from(i).ok())
}

fn as_int(v: &Value) -> Option<i64> {
    Some(match *v {
        Value::U8(x) => x as i64,
        Value::I8(x) => x as i64,
        Value::U16(x) => x as i64,
        Value::I16(x) => x as i64,
        Value::U32(x) => x as i64,
        Value::I32(x) => x as i64,
        Value::U64(x) => i64::try_from(x).ok()?,
        Value::I64(x) => x,
        _ => return None,
    })
}

/// llama.cpp's tensor names → transformers' (`gguf_conversion_mapping.py` for llama/qwen2).
pub fn hf_name(gguf: &str) -> Option<String> {
    let fixed = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, param) = rest.rsplit_once('.')?;
    if param != "weight" && param != "bias" {
        return None;
    }
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{param}"))
}

/// Inverse of llama.cpp's `permute` in `convert_hf_to_gguf.py`, which reorders each head's rows
/// from HF's rotate-half RoPE layout to GGML's interleaved one: GGUF row `h·d + 2i + j` holds HF
/// row `h·d + j·d/2 + i` (`d` = head_dim). Same as transformers' `_reverse_permute_weights`.
pub fn unpermute_rows(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let shape = w.dims().to_vec();
    let rows = shape[0];
    let cols: usize = shape[1..].iter().product();
    let half = rows / heads / 2;
    w.reshape((heads, half, 2, cols))?.transpose(1, 2)?.contiguous()?.reshape(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: w.reshape(n_head, 2, d/2, ...).swapaxes(1, 2).reshape(w.shape)
        let dev = Device::Cpu;
        let (heads, d, cols) = (3, 8, 5);
        let w = Tensor::arange(0f32, (heads * d * cols) as f32, &dev).unwrap().reshape((heads * d, cols)).unwrap();
        let permuted = w
            .reshape((heads, 2, d / 2, cols))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .contiguous()
            .unwrap()
            .reshape((heads * d, cols))
            .unwrap();
        let back = unpermute_rows(&permuted, heads).unwrap();
        assert_eq!(back.to_vec2::<f32>().unwrap(), w.to_vec2::<f32>().unwrap());
        // GGUF row h·d + 2i + j is HF row h·d + j·d/2 + i: row 1 of GGUF (i=0, j=1) is HF row d/2.
        assert_eq!(permuted.get(1).unwrap().to_vec1::<f32>().unwrap(), w.get(d / 2).unwrap().to_vec1::<f32>().unwrap());
    }

    #[test]
    fn names_map_to_transformers() {
        assert_eq!(hf_name("blk.12.attn_output.weight").unwrap(), "model.layers.12.self_attn.o_proj.weight");
        assert_eq!(hf_name("blk.0.attn_q.bias").unwrap(), "model.layers.0.self_attn.q_proj.bias");
        assert_eq!(hf_name("token_embd.weight").unwrap(), "model.embed_tokens.weight");
        assert!(hf_name("blk.0.ffn_gate_exps.weight").is_none());
        assert!(hf_name("rope_freqs.weight").is_none());
    }
}
