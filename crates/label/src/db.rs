//! The labels database: one SQLite file holding the items, the annotators, their sessions, who was shown what
//! (and in which order), and every label.
//!
//! Durability: WAL journal with `synchronous=FULL`. In WAL mode NORMAL already survives a crash of this
//! process (the WAL is in the OS page cache), but a power cut or kernel panic can lose the last
//! transactions; FULL fsyncs the WAL on every commit, so a label the server has acknowledged survives that
//! too. The price, one fsync per label, is nothing at human labelling speed. WAL also lets `export` and
//! `add-annotator` read and write while `serve` runs (`busy_timeout` waits for the writer instead of failing).

use crate::error::{LabelError, Result};
use rusqlite::Connection;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Bumped when the schema changes incompatibly; a database with another version is refused.
pub const SCHEMA_VERSION: i64 = 1;

/// The schema. Choices are stored in the file's terms (`a` = the file's first response, `b` = its second),
/// never in screen terms; `assignments.swapped` records what the annotator saw on the left, so the screen
/// position of every label can be recovered (position bias) and the export never depends on it.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- One pair to label. prompt/response_a/response_b hold the JSON of the text as read (a string, or a list of
-- {role, content} messages); hash is SHA-256 of the JSON array [prompt, response_a, response_b], so importing
-- the same pair again (from this or another file) finds the existing row.
CREATE TABLE IF NOT EXISTS items (
    id          INTEGER PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    prompt      TEXT NOT NULL,
    response_a  TEXT NOT NULL,
    response_b  TEXT NOT NULL,
    source      TEXT NOT NULL,
    line        INTEGER NOT NULL,
    imported_at INTEGER NOT NULL
);
-- token_hash: SHA-256 (hex) of the login token; the token itself is only ever printed.
CREATE TABLE IF NOT EXISTS annotators (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    admin      INTEGER NOT NULL CHECK (admin IN (0, 1)),
    created_at INTEGER NOT NULL
);
-- id_hash: SHA-256 (hex) of the session cookie value, so a copy of the database does not log anyone in.
CREATE TABLE IF NOT EXISTS sessions (
    id_hash    TEXT PRIMARY KEY,
    annotator  INTEGER NOT NULL REFERENCES annotators(id) ON DELETE CASCADE,
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
-- An item handed to an annotator. swapped = 1: response_b was shown on the left. status: open (shown, not
-- yet answered), labelled, or skipped (does not count towards the item's K annotators).
CREATE TABLE IF NOT EXISTS assignments (
    id        INTEGER PRIMARY KEY,
    item      INTEGER NOT NULL REFERENCES items(id),
    annotator INTEGER NOT NULL REFERENCES annotators(id),
    swapped   INTEGER NOT NULL CHECK (swapped IN (0, 1)),
    status    TEXT NOT NULL CHECK (status IN ('open', 'labelled', 'skipped')),
    shown_at  INTEGER NOT NULL,
    UNIQUE (item, annotator)
);
CREATE INDEX IF NOT EXISTS assignments_by_annotator ON assignments (annotator, status);
CREATE INDEX IF NOT EXISTS assignments_by_item ON assignments (item, status);
-- choice is in the file's terms; chose_left (1/0, NULL for tie and both_bad) is the screen position chosen.
-- strength: 1 negligibly better/unsure, 2 slightly better, 3 better, 4 significantly better (Llama 2's
-- four levels, Touvron et al. 2023 §3.2.1). time_ms: from the page being served to the label arriving.
CREATE TABLE IF NOT EXISTS labels (
    id         INTEGER PRIMARY KEY,
    assignment INTEGER NOT NULL UNIQUE REFERENCES assignments(id),
    item       INTEGER NOT NULL REFERENCES items(id),
    annotator  INTEGER NOT NULL REFERENCES annotators(id),
    choice     TEXT NOT NULL CHECK (choice IN ('a', 'b', 'tie', 'both_bad')),
    chose_left INTEGER CHECK (chose_left IN (0, 1)),
    strength   INTEGER CHECK (strength BETWEEN 1 AND 4),
    reason     TEXT,
    time_ms    INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (item, annotator)
);
CREATE INDEX IF NOT EXISTS labels_by_item ON labels (item);
";

/// Opens (creating if needed) the database at `path`, with the pragmas above and the schema in place.
pub fn open(path: &Path) -> Result<Connection> {
    let fail = |e: rusqlite::Error| LabelError::db(path, e);
    let conn = Connection::open(path).map_err(fail)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(fail)?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0)).map_err(fail)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LabelError::db(path, format!("cannot switch to WAL journal mode (got {mode})")));
    }
    conn.execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;").map_err(fail)?;
    conn.execute_batch(SCHEMA).map_err(fail)?;
    let version: Option<String> =
        conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).ok();
    match version {
        None => {
            conn.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?1)", [SCHEMA_VERSION.to_string()])
                .map_err(fail)?;
        }
        Some(v) if v == SCHEMA_VERSION.to_string() => {}
        Some(v) => {
            return Err(LabelError::db(path, format!("schema version {v}, this build reads {SCHEMA_VERSION}")));
        }
    }
    Ok(conn)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}
