//! Teacher-forced log-probs of given completions: the primitive behind DPO's implicit reward,
//! the KL to a reference policy, PPO's ratios and SFT's loss.
//!
//! For a prompt `x` and completion `y = (y_1..y_n)`, `log π(y_j | x, y_<j)` is read off the
//! logits at the position before `y_j`. Rows are laid out as `[left pad | prompt | completion |
//! right pad]` so that every completion starts in the same column and only that region goes
//! through the (large) vocabulary projection.

use crate::attention::{KvCache, Positions};
use crate::decoder::CausalLm;
use crate::error::{Error, Result};
use crate::ops::{gather_last, log_softmax_last_dim};
use candle_core::{DType, Tensor};

/// Per-token completion log-probs of a batch.
#[derive(Debug, Clone)]
pub struct CompletionLogprobs {
    /// `[b, c]` log π(y_j | x, y_<j); differentiable with respect to the model's weights.
    pub logprobs: Tensor,
    /// `[b, c]` f32, 1 where `y_j` exists, 0 in right padding.
    pub mask: Tensor,
    /// `[b, c, hidden]` hidden states at the positions that predict each completion token
    /// (for value heads: the value of the state before emitting `y_j`).
    pub hidden: Tensor,
    /// `[b, c, vocab]` log π(· | x, y_<j) over the whole vocabulary, detached: the forward's
    /// log-softmax, kept so that the policy's entropy needs no second pass through the output
    /// head. `None` where rows were assembled from parts.
    pub vocab_logprobs: Option<Tensor>,
}

impl CompletionLogprobs {
    /// `[b]` Σ_j log π(y_j | …): the sequence log-likelihood DPO uses.
    pub fn sum(&self) -> candle_core::Result<Tensor> {
        (&self.logprobs * &self.mask)?.sum(1)
    }

    /// The same values with no graph (π_old, reference log-probs).
    pub fn detach(&self) -> Self {
        Self {
            logprobs: self.logprobs.detach(),
            mask: self.mask.clone(),
            hidden: self.hidden.detach(),
            vocab_logprobs: self.vocab_logprobs.clone(),
        }
    }

    /// Per-row log-probs as vectors, padding removed.
    pub fn to_vecs(&self) -> candle_core::Result<Vec<Vec<f32>>> {
        let lp = self.logprobs.to_dtype(DType::F32)?.to_vec2::<f32>()?;
        let m = self.mask.to_vec2::<f32>()?;
        Ok(lp
            .into_iter()
            .zip(m)
            .map(|(l, m)| l.into_iter().zip(m).filter(|(_, m)| *m > 0.0).map(|(l, _)| l).collect())
            .collect())
    }
}

/// Scores `completions[i]` given `prompts[i]` under `model`.
pub fn completion_logprobs(
    model: &dyn CausalLm,
    prompts: &[Vec<u32>],
    completions: &[Vec<u32>],
    pad_id: u32,
) -> Result<CompletionLogprobs> {
    if prompts.len() != completions.len() || prompts.is_empty() {
        return Err(Error::Usage(format!(
            "scoring needs as many prompts as completions and at least one (got {} and {})",
            prompts.len(),
            completions.len()
        )));
    }
    let b = prompts.len();
    let (p, c) = padded_lengths(model, prompts, completions)?;
    let t = p + c;
    let mut ids = Vec::with_capacity(b * t);
    let mut mask = Vec::with_capacity(b);
    let mut targets = Vec::with_capacity(b * c);
    let mut cmask = Vec::with_capacity(b * c);
    for (x, y) in prompts.iter().zip(completions) {
        let (lp, rp) = (p - x.len(), c - y.len());
        ids.extend(std::iter::repeat_n(pad_id, lp).chain(x.iter().copied()).chain(y.iter().copied()));
        ids.extend(std::iter::repeat_n(pad_id, rp));
        let row: Vec<u8> = std::iter::repeat_n(0, lp)
            .chain(std::iter::repeat_n(1, x.len() + y.len()))
            .chain(std::iter::repeat_n(0, rp))
            .collect();
        mask.push(row);
        targets.extend(y.iter().copied().chain(std::iter::repeat_n(pad_id, rp)));
        cmask.extend(std::iter::repeat_n(1f32, y.len()).chain(std::iter::repeat_n(0f32, rp)));
    }
    let dev = model.device();
    let ids = Tensor::from_vec(ids, (b, t), dev)?;
    let pos = Positions::from_mask(&mask, t, dev)?;
    // Only the positions p-1 .. p+c-2 predict completion tokens.
    let hidden = model.hidden(&ids, &pos, None)?.narrow(1, p - 1, c)?;
    read_off(model, hidden, targets, cmask)
}

/// The padded prompt and completion lengths (the longest of each, a completion at least 1), after
/// checking that no prompt is empty and that both fit the model's context.
fn padded_lengths(model: &dyn CausalLm, prompts: &[Vec<u32>], completions: &[Vec<u32>]) -> Result<(usize, usize)> {
    if prompts.iter().any(|p| p.is_empty()) {
        return Err(Error::Usage("empty prompt: scoring needs at least one prompt token".into()));
    }
    let p = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let c = completions.iter().map(Vec::len).max().unwrap_or(0).max(1);
    if p + c > model.max_seq_len() {
        return Err(Error::Usage(format!(
            "prompt ({p}) + completion ({c}) tokens exceed the model's context of {}",
            model.max_seq_len()
        )));
    }
    Ok((p, c))
}

/// The log-probs of `targets` `[b·c]` from the hidden states that predict them `[b, c, d]`.
fn read_off(model: &dyn CausalLm, hidden: Tensor, targets: Vec<u32>, cmask: Vec<f32>) -> Result<CompletionLogprobs> {
    let (b, c, _) = hidden.dims3()?;
    let dev = model.device();
    let logits = model.lm_logits(&hidden)?.to_dtype(DType::F32)?;
    let targets = Tensor::from_vec(targets, (b, c), dev)?;
    let vocab = log_softmax_last_dim(&logits)?;
    let logprobs = gather_last(&vocab, &targets)?;
    let mask = Tensor::from_vec(cmask, (b, c), dev)?;
    Ok(CompletionLogprobs { logprobs, mask, hidden, vocab_logprobs: Some(vocab.detach()) })
}

/// [`completion_logprobs`] for rows that share prompts: row `i` continues `prompts[group[i]]`
/// (RLOO's and GRPO's k samples of a prompt, DPO's chosen and rejected). Each distinct prompt
/// runs through the model once and its rows read its keys and values from a KV cache, so a
/// group of k rows costs `p + k·c` positions instead of `k·(p + c)`. The attention sees the
/// same keys under the same mask as in [`completion_logprobs`] on the expanded rows, so the
/// function is the same (up to float rounding), and gradients flow into the shared prompt
/// from every row of its group.
pub fn shared_prompt_logprobs(
    model: &dyn CausalLm,
    prompts: &[Vec<u32>],
    group: &[usize],
    completions: &[Vec<u32>],
    pad_id: u32,
) -> Result<CompletionLogprobs> {
    if group.len() != completions.len() || group.is_empty() || group.iter().any(|&g| g >= prompts.len()) {
        return Err(Error::Usage(format!(
            "shared-prompt scoring needs one prompt index below {} per completion (got {} indices, {} completions)",
            prompts.len(),
            group.len(),
            completions.len()
        )));
    }
    let (g, b) = (prompts.len(), completions.len());
    let (p, c) = padded_lengths(model, prompts, completions)?;
    let dev = model.device();
    let mut pids = Vec::with_capacity(g * p);
    let mut pmask = Vec::with_capacity(g);
    for x in prompts {
        pids.extend(std::iter::repeat_n(pad_id, p - x.len()).chain(x.iter().copied()));
        pmask.push(std::iter::repeat_n(0u8, p - x.len()).chain(std::iter::repeat_n(1, x.len())).collect::<Vec<_>>());
    }
    let mut cache = KvCache::new(model.num_layers());
    let hp = model.hidden(
        &Tensor::from_vec(pids, (g, p), dev)?,
        &Positions::from_mask(&pmask, p, dev)?,
        Some(&mut cache),
    )?;
    let rows = Tensor::from_vec(group.iter().map(|&i| i as u32).collect::<Vec<_>>(), b, dev)?;
    cache.select_rows(&rows)?;
    let (mut cids, mut mask, mut targets, mut cmask) = (vec![], vec![], vec![], vec![]);
    for (&i, y) in group.iter().zip(completions) {
        let rp = c - y.len();
        cids.extend(y.iter().copied().chain(std::iter::repeat_n(pad_id, rp)));
        mask.push(
            pmask[i].iter().copied().chain(std::iter::repeat_n(1, y.len())).chain(std::iter::repeat_n(0, rp)).collect(),
        );
        targets.extend(y.iter().copied().chain(std::iter::repeat_n(pad_id, rp)));
        cmask.extend(std::iter::repeat_n(1f32, y.len()).chain(std::iter::repeat_n(0f32, rp)));
    }
    let hc =
        model.hidden(&Tensor::from_vec(cids, (b, c), dev)?, &Positions::from_mask(&mask, c, dev)?, Some(&mut cache))?;
    // The last prompt position predicts y_1; completion positions 1..c-1 predict the rest.
    let first = hp.narrow(1, p - 1, 1)?.contiguous()?.index_select(&rows, 0)?;
    let hidden = match c {
        1 => first,
        _ => Tensor::cat(&[&first, &hc.narrow(1, 0, c - 1)?], 1)?,
    };
    read_off(model, hidden, targets, cmask)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Gpt, GptConfig, Llama, LlamaConfig};
    use candle_core::{DType, Device, Var};

    fn llama() -> Llama {
        let cfg: LlamaConfig = serde_json::from_value(serde_json::json!({
            "model_type": "llama", "vocab_size": 40, "hidden_size": 16, "intermediate_size": 24,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
            "tie_word_embeddings": true
        }))
        .unwrap();
        Llama::random(&cfg, &Device::Cpu).unwrap()
    }

    /// The kept vocabulary log-probs are the forward's: the completion log-probs are read off
    /// them, each position's distribution sums to 1, and they equal a second pass through the
    /// output head from the returned hidden states (what the entropy did before they were kept).
    #[test]
    fn vocab_logprobs_are_the_forwards_log_softmax() {
        let m = llama();
        let prompts = vec![vec![1u32, 5, 9], vec![1, 7]];
        let comps = vec![vec![3u32, 4, 5], vec![8]];
        let out = completion_logprobs(&m, &prompts, &comps, 0).unwrap();
        let vocab = out.vocab_logprobs.as_ref().expect("kept");
        assert!(!vocab.track_op());
        assert_eq!(vocab.dims(), &[2, 3, 40]);
        let picked = crate::ops::gather_last(vocab, &Tensor::new(&[[3u32, 4, 5], [8, 0, 0]], &Device::Cpu).unwrap());
        assert_eq!(picked.unwrap().to_vec2::<f32>().unwrap(), out.logprobs.to_vec2::<f32>().unwrap());
        for row in vocab.exp().unwrap().sum(2).unwrap().to_vec2::<f32>().unwrap() {
            assert!(row.iter().all(|s| (s - 1.0).abs() < 1e-5), "{row:?}");
        }
        let again = log_softmax_last_dim(&m.lm_logits(&out.hidden).unwrap()).unwrap();
        assert_eq!(again.to_vec3::<f32>().unwrap(), vocab.to_vec3::<f32>().unwrap());
        assert!(out.detach().vocab_logprobs.is_some());
    }

    /// Shared-prompt scoring equals scoring the expanded rows: log-probs, mask, hidden states and
    /// the gradient of Σ log-probs with respect to every weight, on prompts of unequal lengths
    /// (left padding) and completions of unequal lengths (right padding, one empty).
    #[test]
    fn shared_prompts_give_the_same_logprobs_and_gradients() {
        let dev = Device::Cpu;
        let vm = candle_nn::VarMap::new();
        let gpt = Gpt::init(&GptConfig::new(40, 2, 2, 16, 64), &vm, 5, DType::F32, &dev).unwrap();
        let llama = llama();
        let llama_vars: Vec<Var> = llama.varmap().unwrap().all_vars();
        let prompts = vec![vec![1u32, 5, 9], vec![1, 7], vec![1, 2, 3, 4, 5]];
        let group = [0usize, 0, 1, 1, 1, 2];
        let comps = vec![vec![3u32, 4, 5, 6], vec![8], vec![9, 9, 9], vec![], vec![10, 11, 12, 13], vec![30, 31]];
        let expanded: Vec<Vec<u32>> = group.iter().map(|&i| prompts[i].clone()).collect();
        for (name, model, vars) in
            [("gpt", &gpt as &dyn CausalLm, vm.all_vars()), ("llama", &llama as &dyn CausalLm, llama_vars)]
        {
            let full = completion_logprobs(model, &expanded, &comps, 0).unwrap();
            let shared = shared_prompt_logprobs(model, &prompts, &group, &comps, 0).unwrap();
            let diff = |a: &Tensor, b: &Tensor| {
                assert_eq!(a.dims(), b.dims(), "{name}");
                (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
            };
            assert_eq!(full.mask.to_vec2::<f32>().unwrap(), shared.mask.to_vec2::<f32>().unwrap(), "{name}");
            let m = &full.mask;
            assert!(diff(&(&full.logprobs * m).unwrap(), &(&shared.logprobs * m).unwrap()) < 1e-5, "{name}");
            let hm = m.unsqueeze(2).unwrap().broadcast_as(full.hidden.shape()).unwrap();
            assert!(diff(&(&full.hidden * &hm).unwrap(), &(&shared.hidden * &hm).unwrap()) < 1e-4, "{name}");
            let (gf, gs) = (full.sum().unwrap().sum_all().unwrap(), shared.sum().unwrap().sum_all().unwrap());
            let (gf, gs) = (gf.backward().unwrap(), gs.backward().unwrap());
            for v in &vars {
                let (a, b) = (gf.get(v.as_tensor()).unwrap(), gs.get(v.as_tensor()).unwrap());
                let scale = a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
                assert!(diff(a, b) <= 1e-4 * scale.max(1.0), "{name}: gradient differs by {}", diff(a, b));
            }
        }
        // Without a graph (a frozen reference) the GPT scores through its packed cache: the
        // same log-probs.
        let frozen = gpt.detached().unwrap();
        let full = completion_logprobs(frozen.as_ref(), &expanded, &comps, 0).unwrap();
        let shared = shared_prompt_logprobs(frozen.as_ref(), &prompts, &group, &comps, 0).unwrap();
        let d = ((&full.logprobs - &shared.logprobs).unwrap() * &full.mask).unwrap();
        let d = d.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap();
        assert!(!shared.logprobs.track_op() && d < 1e-5, "frozen gpt: {d}");
        let err = shared_prompt_logprobs(&gpt, &prompts, &[0, 3], &comps[..2], 0).unwrap_err().to_string();
        assert!(err.contains("one prompt index below 3"), "{err}");
    }
}
