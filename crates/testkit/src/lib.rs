//! Test support shared by the property tests of every parser (`crates/*/tests/prop_*.rs`): a
//! seeded, deterministic proptest runner, and mutations of real input files — byte flips,
//! truncation, deleted and duplicated lines, a value replaced by a wrongly typed one, invalid
//! UTF-8, inserted bytes — applied to JSON / JSONL or TOML text. Also [`TINY_EXPERIMENT`], the
//! `mismatch run` config the end-to-end tests of several crates run.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// A runner of `cases` cases drawn from a fixed ChaCha seed, writing no failure files, so that a
/// property test is the same run every time and leaves the repository untouched.
pub fn runner(seed: u8, cases: u32) -> TestRunner {
    let config = Config { cases, failure_persistence: None, rng_algorithm: RngAlgorithm::ChaCha, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]))
}

/// A world experiment small enough to run in seconds: one seed (`mismatch run --seeds N` runs
/// more); top-level keys it does not set (`seed`, `start_seed`) can be written before it.
pub const TINY_EXPERIMENT: &str = r#"
seeds = 1
threads = 1
max_new_tokens = 6
eval_prompts = 2
[start]
n_layer = 1
n_head = 1
n_embd = 8
block_size = 24
demos = 200
steps = 2
batch_size = 2
[data]
pair_sizes = [8]
eval_pairs = 4
[rm]
members = 2
[rm.train]
epochs = 1
batch_size = 4
[bon]
n_max = 2
prompts = 2
ns = [1, 2]
[rl]
steps = 1
prompts_per_step = 2
samples_per_prompt = 2
kl_coefs = [0.1]
eval_every = 1
mitigations = []
[dpo]
steps = 1
batch_size = 4
eval_every = 1
"#;

/// How values are written in the text being mutated, for [`Mutation::Replace`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    /// JSON or JSONL: a value follows `": ` and ends where the JSON value ends.
    Json,
    /// TOML: a value follows ` = ` and runs to the end of its line.
    Toml,
}

/// One edit of a file's bytes; positions are taken modulo the current length.
#[derive(Debug, Clone)]
pub enum Mutation {
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
    /// Replace the `nth` value (by [`Syntax`]) with `wrong[with]`.
    Replace {
        nth: usize,
        with: usize,
    },
    /// Insert bytes that are not UTF-8 (a lone continuation byte, an overlong lead, 0xff 0xfe).
    BadUtf8 {
        at: usize,
        which: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
}

/// One to three mutations; `wrong` is the number of replacement values the caller offers.
pub fn mutations(wrong: usize) -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, xor)| Mutation::Flip { at, xor }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        any::<usize>().prop_map(|line| Mutation::DeleteLine { line }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), 0..wrong).prop_map(|(nth, with)| Mutation::Replace { nth, with }),
        (any::<usize>(), 0usize..3).prop_map(|(at, which)| Mutation::BadUtf8 { at, which }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
    ];
    proptest::collection::vec(one, 1..4)
}

/// `(start, end)` byte spans of the lines of `b`, each end past its `\n`.
pub fn line_spans(b: &[u8]) -> Vec<(usize, usize)> {
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

/// Deletes (or, with `delete` false, duplicates) line `line % lines` of `b`; nothing for no lines.
pub fn edit_line(b: &mut Vec<u8>, line: usize, delete: bool) {
    let spans = line_spans(b);
    if spans.is_empty() {
        return;
    }
    let (s, e) = spans[line % spans.len()];
    if delete {
        b.drain(s..e);
    } else {
        let dup = b[s..e].to_vec();
        b.splice(e..e, dup);
    }
}

/// The end of the JSON value starting at `s` (a string, a number / literal, or a bracketed value).
pub fn json_value_end(b: &[u8], s: usize) -> usize {
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

/// Applies `muts` in order to `b`; [`Mutation::Replace`] finds values by `syntax` and puts
/// `wrong[with]` in their place.
pub fn apply(mut b: Vec<u8>, muts: &[Mutation], syntax: Syntax, wrong: &[&str]) -> Vec<u8> {
    for m in muts {
        let n = b.len().max(1);
        match m {
            Mutation::Flip { at, xor } => {
                if !b.is_empty() {
                    b[at % n] ^= xor;
                }
            }
            Mutation::Truncate { at } => b.truncate(at % n),
            Mutation::DeleteLine { line } => edit_line(&mut b, *line, true),
            Mutation::DuplicateLine { line } => edit_line(&mut b, *line, false),
            Mutation::Replace { nth, with } => {
                let marker: &[u8] = match syntax {
                    Syntax::Json => b"\": ",
                    Syntax::Toml => b" = ",
                };
                let keys: Vec<usize> =
                    b.windows(3).enumerate().filter(|(_, w)| *w == marker).map(|(i, _)| i + 3).collect();
                if keys.is_empty() {
                    continue;
                }
                let s = keys[nth % keys.len()];
                let e = match syntax {
                    Syntax::Json => json_value_end(&b, s),
                    // Every value in these files fits on one line.
                    Syntax::Toml => b[s..].iter().position(|&c| c == b'\n').map_or(b.len(), |i| s + i),
                };
                b.splice(s..e, wrong[*with].bytes());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_by_hand() {
        let json = b"{\"a\": [1, 2], \"b\": \"x\"}\n{\"a\": 3}\n".to_vec();
        assert_eq!(line_spans(&json), vec![(0, 24), (24, 33)]);
        let r = apply(json.clone(), &[Mutation::Replace { nth: 0, with: 0 }], Syntax::Json, &["null"]);
        assert_eq!(r, b"{\"a\": null, \"b\": \"x\"}\n{\"a\": 3}\n");
        let r = apply(json.clone(), &[Mutation::DeleteLine { line: 1 }], Syntax::Json, &[]);
        assert_eq!(r, b"{\"a\": [1, 2], \"b\": \"x\"}\n");
        let r = apply(json, &[Mutation::DuplicateLine { line: 3 }, Mutation::Truncate { at: 5 }], Syntax::Json, &[]);
        assert_eq!(r, b"{\"a\":");
        let toml = b"seed = 5\nseeds = 2\n".to_vec();
        let r = apply(toml, &[Mutation::Replace { nth: 1, with: 0 }], Syntax::Toml, &["\"x\""]);
        assert_eq!(r, b"seed = 5\nseeds = \"x\"\n");
        let r = apply(b"ab".to_vec(), &[Mutation::BadUtf8 { at: 1, which: 2 }], Syntax::Json, &[]);
        assert_eq!(r, [b'a', 0xff, 0xfe, b'b']);
    }
}
