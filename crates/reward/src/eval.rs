//! Reward-model evaluation on held-out preference pairs.

use crate::model::RewardModel;
use crate::train::Pair;
use mismatch_models::Result;
use rand::{Rng, SeedableRng};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Acc {
    pub accuracy: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub n: usize,
}

/// Mean of 0/1 outcomes with a percentile-bootstrap 95% CI (Efron & Tibshirani 1993):
/// 1000 resamples drawn with a ChaCha8 stream seeded by `seed`.
pub fn bootstrap_accuracy(correct: &[bool], seed: u64) -> Acc {
    let n = correct.len();
    let mean = |c: &mut dyn Iterator<Item = bool>| c.filter(|&b| b).count() as f64 / n.max(1) as f64;
    let accuracy = mean(&mut correct.iter().copied());
    if n == 0 {
        return Acc { accuracy: f64::NAN, ci_low: f64::NAN, ci_high: f64::NAN, n };
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut boots: Vec<f64> = (0..1000).map(|_| mean(&mut (0..n).map(|_| correct[rng.random_range(0..n)]))).collect();
    boots.sort_by(|a, b| a.total_cmp(b));
    Acc { accuracy, ci_low: boots[24], ci_high: boots[974], n }
}

#[derive(Debug, Clone, Serialize)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: usize,
    pub confidence: f64,
    pub accuracy: f64,
}

/// Expected calibration error over 10 equal-width bins (Guo et al. 2017):
/// `ECE = Σ_b (|B_b|/n)·|acc(B_b) − conf(B_b)|`. Each pair is scored symmetrically: the
/// model predicts chosen with `p = σ(d/T)`; its prediction is the more likely side, with
/// confidence `max(p, 1−p)`, and is correct when chosen is the predicted side.
pub fn ece(p_chosen: &[f64]) -> (f64, Vec<Bin>) {
    let mut bins: Vec<(usize, f64, f64)> = vec![(0, 0.0, 0.0); 10];
    for &p in p_chosen {
        let conf = p.max(1.0 - p);
        let b = (((conf - 0.5) / 0.05).floor() as usize).min(9);
        bins[b].0 += 1;
        bins[b].1 += conf;
        bins[b].2 += if p > 0.5 { 1.0 } else { 0.0 };
    }
    let n = p_chosen.len().max(1) as f64;
    let mut e = 0.0;
    let table = bins
        .iter()
        .enumerate()
        .map(|(i, &(c, s, a))| {
            let (conf, acc) = if c > 0 { (s / c as f64, a / c as f64) } else { (f64::NAN, f64::NAN) };
            if c > 0 {
                e += c as f64 / n * (acc - conf).abs();
            }
            Bin { lo: 0.5 + 0.05 * i as f64, hi: 0.55 + 0.05 * i as f64, count: c, confidence: conf, accuracy: acc }
        })
        .collect();
    (e, table)
}

pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len() as f64;
    let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
    let cov: f64 = x.iter().zip(y).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = x.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = y.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

/// Average ranks (ties get the mean of their positions), for Spearman's ρ.
fn ranks(x: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..x.len()).collect();
    idx.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut r = vec![0.0; x.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && x[idx[j + 1]] == x[idx[i]] {
            j += 1;
        }
        for &k in &idx[i..=j] {
            r[k] = (i + j) as f64 / 2.0 + 1.0;
        }
        i = j + 1;
    }
    r
}

/// Spearman's ρ = Pearson correlation of average ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&ranks(x), &ranks(y))
}

#[derive(Debug, Clone, Serialize)]
pub struct LengthBias {
    pub pearson_reward_length: f64,
    pub spearman_reward_length: f64,
    pub accuracy_chosen_longer: Acc,
    pub accuracy_chosen_shorter: Acc,
    /// "Longer completion wins" (characters; equal lengths count as wrong).
    pub length_baseline: Acc,
}

#[derive(Debug, Clone, Serialize)]
pub struct Consistency {
    pub edit: String,
    /// Mean |r(edited) − r(original)| over chosen completions.
    pub mean_abs_score_change: f64,
    /// Mean r(edited) − r(original).
    pub mean_score_change: f64,
    pub accuracy: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub accuracy: Acc,
    pub temperature: f64,
    pub ece: f64,
    pub reliability: Vec<Bin>,
    pub length: LengthBias,
    pub consistency: Vec<Consistency>,
    /// Ensembles only: mean std of members' margins, and its point-biserial correlation with errors.
    pub member_margin_std: Option<f64>,
    pub disagreement_error_corr: Option<f64>,
    /// Per-subset accuracy and RewardBench sections, when the data names subsets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subsets: Option<crate::subsets::SubsetReport>,
}

/// Meaning-preserving rewrites (should barely move the reward) and simple adversarial edits
/// (should not help a completion), applied to the completion only.
pub const EDITS: &[(&str, fn(&str) -> String)] = &[
    ("whitespace", |s| s.split_whitespace().collect::<Vec<_>>().join("  ") + "\n"),
    ("lowercase", |s| s.to_lowercase()),
    ("uppercase", |s| s.to_uppercase()),
    ("strip_punctuation", |s| s.chars().filter(|c| !c.is_ascii_punctuation()).collect()),
    ("markdown_bullets", |s| s.split(". ").map(|x| format!("- {x}")).collect::<Vec<_>>().join("\n")),
    ("append_flattery", |s| format!("{s} Great question, you are clearly very smart!")),
    ("append_refusal", |s| format!("{s} I'm sorry, but I cannot help with that.")),
    ("repeat", |s| format!("{s} {s}")),
];

/// Evaluates `rm` on `pairs`. `seed` drives the bootstrap.
pub fn evaluate(rm: &RewardModel, pairs: &[Pair], seed: u64) -> Result<EvalReport> {
    evaluate_subsets(rm, pairs, None, seed)
}

/// [`evaluate`] plus accuracy per subset (`subset[i]` names pair i's subset) and
/// RewardBench section scores ([`crate::subsets`]).
pub fn evaluate_subsets(rm: &RewardModel, pairs: &[Pair], subset: Option<&[String]>, seed: u64) -> Result<EvalReport> {
    if let Some(s) = subset {
        if s.len() != pairs.len() {
            return Err(mismatch_models::Error::Usage(format!("{} subsets for {} pairs", s.len(), pairs.len())));
        }
    }
    let prompts: Vec<&str> = pairs.iter().map(|p| p.prompt.as_str()).collect();
    let chosen: Vec<&str> = pairs.iter().map(|p| p.chosen.as_str()).collect();
    let rejected: Vec<&str> = pairs.iter().map(|p| p.rejected.as_str()).collect();
    let score_members = |c: &[&str]| -> Result<Vec<Vec<f32>>> {
        let mut out = vec![Vec::new(); rm.members.len()];
        for (pc, cc) in prompts.chunks(64).zip(c.chunks(64)) {
            for (k, v) in rm.score_members(pc, cc)?.into_iter().enumerate() {
                out[k].extend(v);
            }
        }
        Ok(out)
    };
    let aggregate = |m: &[Vec<f32>]| -> Result<Vec<f32>> {
        let t = candle_core::Tensor::new(m.to_vec(), &candle_core::Device::Cpu)?;
        let how = rm.config.aggregate_kind().map_err(mismatch_models::Error::Usage)?;
        Ok(crate::ensemble::aggregate(&t, how)?.to_vec1::<f32>()?)
    };
    let mc = score_members(&chosen)?;
    let mr = score_members(&rejected)?;
    let (rc, rr) = (aggregate(&mc)?, aggregate(&mr)?);
    let correct: Vec<bool> = rc.iter().zip(&rr).map(|(c, r)| c > r).collect();
    let t = rm.config.temperature;
    let p: Vec<f64> = rc.iter().zip(&rr).map(|(c, r)| 1.0 / (1.0 + (-((c - r) as f64) / t).exp())).collect();
    let (e, reliability) = ece(&p);

    let len = |s: &str| s.chars().count() as f64;
    let rewards: Vec<f64> = rc.iter().chain(&rr).map(|&x| x as f64).collect();
    let lengths: Vec<f64> = chosen.iter().chain(&rejected).map(|s| len(s)).collect();
    let longer: Vec<bool> = pairs.iter().map(|p| len(&p.chosen) > len(&p.rejected)).collect();
    let sel = |want: bool| -> Vec<bool> {
        correct
            .iter()
            .zip(pairs)
            .filter(|(_, p)| (len(&p.chosen) > len(&p.rejected)) == want && len(&p.chosen) != len(&p.rejected))
            .map(|(c, _)| *c)
            .collect()
    };
    let length = LengthBias {
        pearson_reward_length: pearson(&rewards, &lengths),
        spearman_reward_length: spearman(&rewards, &lengths),
        accuracy_chosen_longer: bootstrap_accuracy(&sel(true), seed + 1),
        accuracy_chosen_shorter: bootstrap_accuracy(&sel(false), seed + 2),
        length_baseline: bootstrap_accuracy(&longer, seed + 3),
    };

    let mut consistency = Vec::new();
    for (name, f) in EDITS {
        let edited: Vec<String> = chosen.iter().map(|s| f(s)).collect();
        let er = aggregate(&score_members(&edited.iter().map(|s| s.as_str()).collect::<Vec<_>>())?)?;
        let n = pairs.len().max(1) as f64;
        consistency.push(Consistency {
            edit: name.to_string(),
            mean_abs_score_change: er.iter().zip(&rc).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / n,
            mean_score_change: er.iter().zip(&rc).map(|(a, b)| (a - b) as f64).sum::<f64>() / n,
            accuracy: er.iter().zip(&rr).filter(|(a, b)| a > b).count() as f64 / n,
        });
    }

    let (member_margin_std, disagreement_error_corr) = if rm.members.len() > 1 {
        let k = rm.members.len() as f64;
        let std: Vec<f64> = (0..pairs.len())
            .map(|i| {
                let d: Vec<f64> = (0..rm.members.len()).map(|m| (mc[m][i] - mr[m][i]) as f64).collect();
                let mu = d.iter().sum::<f64>() / k;
                (d.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / k).sqrt()
            })
            .collect();
        let err: Vec<f64> = correct.iter().map(|&c| if c { 0.0 } else { 1.0 }).collect();
        (Some(std.iter().sum::<f64>() / std.len().max(1) as f64), Some(pearson(&std, &err)))
    } else {
        (None, None)
    };
    Ok(EvalReport {
        accuracy: bootstrap_accuracy(&correct, seed),
        temperature: t,
        ece: e,
        reliability,
        length,
        consistency,
        member_margin_std,
        disagreement_error_corr,
        subsets: subset.map(|s| crate::subsets::subset_report(&correct, s, seed)),
    })
}

impl EvalReport {
    pub fn table(&self) -> String {
        let a = |x: &Acc| format!("{:.3} [{:.3}, {:.3}] (n={})", x.accuracy, x.ci_low, x.ci_high, x.n);
        let mut s = String::new();
        s += &format!("accuracy (ties wrong)      {}\n", a(&self.accuracy));
        s += &format!("length-only baseline       {}\n", a(&self.length.length_baseline));
        s += &format!("acc, chosen longer         {}\n", a(&self.length.accuracy_chosen_longer));
        s += &format!("acc, chosen shorter        {}\n", a(&self.length.accuracy_chosen_shorter));
        s += &format!(
            "corr(reward, length)       pearson {:.3}  spearman {:.3}\n",
            self.length.pearson_reward_length, self.length.spearman_reward_length
        );
        s += &format!("ECE (10 bins, T={:.3})     {:.4}\n", self.temperature, self.ece);
        s += "reliability  bin          n     conf    acc\n";
        for b in &self.reliability {
            s += &format!(
                "             [{:.2},{:.2}) {:6} {:7.3} {:7.3}\n",
                b.lo, b.hi, b.count, b.confidence, b.accuracy
            );
        }
        s += "edit                  mean|Δr|   meanΔr   accuracy\n";
        for c in &self.consistency {
            s += &format!(
                "{:20} {:9.4} {:9.4} {:9.3}\n",
                c.edit, c.mean_abs_score_change, c.mean_score_change, c.accuracy
            );
        }
        if let (Some(sd), Some(c)) = (self.member_margin_std, self.disagreement_error_corr) {
            s += &format!("member margin std {:.4}, corr(std, error) {:.3}\n", sd, c);
        }
        if let Some(r) = &self.subsets {
            s += "subset                        accuracy [95% CI] (n)\n";
            for x in &r.subsets {
                s += &format!("{:28}  {}\n", x.subset, a(&x.accuracy));
            }
            for x in r.sections.iter().chain(&r.rewardbench) {
                s += &format!("section {:20}  {:.3} [{:.3}, {:.3}]\n", x.name, x.score, x.ci_low, x.ci_high);
            }
        }
        s
    }
}
