//! The one reward interface every optimiser takes: a batch of (prompt, completion) texts in,
//! one scalar per pair out. Learned reward models, ensemble objectives, rule ("verifiable")
//! rewards, judges and the embedded world's gold reward all implement it, so best-of-N, PPO,
//! RLOO, GRPO and the mismatch report can put any of them side by side.

use crate::Result;

/// Scores (prompt, completion) pairs. Implementations must be deterministic: the same
/// inputs give bit-identical scores (seeded runs depend on it).
pub trait Reward: Send + Sync {
    /// A short name for logs and reports (`rm:DIR`, `rule:length`, `gold`, ...).
    fn name(&self) -> String;
    /// One score per pair; `prompts.len() == completions.len()`.
    fn score(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<f32>>;
}

/// A learned reward model (`mismatch rm train` output) as a [`Reward`]: its members' scores
/// aggregated as its config says (mean, worst-case WCO or uncertainty-weighted UWO).
pub struct RmReward {
    rm: mismatch_reward::RewardModel,
    name: String,
}

impl RmReward {
    /// Loads `DIR` (a reward-model directory or a `rm train --out` directory holding `model/`).
    pub fn load(dir: &std::path::Path) -> Result<Self> {
        // A `rm train --out DIR` directory keeps the model in DIR/model.
        let path = if !dir.join("config.json").exists() && dir.join("model").join("config.json").exists() {
            dir.join("model")
        } else {
            dir.to_path_buf()
        };
        let rm = mismatch_reward::RewardModel::load(&path, &candle_core::Device::Cpu)?;
        Ok(Self::new(rm, format!("rm:{}", dir.display())))
    }

    pub fn new(rm: mismatch_reward::RewardModel, name: String) -> Self {
        Self { rm, name }
    }

    pub fn model(&self) -> &mismatch_reward::RewardModel {
        &self.rm
    }
}

impl Reward for RmReward {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn score(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<f32>> {
        // Batches of 64 keep the encoder's activations small whatever the rollout size.
        let mut out = Vec::with_capacity(prompts.len());
        for (p, c) in prompts.chunks(64).zip(completions.chunks(64)) {
            out.extend(self.rm.score(p, c)?);
        }
        Ok(out)
    }
}

/// PPO's value head as a prefix scorer (the controlled-decoding sense of a value): for a PPO
/// checkpoint directory, `V(x, y) = w·h + b` on the trained policy's final hidden state after
/// the last token of prompt x and partial completion y — the value of the state the next token
/// is chosen in, as PPO's GAE reads it. Prompts are encoded as the run encoded them (its
/// `train_config.json`'s `chat`).
pub struct ValueReward {
    policy: crate::train::common::Policy,
    head: crate::train::common::ValueHead,
    name: String,
}

impl ValueReward {
    /// Loads `DIR/value_head.safetensors` with the policy in `DIR` (a PPO `checkpoint-N`).
    pub fn load(dir: &std::path::Path) -> Result<Self> {
        let head_path = dir.join("value_head.safetensors");
        if !head_path.exists() {
            return Err(crate::Error::invalid(
                &head_path,
                "no value head here: value:DIR takes a PPO checkpoint directory (checkpoint-N)",
            ));
        }
        let run_config =
            [dir.join("train_config.json"), dir.join("..").join("train_config.json")].into_iter().find(|p| p.exists());
        let chat = match run_config {
            Some(p) => {
                let v: serde_json::Value = mismatch_models::checkpoint::read_json(&p)?;
                v["config"]["chat"].as_bool().unwrap_or(false)
            }
            None => false,
        };
        let spec = dir.to_str().ok_or_else(|| crate::Error::invalid(dir, "path is not UTF-8"))?;
        let policy = crate::train::common::Policy::load(spec, false, chat)?;
        let head = crate::train::common::ValueHead::load(&head_path, policy.model().hidden_size())?;
        Ok(Self { policy, head, name: format!("value:{}", dir.display()) })
    }
}

impl Reward for ValueReward {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn score(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(prompts.len());
        for (ps, cs) in prompts.chunks(64).zip(completions.chunks(64)) {
            let x = ps.iter().map(|p| self.policy.encode_prompt(p)).collect::<Result<Vec<_>>>()?;
            // One token past the completion: the hidden state that predicts it is the state
            // after the completion's last token (after the prompt's, for an empty completion).
            let y = cs
                .iter()
                .map(|c| Ok([self.policy.lm.tok.encode(c, false)?, vec![self.policy.pad()]].concat()))
                .collect::<Result<Vec<_>>>()?;
            let h = self.policy.logprobs_detached(&x, &y)?.hidden;
            let v = self.head.forward(&h)?.to_vec2::<f32>()?;
            out.extend(v.iter().zip(&y).map(|(row, y)| row[y.len() - 1]));
        }
        Ok(out)
    }
}

/// Rule-based ("verifiable") rewards computed from the completion text alone. They are exact,
/// cheap and cannot be over-optimised in the reward-model sense, which makes them the control
/// condition next to a learned proxy (and Singhal et al. 2023's length-only reward).
#[derive(Debug, Clone)]
pub enum RuleReward {
    /// Number of whitespace-separated words; with a target T, −|words − T| (peaks at T).
    Length { target: Option<usize> },
    /// Number of non-overlapping matches of the pattern.
    Regex(regex::Regex),
    /// Number of non-overlapping occurrences of the text.
    Contains(String),
    /// 1 when the trimmed completion equals the answer, else 0.
    ExactAnswer(String),
}

impl Reward for RuleReward {
    fn name(&self) -> String {
        match self {
            Self::Length { target: None } => "rule:length".into(),
            Self::Length { target: Some(t) } => format!("rule:length:{t}"),
            Self::Regex(r) => format!("rule:regex:{}", r.as_str()),
            Self::Contains(t) => format!("rule:contains:{t}"),
            Self::ExactAnswer(a) => format!("rule:exact:{a}"),
        }
    }

    fn score(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<f32>> {
        if prompts.len() != completions.len() {
            return Err(crate::Error::Usage(format!(
                "{} prompts but {} completions",
                prompts.len(),
                completions.len()
            )));
        }
        Ok(completions
            .iter()
            .map(|c| match self {
                Self::Length { target: None } => c.split_whitespace().count() as f32,
                Self::Length { target: Some(t) } => -(c.split_whitespace().count() as f32 - *t as f32).abs(),
                Self::Regex(r) => r.find_iter(c).count() as f32,
                Self::Contains(t) => c.matches(t.as_str()).count() as f32,
                Self::ExactAnswer(a) => (c.trim() == a.trim()) as u8 as f32,
            })
            .collect())
    }
}

/// Parses a reward spec: `rm:DIR` or a bare `DIR` (learned reward model), `value:DIR` (a PPO
/// checkpoint's value head, [`ValueReward`]), `rule:length`, `rule:length:N`,
/// `rule:regex:PATTERN`, `rule:contains:TEXT`, `rule:exact:ANSWER`.
pub fn parse_reward(spec: &str) -> Result<Box<dyn Reward>> {
    let usage = |m: String| crate::Error::Usage(m);
    if let Some(dir) = spec.strip_prefix("value:") {
        return Ok(Box::new(ValueReward::load(std::path::Path::new(dir))?));
    }
    if let Some(rule) = spec.strip_prefix("rule:") {
        let (kind, arg) = match rule.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (rule, None),
        };
        return Ok(match (kind, arg) {
            ("length", None) => Box::new(RuleReward::Length { target: None }),
            ("length", Some(n)) => Box::new(RuleReward::Length {
                target: Some(n.parse().map_err(|_| {
                    usage(format!("reward {spec:?}: the length target {n:?} is not a non-negative integer"))
                })?),
            }),
            ("regex", Some(p)) if !p.is_empty() => Box::new(RuleReward::Regex(
                regex::Regex::new(p).map_err(|e| usage(format!("reward {spec:?}: invalid regex: {e}")))?,
            )),
            ("contains", Some(t)) if !t.is_empty() => Box::new(RuleReward::Contains(t.to_string())),
            ("exact", Some(a)) => Box::new(RuleReward::ExactAnswer(a.to_string())),
            _ => {
                return Err(usage(format!(
                    "unknown reward rule {spec:?} (expected rule:length, rule:length:N, rule:regex:PATTERN, \
                     rule:contains:TEXT or rule:exact:ANSWER)"
                )))
            }
        });
    }
    let dir = spec.strip_prefix("rm:").unwrap_or(spec);
    let path = std::path::Path::new(dir);
    if !path.is_dir() {
        return Err(usage(format!(
            "reward {spec:?}: {dir} is not a directory (expected rm:DIR, a reward-model directory, or rule:...)"
        )));
    }
    Ok(Box::new(RmReward::load(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_rewards_by_hand() {
        let p = ["q", "q", "q"];
        let c = ["the cat sat", "", "cat cat dog catalogue"];
        let score = |spec: &str| parse_reward(spec).unwrap().score(&p, &c).unwrap();
        assert_eq!(score("rule:length"), vec![3.0, 0.0, 4.0]);
        assert_eq!(score("rule:length:3"), vec![0.0, -3.0, -1.0]);
        assert_eq!(score("rule:contains:cat"), vec![1.0, 0.0, 3.0]);
        assert_eq!(score(r"rule:regex:\bcat\b"), vec![1.0, 0.0, 2.0]);
        assert_eq!(score("rule:exact:the cat sat"), vec![1.0, 0.0, 0.0]);
        assert_eq!(parse_reward("rule:regex:a+b").unwrap().name(), "rule:regex:a+b");
    }

    #[test]
    fn bad_reward_specs_are_explained() {
        let err = |s: &str| parse_reward(s).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err("rule:lenght").contains("unknown reward rule"));
        assert!(err("rule:length:x").contains("not a non-negative integer"));
        assert!(err("rule:regex:(").contains("invalid regex"));
        assert!(err("rule:contains:").contains("unknown reward rule"));
        assert!(err("rm:/no/such/dir").contains("not a directory"));
        let tmp = tempfile::tempdir().unwrap();
        assert!(err(tmp.path().to_str().unwrap()).contains("config.json"));
        assert!(RuleReward::Length { target: None }.score(&["a"], &[]).is_err());
    }
}
