//! `mismatch rm train` / `mismatch rm eval`.

use crate::eval::evaluate_subsets;
use crate::head::HeadKind;
use crate::train::{model_path, pairs_of, ranked_of, train, train_ranked, LossKind, Pair, Ranked, TrainConfig};
use crate::RewardModel;
use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use mismatch_models::checkpoint::write_atomic;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::member::detect;

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
    /// Short name (minilm-l6, smollm2-135m), an HF-layout directory (sentence-transformers
    /// BERT, mismatch tiny GPT, Llama/Qwen2) or a .gguf file. Encoders read
    /// "prompt [SEP] completion"; decoders read prompt + "\n" + completion + EOS and are
    /// scored at the last token.
    #[arg(long, default_value = "minilm-l6")]
    pub backbone: String,
    /// Train only the reward head on frozen (cached) backbone features.
    #[arg(long)]
    pub frozen: bool,
    /// bt, margin (Llama 2), kwise (InstructGPT all-pairs; ranking data), pl (Plackett-Luce; ranking data).
    #[arg(long, value_enum, default_value = "bt")]
    pub loss: LossArg,
    /// scalar, or probabilistic (mean + log-variance, Gaussian BT likelihood; --loss bt).
    #[arg(long, value_enum, default_value = "scalar")]
    pub head: HeadArg,
    /// Decoder backbones: render pairs with the model's chat template (user: prompt, assistant: completion).
    #[arg(long)]
    pub chat_template: bool,
    #[arg(long = "ensemble", default_value_t = 1)]
    pub members: usize,
    /// How the ensemble's member rewards are combined when it scores (recorded in its
    /// config.json, read by `policy train --reward rm:DIR` and `rm eval`): mean, wco
    /// (worst case: the minimum) or uwo (mean − λ·variance). wco and uwo need --ensemble ≥ 2.
    #[arg(long, value_enum, default_value = "mean")]
    pub aggregate: AggregateArg,
    /// λ of --aggregate uwo.
    #[arg(long)]
    pub uwo_lambda: Option<f64>,
    /// Save the weight average of the members (WARM) as the model; the ensemble goes to OUT/ensemble.
    #[arg(long)]
    pub warm: bool,
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Default: 1e-3 with --frozen or a tiny GPT backbone, 2e-5 for fine-tuning a pretrained trunk.
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = 32)]
    pub batch_size: usize,
    /// Inputs longer than this many tokens are cut from the left, the prompt first (TRL's
    /// max_length); recorded in the model, so `rm eval` and scoring read the same.
    #[arg(long, default_value_t = crate::train::DEFAULT_MAX_LENGTH)]
    pub max_length: usize,
    /// Fine-tuned Llama/Qwen2 backbones recompute each layer in the backward pass instead of
    /// keeping its activations (same gradients, a third more compute, a fraction of the memory).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub gradient_checkpointing: bool,
    /// Batch inputs of similar length together (less padding), as HF's group_by_length.
    #[arg(long)]
    pub group_by_length: bool,
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
    Kwise,
    Pl,
}

#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum)]
pub enum AggregateArg {
    Mean,
    Wco,
    Uwo,
}

impl AggregateArg {
    fn name(self) -> &'static str {
        match self {
            AggregateArg::Mean => "mean",
            AggregateArg::Wco => "wco",
            AggregateArg::Uwo => "uwo",
        }
    }
}

/// Refuses --aggregate / --uwo-lambda settings that would not mean anything.
fn check_aggregate(a: &TrainArgs) -> anyhow::Result<()> {
    if a.aggregate != AggregateArg::Mean && a.members < 2 {
        bail!(
            "--aggregate {} needs an ensemble (--ensemble K with K ≥ 2), got --ensemble {}",
            a.aggregate.name(),
            a.members
        );
    }
    if let Some(l) = a.uwo_lambda {
        if a.aggregate != AggregateArg::Uwo {
            bail!("--uwo-lambda applies only to --aggregate uwo (got --aggregate {})", a.aggregate.name());
        }
        if !(l >= 0.0 && l.is_finite()) {
            bail!("--uwo-lambda must be a finite number ≥ 0, got {l}");
        }
    }
    Ok(())
}

/// Records the aggregate in the ensemble directory's config.json (`OUT/model`, or
/// `OUT/ensemble` with --warm, whose `OUT/model` is a single averaged member).
fn record_aggregate(a: &TrainArgs) -> anyhow::Result<()> {
    if a.aggregate == AggregateArg::Mean && a.uwo_lambda.is_none() {
        return Ok(());
    }
    let dir = a.out.join(if a.warm { "ensemble" } else { "model" });
    let path = dir.join("config.json");
    let mut cfg: crate::model::RmConfig = mismatch_models::checkpoint::read_json(&path)?;
    cfg.aggregate = a.aggregate.name().into();
    if let Some(l) = a.uwo_lambda {
        cfg.uwo_lambda = l;
    }
    let bytes = serde_json::to_vec_pretty(&cfg).context("serialising the config")?;
    write_atomic(&path, &bytes)?;
    Ok(())
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HeadArg {
    Scalar,
    Probabilistic,
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
    /// Read inputs of at most this many tokens (default: what the model was trained with).
    #[arg(long)]
    pub max_length: Option<usize>,
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

/// Pairs and, when the records carry a string `subset` field (RewardBench's
/// `filtered.json` does), each pair's subset. Records without one get `"(none)"`.
fn read_pairs_subsets(
    path: &Path,
    limit: Option<usize>,
) -> anyhow::Result<(Vec<mismatch_data::Preference>, Option<Vec<String>>)> {
    let ds =
        mismatch_data::read_dataset(path, mismatch_data::ReadOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Raw records line up one-to-one with pair records (both in file order).
    let subsets: Option<Vec<String>> = match &ds.records {
        mismatch_data::Records::Pairs(p) if p.len() == ds.raw.len() => {
            let s: Vec<Option<&str>> = ds.raw.iter().map(|(_, v)| v.get("subset").and_then(|x| x.as_str())).collect();
            s.iter().any(|x| x.is_some()).then(|| s.iter().map(|x| x.unwrap_or("(none)").to_string()).collect())
        }
        _ => None,
    };
    let (mut pairs, _) = ds.records.to_pairs();
    if pairs.is_empty() {
        bail!("{}: no preference pairs", path.display());
    }
    let mut subsets = subsets;
    if let Some(n) = limit {
        pairs.truncate(n);
        if let Some(s) = &mut subsets {
            s.truncate(n);
        }
    }
    Ok((pairs, subsets))
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

/// A mismatch tiny GPT (small, trained from scratch: tolerates a large learning rate).
fn from_scratch(dir: &Path) -> bool {
    mismatch_models::checkpoint::read_json::<serde_json::Value>(&dir.join("config.json"))
        .is_ok_and(|c| c["model_type"] == "mismatch-gpt")
}

/// Splits rankings by prompt like [`split_by_prompt`]; training keeps whole rankings, the
/// eval split is turned into its implied pairs.
pub fn split_rankings(r: &[mismatch_data::Ranking], frac: f64, seed: u64) -> (Vec<Ranked>, Vec<Pair>) {
    let mut idx: Vec<usize> = (0..r.len()).collect();
    idx.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let n_train = ((1.0 - frac) * r.len() as f64).round() as usize;
    let (mut tr, mut ev) = (Vec::new(), Vec::new());
    let mut seen: HashMap<String, bool> = HashMap::new();
    for i in idx {
        let key = r[i].prompt.key();
        let to_train = *seen.entry(key).or_insert(tr.len() < n_train);
        if to_train {
            tr.push(r[i].clone());
        } else {
            ev.push(r[i].clone());
        }
    }
    let ev_pairs: Vec<mismatch_data::Preference> = ev.iter().flat_map(|x| x.pairs()).collect();
    (ranked_of(&tr), pairs_of(&ev_pairs))
}

pub fn run(cmd: RmCmd) -> anyhow::Result<()> {
    match cmd {
        RmCmd::Train(a) => {
            if !(0.0..1.0).contains(&a.eval_split) {
                bail!("--eval-split must be in [0, 1), got {}", a.eval_split);
            }
            check_aggregate(&a)?;
            let (_, dir) = detect(&a.backbone)?;
            let cfg = TrainConfig {
                backbone: a.backbone.clone(),
                frozen: a.frozen,
                loss: match a.loss {
                    LossArg::Bt => LossKind::Bt,
                    LossArg::Margin => LossKind::Margin,
                    LossArg::Kwise => LossKind::Kwise,
                    LossArg::Pl => LossKind::Pl,
                },
                head: match a.head {
                    HeadArg::Scalar => HeadKind::Scalar,
                    HeadArg::Probabilistic => HeadKind::Probabilistic,
                },
                members: a.members,
                warm: a.warm,
                epochs: a.epochs,
                lr: a.lr.unwrap_or(if a.frozen || from_scratch(&dir) { 1e-3 } else { 2e-5 }),
                weight_decay: a.weight_decay,
                batch_size: a.batch_size,
                seed: a.seed,
                center_eta: a.center_rewards,
                chat_template: a.chat_template,
                max_length: a.max_length,
                gradient_checkpointing: a.gradient_checkpointing,
                group_by_length: a.group_by_length,
            };
            let (rm, n_train, n_eval) = if matches!(a.loss, LossArg::Kwise | LossArg::Pl) {
                let ds = mismatch_data::read_dataset(&a.data, mismatch_data::ReadOptions::default())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let mismatch_data::Records::Rankings(mut r) = ds.records else {
                    bail!(
                        "{}: --loss {:?} needs ranking records (prompt, completions[], ranking[])",
                        a.data.display(),
                        a.loss
                    );
                };
                if let Some(n) = a.limit {
                    r.truncate(n);
                }
                let (tr, ev) = split_rankings(&r, a.eval_split, a.seed);
                let rm = train_ranked(&cfg, &dir, &tr, &ev, &a.out, a.resume, !a.no_progress, a.stop_after_epochs)?;
                (rm, tr.len(), ev.len())
            } else {
                let prefs = read_pairs(&a.data, a.limit)?;
                let (tr, ev) = split_by_prompt(&prefs, a.eval_split, a.seed);
                let rm = train(&cfg, &dir, &tr, &ev, &a.out, a.resume, !a.no_progress, a.stop_after_epochs)?;
                (rm, tr.len(), ev.len())
            };
            record_aggregate(&a)?;
            eprintln!(
                "trained {} member(s) on {} training items ({} pairs held out); temperature {:.3}; model in {}",
                rm.members.len(),
                n_train,
                n_eval,
                rm.config.temperature,
                a.out.join("model").display()
            );
            Ok(())
        }
        RmCmd::Eval(a) => {
            let mut rm = RewardModel::load(&model_path(&a.model), &candle_core::Device::Cpu)?;
            if let Some(n) = a.max_length {
                if n == 0 {
                    bail!("--max-length must be at least 1");
                }
                rm = rm.with_max_length(n)?;
            }
            let (prefs, subsets) = read_pairs_subsets(&a.data, a.limit)?;
            let pairs = pairs_of(&prefs);
            let report = evaluate_subsets(&rm, &pairs, subsets.as_deref(), a.seed)?;
            print!("{}", report.table());
            let path = a.out.join("eval.json");
            let json = serde_json::to_vec_pretty(&report).context("serialising the report")?;
            write_atomic(&path, &json)?;
            Ok(())
        }
    }
}
