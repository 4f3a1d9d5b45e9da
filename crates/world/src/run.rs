//! `mismatch run`: Gao et al. (2022)'s over-optimisation experiment in the embedded world.
//!
//! Per seed: pre-train (or load) its start policy ([`RunConfig::start_seed_of`]); sample pairs
//! from it and label them with the simulated annotators; train proxy RMs at every data size
//! (K members → single, mean, WCO, UWO, WARM); best-of-n from one pool per held-out prompt;
//! RLOO against the single proxy at every KL coefficient and against the mitigations at the
//! first one; DPO on the same pairs. Every policy is evaluated on the same held-out prompts
//! (proxy, gold, KL to the start policy, meters). Seeds run on a few threads; each seed's work
//! depends only on its seed, so results do not depend on scheduling.

use crate::bon::{self, BonCurve};
use crate::config::RunConfig;
use crate::corpus::sample_prompt;
use crate::lang::words;
use crate::optimise::{RunCtx, RunLog};
use crate::proxy::{label_pairs, train_ensemble, LabelledPair, RmKind};
use crate::sample::sample;
use crate::world::World;
use mismatch_eval::rank::pearson;
use mismatch_eval::rm;
use mismatch_models::{Error, Gpt, Result};
use mismatch_policy::Reward;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::{Path, PathBuf};

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
    /// ECE of σ(r_a − r_b) against gold outcomes (10 bins).
    pub ece: f64,
    /// Pearson correlation of score and length (words) over the evaluated responses.
    pub length_corr: f64,
    /// The same for gold, for comparison.
    pub gold_length_corr: f64,
}

impl RmEval {
    /// The evaluation of one RM from its scores `(ra, rb)` of the annotators' chosen and
    /// rejected responses, the gold scores `(ga, gb)` of the same responses, the probabilities
    /// `p_truth` it gives to the better side of each pair by whatever the setting calibrates
    /// against ([`rm::ece`]), and the responses' lengths in words (chosen, then rejected).
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
pub struct SeedResult {
    pub seed: u64,
    pub rms: Vec<RmEval>,
    pub bon: Vec<BonCurve>,
    pub runs: Vec<RunLog>,
    /// Annotator-vs-gold agreement on the RM evaluation pairs.
    pub annotator_acc_gold: f64,
}

pub fn run_name_rl(kind: RmKind, beta: f64) -> String {
    format!("rl-{}-kl{}", kind.name(), beta)
}

/// Runs every seed (start policies cached under `home`) and returns the results in seed order.
pub fn run_all(cfg: &RunConfig, out: &Path, home: &Path, progress: bool) -> Result<Vec<SeedResult>> {
    let world = World::new(&cfg.world)?;
    let tok = crate::start::tokenizer()?;
    let multi = indicatif::MultiProgress::new();
    if !progress {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    for_each_seed(cfg, |seed| run_seed(cfg, &world, &tok, home, out, seed, &multi, progress))
}

/// Runs `work` for seeds `cfg.seed..cfg.seed + cfg.seeds` on `cfg.threads` threads and returns
/// the results in seed order (each seed's work depends only on its seed, so scheduling does
/// not change any result).
pub fn for_each_seed<T: Send>(cfg: &RunConfig, work: impl Fn(u64) -> Result<T> + Sync) -> Result<Vec<T>> {
    let seeds: Vec<u64> = (0..cfg.seeds as u64).map(|i| cfg.seed + i).collect();
    let results: Vec<std::sync::Mutex<Option<Result<T>>>> = seeds.iter().map(|_| std::sync::Mutex::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..cfg.threads.clamp(1, seeds.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= seeds.len() {
                    break;
                }
                let r = work(seeds[i]);
                *results[i].lock().expect("lock") = Some(r);
            });
        }
    });
    results.into_iter().map(|m| m.into_inner().expect("lock").expect("every seed ran")).collect()
}

fn units(cfg: &RunConfig) -> u64 {
    let rm = cfg.rm.members * cfg.data.pair_sizes.len();
    let rl = cfg.rl.steps * (cfg.rl.kl_coefs.len() + cfg.rl.mitigations.len());
    (rm + rl + cfg.dpo.steps + 1) as u64
}

#[allow(clippy::too_many_arguments)]
fn run_seed(
    cfg: &RunConfig,
    world: &World,
    tok: &tokenizers::Tokenizer,
    home: &Path,
    out: &Path,
    seed: u64,
    multi: &indicatif::MultiProgress,
    progress: bool,
) -> Result<SeedResult> {
    let start_seed = cfg.start_seed_of(seed);
    let sbar = multi.add(crate::progress::bar(progress, cfg.start.steps as u64, &format!("start policy {start_seed}")));
    let start_dir = &crate::start::start_policy(world, &cfg.start, start_seed, home, &sbar)?;
    let bar = multi.add(crate::progress::bar(progress, units(cfg), &format!("seed {seed}")));
    let (start, _) = Gpt::load(start_dir, &candle_core::Device::Cpu, false)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x11);
    let max_new = cfg.max_new_tokens;

    // Preference data: two start-policy samples per training prompt, annotator labels.
    bar.set_message("sampling pairs");
    let n_max = *cfg.data.pair_sizes.iter().max().expect("validated");
    let draws =
        |prompts: &[usize], n: usize, rng: &mut ChaCha8Rng, sseed: u64| -> Result<Vec<(usize, String, String)>> {
            let idx: Vec<usize> = (0..n).map(|_| sample_prompt(&world.prompts, prompts, rng)).collect();
            let rep: Vec<&str> = idx.iter().flat_map(|&i| [world.prompts[i].text.as_str(); 2]).collect();
            let mut texts = Vec::new();
            for (c, chunk) in rep.chunks(512).enumerate() {
                texts.extend(sample(&start, tok, chunk, max_new, sseed + c as u64)?.texts);
            }
            Ok(idx.iter().enumerate().map(|(j, &i)| (i, texts[2 * j].clone(), texts[2 * j + 1].clone())).collect())
        };
    let train_draws = draws(&world.train, n_max, &mut rng, seed * 1000 + 1)?;
    let pairs = label_pairs(world, &train_draws, seed * 1000 + 2);
    let standardise_on: Vec<(String, String)> =
        train_draws.iter().take(256).map(|(i, a, _)| (world.prompts[*i].text.clone(), a.clone())).collect();
    let eval_draws = draws(&world.heldout, cfg.data.eval_pairs, &mut rng, seed * 1000 + 3)?;
    let eval_pairs: Vec<LabelledPair> = label_pairs(world, &eval_draws, seed * 1000 + 4);

    // Proxy RMs at every data size.
    let mut rms = Vec::new();
    let mut largest = None;
    for &size in &cfg.data.pair_sizes {
        let n = pairs.len() * size / n_max;
        bar.set_message(format!("reward models ({n} pairs)"));
        let spec = start_dir.to_str().ok_or_else(|| Error::invalid(start_dir, "path is not UTF-8"))?;
        let ens =
            train_ensemble(spec, &pairs[..n], &cfg.rm.train, cfg.rm.members, seed * 100 + 7, &standardise_on, &bar)?;
        for kind in [RmKind::Single, RmKind::Mean, RmKind::Wco, RmKind::Uwo, RmKind::Warm] {
            let p = ens.proxy(kind, cfg.rm.uwo_lambda, &format!("{}-{size}", kind.name()))?;
            rms.push(evaluate_rm(world, &p, &eval_pairs, kind, size)?);
        }
        if size == n_max {
            largest = Some(ens);
        }
    }
    let ens = largest.expect("largest size trained");
    let annotator_acc_gold = annotator_agreement(world, &eval_pairs)?;

    // Fixed held-out evaluation prompts (shared by all seeds).
    let mut erng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xe7a1);
    let eval_idx: Vec<usize> =
        (0..cfg.eval_prompts).map(|_| sample_prompt(&world.prompts, &world.heldout, &mut erng)).collect();
    let eval_prompts: Vec<&str> = eval_idx.iter().map(|&i| world.prompts[i].text.as_str()).collect();

    // Best-of-n from one pool.
    bar.set_message("best-of-n");
    let bon_prompts = &eval_prompts[..cfg.bon.prompts.min(eval_prompts.len())];
    let pool = bon::pool(world, &start, tok, bon_prompts, cfg.bon.n_max, max_new, seed * 1000 + 5)?;
    let mut curves = Vec::new();
    for kind in [RmKind::Single, RmKind::Mean, RmKind::Wco, RmKind::Uwo, RmKind::Warm] {
        let p = ens.proxy(kind, cfg.rm.uwo_lambda, kind.name())?;
        curves.push(bon::curve(&pool, &p, &cfg.bon.ns, &format!("bon-{}", kind.name()))?);
    }
    curves.push(bon::curve(&pool, &crate::world::GoldReward(world), &cfg.bon.ns, "bon-gold")?);
    bar.inc(1);

    // RL and DPO.
    let work = out.join("work");
    let ctx = RunCtx {
        world,
        start_dir,
        start: &start,
        tok,
        eval_prompts: &eval_prompts,
        max_new,
        eval_seed: seed * 1000 + 6,
        work_dir: &work,
    };
    let mut runs = Vec::new();
    let mut plan: Vec<(RmKind, f64)> = cfg.rl.kl_coefs.iter().map(|&b| (RmKind::Single, b)).collect();
    plan.extend(cfg.rl.mitigations.iter().map(|&k| (k, cfg.rl.kl_coefs[0])));
    for (kind, beta) in plan {
        let name = run_name_rl(kind, beta);
        bar.set_message(name.clone());
        let p = ens.proxy(kind, cfg.rm.uwo_lambda, kind.name())?;
        let log = crate::rl::rloo(&ctx, &cfg.rl, &p, &p, beta, seed * 1000 + 8, &format!("{name}-seed{seed}"), &bar)?;
        write_metrics(out, &log)?;
        runs.push(RunLog { name, ..log });
    }
    bar.set_message("dpo");
    let single = ens.proxy(RmKind::Single, cfg.rm.uwo_lambda, "single")?;
    let log = crate::dpo::dpo(
        &ctx,
        &cfg.dpo,
        &pairs,
        &eval_pairs,
        &single,
        seed * 1000 + 9,
        &format!("dpo-seed{seed}"),
        &bar,
    )?;
    write_metrics(out, &log)?;
    runs.push(RunLog { name: "dpo".into(), ..log });
    bar.finish_with_message("done");
    Ok(SeedResult { seed, rms, bon: curves, runs, annotator_acc_gold })
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
    mismatch_models::checkpoint::write_atomic(&out.join("metrics").join(&log.name).join("metrics.jsonl"), s.as_bytes())
}

/// Share of the evaluation pairs (gold not tied) on which the annotators chose gold's better side.
fn annotator_agreement(world: &World, pairs: &[LabelledPair]) -> Result<f64> {
    let gold = |c: fn(&LabelledPair) -> &str| {
        pairs.iter().map(|p| world.gold_score(&p.prompt, c(p))).collect::<Result<Vec<f64>>>()
    };
    let (gc, gr) = (gold(|p| &p.chosen)?, gold(|p| &p.rejected)?);
    let (chosen, rejected) = (vec![1.0; pairs.len()], vec![0.0; pairs.len()]);
    Ok(rm::agreement(&chosen, &rejected, &gc, &gr))
}

fn evaluate_rm(world: &World, rm: &dyn Reward, pairs: &[LabelledPair], kind: RmKind, size: usize) -> Result<RmEval> {
    let prompts: Vec<&str> = pairs.iter().map(|p| p.prompt.as_str()).collect();
    let a: Vec<&str> = pairs.iter().map(|p| p.chosen.as_str()).collect();
    let b: Vec<&str> = pairs.iter().map(|p| p.rejected.as_str()).collect();
    let (ra, rb) = (rm.score(&prompts, &a)?, rm.score(&prompts, &b)?);
    let gold = |c: &[&str]| prompts.iter().zip(c).map(|(p, c)| world.gold_score(p, c)).collect::<Result<Vec<f64>>>();
    let (ga, gb) = (gold(&a)?, gold(&b)?);
    let lens: Vec<f64> = a.iter().chain(&b).map(|s| words(s).len() as f64).collect();
    // In the world, calibration is read against gold.
    let p_gold = rm::p_reference_better(&ra, &rb, &ga, &gb);
    Ok(RmEval::new(kind, size, (&ra[..], &rb[..]), (&ga[..], &gb[..]), &p_gold, &lens))
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
