//! What every loop shares: the policy handle (model + tokenizer + prompt encoding), rollouts,
//! seeds and batch order derived from (seed, step), the metrics log, checkpoints and resume.

use super::chunks::Scored;
use super::{PolicyConfig, RunOptions, TrainOutcome};
use crate::kl::KlController;
use crate::reward::Reward;
use crate::{Error, Result};
use candle_core::{DType, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use mismatch_models::checkpoint::{load_safetensors, read_json, replace_dir, safetensors_bytes, write_atomic};
use mismatch_models::generate::small;
use mismatch_models::optim::AdamW;
use mismatch_models::pool::on_pool;
use mismatch_models::{
    completion_logprobs, generate, load_causal_lm, shared_prompt_logprobs, AnyLm, CausalLm, ChatMessage,
    CompletionLogprobs, LoadedLm, SamplingParams, ScalarHead,
};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub type Metrics = serde_json::Map<String, serde_json::Value>;

/// A loaded policy and how it turns text into tokens.
pub struct Policy {
    pub lm: LoadedLm,
    pub chat: bool,
}

impl Policy {
    pub fn load(spec: &str, trainable: bool, chat: bool) -> Result<Self> {
        let lm = load_causal_lm(spec, &candle_core::Device::Cpu, trainable)?;
        if trainable && lm.varmap.is_none() {
            return Err(Error::Usage(format!("{spec}: the model loaded without trainable weights")));
        }
        if chat && lm.tok.chat_template.is_none() {
            return Err(Error::invalid(&lm.tok.source, "chat = true but the tokenizer has no chat template"));
        }
        Ok(Self { lm, chat })
    }

    pub fn model(&self) -> &dyn CausalLm {
        &self.lm.model
    }

    pub fn pad(&self) -> u32 {
        self.lm.tok.pad_id
    }

    /// The prompt as the model sees it: one user turn through the chat template (tokenised
    /// without adding specials, as transformers does), or the plain text with the tokenizer's
    /// BOS when it adds one.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>> {
        let ids = if self.chat {
            let text = self.lm.tok.apply_chat_template(&[ChatMessage::new("user", prompt)], true)?;
            self.lm.tok.encode(&text, false)?
        } else {
            self.lm.tok.encode(prompt, true)?
        };
        if ids.is_empty() {
            return Err(Error::Usage(format!(
                "prompt {prompt:?} encodes to no tokens (and the tokenizer adds no BOS)"
            )));
        }
        Ok(ids)
    }

    /// A target completion: its tokens followed by EOS (so training teaches the model to stop).
    pub fn encode_completion(&self, text: &str) -> Result<Vec<u32>> {
        let mut ids = self.lm.tok.encode(text, false)?;
        if let Some(&e) = self.lm.tok.eos_ids.first() {
            ids.push(e);
        }
        if ids.is_empty() {
            return Err(Error::Usage(format!("completion {text:?} encodes to no tokens")));
        }
        Ok(ids)
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.lm.tok.decode(ids, true)
    }

    pub fn logprobs(&self, prompts: &[Vec<u32>], completions: &[Vec<u32>]) -> Result<CompletionLogprobs> {
        completion_logprobs(self.model(), prompts, completions, self.pad())
    }

    /// [`Self::logprobs`] of rows that continue `prompts[group[i]]`. When that saves at least as
    /// many positions as the completions take, each prompt runs once ([`shared_prompt_logprobs`]);
    /// below that, the cache's extra graph nodes (concatenations, row gathers and their
    /// gradients in every layer) cost more than the saved positions. Measured on SmolLM2-135M,
    /// 8 rows of 16 tokens, forward + backward: k = 2 with 13-token prompts, no gain; k = 4 with
    /// 100-token prompts, 2.1× faster forward, 1.8× faster backward.
    pub fn logprobs_shared(
        &self,
        prompts: &[Vec<u32>],
        group: &[usize],
        completions: &[Vec<u32>],
    ) -> Result<CompletionLogprobs> {
        let rows: usize = group.iter().map(|&i| prompts.get(i).map_or(0, Vec::len)).sum();
        let once: usize = prompts.iter().map(Vec::len).sum();
        let completion: usize = completions.iter().map(Vec::len).sum();
        if rows.saturating_sub(once) >= completion.max(1) {
            return shared_prompt_logprobs(self.model(), prompts, group, completions, self.pad());
        }
        let expanded = group
            .iter()
            .map(|&i| prompts.get(i).cloned().ok_or_else(|| Error::Usage(format!("no prompt {i} to share"))))
            .collect::<Result<Vec<_>>>()?;
        self.logprobs(&expanded, completions)
    }

    /// Log-probs with everything detached (reference policies, old log-probs).
    pub fn logprobs_detached(&self, prompts: &[Vec<u32>], completions: &[Vec<u32>]) -> Result<CompletionLogprobs> {
        Ok(self.logprobs(prompts, completions)?.detach())
    }

    /// Writes an HF-layout model directory (weights, config, tokenizer files) at `dir`.
    pub fn save_model(&self, dir: &Path) -> Result<()> {
        let tok = &self.lm.tok;
        match &self.lm.model {
            AnyLm::Llama(m) => m.save(dir, tok),
            AnyLm::Gpt(m) => {
                m.save(dir)?;
                write_atomic(&dir.join("tokenizer.json"), tok.to_tokenizer_json()?.as_bytes())?;
                let cfg = serde_json::to_vec_pretty(&tok.tokenizer_config()).expect("json");
                write_atomic(&dir.join("tokenizer_config.json"), &cfg)
            }
        }
    }

    /// Trainable variables sorted by name (a fixed order keeps optimizer updates reproducible).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        named(self.lm.varmap.as_ref())
    }
}

fn named(vm: Option<&VarMap>) -> Vec<(String, Var)> {
    let Some(vm) = vm else { return vec![] };
    let data = vm.data().lock().expect("VarMap lock");
    let mut v: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// PPO's value head V(s) = w·h + b on the policy's final hidden states (a shared trunk; TRL's
/// default is a separate value model initialised from the reward model — sharing halves the
/// compute and is what Ziegler et al.'s original code did). Initialised to zero, so the first
/// values are 0 and the first advantages are the plain discounted returns.
pub struct ValueHead {
    pub head: ScalarHead,
    pub varmap: VarMap,
}

impl ValueHead {
    pub fn zeros(hidden: usize) -> Result<Self> {
        let dev = candle_core::Device::Cpu;
        let varmap = VarMap::new();
        {
            let mut d = varmap.data().lock().expect("VarMap lock");
            d.insert("v_head.weight".into(), Var::zeros((1, hidden), DType::F32, &dev)?);
            d.insert("v_head.bias".into(), Var::zeros(1, DType::F32, &dev)?);
        }
        let head = ScalarHead::new(VarBuilder::from_varmap(&varmap, DType::F32, &dev).pp("v_head"), hidden)?;
        Ok(Self { head, varmap })
    }

    pub fn load(path: &Path, hidden: usize) -> Result<Self> {
        let v = Self::zeros(hidden)?;
        let t = load_safetensors(path, &candle_core::Device::Cpu)?;
        for (name, var) in named(Some(&v.varmap)) {
            let src = t.get(&name).ok_or_else(|| Error::invalid(path, format!("missing tensor {name}")))?;
            if src.dims() != var.dims() {
                return Err(Error::invalid(path, format!("tensor {name} has shape {:?}", src.dims())));
            }
            var.set(&src.to_dtype(DType::F32)?)?;
        }
        Ok(v)
    }

    /// `[b, c, hidden]` → `[b, c]` f32.
    pub fn forward(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.head.forward(&hidden.to_dtype(DType::F32)?)?)
    }

    fn tensors(&self) -> Result<std::collections::HashMap<String, Tensor>> {
        named(Some(&self.varmap)).into_iter().map(|(k, v)| Ok((k, v.as_tensor().copy()?))).collect()
    }
}

/// A deterministic 64-bit seed from (seed, step, stream): [`mismatch_models::seed::mix`].
pub fn derive_seed(seed: u64, step: u64, stream: u64) -> u64 {
    mismatch_models::seed::mix(seed, step, stream)
}

/// Indices of step `step`'s batch of `bs` items out of `n`: consecutive slices of per-epoch
/// permutations, each seeded by (seed, epoch); batches may straddle two epochs.
pub fn batch_indices(n: usize, bs: usize, seed: u64, stream: u64, step: usize) -> Vec<usize> {
    let (start, end) = (step * bs, step * bs + bs);
    let mut out = Vec::with_capacity(bs);
    let mut epoch = start / n;
    let mut perm = permutation(n, derive_seed(seed, epoch as u64, stream));
    for pos in start..end {
        if pos / n != epoch {
            epoch = pos / n;
            perm = permutation(n, derive_seed(seed, epoch as u64, stream));
        }
        out.push(perm[pos % n]);
    }
    out
}

pub use mismatch_models::seed::permutation;

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

/// What a checkpoint's `trainer_state.json` holds besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps done (the `checkpoint-{step}` number).
    pub step: usize,
    pub episode: u64,
    pub adam_t: u64,
    /// The KL coefficient β at this point (the adaptive controller's state).
    pub kl_coef: f64,
    /// Lines of metrics.jsonl written up to this checkpoint.
    pub metrics_lines: usize,
    /// RS: iterations done.
    #[serde(default)]
    pub iteration: usize,
    pub config: PolicyConfig,
    pub policy_spec: String,
}

/// A training run: the policy being trained, its reference, optimizer, KL controller, log.
pub struct Session {
    pub cfg: PolicyConfig,
    pub spec: String,
    pub out: PathBuf,
    pub policy: Policy,
    pub reference: Option<Policy>,
    pub value: Option<ValueHead>,
    pub opt: AdamW,
    pub kl: KlController,
    /// Steps already done when this invocation started.
    pub start_step: usize,
    pub start_iteration: usize,
    pub episode: u64,
    metrics_lines: usize,
    pub outcome: TrainOutcome,
    bar: Option<indicatif::ProgressBar>,
    on_log: Option<super::OnLog>,
}

/// The newest `out/checkpoint-N` holding a trainer_state.json.
pub fn latest_checkpoint(out: &Path) -> Option<(usize, PathBuf)> {
    let rd = std::fs::read_dir(out).ok()?;
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let n: usize = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path().join("trainer_state.json").exists().then(|| (n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
}

impl Session {
    /// Starts a fresh run in `out` or, with `opts.resume`, continues from the newest checkpoint.
    pub fn open(
        cfg: &PolicyConfig,
        spec: &str,
        out: &Path,
        opts: &RunOptions,
        reward_name: Option<String>,
        with_reference: bool,
        with_value: bool,
    ) -> Result<Self> {
        let metrics_path = out.join("metrics.jsonl");
        let mut state = None;
        let policy = if opts.resume {
            let (_, dir) = latest_checkpoint(out)
                .ok_or_else(|| Error::invalid(out, "--resume: no checkpoint-*/trainer_state.json to resume from"))?;
            let state_path = dir.join("trainer_state.json");
            let st: TrainerState = read_json(&state_path)?;
            let comparable = |c: &PolicyConfig| PolicyConfig { steps: 0, rs_iterations: 0, ..c.clone() };
            if comparable(&st.config) != comparable(cfg) || st.policy_spec != spec {
                return Err(Error::invalid(
                    &state_path,
                    "--resume: the checkpoint was trained with different options or another policy \
                     (only steps and rs_iterations may change)",
                ));
            }
            let text = std::fs::read_to_string(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
            let kept: String = text.lines().take(st.metrics_lines).map(|l| format!("{l}\n")).collect();
            write_atomic(&metrics_path, kept.as_bytes())?;
            let p =
                Policy::load(dir.to_str().ok_or_else(|| Error::invalid(&dir, "path is not UTF-8"))?, true, cfg.chat)?;
            state = Some((st, dir));
            p
        } else {
            if let Some((_, d)) = latest_checkpoint(out) {
                return Err(Error::invalid(
                    &d,
                    "the output directory already holds checkpoints: pass --resume to continue, or use another --out",
                ));
            }
            std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
            let tc = serde_json::json!({"config": cfg, "policy": spec, "reward": reward_name});
            write_atomic(&out.join("train_config.json"), &serde_json::to_vec_pretty(&tc).expect("json"))?;
            write_atomic(&metrics_path, b"")?;
            Policy::load(spec, true, cfg.chat)?
        };
        let reference = if with_reference { Some(Policy::load(spec, false, cfg.chat)?) } else { None };
        let hidden = policy.model().hidden_size();
        let value = match (&state, with_value) {
            (Some((_, dir)), true) => Some(ValueHead::load(&dir.join("value_head.safetensors"), hidden)?),
            (None, true) => Some(ValueHead::zeros(hidden)?),
            _ => None,
        };
        let mut params = policy.named_vars();
        if let Some(v) = &value {
            params.extend(named(Some(&v.varmap)));
        }
        let mut opt = AdamW::new(params, cfg.learning_rate, 0.0)?;
        let beta = state.as_ref().map(|(s, _)| s.kl_coef).unwrap_or(cfg.kl_coef);
        let kl = match cfg.target_kl {
            Some(target) => KlController::Adaptive { beta, target, horizon: 10_000.0 },
            None => KlController::Fixed { beta },
        };
        let (mut start_step, mut start_iteration, mut episode, mut metrics_lines) = (0, 0, 0, 0);
        if let Some((st, dir)) = &state {
            let p = dir.join("optimizer.safetensors");
            opt.restore(&p, &load_safetensors(&p, &candle_core::Device::Cpu)?, st.adam_t)?;
            (start_step, start_iteration, episode, metrics_lines) =
                (st.step, st.iteration, st.episode, st.metrics_lines);
        }
        let bar = opts.progress.then(|| {
            let total = if cfg.algo == super::Algo::Rs { cfg.steps * cfg.rs_iterations } else { cfg.steps };
            let b = indicatif::ProgressBar::new(total as u64);
            b.set_style(
                indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
                    .expect("valid template")
                    .progress_chars("=> "),
            );
            b.set_prefix(cfg.algo.name());
            b.set_position(start_step as u64);
            b
        });
        Ok(Self {
            cfg: cfg.clone(),
            spec: spec.to_string(),
            out: out.to_path_buf(),
            policy,
            reference,
            value,
            opt,
            kl,
            start_step,
            start_iteration,
            episode,
            metrics_lines,
            outcome: TrainOutcome::default(),
            bar,
            on_log: opts.on_log.clone(),
        })
    }

    /// One optimizer update with gradient clipping, `loss` built on `scored` (backpropagated
    /// through its chunks); a non-finite gradient is an error naming the step.
    pub fn update(&mut self, loss: &Tensor, scored: &Scored, step: usize) -> Result<f64> {
        check_finite(scalar(loss)?, "loss", step)?;
        let grads = scored.backward(loss)?;
        self.opt.step_clipped_grads(&grads, self.cfg.max_grad_norm).map_err(|e| match e {
            Error::Usage(m) if m.starts_with("gradient norm") => Error::Usage(format!(
                "step {step}: {m}; stopping before the update, the last checkpoint on disk is the last good one"
            )),
            e => e,
        })
    }

    /// Appends one record (with `step`, `episode`, `lr` first) to metrics.jsonl.
    pub fn log(&mut self, step: usize, rows: u64, m: Metrics) -> Result<()> {
        self.episode += rows;
        let mut rec = Metrics::new();
        rec.insert("step".into(), serde_json::json!(step));
        rec.insert("episode".into(), serde_json::json!(self.episode));
        rec.insert("lr".into(), serde_json::json!(self.cfg.learning_rate));
        rec.extend(m);
        let path = self.out.join("metrics.jsonl");
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        writeln!(f, "{}", serde_json::Value::Object(rec.clone())).map_err(|e| Error::io(&path, e))?;
        self.metrics_lines += 1;
        if let Some(b) = &self.bar {
            let g = |k: &str| rec.get(k).and_then(|v| v.as_f64());
            let msg = match (g("objective/scores"), g("objective/kl"), g("loss")) {
                (Some(s), Some(k), _) => format!("scores {s:.3} kl {k:.3}"),
                (_, _, Some(l)) => format!("loss {l:.4}"),
                _ => String::new(),
            };
            b.set_message(msg);
            b.inc(1);
        }
        if let Some(hook) = &self.on_log {
            (hook.0)(&rec);
        }
        self.outcome.metrics.push(rec);
        Ok(())
    }

    /// Writes `out/checkpoint-{step}` atomically: the model directory is staged next to it
    /// with every file, then swapped in.
    pub fn save(&mut self, step: usize, iteration: usize) -> Result<PathBuf> {
        let dir = self.out.join(format!("checkpoint-{step}"));
        let stage = self.out.join(format!(".stage-checkpoint-{step}-{}", std::process::id()));
        if stage.exists() {
            std::fs::remove_dir_all(&stage).map_err(|e| Error::io(&stage, e))?;
        }
        self.policy.save_model(&stage)?;
        write_atomic(&stage.join("optimizer.safetensors"), &safetensors_bytes(&self.opt.state()?)?)?;
        if let Some(v) = &self.value {
            write_atomic(&stage.join("value_head.safetensors"), &safetensors_bytes(&v.tensors()?)?)?;
        }
        let st = TrainerState {
            step,
            episode: self.episode,
            adam_t: self.opt.t,
            kl_coef: self.kl.beta(),
            metrics_lines: self.metrics_lines,
            iteration,
            config: self.cfg.clone(),
            policy_spec: self.spec.clone(),
        };
        write_atomic(&stage.join("trainer_state.json"), &serde_json::to_vec_pretty(&st).expect("json"))?;
        replace_dir(&stage, &dir)?;
        self.outcome.checkpoints.push((step, dir.clone()));
        Ok(dir)
    }

    pub fn finish(self) -> TrainOutcome {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        self.outcome
    }

    /// The step loop shared by PPO, RLOO/GRPO, DPO and SFT: `step_fn(session, step)` does one
    /// update (0-based step) and returns its metrics; logging, checkpoints and `stop_after` are
    /// handled here.
    pub fn run_steps(
        mut self,
        opts: &RunOptions,
        rows_per_step: u64,
        mut step_fn: impl FnMut(&mut Session, usize) -> Result<Metrics> + Send,
    ) -> Result<TrainOutcome> {
        let total = self.cfg.steps;
        let mut done = 0usize;
        // A large model's step is a stream of parallel kernels, cheapest forked from a pool
        // thread; a small one's runs in chunks side by side (`mismatch_models::pool`).
        let large = !small(self.policy.model());
        for step in self.start_step..total {
            let m = match large {
                true => on_pool(|| step_fn(&mut self, step))?,
                false => step_fn(&mut self, step)?,
            };
            self.log(step + 1, rows_per_step, m)?;
            done += 1;
            let stop = opts.stop_after == Some(done);
            if (step + 1) % self.cfg.save_steps == 0 || step + 1 == total || stop {
                self.save(step + 1, 0)?;
            }
            if stop {
                break;
            }
        }
        Ok(self.finish())
    }
}
