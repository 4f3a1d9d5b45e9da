//! The embedded world as a [`Setting`] of the experiment: gold is the world's known reward.
//!
//! Per seed: pre-train (or load) its start policy ([`RunConfig::start_seed_of`]); sample two
//! start-policy responses per training prompt and label them with the simulated annotators
//! (the proxies' data) and likewise per held-out prompt (the RM evaluation pairs); draw the
//! held-out evaluation prompts (shared by all seeds). The world reads every response with its
//! grammar's parser ([`mismatch_world::meters`]).

use crate::bon::{self, Pool};
use crate::config::RunConfig;
use crate::guided::{GuidedPoint, Start};
use crate::pipeline::{AsIs, RmEval, SeedSetting, Setting, KINDS};
use crate::proxy::{label_pairs, Ensemble, LabelledPair};
use crate::sample::{encode_prompt, evaluate, sample, EvalPoint, EOS_ID, PAD_ID};
use mismatch_eval::rm;
use mismatch_models::{Error, Gpt, Result};
use mismatch_policy::guided::Guide;
use mismatch_policy::train::{PolicyConfig, PrefPair, TrainData};
use mismatch_policy::Reward;
use mismatch_world::corpus::sample_prompt;
use mismatch_world::lang::words;
use mismatch_world::world::{GoldReward, World};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// The world, its tokenizer, and where start policies are cached.
pub struct WorldSetting {
    pub world: World,
    pub tok: tokenizers::Tokenizer,
    pub home: PathBuf,
}

impl WorldSetting {
    pub fn new(cfg: &RunConfig, home: &Path) -> Result<Self> {
        Ok(WorldSetting {
            world: World::new(&cfg.world)?,
            tok: mismatch_world::start::tokenizer()?,
            home: home.to_path_buf(),
        })
    }
}

/// One seed of the world: its start policy, labelled pairs and evaluation prompts.
struct WorldSeed<'a> {
    w: &'a WorldSetting,
    cfg: &'a RunConfig,
    start_spec: String,
    start: Gpt,
    pairs: Vec<LabelledPair>,
    eval_pairs: Vec<LabelledPair>,
    standardise_on: Vec<(String, String)>,
    eval_prompts: Vec<String>,
}

impl Setting for WorldSetting {
    fn seed<'a>(
        &'a self,
        cfg: &'a RunConfig,
        seed: u64,
        multi: &indicatif::MultiProgress,
        progress: bool,
    ) -> Result<Box<dyn SeedSetting + 'a>> {
        let world = &self.world;
        let start_seed = cfg.start_seed_of(seed);
        let sbar =
            multi.add(crate::progress::bar(progress, cfg.start.steps as u64, &format!("start policy {start_seed}")));
        let start_dir = mismatch_world::start::start_policy(world, &cfg.start, start_seed, &self.home, &sbar)?;
        let (start, _) = Gpt::load(&start_dir, &candle_core::Device::Cpu, false)?;
        let start_spec = start_dir.to_str().ok_or_else(|| Error::invalid(&start_dir, "path is not UTF-8"))?.to_string();
        let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x11);

        // Preference data: two start-policy samples per prompt, annotator labels.
        let n_max = *cfg.data.pair_sizes.iter().max().expect("validated");
        let (tok, max_new) = (&self.tok, cfg.max_new_tokens);
        let draws = |prompts: &[usize], n: usize, rng: &mut ChaCha8Rng, sseed: u64| {
            draw_pairs(world, &start, tok, prompts, n, rng, sseed, max_new)
        };
        let train_draws = draws(&world.train, n_max, &mut rng, mismatch_models::seed::derive(seed, 1))?;
        let pairs = label_pairs(world, &train_draws, mismatch_models::seed::derive(seed, 2));
        let standardise_on =
            train_draws.iter().take(256).map(|(i, a, _)| (world.prompts[*i].text.clone(), a.clone())).collect();
        let eval_draws = draws(&world.heldout, cfg.data.eval_pairs, &mut rng, mismatch_models::seed::derive(seed, 3))?;
        let eval_pairs = label_pairs(world, &eval_draws, mismatch_models::seed::derive(seed, 4));

        let eval_prompts = eval_prompts(world, cfg);
        Ok(Box::new(WorldSeed { w: self, cfg, start_spec, start, pairs, eval_pairs, standardise_on, eval_prompts }))
    }
}

/// Share of `pairs` (gold not tied) whose chosen response gold prefers: the labels' agreement
/// with gold.
pub(crate) fn annotator_agreement(world: &World, pairs: &[LabelledPair]) -> Result<f64> {
    let gold = |side: fn(&LabelledPair) -> &str| -> Result<Vec<f64>> {
        pairs.iter().map(|p| world.gold_score(&p.prompt, side(p))).collect()
    };
    let (gc, gr) = (gold(|p| &p.chosen)?, gold(|p| &p.rejected)?);
    let (chosen, rejected) = (vec![1.0; gc.len()], vec![0.0; gc.len()]);
    Ok(rm::agreement(&chosen, &rejected, &gc, &gr))
}

/// The fixed held-out evaluation prompts (shared by all seeds).
pub(crate) fn eval_prompts(world: &World, cfg: &RunConfig) -> Vec<String> {
    let mut erng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0xe7a1);
    (0..cfg.eval_prompts)
        .map(|_| world.prompts[sample_prompt(&world.prompts, &world.heldout, &mut erng)].text.clone())
        .collect()
}

/// `n` prompts drawn from `prompts` (indices into the world's prompts, every kind equally
/// likely) with two samples of `policy` each: `(prompt index, response 1, response 2)`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn draw_pairs(
    world: &World,
    policy: &Gpt,
    tok: &tokenizers::Tokenizer,
    prompts: &[usize],
    n: usize,
    rng: &mut ChaCha8Rng,
    sseed: u64,
    max_new: usize,
) -> Result<Vec<(usize, String, String)>> {
    let idx: Vec<usize> = (0..n).map(|_| sample_prompt(&world.prompts, prompts, rng)).collect();
    let rep: Vec<&str> = idx.iter().flat_map(|&i| [world.prompts[i].text.as_str(); 2]).collect();
    let mut texts = Vec::new();
    for (c, chunk) in rep.chunks(512).enumerate() {
        texts.extend(sample(policy, tok, chunk, max_new, mismatch_models::seed::offset(sseed, c as u64))?.texts);
    }
    Ok(idx.iter().enumerate().map(|(j, &i)| (i, texts[2 * j].clone(), texts[2 * j + 1].clone())).collect())
}

impl WorldSeed<'_> {
    fn gold_of(&self, prompts: &[&str], completions: &[&str]) -> Result<Vec<f64>> {
        prompts.iter().zip(completions).map(|(p, c)| self.w.world.gold_score(p, c)).collect()
    }
}

impl SeedSetting for WorldSeed<'_> {
    fn rm_pairs(&self) -> &[LabelledPair] {
        &self.pairs
    }

    fn rm_backbone(&self) -> &str {
        &self.start_spec
    }

    fn standardise_on(&self) -> &[(String, String)] {
        &self.standardise_on
    }

    /// Accuracy against gold and against the annotators, ECE against gold, length bias.
    fn evaluate_rms(&self, ens: &Ensemble, size: usize) -> Result<Vec<RmEval>> {
        let prompts: Vec<&str> = self.eval_pairs.iter().map(|p| p.prompt.as_str()).collect();
        let a: Vec<&str> = self.eval_pairs.iter().map(|p| p.chosen.as_str()).collect();
        let b: Vec<&str> = self.eval_pairs.iter().map(|p| p.rejected.as_str()).collect();
        let (ga, gb) = (self.gold_of(&prompts, &a)?, self.gold_of(&prompts, &b)?);
        let lens: Vec<f64> = a.iter().chain(&b).map(|s| words(s).len() as f64).collect();
        let mut out = Vec::new();
        for kind in KINDS {
            let p = ens.proxy(kind, self.cfg.rm.uwo_lambda, &format!("{}-{size}", kind.name()))?;
            let (ra, rb) = (p.score(&prompts, &a)?, p.score(&prompts, &b)?);
            let p_gold = rm::p_reference_better(&ra, &rb, &ga, &gb);
            out.push(RmEval::new(kind, size, (&ra[..], &rb[..]), (&ga[..], &gb[..]), &p_gold, &lens));
        }
        Ok(out)
    }

    /// Share of the evaluation pairs (gold not tied) on which the annotators chose gold's side.
    fn annotator_acc_gold(&self) -> Result<f64> {
        annotator_agreement(&self.w.world, &self.eval_pairs)
    }

    fn bon_pool(&self, seed: u64) -> Result<Pool> {
        let n = self.cfg.bon.prompts.min(self.eval_prompts.len());
        let prompts: Vec<&str> = self.eval_prompts[..n].iter().map(String::as_str).collect();
        bon::pool(&self.w.world, &self.start, &self.w.tok, &prompts, self.cfg.bon.n_max, self.cfg.max_new_tokens, seed)
    }

    fn as_seen<'r>(&self, reward: &'r dyn Reward) -> Box<dyn Reward + 'r> {
        Box::new(AsIs(reward))
    }

    fn gold(&self) -> Box<dyn Reward + '_> {
        Box::new(GoldReward(&self.w.world))
    }

    /// Every kind of the world's training prompts equally likely.
    fn rl_prompts(&self, n: usize, seed: u64) -> Vec<String> {
        let world = &self.w.world;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| world.prompts[sample_prompt(&world.prompts, &world.train, &mut rng)].text.clone()).collect()
    }

    /// The proxies' pairs; the held-out RM evaluation pairs are DPO's `eval_*` pairs.
    fn dpo_data(&self) -> Result<TrainData> {
        if self.pairs.is_empty() {
            return Err(Error::Usage("DPO needs at least one preference pair".into()));
        }
        let pref = |p: &LabelledPair| PrefPair {
            prompt: p.prompt.clone(),
            chosen: p.chosen.clone(),
            rejected: p.rejected.clone(),
        };
        Ok(TrainData {
            pairs: self.pairs.iter().map(pref).collect(),
            eval_pairs: self.eval_pairs.iter().map(pref).collect(),
            ..TrainData::default()
        })
    }

    fn policy_config(&self, base: PolicyConfig) -> PolicyConfig {
        base
    }

    fn start_spec(&self) -> &str {
        &self.start_spec
    }

    fn guided(&self, guide: Guide, proxy: &dyn Reward, seed: u64) -> Result<GuidedPoint> {
        let tok = &self.w.tok;
        let decode = |t: &[u32]| tok.decode(t, true).map_err(|e| Error::Usage(format!("decoding: {e}")));
        let encode = |p: &str| encode_prompt(tok, p);
        let start = Start { model: &self.start, encode: &encode, decode: &decode, pad: PAD_ID, stop: vec![EOS_ID] };
        let n = self.cfg.guided.prompts.min(self.eval_prompts.len());
        let prompts: Vec<&str> = self.eval_prompts[..n].iter().map(String::as_str).collect();
        crate::guided::measure(
            &start,
            &prompts,
            guide,
            proxy,
            &GoldReward(&self.w.world),
            self.cfg.max_new_tokens,
            seed,
        )
    }

    fn evaluate(&self, checkpoint: Option<&Path>, proxy: &dyn Reward, seed: u64, step: usize) -> Result<EvalPoint> {
        let prompts: Vec<&str> = self.eval_prompts.iter().map(String::as_str).collect();
        let (w, max_new) = (&self.w, self.cfg.max_new_tokens);
        match checkpoint {
            None => evaluate(&w.world, &self.start, &self.start, proxy, &w.tok, &prompts, max_new, seed, step),
            Some(dir) => {
                let (policy, _) = Gpt::load(dir, &candle_core::Device::Cpu, false)?;
                evaluate(&w.world, &policy, &self.start, proxy, &w.tok, &prompts, max_new, seed, step)
            }
        }
    }
}
