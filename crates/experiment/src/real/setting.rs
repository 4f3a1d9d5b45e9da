//! Real models and human labels as a [`Setting`] of the experiment (see the module doc of
//! [`super`] for what gold is and what it measures).

use super::config::Resolved;
use super::data::{first_turns, read_pairs, read_prompts, short_pairs, split, xstest_prompts, Record, Split};
use super::judge::{AgainstStart, Judge, JudgeCounts, JudgeRecord};
use super::sample::{evaluate, pool, pool_on, sample, sample_on, EvalSet, UserTurn};
use crate::bon::Pool;
use crate::config::RunConfig;
use crate::guided::{GuidedPoint, Start};
use crate::pipeline::AsIs;
use crate::pipeline::{RmEval, SeedSetting, Setting, KINDS};
use crate::proxy::{train_ensemble, Ensemble, LabelledPair, Proxy, RmKind, RmTrainConfig};
use crate::sample::EvalPoint;
use mismatch_eval::rm;
use mismatch_eval::PromptKind;
use mismatch_models::seed::permutation;
use mismatch_models::{Error, Result};
use mismatch_policy::guided::Guide;
use mismatch_policy::train::{PolicyConfig, PrefPair, TrainData};
use mismatch_policy::Policy;
use mismatch_policy::Reward;
use mismatch_reward::ensemble::{aggregate, Aggregate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::path::Path;

/// What gold is: a reward model trained on the gold part of the labels, an LLM judge, or a
/// verifiable task's program.
enum Gold {
    Rm(Proxy),
    /// A verifiable task's program ([`super::task`]).
    Program(super::task::TaskGold),
    Judge {
        judge: Judge,
        human_pairs: JudgeCounts,
    },
}

/// What every seed shares: the data split, prompts, gold and its scores on the test part.
pub struct RealSetting {
    paths: Resolved,
    chat: bool,
    split: Split,
    rl_prompts: Vec<String>,
    eval: EvalSet,
    /// Start-policy samples (rendered prompt, completion) every RM is standardised on.
    standardise_on: Vec<(String, String)>,
    gold: Gold,
    /// Gold scores of the test pairs' chosen and rejected responses (a judge: its preference
    /// for the chosen one, and one minus that).
    gold_test: (Vec<f64>, Vec<f64>),
    dpo_max_chars: usize,
    /// Where the best-of-n pool is sampled when not here (`real.pool_endpoint`).
    pool_endpoint: Option<mismatch_openai::Client>,
    max_new_tokens: usize,
}

impl RealSetting {
    /// Reads and splits the data, draws the standardisation samples and trains the gold RM:
    /// what every seed shares.
    pub fn new(cfg: &RunConfig, progress: bool) -> Result<Self> {
        let real = cfg.real.as_ref().ok_or_else(|| Error::Usage("the experiment has no [real] table".into()))?;
        let paths = real.resolve();
        let bar = crate::progress::bar(progress, 2, "gold RM");

        // Data: test (held-out labels) / gold / proxy parts, from the file or the task.
        bar.set_message("reading data");
        let file = if real.task.is_empty() { Some(file_data(cfg, real, &paths)?) } else { None };
        let start = Policy::load(&paths.policy, false, real.chat)?;
        let (split, rl_prompts, eval, program) = match file {
            Some((split, rl_prompts, eval)) => (split, rl_prompts, eval, None),
            None => {
                bar.set_message(format!("{} task: labelling start-policy samples", real.task));
                let t = super::task::build(cfg, real, &start)?;
                (t.split, t.rl_prompts, t.eval, Some(t.gold))
            }
        };

        // Standardisation samples: one start-policy sample per RL prompt (a seeded choice).
        bar.set_message("start-policy samples");
        let order = permutation(rl_prompts.len(), real.split_seed ^ 0x57d);
        let std_prompts: Vec<&str> =
            order.iter().cycle().take(real.standardise_samples).map(|&i| rl_prompts[i].as_str()).collect();
        let s = sample_on(&start, &std_prompts, cfg.max_new_tokens, real.split_seed ^ 0x5a3, cfg.threads)?;
        let standardise_on: Vec<(String, String)> =
            std_prompts.iter().zip(&s.texts).map(|(p, t)| (super::sample::as_user_turn(p), t.clone())).collect();
        drop(start);

        let (gold, gold_test) = match (&paths.judge, program) {
            (_, Some(program)) => {
                let gold_test = super::task::pair_golds(&program, &split.test)?;
                (Gold::Program(program), gold_test)
            }
            (Some((spec, template)), None) => {
                bar.set_message(format!("judge on {} held-out pairs", split.test.len()));
                let judge = load_judge(real, spec, template, cfg.seed)?;
                let mut human_pairs = JudgeCounts::default();
                let (q, c, j) = columns(&split.test);
                let p = judge.prefer(&q, &c, &j, &mut human_pairs)?;
                let not = p.iter().map(|x| 1.0 - x).collect();
                (Gold::Judge { judge, human_pairs }, (p, not))
            }
            (None, None) => {
                // The gold RM: one model on the gold part, standardised like the proxies.
                bar.set_message(format!("gold RM ({} pairs)", split.gold.len()));
                let gold_cfg = RmTrainConfig { epochs: real.gold_epochs, bootstrap: false, ..cfg.rm.train.clone() };
                let gold_pairs: Vec<LabelledPair> = split.gold.iter().map(|r| r.pair.clone()).collect();
                let gold_ens = train_ensemble(
                    &paths.gold_backbone,
                    &gold_pairs,
                    &gold_cfg,
                    1,
                    mismatch_models::seed::scaled(real.split_seed, 100, 3),
                    &standardise_on,
                    &bar,
                )?;
                let gold = gold_ens.proxy(RmKind::Single, cfg.rm.uwo_lambda, "gold")?;
                let gold_test = pair_scores(&gold, &split.test)?;
                (Gold::Rm(gold), gold_test)
            }
        };
        bar.finish_and_clear();

        Ok(RealSetting {
            paths,
            chat: real.chat,
            split,
            rl_prompts,
            eval,
            standardise_on,
            gold,
            gold_test,
            dpo_max_chars: real.dpo_max_chars,
            pool_endpoint: pool_client(real)?,
            max_new_tokens: cfg.max_new_tokens,
        })
    }
}

/// The preference file split by prompt into test / gold / proxy parts, the RL prompts and the
/// evaluation prompts.
fn file_data(
    cfg: &RunConfig,
    real: &super::config::RealConfig,
    paths: &Resolved,
) -> Result<(Split, Vec<String>, EvalSet)> {
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
            EvalSet {
                kinds: p.iter().map(|p| p.kind).collect(),
                prompts: p.into_iter().map(|p| p.text).collect(),
                answers: None,
            }
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
            EvalSet { kinds: vec![PromptKind::Other; p.len()], prompts: p, answers: None }
        }
    };
    Ok((split, rl_prompts, eval))
}

/// The judge `spec` with `template`: a local model, or an endpoint ([`endpoint_args`]).
fn load_judge(real: &super::config::RealConfig, spec: &str, template: &str, seed: u64) -> Result<Judge> {
    let template = mismatch_judge::Template::load(template)
        .map_err(|e| Error::Usage(format!("field `real.judge_template`: {e}")))?;
    let backend = mismatch_judge::from_spec(spec, &candle_core::Device::Cpu, &endpoint_args(real))
        .map_err(|e| Error::Usage(format!("field `real.judge`: {e}")))?;
    Ok(Judge::new(backend, template, seed))
}

/// The client of `real.pool_endpoint` (None when empty).
fn pool_client(real: &super::config::RealConfig) -> Result<Option<mismatch_openai::Client>> {
    endpoint_args(real)
        .client(&real.pool_endpoint)
        .transpose()
        .map_err(|e| Error::Usage(format!("field `real.pool_endpoint`: {e}")))
}

/// How the `[real]` table's endpoints are reached: the default client options, caching in
/// `real.pool_cache` (relative to the experiment file; empty: `$MISMATCH_HOME/cache/openai.sqlite`).
fn endpoint_args(real: &super::config::RealConfig) -> mismatch_openai::EndpointArgs {
    let c = real.pool_cache.as_str();
    let cache = (!c.is_empty()).then(|| real.base_dir.as_deref().map_or_else(|| c.into(), |b| b.join(c)));
    mismatch_openai::EndpointArgs { cache, ..Default::default() }
}

/// The prompts, chosen and rejected responses of `pairs`.
fn columns(pairs: &[Record]) -> (Vec<&str>, Vec<&str>, Vec<&str>) {
    let col = |f: fn(&Record) -> &str| pairs.iter().map(f).collect::<Vec<_>>();
    (col(|r| &r.pair.prompt), col(|r| &r.pair.chosen), col(|r| &r.pair.rejected))
}

/// Scores of the chosen and rejected responses of `pairs` (prompts as the RMs were trained on).
fn pair_scores(rm: &dyn Reward, pairs: &[Record]) -> Result<(Vec<f64>, Vec<f64>)> {
    let (p, c, j) = columns(pairs);
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
    let (p, chosen, rejected) = columns(pairs);
    let side = |x: &[&str]| -> Result<Vec<Vec<f32>>> {
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
    let (c, r) = (side(&chosen)?, side(&rejected)?);
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

/// Accuracy of gold (the gold RM, or the judge) on the held-out human labels (how far the
/// stand-in can be trusted); a tie loses, by RewardBench's rule ([`rm::prefers_first`]).
fn gold_accuracy(gold_test: &(Vec<f64>, Vec<f64>)) -> f64 {
    rm::share(&rm::prefers_first(&gold_test.0, &gold_test.1))
}

/// One RM on the test part: `acc_annotators` = accuracy on the held-out human labels,
/// `acc_gold` = agreement with the gold RM's preference (pairs where gold is not tied), `ece`
/// = calibration of σ(r_chosen − r_rejected) against the human labels, `length_corr` /
/// `gold_length_corr` = Pearson correlation of the RM's / gold's score with length in words.
fn evaluate_rm(scores: &(Vec<f64>, Vec<f64>), shared: &RealSetting, kind: RmKind, size: usize) -> RmEval {
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

/// One seed: its order of the proxy part and the start policy.
struct RealSeed<'a> {
    shared: &'a RealSetting,
    cfg: &'a RunConfig,
    start: Policy,
    train_recs: Vec<&'a Record>,
    pairs: Vec<LabelledPair>,
    /// When gold is a judge: the judge against this seed's start-policy evaluation samples.
    against: Option<AgainstStart<'a>>,
}

impl RealSeed<'_> {
    /// Gold as it reads the policy's raw prompts.
    fn gold_seen(&self) -> Box<dyn Reward + '_> {
        match (&self.shared.gold, &self.against) {
            (Gold::Rm(rm), _) => Box::new(UserTurn(rm)),
            (Gold::Program(g), _) => Box::new(AsIs(g)),
            (Gold::Judge { .. }, Some(a)) => Box::new(AsIs(a)),
            (Gold::Judge { .. }, None) => unreachable!("a judge seed has its references"),
        }
    }
}

impl Setting for RealSetting {
    fn seed<'a>(
        &'a self,
        cfg: &'a RunConfig,
        seed: u64,
        _multi: &indicatif::MultiProgress,
        _progress: bool,
    ) -> Result<Box<dyn SeedSetting + 'a>> {
        // The proxies train on prefixes of this seed's order of the proxy part.
        let n_max = *cfg.data.pair_sizes.iter().max().expect("validated");
        let order = permutation(self.split.proxy.len(), seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x11);
        let train_recs: Vec<&Record> = order.iter().take(n_max).map(|&i| &self.split.proxy[i]).collect();
        let pairs = train_recs.iter().map(|r| r.pair.clone()).collect();
        let start = Policy::load(&self.paths.policy, false, self.chat)?;
        let against = match &self.gold {
            Gold::Rm(_) | Gold::Program(_) => None,
            Gold::Judge { judge, .. } => {
                // The start policy's evaluation samples: what its step-0 evaluation draws.
                let prompts: Vec<&str> = self.eval.prompts.iter().map(String::as_str).collect();
                let s = sample(&start, &prompts, self.max_new_tokens, crate::pipeline::eval_seed(seed))?;
                let references: HashMap<String, String> = self.eval.prompts.iter().cloned().zip(s.texts).collect();
                Some(AgainstStart::new(judge, references))
            }
        };
        Ok(Box::new(RealSeed { shared: self, cfg, start, train_recs, pairs, against }))
    }
}

impl SeedSetting for RealSeed<'_> {
    fn rm_pairs(&self) -> &[LabelledPair] {
        &self.pairs
    }

    fn rm_backbone(&self) -> &str {
        &self.shared.paths.rm_backbone
    }

    fn standardise_on(&self) -> &[(String, String)] {
        &self.shared.standardise_on
    }

    fn evaluate_rms(&self, ens: &Ensemble, size: usize) -> Result<Vec<RmEval>> {
        let scores = test_scores(ens, self.cfg.rm.uwo_lambda, &self.shared.split.test)?;
        Ok(KINDS.into_iter().zip(scores).map(|(kind, s)| evaluate_rm(&s, self.shared, kind, size)).collect())
    }

    fn annotator_acc_gold(&self) -> Result<f64> {
        Ok(gold_accuracy(&self.shared.gold_test))
    }

    /// On the first evaluation prompts, always with the local start policy (the decoders read its
    /// next-token distribution).
    fn guided(&self, guide: Guide, proxy: &dyn Reward, seed: u64) -> Result<GuidedPoint> {
        let set = &self.shared.eval;
        let prompts: Vec<&str> =
            set.prompts.iter().take(self.cfg.guided.prompts.min(set.prompts.len())).map(String::as_str).collect();
        let (encode, decode) = (|p: &str| self.start.encode_prompt(p), |t: &[u32]| self.start.decode(t));
        let start = Start {
            model: self.start.model(),
            encode: &encode,
            decode: &decode,
            pad: self.start.pad(),
            stop: self.start.lm.tok.eos_ids.clone(),
        };
        crate::guided::measure(&start, &prompts, guide, proxy, self.gold_seen().as_ref(), self.cfg.max_new_tokens, seed)
    }

    /// On the first evaluation prompts.
    fn bon_pool(&self, seed: u64) -> Result<Pool> {
        let set = &self.shared.eval;
        let prompts: Vec<&str> =
            set.prompts.iter().take(self.cfg.bon.prompts.min(set.prompts.len())).map(String::as_str).collect();
        let (n_max, max_new) = (self.cfg.bon.n_max, self.cfg.max_new_tokens);
        match &self.shared.pool_endpoint {
            Some(client) => {
                pool_on(client, self.shared.chat, self.gold_seen().as_ref(), &prompts, n_max, max_new, seed)
            }
            None => pool(&self.start, self.gold_seen().as_ref(), &prompts, n_max, max_new, seed),
        }
    }

    fn as_seen<'r>(&self, reward: &'r dyn Reward) -> Box<dyn Reward + 'r> {
        Box::new(UserTurn(reward))
    }

    fn gold(&self) -> Box<dyn Reward + '_> {
        self.gold_seen()
    }

    fn rl_prompts(&self, n: usize, seed: u64) -> Vec<String> {
        let p = &self.shared.rl_prompts;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| p[rng.random_range(0..p.len())].clone()).collect()
    }

    /// The single-turn proxy-training pairs (the prompt is then one user turn the policy's chat
    /// template can wrap), responses within `real.dpo_max_chars`.
    fn dpo_data(&self) -> Result<TrainData> {
        let shared = self.shared;
        let pref = |r: &Record| PrefPair {
            prompt: r.first_user.clone().unwrap_or_default(),
            chosen: r.pair.chosen.clone(),
            rejected: r.pair.rejected.clone(),
        };
        let usable = |r: &&Record| {
            r.single_turn && r.pair.chosen.chars().count().max(r.pair.rejected.chars().count()) <= shared.dpo_max_chars
        };
        let pairs: Vec<PrefPair> = self.train_recs.iter().copied().filter(usable).map(pref).collect();
        if pairs.is_empty() {
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
        Ok(TrainData { pairs, eval_pairs, ..TrainData::default() })
    }

    fn policy_config(&self, base: PolicyConfig) -> PolicyConfig {
        PolicyConfig { chat: self.shared.chat, ..base }
    }

    fn start_spec(&self) -> &str {
        &self.shared.paths.policy
    }

    fn evaluate(&self, checkpoint: Option<&Path>, proxy: &dyn Reward, seed: u64, step: usize) -> Result<EvalPoint> {
        let (set, gold, max_new) = (&self.shared.eval, self.gold_seen(), self.cfg.max_new_tokens);
        match checkpoint {
            None => evaluate(&self.start, &self.start, proxy, gold.as_ref(), set, max_new, seed, step),
            Some(dir) => {
                let spec = dir.to_str().ok_or_else(|| Error::invalid(dir, "path is not UTF-8"))?;
                let policy = Policy::load(spec, false, self.shared.chat)?;
                evaluate(&policy, &self.start, proxy, gold.as_ref(), set, max_new, seed, step)
            }
        }
    }

    fn judge(&self) -> Option<JudgeRecord> {
        let (Gold::Judge { judge, human_pairs }, Some(a)) = (&self.shared.gold, &self.against) else { return None };
        let (chosen, rejected) = &self.shared.gold_test;
        Some(JudgeRecord {
            name: judge.name(),
            vs_start: *a.counts.lock().expect("judge counts"),
            human_pairs: *human_pairs,
            agrees_with_humans: rm::prefers_first(chosen, rejected).into_iter().filter(|&b| b).count(),
            held_out_pairs: self.shared.split.test.len(),
        })
    }
}
