//! Property tests for the HF checkpoint readers: `config.json` and the `model.safetensors` header.
//!
//! Sources, written by the crate's own save functions: a tiny GPT ([`Gpt::save`]), a tiny Llama
//! ([`Llama::save`], with a 24-word tokenizer) and a tiny BERT cut from MiniLM-L6's real weights
//! (from the model cache) under MiniLM's real `config.json` with its sizes shrunk
//! ([`checkpoint::save_checkpoint`]). `config.json` is mutated as text (byte flips, truncation,
//! deleted / duplicated lines, values replaced by wrong types, huge / zero / negative numbers, other
//! model types, invalid UTF-8), and each of its numbers set in turn to the edges of `usize` / `f64`;
//! the safetensors header is mutated as bytes (the length prefix included) and as JSON with the prefix
//! fixed up (wrong dtypes, shapes, offsets). Loading must return without panicking; an error must name
//! a file of the checkpoint, and a `config.json` that is not JSON must be named with serde's line. A
//! checkpoint that loads must run a forward pass. Deterministic: fixed ChaCha seeds, no failure files
//! written.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use mismatch_models::checkpoint::{self, save_checkpoint};
use mismatch_models::{load_causal_lm, AnyLm, Bert, CausalLm, Gpt, GptConfig, Llama, LlamaConfig, Tok};
use mismatch_testkit::{apply, mutations, runner, Syntax};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use std::path::Path;
use std::sync::OnceLock;

/// Wrong types and out-of-range values for every kind of `config.json` field.
const WRONG: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "-1",
    "0.5",
    "1e308",
    "-1e308",
    "4611686018427387904",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "null",
    "true",
    "\"\"",
    "\"llama\"",
    "\"qwen2\"",
    "\"mismatch-gpt\"",
    "\"bert\"",
    "\"gelu_new\"",
    "\"relative_key\"",
    "[]",
    "[0, 1]",
    "{}",
    "{\"rope_type\": \"llama3\", \"factor\": 8.0}",
];

fn tiny_gpt() -> GptConfig {
    GptConfig::new(24, 1, 2, 8, 8)
}

fn tiny_llama() -> LlamaConfig {
    serde_json::from_value(serde_json::json!({
        "model_type": "llama", "vocab_size": 24, "hidden_size": 8, "intermediate_size": 12,
        "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 16, "tie_word_embeddings": true, "bos_token_id": 1, "eos_token_id": 2
    }))
    .unwrap()
}

/// The files of a checkpoint directory, read once.
struct Ckpt {
    files: Vec<(String, Vec<u8>)>,
}

impl Ckpt {
    fn read(dir: &Path) -> Self {
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| (p.file_name().unwrap().to_string_lossy().to_string(), std::fs::read(&p).unwrap()))
            .collect();
        files.sort();
        Self { files }
    }

    fn get(&self, name: &str) -> &[u8] {
        &self.files.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
    }

    /// Writes the checkpoint into `dir` with `name` replaced by `bytes`.
    fn write(&self, dir: &Path, name: &str, bytes: &[u8]) {
        std::fs::create_dir_all(dir).unwrap();
        for (n, b) in &self.files {
            std::fs::write(dir.join(n), if n == name { bytes } else { b }).unwrap();
        }
    }
}

fn gpt_ckpt() -> &'static Ckpt {
    static C: OnceLock<Ckpt> = OnceLock::new();
    C.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let m = Gpt::init(&tiny_gpt(), &VarMap::new(), 7, DType::F32, &Device::Cpu).unwrap();
        m.save(tmp.path()).unwrap();
        Ckpt::read(tmp.path())
    })
}

/// A word-level tokenizer of 24 tokens, `tokenizer.json` as `tokenizers` writes it.
fn tiny_tokenizer_json() -> String {
    let words = ["[UNK]", "<s>", "</s>"].into_iter().map(String::from).chain((3..24).map(|i| format!("w{i}")));
    let vocab: serde_json::Map<String, serde_json::Value> = words.enumerate().map(|(i, w)| (w, i.into())).collect();
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    })
    .to_string()
}

fn llama_ckpt() -> &'static Ckpt {
    static C: OnceLock<Ckpt> = OnceLock::new();
    C.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("tokenizer.json"), tiny_tokenizer_json()).unwrap();
        std::fs::write(tmp.path().join("tokenizer_config.json"), r#"{"bos_token": "<s>", "eos_token": "</s>"}"#)
            .unwrap();
        let tok = Tok::from_hf_dir(tmp.path()).unwrap();
        let dir = tmp.path().join("llama");
        Llama::random(&tiny_llama(), &Device::Cpu).unwrap().save(&dir, &tok).unwrap();
        Ckpt::read(&dir)
    })
}

/// MiniLM cut down to one layer of width 8 (heads 2, MLP 16): its real tensors narrowed, its real
/// `config.json` with those four sizes changed.
fn minilm_ckpt() -> &'static Ckpt {
    static C: OnceLock<Ckpt> = OnceLock::new();
    C.get_or_init(|| {
        let src = mismatch_models::hub::model_dir("minilm-l6").unwrap();
        let real = Bert::load(&src, &Device::Cpu, false).unwrap();
        let (hidden, mlp) = (real.config.hidden_size, real.config.intermediate_size);
        let tensors = real
            .tensors()
            .into_iter()
            .filter(|(k, _)| !k.contains("encoder.layer.") || k.contains("encoder.layer.0."))
            .map(|(k, mut t)| {
                for (d, &n) in t.dims().to_vec().iter().enumerate() {
                    let keep = if n == hidden {
                        8
                    } else if n == mlp {
                        16
                    } else {
                        n
                    };
                    t = t.narrow(d, 0, keep).unwrap();
                }
                (k, t)
            })
            .collect();
        let mut config: serde_json::Value = checkpoint::read_json(&src.join("config.json")).unwrap();
        for (k, v) in
            [("hidden_size", 8), ("intermediate_size", 16), ("num_attention_heads", 2), ("num_hidden_layers", 1)]
        {
            config[k] = v.into();
        }
        let tmp = tempfile::tempdir().unwrap();
        save_checkpoint(tmp.path(), &tensors, &config, vec![]).unwrap();
        Ckpt::read(tmp.path())
    })
}

fn ids() -> Tensor {
    Tensor::new(&[[1u32, 2, 3]], &Device::Cpu).unwrap()
}

/// Loads the checkpoint in `dir`: the loader's error, or a property failure when a checkpoint that
/// loads fails its forward pass.
type Load = fn(&Path) -> Result<Result<(), mismatch_models::Error>, TestCaseError>;

fn forward_failed(what: &str, e: candle_core::Error) -> TestCaseError {
    TestCaseError::fail(format!("a loaded {what} fails its forward pass: {e}"))
}

fn load_gpt(dir: &Path) -> Result<Result<(), mismatch_models::Error>, TestCaseError> {
    let (m, _) = match Gpt::load(dir, &Device::Cpu, false) {
        Ok(m) => m,
        Err(e) => return Ok(Err(e)),
    };
    let n = m.config().block_size.min(3);
    m.logits(&ids().narrow(1, 0, n).unwrap()).map_err(|e| forward_failed("GPT", e))?;
    Ok(Ok(()))
}

fn load_llama(dir: &Path) -> Result<Result<(), mismatch_models::Error>, TestCaseError> {
    let lm = match load_causal_lm(dir.to_str().unwrap(), &Device::Cpu, false) {
        Ok(lm) => lm,
        Err(e) => return Ok(Err(e)),
    };
    let AnyLm::Llama(m) = &lm.model else { return Err(TestCaseError::fail("a Llama checkpoint loads as a GPT")) };
    let n = m.max_seq_len().min(3);
    if n > 0 {
        m.logits(&ids().narrow(1, 0, n).unwrap()).map_err(|e| forward_failed("Llama", e))?;
    }
    Ok(Ok(()))
}

fn load_bert(dir: &Path) -> Result<Result<(), mismatch_models::Error>, TestCaseError> {
    let b = match Bert::load(dir, &Device::Cpu, false) {
        Ok(b) => b,
        Err(e) => return Ok(Err(e)),
    };
    let mask = Tensor::ones((1, 3), DType::U32, &Device::Cpu).unwrap();
    b.forward(&ids(), &mask).map_err(|e| forward_failed("BERT", e))?;
    Ok(Ok(()))
}

/// Loads a checkpoint whose `config.json` holds `config`: it loads, or the error names a file of the
/// checkpoint, and `config.json` with serde's line and column when the text is not JSON.
fn check_config(dir: &Path, load: Load, config: &[u8]) -> Result<(), TestCaseError> {
    let Err(e) = load(dir)? else { return Ok(()) };
    let msg = e.to_string();
    prop_assert!(msg.contains(&dir.display().to_string()), "error names no file of the checkpoint: {msg}");
    let cfg_path = dir.join("config.json").display().to_string();
    match std::str::from_utf8(config) {
        Err(_) => prop_assert!(msg.starts_with(&cfg_path), "invalid UTF-8 not blamed on config.json: {msg}"),
        Ok(text) => {
            // Not JSON: serde's line, at or before the syntax error (a typed error such as a duplicate
            // field can come first, as serde reads the text once).
            if let Err(se) = serde_json::from_str::<serde_json::Value>(text) {
                let line = msg
                    .strip_prefix(&format!("{cfg_path}: line "))
                    .and_then(|r| r.split(',').next())
                    .and_then(|l| l.parse::<usize>().ok());
                prop_assert!(
                    line.is_some_and(|l| l >= 1 && l <= se.line()),
                    "want config.json with a line up to {}, got: {msg}",
                    se.line()
                );
            }
        }
    }
    Ok(())
}

fn mutate_config(seed: u8, cases: u32, ckpt: &Ckpt, load: Load) {
    let tmp = tempfile::tempdir().unwrap();
    let real = ckpt.get("config.json").to_vec();
    ckpt.write(tmp.path(), "config.json", &real);
    load(tmp.path()).unwrap().unwrap_or_else(|e| panic!("the unmutated checkpoint must load: {e}"));
    runner(seed, cases)
        .run(&mutations(WRONG.len()), |muts| {
            let bytes = apply(real.clone(), &muts, Syntax::Json, WRONG);
            std::fs::write(tmp.path().join("config.json"), &bytes).unwrap();
            check_config(tmp.path(), load, &bytes)
        })
        .unwrap();
}

#[test]
fn mutated_gpt_config_fails_cleanly_naming_the_file() {
    mutate_config(1, 128, gpt_ckpt(), load_gpt);
}

#[test]
fn mutated_llama_config_fails_cleanly_naming_the_file() {
    mutate_config(2, 64, llama_ckpt(), load_llama);
}

#[test]
fn mutated_minilm_config_fails_cleanly_naming_the_file() {
    mutate_config(3, 128, minilm_ckpt(), load_bert);
}

/// Values that are wrong for a safetensors header entry: dtypes, shapes, offsets.
const WRONG_HEADER: &[&str] = &[
    "\"F16\"",
    "\"BF16\"",
    "\"F64\"",
    "\"I64\"",
    "\"I32\"",
    "\"U32\"",
    "\"U8\"",
    "\"BOOL\"",
    "\"F8_E4M3\"",
    "\"F4\"",
    "\"X\"",
    "[]",
    "[0]",
    "[1]",
    "[0, 0]",
    "[8, 0]",
    "[4611686018427387904, 4]",
    "[18446744073709551615, 2]",
    "[0, 18446744073709551615]",
    "[4, 2, 1]",
    "5",
    "null",
    "{}",
];

/// `(header JSON, tensor data)` of a safetensors file.
fn split_safetensors(b: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    (b[8..8 + n].to_vec(), b[8 + n..].to_vec())
}

fn join_safetensors(header: &[u8], data: &[u8]) -> Vec<u8> {
    [&(header.len() as u64).to_le_bytes()[..], header, data].concat()
}

/// The header re-serialised pretty (`"key": value`), so that value replacements reach every entry.
fn pretty_header(b: &[u8]) -> Vec<u8> {
    let (h, _) = split_safetensors(b);
    let v: serde_json::Value = serde_json::from_slice(&h).unwrap();
    serde_json::to_vec_pretty(&v).unwrap()
}

fn mutate_safetensors(seed: u8, ckpt: &Ckpt, load: Load) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let real = ckpt.get("model.safetensors");
    let (_, data) = split_safetensors(real);
    let pretty = pretty_header(real);
    let fixed = join_safetensors(&pretty, &data);
    ckpt.write(dir, "model.safetensors", &fixed);
    load(dir).unwrap().unwrap_or_else(|e| panic!("the re-serialised header must load: {e}"));
    let st_path = dir.join("model.safetensors").display().to_string();
    // Half the cases mutate the bytes (length prefix included), half the JSON with the prefix fixed up.
    runner(seed, 96)
        .run(&(mutations(WRONG_HEADER.len()), any::<bool>()), |(muts, raw)| {
            let bytes = if raw {
                let head = apply(fixed[..8 + pretty.len()].to_vec(), &muts, Syntax::Json, WRONG_HEADER);
                [&head[..], &data].concat()
            } else {
                join_safetensors(&apply(pretty.clone(), &muts, Syntax::Json, WRONG_HEADER), &data)
            };
            std::fs::write(&st_path, &bytes).unwrap();
            if let Err(e) = load(dir)? {
                let msg = e.to_string();
                prop_assert!(msg.starts_with(&st_path), "error does not name model.safetensors: {msg}");
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn mutated_gpt_safetensors_header_fails_cleanly_naming_the_file() {
    mutate_safetensors(4, gpt_ckpt(), load_gpt);
}

#[test]
fn mutated_llama_safetensors_header_fails_cleanly_naming_the_file() {
    mutate_safetensors(5, llama_ckpt(), load_llama);
}

#[test]
fn mutated_minilm_safetensors_header_fails_cleanly_naming_the_file() {
    mutate_safetensors(6, minilm_ckpt(), load_bert);
}

/// Numbers at the edges of `usize` / `f64`, and zero.
const EXTREMES: &[&str] = &["0", "-1", "1e308", "4611686018427387904", "9223372036854775807", "18446744073709551615"];

/// Every number of `config.json` (in `dir`, which holds the rest of the checkpoint) set in turn to
/// each of [`EXTREMES`]: no panic (no overflow, no huge allocation, no endless loop over layers), and
/// an error names a file of the checkpoint.
fn extreme_numbers(dir: &Path, config: &[u8], load: Load) {
    let real: serde_json::Value = serde_json::from_slice(config).unwrap();
    let numbers = real.as_object().unwrap().iter().filter(|(_, v)| v.is_number()).map(|(k, _)| k);
    for key in numbers {
        for x in EXTREMES {
            let mut cfg = real.clone();
            cfg[key] = serde_json::from_str(x).unwrap();
            let bytes = serde_json::to_vec_pretty(&cfg).unwrap();
            std::fs::write(dir.join("config.json"), &bytes).unwrap();
            check_config(dir, load, &bytes).unwrap_or_else(|e| panic!("{key} = {x}: {e}"));
        }
    }
}

#[test]
fn extreme_numbers_in_each_config_field_are_refused_or_loaded() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, ckpt, load) in [
        ("gpt", gpt_ckpt(), load_gpt as Load),
        ("llama", llama_ckpt(), load_llama),
        ("minilm", minilm_ckpt(), load_bert),
    ] {
        let dir = tmp.path().join(name);
        ckpt.write(&dir, "", &[]);
        extreme_numbers(&dir, ckpt.get("config.json"), load);
    }
}

/// The corrupt sizes this test found panicking or running away: an overflowing GPT parameter count
/// (`3 * n_embd`), a GPT / Llama layer count that listed every missing layer's tensors (endless), a
/// Llama `head_dim` whose q width overflowed, a Llama context too long for its RoPE tables (a candle
/// error naming no file; lengths up to 2^32 would have been allocated), and a BERT layer count that
/// overflowed `Vec::with_capacity`. Each is refused naming the file.
#[test]
fn corrupt_sizes_found_by_these_tests_are_refused_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let huge = 1usize << 62;
    for (ckpt, load, key, value, file) in [
        (gpt_ckpt(), load_gpt as Load, "n_embd", huge, "config.json"),
        (gpt_ckpt(), load_gpt, "n_layer", huge, "config.json"),
        (gpt_ckpt(), load_gpt, "n_layer", 1 << 30, "model.safetensors"),
        (llama_ckpt(), load_llama, "head_dim", 1 << 63, "config.json"),
        (llama_ckpt(), load_llama, "max_position_embeddings", huge, "config.json"),
        (llama_ckpt(), load_llama, "max_position_embeddings", 1 << 31, "config.json"),
        (llama_ckpt(), load_llama, "max_position_embeddings", 0, "config.json"),
        (llama_ckpt(), load_llama, "num_hidden_layers", 1 << 30, "model.safetensors"),
        (minilm_ckpt(), load_bert, "num_hidden_layers", usize::MAX, "model.safetensors"),
    ] {
        let dir = tmp.path().join(format!("{key}-{value}"));
        let mut cfg: serde_json::Value = serde_json::from_slice(ckpt.get("config.json")).unwrap();
        cfg[key] = value.into();
        ckpt.write(&dir, "config.json", &serde_json::to_vec_pretty(&cfg).unwrap());
        let e = load(&dir).unwrap().expect_err(key).to_string();
        assert!(e.starts_with(&dir.join(file).display().to_string()), "{key} = {value}: {e}");
    }
}
