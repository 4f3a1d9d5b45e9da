//! `mismatch run`: Gao et al. (2022)'s over-optimisation experiment, one pipeline for every
//! setting.
//!
//! Per seed: the setting prepares its start policy, the labelled pairs the proxies learn from
//! and its evaluation prompts ([`Setting::seed`]); proxy RMs are trained at every data size
//! (K members → single, mean, WCO, UWO, WARM) and evaluated on held-out pairs; best-of-n runs
//! from one pool of start-policy samples per evaluation prompt; RLOO runs against the single
//! proxy at every KL coefficient and against the mitigations at the first one; DPO runs on the
//! proxies' pairs; value-guided decoding (RAD, blockwise controlled decoding) steers the start
//! policy with the single proxy ([`crate::guided`]). Every policy is evaluated on the same prompts (proxy, gold, KL to the start
//! policy, failure meters) by the setting. Seeds run on a few threads; each seed's work depends
//! only on its seed, so results do not depend on scheduling.
//!
//! Settings: the embedded world with its known gold reward ([`crate::embedded`]), and real
//! models with human labels and a gold RM ([`crate::real`]).

use crate::bon::{self, BonCurve, Pool};
use crate::config::RunConfig;
use crate::guided::{GuidedCurve, GuidedPoint};
use crate::optimise::{train_and_evaluate, RunLog};
use crate::proxy::{train_ensemble, Ensemble, LabelledPair, RmKind};
pub use crate::real::judge::JudgeRecord;
use crate::sample::EvalPoint;
use mismatch_eval::rank::pearson;
use mismatch_eval::rm;
use mismatch_models::{Error, Result};
use mismatch_policy::guided::Guide;
use mismatch_policy::train::{PolicyConfig, TrainData};
use mismatch_policy::Reward;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The five proxies built from one ensemble, in the order every table lists them.
pub const KINDS: [RmKind; 5] = [RmKind::Single, RmKind::Mean, RmKind::Wco, RmKind::Uwo, RmKind::Warm];

/// An experiment setting: what is optimised, what gold is, and how a policy is measured.
pub trait Setting: Sync {
    /// Prepares one seed: its start policy, the proxies' training pairs and the evaluation set.
    fn seed<'a>(
        &'a self,
        cfg: &'a RunConfig,
        seed: u64,
        multi: &indicatif::MultiProgress,
        progress: bool,
    ) -> Result<Box<dyn SeedSetting + 'a>>;
}

/// One seed of a [`Setting`].
pub trait SeedSetting {
    /// The proxies' training pairs at the largest data size.
    fn rm_pairs(&self) -> &[LabelledPair];
    /// The reward-model backbone spec.
    fn rm_backbone(&self) -> &str;
    /// Start-policy samples (prompt, completion) every RM is standardised on.
    fn standardise_on(&self) -> &[(String, String)];
    /// The held-out evaluation of every proxy kind ([`KINDS`]) of `ens`, trained on `size` pairs.
    fn evaluate_rms(&self, ens: &Ensemble, size: usize) -> Result<Vec<RmEval>>;
    /// How far the labels the proxies learn from agree with gold (the annotator ceiling).
    fn annotator_acc_gold(&self) -> Result<f64>;
    /// The best-of-n pool: `n_max` start-policy samples per best-of-n prompt, with gold scores.
    fn bon_pool(&self, seed: u64) -> Result<Pool>;
    /// `reward` as it must see this setting's prompts (real RMs read a rendered user turn).
    fn as_seen<'r>(&self, reward: &'r dyn Reward) -> Box<dyn Reward + 'r>;
    /// Gold as a reward, for the best-of-n gold curve.
    fn gold(&self) -> Box<dyn Reward + '_>;
    /// `n` RL training prompts drawn with `seed`.
    fn rl_prompts(&self, n: usize, seed: u64) -> Vec<String>;
    /// The preference data DPO trains on (and its held-out pairs).
    fn dpo_data(&self) -> Result<TrainData>;
    /// The trainer's config for this setting (e.g. the chat template).
    fn policy_config(&self, base: PolicyConfig) -> PolicyConfig;
    /// The start policy's model spec (what the trainer starts from).
    fn start_spec(&self) -> &str;
    /// Evaluates the policy at `checkpoint` (the start policy when None) on the evaluation
    /// prompts with `proxy` and gold; `step` labels the point.
    fn evaluate(&self, checkpoint: Option<&Path>, proxy: &dyn Reward, seed: u64, step: usize) -> Result<EvalPoint>;
    /// The start policy decoded with `guide` steered by `proxy` (as seen, [`Self::as_seen`]) on
    /// the first `guided.prompts` evaluation prompts, measured by that proxy and gold ([`crate::guided::measure`]).
    fn guided(&self, guide: Guide, proxy: &dyn Reward, seed: u64) -> Result<GuidedPoint>;
    /// When gold is a judge: what it judged in this seed so far.
    fn judge(&self) -> Option<JudgeRecord> {
        None
    }
}

/// One reward model's evaluation on held-out pairs of one seed.
#[derive(Debug, Clone, Serialize)]
pub struct RmEval {
    pub name: String,
    pub kind: RmKind,
    pub pairs: usize,
    /// Agreement with gold preferences (pairs with distinct gold only).
    pub acc_gold: f64,
    /// Agreement with the (noisy, biased) annotator labels.
    pub acc_annotators: f64,
    /// ECE (10 bins) of the probability given to the better side, by what the setting
    /// calibrates against (gold in the world, human labels for real models).
    pub ece: f64,
    /// Pearson correlation of score and length (words) over the evaluated responses.
    pub length_corr: f64,
    /// The same for gold, for comparison.
    pub gold_length_corr: f64,
}

impl RmEval {
    /// The evaluation of one RM from its scores `(ra, rb)` of the annotators' chosen and
    /// rejected responses, the gold scores of the same responses, the probabilities `p_truth`
    /// it gives to the better side of each pair by what the setting calibrates against
    /// ([`rm::ece`]), and the responses' lengths in words (chosen, then rejected).
    pub fn new<T>(
        kind: RmKind,
        size: usize,
        r: (&[T], &[T]),
        gold: (&[f64], &[f64]),
        p_truth: &[f64],
        lens: &[f64],
    ) -> Self
    where
        T: Copy + PartialOrd + Into<f64>,
    {
        let scores: Vec<f64> = r.0.iter().chain(r.1).map(|&x| x.into()).collect();
        let golds: Vec<f64> = gold.0.iter().chain(gold.1).copied().collect();
        RmEval {
            name: format!("{}-{size}", kind.name()),
            kind,
            pairs: size,
            acc_gold: rm::agreement(r.0, r.1, gold.0, gold.1),
            acc_annotators: rm::share(&rm::prefers_first(r.0, r.1)),
            ece: rm::ece(p_truth).0,
            length_corr: pearson(&scores, lens),
            gold_length_corr: pearson(&golds, lens),
        }
    }
}

/// Everything one seed produced.
#[derive(Debug)]
pub struct SeedResult {
    pub seed: u64,
    pub rms: Vec<RmEval>,
    pub bon: Vec<BonCurve>,
    /// Value-guided decoding against the single proxy (`[guided]`).
    pub guided: Vec<GuidedCurve>,
    pub runs: Vec<RunLog>,
    /// Annotator-vs-gold agreement on the RM evaluation pairs.
    pub annotator_acc_gold: f64,
    /// When gold is a judge: its counts (position consistency, parse failures).
    pub judge: Option<JudgeRecord>,
}

pub fn run_name_rl(kind: RmKind, beta: f64) -> String {
    format!("rl-{}-kl{}", kind.name(), beta)
}

/// Seed `index` (0-based) of the experiment: `cfg.seed + index`. The one definition both the
/// single-process run and `mismatch run --seed-only` use, so seed index I derives the same
/// numbers in either.
pub fn seed_of(cfg: &RunConfig, index: usize) -> u64 {
    mismatch_models::seed::offset(cfg.seed, index as u64)
}

/// Parallelism comes from running seeds side by side; inside a seed, candle's CPU kernels run
/// single-threaded (they read RAYON_NUM_THREADS at every call). The tiny models gain nothing
/// from threads, the cores are not oversubscribed, and the bits do not depend on the machine's
/// core count. (A value the user set is kept.)
pub fn single_threaded_kernels() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", "1");
    }
}

/// The seed every evaluation of seed `seed` samples with (the same prompts and seed for every
/// checkpoint, so evaluations differ only by the policy).
pub fn eval_seed(seed: u64) -> u64 {
    mismatch_models::seed::derive(seed, 6)
}

/// Runs the seeds at `indices` (0-based, [`seed_of`]) of `setting` and returns the results in
/// the order of `indices`.
pub fn run_all(
    setting: &dyn Setting,
    cfg: &RunConfig,
    indices: &[usize],
    out: &Path,
    progress: bool,
) -> Result<Vec<SeedResult>> {
    let multi = crate::progress::group(progress);
    for_each_seed(cfg, indices, |seed| {
        let s = setting.seed(cfg, seed, &multi, progress)?;
        let bar = multi.add(crate::progress::bar(progress, units(cfg), &format!("seed {seed}")));
        let r = run_seed(cfg, s.as_ref(), out, seed, &bar);
        bar.finish_with_message("done");
        r
    })
}

/// Runs `work` for the seeds at `indices` ([`seed_of`]) on `cfg.threads` threads and returns
/// the results in the order of `indices` (each seed's work depends only on its seed, so
/// scheduling does not change any result).
pub fn for_each_seed<T: Send>(
    cfg: &RunConfig,
    indices: &[usize],
    work: impl Fn(u64) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let seeds: Vec<u64> = indices.iter().map(|&i| seed_of(cfg, i)).collect();
    parallel_map(cfg.threads, seeds.len(), |i| work(seeds[i]))
}

/// `work(0..n)` on `threads` threads (at least 1, at most n), results in index order; the first
/// error in index order is returned. Work that depends only on its index gives the same results
/// whatever `threads` is.
pub fn parallel_map<T: Send>(threads: usize, n: usize, work: impl Fn(usize) -> Result<T> + Sync) -> Result<Vec<T>> {
    let results: Vec<std::sync::Mutex<Option<Result<T>>>> = (0..n).map(|_| std::sync::Mutex::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= n {
                    break;
                }
                let r = work(i);
                *results[i].lock().expect("lock") = Some(r);
            });
        }
    });
    results.into_iter().map(|m| m.into_inner().expect("lock").expect("every index ran")).collect()
}

/// Progress units of one seed: RM members, RL and DPO steps, best-of-n.
fn units(cfg: &RunConfig) -> u64 {
    let rm = cfg.rm.members * cfg.data.pair_sizes.len();
    let rl = cfg.rl.steps * (cfg.rl.kl_coefs.len() + cfg.rl.mitigations.len());
    (rm + rl + cfg.dpo.steps + 1 + cfg.guided.plan().len()) as u64
}

fn run_seed(
    cfg: &RunConfig,
    s: &dyn SeedSetting,
    out: &Path,
    seed: u64,
    bar: &indicatif::ProgressBar,
) -> Result<SeedResult> {
    // Proxy RMs at every data size: prefixes of the seed's pairs.
    let pairs = s.rm_pairs();
    let n_max = *cfg.data.pair_sizes.iter().max().expect("validated");
    let mut rms = Vec::new();
    let mut largest: Option<Ensemble> = None;
    for &size in &cfg.data.pair_sizes {
        let n = pairs.len() * size / n_max;
        bar.set_message(format!("reward models ({n} pairs)"));
        let ens = train_ensemble(
            s.rm_backbone(),
            &pairs[..n],
            &cfg.rm.train,
            cfg.rm.members,
            mismatch_models::seed::scaled(seed, 100, 7),
            s.standardise_on(),
            bar,
        )?;
        rms.extend(s.evaluate_rms(&ens, size)?);
        if size == n_max {
            largest = Some(ens);
        }
    }
    let ens = largest.expect("largest size trained");
    let annotator_acc_gold = s.annotator_acc_gold()?;

    // Best-of-n from one pool.
    bar.set_message("best-of-n");
    let pool = s.bon_pool(mismatch_models::seed::derive(seed, 5))?;
    let mut curves = Vec::new();
    for kind in KINDS {
        let p = ens.proxy(kind, cfg.rm.uwo_lambda, kind.name())?;
        curves.push(bon::curve(&pool, s.as_seen(&p).as_ref(), &cfg.bon.ns, &format!("bon-{}", kind.name()))?);
    }
    curves.push(bon::curve(&pool, s.gold().as_ref(), &cfg.bon.ns, "bon-gold")?);
    bar.inc(1);

    // Value-guided decoding of the start policy against the single proxy.
    let single = ens.proxy(RmKind::Single, cfg.rm.uwo_lambda, "single")?;
    let mut guided = Vec::new();
    for (name, points) in cfg.guided.plan() {
        bar.set_message(name);
        guided.push(crate::guided::curve(s, name, points, s.as_seen(&single).as_ref(), seed)?);
        bar.inc(1);
    }

    // RL against the single proxy at every KL coefficient and against the mitigations at the first.
    let work = out.join("work");
    let eval_seed = eval_seed(seed);
    let mut runs = Vec::new();
    let mut plan: Vec<(RmKind, f64)> = cfg.rl.kl_coefs.iter().map(|&b| (RmKind::Single, b)).collect();
    plan.extend(cfg.rl.mitigations.iter().map(|&k| (k, cfg.rl.kl_coefs[0])));
    for (kind, beta) in plan {
        let name = run_name_rl(kind, beta);
        bar.set_message(name.clone());
        let p = ens.proxy(kind, cfg.rm.uwo_lambda, kind.name())?;
        let rl_seed = mismatch_models::seed::derive(seed, 8);
        // The trainer takes step s's prompts from consecutive slices of a permutation of this
        // list, so drawing exactly steps × batch prompts feeds each step fresh draws.
        let data = TrainData {
            prompts: s.rl_prompts(cfg.rl.steps.max(1) * cfg.rl.prompts_per_step, rl_seed),
            ..TrainData::default()
        };
        let pcfg = s.policy_config(crate::rl::policy_config(&cfg.rl, beta, cfg.max_new_tokens, rl_seed));
        let seen = s.as_seen(&p);
        let log = train_and_evaluate(
            s,
            &pcfg,
            Some(seen.as_ref()),
            &data,
            &p,
            eval_seed,
            &work,
            &run_dir_name(&name, seed),
            bar,
        )?;
        write_metrics(out, &log)?;
        runs.push(RunLog { name, ..log });
    }

    // DPO on the proxies' pairs.
    if cfg.dpo.steps > 0 {
        bar.set_message("dpo");
        let data = s.dpo_data()?;
        let pcfg = s.policy_config(crate::dpo::policy_config(&cfg.dpo, mismatch_models::seed::derive(seed, 9)));
        let single = ens.proxy(RmKind::Single, cfg.rm.uwo_lambda, "single")?;
        let log =
            train_and_evaluate(s, &pcfg, None, &data, &single, eval_seed, &work, &run_dir_name("dpo", seed), bar)?;
        write_metrics(out, &log)?;
        runs.push(RunLog { name: "dpo".into(), ..log });
    }
    Ok(SeedResult { seed, rms, bon: curves, guided, runs, annotator_acc_gold, judge: s.judge() })
}

/// The directory name of run `run` of seed `seed` under `metrics/` and `work/`: `<run>-seed<seed>`.
pub fn run_dir_name(run: &str, seed: u64) -> String {
    format!("{run}-seed{seed}")
}

/// Writes `out/metrics/<run>/metrics.jsonl`: the trainer's per-step records, then the
/// evaluation points marked `"eval": true`.
pub fn write_metrics(out: &Path, log: &RunLog) -> Result<()> {
    let mut s = String::new();
    for r in &log.steps {
        s += &r.to_string();
        s.push('\n');
    }
    for e in &log.evals {
        let mut v = serde_json::to_value(e).map_err(|e| Error::Usage(e.to_string()))?;
        v["eval"] = true.into();
        s += &v.to_string();
        s.push('\n');
    }
    mismatch_models::checkpoint::write_atomic(&metrics_path(out, &log.name), s.as_bytes())
}

/// `out/metrics/<run_dir>/metrics.jsonl` ([`run_dir_name`]).
pub fn metrics_path(out: &Path, run_dir: &str) -> PathBuf {
    out.join("metrics").join(run_dir).join("metrics.jsonl")
}

/// Default output directory: `runs/<UTC timestamp>`.
pub fn default_out() -> PathBuf {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (d, s) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = d as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    PathBuf::from("runs").join(format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        s / 3600,
        (s % 3600) / 60,
        s % 60
    ))
}

/// A reward passed through unchanged (a setting whose rewards read its prompts as they are).
pub struct AsIs<'a>(pub &'a dyn Reward);

impl Reward for AsIs<'_> {
    fn name(&self) -> String {
        self.0.name()
    }
    fn score(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<f32>> {
        self.0.score(prompts, completions)
    }
}
