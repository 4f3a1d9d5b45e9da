//! BCa intervals against scipy.stats.bootstrap on the same data and the same bootstrap
//! replicates (tests/fixtures/bca.json, written by tests/reference/bca.py).

use mismatch_eval::stats::{bca_interval, mean};

#[test]
fn bca_matches_scipy_on_fixed_replicates() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/bca.json");
    let doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 3);
    for c in cases {
        let f = |k: &str| -> Vec<f64> { c[k].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
        let (x, boots) = (f("data"), f("boots"));
        let n = x.len();
        let total: f64 = x.iter().sum();
        let jack: Vec<f64> = x.iter().map(|v| (total - v) / (n - 1) as f64).collect();
        let ci = bca_interval(mean(&x), n, boots, &jack);
        let (lo, hi) = (c["lo"].as_f64().unwrap(), c["hi"].as_f64().unwrap());
        let name = c["name"].as_str().unwrap();
        assert!((ci.lo - lo).abs() < 1e-9 && (ci.hi - hi).abs() < 1e-9, "{name}: {ci:?} vs scipy [{lo}, {hi}]");
    }
}
