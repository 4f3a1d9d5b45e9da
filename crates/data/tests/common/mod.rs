#![allow(dead_code)]

use mismatch_data::{read_dataset, Dataset, ReadOptions};
use std::path::{Path, PathBuf};

/// The shared real datasets, `../shared/data` from the repository root.
pub fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data").join(rel)
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

pub fn read(path: &Path) -> Dataset {
    read_dataset(path, ReadOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// The error message for a file that must fail to read.
pub fn read_err(path: &Path, opts: ReadOptions) -> String {
    match read_dataset(path, opts) {
        Ok(ds) => panic!("{} read without error as {} ({} rows)", path.display(), ds.format, ds.records.len()),
        Err(e) => e.to_string(),
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}
