//! A training run on disk: opening or resuming `out/`, optimizer updates, the metrics log,
//! checkpoints (`trainer_state.json`) and the step loop the trainers share.

use super::*;

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
    on_log: Option<crate::train::OnLog>,
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
            let total = if cfg.algo == crate::train::Algo::Rs { cfg.steps * cfg.rs_iterations } else { cfg.steps };
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
