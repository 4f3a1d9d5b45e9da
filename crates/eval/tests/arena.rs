//! Bradley–Terry ratings against the Chatbot Arena notebook's fit (scikit-learn) and scipy on the
//! same likelihood (tests/fixtures/arena_reference.json, written by
//! tests/fixtures/arena_reference.py), and against simulated tournaments with known strengths.

use mismatch_eval::arena::{elo_scale, fit_bt, leaderboard, next_pair, Battle, Options, RIDGE};
use mismatch_eval::rank::{pearson, spearman};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

/// 120 battles among 4 models with 15% ties: λ = 0 matches the notebook's unpenalised logistic
/// regression, the default ridge matches scipy's minimum of the same penalised likelihood, both
/// to 1e-6 in β (and in Elo points).
#[test]
fn bt_matches_sklearn_and_scipy() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/arena_reference.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let k = doc["k"].as_u64().unwrap() as usize;
    let idx = |key: &str| -> Vec<usize> {
        doc[key].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect()
    };
    let (a, b, y) = (idx("a"), idx("b"), floats(&doc["outcome"]));
    let battles: Vec<Battle> = (0..a.len()).map(|t| Battle { a: a[t], b: b[t], outcome: y[t] }).collect();
    assert_eq!(battles.len(), 120);
    assert_eq!(doc["ridge"].as_f64().unwrap(), RIDGE);
    for (key, ridge) in [("sklearn", 0.0), ("scipy_ridge", RIDGE)] {
        let beta = fit_bt(k, &battles, ridge).unwrap();
        let (want, want_r) = (floats(&doc[key]["beta"]), floats(&doc[key]["rating"]));
        for i in 0..k {
            assert!((beta[i] - want[i]).abs() < 1e-6, "{key}: β {beta:?} vs {want:?}");
            assert!(
                (elo_scale(beta[i]) - want_r[i]).abs() < 1e-6,
                "{key}: rating {} vs {}",
                elo_scale(beta[i]),
                want_r[i]
            );
        }
    }
}

/// Six models with true strengths spread evenly over 1.5 logits, 400 tournaments of 300 battles
/// between uniformly drawn pairs, no ties, 400 resamples each. The identifiable quantities are
/// the differences to an anchor (model 0, pinned at 1000), so the coverage counted is that of
/// the true `1000 + 400(βᵢ − β₀)/ln 10` by the 95% intervals of models 1..5 (2000 intervals).
/// Measured 0.940 (1000 tournaments × 1000 resamples: 0.947). The pooled Pearson r of estimates
/// and truth is held down by the noise of 300 battles (interval width ~200 Elo against a 260
/// Elo spread), hence its low bar.
#[test]
fn simulated_tournaments_recover_strengths_and_cover() {
    const MODELS: usize = 6;
    const TOURNAMENTS: usize = 400;
    const BATTLES: usize = 300;
    let truth: Vec<f64> = (0..MODELS).map(|i| -0.75 + 1.5 * i as f64 / (MODELS - 1) as f64).collect();
    let true_rating: Vec<f64> = truth.iter().map(|b| 1000.0 + 400.0 * (b - truth[0]) / 10f64.ln()).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(20260514);
    let start = std::time::Instant::now();
    let (mut covered, mut intervals, mut rho_sum, mut width_sum) = (0usize, 0usize, 0.0, 0.0);
    let (mut est, mut tru) = (Vec::new(), Vec::new());
    for t in 0..TOURNAMENTS {
        let battles: Vec<Battle> = (0..BATTLES)
            .map(|_| {
                let a = rng.random_range(0..MODELS);
                let b = (a + rng.random_range(1..MODELS)) % MODELS;
                let p = 1.0 / (1.0 + (truth[b] - truth[a]).exp());
                Battle { a, b, outcome: if rng.random::<f64>() < p { 1.0 } else { 0.0 } }
            })
            .collect();
        let opts = Options { anchor: Some((0, 1000.0)), resamples: 400, seed: t as u64, ..Options::default() };
        let lb = leaderboard(MODELS, &battles, &opts).unwrap();
        assert_eq!(lb.failed_resamples, 0);
        let r: Vec<f64> = lb.rating.iter().map(|c| c.mean).collect();
        rho_sum += spearman(&r, &truth);
        // Model 0 is the anchor, its interval a point.
        for (c, &want) in lb.rating.iter().zip(&true_rating).skip(1) {
            intervals += 1;
            covered += (c.lo <= want && want <= c.hi) as usize;
            width_sum += c.hi - c.lo;
            est.push(c.mean);
            tru.push(want);
        }
    }
    let coverage = covered as f64 / intervals as f64;
    let rho = rho_sum / TOURNAMENTS as f64;
    let r = pearson(&est, &tru);
    println!(
        "arena simulation: coverage {coverage:.3} of {intervals} intervals (mean width {:.1} Elo), \
         mean Spearman {rho:.3}, pooled Pearson {r:.3}, {:.1} s",
        width_sum / intervals as f64,
        start.elapsed().as_secs_f64()
    );
    assert!((0.90..=0.98).contains(&coverage), "coverage {coverage}");
    assert!(rho > 0.8, "mean Spearman {rho}");
    assert!(r > 0.75, "pooled Pearson {r}");
    // The estimates are about unbiased: mean error under a tenth of the interval width.
    let bias = est.iter().zip(&tru).map(|(e, t)| e - t).sum::<f64>() / est.len() as f64;
    assert!(bias.abs() < 0.1 * width_sum / intervals as f64, "bias {bias}");
}

/// The adaptive sampler against uniform pairs on the same six models: 200 runs of 300 battles
/// each, the mean Spearman ρ of the fit with the truth every 25 battles, and the battles each
/// needs before the mean ρ reaches 0.9. Measured: uniform 150, next_pair 125 (with 1000 runs
/// 175 and 150; next_pair ahead at every checkpoint, by 0.045 at 25 battles, 0.006 at 300).
#[test]
fn next_pair_ranks_with_fewer_battles_than_uniform() {
    const MODELS: usize = 6;
    const RUNS: usize = 200;
    const BUDGET: usize = 300;
    const EVERY: usize = 25;
    let truth: Vec<f64> = (0..MODELS).map(|i| -0.75 + 1.5 * i as f64 / (MODELS - 1) as f64).collect();
    let start = std::time::Instant::now();
    let play = |rng: &mut ChaCha8Rng, a: usize, b: usize| {
        let p = 1.0 / (1.0 + (truth[b] - truth[a]).exp());
        Battle { a, b, outcome: if rng.random::<f64>() < p { 1.0 } else { 0.0 } }
    };
    let rho = |battles: &[Battle]| {
        let beta: Vec<f64> =
            fit_bt(MODELS, battles, RIDGE).unwrap().into_iter().map(|b| if b.is_nan() { 0.0 } else { b }).collect();
        spearman(&beta, &truth)
    };
    let mut curves = [vec![0.0; BUDGET / EVERY], vec![0.0; BUDGET / EVERY]];
    for run in 0..RUNS {
        for (adaptive, curve) in curves.iter_mut().enumerate() {
            // The same outcome stream for both samplers in a run.
            let mut rng = ChaCha8Rng::seed_from_u64(run as u64);
            let mut battles = Vec::with_capacity(BUDGET);
            for t in 0..BUDGET {
                let (a, b) = if adaptive == 1 {
                    next_pair(MODELS, &battles, RIDGE).unwrap()
                } else {
                    let a = rng.random_range(0..MODELS);
                    (a, (a + rng.random_range(1..MODELS)) % MODELS)
                };
                battles.push(play(&mut rng, a, b));
                if (t + 1) % EVERY == 0 {
                    curve[t / EVERY] += rho(&battles) / RUNS as f64;
                }
            }
        }
    }
    let reach = |c: &[f64]| c.iter().position(|&r| r >= 0.9).map(|i| (i + 1) * EVERY);
    let fmt = |c: &[f64]| c.iter().map(|r| format!("{r:.3}")).collect::<Vec<_>>().join(" ");
    println!("arena sampler, mean Spearman every {EVERY} battles ({:.1} s):", start.elapsed().as_secs_f64());
    println!("  uniform        {}  (ρ ≥ 0.9 after {:?})", fmt(&curves[0]), reach(&curves[0]));
    println!("  next_pair      {}  (ρ ≥ 0.9 after {:?})", fmt(&curves[1]), reach(&curves[1]));
    assert!(curves[1].iter().sum::<f64>() > curves[0].iter().sum::<f64>(), "next_pair behind uniform on average");
    assert!(reach(&curves[1]).unwrap() <= reach(&curves[0]).unwrap());
}
