//! Property tests for the experiment TOML (`mismatch run --config FILE`): the repository's real config
//! (`configs/real-hh-smollm2.toml`, with a `[real]` table) and the built-in config as `--print-config`
//! writes it, mutated (byte flips, truncation, deleted / duplicated lines, values replaced by wrong types,
//! huge / negative numbers, NaN / inf, invalid UTF-8). [`RunConfig::load`] must never panic; an error must
//! name the file; a config that loads must print (`to_toml`) and load again. Deterministic: a fixed ChaCha
//! seed, no failure files written.

use mismatch_experiment::config::RunConfig;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::path::{Path, PathBuf};

const CASES: u32 = 192;

fn runner(seed: u8) -> TestRunner {
    let config =
        Config { cases: CASES, failure_persistence: None, rng_algorithm: RngAlgorithm::ChaCha, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]))
}

fn real_config() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/real-hh-smollm2.toml");
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Wrong types and out-of-range values for every kind of field (counts, seeds, rates, lists, tables).
const WRONG: &[&str] = &[
    "0",
    "-1",
    "1",
    "-9223372036854775808",
    "9223372036854775807",
    "4294967296",
    "0.0",
    "-0.5",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "-inf",
    "true",
    "\"\"",
    "\"x\"",
    "[]",
    "[0]",
    "[-1, 9223372036854775807]",
    "[nan]",
    "[\"wco\", 5]",
    "{}",
    "{ a = 1 }",
    "1979-05-27T07:32:00Z",
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
    /// Replace the value after the `nth` ` = `.
    Replace {
        nth: usize,
        with: usize,
    },
    BadUtf8 {
        at: usize,
        which: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
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
                    b.windows(3).enumerate().filter(|(_, w)| w == b" = ").map(|(i, _)| i + 3).collect();
                if keys.is_empty() {
                    continue;
                }
                let s = keys[nth % keys.len()];
                // The value runs to the end of the line (every value in these files fits on one line).
                let e = b[s..].iter().position(|&c| c == b'\n').map_or(b.len(), |i| s + i);
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

fn check(path: &Path) -> Result<(), TestCaseError> {
    match RunConfig::load(path) {
        Ok(cfg) => {
            // What `--print-config` prints loads again.
            let text = cfg.to_toml();
            std::fs::write(path, &text).unwrap();
            if let Err(e) = RunConfig::load(path) {
                return Err(TestCaseError::fail(format!("printed config does not load: {e}\n{text}")));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(msg.contains(&path.display().to_string()), "error does not name the file: {msg}");
        }
    }
    Ok(())
}

fn run(seed: u8, name: &str, source: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join(name);
    std::fs::write(&path, source).unwrap();
    RunConfig::load(&path).unwrap_or_else(|e| panic!("the unmutated {name} must load: {e}"));
    runner(seed)
        .run(&mutations(), |muts| {
            std::fs::write(&path, apply(source.to_vec(), &muts)).unwrap();
            check(&path)
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn mutated_real_config_fails_cleanly_naming_the_file() {
    run(1, "real-hh-smollm2.toml", &real_config());
}

#[test]
fn mutated_builtin_config_fails_cleanly_naming_the_file() {
    run(2, "builtin.toml", RunConfig::default().to_toml().as_bytes());
}

/// The parse error's line: the line of a value replaced by a string is the line the error names.
#[test]
fn a_wrongly_typed_value_is_named_by_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typed.toml");
    let text = String::from_utf8(real_config()).unwrap();
    for (i, l) in text.lines().enumerate() {
        let Some((key, value)) = l.split_once(" = ") else { continue };
        if value.starts_with('"') || key.starts_with('#') {
            continue;
        }
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines[i] = format!("{key} = {{ wrong = true }}");
        std::fs::write(&path, lines.join("\n")).unwrap();
        let e = RunConfig::load(&path).unwrap_err().to_string();
        assert!(e.contains("typed.toml") && e.contains(&format!("line {}", i + 1)), "{key}: {e}");
    }
}
