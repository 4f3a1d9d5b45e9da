//! `mismatch loop`: the outer loop of RLHF in the embedded world — deploy, collect preferences
//! on the current policy's outputs, retrain the reward model, optimise again (the seed's Fig. 5;
//! InstructGPT collected comparisons on its deployed policies, Ouyang et al. 2022 §3.2, and
//! Llama 2 iterated five such rounds, Touvron et al. 2023 §3.2.1).
//!
//! Per seed, from the start policy π₀ and for rounds r = 0 … R−1:
//!
//! 1. **collect**: `loop.pairs_per_round` training prompts, two samples of the current policy
//!    π_r each, labelled by the world's simulated annotators (with their biases) or, with
//!    `loop.labels_from`, by people in the labelling app (`mismatch label serve` on that
//!    database; the loop waits for `loop.per_item` labels a pair and keeps majority verdicts) → D_r;
//! 2. **retrain** the reward model RM_r from the start policy's backbone on D₀ ∪ … ∪ D_r
//!    (`loop.rm_data = "all"`) or on D_r alone (`"new"`);
//! 3. **measure the shift**: `data.eval_pairs` held-out prompts with two samples of π_r each
//!    (E_r, pairs whose gold differs); the accuracy against gold of RM_r, of the round-0 RM and,
//!    from round 1, RM_r's accuracy on the previous round's pairs E_{r−1};
//! 4. **optimise** π_{r+1} from π_r with RLOO against RM_r (`rl.steps` steps, β =
//!    `rl.kl_coefs[0]`; the KL penalty anchors each round to the policy it starts from, as
//!    iterated RLHF does) or, with `loop.algo = "dpo"`, with DPO on RM_r's training labels
//!    (the `[dpo]` table, π_r the reference), then evaluate π_{r+1} on the fixed held-out
//!    prompts: gold, proxy (RM_r), KL to π₀ and the failure meters.
//!
//! A round's numbers are means over seeds with Student-t 95% intervals; RM_r's accuracy gain
//! over the round-0 RM on the current policy's pairs, and the change of gold from the first
//! round's policy to the last one's, are paired differences with a two-stage bootstrap over
//! seeds and then pairs or prompts ([`clustered_diff_ci`]). The loop's reason to exist is the
//! first: a reward model trained on the policy's own outputs judges them better than one trained
//! on the start policy's (distribution shift).

use crate::config::RunConfig;
use crate::embedded::{annotator_agreement, draw_pairs, eval_prompts, WorldSetting};
use crate::pipeline::{eval_seed, for_each_seed, write_metrics};
use crate::proxy::{label_pairs, train_ensemble, LabelledPair, RmKind};
use crate::sample::{evaluate, EvalPoint};
use mismatch_eval::stats::{clustered_diff_ci, mean, t_ci, Ci};
use mismatch_models::seed::derive;
use mismatch_models::{Error, Gpt, Result};
use mismatch_policy::train::{train, PrefPair, RunOptions, TrainData};
use mismatch_policy::Reward;
use mismatch_world::corpus::sample_prompt;
use mismatch_world::meters::FAILURE_METERS;
use mismatch_world::world::World;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::Path;

/// The `[loop]` table of an experiment file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopConfig {
    pub rounds: usize,
    /// Preference pairs collected on the current policy each round (identical samples dropped).
    pub pairs_per_round: usize,
    /// What each round's reward model trains on.
    pub rm_data: RmData,
    /// How each round optimises the policy from where it stands.
    pub algo: LoopAlgo,
    /// A labelling database (`mismatch label serve --db`): each round's pairs are posted there
    /// and the loop waits until every one has `per_item` labels; their majority verdicts replace
    /// the simulated annotators (pairs without a majority are dropped). Empty: simulated.
    pub labels_from: String,
    /// Labels each posted pair needs (the server's `--per-item`).
    pub per_item: usize,
    /// Seconds to wait for a round's labels before the loop stops with an error.
    pub wait_s: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoopAlgo {
    /// RLOO against the round's reward model (the `[rl]` table; β = `rl.kl_coefs[0]`).
    Rloo,
    /// DPO on the labels the round's reward model trains on (the `[dpo]` table), the round's
    /// starting policy as the reference; the reward model is then only measured.
    Dpo,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            rounds: 3,
            pairs_per_round: 300,
            rm_data: RmData::All,
            algo: LoopAlgo::Rloo,
            labels_from: String::new(),
            per_item: 1,
            wait_s: 86_400,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RmData {
    /// Retrain on every label collected so far.
    All,
    /// Retrain on this round's labels only.
    New,
}

impl LoopConfig {
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |f: &str, m: &str| Err(Error::invalid(path, format!("field `loop.{f}`: {m}")));
        // Round r draws its seeds from streams 100 + r, 200 + r, …: a hundred rounds at most.
        if !(1..=99).contains(&self.rounds) {
            return bad("rounds", "must be between 1 and 99");
        }
        if self.pairs_per_round < 2 {
            return bad("pairs_per_round", "a reward model needs at least 2 pairs");
        }
        if self.per_item == 0 {
            return bad("per_item", "must be at least 1");
        }
        Ok(())
    }
}

/// One round of one seed.
struct Round {
    new_labels: usize,
    labels: usize,
    /// The annotators' agreement with gold on this round's labels (gold-distinct pairs).
    annotators_acc_gold: f64,
    /// Per pair of E_r: 1 if the RM orders it as gold does, else 0.
    rm_on_policy: Vec<f64>,
    round0_rm_on_policy: Vec<f64>,
    /// RM_r on E_{r−1} (from round 1).
    rm_on_previous: Option<Vec<f64>>,
    /// π_{r+1} on the evaluation prompts.
    after: EvalPoint,
}

struct LoopSeed {
    start: EvalPoint,
    rounds: Vec<Round>,
}

/// A held-out pair of the current policy's samples whose responses and gold differ, with gold's
/// verdict: what the reward models' accuracy is measured on.
struct GoldPair {
    prompt: usize,
    a: String,
    b: String,
    a_better: bool,
}

/// The pairs of `draws` whose responses and gold scores differ, with gold's verdict.
fn gold_pairs(world: &World, draws: Vec<(usize, String, String)>) -> Result<Vec<GoldPair>> {
    let mut out = Vec::with_capacity(draws.len());
    for (prompt, a, b) in draws {
        let p = &world.prompts[prompt].text;
        let (ga, gb) = (world.gold_score(p, &a)?, world.gold_score(p, &b)?);
        if a != b && ga != gb {
            out.push(GoldPair { prompt, a, b, a_better: ga > gb });
        }
    }
    Ok(out)
}

/// Per pair: 1 if `rm` orders it as gold does, else 0; a tie of the RM is a miss (RewardBench's
/// rule).
fn correct(world: &World, rm: &dyn Reward, pairs: &[GoldPair]) -> Result<Vec<f64>> {
    let p: Vec<&str> = pairs.iter().map(|g| world.prompts[g.prompt].text.as_str()).collect();
    let a: Vec<&str> = pairs.iter().map(|g| g.a.as_str()).collect();
    let b: Vec<&str> = pairs.iter().map(|g| g.b.as_str()).collect();
    let (ra, rb) = (rm.score(&p, &a)?, rm.score(&p, &b)?);
    Ok(pairs
        .iter()
        .enumerate()
        .map(|(i, g)| (if g.a_better { ra[i] > rb[i] } else { rb[i] > ra[i] }) as u8 as f64)
        .collect())
}

/// The labels of `drawn` from people: posted to the labelling database `db`, read back once each
/// pair has `lc.per_item` labels, as majority verdicts (pairs without one are dropped).
fn human_labels(
    lc: &LoopConfig,
    db: &Path,
    world: &World,
    drawn: &[(usize, String, String)],
    seed: u64,
    r: usize,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<LabelledPair>> {
    let fail = |e: mismatch_label::LabelError| Error::Usage(format!("loop.labels_from: {e}"));
    let texts: Vec<(String, String, String)> = drawn
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(i, a, b)| (world.prompts[*i].text.clone(), a.clone(), b.clone()))
        .collect();
    let source = format!("mismatch loop: seed {seed}, round {r}");
    let keys = mismatch_label::rounds::post(db, &source, &texts).map_err(fail)?;
    let t0 = std::time::Instant::now();
    loop {
        let n = mismatch_label::rounds::done(db, &keys, lc.per_item).map_err(fail)?;
        bar.set_message(format!(
            "round {r}: waiting for people ({n} of {} pairs have {} labels)",
            keys.len(),
            lc.per_item
        ));
        if n == keys.len() {
            break;
        }
        if t0.elapsed().as_secs() >= lc.wait_s {
            return Err(Error::Usage(format!(
                "{}: after {} s only {n} of the {} pairs of round {r} (seed {seed}) have {} labels; label them with \
                 `mismatch label serve --db {} --per-item {}` and run the loop again",
                db.display(),
                lc.wait_s,
                keys.len(),
                lc.per_item,
                db.display(),
                lc.per_item
            )));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let verdicts = mismatch_label::rounds::verdicts(db, &keys).map_err(fail)?;
    Ok(texts
        .into_iter()
        .zip(verdicts)
        .filter_map(|((prompt, a, b), v)| {
            v.map(|a_wins| {
                let (chosen, rejected) = if a_wins { (a, b) } else { (b, a) };
                LabelledPair { prompt, chosen, rejected }
            })
        })
        .collect())
}

/// Runs every round of `seed` (module doc), writing each round's policy to
/// `out/work/loop-seed<seed>/round-<r+1>` and its metrics to `out/metrics/`.
fn run_seed(
    cfg: &RunConfig,
    lc: &LoopConfig,
    ws: &WorldSetting,
    seed: u64,
    out: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<LoopSeed> {
    let (world, tok, max_new) = (&ws.world, &ws.tok, cfg.max_new_tokens);
    let hidden = indicatif::ProgressBar::hidden();
    let start_dir = mismatch_world::start::start_policy(world, &cfg.start, cfg.start_seed_of(seed), &ws.home, &hidden)?;
    let start_spec = start_dir.to_str().ok_or_else(|| Error::invalid(&start_dir, "path is not UTF-8"))?.to_string();
    let load = |dir: &Path| -> Result<Gpt> { Ok(Gpt::load(dir, &candle_core::Device::Cpu, false)?.0) };
    let start = load(&start_dir)?;
    let prompts = eval_prompts(world, cfg);
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let eval_seed = eval_seed(seed);
    let mut rng = ChaCha8Rng::seed_from_u64(derive(seed, 50));
    let work = out.join("work").join(format!("loop-seed{seed}"));

    let (mut policy, mut policy_spec) = (start.clone(), start_spec.clone());
    let mut labels: Vec<LabelledPair> = Vec::new();
    let mut round0_rm = None;
    let mut previous: Option<Vec<GoldPair>> = None;
    let mut start_eval = None;
    let mut rounds = Vec::new();
    for r in 0..lc.rounds {
        let ru = r as u64;
        bar.set_message(format!("round {r}: labels"));
        let drawn = draw_pairs(
            world,
            &policy,
            tok,
            &world.train,
            lc.pairs_per_round,
            &mut rng,
            derive(seed, 100 + ru),
            max_new,
        )?;
        let new = match lc.labels_from.as_str() {
            "" => label_pairs(world, &drawn, derive(seed, 200 + ru)),
            db => human_labels(lc, Path::new(db), world, &drawn, seed, r, bar)?,
        };
        let annotators_acc_gold = annotator_agreement(world, &new)?;
        let heldout = draw_pairs(
            world,
            &policy,
            tok,
            &world.heldout,
            cfg.data.eval_pairs,
            &mut rng,
            derive(seed, 300 + ru),
            max_new,
        )?;
        let heldout = gold_pairs(world, heldout)?;
        let new_labels = new.len();
        match lc.rm_data {
            RmData::All => labels.extend(new),
            RmData::New => labels = new,
        }

        bar.set_message(format!("round {r}: reward model ({} pairs)", labels.len()));
        let standardise_on: Vec<(String, String)> =
            drawn.iter().take(256).map(|(i, a, _)| (world.prompts[*i].text.clone(), a.clone())).collect();
        let rm_seed = mismatch_models::seed::scaled(derive(seed, 500 + ru), 100, 7);
        let ens = train_ensemble(&start_spec, &labels, &cfg.rm.train, 1, rm_seed, &standardise_on, &hidden)?;
        let rm = ens.proxy(RmKind::Single, cfg.rm.uwo_lambda, &format!("rm-round{r}"))?;
        bar.inc(1);
        if r == 0 {
            start_eval = Some(evaluate(world, &start, &start, &rm, tok, &prompts, max_new, eval_seed, 0)?);
        }
        let rm_on_policy = correct(world, &rm, &heldout)?;
        let round0_rm_on_policy = match &round0_rm {
            Some(rm0) => correct(world, rm0, &heldout)?,
            None => rm_on_policy.clone(),
        };
        let rm_on_previous = previous.as_ref().map(|p| correct(world, &rm, p)).transpose()?;

        let (pcfg, data, reward): (_, _, Option<&dyn Reward>) = match lc.algo {
            LoopAlgo::Rloo => {
                bar.set_message(format!("round {r}: RLOO"));
                let pcfg = crate::rl::policy_config(&cfg.rl, cfg.rl.kl_coefs[0], max_new, derive(seed, 400 + ru));
                let n_prompts = cfg.rl.steps.max(1) * cfg.rl.prompts_per_step;
                let prompts = (0..n_prompts)
                    .map(|_| world.prompts[sample_prompt(&world.prompts, &world.train, &mut rng)].text.clone())
                    .collect();
                (pcfg, TrainData { prompts, ..TrainData::default() }, Some(&rm))
            }
            LoopAlgo::Dpo => {
                bar.set_message(format!("round {r}: DPO"));
                let pref = |prompt: &str, c: &str, j: &str| PrefPair {
                    prompt: prompt.to_string(),
                    chosen: c.to_string(),
                    rejected: j.to_string(),
                };
                let pairs = labels.iter().map(|p| pref(&p.prompt, &p.chosen, &p.rejected)).collect();
                // Held-out pairs of the current policy ordered by gold: DPO's eval_* metrics.
                let eval_pairs = heldout
                    .iter()
                    .map(|g| {
                        let p = &world.prompts[g.prompt].text;
                        if g.a_better {
                            pref(p, &g.a, &g.b)
                        } else {
                            pref(p, &g.b, &g.a)
                        }
                    })
                    .collect();
                let pcfg = crate::dpo::policy_config(&cfg.dpo, derive(seed, 400 + ru));
                (pcfg, TrainData { pairs, eval_pairs, ..TrainData::default() }, None)
            }
        };
        let scratch = work.join(format!(".train-round{r}"));
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        }
        let outcome = train(&pcfg, &policy_spec, reward, &data, &scratch, &RunOptions::default())?;
        let (_, last) =
            outcome.checkpoints.last().ok_or_else(|| Error::Usage("the optimiser wrote no checkpoint".into()))?;
        let keep = work.join(format!("round-{}", r + 1));
        crate::optimise::keep_final(last, &keep)?;
        std::fs::remove_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        policy = load(&keep)?;
        policy_spec = keep.to_str().ok_or_else(|| Error::invalid(&keep, "path is not UTF-8"))?.to_string();
        bar.inc(pcfg.steps as u64);

        let after = evaluate(world, &policy, &start, &rm, tok, &prompts, max_new, eval_seed, r + 1)?;
        let steps = outcome.metrics.into_iter().map(Value::Object).collect();
        let name = format!("loop-round{r}-seed{seed}");
        write_metrics(out, &crate::optimise::RunLog { name, steps, evals: vec![after.clone()] })?;
        rounds.push(Round {
            new_labels,
            labels: labels.len(),
            annotators_acc_gold,
            rm_on_policy,
            round0_rm_on_policy,
            rm_on_previous,
            after,
        });
        if r == 0 {
            round0_rm = Some(rm);
        }
        previous = Some(heldout);
    }
    Ok(LoopSeed { start: start_eval.expect("round 0 ran"), rounds })
}

/// Runs the loop for every seed of `cfg` and writes `summary.json` and `report.html` to `out`.
pub fn run_loop(cfg: &RunConfig, out: &Path, command: &str, progress: bool) -> Result<Value> {
    if cfg.real.is_some() {
        return Err(Error::Usage(
            "mismatch loop runs in the embedded world (its annotators label each round); a [real] table is not supported"
                .into(),
        ));
    }
    let lc = cfg.outer.clone().unwrap_or_default();
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    crate::pipeline::single_threaded_kernels();
    let ws = WorldSetting::new(cfg, &mismatch_world::start::home()?)?;
    let multi = crate::progress::group(progress);
    let steps = match lc.algo {
        LoopAlgo::Rloo => cfg.rl.steps,
        LoopAlgo::Dpo => cfg.dpo.steps,
    };
    let units = (lc.rounds * (1 + steps)) as u64;
    let all: Vec<usize> = (0..cfg.seeds).collect();
    let results = for_each_seed(cfg, &all, |seed| {
        let bar = multi.add(crate::progress::bar(progress, units, &format!("seed {seed}")));
        let r = run_seed(cfg, &lc, &ws, seed, out, &bar);
        bar.finish_with_message("done");
        r
    })?;
    let summary = summarise(cfg, &lc, &results, command);
    let bytes = serde_json::to_vec_pretty(&summary).map_err(|e| Error::Usage(e.to_string()))?;
    mismatch_models::checkpoint::write_atomic(&out.join("summary.json"), &bytes)?;
    mismatch_models::checkpoint::write_atomic(&out.join("config.toml"), cfg.to_toml().as_bytes())?;
    let page = crate::outer_report::render(&summary);
    mismatch_models::checkpoint::write_atomic(&out.join("report.html"), page.as_bytes())?;
    Ok(summary)
}

fn ci(c: &Ci) -> Value {
    json!({"mean": c.mean, "lo": c.lo, "hi": c.hi, "n": c.n})
}

/// A policy evaluation across seeds: gold, proxy and KL to π₀ with t intervals, meter means.
fn policy_json(points: &[&EvalPoint]) -> Value {
    let across = |f: &dyn Fn(&EvalPoint) -> f64| ci(&t_ci(&points.iter().map(|p| f(p)).collect::<Vec<_>>()));
    let mut meters = serde_json::Map::new();
    for name in ["correct", "benign_refusal", "harmful_refusal"].iter().chain(FAILURE_METERS) {
        meters.insert(name.to_string(), across(&|p| p.meters.get(name).unwrap_or(f64::NAN)));
    }
    json!({"gold": across(&|p| p.gold), "proxy": across(&|p| p.proxy), "kl_to_start": across(&|p| p.kl), "meters": meters})
}

fn summarise(cfg: &RunConfig, lc: &LoopConfig, results: &[LoopSeed], command: &str) -> Value {
    let seeds: Vec<u64> = (0..cfg.seeds).map(|i| crate::pipeline::seed_of(cfg, i)).collect();
    let across = |f: &dyn Fn(&LoopSeed) -> f64| ci(&t_ci(&results.iter().map(f).collect::<Vec<_>>()));
    let mut rounds = Vec::new();
    for r in 0..lc.rounds {
        fn at(s: &LoopSeed, r: usize) -> &Round {
            &s.rounds[r]
        }
        let mut row = json!({
            "round": r,
            "new_labels": across(&|s| at(s, r).new_labels as f64),
            "labels": across(&|s| at(s, r).labels as f64),
            "annotators_acc_gold": across(&|s| at(s, r).annotators_acc_gold),
            "rm_acc_on_policy": across(&|s| mean(&at(s, r).rm_on_policy)),
            "round0_rm_acc_on_policy": across(&|s| mean(&at(s, r).round0_rm_on_policy)),
            "policy": policy_json(&results.iter().map(|s| &at(s, r).after).collect::<Vec<_>>()),
        });
        if r > 0 {
            let pairs: Vec<(Vec<f64>, Vec<f64>)> =
                results.iter().map(|s| (at(s, r).rm_on_policy.clone(), at(s, r).round0_rm_on_policy.clone())).collect();
            row["rm_gain_vs_round0"] = ci(&clustered_diff_ci(&pairs, 61 + r as u64));
            row["rm_acc_on_previous_policy"] =
                across(&|s| mean(at(s, r).rm_on_previous.as_deref().expect("from round 1")));
        }
        rounds.push(row);
    }
    let last = lc.rounds - 1;
    let change: Vec<(Vec<f64>, Vec<f64>)> =
        results.iter().map(|s| (s.rounds[last].after.golds.clone(), s.rounds[0].after.golds.clone())).collect();
    let change = clustered_diff_ci(&change, 67);
    let finding = if lc.rounds == 1 {
        "one round: nothing to compare"
    } else if change.lo > 0.0 {
        "iterating raised gold: the last round's policy beats the first round's"
    } else if change.hi < 0.0 {
        "iterating lowered gold: the mismatch compounded over rounds"
    } else {
        "no clear change of gold over rounds (the interval covers 0)"
    };
    json!({
        "command": command,
        "seeds": seeds,
        "config": cfg,
        "start": policy_json(&results.iter().map(|s| &s.start).collect::<Vec<_>>()),
        "rounds": rounds,
        "gold_change_first_to_last": ci(&change),
        "finding": finding,
    })
}
