//! Property tests for the GGUF header, the tokenizer and the chat template, on the real model files in the
//! model cache (SmolLM2-135M-Instruct GGUF, MiniLM-L6 `tokenizer.json` / `tokenizer_config.json`).
//!
//! GGUF: only the header region (metadata and tensor table, up to the tensor data) is read and mutated (byte
//! flips, truncation, inserted / deleted bytes); the mutated header is written to a sparse file of the
//! original length, so [`Gguf::open`], [`Gguf::llama_config`] and [`Tok::from_gguf`] run in seconds and never
//! touch the tensor data. Tokenizer: the HF files mutated as text (flips, truncation, deleted / duplicated
//! lines, wrong-typed values, invalid UTF-8) and the real chat template mutated (broken Jinja). Every case
//! must return without panicking and every error must name the file. Deterministic: fixed ChaCha seed,
//! no failure files written.

use mismatch_models::gguf::Gguf;
use mismatch_models::{ChatMessage, Tok};
use mismatch_testkit::{edit_line, runner};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn gguf_path() -> PathBuf {
    mismatch_models::hub::model_dir("smollm2-135m").unwrap().join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn minilm_dir() -> PathBuf {
    mismatch_models::hub::model_dir("minilm-l6").unwrap()
}

/// The real GGUF's header bytes (everything before the tensor data), its file length and chat template.
struct Header {
    bytes: Vec<u8>,
    file_len: u64,
    template: String,
}

fn header() -> &'static Header {
    static H: OnceLock<Header> = OnceLock::new();
    H.get_or_init(|| {
        let p = gguf_path();
        let g = Gguf::open(&p).unwrap_or_else(|e| panic!("{e}"));
        let n = g.content.tensor_data_offset;
        let mut bytes = Vec::new();
        std::fs::File::open(&p).unwrap().take(n).read_to_end(&mut bytes).unwrap();
        let template = g.string("tokenizer.chat_template").unwrap().expect("SmolLM2 has a chat template").to_string();
        Header { bytes, file_len: g.file_len(), template }
    })
}

fn msgs() -> Vec<ChatMessage> {
    vec![
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi \u{2028} there"),
        ChatMessage::new("assistant", "Hello."),
    ]
}

fn names_file(e: &mismatch_models::Error, path: &Path) -> Result<(), TestCaseError> {
    let msg = e.to_string();
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    prop_assert!(msg.contains(&name), "error does not name {name}: {msg}");
    Ok(())
}

#[derive(Debug, Clone)]
enum ByteMut {
    Flip {
        at: usize,
        xor: u8,
    },
    /// Set 8 bytes at `at` to a little-endian u64 (a length or count field made huge, zero or "negative").
    Word {
        at: usize,
        v: u64,
    },
    Truncate {
        at: usize,
    },
    Delete {
        at: usize,
        n: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
}

fn byte_muts() -> impl Strategy<Value = Vec<ByteMut>> {
    let one = prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(at, xor)| ByteMut::Flip { at, xor }),
        (
            any::<usize>(),
            prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(i64::MAX as u64), Just(1 << 32), any::<u64>()]
        )
            .prop_map(|(at, v)| ByteMut::Word { at, v }),
        any::<usize>().prop_map(|at| ByteMut::Truncate { at }),
        (any::<usize>(), 1usize..64).prop_map(|(at, n)| ByteMut::Delete { at, n }),
        (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(at, bytes)| ByteMut::Insert { at, bytes }),
    ];
    proptest::collection::vec(one, 1..4)
}

/// Mutations aimed at the first or last `focus` bytes two times in three.
fn apply_bytes(mut b: Vec<u8>, muts: &[ByteMut], focus: usize) -> Vec<u8> {
    for (k, m) in muts.iter().enumerate() {
        let n = b.len().max(1);
        // Alternately the head (magic, counts, first keys), the tail (the tensor table: names, shapes,
        // types, offsets) and anywhere.
        let pos = |at: usize| match k % 3 {
            0 => at % n.min(focus),
            1 => n - 1 - at % n.min(focus),
            _ => at % n,
        };
        match m {
            ByteMut::Flip { at, xor } => {
                if !b.is_empty() {
                    let i = pos(*at);
                    b[i] ^= xor;
                }
            }
            ByteMut::Word { at, v } => {
                let i = pos(*at).min(b.len().saturating_sub(8));
                let e = (i + 8).min(b.len());
                b[i..e].copy_from_slice(&v.to_le_bytes()[..e - i]);
            }
            ByteMut::Truncate { at } => b.truncate(at % n),
            ByteMut::Delete { at, n: len } => {
                let i = pos(*at).min(b.len());
                let e = (i + len).min(b.len());
                b.drain(i..e);
            }
            ByteMut::Insert { at, bytes } => {
                let i = pos(*at).min(b.len());
                b.splice(i..i, bytes.iter().copied());
            }
        }
    }
    b
}

/// A mutated GGUF header opens, yields a config and a tokenizer, or fails naming the file; never panics.
#[test]
fn mutated_gguf_headers_fail_cleanly_naming_the_file() {
    let h = header();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutated.gguf");
    runner(1, 64)
        .run(&byte_muts(), |muts| {
            let bytes = apply_bytes(h.bytes.clone(), &muts, 16384);
            let f = std::fs::File::create(&path).unwrap();
            std::io::Write::write_all(&mut &f, &bytes).unwrap();
            f.set_len(h.file_len.max(bytes.len() as u64)).unwrap();
            drop(f);
            let g = match Gguf::open(&path) {
                Ok(g) => g,
                Err(e) => return names_file(&e, &path),
            };
            if let Err(e) = g.llama_config() {
                names_file(&e, &path)?;
            }
            let _ = g.architecture();
            match Tok::from_gguf(&g) {
                Ok(tok) => {
                    let _ = tok.check_vocab(49152);
                    if let Ok(ids) = tok.encode("Hello, world! \u{2028}", true) {
                        let _ = tok.decode(&ids, false);
                    }
                    if let Err(e) = tok.apply_chat_template(&msgs(), true) {
                        names_file(&e, &path)?;
                    }
                }
                Err(e) => names_file(&e, &path)?,
            }
            Ok(())
        })
        .unwrap();
}

const WRONG_JSON: &[&str] = &[
    "5",
    "-1",
    "1e308",
    "18446744073709551616",
    "null",
    "true",
    "\"\"",
    "\"[UNK]\"",
    "[]",
    "{}",
    "[5]",
    "{\"content\": 5}",
    "NaN",
];

#[derive(Debug, Clone)]
enum TextMut {
    Bytes(ByteMut),
    DeleteLine(usize),
    DuplicateLine(usize),
    /// Replace the value after the `nth` `": `.
    Replace {
        nth: usize,
        with: usize,
    },
    BadUtf8 {
        at: usize,
    },
}

fn text_muts() -> impl Strategy<Value = Vec<TextMut>> {
    let one = prop_oneof![
        byte_muts().prop_map(|v| TextMut::Bytes(v[0].clone())),
        any::<usize>().prop_map(TextMut::DeleteLine),
        any::<usize>().prop_map(TextMut::DuplicateLine),
        (any::<usize>(), 0..WRONG_JSON.len()).prop_map(|(nth, with)| TextMut::Replace { nth, with }),
        any::<usize>().prop_map(|at| TextMut::BadUtf8 { at }),
    ];
    proptest::collection::vec(one, 1..4)
}

/// The end of the JSON scalar or string at `s` (containers are replaced up to their first line end).
fn value_end(b: &[u8], s: usize) -> usize {
    let mut i = s;
    if b.get(s) == Some(&b'"') {
        i += 1;
        while i < b.len() && b[i] != b'"' {
            i += if b[i] == b'\\' { 2 } else { 1 };
        }
        return (i + 1).min(b.len());
    }
    while i < b.len() && !matches!(b[i], b',' | b'}' | b']' | b'\n') {
        i += 1;
    }
    i
}

fn apply_text(mut b: Vec<u8>, muts: &[TextMut]) -> Vec<u8> {
    for m in muts {
        match m {
            TextMut::Bytes(bm) => b = apply_bytes(b, std::slice::from_ref(bm), usize::MAX),
            TextMut::DeleteLine(l) => edit_line(&mut b, *l, true),
            TextMut::DuplicateLine(l) => edit_line(&mut b, *l, false),
            TextMut::Replace { nth, with } => {
                let keys: Vec<usize> =
                    b.windows(3).enumerate().filter(|(_, w)| w == b"\": ").map(|(i, _)| i + 3).collect();
                if keys.is_empty() {
                    continue;
                }
                let s = keys[nth % keys.len()];
                let e = value_end(&b, s);
                b.splice(s..e, WRONG_JSON[*with].bytes());
            }
            TextMut::BadUtf8 { at } => {
                let i = at % b.len().max(1);
                b.splice(i..i, [0xffu8, 0xc0, 0x80]);
            }
        }
    }
    b
}

/// Copies MiniLM's tokenizer files into `dir` (the one named `mutated` replaced by `bytes`).
fn hf_dir(dir: &Path, mutated: &str, bytes: &[u8]) {
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        let p = dir.join(f);
        if f == mutated {
            std::fs::write(&p, bytes).unwrap();
        } else {
            std::fs::copy(minilm_dir().join(f), &p).unwrap();
        }
    }
}

fn check_hf(dir: &Path, mutated: &Path) -> Result<(), TestCaseError> {
    match Tok::from_hf_dir(dir) {
        Ok(tok) => {
            if let Ok(ids) = tok.encode("Hello, world! \u{2028}", true) {
                let _ = tok.decode(&ids, true);
            }
            let _ = tok.apply_chat_template(&msgs(), true);
            let _ = tok.tokenizer_config();
            Ok(())
        }
        Err(e) => {
            // The error names a file of the directory (the mutated one, or tokenizer.json it refers to).
            let msg = e.to_string();
            prop_assert!(msg.contains(&dir.display().to_string()), "error names no file of the directory: {msg}");
            let _ = mutated;
            Ok(())
        }
    }
}

#[test]
fn mutated_tokenizer_config_fails_cleanly_naming_the_file() {
    let real = std::fs::read(minilm_dir().join("tokenizer_config.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer_config.json");
    runner(2, 64)
        .run(&text_muts(), |muts| {
            hf_dir(dir.path(), "tokenizer_config.json", &apply_text(real.clone(), &muts));
            check_hf(dir.path(), &path)
        })
        .unwrap();
}

#[test]
fn mutated_tokenizer_json_fails_cleanly_naming_the_file() {
    let real = std::fs::read(minilm_dir().join("tokenizer.json")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    runner(3, 32)
        .run(&text_muts(), |muts| {
            hf_dir(dir.path(), "tokenizer.json", &apply_text(real.clone(), &muts));
            check_hf(dir.path(), &path)
        })
        .unwrap();
}

/// Jinja fragments that break a template: unclosed tags, unknown filters, undefined calls, bad loops.
const JINJA: &[&str] = &[
    "{{",
    "}}",
    "{%",
    "%}",
    "{% if %}",
    "{% endif %}",
    "{% for m in %}",
    "{% endfor %}",
    "{{ x | nosuchfilter }}",
    "{{ nosuch() }}",
    "{{ messages[99].content }}",
    "{{ raise_exception('boom') }}",
    "{{ 1 / 0 }}",
    "{{ messages.nosuch() }}",
    "{# ",
    "{{ '\u{2028}' * 3 }}",
    "{{ loop.index }}",
];

/// The SmolLM2 chat template (from its GGUF) mutated and set as a tokenizer's `chat_template`: rendering
/// fails naming the file or renders; it never panics.
#[test]
fn mutated_chat_templates_fail_cleanly_naming_the_file() {
    let tpl = header().template.clone();
    let real_cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(minilm_dir().join("tokenizer_config.json")).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let strat = proptest::collection::vec((any::<usize>(), 0..JINJA.len() + 2), 1..4);
    runner(4, 128)
        .run(&strat, |muts| {
            let mut t = tpl.clone();
            for (at, k) in muts {
                let mut i = at % (t.len() + 1);
                while !t.is_char_boundary(i) {
                    i -= 1;
                }
                match k {
                    k if k < JINJA.len() => t.insert_str(i, JINJA[k]),
                    k if k == JINJA.len() => t.truncate(i),
                    _ => {
                        let e = (i + 7).min(t.len());
                        let e = (e..=t.len()).find(|&e| t.is_char_boundary(e)).unwrap();
                        t.replace_range(i..e, "");
                    }
                }
            }
            let mut cfg = real_cfg.clone();
            cfg["chat_template"] = serde_json::Value::String(t);
            hf_dir(dir.path(), "tokenizer_config.json", cfg.to_string().as_bytes());
            let tok = Tok::from_hf_dir(dir.path()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for gen in [false, true] {
                if let Err(e) = tok.apply_chat_template(&msgs(), gen) {
                    prop_assert!(e.to_string().contains(&dir.path().display().to_string()), "{e}");
                }
            }
            Ok(())
        })
        .unwrap();
}

/// `u64::MAX` written over each 8-byte step of the tensor table's end (the last tensors' shapes, types
/// and data offsets): refused naming the file, never an overflow panic.
#[test]
fn huge_values_in_the_tensor_table_are_refused() {
    let h = header();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.gguf");
    let n = h.bytes.len();
    for back in (8..=640).step_by(8) {
        for v in [u64::MAX, u64::MAX / 2 + 1] {
            let mut b = h.bytes.clone();
            b[n - back..n - back + 8].copy_from_slice(&v.to_le_bytes());
            let f = std::fs::File::create(&path).unwrap();
            std::io::Write::write_all(&mut &f, &b).unwrap();
            f.set_len(h.file_len).unwrap();
            drop(f);
            if let Err(e) = Gguf::open(&path).and_then(|g| g.llama_config()) {
                assert!(e.to_string().contains("huge.gguf"), "{e}");
            }
        }
    }
}
