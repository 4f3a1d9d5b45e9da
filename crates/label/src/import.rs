//! Reading a pairs file into items: any format mismatch-data reads, each record becoming one or more pairs.
//!
//! - preference pairs (TRL, HH-RLHF, OpenAI DPO, ShareGPT): response A = `chosen`, B = `rejected`;
//! - judgements (PandaLM): A = `response1`, B = `response2`;
//! - K-wise rankings: every pair (i, j), i < j, of the completions, in file order.
//!
//! Any label the file already carries (which response is "chosen", the PandaLM annotators, the ranking) is
//! ignored: it is not stored and never shown, and the page order is randomised per annotator anyway.
//! The whole file is parsed before the database is opened, so a bad file leaves the database untouched.

use crate::db::now_ms;
use mismatch_data::{read_dataset, ReadOptions, Records, Turns};
use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};
use std::path::Path;

/// One pair to label, with its texts as JSON (a string or a message list) and the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    pub prompt: String,
    pub a: String,
    pub b: String,
    pub line: usize,
}

impl Pair {
    fn new(prompt: &Turns, a: &Turns, b: &Turns, line: usize) -> Pair {
        let json = |t: &Turns| serde_json::to_string(t).expect("Turns serialise");
        Pair { prompt: json(prompt), a: json(a), b: json(b), line }
    }

    /// SHA-256 (hex) of `[prompt, a, b]`: the key that keeps a re-import from duplicating items.
    pub fn hash(&self) -> String {
        let key = format!("[{},{},{}]", self.prompt, self.a, self.b);
        crate::auth::hex(&Sha256::digest(key.as_bytes()))
    }
}

/// Reads and validates the whole file; errors name the file and line (mismatch-data's messages).
pub fn read_pairs(path: &Path) -> crate::Result<Vec<Pair>> {
    let ds = read_dataset(path, ReadOptions::default())?;
    let pairs: Vec<Pair> = match &ds.records {
        Records::Pairs(v) => v.iter().map(|p| Pair::new(&p.prompt, &p.chosen, &p.rejected, p.line)).collect(),
        Records::Judgements(v) => v.iter().map(|j| Pair::new(&j.prompt, &j.response1, &j.response2, j.line)).collect(),
        Records::Rankings(v) => v
            .iter()
            .flat_map(|r| {
                let c = &r.completions;
                (0..c.len())
                    .flat_map(move |i| (i + 1..c.len()).map(move |j| Pair::new(&r.prompt, &c[i], &c[j], r.line)))
            })
            .collect(),
    };
    Ok(pairs)
}

/// What an import did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImportReport {
    /// Pairs in the file.
    pub read: usize,
    /// Pairs that were new.
    pub added: usize,
    /// Pairs already in the database (same prompt and responses), or repeated within the file.
    pub existing: usize,
}

/// Inserts the pairs not yet present, in one transaction (all or nothing).
pub fn insert(conn: &mut Connection, source: &Path, pairs: &[Pair]) -> rusqlite::Result<ImportReport> {
    let tx = conn.transaction()?;
    let mut added = 0;
    {
        let mut stmt = tx.prepare(
            "INSERT INTO items (hash, prompt, response_a, response_b, source, line, imported_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (hash) DO NOTHING",
        )?;
        let now = now_ms();
        let source = source.display().to_string();
        for p in pairs {
            added += stmt.execute(params![p.hash(), p.prompt, p.a, p.b, source, p.line as i64, now])?;
        }
    }
    tx.commit()?;
    Ok(ImportReport { read: pairs.len(), added, existing: pairs.len() - added })
}

/// Reads `path` and imports it into the database at `db` (created if missing).
pub fn import_file(db: &Path, path: &Path) -> crate::Result<ImportReport> {
    let pairs = read_pairs(path)?;
    let mut conn = crate::db::open(db)?;
    insert(&mut conn, path, &pairs).map_err(|e| crate::LabelError::db(db, e))
}
