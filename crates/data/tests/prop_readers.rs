//! Property tests for the preference readers: real files from `../shared/data/` (HH-RLHF, PandaLM,
//! OpenAI DPO, ShareGPT; TRL and K-wise rankings written from their real text), mutated (byte flips,
//! truncation, deleted / duplicated lines, JSON values replaced by wrong types, huge / negative numbers,
//! NaN, invalid UTF-8), read back as JSONL, JSON and gzip. Every case must return without panicking, and
//! every error must name the file (and a line inside it, when it names one). Deterministic: a fixed
//! ChaCha seed, no failure files written.

mod common;
use common::*;
use mismatch_data::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;
use std::path::Path;
use std::sync::OnceLock;

const CASES: u32 = 64;
/// Records kept from each real file: enough for several lines of every kind, small enough for seconds.
const KEEP: usize = 40;

fn runner(seed: u8) -> TestRunner {
    let config =
        Config { cases: CASES, failure_persistence: None, rng_algorithm: RngAlgorithm::ChaCha, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]))
}

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

#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        xor: u8,
    },
    Truncate {
        at: usize,
    },
    DeleteLine {
        line: usize,
    },
    DuplicateLine {
        line: usize,
    },
    /// Replace the value after the `nth` `": ` (a JSON key's value, in JSONL or pretty-printed JSON).
    Replace {
        nth: usize,
        with: usize,
    },
    /// Insert bytes that are not UTF-8 (a lone continuation byte, an overlong lead, 0xff).
    BadUtf8 {
        at: usize,
        which: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
}

fn mutation() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        any::<usize>().prop_map(|line| Mutation::DeleteLine { line }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), 0..WRONG.len()).prop_map(|(nth, with)| Mutation::Replace { nth, with }),
        (any::<usize>(), 0usize..3).prop_map(|(at, which)| Mutation::BadUtf8 { at, which }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ];
    proptest::collection::vec(one, 1..4)
}

fn line_spans(b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut s = 0;
    for (i, &c) in b.iter().enumerate() {
        if c == b'\n' {
            out.push((s, i + 1));
            s = i + 1;
        }
    }
    if s < b.len() {
        out.push((s, b.len()));
    }
    out
}

/// The end of the JSON value starting at `s` (a string, a number / literal, or a bracketed value).
fn value_end(b: &[u8], s: usize) -> usize {
    let mut i = s;
    match b.get(s) {
        Some(b'"') => {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            (i + 1).min(b.len())
        }
        Some(b'{') | Some(b'[') => {
            let (mut depth, mut in_str, mut esc) = (0usize, false, false);
            while i < b.len() {
                let c = b[i];
                if in_str {
                    match (esc, c) {
                        (true, _) => esc = false,
                        (false, b'\\') => esc = true,
                        (false, b'"') => in_str = false,
                        _ => {}
                    }
                } else {
                    match c {
                        b'"' => in_str = true,
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return i + 1;
                            }
                        }
                        _ => {}
                    }
                }
                i += 1;
            }
            b.len()
        }
        _ => {
            while i < b.len() && !matches!(b[i], b',' | b'}' | b']' | b'\n') {
                i += 1;
            }
            i
        }
    }
}

fn apply(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = b.len().max(1);
        match m {
            Mutation::Flip { at, xor } => {
                if !b.is_empty() {
                    b[at % n] ^= xor;
                }
            }
            Mutation::Truncate { at } => b.truncate(at % n),
            Mutation::DeleteLine { line } | Mutation::DuplicateLine { line } => {
                let spans = line_spans(&b);
                if spans.is_empty() {
                    continue;
                }
                let (s, e) = spans[line % spans.len()];
                if matches!(m, Mutation::DeleteLine { .. }) {
                    b.drain(s..e);
                } else {
                    let dup = b[s..e].to_vec();
                    b.splice(e..e, dup);
                }
            }
            Mutation::Replace { nth, with } => {
                let keys: Vec<usize> =
                    b.windows(3).enumerate().filter(|(_, w)| w == b"\": ").map(|(i, _)| i + 3).collect();
                if keys.is_empty() {
                    continue;
                }
                let s = keys[nth % keys.len()];
                let e = value_end(&b, s);
                b.splice(s..e, WRONG[*with].bytes());
            }
            Mutation::BadUtf8 { at, which } => {
                let bad: &[u8] = [&[0x80u8][..], &[0xc0, 0xaf], &[0xff, 0xfe]][*which];
                b.splice(at % n..at % n, bad.iter().copied());
            }
            Mutation::Insert { at, bytes } => {
                b.splice(at % n..at % n, bytes.iter().copied());
            }
        }
    }
    b
}

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
    runner(seed)
        .run(&mutation(), |muts| {
            let bytes = apply(src.bytes.clone(), &muts);
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
    runner(200)
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
