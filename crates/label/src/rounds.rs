//! The labelling app as the human side of a program: post pairs, wait until each has K labels,
//! read their verdicts — what `mismatch loop --labels-from DB` does every round, while people
//! label in `mismatch label serve` on the same database.

use crate::import::{insert, Pair};
use crate::{LabelError, Result};
use rusqlite::params;
use std::path::Path;

/// Adds plain-text `(prompt, response A, response B)` pairs as items (pairs already there are
/// kept, with their labels) and returns their keys, in order.
pub fn post(db: &Path, source: &str, pairs: &[(String, String, String)]) -> Result<Vec<String>> {
    let json = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let items: Vec<Pair> = pairs
        .iter()
        .enumerate()
        .map(|(i, (p, a, b))| Pair { prompt: json(p), a: json(a), b: json(b), line: i + 1 })
        .collect();
    let mut conn = crate::db::open(db)?;
    insert(&mut conn, Path::new(source), &items).map_err(|e| LabelError::db(db, e))?;
    Ok(items.iter().map(Pair::hash).collect())
}

/// The labels of the item with key `hash`: (A chosen, B chosen, tie or both bad).
fn counts(conn: &rusqlite::Connection, hash: &str) -> rusqlite::Result<(usize, usize, usize)> {
    conn.query_row(
        "SELECT COALESCE(SUM(l.choice = 'a'), 0), COALESCE(SUM(l.choice = 'b'), 0),
                COALESCE(SUM(l.choice IN ('tie', 'both_bad')), 0)
         FROM items i LEFT JOIN labels l ON l.item = i.id WHERE i.hash = ?1",
        params![hash],
        |r| Ok((r.get::<_, i64>(0)? as usize, r.get::<_, i64>(1)? as usize, r.get::<_, i64>(2)? as usize)),
    )
}

/// How many of the items `hashes` have at least `k` labels.
pub fn done(db: &Path, hashes: &[String], k: usize) -> Result<usize> {
    let conn = crate::db::open(db)?;
    let mut n = 0;
    for h in hashes {
        let (a, b, other) = counts(&conn, h).map_err(|e| LabelError::db(db, e))?;
        n += (a + b + other >= k) as usize;
    }
    Ok(n)
}

/// Each item's verdict: `Some(true)` when a strict majority of its labels chose A, `Some(false)`
/// for B, `None` otherwise (no majority, or ties and "both bad" prevailing):
/// [`crate::export::majority`], as `label export --aggregate majority` decides.
pub fn verdicts(db: &Path, hashes: &[String]) -> Result<Vec<Option<bool>>> {
    let conn = crate::db::open(db)?;
    hashes
        .iter()
        .map(|h| {
            let (a, b, other) = counts(&conn, h).map_err(|e| LabelError::db(db, e))?;
            Ok(crate::export::majority(a, b, a + b + other).map(|c| c == "a"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::{next_task, record_label, ScreenChoice, Submission};

    #[test]
    fn posted_pairs_wait_for_labels_and_give_majority_verdicts() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("l.sqlite");
        let pairs = vec![
            ("p1".to_string(), "a1".to_string(), "b1".to_string()),
            ("p2".to_string(), "a2".to_string(), "b2".to_string()),
        ];
        let keys = post(&db, "loop", &pairs).unwrap();
        assert_eq!(post(&db, "loop", &pairs).unwrap(), keys, "posting again adds nothing");
        assert_eq!(done(&db, &keys, 1).unwrap(), 0);
        let mut conn = crate::db::open(&db).unwrap();
        let mut ids = vec![];
        for name in ["x", "y", "z"] {
            crate::auth::add_annotator(&mut conn, name, false, false).unwrap();
            ids.push(
                conn.query_row("SELECT id FROM annotators WHERE name = ?1", [name], |r| r.get::<_, i64>(0)).unwrap(),
            );
        }
        // Item 1: A, A, B → A. Item 2: B, tie, A → no majority. Shown unswapped: left is A.
        let picks = [
            [ScreenChoice::Left, ScreenChoice::Right],
            [ScreenChoice::Left, ScreenChoice::Tie],
            [ScreenChoice::Right, ScreenChoice::Left],
        ];
        for (who, choices) in ids.iter().zip(picks) {
            for choice in choices {
                let t = next_task(&mut conn, *who, 3, false).unwrap().unwrap();
                let s = Submission { item: t.item, choice, strength: None, reason: None };
                record_label(&mut conn, *who, &s).unwrap().unwrap();
            }
        }
        assert_eq!(done(&db, &keys, 3).unwrap(), 2);
        assert_eq!(done(&db, &keys, 4).unwrap(), 0);
        assert_eq!(verdicts(&db, &keys).unwrap(), vec![Some(true), None]);
    }
}
