//! The real run, step by step (see the module doc of [`super`] for what it measures).

use super::config::Resolved;
use super::data::{first_turns, read_pairs, read_prompts, short_pairs, split, xstest_prompts, Record, Split};
use super::sample::{evaluate, pool, sample, EvalSet, UserTurn};
use crate::config::RunConfig;
use crate::optimise::RunLog;
use crate::proxy::{train_ensemble, Ensemble, LabelledPair, Proxy, RmKind, RmTrainConfig};
use crate::run::{run_name_rl, write_metrics, RmEval, SeedResult};
use mismatch_eval::rm;
use mismatch_eval::PromptKind;
use mismatch_models::checkpoint::replace_dir;
use mismatch_models::{Error, Result};
use mismatch_policy::train::common::{permutation, Policy};
use mismatch_policy::train::{train, PolicyConfig, PrefPair, RunOptions, TrainData};
use mismatch_policy::Reward;
use mismatch_reward::ensemble::{aggregate, Aggregate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// What every seed shares: the data split, prompts, the gold RM and its scores on the test part.
struct Shared {
    paths: Resolved,
    chat: bool,
    split: Split,
    rl_prompts: Vec<String>,
    eval: EvalSet,
    /// Start-policy samples (rendered prompt, completion) every RM is standardised on.
    standardise_on: Vec<(String, String)>,
    gold: Proxy,
    /// Gold scores of the test pairs' chosen and rejected responses.
    gold_test: (Vec<f64>, Vec<f64>),
    dpo_max_chars: usize,
}

fn units(cfg: &RunConfig) -> u64 {
    let rm = cfg.rm.members * cfg.data.pair_sizes.len();
    let rl = cfg.rl.steps * (cfg.rl.kl_coefs.len() + cfg.rl.mitigations.len());
    (rm + rl + cfg.dpo.steps + 1) as u64
}

/// Runs every seed on real models and data; results in seed order.
pub fn run_all(cfg: &RunConfig, out: &Path, progress: bool) -> Result<Vec<SeedResult>> {
    let real = cfg.real.as_ref().ok_or_else(|| Error::Usage("the experiment has no [real] table".into()))?;
    let paths = real.resolve();
    let multi = indicatif::MultiProgress::new();
    if !progress {
        multi.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let bar = multi.add(crate::progress::bar(progress, 2, "gold RM"));

    // Data: test (held-out labels) / gold / proxy parts, split by prompt.
    bar.set_message("reading data");
    let records = short_pairs(read_pairs(&paths.pairs)?, real.max_pair_chars);
    let split = split(records, cfg.data.eval_pairs, real.gold_pairs, real.split_seed, &paths.pairs)?;
    let n_max = *cfg.data.pair_sizes.iter().max().expect("validated");
    if split.proxy.len() < n_max {
        return Err(Error::invalid(
            &paths.pairs,
            format!(
                "field `data.pair_sizes`: the proxy part has {} pairs (after {} test and {} gold pairs), fewer than {n_max}",
                split.proxy.len(),
                split.test.len(),
                split.gold.len()
            ),
        ));
    }
    let rl_prompts = match &paths.prompts {
        Some(p) => read_prompts(p, real.max_prompt_chars)?,
        None => first_turns(&split.proxy, real.max_prompt_chars),
    };
    if rl_prompts.is_empty() {
        return Err(Error::invalid(&paths.pairs, "no RL prompts (first user turns) within real.max_prompt_chars"));
    }
    let eval = match &paths.eval_prompts_file {
        Some(f) => {
            let p = xstest_prompts(f, cfg.eval_prompts, real.max_prompt_chars, cfg.seed ^ 0xe7a1)?;
            EvalSet { kinds: p.iter().map(|p| p.kind).collect(), prompts: p.into_iter().map(|p| p.text).collect() }
        }
        None => {
            let p = first_turns(&split.test, real.max_prompt_chars);
            if p.len() < cfg.eval_prompts {
                return Err(Error::invalid(
                    &paths.pairs,
                    format!("field `eval_prompts`: only {} test prompts within real.max_prompt_chars", p.len()),
                ));
            }
            let p: Vec<String> = p.into_iter().take(cfg.eval_prompts).collect();
            EvalSet { kinds: vec![PromptKind::Other; p.len()], prompts: p }
        }
    };

    // Standardisation samples: one start-policy sample per RL prompt (a seeded choice).
    bar.set_message("start-policy samples");
    let start = Policy::load(&paths.policy, false, real.chat)?;
    let order = permutation(rl_prompts.len(), real.split_seed ^ 0x57d);
    let std_prompts: Vec<&str> =
        order.iter().cycle().take(real.standardise_samples).map(|&i| rl_prompts[i].as_str()).collect();
    let s = sample(&start, &std_prompts, cfg.max_new_tokens, real.split_seed ^ 0x5a3)?;
    let standardise_on: Vec<(String, String)> =
        std_prompts.iter().zip(&s.texts).map(|(p, t)| (super::sample::as_user_turn(p), t.clone())).collect();
    drop(start);

    // The gold RM: one model on the gold part, standardised like the proxies.
    bar.set_message(format!("gold RM ({} pairs)", split.gold.len()));
    let gold_cfg = RmTrainConfig { epochs: real.gold_epochs, bootstrap: false, ..cfg.rm.train.clone() };
    let gold_pairs: Vec<LabelledPair> = split.gold.iter().map(|r| r.pair.clone()).collect();
    let gold_ens = train_ensemble(
        &paths.gold_backbone,
        &gold_pairs,
        &gold_cfg,
        1,
        real.split_seed * 100 + 3,
        &standardise_on,
        &bar,
    )?;
    let gold = gold_ens.proxy(RmKind::Single, cfg.rm.uwo_lambda, "gold")?;
    let gold_test = pair_scores(&gold, &split.test)?;
    bar.finish_and_clear();

    let shared = Shared {
        paths,
        chat: real.chat,
        split,
        rl_prompts,
        eval,
        standardise_on,
        gold,
        gold_test,
        dpo_max_chars: real.dpo_max_chars,
    };
    crate::run::for_each_seed(cfg, |seed| run_seed(cfg, &shared, out, seed, &multi, progress))
}

/// Scores of the chosen and rejected responses of `pairs` (prompts as the RMs were trained on).
fn pair_scores(rm: &dyn Reward, pairs: &[Record]) -> Result<(Vec<f64>, Vec<f64>)> {
    let p: Vec<&str> = pairs.iter().map(|r| r.pair.prompt.as_str()).collect();
    let c: Vec<&str> = pairs.iter().map(|r| r.pair.chosen.as_str()).collect();
    let j: Vec<&str> = pairs.iter().map(|r| r.pair.rejected.as_str()).collect();
    let score = |x: &[&str]| -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(x.len());
        for (pp, xx) in p.chunks(64).zip(x.chunks(64)) {
            out.extend(rm.score(pp, xx)?.into_iter().map(|v| v as f64));
        }
        Ok(out)
    };
    Ok((score(&c)?, score(&j)?))
}

/// Test-pair scores of every kind in [`KINDS`] order, running each member's backbone once
/// (the kinds are aggregates of the same member scores, as [`Ensemble::proxy`] combines them).
fn test_scores(ens: &Ensemble, lambda: f64, pairs: &[Record]) -> Result<Vec<(Vec<f64>, Vec<f64>)>> {
    let all = ens.proxy(RmKind::Mean, lambda, "members")?;
    let p: Vec<&str> = pairs.iter().map(|r| r.pair.prompt.as_str()).collect();
    let side = |x: Vec<&str>| -> Result<Vec<Vec<f32>>> {
        let mut per: Vec<Vec<f32>> = vec![];
        for (pp, xx) in p.chunks(64).zip(x.chunks(64)) {
            let m = all.member_scores(pp, xx)?;
            per.resize(m.len(), vec![]);
            for (a, b) in per.iter_mut().zip(m) {
                a.extend(b);
            }
        }
        Ok(per)
    };
    let c = side(pairs.iter().map(|r| r.pair.chosen.as_str()).collect())?;
    let r = side(pairs.iter().map(|r| r.pair.rejected.as_str()).collect())?;
    let agg = |per: &[Vec<f32>], how: Aggregate| -> Result<Vec<f64>> {
        if per.len() == 1 {
            return Ok(per[0].iter().map(|&x| x as f64).collect());
        }
        let t = candle_core::Tensor::new(per.to_vec(), &candle_core::Device::Cpu)?;
        Ok(aggregate(&t, how)?.to_vec1::<f32>()?.into_iter().map(|x| x as f64).collect())
    };
    let first = |per: &[Vec<f32>]| per[0].iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let uwo = Aggregate::UncertaintyWeighted { lambda };
    let warm = pair_scores(&ens.proxy(RmKind::Warm, lambda, "warm")?, pairs)?;
    Ok(vec![
        (first(&c), first(&r)),
        (agg(&c, Aggregate::Mean)?, agg(&r, Aggregate::Mean)?),
        (agg(&c, Aggregate::WorstCase)?, agg(&r, Aggregate::WorstCase)?),
        (agg(&c, uwo)?, agg(&r, uwo)?),
        warm,
    ])
}

/// Accuracy of the gold RM on the held-out human labels (how far the stand-in can be trusted).
fn gold_accuracy(gold_test: &(Vec<f64>, Vec<f64>)) -> f64 {
    rm::share(&rm::prefers_first(&gold_test.0, &gold_test.1))
}

/// One RM on the test part: `acc_annotators` = accuracy on the held-out human labels,
/// `acc_gold` = agreement with the gold RM's preference (pairs where gold is not tied), `ece`
/// = calibration of σ(r_chosen − r_rejected) against the human labels, `length_corr` /
/// `gold_length_corr` = Pearson correlation of the RM's / gold's score with length in words.
fn evaluate_rm(scores: &(Vec<f64>, Vec<f64>), shared: &Shared, kind: RmKind, size: usize) -> RmEval {
    let (ra, rb) = scores;
    let (ga, gb) = &shared.gold_test;
    // Calibration against the human labels: the chosen side is the better one.
    let (label_c, label_r) = (vec![1.0; ra.len()], vec![0.0; ra.len()]);
    let p_chosen = rm::p_reference_better(ra, rb, &label_c, &label_r);
    let t = &shared.split.test;
    let lens: Vec<f64> = t
        .iter()
        .map(|r| &r.pair.chosen)
        .chain(t.iter().map(|r| &r.pair.rejected))
        .map(|s| mismatch_eval::text::length(s) as f64)
        .collect();
    RmEval::new(kind, size, (&ra[..], &rb[..]), (&ga[..], &gb[..]), &p_chosen, &lens)
}

const KINDS: [RmKind; 5] = [RmKind::Single, RmKind::Mean, RmKind::Wco, RmKind::Uwo, RmKind::Warm];

fn run_seed(
    cfg: &RunConfig,
    shared: &Shared,
    out: &Path,
    seed: u64,
    multi: &indicatif::MultiProgress,
    progress: bool,
) -> Result<SeedResult> {
    let bar = multi.add(crate::progress::bar(progress, units(cfg), &format!("seed {seed}")));
    let max_new = cfg.max_new_tokens;

    // Proxy RMs at every data size: prefixes of this seed's order of the proxy part.
    let n_max = *cfg.data.pair_sizes.iter().max().expect("validated");
    let order = permutation(shared.split.proxy.len(), seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x11);
    let train_recs: Vec<&Record> = order.iter().take(n_max).map(|&i| &shared.split.proxy[i]).collect();
    let pairs: Vec<LabelledPair> = train_recs.iter().map(|r| r.pair.clone()).collect();
    let mut rms = Vec::new();
    let mut largest: Option<Ensemble> = None;
    for &size in &cfg.data.pair_sizes {
        bar.set_message(format!("reward models ({size} pairs)"));
        let ens = train_ensemble(
            &shared.paths.rm_backbone,
            &pairs[..size],
            &cfg.rm.train,
            cfg.rm.members,
            seed * 100 + 7,
            &shared.standardise_on,
            &bar,
        )?;
        for (kind, scores) in KINDS.into_iter().zip(test_scores(&ens, cfg.rm.uwo_lambda, &shared.split.test)?) {
            rms.push(evaluate_rm(&scores, shared, kind, size));
        }
        if size == n_max {
            largest = Some(ens);
        }
    }
    let ens = largest.expect("largest size trained");

    // Best-of-n from one pool of start-policy samples on the first evaluation prompts.
    bar.set_message("best-of-n");
    let start = Policy::load(&shared.paths.policy, false, shared.chat)?;
    let bon_prompts: Vec<&str> =
        shared.eval.prompts.iter().take(cfg.bon.prompts.min(shared.eval.prompts.len())).map(String::as_str).collect();
    let pool = pool(&start, &shared.gold, &bon_prompts, cfg.bon.n_max, max_new, seed * 1000 + 5)?;
    let mut curves = Vec::new();
    for kind in KINDS {
        let p = ens.proxy(kind, cfg.rm.uwo_lambda, kind.name())?;
        curves.push(crate::bon::curve(&pool, &UserTurn(&p), &cfg.bon.ns, &format!("bon-{}", kind.name()))?);
    }
    curves.push(crate::bon::curve(&pool, &UserTurn(&shared.gold), &cfg.bon.ns, "bon-gold")?);
    bar.inc(1);

    // RL against the single proxy at every KL coefficient and against the mitigations at the first.
    let ctx = Ctx { shared, start: &start, cfg, seed, work: out.join("work"), bar: &bar };
    let mut runs = Vec::new();
    let mut plan: Vec<(RmKind, f64)> = cfg.rl.kl_coefs.iter().map(|&b| (RmKind::Single, b)).collect();
    plan.extend(cfg.rl.mitigations.iter().map(|&k| (k, cfg.rl.kl_coefs[0])));
    for (kind, beta) in plan {
        let name = run_name_rl(kind, beta);
        bar.set_message(name.clone());
        let p = ens.proxy(kind, cfg.rm.uwo_lambda, kind.name())?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed * 1000 + 8);
        let prompts = (0..cfg.rl.steps.max(1) * cfg.rl.prompts_per_step)
            .map(|_| shared.rl_prompts[rng.random_range(0..shared.rl_prompts.len())].clone())
            .collect();
        let data = TrainData { prompts, ..TrainData::default() };
        let pcfg =
            PolicyConfig { chat: shared.chat, ..crate::rl::policy_config(&cfg.rl, beta, max_new, seed * 1000 + 8) };
        let log = ctx.train_and_evaluate(&pcfg, Some(&UserTurn(&p)), &data, &p, &format!("{name}-seed{seed}"))?;
        write_metrics(out, &log)?;
        runs.push(RunLog { name, ..log });
    }

    // DPO on the single-turn proxy-training pairs (the prompt is then one user turn the policy's
    // chat template can wrap), when `dpo.steps > 0`.
    if cfg.dpo.steps > 0 {
        bar.set_message("dpo");
        let pref = |r: &Record| PrefPair {
            prompt: r.first_user.clone().unwrap_or_default(),
            chosen: r.pair.chosen.clone(),
            rejected: r.pair.rejected.clone(),
        };
        let usable = |r: &&Record| {
            r.single_turn && r.pair.chosen.chars().count().max(r.pair.rejected.chars().count()) <= shared.dpo_max_chars
        };
        let dpo_pairs: Vec<PrefPair> = train_recs.iter().copied().filter(usable).map(pref).collect();
        if dpo_pairs.is_empty() {
            return Err(Error::invalid(
                &shared.paths.pairs,
                format!(
                    "field `real.dpo_max_chars`: no single-turn proxy pair has responses of at most {} characters; \
                     raise it or set dpo.steps = 0",
                    shared.dpo_max_chars
                ),
            ));
        }
        let eval_pairs: Vec<PrefPair> = shared.split.test.iter().filter(usable).take(32).map(pref).collect();
        let data = TrainData { pairs: dpo_pairs, eval_pairs, ..TrainData::default() };
        let pcfg = PolicyConfig { chat: shared.chat, ..crate::dpo::policy_config(&cfg.dpo, seed * 1000 + 9) };
        let single = ens.proxy(RmKind::Single, cfg.rm.uwo_lambda, "single")?;
        let log = ctx.train_and_evaluate(&pcfg, None, &data, &single, &format!("dpo-seed{seed}"))?;
        write_metrics(out, &log)?;
        runs.push(RunLog { name: "dpo".into(), ..log });
    }
    bar.finish_with_message("done");
    Ok(SeedResult { seed, rms, bon: curves, runs, annotator_acc_gold: gold_accuracy(&shared.gold_test) })
}

struct Ctx<'a> {
    shared: &'a Shared,
    start: &'a Policy,
    cfg: &'a RunConfig,
    seed: u64,
    work: std::path::PathBuf,
    bar: &'a indicatif::ProgressBar,
}

impl Ctx<'_> {
    /// Trains from the start policy into a scratch directory, evaluates step 0 and every
    /// checkpoint with `eval_reward` and gold on the evaluation prompts, and keeps the final
    /// weights as `work/<name>` (without the optimizer state).
    fn train_and_evaluate(
        &self,
        pcfg: &PolicyConfig,
        reward: Option<&dyn Reward>,
        data: &TrainData,
        eval_reward: &dyn Reward,
        name: &str,
    ) -> Result<RunLog> {
        let scratch = self.work.join(format!(".train-{name}"));
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        }
        let outcome = train(pcfg, &self.shared.paths.policy, reward, data, &scratch, &RunOptions::default())?;
        self.bar.inc(pcfg.steps as u64);
        let eval_seed = self.seed * 1000 + 6;
        let (max_new, set, gold) = (self.cfg.max_new_tokens, &self.shared.eval, &self.shared.gold);
        let mut evals = vec![evaluate(self.start, self.start, eval_reward, gold, set, max_new, eval_seed, 0)?];
        for (step, dir) in &outcome.checkpoints {
            let spec = dir.to_str().ok_or_else(|| Error::invalid(dir, "path is not UTF-8"))?;
            let policy = Policy::load(spec, false, self.shared.chat)?;
            evals.push(evaluate(&policy, self.start, eval_reward, gold, set, max_new, eval_seed, *step)?);
        }
        if let Some((_, last)) = outcome.checkpoints.last() {
            let keep = self.work.join(name);
            replace_dir(last, &keep)?;
            // The Adam moments are twice the model's size and only a resume needs them.
            let opt = keep.join("optimizer.safetensors");
            if opt.exists() {
                std::fs::remove_file(&opt).map_err(|e| Error::io(&opt, e))?;
            }
        }
        std::fs::remove_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        let steps = outcome.metrics.into_iter().map(serde_json::Value::Object).collect();
        Ok(RunLog { name: name.into(), steps, evals })
    }
}
