//! Reward-model evaluation on held-out preference pairs, from the scores a model gave: accuracy
//! with RewardBench's tie rule, calibration (ECE and the reliability table), length bias,
//! consistency under edits, ensemble disagreement, and agreement with a reference preference
//! (gold, or a gold RM). Scoring the pairs is the caller's part (`mismatch rm eval`, the
//! experiment); everything here reads numbers.

use crate::rank::{pearson, spearman};
use crate::stats::proportion_ci;
use serde::Serialize;

/// An accuracy with its 95% interval (BCa bootstrap over pairs, [`proportion_ci`]).
#[derive(Debug, Clone, Serialize)]
pub struct Acc {
    pub accuracy: f64,
    pub ci_low: f64,
    pub ci_high: f64,
    pub n: usize,
}

/// Share of correct outcomes with a BCa 95% CI. NaN for no outcomes.
pub fn accuracy(correct: &[bool], seed: u64) -> Acc {
    let c = proportion_ci(correct, seed);
    Acc { accuracy: c.mean, ci_low: c.lo, ci_high: c.hi, n: correct.len() }
}

/// Whether the model ranks the first response of each pair above the second. RewardBench v1's
/// rule (Lambert et al. 2024): a pair is won only if `r(chosen) > r(rejected)`; a tie loses.
pub fn prefers_first<T: PartialOrd>(ra: &[T], rb: &[T]) -> Vec<bool> {
    ra.iter().zip(rb).map(|(a, b)| a > b).collect()
}

/// Share of `true` (0 for no outcomes, so an empty evaluation reads as no agreement).
pub fn share(v: &[bool]) -> f64 {
    v.iter().filter(|&&b| b).count() as f64 / v.len().max(1) as f64
}

/// Agreement of the model's preference `ra > rb` with a reference preference `ta > tb`, over
/// the pairs where the reference is not tied (0 when it is tied everywhere).
pub fn agreement<T: PartialOrd>(ra: &[T], rb: &[T], ta: &[f64], tb: &[f64]) -> f64 {
    let (mut ok, mut n) = (0usize, 0usize);
    for i in 0..ra.len() {
        if ta[i] != tb[i] {
            n += 1;
            ok += ((ra[i] > rb[i]) == (ta[i] > tb[i])) as usize;
        }
    }
    ok as f64 / n.max(1) as f64
}

/// The probability `σ(m)` the model gives to the reference-better response of each pair whose
/// reference is not tied, with `m` the score margin toward that response computed in the scores'
/// own precision — what [`ece`] reads against the reference.
pub fn p_reference_better<T>(ra: &[T], rb: &[T], ta: &[f64], tb: &[f64]) -> Vec<f64>
where
    T: Copy + std::ops::Sub<Output = T> + Into<f64>,
{
    (0..ra.len())
        .filter(|&i| ta[i] != tb[i])
        .map(|i| {
            let m: f64 = if ta[i] > tb[i] { ra[i] - rb[i] } else { rb[i] - ra[i] }.into();
            1.0 / (1.0 + (-m).exp())
        })
        .collect()
}

/// One bin of the reliability table.
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
/// model predicts the first side with `p`; its prediction is the more likely side, with
/// confidence `max(p, 1−p)`, and is correct when the first side is the predicted side.
pub fn ece(p_first: &[f64]) -> (f64, Vec<Bin>) {
    let mut bins: Vec<(usize, f64, f64)> = vec![(0, 0.0, 0.0); 10];
    for &p in p_first {
        let conf = p.max(1.0 - p);
        let b = (((conf - 0.5) / 0.05).floor() as usize).min(9);
        bins[b].0 += 1;
        bins[b].1 += conf;
        bins[b].2 += if p > 0.5 { 1.0 } else { 0.0 };
    }
    let n = p_first.len().max(1) as f64;
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

/// How much of the model's preference length explains (Singhal et al. 2023, "A Long Way to
/// Go: Investigating Length Correlations in RLHF").
#[derive(Debug, Clone, Serialize)]
pub struct LengthBias {
    pub pearson_reward_length: f64,
    pub spearman_reward_length: f64,
    pub accuracy_chosen_longer: Acc,
    pub accuracy_chosen_shorter: Acc,
    /// "Longer completion wins" (equal lengths count as wrong).
    pub length_baseline: Acc,
    /// "Shorter completion wins" (equal lengths count as wrong).
    pub length_baseline_shorter: Acc,
    /// The RM against the better of the two length-only baselines on these pairs (picking the
    /// sign on the evaluation data itself makes it the strongest length-only rule, so beating
    /// it is conservative): which one, and the paired accuracy difference RM − baseline,
    /// `mean_i (1[RM right on i] − 1[baseline right on i])`, with a percentile-bootstrap 95% CI
    /// over pairs resampled together ([`crate::stats::diff_ci`]).
    pub vs_length_baseline: VsLength,
}

/// [`LengthBias::vs_length_baseline`].
#[derive(Debug, Clone, Serialize)]
pub struct VsLength {
    /// `"longer"` or `"shorter"` wins.
    pub baseline: &'static str,
    pub diff: crate::stats::Ci,
}

/// Length bias from the scores `(rc, rr)` and lengths `(lc, lr)` of the chosen and rejected
/// responses, with `correct[i] = rc[i] > rr[i]` ([`prefers_first`]). `seed` drives the intervals.
pub fn length_bias(rc: &[f64], rr: &[f64], lc: &[f64], lr: &[f64], correct: &[bool], seed: u64) -> LengthBias {
    let rewards: Vec<f64> = rc.iter().chain(rr).copied().collect();
    let lengths: Vec<f64> = lc.iter().chain(lr).copied().collect();
    let sel = |want: bool| -> Vec<bool> {
        (0..correct.len()).filter(|&i| lc[i] != lr[i] && (lc[i] > lr[i]) == want).map(|i| correct[i]).collect()
    };
    let longer: Vec<bool> = lc.iter().zip(lr).map(|(c, r)| c > r).collect();
    let shorter: Vec<bool> = lc.iter().zip(lr).map(|(c, r)| c < r).collect();
    let (name, best) = if share(&shorter) > share(&longer) { ("shorter", &shorter) } else { ("longer", &longer) };
    let ones = |v: &[bool]| v.iter().map(|&b| b as u8 as f64).collect::<Vec<_>>();
    LengthBias {
        pearson_reward_length: pearson(&rewards, &lengths),
        spearman_reward_length: spearman(&rewards, &lengths),
        accuracy_chosen_longer: accuracy(&sel(true), seed.wrapping_add(1)),
        accuracy_chosen_shorter: accuracy(&sel(false), seed.wrapping_add(2)),
        length_baseline: accuracy(&longer, seed.wrapping_add(3)),
        length_baseline_shorter: accuracy(&shorter, seed.wrapping_add(4)),
        vs_length_baseline: VsLength {
            baseline: name,
            diff: crate::stats::diff_ci(&ones(correct), &ones(best), seed.wrapping_add(5)),
        },
    }
}

/// How the score moves when the chosen response is edited.
#[derive(Debug, Clone, Serialize)]
pub struct Consistency {
    pub edit: String,
    /// Mean |r(edited) − r(original)| over chosen completions.
    pub mean_abs_score_change: f64,
    /// Mean r(edited) − r(original).
    pub mean_score_change: f64,
    /// Share of pairs on which the edited chosen response still beats the rejected one.
    pub accuracy: f64,
}

/// A rewrite of a response.
pub type Edit = fn(&str) -> String;

/// Meaning-preserving rewrites (should barely move the reward) and simple adversarial edits
/// (should not help a completion), applied to the completion only.
pub const EDITS: &[(&str, Edit)] = &[
    ("whitespace", |s| s.split_whitespace().collect::<Vec<_>>().join("  ") + "\n"),
    ("lowercase", |s| s.to_lowercase()),
    ("uppercase", |s| s.to_uppercase()),
    ("strip_punctuation", |s| s.chars().filter(|c| !c.is_ascii_punctuation()).collect()),
    ("markdown_bullets", |s| s.split(". ").map(|x| format!("- {x}")).collect::<Vec<_>>().join("\n")),
    ("append_flattery", |s| format!("{s} Great question, you are clearly very smart!")),
    ("append_refusal", |s| format!("{s} I'm sorry, but I cannot help with that.")),
    ("repeat", |s| format!("{s} {s}")),
];

/// Consistency under one edit from the scores of the edited chosen responses `edited`, the
/// original chosen `rc` and the rejected `rr`.
pub fn consistency(edit: &str, edited: &[f32], rc: &[f32], rr: &[f32]) -> Consistency {
    let n = rc.len().max(1) as f64;
    Consistency {
        edit: edit.to_string(),
        mean_abs_score_change: edited.iter().zip(rc).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / n,
        mean_score_change: edited.iter().zip(rc).map(|(a, b)| (a - b) as f64).sum::<f64>() / n,
        accuracy: edited.iter().zip(rr).filter(|(a, b)| a > b).count() as f64 / n,
    }
}

/// Ensemble disagreement (Coste et al. 2023; Eisenstein et al. 2023): the mean over pairs of the
/// population standard deviation of the members' margins `r_k(chosen) − r_k(rejected)`, and its
/// point-biserial (Pearson) correlation with the aggregate's errors — positive when members
/// disagree where the ensemble is wrong. `members_c[k][i]` is member k's score of pair i.
/// None for a single model.
pub fn disagreement(members_c: &[Vec<f32>], members_r: &[Vec<f32>], correct: &[bool]) -> Option<(f64, f64)> {
    if members_c.len() < 2 {
        return None;
    }
    let k = members_c.len() as f64;
    let std: Vec<f64> = (0..correct.len())
        .map(|i| {
            let d: Vec<f64> = members_c.iter().zip(members_r).map(|(c, r)| (c[i] - r[i]) as f64).collect();
            let mu = d.iter().sum::<f64>() / k;
            (d.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / k).sqrt()
        })
        .collect();
    let err: Vec<f64> = correct.iter().map(|&c| if c { 0.0 } else { 1.0 }).collect();
    Some((std.iter().sum::<f64>() / std.len().max(1) as f64, pearson(&std, &err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ece_by_hand() {
        // p = 0.9 (right, bin 8), 0.8 (right, bin 6), 0.3 → confidence 0.7 predicting the second
        // side (wrong for "first is better", bin 4). ECE = (|1−0.9| + |1−0.8| + |0−0.7|)/3.
        let (e, bins) = ece(&[0.9, 0.8, 0.3]);
        assert!((e - (0.1 + 0.2 + 0.7) / 3.0).abs() < 1e-12, "{e}");
        assert_eq!(bins.iter().map(|b| b.count).sum::<usize>(), 3);
        assert_eq!(bins[8].count, 1);
        assert!(bins[0].confidence.is_nan());
    }

    #[test]
    fn ties_lose_and_agreement_skips_reference_ties() {
        assert_eq!(prefers_first(&[1.0, 2.0, 3.0], &[1.0, 1.0, 4.0]), vec![false, true, false]);
        assert_eq!(share(&[true, false, false, true]), 0.5);
        assert_eq!(share(&[]), 0.0);
        // Reference tied on pair 1: agreement over pairs 0 and 2 only.
        let (ra, rb) = ([2.0f32, 0.0, 1.0], [1.0f32, 5.0, 3.0]);
        let (ta, tb) = ([1.0, 2.0, 5.0], [0.0, 2.0, 4.0]);
        assert_eq!(agreement(&ra, &rb, &ta, &tb), 0.5);
        let p = p_reference_better(&ra, &rb, &ta, &tb);
        // Pair 0: margin 1 toward the reference-better a; pair 2: margin −2.
        assert_eq!(p.len(), 2);
        assert!((p[0] - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-15);
        assert!((p[1] - 1.0 / (1.0 + 2.0f64.exp())).abs() < 1e-15);
    }

    #[test]
    fn length_bias_consistency_and_disagreement_by_hand() {
        let (rc, rr) = ([3.0, 1.0, 2.0, 0.5], [1.0, 2.0, 1.0, 0.0]);
        let (lc, lr) = ([10.0, 5.0, 8.0, 4.0], [5.0, 9.0, 8.0, 2.0]);
        let correct = prefers_first(&rc, &rr);
        let b = length_bias(&rc, &rr, &lc, &lr, &correct, 0);
        // Chosen longer: pairs 0 and 3, both right; chosen shorter: pair 1, wrong; pair 2 tied.
        assert_eq!((b.accuracy_chosen_longer.accuracy, b.accuracy_chosen_longer.n), (1.0, 2));
        assert_eq!((b.accuracy_chosen_shorter.accuracy, b.accuracy_chosen_shorter.n), (0.0, 1));
        assert_eq!(b.length_baseline.accuracy, 0.5);
        // Shorter wins only on pair 1 (0.25), so the baseline to beat is "longer" (0.5); the RM is
        // right on pairs 0, 2, 3 and the baseline on 0, 3: differences (0, 0, 1, 0), mean 0.25.
        assert_eq!(b.length_baseline_shorter.accuracy, 0.25);
        assert_eq!(b.vs_length_baseline.baseline, "longer");
        assert_eq!((b.vs_length_baseline.diff.mean, b.vs_length_baseline.diff.n), (0.25, 4));
        assert!(b.vs_length_baseline.diff.lo <= 0.25 && b.vs_length_baseline.diff.hi >= 0.25);
        let flipped = length_bias(&rc, &rr, &lr, &lc, &correct, 0);
        assert_eq!(flipped.vs_length_baseline.baseline, "shorter");
        assert_eq!(flipped.vs_length_baseline.diff.mean, 0.25);
        let c = consistency("x", &[2.0, 1.0], &[1.0, 3.0], &[0.0, 2.0]);
        assert_eq!((c.mean_abs_score_change, c.mean_score_change, c.accuracy), (1.5, -0.5, 0.5));
        assert!(disagreement(&[vec![1.0]], &[vec![0.0]], &[true]).is_none());
        // Two members, margins (1, 3) and (2, 2): stds 1 and 0, mean 0.5; the wrong pair has std 1.
        let (sd, corr) =
            disagreement(&[vec![1.0, 2.0], vec![3.0, 2.0]], &[vec![0.0, 0.0], vec![0.0, 0.0]], &[false, true]).unwrap();
        assert_eq!(sd, 0.5);
        assert!((corr - 1.0).abs() < 1e-12);
    }
}
