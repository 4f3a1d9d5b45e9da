//! Reward-model training: K members (seeds `seed + k`, each with its own data order), each
//! trained with Adam on a pairwise loss, metrics logged with TRL's names, checkpointed
//! after every epoch and resumable bit-identically.
//!
//! Output directory: `model/` (the [`RewardModel`]), `metrics.jsonl`, `state/` (resume
//! point: finished and in-progress members, Adam moments, `trainer_state.json`).

use crate::calibration::fit_temperature;
use crate::loss::{bradley_terry, centering, margin_bt};
use crate::model::{RewardModel, RmConfig};
use candle_core::{DType, Device, Tensor, Var};
use mismatch_models::checkpoint::{load_safetensors, read_json, safetensors_bytes, write_atomic};
use mismatch_models::optim::AdamW;
use mismatch_models::{Error, Result, RewardEncoder};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One training pair, already rendered to text.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
    pub margin: f64,
}

/// Renders a prompt: plain text as is, a conversation as `Role: content` blocks joined by
/// blank lines (so the backbone sees who said what). Completions use their plain text.
pub fn render(t: &mismatch_data::Turns) -> String {
    match t {
        mismatch_data::Turns::Text(s) => s.clone(),
        mismatch_data::Turns::Chat(m) => m
            .iter()
            .map(|m| {
                let role = match m.role {
                    mismatch_data::Role::System => "System",
                    mismatch_data::Role::User => "User",
                    mismatch_data::Role::Assistant => "Assistant",
                };
                format!("{role}: {}", m.content)
            })
            .collect::<Vec<_>>()
            .join("\n\n"),
    }
}

pub fn pairs_of(prefs: &[mismatch_data::Preference]) -> Vec<Pair> {
    prefs
        .iter()
        .map(|p| Pair {
            prompt: render(&p.prompt),
            chosen: p.chosen.text(),
            rejected: p.rejected.text(),
            margin: p.margin.unwrap_or(0.0),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// [`bradley_terry`].
    Bt,
    /// [`margin_bt`] with the record's `margin` (0 when absent).
    Margin,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub backbone: String,
    pub frozen: bool,
    pub loss: LossKind,
    pub members: usize,
    pub warm: bool,
    pub epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub seed: u64,
    /// η of the reward-centering term (0 disables it).
    pub center_eta: f64,
}

/// Trainable parameters with stable names (VarMap iteration order is not stable).
fn named_vars(m: &RewardEncoder) -> Vec<(String, Var)> {
    let mut out: Vec<(String, Var)> = Vec::new();
    let mut enc_ids = std::collections::HashSet::new();
    if let Some(vm) = m.encoder.bert.varmap() {
        for (k, v) in vm.data().lock().expect("varmap lock").iter() {
            enc_ids.insert(v.as_tensor().id());
            out.push((k.clone(), v.clone()));
        }
    }
    for v in m.trainable_vars() {
        if enc_ids.contains(&v.as_tensor().id()) {
            continue;
        }
        // The head holds exactly a [1, h] weight and a [1] bias.
        let name = if v.as_tensor().rank() == 2 { "score.weight" } else { "score.bias" };
        out.push((name.to_string(), v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct TrainerState {
    config: TrainConfig,
    /// Member being trained and the number of its epochs completed.
    member: usize,
    epochs_done: usize,
    adam_t: u64,
    metrics_lines: usize,
}

/// Rewards of batch texts: from cached embeddings when frozen, else a full forward pass.
struct Scorer<'a> {
    texts: &'a [String],
    cache: Option<Tensor>,
}

impl Scorer<'_> {
    fn rewards(&self, m: &RewardEncoder, idx: &[usize]) -> Result<Tensor> {
        match &self.cache {
            Some(e) => {
                let ix = Tensor::from_vec(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), idx.len(), e.device())?;
                Ok(m.head.forward(&e.index_select(&ix, 0)?.unsqueeze(1)?)?.squeeze(1)?)
            }
            None => {
                let t: Vec<&str> = idx.iter().map(|&i| self.texts[i].as_str()).collect();
                m.score(&t)
            }
        }
    }
}

/// Pairwise statistics with TRL's names.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PairStats {
    pub loss: f64,
    pub accuracy: f64,
    pub margin: f64,
    pub mean_reward: f64,
    pub min_reward: f64,
    pub max_reward: f64,
}

fn stats(loss_sum: f64, n_batches: usize, rc: &[f32], rr: &[f32]) -> PairStats {
    let n = rc.len().max(1) as f64;
    let all = rc.iter().chain(rr);
    PairStats {
        loss: loss_sum / n_batches.max(1) as f64,
        accuracy: rc.iter().zip(rr).filter(|(c, r)| c > r).count() as f64 / n,
        margin: rc.iter().zip(rr).map(|(c, r)| (c - r) as f64).sum::<f64>() / n,
        mean_reward: all.clone().map(|&x| x as f64).sum::<f64>() / (2.0 * n),
        min_reward: all.clone().fold(f32::INFINITY, |a, &b| a.min(b)) as f64,
        max_reward: all.fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64,
    }
}

/// Trains and writes `out/model`. With `resume`, continues from `out/state` (the config
/// must match) and produces the same model as an uninterrupted run. `stop_after = Some(n)`
/// ends the run with an error after `n` epochs of this invocation (checkpoint written), to
/// split long runs into chunks.
pub fn train(
    cfg: &TrainConfig,
    backbone_dir: &Path,
    train: &[Pair],
    eval: &[Pair],
    out: &Path,
    resume: bool,
    progress: bool,
    stop_after: Option<usize>,
) -> Result<RewardModel> {
    if train.is_empty() {
        return Err(Error::Usage("no training pairs".into()));
    }
    if cfg.members == 0 || cfg.batch_size == 0 || !(cfg.lr > 0.0) {
        return Err(Error::Usage("--ensemble, --batch-size and --lr must be positive".into()));
    }
    let dev = Device::Cpu;
    let state_dir = out.join("state");
    let state_path = state_dir.join("trainer_state.json");
    let metrics_path = out.join("metrics.jsonl");
    let mut start = TrainerState { config: cfg.clone(), member: 0, epochs_done: 0, adam_t: 0, metrics_lines: 0 };
    if resume {
        if !state_path.exists() {
            return Err(Error::invalid(&state_path, "--resume: no checkpoint to resume from"));
        }
        start = read_json(&state_path)?;
        if start.config != *cfg {
            return Err(Error::invalid(&state_path, "--resume: the checkpoint was trained with different options"));
        }
        let text = std::fs::read_to_string(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
        let kept: String = text.lines().take(start.metrics_lines).map(|l| format!("{l}\n")).collect();
        write_atomic(&metrics_path, kept.as_bytes())?;
    } else {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        write_atomic(&metrics_path, b"")?;
    }
    let mut metrics_lines = start.metrics_lines;
    let mut epochs_run = 0usize;
    let log = |v: serde_json::Value, lines: &mut usize| -> Result<()> {
        let mut f =
            std::fs::OpenOptions::new().append(true).open(&metrics_path).map_err(|e| Error::io(&metrics_path, e))?;
        writeln!(f, "{v}").map_err(|e| Error::io(&metrics_path, e))?;
        *lines += 1;
        Ok(())
    };

    // Texts: train chosen/rejected at 2i/2i+1, then eval pairs after them.
    let probe = RewardEncoder::new(backbone_dir, &dev, true, 0)?;
    let proto = RewardModel::from_members(RmConfig::new(&cfg.backbone, cfg.frozen, 1), vec![probe])?;
    let all: Vec<&Pair> = train.iter().chain(eval).collect();
    let prompts: Vec<&str> = all.iter().flat_map(|p| [p.prompt.as_str(), p.prompt.as_str()]).collect();
    let comps: Vec<&str> = all.iter().flat_map(|p| [p.chosen.as_str(), p.rejected.as_str()]).collect();
    let texts = proto.inputs(&prompts, &comps)?;
    let cache = if cfg.frozen {
        // Embed each distinct text once: the frozen backbone's output never changes.
        let mut uniq: HashMap<&str, usize> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        let slot: Vec<usize> = texts
            .iter()
            .map(|t| {
                *uniq.entry(t.as_str()).or_insert_with(|| {
                    order.push(t);
                    order.len() - 1
                })
            })
            .collect();
        let bar = progress.then(|| bar(order.len() as u64, "embedding"));
        let mut embs = Vec::new();
        for chunk in order.chunks(64) {
            embs.push(proto.members[0].encoder.embed(chunk)?.detach());
            if let Some(b) = &bar {
                b.inc(chunk.len() as u64)
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear()
        }
        let e = Tensor::cat(&embs, 0)?;
        let ix = Tensor::from_vec(slot.iter().map(|&i| i as u32).collect::<Vec<_>>(), slot.len(), &dev)?;
        Some(e.index_select(&ix, 0)?)
    } else {
        None
    };
    drop(proto);
    let scorer = Scorer { texts: &texts, cache };
    let n_eval_off = 2 * train.len();

    let eval_rewards = |m: &RewardEncoder| -> Result<(Vec<f32>, Vec<f32>)> {
        let (mut rc, mut rr) = (Vec::new(), Vec::new());
        for chunk in (0..eval.len()).collect::<Vec<_>>().chunks(64) {
            let ix: Vec<usize> = chunk.iter().flat_map(|&i| [n_eval_off + 2 * i, n_eval_off + 2 * i + 1]).collect();
            let r = scorer.rewards(m, &ix)?.detach().to_vec1::<f32>()?;
            rc.extend(r.iter().step_by(2));
            rr.extend(r.iter().skip(1).step_by(2));
        }
        Ok((rc, rr))
    };

    let mut members: Vec<RewardEncoder> = Vec::new();
    for k in 0..start.member {
        members.push(RewardEncoder::load(&state_dir.join(format!("member-{k}")), &dev, cfg.frozen)?);
    }
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    for k in start.member..cfg.members {
        let resuming = resume && k == start.member && start.epochs_done > 0;
        let m = if resuming {
            RewardEncoder::load(&state_dir.join(format!("member-{k}")), &dev, cfg.frozen)?
        } else {
            RewardEncoder::new(backbone_dir, &dev, cfg.frozen, cfg.seed + k as u64)?
        };
        let mut opt = AdamW::new(named_vars(&m), cfg.lr, cfg.weight_decay)?;
        let first_epoch = if resuming {
            let p = state_dir.join("optimizer.safetensors");
            opt.restore(&p, &load_safetensors(&p, &dev)?, start.adam_t)?;
            start.epochs_done
        } else {
            0
        };
        for epoch in first_epoch..cfg.epochs {
            // Order depends only on (seed, member, epoch), so a resumed run sees the same batches.
            let mut order: Vec<usize> = (0..train.len()).collect();
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(
                cfg.seed ^ ((k as u64) << 32) ^ (epoch as u64 + 1) * 0x9E37_79B9,
            );
            order.shuffle(&mut rng);
            let bar = progress.then(|| bar(steps_per_epoch as u64, &format!("member {k} epoch {}", epoch + 1)));
            let (mut loss_sum, mut rc_all, mut rr_all) = (0.0, Vec::new(), Vec::new());
            for (step, batch) in order.chunks(cfg.batch_size).enumerate() {
                let ix: Vec<usize> = batch.iter().flat_map(|&i| [2 * i, 2 * i + 1]).collect();
                let r = scorer.rewards(&m, &ix)?.reshape((batch.len(), 2))?;
                let (rc, rr) = (r.narrow(1, 0, 1)?.squeeze(1)?, r.narrow(1, 1, 1)?.squeeze(1)?);
                let mut loss = match cfg.loss {
                    LossKind::Bt => bradley_terry(&rc, &rr)?,
                    LossKind::Margin => {
                        let mg: Vec<f32> = batch.iter().map(|&i| train[i].margin as f32).collect();
                        margin_bt(&rc, &rr, &Tensor::from_vec(mg, batch.len(), &dev)?)?
                    }
                };
                if cfg.center_eta > 0.0 {
                    loss = (loss + centering(&rc, &rr, cfg.center_eta)?)?;
                }
                let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
                if !l.is_finite() {
                    return Err(Error::Usage(format!(
                        "loss is {l} at member {k}, epoch {}, step {}: stopping; the last good checkpoint in {} is intact",
                        epoch + 1, step + 1, state_dir.display()
                    )));
                }
                opt.step(&loss)?;
                loss_sum += l;
                rc_all.extend(rc.detach().to_vec1::<f32>()?);
                rr_all.extend(rr.detach().to_vec1::<f32>()?);
                if let Some(b) = &bar {
                    let acc = rc_all.iter().zip(&rr_all).filter(|(c, r)| c > r).count() as f64 / rc_all.len() as f64;
                    b.set_message(format!("loss {:.4} acc {:.3}", loss_sum / (step + 1) as f64, acc));
                    b.inc(1);
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear()
            }
            let s = stats(loss_sum, steps_per_epoch, &rc_all, &rr_all);
            let mut rec = serde_json::json!({"member": k, "epoch": epoch + 1, "step": opt.t});
            merge(&mut rec, "", &s);
            if !eval.is_empty() {
                let (ec, er) = eval_rewards(&m)?;
                let loss = ec.iter().zip(&er).map(|(c, r)| softplus(-(c - r) as f64)).sum::<f64>() / ec.len() as f64;
                merge(&mut rec, "eval_", &stats(loss, 1, &ec, &er));
            }
            log(rec, &mut metrics_lines)?;
            // Checkpoint: member weights first, then the state file that points at them.
            let mdir = state_dir.join(format!("member-{k}"));
            m.save(&mdir)?;
            write_atomic(&state_dir.join("optimizer.safetensors"), &safetensors_bytes(&opt.state())?)?;
            let done_member = epoch + 1 == cfg.epochs;
            let st = TrainerState {
                config: cfg.clone(),
                member: if done_member { k + 1 } else { k },
                epochs_done: if done_member { 0 } else { epoch + 1 },
                adam_t: opt.t,
                metrics_lines,
            };
            let j = serde_json::to_vec_pretty(&st).map_err(|e| Error::Usage(e.to_string()))?;
            write_atomic(&state_path, &j)?;
            epochs_run += 1;
            if stop_after == Some(epochs_run) {
                return Err(Error::Usage(format!(
                    "stopped after {epochs_run} epoch(s) as requested; continue with --resume (checkpoint in {})",
                    state_dir.display()
                )));
            }
        }
        members.push(if cfg.epochs == 0 {
            m
        } else {
            RewardEncoder::load(&state_dir.join(format!("member-{k}")), &dev, cfg.frozen)?
        });
    }

    // Temperature on the eval split, from the aggregated (mean) margins.
    let mut rm_cfg = RmConfig::new(&cfg.backbone, cfg.frozen, cfg.members);
    if !eval.is_empty() {
        let mut margins = vec![0f64; eval.len()];
        for m in &members {
            let (ec, er) = eval_rewards(m)?;
            for (i, (c, r)) in ec.iter().zip(&er).enumerate() {
                margins[i] += (c - r) as f64 / members.len() as f64;
            }
        }
        rm_cfg.temperature = fit_temperature(&margins);
    }
    let rm = RewardModel::from_members(rm_cfg, members)?;
    let model_dir = out.join("model");
    if cfg.warm {
        rm.save_warm(&model_dir)?;
        rm.save(&out.join("ensemble"))?;
        return RewardModel::load(&model_dir, &dev);
    }
    rm.save(&model_dir)?;
    Ok(rm)
}

fn softplus(x: f64) -> f64 {
    x.max(0.0) + (-x.abs()).exp().ln_1p()
}

fn merge(rec: &mut serde_json::Value, prefix: &str, s: &PairStats) {
    if let (Some(o), Ok(serde_json::Value::Object(s))) = (rec.as_object_mut(), serde_json::to_value(s)) {
        for (k, v) in s {
            o.insert(format!("{prefix}{k}"), v);
        }
    }
}

fn bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({eta})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_prefix(what.to_string());
    b
}

/// Where a trained model lives: `DIR/model` for a `train --out DIR`, else `DIR` itself.
pub fn model_path(dir: &Path) -> PathBuf {
    if !dir.join("config.json").exists() && dir.join("model").join("config.json").exists() {
        dir.join("model")
    } else {
        dir.to_path_buf()
    }
}
