//! The per-step metrics record and the numeric helpers that fill it: finiteness checks, means,
//! entropy, row selection and running averages over minibatches.

use super::*;

/// One metrics.jsonl record, keyed by TRL's names.
pub type Metrics = serde_json::Map<String, serde_json::Value>;

/// Errors when a loss is not finite, naming the step and the quantity.
pub fn check_finite(x: f64, what: &str, step: usize) -> Result<f64> {
    if !x.is_finite() {
        return Err(Error::Usage(format!(
            "step {step}: {what} is {x}; stopping before the update, the last checkpoint on disk is the last good one"
        )));
    }
    Ok(x)
}

pub fn scalar(t: &Tensor) -> Result<f64> {
    crate::masked::scalar(t)
}

pub fn mean_std(x: &[f32]) -> (f64, f64) {
    let n = x.len().max(1) as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
    (mean, var.sqrt())
}

/// Σ_t H_t per row, averaged over rows (`objective/entropy`): from the forward's log-softmax
/// when `out` kept it, else through the output head again from the hidden states.
pub fn mean_entropy(policy: &Policy, out: &CompletionLogprobs) -> Result<f64> {
    let h = match &out.vocab_logprobs {
        Some(lp) => crate::ppo::entropy_from_logprobs(lp)?,
        None => crate::ppo::entropy_from_logits(&policy.model().lm_logits(&out.hidden)?)?,
    };
    scalar(&crate::masked::sum_rows(&h, &out.mask)?.mean_all()?)
}

/// Rows `ix` of a `[b, c]` tensor, cut to the first `c` columns.
pub fn rows(t: &Tensor, ix: &Tensor, c: usize) -> Result<Tensor> {
    Ok(t.index_select(ix, 0)?.narrow(1, 0, c)?)
}

pub fn ix_tensor(ix: &[usize]) -> Result<Tensor> {
    Ok(Tensor::from_vec(ix.iter().map(|&i| i as u32).collect::<Vec<_>>(), ix.len(), &candle_core::Device::Cpu)?)
}

pub fn put(m: &mut Metrics, k: &str, v: f64) {
    m.insert(k.to_string(), serde_json::json!(v));
}

/// Running means of per-minibatch statistics.
#[derive(Default)]
pub struct Averages(Vec<(String, f64, usize)>);

impl Averages {
    pub fn add(&mut self, k: &str, v: f64) {
        match self.0.iter_mut().find(|e| e.0 == k) {
            Some(e) => {
                e.1 += v;
                e.2 += 1
            }
            None => self.0.push((k.to_string(), v, 1)),
        }
    }
    pub fn into_metrics(self, m: &mut Metrics) {
        for (k, s, n) in self.0 {
            put(m, &k, s / n as f64);
        }
    }
}

/// Closes a sampling step (PPO, RLOO, GRPO): the minibatch averages, the rollout's length and
/// EOS counts and the KL coefficient used are logged; then the KL controller sees this step's
/// mean KL over `b` rollouts (a no-op for a fixed coefficient).
pub fn finish_step(
    s: &mut Session,
    mut m: Metrics,
    avg: Averages,
    ro: &Rollout,
    beta: f64,
    mean_kl: f64,
    b: usize,
) -> Result<Metrics> {
    avg.into_metrics(&mut m);
    put(&mut m, "completions/mean_length", ro.mean_length());
    put(&mut m, "val/num_eos_tokens", ro.num_eos());
    put(&mut m, "kl_coef", beta);
    s.kl.update(mean_kl, b);
    Ok(m)
}
