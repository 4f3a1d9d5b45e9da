//! What every `mismatch eval` command shares: reading records with file:line errors, typed field
//! access, and writing JSON, JSONL and the HTML page atomically into the output directory.

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// One input record: where it starts and its fields.
pub struct Record<'a> {
    pub path: &'a Path,
    pub line: usize,
    pub fields: Map<String, Value>,
}

/// The records of a JSONL file or a JSON array (gzipped or not); errors name file and line.
pub fn records(path: &Path) -> Result<Vec<Record<'_>>> {
    let (bytes, _) = mismatch_data::read::read_bytes(path)?;
    let rows = mismatch_data::read::split_records(path, &bytes)?;
    if rows.is_empty() {
        bail!("{}: no records", path.display());
    }
    rows.into_iter()
        .map(|(line, v)| match v {
            Value::Object(fields) => Ok(Record { path, line, fields }),
            _ => bail!("{}:{line}: expected a JSON object", path.display()),
        })
        .collect()
}

impl Record<'_> {
    pub fn error(&self, field: &str, msg: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}:{}: field \"{field}\": {msg}", self.path.display(), self.line)
    }

    /// A required string field.
    pub fn str(&self, name: &str) -> Result<&str> {
        match self.fields.get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(v) => Err(self.error(name, format!("expected a string, found {}", kind(v)))),
            None => Err(self.error(name, "missing")),
        }
    }

    /// The first of `names` that is present, as a string (`prompt` or `instruction`, …).
    pub fn str_any(&self, names: &[&str]) -> Result<&str> {
        match names.iter().find(|n| self.fields.contains_key(**n)) {
            Some(n) => self.str(n),
            None => Err(anyhow!(
                "{}:{}: missing field: expected one of {}",
                self.path.display(),
                self.line,
                names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
            )),
        }
    }

    /// An optional string field (absent or null is `None`).
    pub fn opt_str(&self, name: &str) -> Result<Option<&str>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(_) => self.str(name).map(Some),
        }
    }

    /// An optional number (absent or null is `None`).
    pub fn opt_f64(&self, name: &str) -> Result<Option<f64>> {
        match self.fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v) => Err(self.error(name, format!("expected a number, found {}", kind(v)))),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The output directory of one command; files appear whole or not at all.
pub struct OutDir(PathBuf);

impl OutDir {
    pub fn create(dir: &Path) -> Result<OutDir> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the output directory", dir.display()))?;
        Ok(OutDir(dir.to_path_buf()))
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    pub fn json(&self, name: &str, value: &impl serde::Serialize) -> Result<PathBuf> {
        let mut text = serde_json::to_string_pretty(value)?;
        text.push('\n');
        self.bytes(name, text.as_bytes())
    }

    pub fn jsonl(&self, name: &str, rows: &[Value]) -> Result<PathBuf> {
        let mut text = String::new();
        for r in rows {
            text.push_str(&serde_json::to_string(r)?);
            text.push('\n');
        }
        self.bytes(name, text.as_bytes())
    }

    pub fn page(&self, name: &str, page: &mismatch_report::Page) -> Result<PathBuf> {
        self.bytes(name, page.render().as_bytes())
    }

    fn bytes(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let p = self.path(name);
        mismatch_data::write::write_atomic(&p, bytes)?;
        Ok(p)
    }
}
