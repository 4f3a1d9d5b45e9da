//! Reward-model training: K members (seeds `seed + k`, each with its own data order), each
//! trained with Adam on a pairwise loss, metrics logged with TRL's names, checkpointed
//! after every epoch and resumable bit-identically.
//!
//! Output directory: `model/` (the [`RewardModel`]), `metrics.jsonl`, `state/` (resume
//! point: finished and in-progress members, Adam moments, `trainer_state.json`).

use crate::calibration::fit_temperature;
use crate::head::{reward_of, HeadKind};
use crate::loss::{bradley_terry, centering, gaussian_bt, kwise, margin_bt, plackett_luce};
use crate::member::{detect, Backbone, Inputs, Member};
use crate::model::{RewardModel, RmConfig};
use candle_core::{DType, Device, Tensor};
use mismatch_eval::stats::softplus;
use mismatch_models::checkpoint::{load_safetensors, read_json, safetensors_bytes, write_atomic};
use mismatch_models::optim::AdamW;
use mismatch_models::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
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

/// Preference records as training pairs: prompts rendered with [`mismatch_data::Turns::render`],
/// completions as their plain text, a missing margin as 0.
pub fn pairs_of(prefs: &[mismatch_data::Preference]) -> Vec<Pair> {
    prefs
        .iter()
        .map(|p| Pair {
            prompt: p.prompt.render(),
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
    /// InstructGPT K-wise ([`crate::loss::kwise`]): all C(K,2) pairs of one ranking in one
    /// batch element, weighted 1/C(K,2). Needs [`Ranked`] items ([`train_ranked`]).
    Kwise,
    /// Plackett-Luce ranking likelihood ([`crate::loss::plackett_luce`]).
    Pl,
}

/// Reward-model training options. For a decoder backbone (the embedded world's tiny GPT):
///
/// ```
/// # use mismatch_reward::TrainConfig;
/// let cfg = TrainConfig { epochs: 2, batch_size: 32, lr: 1e-3, ..TrainConfig::new("/path/to/gpt-dir") };
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Backbone spec: a short name (`minilm-l6`, `smollm2-135m`), an HF-layout directory
    /// (sentence-transformers BERT, mismatch tiny GPT, Llama/Qwen2) or a `.gguf` file. Its
    /// kind (encoder or decoder) is detected from what it is ([`crate::member::detect`]).
    pub backbone: String,
    /// Train only the head on cached backbone features (a linear probe); else everything.
    pub frozen: bool,
    pub loss: LossKind,
    /// `scalar` (default) or `probabilistic` (mean + log-variance, Gaussian BT loss).
    #[serde(default)]
    pub head: HeadKind,
    /// Ensemble size K: member k uses head seed `seed + k` and its own data order; all
    /// start from the same backbone weights (so WARM's weight average is meaningful).
    pub members: usize,
    /// Save the weight average of the members as `out/model` (ensemble in `out/ensemble`).
    pub warm: bool,
    pub epochs: usize,
    /// AdamW learning rate (1e-3 suits a frozen head or the tiny GPT, 2e-5 a pretrained trunk).
    pub lr: f64,
    pub weight_decay: f64,
    pub batch_size: usize,
    pub seed: u64,
    /// η of the reward-centering term (0 disables it).
    pub center_eta: f64,
    /// Decoders: render each pair with the backbone's chat template (user: prompt,
    /// assistant: completion) instead of `prompt + "\n" + completion + EOS`.
    #[serde(default)]
    pub chat_template: bool,
    /// Inputs longer than this many tokens are cut from the left, the prompt first (TRL's
    /// `max_length`); recorded in the checkpoint, so scoring reads what training read.
    #[serde(default = "default_max_length")]
    pub max_length: usize,
    /// Fine-tuned Llama-family backbones keep only each layer's input for the backward pass
    /// and recompute the layer there (HF's `gradient_checkpointing`): activation memory of
    /// one layer instead of all, for about a third more compute. Same gradients either way.
    #[serde(default = "yes")]
    pub gradient_checkpointing: bool,
    /// Batches of inputs of similar length, less padding (HF's `group_by_length`): the
    /// shuffled order is cut into runs of 50 batches, each sorted longest first.
    #[serde(default)]
    pub group_by_length: bool,
}

/// TRL's default `max_length` for reward modelling.
pub const DEFAULT_MAX_LENGTH: usize = 512;

fn default_max_length() -> usize {
    DEFAULT_MAX_LENGTH
}

fn yes() -> bool {
    true
}

impl TrainConfig {
    /// Defaults: full fine-tune, BT loss, scalar head, one member, 1 epoch, lr 1e-3,
    /// batch 32, seed 0, no weight decay or centering, inputs of at most 512 tokens, gradient
    /// checkpointing on, no length grouping.
    pub fn new(backbone: &str) -> Self {
        Self {
            backbone: backbone.into(),
            frozen: false,
            loss: LossKind::Bt,
            head: HeadKind::Scalar,
            members: 1,
            warm: false,
            epochs: 1,
            lr: 1e-3,
            weight_decay: 0.0,
            batch_size: 32,
            seed: 0,
            center_eta: 0.0,
            chat_template: false,
            max_length: DEFAULT_MAX_LENGTH,
            gradient_checkpointing: true,
            group_by_length: false,
        }
    }

    /// The checkpoint config of a model trained with these options (`members` members).
    fn rm_config(&self, members: usize) -> RmConfig {
        RmConfig {
            chat_template: self.chat_template,
            max_length: Some(self.max_length),
            ..RmConfig::new(&self.backbone, self.frozen, members)
        }
    }
}

/// A ranking of K ≥ 2 completions of one prompt, best first (for the K-wise losses).
#[derive(Debug, Clone, PartialEq)]
pub struct Ranked {
    pub prompt: String,
    pub completions: Vec<String>,
}

/// Converts data-crate rankings (order = indices best first) to [`Ranked`].
pub fn ranked_of(r: &[mismatch_data::Ranking]) -> Vec<Ranked> {
    r.iter()
        .map(|x| Ranked {
            prompt: x.prompt.render(),
            completions: x.order.iter().map(|&i| x.completions[i].text()).collect(),
        })
        .collect()
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

/// Head outputs `[n, out]` of `idx`: from cached features when frozen, else a forward pass.
fn outputs(m: &Member, cache: &Option<Tensor>, inputs: &Inputs, idx: &[usize]) -> Result<Tensor> {
    match cache {
        Some(f) => {
            let ix = Tensor::from_vec(idx.iter().map(|&i| i as u32).collect::<Vec<_>>(), idx.len(), f.device())?;
            m.head().forward(&f.index_select(&ix, 0)?)
        }
        None => m.forward(inputs, idx),
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
/// split long runs into chunks. `backbone_dir` is where `cfg.backbone` resolved to.
#[allow(clippy::too_many_arguments)]
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
    let items = items_of_pairs(train);
    run(cfg, backbone_dir, &items, eval, Some(Disk { out, resume, stop_after }), progress)
}

/// [`train`] on K-wise rankings (losses `kwise` or `pl`; `bt`/`margin` use the rankings' pairs).
#[allow(clippy::too_many_arguments)]
pub fn train_ranked(
    cfg: &TrainConfig,
    backbone_dir: &Path,
    train: &[Ranked],
    eval: &[Pair],
    out: &Path,
    resume: bool,
    progress: bool,
    stop_after: Option<usize>,
) -> Result<RewardModel> {
    let items: Vec<Item> = match cfg.loss {
        LossKind::Kwise | LossKind::Pl => train
            .iter()
            .map(|r| Item {
                prompt: &r.prompt,
                completions: r.completions.iter().map(|c| c.as_str()).collect(),
                margin: 0.0,
            })
            .collect(),
        LossKind::Bt | LossKind::Margin => train
            .iter()
            .flat_map(|r| {
                (0..r.completions.len()).flat_map(move |a| {
                    (a + 1..r.completions.len()).map(move |b| Item {
                        prompt: &r.prompt,
                        completions: vec![&r.completions[a], &r.completions[b]],
                        margin: 0.0,
                    })
                })
            })
            .collect(),
    };
    run(cfg, backbone_dir, &items, eval, Some(Disk { out, resume, stop_after }), progress)
}

/// [`train`] without touching the disk: no metrics file, no checkpoints, no resume. For
/// in-process callers (the embedded world) that train many small RMs. `cfg.backbone` is
/// resolved here. Bit-identical to [`train`] with the same config and data.
pub fn train_in_memory(cfg: &TrainConfig, train: &[Pair], eval: &[Pair], progress: bool) -> Result<RewardModel> {
    let (_, dir) = detect(&cfg.backbone)?;
    run(cfg, &dir, &items_of_pairs(train), eval, None, progress)
}

struct Disk<'a> {
    out: &'a Path,
    resume: bool,
    stop_after: Option<usize>,
}

/// One training example: K ≥ 2 completions of a prompt, best first.
struct Item<'a> {
    prompt: &'a str,
    completions: Vec<&'a str>,
    margin: f64,
}

fn items_of_pairs(p: &[Pair]) -> Vec<Item<'_>> {
    p.iter().map(|p| Item { prompt: &p.prompt, completions: vec![&p.chosen, &p.rejected], margin: p.margin }).collect()
}

/// The training loss of one batch: `out` are head outputs `[Σ K_i, out]` of the batch's items
/// laid out item after item.
fn batch_loss(cfg: &TrainConfig, items: &[&Item], out: &Tensor, dev: &Device) -> Result<Tensor> {
    let n = items.len();
    let k = items[0].completions.len();
    if items.iter().all(|i| i.completions.len() == 2) && matches!(cfg.loss, LossKind::Bt | LossKind::Margin) {
        let r = reward_of(out)?.reshape((n, 2))?;
        let (rc, rr) = (r.narrow(1, 0, 1)?.squeeze(1)?, r.narrow(1, 1, 1)?.squeeze(1)?);
        let mut loss = match (cfg.head, cfg.loss) {
            (HeadKind::Probabilistic, LossKind::Bt) => {
                let lv = out.narrow(1, 1, 1)?.squeeze(1)?.reshape((n, 2))?;
                gaussian_bt(&rc, &lv.narrow(1, 0, 1)?.squeeze(1)?, &rr, &lv.narrow(1, 1, 1)?.squeeze(1)?)?
            }
            (HeadKind::Probabilistic, _) => {
                return Err(Error::Usage("the probabilistic head trains with --loss bt only".into()))
            }
            (_, LossKind::Margin) => {
                let mg: Vec<f32> = items.iter().map(|i| i.margin as f32).collect();
                margin_bt(&rc, &rr, &Tensor::from_vec(mg, n, dev)?)?
            }
            _ => bradley_terry(&rc, &rr)?,
        };
        if cfg.center_eta > 0.0 {
            loss = (loss + centering(&rc, &rr, cfg.center_eta)?)?;
        }
        return Ok(loss);
    }
    if cfg.head == HeadKind::Probabilistic {
        return Err(Error::Usage("the probabilistic head trains with --loss bt only".into()));
    }
    // Rankings: group rows by K (a batch may mix sizes), each group weighted by its share.
    let r = reward_of(out)?;
    let mut total: Option<Tensor> = None;
    let mut off = 0usize;
    let mut offsets = Vec::with_capacity(n);
    for it in items {
        offsets.push(off);
        off += it.completions.len();
    }
    let mut sizes: Vec<usize> = items.iter().map(|i| i.completions.len()).collect();
    sizes.sort();
    sizes.dedup();
    let _ = k;
    for kk in sizes {
        let rows: Vec<u32> = items
            .iter()
            .zip(&offsets)
            .filter(|(i, _)| i.completions.len() == kk)
            .flat_map(|(_, &o)| (o..o + kk).map(|x| x as u32))
            .collect();
        let m = rows.len() / kk;
        let g = r.index_select(&Tensor::from_vec(rows, m * kk, dev)?, 0)?.reshape((m, kk))?;
        let l = match cfg.loss {
            LossKind::Pl => plackett_luce(&g)?,
            _ => kwise(&g)?,
        };
        let l = (l * (m as f64 / n as f64))?;
        total = Some(match total {
            None => l,
            Some(t) => (t + l)?,
        });
    }
    Ok(total.expect("non-empty batch"))
}

/// How far a run got and where it keeps its state: `out/state` and `out/metrics.jsonl` on
/// disk, nothing in memory.
struct RunLog {
    /// The point to start from: the checkpoint's with `resume`, else the beginning.
    start: TrainerState,
    state_dir: Option<PathBuf>,
    metrics_path: Option<PathBuf>,
    metrics_lines: usize,
}

impl RunLog {
    /// A fresh run (an empty metrics.jsonl) or, with `resume`, the checkpoint in `out/state`,
    /// whose config must match; the metrics are cut back to the lines it had written.
    fn open(cfg: &TrainConfig, disk: Option<&Disk>) -> Result<Self> {
        let mut start = TrainerState { config: cfg.clone(), member: 0, epochs_done: 0, adam_t: 0, metrics_lines: 0 };
        let (state_dir, metrics_path) = match disk {
            Some(d) => (Some(d.out.join("state")), Some(d.out.join("metrics.jsonl"))),
            None => (None, None),
        };
        if let (Some(d), Some(sd), Some(mp)) = (disk, &state_dir, &metrics_path) {
            let state_path = sd.join("trainer_state.json");
            if d.resume {
                if !state_path.exists() {
                    return Err(Error::invalid(&state_path, "--resume: no checkpoint to resume from"));
                }
                start = read_json(&state_path)?;
                if start.config != *cfg {
                    return Err(Error::invalid(
                        &state_path,
                        "--resume: the checkpoint was trained with different options",
                    ));
                }
                let text = std::fs::read_to_string(mp).map_err(|e| Error::io(mp, e))?;
                let kept: String = text.lines().take(start.metrics_lines).map(|l| format!("{l}\n")).collect();
                write_atomic(mp, kept.as_bytes())?;
            } else {
                std::fs::create_dir_all(d.out).map_err(|e| Error::io(d.out, e))?;
                write_atomic(mp, b"")?;
            }
        }
        let metrics_lines = start.metrics_lines;
        Ok(Self { start, state_dir, metrics_path, metrics_lines })
    }

    /// Appends one record to metrics.jsonl (on disk only).
    fn append(&mut self, v: serde_json::Value) -> Result<()> {
        let Some(mp) = &self.metrics_path else { return Ok(()) };
        let mut f = std::fs::OpenOptions::new().append(true).open(mp).map_err(|e| Error::io(mp, e))?;
        writeln!(f, "{v}").map_err(|e| Error::io(mp, e))?;
        self.metrics_lines += 1;
        Ok(())
    }

    fn member_dir(&self, k: usize) -> Option<PathBuf> {
        self.state_dir.as_ref().map(|s| s.join(format!("member-{k}")))
    }

    /// Checkpoint after member `k`'s epoch `epoch` (0-based): member weights first, then the
    /// state file that points at them (on disk only).
    fn checkpoint(&self, cfg: &TrainConfig, k: usize, epoch: usize, m: &Member, opt: &AdamW) -> Result<()> {
        let Some(sd) = &self.state_dir else { return Ok(()) };
        m.save(&sd.join(format!("member-{k}")))?;
        write_atomic(&sd.join("optimizer.safetensors"), &safetensors_bytes(&opt.state()?)?)?;
        let done_member = epoch + 1 == cfg.epochs;
        let st = TrainerState {
            config: cfg.clone(),
            member: if done_member { k + 1 } else { k },
            epochs_done: if done_member { 0 } else { epoch + 1 },
            adam_t: opt.t,
            metrics_lines: self.metrics_lines,
        };
        let j = serde_json::to_vec_pretty(&st).map_err(|e| Error::Usage(e.to_string()))?;
        write_atomic(&sd.join("trainer_state.json"), &j)
    }
}

/// What every member trains and is evaluated on, tokenised once: the training items'
/// completions in order (item `i`'s from `offsets[i]`), then each eval pair's chosen and
/// rejected from `n_eval_off`; with a frozen backbone, also their features.
struct Encoded {
    inputs: Inputs,
    offsets: Vec<usize>,
    n_eval_off: usize,
    cache: Option<Tensor>,
}

impl Encoded {
    /// Tokenises through a one-member model on `probe` and, when frozen, computes each
    /// input's features once (the frozen backbone's features never change).
    fn new(cfg: &TrainConfig, probe: &Backbone, train: &[Item], eval: &[Pair], progress: bool) -> Result<Self> {
        let proto_member = probe.clone().member(cfg.head, 0, true)?;
        let proto = RewardModel::from_members(cfg.rm_config(1), vec![proto_member])?;
        let mut offsets = Vec::with_capacity(train.len());
        let (mut prompts, mut comps): (Vec<&str>, Vec<&str>) = (Vec::new(), Vec::new());
        for it in train {
            offsets.push(prompts.len());
            for c in &it.completions {
                prompts.push(it.prompt);
                comps.push(c);
            }
        }
        let n_eval_off = prompts.len();
        for p in eval {
            prompts.extend([p.prompt.as_str(), p.prompt.as_str()]);
            comps.extend([p.chosen.as_str(), p.rejected.as_str()]);
        }
        let inputs = proto.prepare(&prompts, &comps)?;
        let cache = if cfg.frozen {
            let bar = progress.then(|| bar(inputs.len() as u64, "features"));
            let mut feats = Vec::new();
            let all: Vec<usize> = (0..inputs.len()).collect();
            for chunk in all.chunks(64) {
                feats.push(proto.members[0].features(&inputs, chunk)?.detach());
                if let Some(b) = &bar {
                    b.inc(chunk.len() as u64)
                }
            }
            if let Some(b) = bar {
                b.finish_and_clear()
            }
            Some(Tensor::cat(&feats, 0)?)
        } else {
            None
        };
        Ok(Self { inputs, offsets, n_eval_off, cache })
    }

    /// Member `m`'s rewards of the `n_eval` eval pairs' chosen and rejected completions.
    fn eval_rewards(&self, m: &Member, n_eval: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let (mut rc, mut rr) = (Vec::new(), Vec::new());
        for chunk in (0..n_eval).collect::<Vec<_>>().chunks(64) {
            let ix: Vec<usize> =
                chunk.iter().flat_map(|&i| [self.n_eval_off + 2 * i, self.n_eval_off + 2 * i + 1]).collect();
            let r = reward_of(&outputs(m, &self.cache, &self.inputs, &ix)?)?.detach().to_vec1::<f32>()?;
            rc.extend(r.iter().step_by(2));
            rr.extend(r.iter().skip(1).step_by(2));
        }
        Ok((rc, rr))
    }
}

fn run(
    cfg: &TrainConfig,
    backbone_dir: &Path,
    train: &[Item],
    eval: &[Pair],
    disk: Option<Disk>,
    progress: bool,
) -> Result<RewardModel> {
    if train.is_empty() {
        return Err(Error::Usage("no training pairs".into()));
    }
    if cfg.members == 0 || cfg.batch_size == 0 || !(cfg.lr > 0.0) {
        return Err(Error::Usage("--ensemble, --batch-size and --lr must be positive".into()));
    }
    if cfg.max_length == 0 {
        return Err(Error::Usage("--max-length must be at least 1".into()));
    }
    let dev = Device::Cpu;
    let (kind, _) = detect(backbone_dir.to_str().ok_or_else(|| Error::invalid(backbone_dir, "path is not UTF-8"))?)?;
    let mut log = RunLog::open(cfg, disk.as_ref())?;
    let start = log.start.clone();
    let resume = disk.as_ref().is_some_and(|d| d.resume);
    let mut epochs_run = 0usize;

    let mut proto_backbone = Some(Backbone::load(kind, backbone_dir, &dev, cfg.frozen)?);
    let enc = Encoded::new(cfg, proto_backbone.as_ref().expect("just loaded"), train, eval, progress)?;
    // Frozen members share one backbone; fine-tuned ones each load their own copy.
    let fresh_backbone = |proto: &mut Option<Backbone>| -> Result<Backbone> {
        match proto {
            Some(b) if cfg.frozen => Ok(b.clone()),
            _ => match proto.take() {
                Some(b) => Ok(b),
                None => Backbone::load(kind, backbone_dir, &dev, cfg.frozen),
            },
        }
    };
    let load_member = |dir: &Path, proto: &Option<Backbone>| -> Result<Member> {
        let shared = if cfg.frozen { proto.clone() } else { None };
        Member::load(kind, cfg.head, dir, &dev, cfg.frozen, shared)
    };

    let mut members: Vec<Member> = Vec::new();
    for k in 0..start.member {
        members.push(load_member(&log.member_dir(k).expect("resume implies disk"), &proto_backbone)?);
    }
    for k in start.member..cfg.members {
        let resuming = resume && k == start.member && start.epochs_done > 0;
        let m = if resuming {
            load_member(&log.member_dir(k).expect("resume implies disk"), &proto_backbone)?
        } else {
            fresh_backbone(&mut proto_backbone)?.member(
                cfg.head,
                mismatch_models::seed::offset(cfg.seed, k as u64),
                cfg.frozen,
            )?
        };
        let m = m.with_recompute(cfg.gradient_checkpointing && !cfg.frozen);
        let mut opt = AdamW::new(m.named_vars(), cfg.lr, cfg.weight_decay)?;
        let first_epoch = if resuming {
            let p = log.state_dir.as_ref().expect("disk").join("optimizer.safetensors");
            opt.restore(&p, &load_safetensors(&p, &dev)?, start.adam_t)?;
            start.epochs_done
        } else {
            0
        };
        for epoch in first_epoch..cfg.epochs {
            let rec = train_epoch(cfg, k, epoch, &m, &mut opt, train, &enc, eval, log.state_dir.as_deref(), progress)?;
            log.append(rec)?;
            log.checkpoint(cfg, k, epoch, &m, &opt)?;
            epochs_run += 1;
            if let Some(d) = &disk {
                if d.stop_after == Some(epochs_run) {
                    return Err(Error::Usage(format!(
                        "stopped after {epochs_run} epoch(s) as requested; continue with --resume (checkpoint in {})",
                        log.state_dir.as_ref().expect("disk").display()
                    )));
                }
            }
        }
        members.push(m);
    }
    assemble(cfg, members, &enc, eval, disk.as_ref(), &dev)
}

/// Member `k`'s epoch `epoch` (0-based) and its metrics record: the batches' loss and pairwise
/// statistics, then the same on the eval pairs. The order depends only on (seed, member,
/// epoch), so a resumed run sees the same batches. A non-finite loss stops the run before its
/// update; `state_dir` is named as holding the last good checkpoint.
#[allow(clippy::too_many_arguments)]
fn train_epoch(
    cfg: &TrainConfig,
    k: usize,
    epoch: usize,
    m: &Member,
    opt: &mut AdamW,
    train: &[Item],
    enc: &Encoded,
    eval: &[Pair],
    state_dir: Option<&Path>,
    progress: bool,
) -> Result<serde_json::Value> {
    let dev = Device::Cpu;
    let steps_per_epoch = train.len().div_ceil(cfg.batch_size);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng =
        rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ ((k as u64) << 32) ^ ((epoch as u64 + 1) * 0x9E37_79B9));
    order.shuffle(&mut rng);
    if cfg.group_by_length {
        let len = |i: usize| (0..train[i].completions.len()).map(|j| enc.inputs.len_of(enc.offsets[i] + j)).max();
        for run in order.chunks_mut(50 * cfg.batch_size) {
            run.sort_by_key(|&i| std::cmp::Reverse(len(i)));
        }
    }
    let bar = progress.then(|| bar(steps_per_epoch as u64, &format!("member {k} epoch {}", epoch + 1)));
    let (mut loss_sum, mut rc_all, mut rr_all) = (0.0, Vec::new(), Vec::new());
    for (step, batch) in order.chunks(cfg.batch_size).enumerate() {
        let ix: Vec<usize> =
            batch.iter().flat_map(|&i| enc.offsets[i]..enc.offsets[i] + train[i].completions.len()).collect();
        let out = outputs(m, &enc.cache, &enc.inputs, &ix)?;
        let its: Vec<&Item> = batch.iter().map(|&i| &train[i]).collect();
        let loss = batch_loss(cfg, &its, &out, &dev)?;
        let l = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !l.is_finite() {
            let where_ = state_dir.map_or("memory".to_string(), |s| s.display().to_string());
            return Err(Error::Usage(format!(
                "loss is {l} at member {k}, epoch {}, step {}: stopping; the last good checkpoint in {where_} is intact",
                epoch + 1,
                step + 1
            )));
        }
        opt.step(&loss)?;
        loss_sum += l;
        // Pairwise stats on (best, worst) of each item.
        let r = reward_of(&out)?.detach().to_vec1::<f32>()?;
        let mut o = 0;
        for it in &its {
            rc_all.push(r[o]);
            rr_all.push(r[o + it.completions.len() - 1]);
            o += it.completions.len();
        }
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
        let (ec, er) = enc.eval_rewards(m, eval.len())?;
        let loss = ec.iter().zip(&er).map(|(c, r)| softplus(-(c - r) as f64)).sum::<f64>() / ec.len() as f64;
        merge(&mut rec, "eval_", &stats(loss, 1, &ec, &er));
    }
    Ok(rec)
}

/// The trained members as one model: its temperature fitted on the eval split from the
/// aggregated (mean) margins, saved to `out/model` (with `warm`, in the warm form and reloaded
/// from it, the ensemble also in `out/ensemble`); in memory, returned as is unless `warm`.
fn assemble(
    cfg: &TrainConfig,
    members: Vec<Member>,
    enc: &Encoded,
    eval: &[Pair],
    disk: Option<&Disk>,
    dev: &Device,
) -> Result<RewardModel> {
    let mut rm_cfg = cfg.rm_config(cfg.members);
    if !eval.is_empty() {
        let mut margins = vec![0f64; eval.len()];
        for m in &members {
            let (ec, er) = enc.eval_rewards(m, eval.len())?;
            for (i, (c, r)) in ec.iter().zip(&er).enumerate() {
                margins[i] += (c - r) as f64 / members.len() as f64;
            }
        }
        rm_cfg.temperature = fit_temperature(&margins);
    }
    let rm = RewardModel::from_members(rm_cfg, members)?;
    let (model_dir, _tmp) = match disk {
        Some(d) => (d.out.join("model"), None),
        None if cfg.warm => {
            let t = tempfile::tempdir().map_err(|e| Error::io(Path::new("."), e))?;
            (t.path().join("model"), Some(t))
        }
        None => return Ok(rm),
    };
    if cfg.warm {
        rm.save_warm(&model_dir)?;
        if let Some(d) = disk {
            rm.save(&d.out.join("ensemble"))?;
        }
        return RewardModel::load(&model_dir, dev);
    }
    rm.save(&model_dir)?;
    Ok(rm)
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
