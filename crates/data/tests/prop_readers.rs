//! Property tests for the preference readers: real files from `../shared/data/` (HH-RLHF, PandaLM,
//! OpenAI DPO, ShareGPT; TRL and K-wise rankings written from their real text), mutated (byte flips,
//! truncation, deleted / duplicated lines, JSON values replaced by wrong types, huge / negative numbers,
//! NaN, invalid UTF-8), read back as JSONL, JSON and gzip. Every case must return without panicking, and
//! every error must name the file (and a line inside it, when it names one). Deterministic: a fixed
//! ChaCha seed, no failure files written.

mod common;
use common::*;
use mismatch_data::*;
use mismatch_testkit::{apply, mutations, runner, Syntax};
use proptest::prelude::*;
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;

const CASES: u32 = 64;
/// Records kept from each real file: enough for several lines of every kind, small enough for seconds.
const KEEP: usize = 40;

fn jsonl_prefix(bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let lines: Vec<&str> = text.split('\n').filter(|l| !l.trim().is_empty()).take(KEEP).collect();
    (lines.join("\n") + "\n").into_bytes()
}

fn array_prefix(bytes: &[u8]) -> Vec<u8> {
    let v: Vec<Value> = serde_json::from_slice(bytes).unwrap();
    serde_json::to_vec_pretty(&v[..KEEP]).unwrap()
}

fn ungzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

/// The real files (prefixes), each with the name it is written under and whether it is gzipped on disk.
struct Source {
    name: &'static str,
    bytes: Vec<u8>,
    gzip: bool,
}

fn sources() -> &'static [Source] {
    static S: OnceLock<Vec<Source>> = OnceLock::new();
    S.get_or_init(|| {
        let rd = |p: &str| std::fs::read(shared(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
        let hh = jsonl_prefix(&ungzip(&rd("hh-rlhf/harmless-base-test.jsonl.gz")));
        let pandalm = array_prefix(&rd("pandalm/testset-v1.json"));
        let orca = jsonl_prefix(&rd("orca-dpo-pairs/validation.jsonl"));
        let sharegpt = array_prefix(&rd("llama-factory-demo/dpo_en_demo.json"));
        // TRL: the HH pairs as the converter writes them.
        let dir = tempfile::tempdir().unwrap();
        let f = write(dir.path(), "hh.jsonl", &hh);
        let trl: String = match read(&f).records {
            Records::Pairs(v) => v.iter().map(|p| write::trl_json(p).to_string() + "\n").collect(),
            _ => unreachable!(),
        };
        // K-wise: PandaLM's instructions and responses as 3-way rankings.
        let pv: Vec<Value> = serde_json::from_slice(&pandalm).unwrap();
        let ranking: String = pv
            .iter()
            .map(|r| {
                let prompt = format!("{}\n{}", r["instruction"].as_str().unwrap(), r["input"].as_str().unwrap_or(""));
                let (a, b) = (r["response1"].as_str().unwrap(), r["response2"].as_str().unwrap());
                serde_json::json!({"prompt": prompt, "completions": [a, b, format!("{a} {b}")], "ranking": [1, 0, 2]})
                    .to_string()
                    + "\n"
            })
            .collect();
        let s = vec![
            Source { name: "harmless-base-test.jsonl.gz", bytes: hh, gzip: true },
            Source { name: "testset-v1.json", bytes: pandalm, gzip: false },
            Source { name: "validation.jsonl", bytes: orca, gzip: false },
            Source { name: "dpo_en_demo.json", bytes: sharegpt, gzip: false },
            Source { name: "trl.jsonl", bytes: trl.into_bytes(), gzip: false },
            Source { name: "ranking.jsonl", bytes: ranking.into_bytes(), gzip: false },
        ];
        // Every unmutated source reads (and in its expected format), so the mutations start from valid files.
        for src in &s {
            let f = write(dir.path(), src.name, &src.bytes);
            let ds = read(&f);
            assert_eq!(ds.records.len(), KEEP, "{}", src.name);
        }
        s
    })
}

/// Values that are of the wrong type (or out of range) for every field some format has.
const WRONG: &[&str] = &[
    "5",
    "-1",
    "-9223372036854775809",
    "18446744073709551616",
    "1e308",
    "-1e308",
    "0.5",
    "null",
    "true",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "[null]",
    "[5, \"a\"]",
    "[{\"role\": 5, \"content\": []}]",
    "{\"messages\": 5}",
    "NaN",
    "-Infinity",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
];

/// Reads the mutated file; an error must start with the file's name and, when it names a line, a line of
/// the (decompressed) file.
fn check(path: &Path, lines: usize, opts: ReadOptions) -> std::result::Result<(), TestCaseError> {
    match read_dataset(path, opts) {
        Ok(ds) => {
            // What `mismatch data check` prints must not panic either.
            let _ = stats::summarize(&ds).to_string();
            let _ = ds.records.to_pairs();
        }
        Err(e) => {
            let msg = e.to_string();
            let p = path.display().to_string();
            prop_assert!(msg.starts_with(&p), "error does not name the file: {msg}");
            if let DataError::AtLine { line, .. } = e {
                prop_assert!(line >= 1 && line <= lines + 1, "line {line} outside the file's {lines} lines: {msg}");
            }
        }
    }
    Ok(())
}

fn run_mutations(seed: u8, src: &Source, as_gzip: bool, opts: ReadOptions) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(src.name);
    runner(seed, CASES)
        .run(&mutations(WRONG.len()), |muts| {
            let bytes = apply(src.bytes.clone(), &muts, Syntax::Json, WRONG);
            let lines = bytes.iter().filter(|&&c| c == b'\n').count() + 1;
            std::fs::write(&path, if as_gzip { gzip(&bytes) } else { bytes }).unwrap();
            check(&path, lines, opts)
        })
        .unwrap_or_else(|e| panic!("{}: {e}", src.name));
}

#[test]
fn mutated_real_files_fail_cleanly_naming_file_and_line() {
    for (i, src) in sources().iter().enumerate() {
        run_mutations(i as u8, src, src.gzip, ReadOptions::default());
    }
}

/// The same mutations read with the format forced (every record parsed as that format, no detection)
/// and with `--strict`, gzipped or not the other way round.
#[test]
fn mutated_real_files_with_forced_format_and_strict() {
    let formats = [Format::Hh, Format::PandaLm, Format::OpenAi, Format::ShareGpt, Format::Trl, Format::Ranking];
    for (i, src) in sources().iter().enumerate() {
        let opts = ReadOptions { format: Some(formats[i]), strict: true };
        run_mutations(100 + i as u8, src, !src.gzip, opts);
    }
}

/// Every source read as every other format: wrong-format records are an error at their line, never a panic.
#[test]
fn real_files_forced_to_the_wrong_format() {
    let formats = [Format::Hh, Format::PandaLm, Format::OpenAi, Format::ShareGpt, Format::Trl, Format::Ranking];
    let dir = tempfile::tempdir().unwrap();
    for src in sources() {
        let path = write(dir.path(), src.name, &src.bytes);
        let lines = src.bytes.iter().filter(|&&c| c == b'\n').count() + 1;
        for f in formats {
            check(&path, lines, ReadOptions { format: Some(f), strict: false }).unwrap();
        }
    }
}

/// Whole-file corruption of the gzip container: the compressed bytes themselves flipped or cut.
#[test]
fn corrupt_gzip_streams_name_the_file() {
    let src = &sources()[0];
    let gz = gzip(&src.bytes);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(src.name);
    runner(200, CASES)
        .run(&(any::<usize>(), 1u8..=255, any::<bool>()), |(at, xor, cut)| {
            let mut b = gz.clone();
            if cut {
                b.truncate(2 + at % (b.len() - 2));
            } else {
                let i = 2 + at % (b.len() - 2);
                b[i] ^= xor;
            }
            std::fs::write(&path, &b).unwrap();
            check(&path, usize::MAX - 1, ReadOptions::default())
        })
        .unwrap();
}
