//! Sampling a batch of completions from the policy and scoring them with a reward.

use super::*;

/// One batch of sampled completions.
pub struct Rollout {
    /// Original prompt string of each row.
    pub prompts: Vec<String>,
    pub prompt_ids: Vec<Vec<u32>>,
    /// Sampled tokens, including the EOS token when one was emitted.
    pub comp_ids: Vec<Vec<u32>>,
    /// Decoded completions (special tokens skipped).
    pub texts: Vec<String>,
    pub finished: Vec<bool>,
    /// Σ_t log π(y_t) under the raw (temperature 1) policy.
    pub raw_logprob: Vec<f64>,
}

impl Rollout {
    pub fn mean_length(&self) -> f64 {
        self.comp_ids.iter().map(|c| c.len() as f64).sum::<f64>() / self.comp_ids.len().max(1) as f64
    }
    pub fn num_eos(&self) -> f64 {
        self.finished.iter().filter(|&&f| f).count() as f64
    }
}

/// Samples one completion per row of `prompts` with the sampling seed `seed`.
pub fn rollout(policy: &Policy, cfg: &PolicyConfig, prompts: &[&str], seed: u64) -> Result<Rollout> {
    let prompt_ids = prompts.iter().map(|p| policy.encode_prompt(p)).collect::<Result<Vec<_>>>()?;
    let params = SamplingParams {
        max_new_tokens: cfg.max_new_tokens,
        temperature: cfg.temperature,
        top_k: cfg.top_k,
        top_p: None,
        stop_tokens: policy.lm.tok.eos_ids.clone(),
        seed,
    };
    let g = generate(policy.model(), &prompt_ids, &params, policy.pad())?;
    let texts = g.tokens.iter().map(|t| policy.decode(t)).collect::<Result<Vec<_>>>()?;
    let raw_logprob = g.raw_logprobs.iter().map(|l| l.iter().map(|&x| x as f64).sum()).collect();
    Ok(Rollout {
        prompts: prompts.iter().map(|s| s.to_string()).collect(),
        prompt_ids,
        comp_ids: g.tokens,
        texts,
        finished: g.finished,
        raw_logprob,
    })
}

/// Scores a rollout with the original prompt strings; a wrong count or a non-finite score is
/// an error naming the step.
pub fn score(reward: &dyn Reward, prompts: &[String], texts: &[String], step: usize) -> Result<Vec<f32>> {
    let p: Vec<&str> = prompts.iter().map(|s| s.as_str()).collect();
    let c: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
    let s = reward.score(&p, &c)?;
    if s.len() != c.len() {
        return Err(Error::Usage(format!(
            "step {step}: reward {} returned {} scores for {} completions",
            reward.name(),
            s.len(),
            c.len()
        )));
    }
    if let Some(i) = s.iter().position(|x| !x.is_finite()) {
        return Err(Error::Usage(format!(
            "step {step}: reward {} returned {} for completion {i} ({:?}); stopping before the update, \
             the last checkpoint on disk is the last good one",
            reward.name(),
            s[i],
            c[i]
        )));
    }
    Ok(s)
}
