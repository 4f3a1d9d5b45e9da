//! Proxy reward models of the world: the reward crate's decoder-backbone RMs
//! (`mismatch_reward::train::train_in_memory`) with the start policy's directory as backbone —
//! a copy of its GPT plus a scalar head on the hidden state of the last token (`<eos>`),
//! trained on annotator-labelled pairs with the Bradley-Terry loss
//! `L = −log σ(r(x, y_c) − r(x, y_r))` (Ouyang et al. 2022).
//!
//! Kinds (Coste et al. 2023, "Reward Model Ensembles Help Mitigate Overoptimization"; Ramé et al.
//! 2024, "WARM"):
//! - `single`: member 0 alone, trained on every pair (what a lone RM would be);
//! - `mean`, `wco`, `uwo`: the K members (head seeds `seed..seed+K`; with `bootstrap`, the
//!   default, members 1..K each train on a bootstrap resample of the pairs), combined by
//!   `mismatch_reward::ensemble::aggregate` — mean, min, mean − λ·var. Members that differ only
//!   in head seed and data order agree almost everywhere in this world (same backbone, same
//!   pairs), so a conservative objective had nothing to be conservative about; bagging makes
//!   their errors differ where the data are thin, i.e. on the policy's drifted samples;
//! - `warm`: one model whose weights are the element-wise mean of the K members' weights
//!   (`RewardModel::save_warm`); all members start from the same pre-trained backbone, the
//!   condition WARM needs.
//!
//! What the world adds is a thin wrapper: scores are standardised per member on the start
//! policy's samples (the RM's own training responses), `r ← (r − μ)/σ`, so that one KL
//! coefficient means the same for every RM, and the start policy scores about 0, as Gao et al.
//! centre their scores.

use candle_core::{Device, Tensor};
use mismatch_models::{Error, Result};
use mismatch_reward::ensemble::{aggregate, Aggregate};
use mismatch_reward::{train_in_memory, Pair, TrainConfig};
use mismatch_reward::{RewardModel, RmConfig};
use mismatch_world::world::World;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// One labelled comparison: the annotators preferred `chosen`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LabelledPair {
    pub prompt: String,
    pub chosen: String,
    pub rejected: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmTrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    /// Train only the scalar heads on a frozen, shared backbone (a linear probe).
    pub frozen: bool,
    /// Bagging (Breiman 1996): member k trains on its own bootstrap resample of the pairs (n
    /// draws with replacement, seeded by `seed + k`) instead of the whole set in its own order,
    /// so members' errors differ where the data are thin, which is what a conservative ensemble
    /// needs to see (Coste et al. 2023 vary data order and seeds; Lakshminarayanan et al. 2017).
    pub bootstrap: bool,
}

impl Default for RmTrainConfig {
    fn default() -> Self {
        Self { epochs: 2, batch_size: 32, lr: 3e-4, weight_decay: 0.0, frozen: false, bootstrap: true }
    }
}

/// One reward model (a one-member [`RewardModel`]) and its standardisation.
pub struct Member {
    rm: RewardModel,
    shift: f32,
    scale: f32,
}

impl Member {
    /// Wraps `rm`, standardised to mean 0 and standard deviation 1 on `on` (when ≥ 2 rows).
    fn standardised(rm: RewardModel, on: &[(String, String)]) -> Result<Self> {
        let mut m = Member { rm, shift: 0.0, scale: 1.0 };
        if on.len() < 2 {
            return Ok(m);
        }
        let p: Vec<&str> = on.iter().map(|x| x.0.as_str()).collect();
        let c: Vec<&str> = on.iter().map(|x| x.1.as_str()).collect();
        let s = m.rm.score(&p, &c)?;
        let n = s.len() as f64;
        let mu = s.iter().map(|&x| x as f64).sum::<f64>() / n;
        let sd = (s.iter().map(|&x| (x as f64 - mu).powi(2)).sum::<f64>() / (n - 1.0)).sqrt().max(1e-6);
        (m.shift, m.scale) = (mu as f32, sd as f32);
        Ok(m)
    }

    fn score(&self, prompts: &[&str], comps: &[&str]) -> Result<Vec<f32>> {
        Ok(self.rm.score(prompts, comps)?.into_iter().map(|x| (x - self.shift) / self.scale).collect())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RmKind {
    Single,
    Mean,
    Wco,
    Uwo,
    Warm,
}

impl RmKind {
    pub fn name(self) -> &'static str {
        match self {
            RmKind::Single => "single",
            RmKind::Mean => "mean",
            RmKind::Wco => "wco",
            RmKind::Uwo => "uwo",
            RmKind::Warm => "warm",
        }
    }
}

/// A proxy reward: one or several members and how to combine them.
pub struct Proxy {
    pub kind: RmKind,
    pub label: String,
    members: Vec<Arc<Member>>,
    how: Aggregate,
}

impl Proxy {
    pub fn member_scores(&self, prompts: &[&str], comps: &[&str]) -> Result<Vec<Vec<f32>>> {
        self.members.iter().map(|m| m.score(prompts, comps)).collect()
    }
}

impl mismatch_policy::Reward for Proxy {
    fn name(&self) -> String {
        format!("proxy:{}", self.label)
    }
    fn score(&self, prompts: &[&str], comps: &[&str]) -> Result<Vec<f32>> {
        if prompts.len() != comps.len() {
            return Err(Error::Usage(format!("{} prompts but {} completions", prompts.len(), comps.len())));
        }
        if prompts.is_empty() {
            return Ok(vec![]);
        }
        let per = self.member_scores(prompts, comps)?;
        if per.len() == 1 {
            return Ok(per.into_iter().next().expect("one member"));
        }
        Ok(aggregate(&Tensor::new(per, &Device::Cpu)?, self.how)?.to_vec1::<f32>()?)
    }
}

/// A trained ensemble, from which every [`RmKind`] is built.
pub struct Ensemble {
    pub members: Vec<Arc<Member>>,
    pub warm: Arc<Member>,
}

/// Trains `k` members (head seeds `seed + i`) on `backbone` (a reward-crate backbone spec: the
/// start-policy directory in the world, `minilm-l6` or any HF directory for real models) and
/// their WARM average, each standardised on `standardise_on`.
pub fn train_ensemble(
    backbone: &str,
    pairs: &[LabelledPair],
    cfg: &RmTrainConfig,
    k: usize,
    seed: u64,
    standardise_on: &[(String, String)],
    bar: &indicatif::ProgressBar,
) -> Result<Ensemble> {
    let tc = TrainConfig {
        members: k.max(1),
        epochs: cfg.epochs,
        batch_size: cfg.batch_size,
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        frozen: cfg.frozen,
        seed,
        ..TrainConfig::new(backbone)
    };
    let train: Vec<Pair> = pairs
        .iter()
        .map(|p| Pair { prompt: p.prompt.clone(), chosen: p.chosen.clone(), rejected: p.rejected.clone(), margin: 0.0 })
        .collect();
    let mut rm = if cfg.bootstrap {
        let mut members = Vec::with_capacity(tc.members);
        let mut config = None;
        for i in 0..tc.members {
            let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_add(i as u64) ^ 0xb007);
            // Member 0 (the `single` proxy) sees every pair, as a lone RM would.
            let resample: Vec<Pair> = if i == 0 {
                train.clone()
            } else {
                (0..train.len()).map(|_| train[rng.random_range(0..train.len())].clone()).collect()
            };
            let one = TrainConfig { members: 1, seed: mismatch_models::seed::offset(seed, i as u64), ..tc.clone() };
            let mut rm = train_in_memory(&one, &resample, &[], false)?;
            config.get_or_insert_with(|| RmConfig { members: tc.members, ..rm.config.clone() });
            members.append(&mut rm.members);
            bar.inc(1);
        }
        RewardModel::from_members(config.expect("at least one member"), members)?
    } else {
        let rm = train_in_memory(&tc, &train, &[], false)?;
        bar.inc(tc.members as u64);
        rm
    };
    // WARM: the members' weight average, written by the reward crate and read back.
    let tmp = tempfile::tempdir().map_err(|e| Error::io(Path::new("."), e))?;
    let warm_dir = tmp.path().join("warm");
    rm.save_warm(&warm_dir)?;
    let warm = RewardModel::load(&warm_dir, &Device::Cpu)?;
    let config = rm.config.clone();
    let members = std::mem::take(&mut rm.members)
        .into_iter()
        .map(|m| {
            let one = RewardModel::from_members(RmConfig { members: 1, ..config.clone() }, vec![m])?;
            Ok(Arc::new(Member::standardised(one, standardise_on)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Ensemble { members, warm: Arc::new(Member::standardised(warm, standardise_on)?) })
}

impl Ensemble {
    pub fn proxy(&self, kind: RmKind, uwo_lambda: f64, label: &str) -> Result<Proxy> {
        let (members, how) = match kind {
            RmKind::Single => (vec![self.members[0].clone()], Aggregate::Mean),
            RmKind::Mean => (self.members.clone(), Aggregate::Mean),
            RmKind::Wco => (self.members.clone(), Aggregate::WorstCase),
            RmKind::Uwo => (self.members.clone(), Aggregate::UncertaintyWeighted { lambda: uwo_lambda }),
            RmKind::Warm => (vec![self.warm.clone()], Aggregate::Mean),
        };
        Ok(Proxy { kind, label: label.to_string(), members, how })
    }
}

/// Labelled pairs: for each draw, a prompt from `prompts` (kinds balanced), two samples of the
/// start policy, and the annotators' choice. Identical responses are skipped.
pub fn label_pairs(world: &World, samples: &[(usize, String, String)], seed: u64) -> Vec<LabelledPair> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    samples
        .iter()
        .filter(|(_, a, b)| a != b)
        .map(|(i, a, b)| {
            let p = &world.prompts[*i];
            let a_wins = world.annotators.choose(&world.gold, p, a, b, &mut rng);
            let (c, r) = if a_wins { (a, b) } else { (b, a) };
            LabelledPair { prompt: p.text.clone(), chosen: c.clone(), rejected: r.clone() }
        })
        .collect()
}
