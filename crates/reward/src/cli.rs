//! `mismatch rm train` / `mismatch rm eval`.

use crate::eval::evaluate;
use crate::train::{model_path, pairs_of, train, LossKind, Pair, TrainConfig};
use crate::RewardModel;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use mismatch_models::checkpoint::write_atomic;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum RmCmd {
    /// Train a reward model (or an ensemble) on preference pairs.
    Train(TrainArgs),
    /// Evaluate a reward model on preference pairs.
    Eval(EvalArgs),
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[arg(long)]
    pub data: PathBuf,
    /// Model name in the cache (e.g. minilm-l6) or a sentence-transformers directory.
    #[arg(long, default_value = "minilm-l6")]
    pub backbone: String,
    /// Train only the reward head on frozen (cached) sentence embeddings.
    #[arg(long)]
    pub frozen: bool,
    #[arg(long, value_enum, default_value = "bt")]
    pub loss: LossArg,
    #[arg(long = "ensemble", default_value_t = 1)]
    pub members: usize,
    /// Save the weight average of the members (WARM) as the model; the ensemble goes to OUT/ensemble.
    #[arg(long)]
    pub warm: bool,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Default: 1e-3 with --frozen, 2e-5 for full fine-tuning.
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction of prompts held out for eval_ metrics and temperature fitting.
    #[arg(long, default_value_t = 0.2)]
    pub eval_split: f64,
    /// η of the reward-centering regulariser (Eisenstein et al. 2023); 0 = off.
    #[arg(long, default_value_t = 0.0)]
    pub center_rewards: f64,
    /// Use only the first N pairs of the file.
    #[arg(long)]
    pub limit: Option<usize>,
    #[arg(long)]
    pub resume: bool,
    /// Stop (with exit code 2) after this many epochs of this invocation; continue with --resume.
    #[arg(long)]
    pub stop_after_epochs: Option<usize>,
    #[arg(long)]
    pub no_progress: bool,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LossArg {
    Bt,
    Margin,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A `rm train --out` directory or a reward-model directory.
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub limit: Option<usize>,
    /// Writes OUT/eval.json.
    #[arg(long)]
    pub out: PathBuf,
}

fn read_pairs(path: &Path, limit: Option<usize>) -> anyhow::Result<Vec<mismatch_data::Preference>> {
    let ds =
        mismatch_data::read_dataset(path, mismatch_data::ReadOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (mut pairs, _) = ds.records.to_pairs();
    if pairs.is_empty() {
        bail!("{}: no preference pairs", path.display());
    }
    if let Some(n) = limit {
        pairs.truncate(n);
    }
    Ok(pairs)
}

/// Splits by prompt (pairs sharing a prompt stay together): prompt groups are shuffled with
/// ChaCha8(`seed`) and the first ones filling `1 − frac` of the pairs go to training.
pub fn split_by_prompt(prefs: &[mismatch_data::Preference], frac: f64, seed: u64) -> (Vec<Pair>, Vec<Pair>) {
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for (i, p) in prefs.iter().enumerate() {
        let g = *index.entry(p.prompt.key()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let n_train = ((1.0 - frac) * prefs.len() as f64).round() as usize;
    let (mut tr, mut ev) = (Vec::new(), Vec::new());
    for g in groups {
        let dst = if tr.len() < n_train { &mut tr } else { &mut ev };
        dst.extend(g.into_iter().map(|i| prefs[i].clone()));
    }
    (pairs_of(&tr), pairs_of(&ev))
}

fn backbone_dir(name: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(name);
    if p.is_dir() {
        return Ok(p.to_path_buf());
    }
    Ok(mismatch_models::hub::model_dir(name)?)
}

pub fn run(cmd: RmCmd) -> anyhow::Result<()> {
    match cmd {
        RmCmd::Train(a) => {
            if !(0.0..1.0).contains(&a.eval_split) {
                bail!("--eval-split must be in [0, 1), got {}", a.eval_split);
            }
            let prefs = read_pairs(&a.data, a.limit)?;
            let (tr, ev) = split_by_prompt(&prefs, a.eval_split, a.seed);
            let cfg = TrainConfig {
                backbone: a.backbone.clone(),
                frozen: a.frozen,
                loss: match a.loss {
                    LossArg::Bt => LossKind::Bt,
                    LossArg::Margin => LossKind::Margin,
                },
                members: a.members,
                warm: a.warm,
                epochs: a.epochs,
                lr: a.lr.unwrap_or(if a.frozen { 1e-3 } else { 2e-5 }),
                weight_decay: a.weight_decay,
                batch_size: a.batch_size,
                seed: a.seed,
                center_eta: a.center_rewards,
            };
            let dir = backbone_dir(&a.backbone)?;
            let rm = train(&cfg, &dir, &tr, &ev, &a.out, a.resume, !a.no_progress, a.stop_after_epochs)?;
            eprintln!(
                "trained {} member(s) on {} pairs ({} held out); temperature {:.3}; model in {}",
                rm.members.len(),
                tr.len(),
                ev.len(),
                rm.config.temperature,
                a.out.join("model").display()
            );
            Ok(())
        }
        RmCmd::Eval(a) => {
            let rm = RewardModel::load(&model_path(&a.model), &candle_core::Device::Cpu)?;
            let pairs = pairs_of(&read_pairs(&a.data, a.limit)?);
            let report = evaluate(&rm, &pairs, a.seed)?;
            print!("{}", report.table());
            let path = a.out.join("eval.json");
            let json = serde_json::to_vec_pretty(&report).context("serialising the report")?;
            write_atomic(&path, &json)?;
            Ok(())
        }
    }
}
