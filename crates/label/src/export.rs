//! `label export`: labels → TRL-style JSONL (`prompt`, `chosen`, `rejected`, plus `annotator` and `margin`)
//! that `mismatch rm train` and every mismatch-data reader take.
//!
//! - `--aggregate all`: one row per decisive label (`a` or `b`), `annotator` its author.
//! - `--aggregate majority`: one row per item whose labels have a strict majority (more than half of all its
//!   labels, ties and both-bad included) for `a` or for `b`; `annotator` is `"majority"`, `annotators` the
//!   names in that majority, `votes` their number and `labels` the item's label count. An item with a single
//!   label is its own majority unless `--min-labels` asks for more.
//! - `--min-labels N` (default 1): in either mode, only items with at least N labels (all kinds counted)
//!   give rows; use K to export only fully labelled items.
//!
//! In both modes `tie` and `both_bad` labels give no pair and are dropped, as are items whose majority is a
//! tie, both bad, or missing. `margin` follows Llama 2's "margin large" levels (Touvron et al. 2023,
//! Table 27): strength 4 significantly better → 3, 3 better → 2, 2 slightly better → 1, 1 negligibly
//! better/unsure → 0, i.e. strength − 1; for a majority row it is the mean over the majority's labels that
//! gave a strength. Rows without any strength have no `margin` field. Rows are in item order (then label
//! order), and the file is written atomically (temporary file in the same directory, then a rename).

use crate::error::{LabelError, Result};
use rusqlite::Connection;
use serde_json::{json, Value};
use std::path::Path;

/// How labels become rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Aggregate {
    Majority,
    All,
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportReport {
    pub rows: usize,
    /// Labels read.
    pub labels: usize,
    /// Labels that gave no row (`all`: tie and both_bad, or too few labels on the item) or items that gave no
    /// row (`majority`: no majority for one response, or too few labels).
    pub dropped: usize,
}

struct LabelRow {
    item: i64,
    prompt: String,
    a: String,
    b: String,
    annotator: String,
    choice: String,
    strength: Option<i64>,
}

fn parse(json: &str) -> Value {
    serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.to_owned()))
}

fn pair_row(r: &LabelRow, choice: &str) -> Value {
    let (chosen, rejected) = if choice == "a" { (&r.a, &r.b) } else { (&r.b, &r.a) };
    json!({ "prompt": parse(&r.prompt), "chosen": parse(chosen), "rejected": parse(rejected) })
}

/// The response a strict majority of an item's `n` labels chose, `a` of them A and `b` B (ties
/// and "both bad" count in `n` for neither): what `--aggregate majority` exports.
pub fn majority(a: usize, b: usize, n: usize) -> Option<&'static str> {
    if 2 * a > n {
        Some("a")
    } else if 2 * b > n {
        Some("b")
    } else {
        None
    }
}

fn margin(strength: impl Iterator<Item = i64>) -> Option<f64> {
    let m: Vec<f64> = strength.map(|s| (s - 1) as f64).collect();
    (!m.is_empty()).then(|| m.iter().sum::<f64>() / m.len() as f64)
}

/// The rows of an export, in order.
pub fn rows(
    conn: &Connection,
    aggregate: Aggregate,
    min_labels: usize,
) -> rusqlite::Result<(Vec<Value>, ExportReport)> {
    let mut stmt = conn.prepare(
        "SELECT l.item, i.prompt, i.response_a, i.response_b, a.name, l.choice, l.strength
         FROM labels l JOIN items i ON i.id = l.item JOIN annotators a ON a.id = l.annotator
         ORDER BY l.item, l.id",
    )?;
    let labels: Vec<LabelRow> = stmt
        .query_map([], |r| {
            Ok(LabelRow {
                item: r.get(0)?,
                prompt: r.get(1)?,
                a: r.get(2)?,
                b: r.get(3)?,
                annotator: r.get(4)?,
                choice: r.get(5)?,
                strength: r.get(6)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    let mut out = Vec::new();
    let mut dropped = 0;
    let groups = labels.chunk_by(|x, y| x.item == y.item);
    match aggregate {
        Aggregate::All => {
            for r in groups.filter(|g| g.len() >= min_labels).flatten() {
                if r.choice != "a" && r.choice != "b" {
                    dropped += 1;
                    continue;
                }
                let mut row = pair_row(r, &r.choice);
                row["annotator"] = r.annotator.clone().into();
                if let Some(m) = margin(r.strength.into_iter()) {
                    row["margin"] = m.into();
                }
                out.push(row);
            }
        }
        Aggregate::Majority => {
            for group in groups {
                let n = group.len();
                let count = |c: &str| group.iter().filter(|r| r.choice == c).count();
                let winner = majority(count("a"), count("b"), n);
                let Some(c) = winner.filter(|_| n >= min_labels) else {
                    dropped += 1;
                    continue;
                };
                let voters: Vec<&LabelRow> = group.iter().filter(|r| r.choice == c).collect();
                let mut row = pair_row(&group[0], c);
                row["annotator"] = "majority".into();
                row["annotators"] = voters.iter().map(|r| r.annotator.clone()).collect::<Vec<_>>().into();
                row["votes"] = voters.len().into();
                row["labels"] = n.into();
                if let Some(m) = margin(voters.iter().filter_map(|r| r.strength)) {
                    row["margin"] = m.into();
                }
                out.push(row);
            }
        }
    }
    if aggregate == Aggregate::All {
        // Labels of items with too few labels were skipped above without being counted.
        dropped = labels.len() - out.len();
    }
    let report = ExportReport { rows: out.len(), labels: labels.len(), dropped };
    Ok((out, report))
}

/// Exports the database at `db` to `out` (JSONL, written atomically).
pub fn export(db: &Path, out: &Path, aggregate: Aggregate, min_labels: usize) -> Result<ExportReport> {
    if !db.exists() {
        return Err(LabelError::db(db, "no such database"));
    }
    let conn = crate::db::open(db)?;
    let (rows, report) = rows(&conn, aggregate, min_labels).map_err(|e| LabelError::db(db, e))?;
    let mut buf = Vec::new();
    for r in &rows {
        serde_json::to_writer(&mut buf, r).expect("JSON values serialise");
        buf.push(b'\n');
    }
    mismatch_data::write::write_atomic(out, &buf)?;
    Ok(report)
}
