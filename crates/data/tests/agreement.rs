//! Fleiss' kappa by hand and against statsmodels; PandaLM agreement against the Python reference.

mod common;
use common::*;
use mismatch_data::agreement::{agreement, fleiss_kappa};
use mismatch_data::cli::{run_to_string, DataCmd, InputArgs};
use mismatch_data::*;
use mismatch_eval::stats::quantile;

/// Wikipedia's worked example ("Fleiss' kappa", 10 subjects × 14 raters × 5 categories).
/// By hand, with P_i = (Σ_j n_ij² − n) / (n(n−1)), n = 14, n(n−1) = 182:
///   Σ_j n_ij² − 14 per row: 182, 46, 56, 80, 60, 84, 44, 32, 52, 52  → Σ = 688, P̄ = 688 / 1820 = 0.378022
///   column totals 20, 28, 39, 21, 32 (of 140)  → P̄_e = (20² + 28² + 39² + 21² + 32²) / 140² = 4170 / 19600 = 0.212755
///   κ = (0.378022 − 0.212755) / (1 − 0.212755) = 0.209931 (Wikipedia rounds to 0.210)
#[test]
fn fleiss_kappa_wikipedia_example_by_hand() {
    let table = vec![
        vec![0, 0, 0, 0, 14],
        vec![0, 2, 6, 4, 2],
        vec![0, 0, 3, 5, 6],
        vec![0, 3, 9, 2, 0],
        vec![2, 2, 8, 1, 1],
        vec![7, 7, 0, 0, 0],
        vec![3, 2, 6, 3, 0],
        vec![2, 5, 3, 2, 2],
        vec![6, 5, 2, 1, 0],
        vec![0, 2, 2, 3, 7],
    ];
    let (p, pe) = (688.0 / 1820.0, 4170.0 / 19600.0);
    let k = fleiss_kappa(&table).unwrap();
    assert!((k - (p - pe) / (1.0 - pe)).abs() < 1e-15, "{k}");
    assert!((k - 0.209931).abs() < 5e-7);
    let reference = fixture()["wikipedia_example_kappa"].as_f64().unwrap();
    assert!((k - reference).abs() < 1e-12, "{k} vs statsmodels {reference}");
    assert!(fleiss_kappa(&[vec![1, 2], vec![2, 2]]).unwrap_err().contains("item 1"));
    assert!(fleiss_kappa(&[vec![3, 0], vec![3, 0]]).unwrap().is_nan(), "P_e = 1: undefined");
}

fn fixture() -> serde_json::Value {
    let p = repo_root().join("tests/fixtures/pandalm_agreement.json");
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

#[test]
fn pandalm_agreement_matches_python_reference() {
    let fx = fixture();
    let ds = read(&shared("pandalm/testset-v1.json"));
    let a = agreement(&ds, 1000, 0).unwrap();
    assert_eq!(a.items, fx["items"].as_u64().unwrap() as usize);
    assert_eq!(a.annotators, 3);
    let close = |x: f64, key: &str| assert!((x - fx[key].as_f64().unwrap()).abs() < 1e-12, "{key}: {x} vs {}", fx[key]);
    close(a.kappa.value, "fleiss_kappa");
    close(a.pairwise.value, "pairwise_agreement");
    close(a.ceiling.value, "ceiling");
    assert_eq!(a.ceiling_cases, fx["ceiling_cases"].as_u64().unwrap() as usize);
    for (x, y, v) in &a.per_pair {
        let r = fx["per_pair_agreement"][format!("{x}-{y}")].as_f64().unwrap();
        assert!((v - r).abs() < 1e-12);
    }
    let m = &fx["majority"];
    assert_eq!(
        a.majority.map(|x| x as u64),
        [
            m["tie"].as_u64().unwrap(),
            m["response1"].as_u64().unwrap(),
            m["response2"].as_u64().unwrap(),
            m["none"].as_u64().unwrap()
        ]
    );
    // Same table through the public fleiss_kappa.
    let Records::Judgements(js) = &ds.records else { panic!() };
    let table: Vec<Vec<usize>> =
        js.iter().map(|j| (0..3u8).map(|c| j.labels.iter().filter(|&&l| l == c).count()).collect()).collect();
    close(fleiss_kappa(&table).unwrap(), "fleiss_kappa");
    for e in [a.kappa, a.pairwise, a.ceiling] {
        assert!(e.lo < e.value && e.value < e.hi && e.hi - e.lo < 0.1, "{e:?}");
    }
}

#[test]
fn bootstrap_is_seeded() {
    let ds = read(&shared("pandalm/testset-v1.json"));
    let (a, b, c) = (agreement(&ds, 200, 7).unwrap(), agreement(&ds, 200, 7).unwrap(), agreement(&ds, 200, 8).unwrap());
    assert_eq!((a.kappa, a.ceiling, a.pairwise), (b.kappa, b.ceiling, b.pairwise));
    assert_ne!(a.kappa.lo, c.kappa.lo);
    assert_eq!(a.kappa.value, c.kappa.value);
}

#[test]
fn quantile_interpolates_like_numpy() {
    // numpy.quantile([1, 2, 3, 4], [0.025, 0.5, 0.975]) = [1.075, 2.5, 3.925]
    let s = [1.0, 2.0, 3.0, 4.0];
    for (q, want) in [(0.025, 1.075), (0.5, 2.5), (0.975, 3.925)] {
        assert!((quantile(&s, q) - want).abs() < 1e-12);
    }
}

#[test]
fn agreement_command_output_and_wrong_format() {
    let input = |f: &str| InputArgs { file: shared(f), format: None, strict: false };
    let out =
        run_to_string(DataCmd::Agreement { input: input("pandalm/testset-v1.json"), bootstrap: 100, seed: 0 }).unwrap();
    assert!(out.contains("999 items, 3 annotators"), "{out}");
    assert!(out.contains("Fleiss' kappa:         0.864"), "{out}");
    let e =
        run_to_string(DataCmd::Agreement { input: input("orca-dpo-pairs/validation.jsonl"), bootstrap: 100, seed: 0 })
            .unwrap_err();
    assert!(e.to_string().ends_with("validation.jsonl: agreement needs multi-annotator records (pandalm format: annotator1..N), this file is openai"), "{e}");
}
