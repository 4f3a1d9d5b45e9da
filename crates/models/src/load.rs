//! One entry point from a `--model` spec (short name, GGUF file, or HF-layout directory) to a
//! causal LM and its tokenizer, whatever the family.

use crate::attention::{KvCache, Positions};
use crate::decoder::CausalLm;
use crate::error::{Error, Result};
use crate::gpt::Gpt;
use crate::hub;
use crate::llama::Llama;
use crate::tokenizer::Tok;
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use std::path::{Path, PathBuf};

/// A decoder of any supported family.
pub enum AnyLm {
    Llama(Llama),
    Gpt(Gpt),
}

/// A loaded causal LM, its tokenizer, and (when trainable) the variables an optimiser updates.
pub struct LoadedLm {
    pub model: AnyLm,
    pub tok: Tok,
    pub varmap: Option<VarMap>,
    /// The file or directory the weights came from.
    pub path: PathBuf,
}

/// Loads a causal LM from a short name (`smollm2-135m`, fetched on first use), a `.gguf`
/// file, a directory holding one `.gguf`, or an HF checkpoint directory (`config.json` with
/// `model_type` llama / qwen2 / mismatch-gpt, `model.safetensors`, `tokenizer.json`).
pub fn load_causal_lm(spec: &str, device: &Device, trainable: bool) -> Result<LoadedLm> {
    let resolved = hub::resolve(spec)?;
    let path = resolved.path.clone();
    if path.is_file() {
        return llama(&path, device, trainable);
    }
    let cfg_path = path.join("config.json");
    if !cfg_path.exists() {
        // A cache directory or a folder holding a single GGUF file.
        return llama(&resolved.find_file("gguf")?, device, trainable);
    }
    let cfg: serde_json::Value = crate::checkpoint::read_json(&cfg_path)?;
    match cfg.get("model_type").and_then(|v| v.as_str()) {
        Some("llama") | Some("qwen2") => llama(&path, device, trainable),
        Some("mismatch-gpt") => {
            let (model, varmap) = Gpt::load(&path, device, trainable)?;
            let tok = Tok::from_hf_dir(&path)?;
            tok.check_vocab(model.config().vocab_size)?;
            Ok(LoadedLm { model: AnyLm::Gpt(model), tok, varmap, path })
        }
        Some(other) => Err(Error::invalid(
            &cfg_path,
            format!("model_type '{other}' is not a causal LM this build supports (llama, qwen2, mismatch-gpt)"),
        )),
        None => Err(Error::invalid(&cfg_path, "missing field 'model_type'")),
    }
}

fn llama(path: &Path, device: &Device, trainable: bool) -> Result<LoadedLm> {
    let (model, tok) = Llama::load(path, device, trainable)?;
    let varmap = model.varmap().cloned();
    Ok(LoadedLm { model: AnyLm::Llama(model), tok, varmap, path: path.to_path_buf() })
}

impl AnyLm {
    fn inner(&self) -> &dyn CausalLm {
        match self {
            AnyLm::Llama(m) => m,
            AnyLm::Gpt(m) => m,
        }
    }
}

impl CausalLm for AnyLm {
    fn vocab_size(&self) -> usize {
        self.inner().vocab_size()
    }
    fn hidden_size(&self) -> usize {
        self.inner().hidden_size()
    }
    fn num_layers(&self) -> usize {
        self.inner().num_layers()
    }
    fn max_seq_len(&self) -> usize {
        self.inner().max_seq_len()
    }
    fn device(&self) -> &Device {
        self.inner().device()
    }
    fn hidden(&self, ids: &Tensor, pos: &Positions, cache: Option<&mut KvCache>) -> candle_core::Result<Tensor> {
        self.inner().hidden(ids, pos, cache)
    }
    fn lm_logits(&self, hidden: &Tensor) -> candle_core::Result<Tensor> {
        self.inner().lm_logits(hidden)
    }
    fn detached(&self) -> candle_core::Result<Box<dyn CausalLm>> {
        self.inner().detached()
    }
}
