//! `mismatch rm eval`: scores held-out preference pairs with a reward model and measures them
//! with [`mismatch_eval::rm`] (accuracy with RewardBench's tie rule and a BCa interval, ECE and
//! the reliability table, length bias, consistency under edits, ensemble disagreement) and
//! [`mismatch_eval::subsets`] (per-subset accuracy, RewardBench sections).

use crate::model::RewardModel;
use crate::train::Pair;
use mismatch_eval::rm::{accuracy, consistency, disagreement, ece, length_bias, prefers_first};
pub use mismatch_eval::rm::{Acc, Bin, Consistency, LengthBias, EDITS};
use mismatch_models::Result;
use serde::Serialize;

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
    pub subsets: Option<mismatch_eval::subsets::SubsetReport>,
}

/// Evaluates `rm` on `pairs`. `seed` drives the bootstrap.
pub fn evaluate(rm: &RewardModel, pairs: &[Pair], seed: u64) -> Result<EvalReport> {
    evaluate_subsets(rm, pairs, None, seed)
}

/// [`evaluate`] plus accuracy per subset (`subset[i]` names pair i's subset) and
/// RewardBench section scores ([`mismatch_eval::subsets`]).
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
    let correct = prefers_first(&rc, &rr);
    let t = rm.config.temperature;
    let p: Vec<f64> = rc.iter().zip(&rr).map(|(c, r)| 1.0 / (1.0 + (-((c - r) as f64) / t).exp())).collect();
    let (e, reliability) = ece(&p);

    let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let chars = |v: &[&str]| v.iter().map(|s| s.chars().count() as f64).collect::<Vec<f64>>();
    let length = length_bias(&f64s(&rc), &f64s(&rr), &chars(&chosen), &chars(&rejected), &correct, seed);

    let mut edits = Vec::new();
    for (name, f) in EDITS {
        let edited: Vec<String> = chosen.iter().map(|s| f(s)).collect();
        let er = aggregate(&score_members(&edited.iter().map(|s| s.as_str()).collect::<Vec<_>>())?)?;
        edits.push(consistency(name, &er, &rc, &rr));
    }
    let (member_margin_std, disagreement_error_corr) = disagreement(&mc, &mr, &correct).unzip();
    Ok(EvalReport {
        accuracy: accuracy(&correct, seed),
        temperature: t,
        ece: e,
        reliability,
        length,
        consistency: edits,
        member_margin_std,
        disagreement_error_corr,
        subsets: subset.map(|s| mismatch_eval::subsets::subset_report(&correct, s, seed)),
    })
}

impl EvalReport {
    pub fn table(&self) -> String {
        let a = |x: &Acc| format!("{:.3} [{:.3}, {:.3}] (n={})", x.accuracy, x.ci_low, x.ci_high, x.n);
        let mut s = String::new();
        s += &format!("accuracy (ties wrong)      {}\n", a(&self.accuracy));
        s += &format!("length-only baseline       {}\n", a(&self.length.length_baseline));
        s += &format!("  shorter wins instead     {}\n", a(&self.length.length_baseline_shorter));
        let v = &self.length.vs_length_baseline;
        s += &format!(
            "acc − best length rule     {:+.3} [{:+.3}, {:+.3}] ({} wins)\n",
            v.diff.mean, v.diff.lo, v.diff.hi, v.baseline
        );
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
