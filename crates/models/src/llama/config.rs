//! The Llama/Qwen2 `config.json`: the fields the model reads, under their HF names, what the
//! model code relies on ([`LlamaConfig::validate`]) and the JSON transformers loads back.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// One token id or several (HF configs use both for `eos_token_id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            TokenIds::One(i) => vec![*i],
            TokenIds::Many(v) => v.clone(),
        }
    }
}

/// The fields of an HF `config.json` that a Llama/Qwen2 model needs, under their HF names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Absent in older configs, meaning one KV head per query head.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Biases on q/k/v (and o) projections; Qwen2 has q/k/v biases without saying so.
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<TokenIds>,
    /// Only `null` is supported; kept so that a scaled config is refused rather than misread.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<serde_json::Value>,
}

/// The longest context the RoPE tables are built for: above every released model's (Llama 4 Scout's
/// is 10M), far below where a corrupt count would make them exhaust memory.
pub const MAX_POSITIONS: usize = 1 << 24;

fn default_model_type() -> String {
    "llama".into()
}
fn default_rope_theta() -> f64 {
    10_000.0
}

impl LlamaConfig {
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Qwen2 puts biases on q/k/v only; Llama's `attention_bias` covers o too.
    pub(super) fn qkv_bias(&self) -> bool {
        self.attention_bias || self.model_type == "qwen2"
    }
    pub(super) fn o_bias(&self) -> bool {
        self.attention_bias && self.model_type != "qwen2"
    }

    /// Checks what the model code relies on; `path` names the file the config came from.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(path, m));
        if !["llama", "qwen2"].contains(&self.model_type.as_str()) {
            return bad(format!("unsupported model_type \"{}\" (supported: llama, qwen2)", self.model_type));
        }
        if let Some(s) = self.rope_scaling.as_ref().filter(|s| !s.is_null()) {
            return bad(format!("unsupported rope_scaling {s}"));
        }
        let (h, kv) = (self.num_attention_heads, self.kv_heads());
        if h == 0 || kv == 0 || h % kv != 0 {
            return bad(format!("num_attention_heads {h} must be a positive multiple of num_key_value_heads {kv}"));
        }
        if !self.head_dim().is_multiple_of(2) || self.head_dim() == 0 {
            return bad(format!("head_dim {} must be even and positive for RoPE", self.head_dim()));
        }
        if self.vocab_size == 0 || self.num_hidden_layers == 0 || self.hidden_size == 0 {
            return bad("vocab_size, num_hidden_layers and hidden_size must be positive".into());
        }
        if h.checked_mul(self.head_dim()).is_none() {
            return bad(format!("num_attention_heads {h} × head_dim {} overflows", self.head_dim()));
        }
        let p = self.max_position_embeddings;
        if p == 0 || p > MAX_POSITIONS {
            return bad(format!("max_position_embeddings {p} must be between 1 and {MAX_POSITIONS} (the RoPE tables hold one row a position)"));
        }
        Ok(())
    }

    /// `config.json` content: these fields plus `architectures` so that transformers loads it.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).expect("config serialises");
        let arch = if self.model_type == "qwen2" { "Qwen2ForCausalLM" } else { "LlamaForCausalLM" };
        v["architectures"] = serde_json::json!([arch]);
        v["hidden_act"] = "silu".into();
        v["torch_dtype"] = "float32".into();
        v
    }
}
