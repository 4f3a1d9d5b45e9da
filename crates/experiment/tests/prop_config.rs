//! Property tests for the experiment TOML (`mismatch run --config FILE`): the repository's real config
//! (`configs/real-hh-smollm2.toml`, with a `[real]` table) and the built-in config as `--print-config`
//! writes it, mutated (byte flips, truncation, deleted / duplicated lines, values replaced by wrong types,
//! huge / negative numbers, NaN / inf, invalid UTF-8). [`RunConfig::load`] must never panic; an error must
//! name the file; a config that loads must print (`to_toml`) and load again. Deterministic: a fixed ChaCha
//! seed, no failure files written.

use mismatch_experiment::config::RunConfig;
use mismatch_testkit::{apply, mutations, runner, Syntax};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::path::{Path, PathBuf};

const CASES: u32 = 192;

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
    runner(seed, CASES)
        .run(&mutations(WRONG.len()), |muts| {
            std::fs::write(&path, apply(source.to_vec(), &muts, Syntax::Toml, WRONG)).unwrap();
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
