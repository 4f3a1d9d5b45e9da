//! RL against a proxy reward: RLOO (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics")
//! with the KL penalty inside the sequence reward, as TRL's RLOO trainer:
//!
//! ```text
//! r_i = R_proxy(x, y_i) − β · Σ_t (log π(y_i,t) − log π_start(y_i,t))      (k1 estimator)
//! A_i = r_i − 1/(k−1) Σ_{j≠i} r_j                                         (leave-one-out baseline)
//! L   = −mean_i A_i · Σ_t log π(y_i,t)
//! ```
//!
//! One on-policy gradient step per batch of `prompts_per_step × k` samples. The maths lives in
//! `mismatch_policy::{rloo, kl}`; this file is the loop, the logging (TRL names) and the
//! periodic evaluation on held-out prompts.

use crate::corpus::sample_prompt;
use crate::sample::{evaluate, sample, sequence_kl, EvalPoint, PAD_ID};
use crate::world::World;
use mismatch_models::optim::AdamW;
use mismatch_models::{completion_logprobs, Error, Gpt, Result};
use mismatch_policy::{rloo, Reward};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RlConfig {
    pub steps: usize,
    pub prompts_per_step: usize,
    /// k samples per prompt (RLOO group).
    pub samples_per_prompt: usize,
    pub lr: f64,
    /// KL coefficients β of the runs against the single proxy.
    pub kl_coefs: Vec<f64>,
    /// Evaluate every this many steps (and at step 0 and the end).
    pub eval_every: usize,
    /// RMs optimised at the first (small) KL coefficient besides the single proxy.
    pub mitigations: Vec<crate::proxy::RmKind>,
}

impl Default for RlConfig {
    fn default() -> Self {
        Self {
            steps: 30,
            prompts_per_step: 16,
            samples_per_prompt: 4,
            lr: 2e-4,
            kl_coefs: vec![0.01, 0.1],
            eval_every: 5,
            mitigations: vec![crate::proxy::RmKind::Wco, crate::proxy::RmKind::Uwo, crate::proxy::RmKind::Warm],
        }
    }
}

/// Everything an optimisation run needs besides its reward.
pub struct RunCtx<'a> {
    pub world: &'a World,
    pub start_dir: &'a Path,
    pub tok: &'a tokenizers::Tokenizer,
    pub eval_prompts: &'a [&'a str],
    pub max_new: usize,
    pub eval_seed: u64,
    /// Where the final policy of each run is saved (`<dir>/<run name>`), if anywhere.
    pub save_dir: Option<&'a Path>,
}

/// Saves a run's final policy as a world checkpoint (HF layout with the world tokenizer).
pub fn save_policy(ctx: &RunCtx, policy: &Gpt, name: &str) -> Result<()> {
    let Some(dir) = ctx.save_dir else { return Ok(()) };
    let out = dir.join(name);
    policy.save(&out)?;
    let put = |f: &str, v: serde_json::Value| {
        mismatch_models::checkpoint::write_atomic(
            &out.join(f),
            serde_json::to_string_pretty(&v).expect("json").as_bytes(),
        )
    };
    put("tokenizer.json", World::tokenizer_json())?;
    put("tokenizer_config.json", World::tokenizer_config())
}

/// One optimisation run's log: per-step metrics (TRL names) and evaluation points.
#[derive(Debug, Clone, Serialize)]
pub struct RunLog {
    pub name: String,
    pub steps: Vec<serde_json::Value>,
    pub evals: Vec<EvalPoint>,
}

pub fn load_pair(dir: &Path) -> Result<(Gpt, Vec<(String, candle_core::Var)>, Gpt)> {
    let dev = candle_core::Device::Cpu;
    let (policy, vm) = Gpt::load(dir, &dev, true)?;
    let vm = vm.expect("trainable");
    let mut vars: Vec<(String, candle_core::Var)> =
        vm.data().lock().expect("varmap").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    let (reference, _) = Gpt::load(dir, &dev, false)?;
    Ok((policy, vars, reference))
}

/// RLOO against `reward` with KL coefficient `beta`.
#[allow(clippy::too_many_arguments)]
pub fn rloo(
    ctx: &RunCtx,
    cfg: &RlConfig,
    reward: &dyn Reward,
    eval_reward: &dyn Reward,
    beta: f64,
    seed: u64,
    name: &str,
    bar: &indicatif::ProgressBar,
) -> Result<RunLog> {
    let (policy, vars, reference) = load_pair(ctx.start_dir)?;
    let mut opt = AdamW::new(vars, cfg.lr, 0.0)?;
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let k = cfg.samples_per_prompt;
    let mut log = RunLog { name: name.into(), steps: vec![], evals: vec![] };
    let eval = |p: &Gpt, step: usize| {
        evaluate(ctx.world, p, &reference, eval_reward, ctx.tok, ctx.eval_prompts, ctx.max_new, ctx.eval_seed, step)
    };
    log.evals.push(eval(&policy, 0)?);
    for step in 1..=cfg.steps {
        let idx: Vec<usize> = (0..cfg.prompts_per_step)
            .flat_map(|_| {
                let i = sample_prompt(&ctx.world.prompts, &ctx.world.train, &mut rng);
                std::iter::repeat_n(i, k)
            })
            .collect();
        let prompts: Vec<&str> = idx.iter().map(|&i| ctx.world.prompts[i].text.as_str()).collect();
        let s =
            sample(&policy, ctx.tok, &prompts, ctx.max_new, seed.wrapping_mul(1_000_003).wrapping_add(step as u64))?;
        let comps: Vec<&str> = s.texts.iter().map(String::as_str).collect();
        let scores = reward.score(&prompts, &comps)?;
        let kl = sequence_kl(&reference, &s)?;
        let kl32: Vec<f32> = kl.iter().map(|&x| x as f32).collect();
        let rewards = rloo::kl_shaped_rewards(&scores, &kl32, beta)?;
        let adv = rloo::advantages(&rewards, k)?;
        let lp = completion_logprobs(&policy, &s.prompt_ids, &s.tokens, PAD_ID)?;
        let loss = rloo::reinforce_loss(&lp.logprobs, &lp.mask, &adv)?;
        let l = loss.to_scalar::<f32>()? as f64;
        if !l.is_finite() {
            return Err(Error::Usage(format!("{name}: policy loss is {l} at step {step}: stopping")));
        }
        opt.step(&loss)?;
        let n = scores.len() as f64;
        let mean = |x: &mut dyn Iterator<Item = f64>| x.sum::<f64>() / n;
        let sc = mean(&mut scores.iter().map(|&x| x as f64));
        let klm = mean(&mut kl.iter().copied());
        log.steps.push(serde_json::json!({
            "step": step,
            "episode": step * idx.len(),
            "objective/scores": sc,
            "objective/kl": klm,
            "objective/non_score_reward": -beta * klm,
            "objective/rlhf_reward": sc - beta * klm,
            "loss/policy_avg": l,
            "completions/mean_length": mean(&mut s.tokens.iter().map(|t| t.len() as f64)),
            "lr": cfg.lr,
            "beta": beta,
        }));
        if step % cfg.eval_every.max(1) == 0 || step == cfg.steps {
            log.evals.push(eval(&policy, step)?);
        }
        bar.inc(1);
    }
    save_policy(ctx, &policy, name)?;
    Ok(log)
}
