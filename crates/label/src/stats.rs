//! Agreement statistics, computed from the labels table on every request (dashboard and `/api/stats`).
//!
//! Labels are nominal over four categories in the file's terms: `a`, `b`, `tie`, `both_bad`. Every
//! interval is a percentile bootstrap 95% CI over items (Efron & Tibshirani 1993, §13.3): resample the items
//! with replacement B times from one seeded ChaCha8 stream, recompute, take the 2.5% and 97.5% type-7
//! quantiles ([`mismatch_eval::stats::percentile_ci`]).

use mismatch_data::agreement::fleiss_kappa;
use mismatch_eval::stats::{percentile_ci, quantile, Resampler};
use rusqlite::Connection;
use serde::Serialize;
use std::collections::BTreeMap;

/// The four label categories, in the order of the count vectors.
pub const CHOICES: [&str; 4] = ["a", "b", "tie", "both_bad"];

/// A point estimate and its bootstrap 95% interval (`lo`/`hi` null when no resample is finite), over `n`
/// items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub value: f64,
    pub lo: Option<f64>,
    pub hi: Option<f64>,
    pub n: usize,
}

/// Per-annotator numbers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnnotatorStats {
    pub name: String,
    pub admin: bool,
    pub labels: usize,
    pub skipped: usize,
    /// Median of the per-label times (page served → label received), milliseconds; the type-7 quantile at
    /// 0.5, i.e. the middle value, or the mean of the two middle values for an even count.
    pub median_time_ms: Option<f64>,
    /// Agreement with the majority of the others: over this annotator's labels on items where the *other*
    /// annotators' labels have a strict majority M (more than half of them), the share equal to M.
    /// Leaving the annotator out keeps their own vote from inflating the number.
    pub majority_agreement: Option<f64>,
    /// Labels the previous number averages over.
    pub majority_cases: usize,
    /// Share of this annotator's decisive labels (`a` or `b`) that chose the response shown on the left;
    /// 0.5 is no position bias (the order is a fair coin per assignment).
    pub left_rate: Option<f64>,
    pub decisive: usize,
}

/// Agreement of one pair of annotators.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairStats {
    pub a: String,
    pub b: String,
    /// Items both labelled.
    pub items: usize,
    /// Share of those items where their labels are equal.
    pub agreement: f64,
}

/// Everything the dashboard shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub items: usize,
    pub labels: usize,
    /// K: annotators wanted per item.
    pub per_item: usize,
    /// Items with at least K labels.
    pub items_complete: usize,
    /// Label counts by category.
    pub choices: BTreeMap<String, usize>,
    pub annotators: Vec<AnnotatorStats>,
    /// Pairwise agreement: over items with at least two labels, the share of annotator pairs on the same
    /// item giving the same label,
    ///   Σ_i Σ_j n_ij (n_ij − 1) / Σ_i n_i (n_i − 1)
    /// (n_ij: labels of item i in category j, n_i = Σ_j n_ij). With equal n_i it is Fleiss' P̄.
    pub pairwise_agreement: Option<Interval>,
    pub pairs: Vec<PairStats>,
    /// Fleiss' κ (Fleiss 1971) over the items with exactly K labels, K ≥ 2, four categories:
    ///   P_i = Σ_j n_ij (n_ij − 1) / (K (K − 1)),  P̄ = mean_i P_i,
    ///   p_j = Σ_i n_ij / (N K),  P̄_e = Σ_j p_j²,  κ = (P̄ − P̄_e) / (1 − P̄_e)
    /// ([`mismatch_data::agreement::fleiss_kappa`]); null when there are no such items or P̄_e = 1.
    pub fleiss_kappa: Option<Interval>,
    /// Leave-one-out accuracy ceiling, as `mismatch data agreement` defines it: over decisive labels (`a`/`b`)
    /// whose item's other labels have a decisive strict majority M, the share equal to M. A reward model
    /// scored against majority labels should not be expected to beat it.
    pub ceiling: Option<Interval>,
    /// Share of all decisive labels that chose the left-shown response (0.5 = no position bias).
    pub position_bias: Option<f64>,
    pub decisive: usize,
    pub bootstrap: usize,
    pub seed: u64,
}

/// One label row as the statistics need it.
#[derive(Debug, Clone)]
struct Row {
    item: i64,
    annotator: i64,
    choice: usize,
    chose_left: Option<bool>,
    time_ms: i64,
}

/// Per-item sufficient statistics for the bootstrap.
#[derive(Debug, Clone, Copy, Default)]
struct ItemSums {
    counts: [usize; 4],
    /// Σ_j n_ij (n_ij − 1) and n_i (n_i − 1).
    agree: usize,
    pairs: usize,
    ceiling_hits: usize,
    ceiling_cases: usize,
}

/// The label held by more than half of `labels`.
fn strict_majority(labels: &[usize]) -> Option<usize> {
    let mut c = [0usize; 4];
    for &l in labels {
        c[l] += 1;
    }
    (0..4).find(|&j| 2 * c[j] > labels.len())
}

/// Computes [`Stats`] from the database; `bootstrap` resamples seeded by `seed`.
pub fn compute(conn: &Connection, per_item: usize, bootstrap: usize, seed: u64) -> rusqlite::Result<Stats> {
    let items: i64 = conn.query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0))?;
    let mut stmt =
        conn.prepare("SELECT item, annotator, choice, chose_left, time_ms FROM labels ORDER BY item, annotator")?;
    let rows: Vec<Row> = stmt
        .query_map([], |r| {
            let choice: String = r.get(2)?;
            Ok(Row {
                item: r.get(0)?,
                annotator: r.get(1)?,
                choice: CHOICES.iter().position(|&c| c == choice).unwrap_or(3),
                chose_left: r.get(3)?,
                time_ms: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut people = conn.prepare(
        "SELECT a.id, a.name, a.admin, (SELECT COUNT(*) FROM assignments s WHERE s.annotator = a.id AND s.status = 'skipped')
         FROM annotators a ORDER BY a.id",
    )?;
    let people: Vec<(i64, String, bool, i64)> =
        people.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<rusqlite::Result<_>>()?;
    Ok(from_rows(items as usize, &rows, &people, per_item, bootstrap, seed))
}

fn from_rows(
    n_items: usize,
    rows: &[Row],
    people: &[(i64, String, bool, i64)],
    per_item: usize,
    bootstrap: usize,
    seed: u64,
) -> Stats {
    // Labels grouped by item (rows are sorted by item): (annotator, choice).
    let mut by_item: BTreeMap<i64, Vec<(i64, usize)>> = BTreeMap::new();
    for r in rows {
        by_item.entry(r.item).or_default().push((r.annotator, r.choice));
    }
    let mut sums = Vec::new();
    // Per annotator: (majority hits, majority cases).
    let mut loo: BTreeMap<i64, (usize, usize)> = BTreeMap::new();
    let mut pair_counts: BTreeMap<(i64, i64), (usize, usize)> = BTreeMap::new();
    for labels in by_item.values() {
        let mut s = ItemSums::default();
        for &(_, c) in labels {
            s.counts[c] += 1;
        }
        let n = labels.len();
        s.agree = s.counts.iter().map(|&c| c * c.saturating_sub(1)).sum();
        s.pairs = n * n.saturating_sub(1);
        for (k, &(who, mine)) in labels.iter().enumerate() {
            let others: Vec<usize> = labels.iter().enumerate().filter(|&(o, _)| o != k).map(|(_, l)| l.1).collect();
            if let Some(m) = strict_majority(&others) {
                let e = loo.entry(who).or_default();
                e.0 += usize::from(mine == m);
                e.1 += 1;
                if mine < 2 && m < 2 {
                    s.ceiling_hits += usize::from(mine == m);
                    s.ceiling_cases += 1;
                }
            }
            for &(other, theirs) in &labels[k + 1..] {
                let key = (who.min(other), who.max(other));
                let e = pair_counts.entry(key).or_default();
                e.0 += usize::from(mine == theirs);
                e.1 += 1;
            }
        }
        sums.push(s);
    }
    let multi: Vec<ItemSums> = sums.iter().copied().filter(|s| s.pairs > 0).collect();
    let pairwise = ratio_ci(&multi, |s| (s.agree, s.pairs), bootstrap, seed);
    let ceiling_items: Vec<ItemSums> = multi.iter().copied().filter(|s| s.ceiling_cases > 0).collect();
    let ceiling = ratio_ci(&ceiling_items, |s| (s.ceiling_hits, s.ceiling_cases), bootstrap, seed);
    let complete: Vec<Vec<usize>> =
        sums.iter().filter(|s| s.counts.iter().sum::<usize>() == per_item).map(|s| s.counts.to_vec()).collect();
    let kappa = kappa_ci(&complete, per_item, bootstrap, seed);

    let name = |id: i64| people.iter().find(|p| p.0 == id).map_or_else(|| format!("#{id}"), |p| p.1.clone());
    let annotators = people
        .iter()
        .map(|(id, name, admin, skipped)| {
            let mine: Vec<&Row> = rows.iter().filter(|r| r.annotator == *id).collect();
            let mut times: Vec<f64> = mine.iter().map(|r| r.time_ms as f64).collect();
            times.sort_by(|a, b| a.total_cmp(b));
            let decisive: Vec<bool> = mine.iter().filter_map(|r| r.chose_left).collect();
            let (hits, cases) = loo.get(id).copied().unwrap_or_default();
            AnnotatorStats {
                name: name.clone(),
                admin: *admin,
                labels: mine.len(),
                skipped: *skipped as usize,
                median_time_ms: (!times.is_empty()).then(|| quantile(&times, 0.5)),
                majority_agreement: (cases > 0).then(|| hits as f64 / cases as f64),
                majority_cases: cases,
                left_rate: share(&decisive),
                decisive: decisive.len(),
            }
        })
        .collect();
    let pairs = pair_counts
        .iter()
        .map(|(&(a, b), &(same, n))| PairStats { a: name(a), b: name(b), items: n, agreement: same as f64 / n as f64 })
        .collect();
    let decisive: Vec<bool> = rows.iter().filter_map(|r| r.chose_left).collect();
    let mut choices = BTreeMap::new();
    for (j, c) in CHOICES.iter().enumerate() {
        choices.insert(c.to_string(), rows.iter().filter(|r| r.choice == j).count());
    }
    Stats {
        items: n_items,
        labels: rows.len(),
        per_item,
        items_complete: sums.iter().filter(|s| s.counts.iter().sum::<usize>() >= per_item).count(),
        choices,
        annotators,
        pairwise_agreement: pairwise,
        pairs,
        fleiss_kappa: kappa,
        ceiling,
        position_bias: share(&decisive),
        decisive: decisive.len(),
        bootstrap,
        seed,
    }
}

/// Share of `true`s, `None` when empty.
fn share(xs: &[bool]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().filter(|&&x| x).count() as f64 / xs.len() as f64)
}

fn interval(point: f64, n: usize, boots: Vec<f64>) -> Interval {
    let ci = percentile_ci(point, n, boots);
    let finite = |x: f64| x.is_finite().then_some(x);
    Interval { value: point, lo: finite(ci.lo), hi: finite(ci.hi), n }
}

/// Σ num / Σ den over the items, with a bootstrap CI over items; `None` with no items.
fn ratio_ci(
    items: &[ItemSums],
    f: impl Fn(&ItemSums) -> (usize, usize),
    bootstrap: usize,
    seed: u64,
) -> Option<Interval> {
    let ratio = |idx: &mut dyn Iterator<Item = usize>| {
        let (num, den) = idx.fold((0, 0), |(n, d), i| {
            let (a, b) = f(&items[i]);
            (n + a, d + b)
        });
        num as f64 / den as f64
    };
    if items.is_empty() {
        return None;
    }
    let point = ratio(&mut (0..items.len()));
    let mut r = Resampler::new(items.len(), seed);
    let boots = (0..bootstrap).map(|_| ratio(&mut r.draw().iter().copied())).collect();
    Some(interval(point, items.len(), boots))
}

/// Fleiss' κ of the count rows with a bootstrap CI; `None` with no rows, K < 2 or an undefined point value.
fn kappa_ci(rows: &[Vec<usize>], per_item: usize, bootstrap: usize, seed: u64) -> Option<Interval> {
    if rows.is_empty() || per_item < 2 {
        return None;
    }
    let point = fleiss_kappa(rows).ok().filter(|k| k.is_finite())?;
    let mut r = Resampler::new(rows.len(), seed);
    let boots = (0..bootstrap)
        .map(|_| {
            let sample: Vec<Vec<usize>> = r.draw().iter().map(|&i| rows[i].clone()).collect();
            fleiss_kappa(&sample).unwrap_or(f64::NAN)
        })
        .collect();
    Some(interval(point, rows.len(), boots))
}
