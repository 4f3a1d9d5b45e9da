//! Many annotators at once: 16 threads label every one of 125 items (K = 16), 2,000 labels in all, each
//! through the real pages; the database ends with exactly 2,000 rows, one per (item, annotator).

mod common;

use common::*;
use mismatch_label::{spawn, ServerConfig};

const ANNOTATORS: usize = 16;
const ITEMS: usize = 125;

#[test]
fn sixteen_annotators_post_two_thousand_labels() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs_file(dir.path(), ITEMS);
    let db = database(dir.path(), &pairs);
    let tokens: Vec<String> = (0..ANNOTATORS).map(|i| annotator(&db, &format!("a{i}"), false)).collect();
    let server = spawn(&ServerConfig { per_item: ANNOTATORS, ..ServerConfig::new(&db) }).unwrap();
    let url = server.url();
    let posted: Vec<usize> = std::thread::scope(|sc| {
        let handles: Vec<_> = tokens
            .iter()
            .enumerate()
            .map(|(t, token)| {
                let url = url.clone();
                sc.spawn(move || {
                    let c = Client::login(&url, token);
                    let mut n = 0;
                    loop {
                        let page = c.get("/task");
                        assert_eq!(page.status, 200);
                        let Some(s) = shown(&page.body) else {
                            assert!(page.body.contains("Nothing left to label"));
                            return n;
                        };
                        let choice = ["left", "right", "tie", "both_bad"][(t + n) % 4];
                        let r = c.post("/label", &[("csrf", &s.csrf), ("item", &s.item), ("choice", choice)], None);
                        assert_eq!(r.status, 303, "{}", r.body);
                        n += 1;
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(posted, vec![ITEMS; ANNOTATORS], "everyone labelled every item once");
    drop(server);
    assert_eq!(label_rows(&db), (ANNOTATORS * ITEMS) as i64);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let distinct: i64 =
        conn.query_row("SELECT COUNT(*) FROM (SELECT DISTINCT item, annotator FROM labels)", [], |r| r.get(0)).unwrap();
    assert_eq!(distinct, 2000);
    let open: i64 =
        conn.query_row("SELECT COUNT(*) FROM assignments WHERE status != 'labelled'", [], |r| r.get(0)).unwrap();
    assert_eq!(open, 0);
}
