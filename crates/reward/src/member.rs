//! One reward-model member: a backbone plus a [`Head`] on its feature vector.
//!
//! Two backbone kinds:
//! - `encoder`: a sentence-transformers BERT (all-MiniLM-L6-v2); the feature is the
//!   sentence embedding of `"{prompt_tail} [SEP] {completion_tail}"` ([`format_input`]);
//! - `decoder`: a causal LM (mismatch's tiny GPT, SmolLM2 / any Llama or Qwen2, GGUF or HF
//!   directory); the feature is the final hidden state of the last token of
//!   `prompt + "\n" + completion` followed by the tokenizer's EOS token ([`encode_decoder`]),
//!   as `*ForSequenceClassification` reads the last non-padding token.
//!
//! A frozen backbone is shared (one copy in memory) by all members; its features carry no
//! autograd graph, so only the heads train.

use crate::head::{Head, HeadKind};
use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;
use mismatch_models::bert::Encoder;
use mismatch_models::checkpoint::{load_safetensors, read_json, save_checkpoint, CheckpointFile};
use mismatch_models::{
    load_causal_lm, AnyLm, CausalLm, ChatMessage, Error, Gpt, Llama, LlamaConfig, Positions, Result, Tok,
};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackboneKind {
    #[default]
    Encoder,
    Decoder,
}

/// Resolves a `--backbone` spec (short name, directory or GGUF file) to a local path and
/// says which kind of backbone it is: a directory whose `config.json` has `model_type`
/// `bert` is an encoder; `mismatch-gpt`, `llama`, `qwen2`, a GGUF file or a directory
/// holding one is a decoder.
pub fn detect(spec: &str) -> Result<(BackboneKind, PathBuf)> {
    let path = mismatch_models::hub::resolve(spec)?.path;
    if path.is_file() {
        return Ok((BackboneKind::Decoder, path));
    }
    let cfg_path = path.join("config.json");
    if !cfg_path.exists() {
        return Ok((BackboneKind::Decoder, path));
    }
    let cfg: serde_json::Value = read_json(&cfg_path)?;
    match cfg.get("model_type").and_then(|v| v.as_str()) {
        Some("bert") => Ok((BackboneKind::Encoder, path)),
        Some("mismatch-gpt") | Some("llama") | Some("qwen2") => Ok((BackboneKind::Decoder, path)),
        Some(other) => Err(Error::invalid(
            &cfg_path,
            format!("model_type '{other}' cannot be a reward-model backbone (bert, mismatch-gpt, llama, qwen2)"),
        )),
        None => Err(Error::invalid(&cfg_path, "missing field 'model_type'")),
    }
}

/// Backbone inputs prepared once per text: strings for an encoder, token ids for a decoder.
#[derive(Debug, Clone)]
pub enum Inputs {
    Texts(Vec<String>),
    Ids(Vec<Vec<u32>>),
}

impl Inputs {
    pub fn len(&self) -> usize {
        match self {
            Inputs::Texts(t) => t.len(),
            Inputs::Ids(t) => t.len(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The length of input `i`: tokens for a decoder, bytes of text for an encoder.
    pub fn len_of(&self, i: usize) -> usize {
        match self {
            Inputs::Texts(t) => t[i].len(),
            Inputs::Ids(t) => t[i].len(),
        }
    }
}

/// Builds the encoder input for one pair. MiniLM reads at most `max_len` tokens
/// (256 incl. `[CLS]`/`[SEP]`) and its tokenizer truncates the end, which would cut the
/// completion — the part that differs between chosen and rejected. So the budget goes to
/// the completion first: the prompt keeps its last `max(budget − |c|, budget/4)` tokens
/// (the most recent turn), and the completion keeps its last tokens if it must be cut.
/// Cuts fall on token boundaries of the original text (byte offsets), so the text fed to
/// the model is a verbatim suffix of the prompt and of the completion.
pub fn format_input(tok: &tokenizers::Tokenizer, max_len: usize, prompt: &str, completion: &str) -> Result<String> {
    let budget = max_len.saturating_sub(3); // [CLS] prompt [SEP] completion [SEP]
    let starts = |text: &str| -> Result<Vec<usize>> {
        let enc = tok.encode(text, false).map_err(|e| Error::Usage(format!("tokenizing {text:?}: {e}")))?;
        Ok(enc.get_offsets().iter().map(|o| o.0).collect())
    };
    let (p, c) = (starts(prompt)?, starts(completion)?);
    let p_keep =
        if p.len() + c.len() <= budget { p.len() } else { budget.saturating_sub(c.len()).max(budget / 4).min(p.len()) };
    let c_keep = c.len().min(budget - p_keep);
    let tail = |text: &'_ str, s: &[usize], keep: usize| -> String {
        if keep >= s.len() {
            text.to_string()
        } else if keep == 0 {
            String::new()
        } else {
            text[s[s.len() - keep]..].to_string()
        }
    };
    Ok(format!("{} [SEP] {}", tail(prompt, &p, p_keep), tail(completion, &c, c_keep)))
}

/// Decoder input: the tokens of `prompt + "\n" + completion` (with BOS when the tokenizer
/// adds one) followed by EOS when the tokenizer has one, so the scored state is always the
/// same end-of-text token, which has attended to the whole completion. With `chat`, the
/// text is instead the model's chat template over `[user: prompt, assistant: completion]`
/// (no EOS appended: the template closes the assistant turn itself). Longer than
/// `max_len`: cut from the left (the completion, which differs between chosen and
/// rejected, is kept), BOS kept in front.
pub fn encode_decoder(tok: &Tok, max_len: usize, prompt: &str, completion: &str, chat: bool) -> Result<Vec<u32>> {
    let mut ids = if chat {
        let msgs = [ChatMessage::new("user", prompt), ChatMessage::new("assistant", completion)];
        tok.encode(&tok.apply_chat_template(&msgs, false)?, false)?
    } else {
        let mut ids = tok.encode(&format!("{prompt}\n{completion}"), true)?;
        if let Some(&eos) = tok.eos_ids.first() {
            ids.push(eos);
        }
        ids
    };
    if ids.len() > max_len {
        let keep_bos = tok.bos_id.is_some() && ids.first() == tok.bos_id.as_ref();
        let cut = ids.len() - max_len;
        if keep_bos {
            ids.drain(1..1 + cut);
        } else {
            ids.drain(..cut);
        }
    }
    if ids.is_empty() {
        return Err(Error::Usage("empty decoder input (the tokenizer produced no tokens)".into()));
    }
    Ok(ids)
}

/// Left-pads `rows` and returns the final hidden state of each row's last token `[n, h]`.
pub fn last_hidden(lm: &dyn CausalLm, rows: &[&[u32]], pad_id: u32) -> Result<Tensor> {
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(1);
    let mut flat = Vec::with_capacity(rows.len() * t);
    let mut mask = Vec::with_capacity(rows.len());
    for r in rows {
        flat.extend(std::iter::repeat_n(pad_id, t - r.len()).chain(r.iter().copied()));
        mask.push(std::iter::repeat_n(0u8, t - r.len()).chain(std::iter::repeat_n(1u8, r.len())).collect());
    }
    let dev = lm.device();
    let ids = Tensor::from_vec(flat, (rows.len(), t), dev)?;
    let pos = Positions::from_mask(&mask, t, dev)?;
    Ok(lm.hidden(&ids, &pos, None)?.narrow(1, t - 1, 1)?.squeeze(1)?.contiguous()?)
}

/// A sentence-encoder member.
pub struct EncoderMember {
    pub encoder: Arc<Encoder>,
    pub head: Head,
    pub frozen: bool,
}

/// A causal-LM member.
pub struct DecoderMember {
    pub lm: Arc<AnyLm>,
    pub tok: Arc<Tok>,
    pub head: Head,
    pub frozen: bool,
    /// The backbone's variables when it is trained.
    varmap: Option<VarMap>,
    /// A frozen tiny GPT's weights by name (a [`Gpt`] does not hand out its tensors).
    gpt_tensors: Option<Arc<HashMap<String, Tensor>>>,
}

pub enum Member {
    Encoder(EncoderMember),
    Decoder(DecoderMember),
}

/// A loaded backbone that fresh members are built on (shared by all members when frozen).
/// Cloning shares the weights.
#[derive(Clone)]
pub enum Backbone {
    Encoder(Arc<Encoder>),
    Decoder { lm: Arc<AnyLm>, tok: Arc<Tok>, varmap: Option<VarMap>, gpt_tensors: Option<Arc<HashMap<String, Tensor>>> },
}

impl Backbone {
    /// Loads the backbone at `path` (as returned by [`detect`]); trainable unless `frozen`.
    pub fn load(kind: BackboneKind, path: &Path, device: &Device, frozen: bool) -> Result<Self> {
        match kind {
            BackboneKind::Encoder => Ok(Backbone::Encoder(Arc::new(Encoder::load(path, device, !frozen)?))),
            BackboneKind::Decoder => {
                let spec = path.to_str().ok_or_else(|| Error::invalid(path, "path is not UTF-8"))?;
                let l = load_causal_lm(spec, device, !frozen)?;
                let gpt_tensors = match (&l.model, frozen) {
                    (AnyLm::Gpt(_), true) => {
                        let mut t = load_safetensors(&l.path.join("model.safetensors"), device)?;
                        t.retain(|k, _| !k.starts_with("score."));
                        Some(Arc::new(t))
                    }
                    _ => None,
                };
                Ok(Backbone::Decoder { lm: Arc::new(l.model), tok: Arc::new(l.tok), varmap: l.varmap, gpt_tensors })
            }
        }
    }

    pub fn hidden_size(&self) -> usize {
        match self {
            Backbone::Encoder(e) => e.dim(),
            Backbone::Decoder { lm, .. } => lm.hidden_size(),
        }
    }

    /// A member on this backbone with a fresh head (seeded).
    pub fn member(self, head: HeadKind, seed: u64, frozen: bool) -> Result<Member> {
        let h = self.hidden_size();
        Ok(match self {
            Backbone::Encoder(encoder) => {
                let head = Head::init(head, h, seed, encoder.bert.device())?;
                Member::Encoder(EncoderMember { encoder, head, frozen })
            }
            Backbone::Decoder { lm, tok, varmap, gpt_tensors } => {
                let head = Head::init(head, h, seed, lm.device())?;
                Member::Decoder(DecoderMember { lm, tok, head, frozen, varmap, gpt_tensors })
            }
        })
    }
}

impl Member {
    pub fn kind(&self) -> BackboneKind {
        match self {
            Member::Encoder(_) => BackboneKind::Encoder,
            Member::Decoder(_) => BackboneKind::Decoder,
        }
    }

    pub fn head(&self) -> &Head {
        match self {
            Member::Encoder(m) => &m.head,
            Member::Decoder(m) => &m.head,
        }
    }

    pub fn is_frozen(&self) -> bool {
        match self {
            Member::Encoder(m) => m.frozen,
            Member::Decoder(m) => m.frozen,
        }
    }

    pub fn device(&self) -> Device {
        match self {
            Member::Encoder(m) => m.encoder.bert.device().clone(),
            Member::Decoder(m) => m.lm.device().clone(),
        }
    }

    /// The same member with a Llama-family backbone that recomputes its layers in the
    /// backward pass when `on` ([`Llama::with_recompute`]); other backbones as they are.
    pub fn with_recompute(self, on: bool) -> Self {
        match self {
            Member::Decoder(mut m) => {
                if let AnyLm::Llama(l) = m.lm.as_ref() {
                    m.lm = Arc::new(AnyLm::Llama(l.clone().with_recompute(on)));
                }
                Member::Decoder(m)
            }
            other => other,
        }
    }

    /// This member's backbone (shared), for building more members on it.
    pub fn backbone(&self) -> Backbone {
        match self {
            Member::Encoder(m) => Backbone::Encoder(m.encoder.clone()),
            Member::Decoder(m) => Backbone::Decoder {
                lm: m.lm.clone(),
                tok: m.tok.clone(),
                varmap: m.varmap.clone(),
                gpt_tensors: m.gpt_tensors.clone(),
            },
        }
    }

    /// Backbone features `[n, h]` of `inputs[idx]`; tracked by autograd unless frozen.
    pub fn features(&self, inputs: &Inputs, idx: &[usize]) -> Result<Tensor> {
        let f = match (self, inputs) {
            (Member::Encoder(m), Inputs::Texts(t)) => {
                let texts: Vec<&str> = idx.iter().map(|&i| t[i].as_str()).collect();
                m.encoder.embed(&texts)?
            }
            (Member::Decoder(m), Inputs::Ids(ids)) => {
                let rows: Vec<&[u32]> = idx.iter().map(|&i| ids[i].as_slice()).collect();
                last_hidden(m.lm.as_ref(), &rows, m.tok.pad_id)?
            }
            _ => return Err(Error::Usage("inputs prepared for another backbone kind".into())),
        };
        Ok(if self.is_frozen() { f.detach() } else { f })
    }

    /// Head outputs `[n, out]` for `inputs[idx]` (column 0: reward).
    pub fn forward(&self, inputs: &Inputs, idx: &[usize]) -> Result<Tensor> {
        self.head().forward(&self.features(inputs, idx)?)
    }

    /// Trainable parameters by checkpoint name, sorted (VarMap iteration order is not stable).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = self.head().vars();
        let vm = match self {
            Member::Encoder(m) if !m.frozen => m.encoder.bert.varmap(),
            Member::Decoder(m) if !m.frozen => m.varmap.as_ref(),
            _ => None,
        };
        if let Some(vm) = vm {
            out.extend(vm.data().lock().expect("varmap lock").iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Every weight (backbone and head) by checkpoint name, detached copies.
    pub fn tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut t: HashMap<String, Tensor> = match self {
            Member::Encoder(m) => m.encoder.bert.tensors(),
            Member::Decoder(m) => match (m.lm.as_ref(), &m.varmap, &m.gpt_tensors) {
                (AnyLm::Llama(l), _, _) => l.named_tensors().into_iter().collect(),
                (AnyLm::Gpt(_), Some(vm), _) => vm
                    .data()
                    .lock()
                    .expect("varmap lock")
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                    .collect(),
                (AnyLm::Gpt(_), None, Some(t)) => t.as_ref().clone(),
                (AnyLm::Gpt(_), None, None) => return Err(Error::Usage("GPT member without its weights".into())),
            },
        };
        for v in t.values_mut() {
            *v = v.copy()?.detach();
        }
        t.extend(self.head().tensors()?);
        Ok(t)
    }

    /// Writes an HF-layout directory: `model.safetensors` (backbone + `score.*`),
    /// `config.json` of the backbone, and the tokenizer files.
    pub fn save(&self, dir: &Path) -> Result<()> {
        match self {
            Member::Encoder(m) => m.encoder.save_with(dir, m.head.tensors()?),
            Member::Decoder(_) => self.save_tensors(dir, &self.tensors()?),
        }
    }

    /// As [`Member::save`] but with the given weights (e.g. a WARM average).
    pub fn save_tensors(&self, dir: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
        match self {
            Member::Encoder(m) => {
                // `save_with` writes the side files and the encoder's own weights; then the
                // weights are replaced by `tensors`.
                m.encoder.save_with(dir, self.head().tensors()?)?;
                mismatch_models::checkpoint::write_atomic(
                    &dir.join("model.safetensors"),
                    &mismatch_models::checkpoint::safetensors_bytes(tensors)?,
                )
            }
            Member::Decoder(m) => {
                let config = match m.lm.as_ref() {
                    AnyLm::Llama(l) => l.cfg.to_hf_json(),
                    AnyLm::Gpt(g) => serde_json::to_value(g.config()).map_err(|e| Error::Usage(e.to_string()))?,
                };
                let extra = vec![
                    CheckpointFile::Bytes("tokenizer.json", m.tok.to_tokenizer_json()?.into_bytes()),
                    CheckpointFile::Bytes(
                        "tokenizer_config.json",
                        serde_json::to_vec_pretty(&m.tok.tokenizer_config()).expect("json"),
                    ),
                ];
                save_checkpoint(dir, tensors, &config, extra)
            }
        }
    }

    /// Loads a member directory written by [`Member::save`]. With `shared`, the backbone is
    /// taken from it (frozen members) and only the head is read from `dir`.
    pub fn load(
        kind: BackboneKind,
        head: HeadKind,
        dir: &Path,
        device: &Device,
        frozen: bool,
        shared: Option<Backbone>,
    ) -> Result<Self> {
        let st = dir.join("model.safetensors");
        if let Some(b) = shared {
            let mut t = head_only(&st, device)?;
            let h = Head::take(head, b.hidden_size(), &mut t, &st)?;
            let mut m = b.member(head, 0, frozen)?;
            match &mut m {
                Member::Encoder(e) => e.head = h,
                Member::Decoder(d) => d.head = h,
            }
            return Ok(m);
        }
        match kind {
            BackboneKind::Encoder => {
                let mut encoder = Encoder::load(dir, device, !frozen)?;
                let h = Head::take(head, encoder.dim(), &mut encoder.bert.passthrough, &st)?;
                Ok(Member::Encoder(EncoderMember { encoder: Arc::new(encoder), head: h, frozen }))
            }
            BackboneKind::Decoder => {
                let cfg_path = dir.join("config.json");
                let cfg: serde_json::Value = read_json(&cfg_path)?;
                let mut tensors = load_safetensors(&st, device)?;
                let tok = Tok::from_hf_dir(dir)?;
                let (lm, varmap, gpt_tensors) = match cfg.get("model_type").and_then(|v| v.as_str()) {
                    Some("mismatch-gpt") => {
                        let (g, vm) = Gpt::load(dir, device, !frozen)?;
                        tok.check_vocab(g.config().vocab_size)?;
                        let mut t = tensors.clone();
                        t.retain(|k, _| !k.starts_with("score."));
                        (AnyLm::Gpt(g), vm, if frozen { Some(Arc::new(t)) } else { None })
                    }
                    Some("llama") | Some("qwen2") => {
                        let lc: LlamaConfig = read_json(&cfg_path)?;
                        tok.check_vocab(lc.vocab_size)?;
                        let mut t = tensors.clone();
                        t.retain(|k, _| !k.starts_with("score."));
                        let l = Llama::from_tensors(&lc, t, !frozen, device, &st)?;
                        let vm = l.varmap().cloned();
                        (AnyLm::Llama(l), vm, None)
                    }
                    other => {
                        return Err(Error::invalid(
                            &cfg_path,
                            format!("model_type {other:?} is not a decoder backbone (mismatch-gpt, llama, qwen2)"),
                        ))
                    }
                };
                let h = Head::take(head, lm.hidden_size(), &mut tensors, &st)?;
                Ok(Member::Decoder(DecoderMember {
                    lm: Arc::new(lm),
                    tok: Arc::new(tok),
                    head: h,
                    frozen,
                    varmap,
                    gpt_tensors,
                }))
            }
        }
    }
}

/// Only the `score.*` tensors of a safetensors file (memory-mapped: the backbone is not read).
fn head_only(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::invalid(path, "file not found"));
    }
    let bad = |e: candle_core::Error| Error::invalid(path, format!("not a valid safetensors file: {e}"));
    // SAFETY: the file is only read; mismatch writes checkpoints by atomic rename, never in place.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(path) }.map_err(bad)?;
    let mut out = HashMap::new();
    for name in ["score.weight", "score.bias"] {
        if let Ok(t) = st.load(name, device) {
            out.insert(name.to_string(), t);
        }
    }
    Ok(out)
}
