//! Who gets what: each item reaches exactly K annotators, least-labelled first; a skip hands the item to
//! someone else; each annotator's order of the two responses is drawn once and kept.

mod common;

use common::*;
use mismatch_label::{spawn, ServerConfig};

/// Labels until the annotator has nothing left; returns the pairs they were shown, in order.
fn label_all(c: &Client) -> Vec<usize> {
    let mut seen = Vec::new();
    while let Some(s) = shown(&c.get("/task").body) {
        seen.push(s.n);
        assert_eq!(c.post("/label", &[("csrf", &s.csrf), ("item", &s.item), ("choice", "left")], None).status, 303);
    }
    seen
}

#[test]
fn each_item_reaches_exactly_k_annotators() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs_file(dir.path(), 4);
    let db = database(dir.path(), &pairs);
    let tokens: Vec<String> = ["a", "b", "c"].iter().map(|n| annotator(&db, n, false)).collect();
    let server = spawn(&ServerConfig { per_item: 2, ..ServerConfig::new(&db) }).unwrap();
    let c: Vec<Client> = tokens.iter().map(|t| Client::login(&server.url(), t)).collect();

    // a and b alternate: the least-labelled item comes first, so they spread over the items.
    let (a, b) = (&c[0], &c[1]);
    let sa = shown(&a.get("/task").body).unwrap();
    let sb = shown(&b.get("/task").body).unwrap();
    assert_eq!((sa.n, sb.n), (1, 2), "b gets an item nobody holds before a second copy of item 1");
    assert_eq!(a.post("/label", &[("csrf", &sa.csrf), ("item", &sa.item), ("choice", "tie")], None).status, 303);
    assert_eq!(shown(&a.get("/task").body).unwrap().n, 3);
    assert_eq!(b.post("/label", &[("csrf", &sb.csrf), ("item", &sb.item), ("choice", "tie")], None).status, 303);
    assert_eq!(shown(&b.get("/task").body).unwrap().n, 4);

    let mut total = 2 + label_all(a).len() + label_all(b).len();
    let rest = label_all(&c[2]);
    total += rest.len();
    assert_eq!(total, 8, "4 items × K = 2");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let per_item: Vec<i64> = conn
        .prepare("SELECT COUNT(*) FROM labels GROUP BY item ORDER BY item")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(per_item, [2, 2, 2, 2]);
    let page = c[2].get("/task").body;
    assert!(page.contains("Nothing left to label"));
}

#[test]
fn a_skipped_item_goes_to_someone_else() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs_file(dir.path(), 2);
    let db = database(dir.path(), &pairs);
    let (ta, tb) = (annotator(&db, "a", false), annotator(&db, "b", false));
    let server = spawn(&ServerConfig { per_item: 1, ..ServerConfig::new(&db) }).unwrap();
    let a = Client::login(&server.url(), &ta);
    let s = shown(&a.get("/task").body).unwrap();
    assert_eq!(s.n, 1);
    assert_eq!(a.post("/skip", &[("csrf", &s.csrf), ("item", &s.item)], None).status, 303);
    let next = a.get("/task").body;
    assert_eq!(shown(&next).unwrap().n, 2, "a does not see the skipped item again");
    assert!(next.contains("(1 skipped)"));
    // a holds item 2 open and skipped item 1, so item 1 is free for b.
    let b = Client::login(&server.url(), &tb);
    assert_eq!(label_all(&b), [1]);
    assert_eq!(label_all(&a), [2]);
    assert_eq!(label_rows(&db), 2);
}

#[test]
fn the_order_shown_is_kept_per_annotator_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs_file(dir.path(), 40);
    let db = database(dir.path(), &pairs);
    let t = annotator(&db, "a", false);
    let server = spawn(&ServerConfig { per_item: 1, ..ServerConfig::new(&db) }).unwrap();
    let a = Client::login(&server.url(), &t);
    let mut swapped_pages = 0;
    while let Some(s) = shown(&a.get("/task").body) {
        // A reload shows the same order.
        assert_eq!(shown(&a.get("/task").body).unwrap().first_on_left, s.first_on_left);
        swapped_pages += usize::from(!s.first_on_left);
        assert_eq!(a.post("/label", &[("csrf", &s.csrf), ("item", &s.item), ("choice", "left")], None).status, 303);
    }
    let conn = rusqlite::Connection::open(&db).unwrap();
    let swapped: i64 = conn.query_row("SELECT SUM(swapped) FROM assignments", [], |r| r.get(0)).unwrap();
    assert_eq!(swapped as usize, swapped_pages, "the database records what was shown");
    // Always clicking left: the label is `b` exactly when the pair was shown swapped.
    let b: i64 = conn.query_row("SELECT COUNT(*) FROM labels WHERE choice = 'b'", [], |r| r.get(0)).unwrap();
    assert_eq!(b, swapped);
    // A fair coin over 40 pairs: both orders occur (all one way has probability 2 × 2⁻⁴⁰).
    assert!(swapped > 0 && swapped < 40);
}
