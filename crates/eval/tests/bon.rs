//! Best-of-n: the pool estimator against brute-force enumeration (exact) and Monte-Carlo; the KL
//! bound against the exact KL of best-of-n on discrete bases; Beirami et al.'s estimator against
//! the exact KL of the distribution it is derived for.

use mismatch_eval::bon;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[test]
fn bounds_by_hand() {
    // n = 1 is π itself; n = 2: ln 2 − 1/2 = 0.1931472; win rate bound n/(n+1).
    assert_eq!(bon::kl_bound(1), 0.0);
    assert!((bon::kl_bound(2) - 0.1931472).abs() < 1e-7);
    assert_eq!(bon::win_rate_bound(3), 0.75);
}

#[test]
fn exact_distribution_by_hand() {
    // p = [.5, .5], rewards [0, 1], n = 2: P(best = top) = 1 − .5² = .75, q = [.25, .75];
    // KL = .25 ln .5 + .75 ln 1.5 = 0.1308120 < ln 2 − 1/2 = 0.1931472.
    let q = bon::exact_distribution(&[0.5, 0.5], &[0.0, 1.0], 2).unwrap();
    assert!((q[0] - 0.25).abs() < 1e-12 && (q[1] - 0.75).abs() < 1e-12);
    let kl = bon::exact_kl(&[0.5, 0.5], &[0.0, 1.0], 2).unwrap();
    assert!((kl - 0.1308120).abs() < 1e-7);
    // A tie between both outcomes leaves π unchanged.
    assert_eq!(bon::exact_kl(&[0.3, 0.7], &[1.0, 1.0], 5).unwrap(), 0.0);
    assert!(bon::exact_distribution(&[0.5, 0.6], &[0.0, 1.0], 2).is_err());
}

#[test]
fn analytic_bound_dominates_exact_kl() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for _ in 0..50 {
        let k = rng.random_range(2..12);
        let w: Vec<f64> = (0..k).map(|_| rng.random::<f64>() + 1e-3).collect();
        let z: f64 = w.iter().sum();
        let p: Vec<f64> = w.iter().map(|x| x / z).collect();
        let r: Vec<f64> = (0..k).map(|_| rng.random::<f64>()).collect();
        for n in [1, 2, 3, 8, 32, 1000] {
            let kl = bon::exact_kl(&p, &r, n).unwrap();
            let q = bon::exact_distribution(&p, &r, n).unwrap();
            assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-9);
            assert!(kl <= bon::kl_bound(n) + 1e-12, "n={n}: exact {kl} > bound {}", bon::kl_bound(n));
            assert!(kl >= -1e-12);
        }
    }
    // Many equally likely outcomes approach the bound from below (Beirami et al. Thm. 2).
    let m = 100_000;
    let p = vec![1.0 / m as f64; m];
    let r: Vec<f64> = (0..m).map(|i| i as f64).collect();
    let kl = bon::exact_kl(&p, &r, 4).unwrap();
    assert!(kl < bon::kl_bound(4) && bon::kl_bound(4) - kl < 1e-3, "{kl} vs {}", bon::kl_bound(4));
}

#[test]
fn beirami_estimator_is_exact_for_continuous_plus_top_atom() {
    // Base: an atom of mass ε at the top reward and (1−ε) spread over M equal atoms below it,
    // a fine discretisation of the continuous part the estimator assumes.
    let m = 200_000;
    for &(n, eps) in &[(2usize, 0.3f64), (8, 0.05), (16, 0.01), (64, 0.2)] {
        let mut p = vec![(1.0 - eps) / m as f64; m];
        p.push(eps);
        let r: Vec<f64> = (0..=m).map(|i| i as f64).collect();
        let exact = bon::exact_kl(&p, &r, n).unwrap();
        let est = bon::kl_estimate(n, eps).unwrap();
        assert!((exact - est).abs() < 2e-4, "n={n} ε={eps}: exact {exact}, estimate {est}");
        assert!(est <= bon::kl_bound(n) + 1e-12);
    }
    // Limits: ε → 0 gives the bound, ε = 1 (deterministic π) gives 0, n = 1 gives 0.
    assert!((bon::kl_estimate(16, 1e-12).unwrap() - bon::kl_bound(16)).abs() < 1e-9);
    assert_eq!(bon::kl_estimate(16, 1.0).unwrap(), 0.0);
    assert!(bon::kl_estimate(1, 0.3).unwrap().abs() < 1e-15);
    assert!(bon::kl_estimate(4, 0.0).is_err());
    let mean = bon::kl_estimate_from_logprobs(8, &[0.05f64.ln(), 0.3f64.ln()]).unwrap();
    let want = (bon::kl_estimate(8, 0.05).unwrap() + bon::kl_estimate(8, 0.3).unwrap()) / 2.0;
    assert!((mean - want).abs() < 1e-12);
}

#[test]
fn pool_weights_by_hand() {
    // N = 4, n = 2: C(i−1, 1)/C(4, 2) = [0, 1, 2, 3]/6.
    let w = bon::pool_weights(4, 2).unwrap();
    for (a, b) in w.iter().zip([0.0, 1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]) {
        assert!((a - b).abs() < 1e-12, "{w:?}");
    }
    // N = 1000 stays finite and normalised in log space.
    for n in [1, 2, 10, 500, 1000] {
        let w = bon::pool_weights(1000, n).unwrap();
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-9, "n={n}");
    }
    assert!(bon::pool_weights(3, 4).is_err() && bon::pool_weights(3, 0).is_err());
}

/// E over all n-subsets of the gold score of the subset's proxy argmax (ties: uniform).
fn brute_force(proxy: &[f64], gold: &[f64], n: usize) -> f64 {
    let pool = proxy.len();
    let (mut total, mut count) = (0.0, 0u64);
    for bits in 0u32..(1 << pool) {
        if bits.count_ones() as usize != n {
            continue;
        }
        let idx: Vec<usize> = (0..pool).filter(|i| bits >> i & 1 == 1).collect();
        let best = idx.iter().map(|&i| proxy[i]).fold(f64::NEG_INFINITY, f64::max);
        let winners: Vec<usize> = idx.into_iter().filter(|&i| proxy[i] == best).collect();
        total += winners.iter().map(|&i| gold[i]).sum::<f64>() / winners.len() as f64;
        count += 1;
    }
    total / count as f64
}

#[test]
fn pool_estimator_equals_enumeration() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let pool = 10;
    let proxy: Vec<f64> = (0..pool).map(|_| rng.random::<f64>()).collect();
    let gold: Vec<f64> = proxy.iter().map(|p| p + rng.random::<f64>() - 0.5).collect();
    for n in 1..=pool {
        let (ep, eg) = bon::expected_scores(&proxy, &gold, n).unwrap();
        assert!((eg - brute_force(&proxy, &gold, n)).abs() < 1e-12, "gold n={n}");
        assert!((ep - brute_force(&proxy, &proxy, n)).abs() < 1e-12, "proxy n={n}");
    }
    // n = 1 is the pool mean; ties in the proxy share their probability.
    let (_, g1) = bon::expected_scores(&proxy, &gold, 1).unwrap();
    assert!((g1 - gold.iter().sum::<f64>() / pool as f64).abs() < 1e-12);
    let tied_p = [1.0, 1.0, 0.0, 2.0, 1.0];
    let tied_g = [0.0, 2.0, 5.0, -1.0, 4.0];
    for n in 1..=5 {
        let (_, eg) = bon::expected_scores(&tied_p, &tied_g, n).unwrap();
        assert!((eg - brute_force(&tied_p, &tied_g, n)).abs() < 1e-12, "tied n={n}");
    }
    assert!(bon::expected_scores(&[1.0, f64::NAN], &[0.0, 0.0], 1).is_err());
}

#[test]
fn pool_estimator_matches_monte_carlo() {
    // N = 1000 pool, n = 16: 20000 random 16-subsets; the Monte-Carlo mean of the selected gold
    // score must be within 4 standard errors of the estimator (seeded, so deterministic).
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let pool = 1000;
    let proxy: Vec<f64> = (0..pool).map(|_| rng.random::<f64>()).collect();
    let gold: Vec<f64> = proxy.iter().map(|p| (3.0 * p).sin() + 0.3 * rng.random::<f64>()).collect();
    for n in [16usize, 200] {
        let (_, eg) = bon::expected_scores(&proxy, &gold, n).unwrap();
        let draws = 20_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..draws {
            let best = sample(&mut rng, pool, n).into_iter().max_by(|&a, &b| proxy[a].total_cmp(&proxy[b])).unwrap();
            s += gold[best];
            s2 += gold[best] * gold[best];
        }
        let mean = s / draws as f64;
        let se = ((s2 / draws as f64 - mean * mean) / draws as f64).sqrt();
        assert!((mean - eg).abs() < 4.0 * se + 1e-12, "n={n}: MC {mean} ± {se}, estimator {eg}");
    }
}
