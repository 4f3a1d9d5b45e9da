//! `data agreement`: how much human annotators agree, and what that implies for a reward model.
//!
//! All three statistics come with a percentile bootstrap 95% CI over items (Efron & Tibshirani 1993, §13.3):
//! resample the N items with replacement B times (ChaCha8 seeded), recompute, take the 2.5% and 97.5%
//! quantiles (linear interpolation between order statistics; [`mismatch_eval::stats`]).

use crate::error::{DataError, Result};
use crate::types::*;
use mismatch_eval::stats::{percentile_ci, Resampler};
use std::fmt;

/// A point estimate with its bootstrap 95% interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// Fleiss' kappa (Fleiss 1971, "Measuring nominal scale agreement among many raters", Psychol. Bull. 76(5)).
///
/// `counts[i][j]` = n_ij, the number of the n raters who put item i in category j (every row sums to n):
///
///   P_i = Σ_j n_ij (n_ij − 1) / (n (n − 1))        agreement on item i (share of agreeing rater pairs)
///   P̄  = (1/N) Σ_i P_i                            observed agreement
///   p_j = Σ_i n_ij / (N n)                         share of all assignments in category j
///   P̄_e = Σ_j p_j²                                 agreement expected by chance
///   κ   = (P̄ − P̄_e) / (1 − P̄_e)
///
/// Returns NaN when P̄_e = 1 (every rating in one category: κ is undefined).
pub fn fleiss_kappa(counts: &[Vec<usize>]) -> std::result::Result<f64, String> {
    let Some(first) = counts.first() else {
        return Err("no items".into());
    };
    let n: usize = first.iter().sum();
    if n < 2 {
        return Err(format!("need at least 2 raters per item, item 0 has {n}"));
    }
    let k = first.len();
    let mut totals = vec![0usize; k];
    let mut pairs = 0usize;
    for (i, row) in counts.iter().enumerate() {
        if row.len() != k || row.iter().sum::<usize>() != n {
            return Err(format!("item {i}: every item needs {n} ratings over {k} categories"));
        }
        for (t, &c) in totals.iter_mut().zip(row) {
            *t += c;
            pairs += c * c.saturating_sub(1);
        }
    }
    Ok(kappa_from_sums(&totals, pairs, counts.len(), n))
}

/// κ from Σ_i n_ij (`totals`) and Σ_ij n_ij(n_ij − 1) (`pairs`): the sufficient statistics the bootstrap sums.
fn kappa_from_sums(totals: &[usize], pairs: usize, items: usize, n: usize) -> f64 {
    let p_bar = pairs as f64 / (items * n * (n - 1)) as f64;
    let p_e: f64 = totals.iter().map(|&t| (t as f64 / (items * n) as f64).powi(2)).sum();
    if p_e >= 1.0 {
        f64::NAN
    } else {
        (p_bar - p_e) / (1.0 - p_e)
    }
}

/// Per-item sufficient statistics.
#[derive(Debug, Clone, Copy, Default)]
struct Item {
    counts: [usize; 3],
    /// Σ_j n_ij (n_ij − 1): twice the number of agreeing annotator pairs.
    pairs: usize,
    loo_correct: usize,
    loo_total: usize,
}

fn item(labels: &[u8]) -> Item {
    let mut it = Item::default();
    for &l in labels {
        it.counts[l as usize] += 1;
    }
    it.pairs = it.counts.iter().map(|&c| c * c.saturating_sub(1)).sum();
    for a in 0..labels.len() {
        let others: Vec<u8> = labels.iter().enumerate().filter(|&(b, _)| b != a).map(|(_, &l)| l).collect();
        if let (1 | 2, Some(m @ (1 | 2))) = (labels[a], strict_majority(&others)) {
            it.loo_total += 1;
            it.loo_correct += usize::from(labels[a] == m);
        }
    }
    it
}

/// Inter-annotator agreement of a multi-annotator pairwise file.
#[derive(Debug, Clone)]
pub struct Agreement {
    pub path: String,
    pub items: usize,
    pub annotators: usize,
    /// Share of annotator pairs (over items and the n(n−1)/2 pairs per item) giving the same label, a tie
    /// counting as a label. Equals Fleiss' P̄.
    pub pairwise: Estimate,
    /// Pairwise agreement of each annotator pair (a, b), 1-based.
    pub per_pair: Vec<(usize, usize, f64)>,
    pub kappa: Estimate,
    /// Leave-one-out accuracy ceiling, see [`agreement`].
    pub ceiling: Estimate,
    /// Number of (item, annotator) cases the ceiling averages over.
    pub ceiling_cases: usize,
    /// Items by majority label: [tie, response1, response2, no majority].
    pub majority: [usize; 4],
    pub bootstrap: usize,
    pub seed: u64,
}

/// Computes pairwise agreement, Fleiss' κ and the reward-model accuracy ceiling, each with a bootstrap CI.
///
/// Ceiling (leave-one-out human accuracy against the majority): for each item i and annotator a whose label
/// y_ia is decisive (1 or 2), let M_i,−a be the label held by a strict majority of the *other* annotators
/// (with 3 annotators: the other two agree). Cases where M_i,−a is a tie or does not exist are excluded.
///
///   ceiling = Σ_(i,a) 1[y_ia = M_i,−a] / #cases
///
/// It is how often a held-out human agrees with the majority of the others on a decisive pair: a reward model
/// trained on such labels and scored against majority labels should not be expected to beat it, because the
/// labels themselves disagree this often.
pub fn agreement(ds: &Dataset, bootstrap: usize, seed: u64) -> Result<Agreement> {
    let Records::Judgements(js) = &ds.records else {
        return Err(DataError::file(
            &ds.path,
            format!(
                "agreement needs multi-annotator records (pandalm format: annotator1..N), this file is {}",
                ds.format
            ),
        ));
    };
    let n = js[0].labels.len();
    if n < 2 {
        return Err(DataError::file(&ds.path, format!("agreement needs at least 2 annotators per item, found {n}")));
    }
    if bootstrap < 2 {
        return Err(DataError::Usage(format!("--bootstrap: need at least 2 resamples, got {bootstrap}")));
    }
    let items: Vec<Item> = js.iter().map(|j| item(&j.labels)).collect();
    let stats = |idx: &mut dyn Iterator<Item = usize>| -> [f64; 3] {
        let (mut totals, mut pairs, mut correct, mut cases, mut m) = ([0usize; 3], 0, 0, 0, 0);
        for i in idx {
            let it = &items[i];
            for (t, c) in totals.iter_mut().zip(it.counts) {
                *t += c;
            }
            pairs += it.pairs;
            correct += it.loo_correct;
            cases += it.loo_total;
            m += 1;
        }
        let pairwise = pairs as f64 / (m * n * (n - 1)) as f64;
        let ceiling = if cases == 0 { f64::NAN } else { correct as f64 / cases as f64 };
        [pairwise, kappa_from_sums(&totals, pairs, m, n), ceiling]
    };
    let point = stats(&mut (0..items.len()));
    let mut resampler = Resampler::new(items.len(), seed);
    let mut samples: [Vec<f64>; 3] = Default::default();
    for _ in 0..bootstrap {
        for (s, v) in samples.iter_mut().zip(stats(&mut resampler.draw().iter().copied())) {
            s.push(v);
        }
    }
    let est = |k: usize| {
        let c = percentile_ci(point[k], items.len(), samples[k].clone());
        Estimate { value: c.mean, lo: c.lo, hi: c.hi }
    };
    let mut per_pair = Vec::new();
    for a in 0..n {
        for b in a + 1..n {
            let agree = js.iter().filter(|j| j.labels[a] == j.labels[b]).count();
            per_pair.push((a + 1, b + 1, agree as f64 / js.len() as f64));
        }
    }
    let mut majority = [0usize; 4];
    for j in js {
        majority[j.majority().map_or(3, usize::from)] += 1;
    }
    Ok(Agreement {
        path: ds.path.display().to_string(),
        items: js.len(),
        annotators: n,
        pairwise: est(0),
        per_pair,
        kappa: est(1),
        ceiling: est(2),
        ceiling_cases: items.iter().map(|i| i.loo_total).sum(),
        majority,
        bootstrap,
        seed,
    })
}

impl fmt::Display for Agreement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let e = |x: &Estimate, pct: bool| {
            let s = if pct { 100.0 } else { 1.0 };
            let d = if pct { 1 } else { 3 };
            format!("{:.d$}  [95% CI {:.d$}, {:.d$}]", x.value * s, x.lo * s, x.hi * s)
        };
        writeln!(
            f,
            "{}: {} items, {} annotators (labels: 0 tie, 1 response1, 2 response2)",
            self.path, self.items, self.annotators
        )?;
        writeln!(
            f,
            "majority label: {} response1, {} response2, {} tie, {} no majority",
            self.majority[1], self.majority[2], self.majority[0], self.majority[3]
        )?;
        writeln!(f, "pairwise agreement %:  {}", e(&self.pairwise, true))?;
        writeln!(f, "  share of annotator pairs giving the same label (tie counts as a label)")?;
        for (a, b, v) in &self.per_pair {
            writeln!(f, "  annotator{a} vs annotator{b}: {:.1}%", v * 100.0)?;
        }
        writeln!(f, "Fleiss' kappa:         {}", e(&self.kappa, false))?;
        writeln!(f, "  agreement beyond chance: (P - Pe) / (1 - Pe); 0 = chance, 1 = perfect (Fleiss 1971)")?;
        writeln!(f, "accuracy ceiling %:    {}", e(&self.ceiling, true))?;
        writeln!(
            f,
            "  how often one annotator's decisive label matches the majority of the others, over {} cases where both\n  \
             are decisive (ties excluded): a reward model scored against majority labels should not be expected\n  \
             to beat this",
            self.ceiling_cases
        )?;
        write!(f, "CIs: percentile bootstrap over items, {} resamples, seed {}", self.bootstrap, self.seed)
    }
}
