//! The whole path an annotator takes: login link → task page → labels → progress → export that
//! mismatch-data reads back; plus imports that do not duplicate and bad files that leave the database alone.

mod common;

use common::*;
use mismatch_data::{read_dataset, ReadOptions, Records, Turns};
use mismatch_label::cli::{run, LabelCmd, ServeArgs};
use mismatch_label::export::{export, Aggregate};
use mismatch_label::{import, spawn, ServerConfig};

fn progress(body: &str) -> (usize, usize) {
    let v = field_attr(body, "value");
    let m = field_attr(body, "max");
    (v, m)
}

fn field_attr(body: &str, attr: &str) -> usize {
    let tag = &body[body.find("<progress").unwrap()..];
    let key = format!("{attr}=\"");
    let s = tag.find(&key).unwrap() + key.len();
    tag[s..s + tag[s..].find('"').unwrap()].parse().unwrap()
}

#[test]
fn login_label_five_export_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs_file(dir.path(), 8);
    let db = database(dir.path(), &pairs);
    let token = annotator(&db, "alice", false);
    let server = spawn(&ServerConfig { per_item: 2, ..ServerConfig::new(&db) }).unwrap();
    let c = Client::login(&server.url(), &token);
    assert_eq!(c.get("/").status, 303, "/ forwards a logged-in annotator to the task");

    // Labels in the file's terms: a, b, a (strength 4), b (strength 1, with a reason), tie.
    let plan: [(&str, &str, &str); 5] =
        [("a", "", ""), ("b", "", ""), ("a", "4", ""), ("b", "1", "shorter & <clearer>"), ("tie", "2", "")];
    let mut seen = Vec::new();
    for (k, (choice, strength, reason)) in plan.iter().enumerate() {
        let page = c.get("/task");
        assert_eq!(page.status, 200);
        assert!(page.body.contains("/static/app.js"), "the shortcuts script is linked");
        assert_eq!(progress(&page.body), (k, 8), "labelled / (labelled + still to do) before label {k}");
        let s = shown(&page.body).expect("a pair is shown");
        assert_eq!(c.get("/task").body, page.body, "a reload shows the same pair");
        seen.push(s.n);
        let screen = if *choice == "tie" { "tie" } else { side(&s, choice) };
        let r = c.post(
            "/label",
            &[("csrf", &s.csrf), ("item", &s.item), ("choice", screen), ("strength", strength), ("reason", reason)],
            Some(&server.url()),
        );
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.header("location"), Some("/task"));
    }
    // Balanced assignment gives the least-labelled items first, lowest id first: 1..5.
    assert_eq!(seen, [1, 2, 3, 4, 5]);
    let page = c.get("/task");
    assert_eq!(progress(&page.body), (5, 8));
    assert!(page.body.contains("5 labelled, 3 to go"), "{}", page.body);
    assert_eq!(label_rows(&db), 5);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: Vec<(String, Option<i64>, Option<String>)> = conn
        .prepare("SELECT choice, strength, reason FROM labels ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let want = |c: &str, s: Option<i64>, r: Option<&str>| (c.to_owned(), s, r.map(str::to_owned));
    assert_eq!(
        stored,
        [
            want("a", None, None),
            want("b", None, None),
            want("a", Some(4), None),
            want("b", Some(1), Some("shorter & <clearer>")),
            want("tie", None, None), // a strength with a tie is dropped
        ]
    );

    let out = dir.path().join("all.jsonl");
    let rep = export(&db, &out, Aggregate::All, 1).unwrap();
    assert_eq!((rep.rows, rep.labels, rep.dropped), (4, 5, 1), "the tie gives no pair");
    let ds = read_dataset(&out, ReadOptions::default()).unwrap();
    let Records::Pairs(p) = &ds.records else { panic!("pairs expected, got {}", ds.format) };
    let text = |t: &Turns| t.text();
    let got: Vec<_> = p.iter().map(|p| (text(&p.prompt), text(&p.chosen), text(&p.rejected), p.margin)).collect();
    let row = |i: usize, first_wins: bool, m: Option<f64>| {
        let (w, l) = if first_wins { ("first", "second") } else { ("second", "first") };
        (format!("prompt-{i}"), format!("item-{i}-{w}"), format!("item-{i}-{l}"), m)
    };
    assert_eq!(got, [row(1, true, None), row(2, false, None), row(3, true, Some(3.0)), row(4, false, Some(0.0))]);
    let raw: Vec<serde_json::Value> =
        std::fs::read_to_string(&out).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(raw.iter().all(|r| r["annotator"] == "alice"));

    // Majority: each item has one label, its own majority.
    let maj = dir.path().join("majority.jsonl");
    let rep = export(&db, &maj, Aggregate::Majority, 1).unwrap();
    assert_eq!((rep.rows, rep.dropped), (4, 1));
    let ds = read_dataset(&maj, ReadOptions::default()).unwrap();
    assert_eq!(ds.records.len(), 4);
}

#[test]
fn a_second_import_adds_nothing_and_a_bad_file_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs_file(dir.path(), 6);
    let db = dir.path().join("labels.sqlite");
    let first = import::import_file(&db, &pairs).unwrap();
    assert_eq!((first.read, first.added), (6, 6));
    let again = import::import_file(&db, &pairs).unwrap();
    assert_eq!((again.read, again.added, again.existing), (6, 0, 6));

    // A garbled second line: the error names the file and the line, and the database is unchanged.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\"}\n{\"prompt\": \"p2\", \"chosen\": \n")
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let serve = |pairs: &std::path::Path, db: &std::path::Path| {
        run(LabelCmd::Serve(ServeArgs {
            pairs: Some(pairs.to_owned()),
            db: db.to_owned(),
            per_item: 3,
            host: "127.0.0.1".into(),
            port: 0,
            bootstrap: 10,
            seed: 0,
        }))
    };
    let err = serve(&bad, &db).unwrap_err().to_string();
    assert!(err.contains(&format!("{}:2", bad.display())), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before);

    let missing = dir.path().join("nope.jsonl");
    let fresh = dir.path().join("fresh.sqlite");
    let err = serve(&missing, &fresh).unwrap_err().to_string();
    assert!(err.contains("nope.jsonl"), "{err}");
    assert!(!fresh.exists(), "no database is created for a bad pairs file");
    let err = anyhow_like(serve(&bad, &fresh));
    assert!(err.contains("bad.jsonl:2") && !fresh.exists(), "{err}");
}

/// The error as the CLI prints it (through `std::error::Error`, as anyhow would).
fn anyhow_like(r: mismatch_label::Result<()>) -> String {
    let e: Box<dyn std::error::Error + Send + Sync> = r.unwrap_err().into();
    e.to_string()
}

#[test]
fn rankings_and_pandalm_files_become_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("rank.jsonl");
    std::fs::write(&f, "{\"prompt\":\"p\",\"completions\":[\"x\",\"y\",\"z\"],\"ranking\":[2,0,1]}\n").unwrap();
    let pairs = import::read_pairs(&f).unwrap();
    let ab: Vec<_> = pairs.iter().map(|p| (p.a.as_str(), p.b.as_str())).collect();
    assert_eq!(ab, [("\"x\"", "\"y\""), ("\"x\"", "\"z\""), ("\"y\"", "\"z\"")]);
    let g = dir.path().join("pandalm.json");
    std::fs::write(&g, r#"[{"instruction":"i","input":"","response1":"r1","response2":"r2","annotator1":2}]"#).unwrap();
    let pairs = import::read_pairs(&g).unwrap();
    assert_eq!((pairs[0].a.as_str(), pairs[0].b.as_str(), pairs[0].line), ("\"r1\"", "\"r2\"", 1));
}

#[test]
fn conversations_round_trip_through_the_export() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("chat.jsonl");
    let row = serde_json::json!({
        "prompt": [{ "role": "system", "content": "Be brief." }, { "role": "user", "content": "2+2?" }],
        "chosen": [{ "role": "assistant", "content": "4" }],
        "rejected": [{ "role": "assistant", "content": "5" }],
    });
    std::fs::write(&f, format!("{row}\n")).unwrap();
    let db = database(dir.path(), &f);
    let token = annotator(&db, "alice", false);
    let server = spawn(&ServerConfig::new(&db)).unwrap();
    let c = Client::login(&server.url(), &token);
    let page = c.get("/task").body;
    assert!(page.contains("<div class=\"role\">system</div>") && page.contains("Be brief."));
    // Pick the response "5" (the file's rejected one) wherever it is shown.
    let five_on_left = page.find(">5<").unwrap() < page.find(">4<").unwrap();
    let (csrf, item) = (field(&page, "csrf").unwrap(), field(&page, "item").unwrap());
    let choice = if five_on_left { "left" } else { "right" };
    assert_eq!(c.post("/label", &[("csrf", &csrf), ("item", &item), ("choice", choice)], None).status, 303);

    let out = dir.path().join("out.jsonl");
    export(&db, &out, Aggregate::Majority, 1).unwrap();
    // As `mismatch rm train` reads it: read_dataset, then to_pairs.
    let ds = read_dataset(&out, ReadOptions::default()).unwrap();
    let (pairs, dropped) = ds.records.to_pairs();
    assert_eq!((pairs.len(), dropped), (1, 0));
    assert!(pairs[0].prompt.is_chat());
    assert_eq!(pairs[0].prompt.render(), "System: Be brief.\n\nUser: 2+2?");
    assert_eq!((pairs[0].chosen.text(), pairs[0].rejected.text()), ("5".to_owned(), "4".to_owned()));
}
