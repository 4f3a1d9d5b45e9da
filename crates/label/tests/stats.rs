//! `/api/stats` on a case worked by hand: 3 annotators (x, y, z), 4 items, K = 3, labels in the file's terms
//!
//!   item   x    y    z
//!   1      a    a    a
//!   2      a    a    b
//!   3      b    b    b
//!   4      a    b    tie
//!
//! Fleiss' κ (categories a, b, tie, both_bad; n = 3 raters, N = 4 items):
//!   P_i = Σ_j n_ij (n_ij − 1) / (n (n − 1)):  item1 6/6 = 1, item2 (2·1)/6 = 1/3, item3 1, item4 0
//!   P̄ = (1 + 1/3 + 1 + 0) / 4 = 7/12
//!   p_a = 6/12, p_b = 5/12, p_tie = 1/12, p_both_bad = 0;  P̄_e = (36 + 25 + 1) / 144 = 31/72
//!   κ = (7/12 − 31/72) / (1 − 31/72) = (11/72) / (41/72) = 11/41 ≈ 0.2683
//! Pairwise agreement = Σ n_ij (n_ij − 1) / Σ n_i (n_i − 1) = (6 + 2 + 6 + 0) / 24 = 7/12.
//! Per pair: x–y agree on items 1, 2, 3 (3/4); x–z on 1, 3 (2/4); y–z on 1, 3 (2/4).
//! Agreement with the others' majority: x: item1 (others a, a) yes, item2 (a, b) no majority, item3 yes,
//!   item4 (b, tie) none → 2/2; y likewise 2/2; z: item1 yes, item2 (others a, a) no, item3 yes, item4 (a, b)
//!   none → 2/3.
//! Accuracy ceiling (decisive labels whose item's other labels have a decisive strict majority): item 1 x, y,
//!   z (3 hits), item 2 only z (others a, a; z said b: a miss), item 3 x, y, z (3 hits), item 4 none → 6/7.
//! Position bias: the test knows which side it clicked for each of the 11 decisive labels.

mod common;

use common::*;
use mismatch_label::{spawn, ServerConfig};

const PLAN: [[&str; 4]; 3] = [["a", "a", "b", "a"], ["a", "a", "b", "b"], ["a", "b", "b", "tie"]];

fn close(v: &serde_json::Value, want: f64) {
    let got = v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"));
    assert!((got - want).abs() < 1e-9, "{got} != {want}");
}

#[test]
fn agreement_numbers_match_the_hand_computation() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs_file(dir.path(), 4);
    let db = database(dir.path(), &pairs);
    let names = ["x", "y", "z"];
    let tokens: Vec<String> = names.iter().map(|n| annotator(&db, n, false)).collect();
    let admin = annotator(&db, "root", true);
    let server = spawn(&ServerConfig { per_item: 3, bootstrap: 500, seed: 7, ..ServerConfig::new(&db) }).unwrap();
    let (mut left, mut decisive) = (0, 0);
    for (who, token) in tokens.iter().enumerate() {
        let c = Client::login(&server.url(), token);
        for _ in 0..4 {
            let s = shown(&c.get("/task").body).unwrap();
            let choice = PLAN[who][s.n - 1];
            let screen = if choice == "tie" { "tie" } else { side(&s, choice) };
            if screen != "tie" {
                decisive += 1;
                left += usize::from(screen == "left");
            }
            assert_eq!(c.post("/label", &[("csrf", &s.csrf), ("item", &s.item), ("choice", screen)], None).status, 303);
        }
        assert!(c.get("/task").body.contains("Nothing left to label"));
    }
    let root = Client::login(&server.url(), &admin);
    let r = root.get("/api/stats");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("application/json"));
    let st: serde_json::Value = serde_json::from_str(&r.body).unwrap();

    assert_eq!(
        (st["items"].as_u64(), st["labels"].as_u64(), st["items_complete"].as_u64()),
        (Some(4), Some(12), Some(4))
    );
    assert_eq!(st["choices"], serde_json::json!({ "a": 6, "b": 5, "tie": 1, "both_bad": 0 }));
    let kappa = &st["fleiss_kappa"];
    close(&kappa["value"], 11.0 / 41.0);
    assert_eq!(kappa["n"], 4);
    let kappa_value = 11.0 / 41.0;
    let (lo, hi) = (kappa["lo"].as_f64().unwrap(), kappa["hi"].as_f64().unwrap());
    assert!(lo <= kappa_value && kappa_value <= hi && hi <= 1.0, "[{lo}, {hi}]");
    close(&st["pairwise_agreement"]["value"], 7.0 / 12.0);
    close(&st["ceiling"]["value"], 6.0 / 7.0);

    let pairs = st["pairs"].as_array().unwrap();
    let pair = |a: &str, b: &str| pairs.iter().find(|p| p["a"] == a && p["b"] == b).unwrap().clone();
    close(&pair("x", "y")["agreement"], 0.75);
    close(&pair("x", "z")["agreement"], 0.5);
    close(&pair("y", "z")["agreement"], 0.5);
    assert_eq!(pair("x", "y")["items"], 4);

    let people = st["annotators"].as_array().unwrap();
    let person = |n: &str| people.iter().find(|p| p["name"] == n).unwrap().clone();
    for (n, agree, cases) in [("x", 1.0, 2), ("y", 1.0, 2), ("z", 2.0 / 3.0, 3)] {
        let p = person(n);
        assert_eq!(p["labels"], 4);
        close(&p["majority_agreement"], agree);
        assert_eq!(p["majority_cases"], cases);
        assert!(p["median_time_ms"].as_f64().unwrap() >= 0.0);
    }
    assert_eq!(person("root")["labels"], 0);
    assert!(person("root")["median_time_ms"].is_null());
    assert_eq!(st["decisive"], decisive);
    close(&st["position_bias"], left as f64 / decisive as f64);
    assert_eq!(decisive, 11);

    let dash = root.get("/dashboard");
    assert_eq!(dash.status, 200);
    assert!(dash.body.contains("0.268"), "κ on the dashboard");
    assert!(dash.body.contains("58.3%"), "pairwise agreement on the dashboard");

    // Majority export: items 1 (a 3/3), 2 (a 2/3), 3 (b 3/3); item 4 has no majority.
    let out = dir.path().join("m.jsonl");
    let rep = mismatch_label::export::export(&db, &out, mismatch_label::export::Aggregate::Majority, 1).unwrap();
    assert_eq!((rep.rows, rep.dropped), (3, 1));
    let rows: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let got: Vec<_> = rows.iter().map(|r| (r["chosen"].clone(), r["votes"].clone(), r["labels"].clone())).collect();
    use serde_json::json;
    assert_eq!(
        got,
        [
            (json!("item-1-first"), json!(3), json!(3)),
            (json!("item-2-first"), json!(2), json!(3)),
            (json!("item-3-second"), json!(3), json!(3))
        ]
    );
    assert_eq!(rows[1]["annotators"], json!(["x", "y"]));
    // --min-labels: every item has 3 labels, so 3 keeps everything and 4 keeps nothing.
    use mismatch_label::export::{export, Aggregate};
    assert_eq!(export(&db, &out, Aggregate::All, 3).unwrap().rows, 11);
    let none = export(&db, &out, Aggregate::Majority, 4).unwrap();
    assert_eq!((none.rows, none.dropped), (0, 4));
    let none = export(&db, &out, Aggregate::All, 4).unwrap();
    assert_eq!((none.rows, none.dropped), (0, 12));
}
