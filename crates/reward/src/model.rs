//! The reward-model checkpoint and the [`RewardModel`] later stages call.
//!
//! On-disk layout (one directory):
//! ```text
//! DIR/config.json        {"model_type": "mismatch-rm", "backbone": "minilm-l6",
//!                         "backbone_kind": "encoder" | "decoder", "head": "scalar" | "probabilistic",
//!                         "frozen_backbone": true, "members": K, "aggregate": "mean",
//!                         "uwo_lambda": 0.5, "temperature": 1.0, "warm": false,
//!                         "input_format": "..."}
//! DIR/member-0/ …        one HF-layout directory per ensemble member: model.safetensors with
//! DIR/member-K-1/        the backbone weights + score.weight/score.bias, the backbone's
//!                         config.json and the tokenizer files
//! ```
//! A WARM model (Ramé et al. 2024) is a single member whose weights are the average of
//! the members'. Each member directory is self-contained so it can be opened on its own.
//!
//! Inputs: an encoder reads `"{prompt_tail} [SEP] {completion_tail}"` ([`format_input`]);
//! a decoder reads `prompt + "\n" + completion + EOS`, cut from the left to its context
//! ([`encode_decoder`]), and is scored at the last token.

use candle_core::{Device, Tensor};
use mismatch_models::checkpoint::{read_json, write_atomic};
use mismatch_models::{CausalLm, Error, Result, Tok};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::ensemble::{aggregate, Aggregate};
use crate::head::HeadKind;
pub use crate::member::{encode_decoder, format_input};
use crate::member::{BackboneKind, Inputs, Member};

/// How a (prompt, completion) pair is turned into an encoder's single input text.
pub const INPUT_FORMAT: &str = "{prompt_tail} [SEP] {completion_tail}";
/// How a (prompt, completion) pair is turned into a decoder's input tokens.
pub const DECODER_INPUT_FORMAT: &str = "{bos?}{prompt}\n{completion}{eos?}, cut from the left";
/// The same with `chat_template`: the tokenizer's chat template over a user and an assistant turn.
pub const DECODER_CHAT_FORMAT: &str = "chat_template([user: prompt, assistant: completion]), cut from the left";

/// Rows scored per forward pass (bounds activation memory whatever the caller's batch).
const SCORE_CHUNK: usize = 64;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RmConfig {
    pub model_type: String,
    pub backbone: String,
    /// Absent in checkpoints written before decoder backbones existed: encoder.
    #[serde(default)]
    pub backbone_kind: BackboneKind,
    #[serde(default)]
    pub head: HeadKind,
    pub frozen_backbone: bool,
    pub members: usize,
    /// `mean`, `wco` or `uwo`.
    pub aggregate: String,
    pub uwo_lambda: f64,
    /// Temperature of `P(c ≻ r) = σ((r_c − r_r)/T)` fitted on validation (1 = unfitted).
    pub temperature: f64,
    pub warm: bool,
    pub input_format: String,
    /// Decoders only: render pairs with the tokenizer's chat template.
    #[serde(default)]
    pub chat_template: bool,
    /// Inputs longer than this many tokens are cut from the left, the prompt first
    /// ([`encode_decoder`], [`format_input`]), as TRL's `max_length`; absent: the backbone's
    /// context length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
}

impl RmConfig {
    /// An encoder (MiniLM) reward model with a scalar head.
    pub fn new(backbone: &str, frozen_backbone: bool, members: usize) -> Self {
        Self {
            model_type: "mismatch-rm".into(),
            backbone: backbone.into(),
            backbone_kind: BackboneKind::Encoder,
            head: HeadKind::Scalar,
            frozen_backbone,
            members,
            aggregate: "mean".into(),
            uwo_lambda: 0.5,
            temperature: 1.0,
            warm: false,
            input_format: INPUT_FORMAT.into(),
            chat_template: false,
            max_length: None,
        }
    }

    /// The same for a backbone of `kind` and a head of `head`.
    pub fn with_kind(mut self, kind: BackboneKind, head: HeadKind) -> Self {
        self.backbone_kind = kind;
        self.head = head;
        self.input_format = match kind {
            BackboneKind::Encoder => INPUT_FORMAT.into(),
            BackboneKind::Decoder if self.chat_template => DECODER_CHAT_FORMAT.into(),
            BackboneKind::Decoder => DECODER_INPUT_FORMAT.into(),
        };
        self
    }

    pub fn aggregate_kind(&self) -> std::result::Result<Aggregate, String> {
        match self.aggregate.as_str() {
            "mean" => Ok(Aggregate::Mean),
            "wco" => Ok(Aggregate::WorstCase),
            "uwo" => Ok(Aggregate::UncertaintyWeighted { lambda: self.uwo_lambda }),
            other => Err(format!("unknown aggregate {other:?} (expected mean, wco or uwo)")),
        }
    }
}

/// Turns (prompt, completion) pairs into backbone inputs.
#[derive(Clone)]
enum Prep {
    Encoder { tok: Box<tokenizers::Tokenizer>, max_len: usize },
    Decoder { tok: Arc<Tok>, max_len: usize, chat: bool },
}

/// A trained reward model: K ≥ 1 members (encoder or decoder backbones, see
/// [`crate::member`]), their rewards aggregated by [`RmConfig::aggregate`]. `Send + Sync`:
/// one model can score from several threads.
pub struct RewardModel {
    pub config: RmConfig,
    pub members: Vec<Member>,
    prep: Prep,
}

#[allow(dead_code)]
fn assert_send_sync() {
    fn is<T: Send + Sync>() {}
    is::<RewardModel>();
}

impl RewardModel {
    pub fn from_members(config: RmConfig, members: Vec<Member>) -> Result<Self> {
        let first = members.first().ok_or_else(|| Error::Usage("a reward model needs at least one member".into()))?;
        if config.max_length == Some(0) {
            return Err(Error::Usage("max_length must be at least 1".into()));
        }
        let cap = |context: usize| config.max_length.map_or(context, |m| m.min(context));
        if members.iter().any(|m| m.kind() != first.kind()) {
            return Err(Error::Usage("all members of a reward model must have the same backbone kind".into()));
        }
        let prep = match first {
            Member::Encoder(_) if config.chat_template => {
                return Err(Error::Usage("chat_template applies to decoder backbones only".into()))
            }
            Member::Encoder(m) => {
                let mut tok = m.encoder.tokenizer().clone();
                tok.with_truncation(None).map_err(|e| Error::Usage(format!("tokenizer: {e}")))?;
                tok.with_padding(None);
                Prep::Encoder { tok: Box::new(tok), max_len: cap(m.encoder.max_seq_len()) }
            }
            Member::Decoder(m) => {
                if config.chat_template && m.tok.chat_template.is_none() {
                    return Err(Error::invalid(
                        &m.tok.source,
                        "chat_template is set but the tokenizer has no chat template",
                    ));
                }
                Prep::Decoder { tok: m.tok.clone(), max_len: cap(m.lm.max_seq_len()), chat: config.chat_template }
            }
        };
        let config = RmConfig { members: members.len(), ..config }.with_kind(first.kind(), first.head().kind);
        Ok(Self { config, members, prep })
    }

    /// Loads a directory written by [`RewardModel::save`].
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let cfg_path = dir.join("config.json");
        if !cfg_path.exists() {
            return Err(Error::invalid(&cfg_path, "file not found (not a mismatch reward-model directory)"));
        }
        let config: RmConfig = read_json(&cfg_path)?;
        if config.model_type != "mismatch-rm" {
            return Err(Error::invalid(
                &cfg_path,
                format!("model_type is {:?}, expected \"mismatch-rm\"", config.model_type),
            ));
        }
        if config.members == 0 {
            return Err(Error::invalid(&cfg_path, "members must be at least 1"));
        }
        if !(config.temperature > 0.0 && config.temperature.is_finite()) {
            return Err(Error::invalid(&cfg_path, format!("temperature must be positive, got {}", config.temperature)));
        }
        config.aggregate_kind().map_err(|m| Error::invalid(&cfg_path, m))?;
        if config.max_length == Some(0) {
            return Err(Error::invalid(&cfg_path, "max_length must be at least 1"));
        }
        let mut members: Vec<Member> = Vec::with_capacity(config.members);
        for i in 0..config.members {
            // Frozen members share member 0's backbone (identical by construction).
            let shared = if config.frozen_backbone { members.first().map(|m| m.backbone()) } else { None };
            members.push(Member::load(
                config.backbone_kind,
                config.head,
                &dir.join(format!("member-{i}")),
                device,
                config.frozen_backbone,
                shared,
            )?);
        }
        Self::from_members(config, members)
    }

    /// The same members reading inputs of at most `max_length` tokens (`rm eval --max-length`).
    pub fn with_max_length(self, max_length: usize) -> Result<Self> {
        Self::from_members(RmConfig { max_length: Some(max_length), ..self.config }, self.members)
    }

    /// The longest input, in tokens, this model reads (its `max_length` or the backbone's context).
    pub fn max_input_len(&self) -> usize {
        match &self.prep {
            Prep::Encoder { max_len, .. } | Prep::Decoder { max_len, .. } => *max_len,
        }
    }

    /// Writes the directory atomically: everything is staged next to `dir` and renamed into
    /// place, so an interrupted save leaves the previous checkpoint intact.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let stage = stage_next_to(dir, ".rm-")?;
        for (i, m) in self.members.iter().enumerate() {
            m.save(&stage.path().join(format!("member-{i}")))?;
        }
        let cfg = serde_json::to_vec_pretty(&self.config).map_err(|e| Error::Usage(format!("config: {e}")))?;
        write_atomic(&stage.path().join("config.json"), &cfg)?;
        mismatch_models::checkpoint::replace_dir(&stage.keep(), dir)
    }

    /// Backbone inputs, one per pair (see [`format_input`] / [`encode_decoder`]).
    pub fn prepare(&self, prompts: &[&str], completions: &[&str]) -> Result<Inputs> {
        if prompts.len() != completions.len() {
            return Err(Error::Usage(format!("{} prompts but {} completions", prompts.len(), completions.len())));
        }
        let pc = prompts.iter().zip(completions);
        Ok(match &self.prep {
            Prep::Encoder { tok, max_len } => {
                Inputs::Texts(pc.map(|(p, c)| format_input(tok, *max_len, p, c)).collect::<Result<_>>()?)
            }
            Prep::Decoder { tok, max_len, chat } => {
                Inputs::Ids(pc.map(|(p, c)| encode_decoder(tok, *max_len, p, c, *chat)).collect::<Result<_>>()?)
            }
        })
    }

    /// Head outputs of every member, `[K]` tensors `[n, out]` (no autograd graph kept):
    /// column 0 is the reward, column 1 (probabilistic head) the log-variance.
    pub fn outputs_members(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<Tensor>> {
        let inputs = self.prepare(prompts, completions)?;
        let mut per: Vec<Vec<Tensor>> = vec![Vec::new(); self.members.len()];
        let idx: Vec<usize> = (0..inputs.len()).collect();
        for chunk in idx.chunks(SCORE_CHUNK) {
            if self.config.frozen_backbone {
                // Frozen members share the backbone: features once, then each head.
                let f = self.members[0].features(&inputs, chunk)?.detach();
                for (k, m) in self.members.iter().enumerate() {
                    per[k].push(m.head().forward(&f)?.detach());
                }
            } else {
                for (k, m) in self.members.iter().enumerate() {
                    per[k].push(m.forward(&inputs, chunk)?.detach());
                }
            }
        }
        let out = self.config.head.outputs();
        per.into_iter()
            .map(|v| {
                if v.is_empty() {
                    Ok(Tensor::zeros((0, out), candle_core::DType::F32, &Device::Cpu)?)
                } else {
                    Ok(Tensor::cat(&v, 0)?)
                }
            })
            .collect()
    }

    /// Member rewards `[K][n]` (no autograd graph is kept).
    pub fn score_members(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<Vec<f32>>> {
        if prompts.is_empty() {
            return Ok(vec![Vec::new(); self.members.len()]);
        }
        self.outputs_members(prompts, completions)?
            .into_iter()
            .map(|o| Ok(o.narrow(1, 0, 1)?.squeeze(1)?.to_vec1::<f32>()?))
            .collect()
    }

    /// Aggregated rewards `[n]` (mean / WCO / UWO over members, per the config).
    pub fn score(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<f32>> {
        let per = self.score_members(prompts, completions)?;
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let how = self.config.aggregate_kind().map_err(Error::Usage)?;
        let t = Tensor::new(per, &Device::Cpu)?;
        Ok(aggregate(&t, how)?.to_vec1::<f32>()?)
    }

    /// The element-wise mean of the members' weights, `θ = (1/K) Σ_k θ_k`, by name.
    pub fn average_weights(&self) -> Result<HashMap<String, Tensor>> {
        let mut sum: HashMap<String, Tensor> = HashMap::new();
        for m in &self.members {
            for (k, v) in m.tensors()? {
                let s = match sum.remove(&k) {
                    Some(acc) => (acc + v)?,
                    None => v,
                };
                sum.insert(k, s);
            }
        }
        let k = self.members.len() as f64;
        sum.into_iter().map(|(n, t)| Ok((n, (t / k)?))).collect()
    }

    /// WARM (Ramé et al. 2024, "WARM: On the benefits of weight averaged reward models"):
    /// members fine-tuned from the same initialisation are merged into one model whose
    /// weights are [`RewardModel::average_weights`] (trunk and head). Written to `dir` as a
    /// one-member [`RewardModel`] with `"warm": true`. With a frozen backbone the reward is
    /// linear in the head, so WARM equals the mean ensemble exactly; with a fine-tuned trunk
    /// it does not (the trunk is non-linear).
    pub fn save_warm(&self, dir: &Path) -> Result<()> {
        let avg = self.average_weights()?;
        let stage = stage_next_to(dir, ".rm-warm-")?;
        self.members[0].save_tensors(&stage.path().join("member-0"), &avg)?;
        let config = RmConfig { members: 1, warm: true, aggregate: "mean".into(), ..self.config.clone() };
        let cfg = serde_json::to_vec_pretty(&config).map_err(|e| Error::Usage(format!("config: {e}")))?;
        write_atomic(&stage.path().join("config.json"), &cfg)?;
        mismatch_models::checkpoint::replace_dir(&stage.keep(), dir)
    }
}

fn stage_next_to(dir: &Path, prefix: &str) -> Result<tempfile::TempDir> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    tempfile::Builder::new().prefix(prefix).tempdir_in(parent).map_err(|e| Error::io(parent, e))
}
