//! Who labels what: each item goes to `per_item` (K) annotators, balanced, in a per-annotator random order of
//! the two responses; and the writes that answer an assignment.
//!
//! An item's load is its open plus labelled assignments (skips free the slot for someone else). The next
//! item for an annotator is their open assignment if they have one (a reload shows the same pair), else the
//! item with the lowest load below K among those they have never been shown, lowest id first — so labels
//! spread evenly and every item reaches K before any gets more. Each choice of item and each label is one
//! transaction, so concurrent annotators never both take the last slot of an item.

use crate::db::now_ms;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// A pair as one annotator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub item: i64,
    pub prompt: String,
    /// JSON of the response shown on the left / right.
    pub left: String,
    pub right: String,
}

/// An annotator's progress: labelled, skipped, and still to do (their open assignment plus the items they
/// could still be given).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Progress {
    pub labelled: usize,
    pub skipped: usize,
    pub remaining: usize,
}

/// What the annotator chose, in screen terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScreenChoice {
    Left,
    Right,
    Tie,
    BothBad,
}

impl ScreenChoice {
    pub fn parse(s: &str) -> Option<ScreenChoice> {
        Some(match s {
            "left" => ScreenChoice::Left,
            "right" => ScreenChoice::Right,
            "tie" => ScreenChoice::Tie,
            "both_bad" => ScreenChoice::BothBad,
            _ => return None,
        })
    }

    /// The choice in the file's terms (`a`, `b`, `tie`, `both_bad`) and whether the left response was chosen
    /// (`None` for tie and both bad), given whether the pair was shown swapped (B on the left).
    pub fn to_file(self, swapped: bool) -> (&'static str, Option<bool>) {
        match (self, swapped) {
            (ScreenChoice::Left, false) | (ScreenChoice::Right, true) => ("a", Some(self == ScreenChoice::Left)),
            (ScreenChoice::Left, true) | (ScreenChoice::Right, false) => ("b", Some(self == ScreenChoice::Left)),
            (ScreenChoice::Tie, _) => ("tie", None),
            (ScreenChoice::BothBad, _) => ("both_bad", None),
        }
    }
}

/// Items this annotator has never been shown whose load is below K, least-loaded first.
const AVAILABLE: &str = "
    FROM items i
    LEFT JOIN (SELECT item, COUNT(*) AS load FROM assignments WHERE status != 'skipped' GROUP BY item) t
        ON t.item = i.id
    WHERE COALESCE(t.load, 0) < ?2
      AND i.id NOT IN (SELECT item FROM assignments WHERE annotator = ?1)";

/// The annotator's current task: their open assignment, or a new one (order drawn from `swap`), or `None`
/// when nothing is left for them.
pub fn next_task(conn: &mut Connection, annotator: i64, per_item: usize, swap: bool) -> rusqlite::Result<Option<Task>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let open: Option<(i64, bool)> = tx
        .query_row(
            "SELECT item, swapped FROM assignments WHERE annotator = ?1 AND status = 'open' ORDER BY id LIMIT 1",
            [annotator],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (item, swapped) = match open {
        Some(found) => found,
        None => {
            let sql = format!("SELECT i.id {AVAILABLE} ORDER BY COALESCE(t.load, 0), i.id LIMIT 1");
            let Some(item) = tx.query_row(&sql, params![annotator, per_item as i64], |r| r.get(0)).optional()? else {
                return Ok(None);
            };
            tx.execute(
                "INSERT INTO assignments (item, annotator, swapped, status, shown_at) VALUES (?1, ?2, ?3, 'open', ?4)",
                params![item, annotator, swap, now_ms()],
            )?;
            (item, swap)
        }
    };
    let (prompt, a, b): (String, String, String) =
        tx.query_row("SELECT prompt, response_a, response_b FROM items WHERE id = ?1", [item], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    tx.commit()?;
    let (left, right) = if swapped { (b, a) } else { (a, b) };
    Ok(Some(Task { item, prompt, left, right }))
}

/// Progress of one annotator.
pub fn progress(conn: &Connection, annotator: i64, per_item: usize) -> rusqlite::Result<Progress> {
    let count = |status: &str| -> rusqlite::Result<usize> {
        conn.query_row(
            "SELECT COUNT(*) FROM assignments WHERE annotator = ?1 AND status = ?2",
            params![annotator, status],
            |r| r.get::<_, i64>(0),
        )
        .map(|n| n as usize)
    };
    let available: i64 =
        conn.query_row(&format!("SELECT COUNT(*) {AVAILABLE}"), params![annotator, per_item as i64], |r| r.get(0))?;
    Ok(Progress {
        labelled: count("labelled")?,
        skipped: count("skipped")?,
        remaining: count("open")? + available as usize,
    })
}

/// A label as submitted.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub item: i64,
    pub choice: ScreenChoice,
    pub strength: Option<u8>,
    pub reason: Option<String>,
}

/// Why a submission was not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The annotator has no assignment for this item (someone else's, or never shown): 403.
    NotYours,
    /// Their assignment for it is already answered (a double submit): nothing written, not an error.
    AlreadyAnswered,
}

/// Writes a label for the annotator's open assignment of `s.item` and marks it labelled, in one committed
/// transaction (with `synchronous=FULL`, on disk when this returns).
pub fn record_label(conn: &mut Connection, annotator: i64, s: &Submission) -> rusqlite::Result<Result<(), Refusal>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some((assignment, swapped, status, shown_at)) = assignment(&tx, annotator, s.item)? else {
        return Ok(Err(Refusal::NotYours));
    };
    if status != "open" {
        return Ok(Err(Refusal::AlreadyAnswered));
    }
    let (choice, chose_left) = s.choice.to_file(swapped);
    // A strength grades a preference; with a tie or both bad there is none (a radio left set is ignored).
    let strength = if chose_left.is_some() { s.strength } else { None };
    let now = now_ms();
    tx.execute(
        "INSERT INTO labels (assignment, item, annotator, choice, chose_left, strength, reason, time_ms, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![assignment, s.item, annotator, choice, chose_left, strength, s.reason, (now - shown_at).max(0), now],
    )?;
    tx.execute("UPDATE assignments SET status = 'labelled' WHERE id = ?1", [assignment])?;
    tx.commit()?;
    Ok(Ok(()))
}

/// Marks the annotator's open assignment of `item` skipped: they will not see it again, and its slot goes to
/// someone else.
pub fn skip(conn: &mut Connection, annotator: i64, item: i64) -> rusqlite::Result<Result<(), Refusal>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some((assignment, _, status, _)) = self::assignment(&tx, annotator, item)? else {
        return Ok(Err(Refusal::NotYours));
    };
    if status != "open" {
        return Ok(Err(Refusal::AlreadyAnswered));
    }
    tx.execute("UPDATE assignments SET status = 'skipped' WHERE id = ?1", [assignment])?;
    tx.commit()?;
    Ok(Ok(()))
}

/// The annotator's assignment of an item: id, swapped, status, shown_at.
fn assignment(conn: &Connection, annotator: i64, item: i64) -> rusqlite::Result<Option<(i64, bool, String, i64)>> {
    conn.query_row(
        "SELECT id, swapped, status, shown_at FROM assignments WHERE annotator = ?1 AND item = ?2",
        params![annotator, item],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
    )
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn screen_choices_map_back_to_the_file() {
        use ScreenChoice::*;
        assert_eq!(Left.to_file(false), ("a", Some(true)));
        assert_eq!(Left.to_file(true), ("b", Some(true)));
        assert_eq!(Right.to_file(false), ("b", Some(false)));
        assert_eq!(Right.to_file(true), ("a", Some(false)));
        assert_eq!(Tie.to_file(true), ("tie", None));
        assert_eq!(BothBad.to_file(false), ("both_bad", None));
    }
}
