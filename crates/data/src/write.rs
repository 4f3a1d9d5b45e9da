//! `data convert` (→ TRL-style JSONL) and `data split` (seeded, prompt-disjoint), both written atomically.

use crate::error::{DataError, Result};
use crate::types::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` via a temporary file in the same directory and a rename, so a reader never sees
/// a half-written file and a failed run leaves any previous file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = |what: &str, e: &dyn std::fmt::Display| DataError::file(path, format!("cannot {what}: {e}"));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail("create a temporary file next to it", &e))?;
    tmp.write_all(bytes).map_err(|e| fail("write", &e))?;
    tmp.as_file().sync_all().map_err(|e| fail("sync", &e))?;
    tmp.persist(path).map_err(|e| fail("rename the temporary file onto it", &e.error))?;
    Ok(())
}

/// One TRL-style record: `{"prompt", "chosen", "rejected"[, "margin"]}`, strings or message lists as read.
pub fn trl_json(p: &Preference) -> serde_json::Value {
    let mut o = serde_json::json!({ "prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected });
    if let Some(m) = p.margin {
        o["margin"] = m.into();
    }
    o
}

/// What `convert` wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertReport {
    pub written: usize,
    /// Judgements whose majority label is a tie or that have no majority (no pair to write).
    pub dropped: usize,
}

/// Converts any supported file to TRL-style JSONL: rankings expand to their K(K−1)/2 pairs, judgements
/// become their majority-label pair.
pub fn convert(ds: &Dataset, out: &Path) -> Result<ConvertReport> {
    let (pairs, dropped) = ds.records.to_pairs();
    let mut buf = Vec::new();
    for p in &pairs {
        serde_json::to_writer(&mut buf, &trl_json(p)).expect("JSON values serialise");
        buf.push(b'\n');
    }
    write_atomic(out, &buf)?;
    Ok(ConvertReport { written: pairs.len(), dropped })
}

/// One output split: file, records, distinct prompts.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitPart {
    pub path: PathBuf,
    pub rows: usize,
    pub prompts: usize,
}

/// Default split names: `train,test` for two ratios, `train,validation,test` for three, else `split0..`.
pub fn default_names(k: usize) -> Vec<String> {
    match k {
        2 => vec!["train".into(), "test".into()],
        3 => vec!["train".into(), "validation".into(), "test".into()],
        _ => (0..k).map(|i| format!("split{i}")).collect(),
    }
}

/// `--names` are file names inside `--out-dir`: each non-empty, distinct, without a path
/// separator and not `.` or `..`, so no split overwrites another or lands outside the directory.
fn check_names(names: &[String]) -> Result<()> {
    for (i, n) in names.iter().enumerate() {
        if n.trim().is_empty() {
            return Err(DataError::Usage("--names: empty name".into()));
        }
        if n.contains(['/', '\\']) || n == "." || n == ".." {
            return Err(DataError::Usage(format!(
                "--names: {n:?} is not a plain file name (no path separators or \"..\")"
            )));
        }
        if names[..i].contains(n) {
            return Err(DataError::Usage(format!("--names: {n:?} given twice (each split needs its own file)")));
        }
    }
    Ok(())
}

/// Splits by prompt: records sharing a prompt always land in the same split.
///
/// Prompt groups (in order of first appearance) are shuffled with ChaCha8 seeded by `seed`, then laid end to
/// end; a group goes to split k when its midpoint falls in [Σ_{j<k} r_j, Σ_{j≤k} r_j)·N, N = record count. So
/// split sizes match the ratios up to one group. Each split keeps the original record order and the original
/// record JSON, so any input format survives; the output is a pure function of (file, ratios, seed).
pub fn split(ds: &Dataset, out_dir: &Path, ratios: &[f64], names: &[String], seed: u64) -> Result<Vec<SplitPart>> {
    if ratios.len() < 2 || ratios.iter().any(|r| !r.is_finite() || *r <= 0.0) {
        return Err(DataError::Usage(format!("--ratios: need at least two positive numbers, got {ratios:?}")));
    }
    let sum: f64 = ratios.iter().sum();
    if (sum - 1.0).abs() > 1e-6 {
        return Err(DataError::Usage(format!("--ratios: must sum to 1, they sum to {sum}")));
    }
    if names.len() != ratios.len() {
        return Err(DataError::Usage(format!("--names: {} names for {} ratios", names.len(), ratios.len())));
    }
    check_names(names)?;
    let n = ds.records.len();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for i in 0..n {
        let g = *index.entry(ds.records.prompt(i).key()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(i);
    }
    groups.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let bounds: Vec<f64> = ratios
        .iter()
        .scan(0.0, |c, r| {
            *c += r;
            Some(*c * n as f64)
        })
        .collect();
    let mut assigned: Vec<Vec<usize>> = vec![Vec::new(); ratios.len()];
    let mut prompts = vec![0usize; ratios.len()];
    let mut pos = 0usize;
    for g in groups {
        let mid = pos as f64 + g.len() as f64 / 2.0;
        let k = bounds.iter().position(|&b| mid < b).unwrap_or(ratios.len() - 1);
        pos += g.len();
        prompts[k] += 1;
        assigned[k].extend(g);
    }
    std::fs::create_dir_all(out_dir).map_err(|e| DataError::file(out_dir, format!("cannot create directory: {e}")))?;
    let mut parts = Vec::new();
    for ((mut idx, name), prompts) in assigned.into_iter().zip(names).zip(prompts) {
        idx.sort_unstable();
        let mut buf = Vec::new();
        for &i in &idx {
            serde_json::to_writer(&mut buf, &ds.raw[i].1).expect("JSON values serialise");
            buf.push(b'\n');
        }
        let path = out_dir.join(format!("{name}.jsonl"));
        write_atomic(&path, &buf)?;
        parts.push(SplitPart { path, rows: idx.len(), prompts });
    }
    Ok(parts)
}
