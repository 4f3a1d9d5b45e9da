//! Agreement of a judge (an LLM judge or a reward model) with several human annotators, beside
//! the humans' agreement with each other, so that a judge can be placed inside or outside the
//! human band (Zheng et al. 2023, "Judging LLM-as-a-Judge", §4.2: GPT-4 agrees with experts
//! about as often as experts agree with each other; Dubois et al. 2023, "AlpacaFarm", §3.3:
//! a simulated annotator's agreement with the human mode against the humans' own).
//!
//! Labels are PandaLM's: 0 tie, 1 response 1 better, 2 response 2 better. With `H` annotators
//! and items `i = 1..N`, human labels `yᵢₐ` and judge labels `jᵢ` (absent where the judge gave
//! none — those items are left out of every judge statistic and counted):
//!
//! - **human–human agreement** `P_hh = Σᵢ Σ_{a<b} 1[yᵢₐ = yᵢ_b] / (N·H(H−1)/2)` (ties are a label);
//! - **judge–human agreement** `P_jh = Σᵢ Σₐ 1[jᵢ = yᵢₐ] / (N·H)`, the same statistic with the
//!   judge as one more annotator paired with each human, so `P_jh` and `P_hh` compare directly;
//! - **the human band**: the lowest and highest agreement of one annotator pair (`per_pair`) and
//!   of each annotator with the others (`per_annotator`) — a judge inside it agrees with the
//!   humans as a human does;
//! - **leave-one-out accuracy** against the majority of the *other* annotators, on the cases
//!   (i, a) where that majority `M_{i,−a}` exists and is decisive (1 or 2): a human's is
//!   `Σ 1[yᵢₐ = M_{i,−a}] / #cases` over cases where `yᵢₐ` is decisive too (the reward-model
//!   ceiling of `data agreement`); the judge's sits in the same seat, over the same (i, a) with
//!   `jᵢ` decisive, so both are read against the same references;
//! - **accuracy against the majority of all H** on items whose strict majority is decisive, a
//!   judge tie counting ½ (how a reward model is scored against majority labels).
//!
//! Every rate has a percentile-bootstrap 95% CI over items ([`crate::stats::bootstrap`]).

use crate::stats::{bootstrap, Ci};
use crate::{Error, Result};
use serde::Serialize;

/// The agreement statistics of the module documentation.
#[derive(Debug, Clone, Serialize)]
pub struct JudgeAgreement {
    pub items: usize,
    pub annotators: usize,
    /// Items the judge labelled (the judge statistics are over these).
    pub judged: usize,
    /// Judge labels per class over the judged items: [tie, response 1, response 2].
    pub judge_labels: [usize; 3],
    pub human_human: Ci,
    pub judge_human: Ci,
    /// `(a, b, agreement)`, annotators 1-based, over all items.
    pub per_pair: Vec<(usize, usize, f64)>,
    /// Agreement of annotator a (1-based) with the other annotators, and of the judge with
    /// annotator a, over the judged items: `(a, human a with others, judge with a)`.
    pub per_annotator: Vec<(usize, f64, f64)>,
    /// `[min, max]` of `per_pair`: the human band of pairwise agreement.
    pub human_band: (f64, f64),
    pub human_loo_accuracy: Ci,
    pub judge_loo_accuracy: Ci,
    pub judge_majority_accuracy: Ci,
}

fn strict_majority(labels: &[u8]) -> Option<u8> {
    let mut c = [0usize; 3];
    for &l in labels {
        c[l as usize] += 1;
    }
    (0..3u8).find(|&l| 2 * c[l as usize] > labels.len())
}

/// Per-item sufficient statistics: (hits, cases) of each rate.
#[derive(Clone, Copy, Default)]
struct Counts {
    hh: (f64, f64),
    jh: (f64, f64),
    human_loo: (f64, f64),
    judge_loo: (f64, f64),
    majority: (f64, f64),
}

fn counts(y: &[u8], j: Option<u8>) -> Counts {
    let h = y.len();
    let mut c = Counts::default();
    for a in 0..h {
        for b in a + 1..h {
            c.hh.0 += f64::from(y[a] == y[b]);
            c.hh.1 += 1.0;
        }
    }
    if let Some(j) = j {
        c.jh = (y.iter().filter(|&&l| l == j).count() as f64, h as f64);
        if let Some(m @ (1 | 2)) = strict_majority(y) {
            c.majority = (
                if j == m {
                    1.0
                } else if j == 0 {
                    0.5
                } else {
                    0.0
                },
                1.0,
            );
        }
    }
    for a in 0..h {
        let others: Vec<u8> = y.iter().enumerate().filter(|&(b, _)| b != a).map(|(_, &l)| l).collect();
        let Some(m @ (1 | 2)) = strict_majority(&others) else { continue };
        if matches!(y[a], 1 | 2) {
            c.human_loo.0 += f64::from(y[a] == m);
            c.human_loo.1 += 1.0;
        }
        if let Some(j @ (1 | 2)) = j {
            c.judge_loo.0 += f64::from(j == m);
            c.judge_loo.1 += 1.0;
        }
    }
    c
}

/// [`JudgeAgreement`] of `judge[i]` with `human[i]` (every item has the same number ≥ 2 of
/// labels in 0..=2; `judge[i]` `None` where the judge gave no label). `seed` seeds the intervals.
pub fn judge_agreement(human: &[Vec<u8>], judge: &[Option<u8>], seed: u64) -> Result<JudgeAgreement> {
    let n = human.len();
    if n == 0 || judge.len() != n {
        return Err(Error::Usage(format!("judge_agreement: {n} items and {} judge labels", judge.len())));
    }
    let h = human[0].len();
    if h < 2 {
        return Err(Error::Usage(format!("judge_agreement needs at least 2 annotators per item, found {h}")));
    }
    for (i, y) in human.iter().enumerate() {
        if y.len() != h || y.iter().any(|&l| l > 2) {
            return Err(Error::Usage(format!("item {i}: expected {h} labels in 0..=2, found {y:?}")));
        }
    }
    if let Some(i) = judge.iter().position(|j| j.is_some_and(|l| l > 2)) {
        return Err(Error::Usage(format!("item {i}: judge label {:?} is not in 0..=2", judge[i])));
    }
    let per: Vec<Counts> = human.iter().zip(judge).map(|(y, &j)| counts(y, j)).collect();
    let rate = |pick: fn(&Counts) -> (f64, f64), idx: &mut dyn Iterator<Item = usize>| {
        let (mut hit, mut of) = (0.0, 0.0);
        for i in idx {
            let (x, y) = pick(&per[i]);
            hit += x;
            of += y;
        }
        if of > 0.0 {
            hit / of
        } else {
            f64::NAN
        }
    };
    let ci = |pick: fn(&Counts) -> (f64, f64)| {
        let point = rate(pick, &mut (0..n));
        let cases = per.iter().filter(|c| pick(c).1 > 0.0).count();
        let mut c = if point.is_nan() {
            Ci::point(point, 0)
        } else {
            bootstrap(n, seed, point, |idx| rate(pick, &mut idx.iter().copied()))
        };
        c.n = cases;
        c
    };
    let judged: Vec<usize> = (0..n).filter(|&i| judge[i].is_some()).collect();
    let mut judge_labels = [0; 3];
    for &i in &judged {
        judge_labels[judge[i].expect("judged") as usize] += 1;
    }
    let mut per_pair = Vec::new();
    for a in 0..h {
        for b in a + 1..h {
            let same = human.iter().filter(|y| y[a] == y[b]).count();
            per_pair.push((a + 1, b + 1, same as f64 / n as f64));
        }
    }
    let per_annotator = (0..h)
        .map(|a| {
            let with_others = human.iter().map(|y| (0..h).filter(|&b| b != a && y[b] == y[a]).count()).sum::<usize>();
            let judge_a = judged.iter().filter(|&&i| judge[i] == Some(human[i][a])).count();
            let jr = if judged.is_empty() { f64::NAN } else { judge_a as f64 / judged.len() as f64 };
            (a + 1, with_others as f64 / (n * (h - 1)) as f64, jr)
        })
        .collect();
    let band = per_pair.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &(_, _, x)| (lo.min(x), hi.max(x)));
    Ok(JudgeAgreement {
        items: n,
        annotators: h,
        judged: judged.len(),
        judge_labels,
        human_human: ci(|c| c.hh),
        judge_human: ci(|c| c.jh),
        per_pair,
        per_annotator,
        human_band: band,
        human_loo_accuracy: ci(|c| c.human_loo),
        judge_loo_accuracy: ci(|c| c.judge_loo),
        judge_majority_accuracy: ci(|c| c.majority),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Four items, three annotators, worked by hand.
    ///
    /// | item | humans  | judge | hh pairs agreeing | judge = human | human LOO (hit/cases) | judge LOO | majority |
    /// |------|---------|-------|-------------------|---------------|-----------------------|-----------|----------|
    /// | 0    | 1 1 1   | 1     | 3/3               | 3/3           | 3/3                   | 3/3       | 1 (1)    |
    /// | 1    | 1 1 2   | 2     | 1/3               | 1/3           | a0: M(1,2) none; a1: none; a2: M(1,1)=1, y=2 → 0/1 | 0/1 | ½·0 → 0 (1) |
    /// | 2    | 2 2 0   | 0     | 1/3               | 1/3           | a2 = 0: not decisive → 0/0 (a0, a1: M none) | judge tie: 0/0 | 0.5 (1) |
    /// | 3    | 0 1 2   | None  | 0/3               | –             | none                  | –         | –        |
    ///
    /// P_hh = (3+1+1+0)/12 = 5/12; P_jh = (3+1+1)/9 = 5/9; human LOO = 3/4; judge LOO = 3/4;
    /// majority accuracy = (1 + 0 + 0.5)/3 = 0.5.
    #[test]
    fn hand_worked_items() {
        let human = vec![vec![1, 1, 1], vec![1, 1, 2], vec![2, 2, 0], vec![0, 1, 2]];
        let judge = vec![Some(1), Some(2), Some(0), None];
        let a = judge_agreement(&human, &judge, 0).unwrap();
        assert_eq!((a.items, a.annotators, a.judged, a.judge_labels), (4, 3, 3, [1, 1, 1]));
        assert!((a.human_human.mean - 5.0 / 12.0).abs() < 1e-12);
        assert!((a.judge_human.mean - 5.0 / 9.0).abs() < 1e-12);
        assert!((a.human_loo_accuracy.mean - 0.75).abs() < 1e-12 && a.human_loo_accuracy.n == 2);
        assert!((a.judge_loo_accuracy.mean - 0.75).abs() < 1e-12);
        assert!((a.judge_majority_accuracy.mean - 0.5).abs() < 1e-12 && a.judge_majority_accuracy.n == 3);
        // Pairs (1,2): items 0,1,2 agree → 3/4; (1,3): item 0 → 1/4; (2,3): item 0 → 1/4.
        assert_eq!(a.per_pair, vec![(1, 2, 0.75), (1, 3, 0.25), (2, 3, 0.25)]);
        assert_eq!(a.human_band, (0.25, 0.75));
        // Annotator 1 with the others: item 0: 2, item 1: 1, item 2: 1, item 3: 0 → 4/8;
        // the judge with annotator 1 on judged items 0, 1, 2: item 0 only → 1/3.
        assert_eq!(a.per_annotator[0], (1, 0.5, 1.0 / 3.0));
        for c in [&a.human_human, &a.judge_human] {
            assert!(c.lo <= c.mean && c.mean <= c.hi);
        }
    }

    /// A judge that copies annotator 1 agrees with the others exactly as annotator 1 does.
    #[test]
    fn a_judge_that_copies_an_annotator_sits_in_its_seat() {
        let human: Vec<Vec<u8>> =
            (0..60u32).map(|i| vec![(i % 3) as u8, ((i / 3) % 3) as u8, ((i * 7) % 3) as u8]).collect();
        let judge: Vec<Option<u8>> = human.iter().map(|y| Some(y[0])).collect();
        let a = judge_agreement(&human, &judge, 1).unwrap();
        let (_, ann1_with_others, judge_with_ann1) = a.per_annotator[0];
        assert_eq!(judge_with_ann1, 1.0);
        let (_, _, j2) = a.per_annotator[1];
        let (_, _, p12) = a.per_pair[0];
        assert_eq!(j2, p12);
        assert!(ann1_with_others > 0.0);
    }

    #[test]
    fn bad_labels_are_refused() {
        assert!(judge_agreement(&[vec![1, 3]], &[Some(1)], 0).is_err());
        assert!(judge_agreement(&[vec![1]], &[Some(1)], 0).is_err());
        assert!(judge_agreement(&[vec![1, 2], vec![1]], &[Some(1), None], 0).is_err());
        assert!(judge_agreement(&[vec![1, 2]], &[Some(4)], 0).is_err());
        assert!(judge_agreement(&[vec![1, 2]], &[], 0).is_err());
    }
}
