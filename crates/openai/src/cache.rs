//! A response cache in one SQLite file, keyed by the full request (URL and body, never the API
//! key): a rerun of an experiment against an endpoint sends nothing and gets the same answers,
//! sampled ones included, so that it is reproducible and free.

use crate::{Error, Result};
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct Cache {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Cache {
    /// Opens (creating if needed) the cache at `path`. WAL mode lets several processes of a
    /// sweep read and write the same file.
    pub fn open(path: &Path) -> Result<Self> {
        let err = |e: rusqlite::Error| Error::Cache { path: path.to_path_buf(), message: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::Cache { path: path.to_path_buf(), message: e.to_string() })?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL").map_err(err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS responses (
                key TEXT PRIMARY KEY,
                url TEXT NOT NULL,
                request TEXT NOT NULL,
                response TEXT NOT NULL,
                created INTEGER NOT NULL
            )",
        )
        .map_err(err)?;
        Ok(Self { conn: Mutex::new(conn), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cache key of a request: SHA-256 of the URL and the exact body sent.
    pub fn key(url: &str, body: &str) -> String {
        let mut h = Sha256::new();
        h.update(url.as_bytes());
        h.update([0u8]);
        h.update(body.as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn get(&self, key: &str) -> Result<Option<String>> {
        let conn = self.conn.lock().expect("cache lock");
        conn.query_row("SELECT response FROM responses WHERE key = ?1", params![key], |r| r.get(0))
            .optional()
            .map_err(|e| self.error(e))
    }

    pub fn put(&self, key: &str, url: &str, request: &str, response: &str) -> Result<()> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let conn = self.conn.lock().expect("cache lock");
        conn.execute(
            "INSERT OR REPLACE INTO responses (key, url, request, response, created) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![key, url, request, response, now as i64],
        )
        .map(|_| ())
        .map_err(|e| self.error(e))
    }

    /// Cached responses.
    pub fn len(&self) -> Result<usize> {
        let conn = self.conn.lock().expect("cache lock");
        conn.query_row("SELECT COUNT(*) FROM responses", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(|e| self.error(e))
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    fn error(&self, e: rusqlite::Error) -> Error {
        Error::Cache { path: self.path.clone(), message: e.to_string() }
    }
}
