//! The reward-model checkpoint and the [`RewardModel`] later stages call.
//!
//! On-disk layout (one directory):
//! ```text
//! DIR/config.json        {"model_type": "mismatch-rm", "backbone": "minilm-l6",
//!                         "frozen_backbone": true, "members": K, "aggregate": "mean",
//!                         "uwo_lambda": 0.5, "temperature": 1.0, "warm": false,
//!                         "input_format": "..."}
//! DIR/member-0/ …        one HF / sentence-transformers directory per ensemble member
//! DIR/member-K-1/        (model.safetensors with encoder weights + score.weight/score.bias,
//!                         config.json, tokenizer files), as written by `RewardEncoder::save`
//! ```
//! A WARM model (Ramé et al. 2024) is a single member whose weights are the average of
//! the members'. Each member directory is self-contained so it can be opened on its own.

use candle_core::{Device, Tensor};
use mismatch_models::checkpoint::{read_json, safetensors_bytes, write_atomic};
use mismatch_models::{Error, Result, RewardEncoder};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;

use crate::ensemble::{aggregate, Aggregate};

/// How a (prompt, completion) pair is turned into the backbone's single input text.
pub const INPUT_FORMAT: &str = "{prompt_tail} [SEP] {completion_tail}";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RmConfig {
    pub model_type: String,
    pub backbone: String,
    pub frozen_backbone: bool,
    pub members: usize,
    /// `mean`, `wco` or `uwo`.
    pub aggregate: String,
    pub uwo_lambda: f64,
    /// Temperature of `P(c ≻ r) = σ((r_c − r_r)/T)` fitted on validation (1 = unfitted).
    pub temperature: f64,
    pub warm: bool,
    pub input_format: String,
}

impl RmConfig {
    pub fn new(backbone: &str, frozen_backbone: bool, members: usize) -> Self {
        Self {
            model_type: "mismatch-rm".into(),
            backbone: backbone.into(),
            frozen_backbone,
            members,
            aggregate: "mean".into(),
            uwo_lambda: 0.5,
            temperature: 1.0,
            warm: false,
            input_format: INPUT_FORMAT.into(),
        }
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

/// Builds the backbone input for one pair. MiniLM reads at most `max_len` tokens
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

/// A trained reward model: K ≥ 1 members on a sentence-encoder backbone, their rewards
/// aggregated by [`RmConfig::aggregate`].
pub struct RewardModel {
    pub config: RmConfig,
    pub members: Vec<RewardEncoder>,
    /// Tokenizer without truncation, for [`format_input`].
    tok: tokenizers::Tokenizer,
    max_len: usize,
}

impl RewardModel {
    pub fn from_members(config: RmConfig, members: Vec<RewardEncoder>) -> Result<Self> {
        let first = members.first().ok_or_else(|| Error::Usage("a reward model needs at least one member".into()))?;
        let mut tok = first.encoder.tokenizer().clone();
        tok.with_truncation(None).map_err(|e| Error::Usage(format!("tokenizer: {e}")))?;
        tok.with_padding(None);
        let max_len = first.encoder.max_seq_len();
        Ok(Self { config: RmConfig { members: members.len(), ..config }, members, tok, max_len })
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
        let members = (0..config.members)
            .map(|i| RewardEncoder::load(&dir.join(format!("member-{i}")), device, config.frozen_backbone))
            .collect::<Result<Vec<_>>>()?;
        Self::from_members(config, members)
    }

    /// Writes the directory atomically: everything is staged next to `dir` and renamed into
    /// place, so an interrupted save leaves the previous checkpoint intact.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let stage = tempfile::Builder::new().prefix(".rm-").tempdir_in(parent).map_err(|e| Error::io(parent, e))?;
        for (i, m) in self.members.iter().enumerate() {
            m.save(&stage.path().join(format!("member-{i}")))?;
        }
        let cfg = serde_json::to_vec_pretty(&self.config).map_err(|e| Error::Usage(format!("config: {e}")))?;
        write_atomic(&stage.path().join("config.json"), &cfg)?;
        mismatch_models::checkpoint::replace_dir(&stage.keep(), dir)
    }

    /// Backbone input texts, one per pair (see [`format_input`]).
    pub fn inputs(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<String>> {
        if prompts.len() != completions.len() {
            return Err(Error::Usage(format!("{} prompts but {} completions", prompts.len(), completions.len())));
        }
        prompts.iter().zip(completions).map(|(p, c)| format_input(&self.tok, self.max_len, p, c)).collect()
    }

    /// Member rewards `[K][n]` (no autograd graph is kept).
    pub fn score_members(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<Vec<f32>>> {
        if prompts.is_empty() {
            return Ok(vec![Vec::new(); self.members.len()]);
        }
        let texts = self.inputs(prompts, completions)?;
        let texts: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
        if self.config.frozen_backbone {
            // Frozen members share the pretrained backbone: embed once, apply each head.
            let e = self.members[0].encoder.embed(&texts)?.detach().unsqueeze(1)?;
            return self.members.iter().map(|m| Ok(m.head.forward(&e)?.squeeze(1)?.to_vec1::<f32>()?)).collect();
        }
        self.members.iter().map(|m| Ok(m.score(&texts)?.detach().to_vec1::<f32>()?)).collect()
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

    /// WARM (Ramé et al. 2024, "WARM: On the benefits of weight averaged reward models"):
    /// members fine-tuned from the same initialisation are merged into one model whose
    /// weights are the element-wise mean `θ = (1/K) Σ_k θ_k`. Written to `dir` as a
    /// one-member [`RewardModel`] with `"warm": true`. With a frozen backbone the reward is
    /// linear in the head, so WARM equals the mean ensemble exactly.
    pub fn save_warm(&self, dir: &Path) -> Result<()> {
        let mut sum: HashMap<String, Tensor> = HashMap::new();
        for m in &self.members {
            let mut t = m.encoder.bert.tensors();
            t.extend(m.head_tensors());
            for (k, v) in t {
                let v = v.detach();
                let s = match sum.remove(&k) {
                    Some(acc) => (acc + v)?,
                    None => v,
                };
                sum.insert(k, s);
            }
        }
        let k = self.members.len() as f64;
        let avg = sum.into_iter().map(|(n, t)| Ok((n, (t / k)?))).collect::<Result<HashMap<_, _>>>()?;
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        let stage =
            tempfile::Builder::new().prefix(".rm-warm-").tempdir_in(parent).map_err(|e| Error::io(parent, e))?;
        let member = stage.path().join("member-0");
        self.members[0].save(&member)?;
        write_atomic(&member.join("model.safetensors"), &safetensors_bytes(&avg)?)?;
        let config = RmConfig { members: 1, warm: true, aggregate: "mean".into(), ..self.config.clone() };
        let cfg = serde_json::to_vec_pretty(&config).map_err(|e| Error::Usage(format!("config: {e}")))?;
        write_atomic(&stage.path().join("config.json"), &cfg)?;
        mismatch_models::checkpoint::replace_dir(&stage.keep(), dir)
    }
}
