//! SmolLM2-135M-Instruct from its Q4_1 GGUF against transformers on the same file
//! (fixture written by `tests/reference/smollm2.py`).

use candle_core::{Device, Tensor};
use mismatch_models::gguf::Gguf;
use mismatch_models::{completion_logprobs, generate, CausalLm, ChatMessage, Error, Llama, SamplingParams, Tok};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Deserialize)]
struct Fixture {
    tokenize: Vec<Tokenized>,
    chat_messages: Vec<ChatMessage>,
    chat_text: String,
    subset: Vec<u32>,
    prompts: Vec<Prompt>,
}

#[derive(Deserialize)]
struct Tokenized {
    text: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Prompt {
    name: String,
    ids: Vec<u32>,
    logits_subset: Vec<Vec<f32>>,
    argmax: Vec<u32>,
    logsumexp: Vec<f64>,
    greedy_ids: Vec<u32>,
    greedy_text: String,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/smollm2.json");
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    })
}

fn gguf_path() -> PathBuf {
    mismatch_models::hub::model_dir("smollm2-135m").unwrap().join(GGUF)
}

/// Loaded once per test binary: dequantising 135M parameters takes a few seconds.
fn model() -> &'static (Llama, Tok) {
    static M: OnceLock<(Llama, Tok)> = OnceLock::new();
    M.get_or_init(|| Llama::load_gguf(&gguf_path(), &Device::Cpu, false).unwrap())
}

fn prompt(name: &str) -> &'static Prompt {
    fixture().prompts.iter().find(|p| p.name == name).unwrap()
}

#[test]
fn tokenizer_and_chat_template_match_transformers() {
    let (_, tok) = model();
    let f = fixture();
    for t in &f.tokenize {
        assert_eq!(tok.encode(&t.text, true).unwrap(), t.ids, "{:?}", t.text);
        assert_eq!(tok.decode(&t.ids, false).unwrap(), t.text);
    }
    let text = tok.apply_chat_template(&f.chat_messages, true).unwrap();
    assert_eq!(text, f.chat_text);
    assert_eq!(tok.encode(&text, false).unwrap(), prompt("chat").ids);
    assert_eq!(tok.encode(&text, true).unwrap(), prompt("chat").ids, "SmolLM2 adds no BOS");
    assert_eq!((tok.eos_ids.as_slice(), tok.pad_id, tok.bos_id), (&[2u32][..], 2, Some(1)));
}

#[test]
fn logits_match_transformers() {
    let (m, _) = model();
    let f = fixture();
    let subset = Tensor::new(f.subset.as_slice(), &Device::Cpu).unwrap();
    for p in &f.prompts {
        let ids = Tensor::new(p.ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
        let logits = m.logits(&ids).unwrap().squeeze(0).unwrap();
        let sub = logits.index_select(&subset, 1).unwrap().to_vec2::<f32>().unwrap();
        let mut max_diff = 0f32;
        for (row, want) in sub.iter().zip(&p.logits_subset) {
            for (a, b) in row.iter().zip(want) {
                max_diff = max_diff.max((a - b).abs());
            }
        }
        let argmax = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap();
        let rows = logits.to_vec2::<f32>().unwrap();
        let mut lse_diff = 0f64;
        for (row, want) in rows.iter().zip(&p.logsumexp) {
            let mx = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let lse = mx + row.iter().map(|&v| (v as f64 - mx).exp()).sum::<f64>().ln();
            lse_diff = lse_diff.max((lse - want).abs());
        }
        println!("{}: {} positions, max |Δlogit| {max_diff:.2e}, max |Δlogsumexp| {lse_diff:.2e}", p.name, p.ids.len());
        assert!(max_diff <= 1e-3, "{}: max |Δlogit| {max_diff}", p.name);
        assert!(lse_diff <= 1e-3, "{}: max |Δlogsumexp| {lse_diff}", p.name);
        assert_eq!(argmax, p.argmax, "{}", p.name);
    }
}

fn greedy(n: usize) -> SamplingParams {
    // No stop tokens: the reference ran past <|im_end|> so that long continuations are compared.
    SamplingParams { max_new_tokens: n, temperature: 0.0, ..Default::default() }
}

#[test]
fn greedy_generation_matches_transformers_alone_and_left_padded() {
    let (m, tok) = model();
    let (chat, plain) = (prompt("chat"), prompt("plain"));
    let n = chat.greedy_ids.len();
    assert!(n >= 32);

    let alone = generate(m, std::slice::from_ref(&chat.ids), &greedy(n), tok.pad_id).unwrap();
    assert_eq!(alone.tokens[0], chat.greedy_ids);
    assert_eq!(tok.decode(&alone.tokens[0], false).unwrap(), chat.greedy_text);
    let answer = tok.decode(&alone.tokens[0], true).unwrap();
    assert!(answer.contains("Paris"), "{answer}");

    // The teacher-forced log-probs of the generated tokens are the generation's raw log-probs.
    let scored = completion_logprobs(m, std::slice::from_ref(&chat.ids), &alone.tokens, tok.pad_id).unwrap();
    let scored = scored.to_vecs().unwrap();
    let diff = scored[0].iter().zip(&alone.raw_logprobs[0]).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    println!("max |scored - generated| log-prob: {diff:.2e}");
    assert!(diff <= 1e-4, "{diff}");

    // Plain prompt (5 tokens) and chat prompt (37) in one batch: the plain row is left-padded.
    let k = 32;
    let batch = generate(m, &[plain.ids.clone(), chat.ids.clone()], &greedy(k), tok.pad_id).unwrap();
    assert_eq!(batch.tokens[0], plain.greedy_ids[..k]);
    assert_eq!(batch.tokens[1], alone.tokens[0][..k]);
    for (a, b) in batch.raw_logprobs[1].iter().zip(&alone.raw_logprobs[0]) {
        assert!((a - b).abs() <= 1e-4, "{a} vs {b}");
    }
}

#[test]
fn save_then_load_is_bit_identical() {
    let (m, tok) = model();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("smollm2");
    m.save(&dir, tok).unwrap();
    let (back, tok2) = Llama::load_hf_dir(&dir, &Device::Cpu, false).unwrap();
    assert_eq!(back.cfg, m.cfg);
    let ids = Tensor::new(prompt("chat").ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let a = m.logits(&ids).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = back.logits(&ids).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()), "logits differ after save/load");
    for t in &fixture().tokenize {
        assert_eq!(tok2.encode(&t.text, true).unwrap(), t.ids);
    }
    let f = fixture();
    assert_eq!(tok2.apply_chat_template(&f.chat_messages, true).unwrap(), f.chat_text);
    assert_eq!((tok2.eos_ids.clone(), tok2.pad_id, tok2.bos_id), (tok.eos_ids.clone(), tok.pad_id, tok.bos_id));

    // A config whose vocabulary is smaller than the tokenizer's is refused, naming the tokenizer.
    let cfg_path = dir.join("config.json");
    let mut cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["vocab_size"] = 1000.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    match Llama::load_hf_dir(&dir, &Device::Cpu, false) {
        Err(Error::Invalid { path, msg }) => {
            assert_eq!(path, dir.join("tokenizer.json"));
            assert!(msg.contains("49152") && msg.contains("1000"), "{msg}");
        }
        other => panic!("expected Invalid, got {:?}", other.map(|_| ())),
    }
}

fn expect_invalid(path: &Path, needle: &str) {
    match Llama::load_gguf(path, &Device::Cpu, false) {
        Err(e @ Error::Invalid { .. }) => {
            let s = e.to_string();
            assert!(s.contains(&path.display().to_string()) && s.contains(needle), "{s}");
        }
        other => panic!("expected Invalid for {}, got {:?}", path.display(), other.map(|_| ())),
    }
}

#[test]
fn unsupported_architecture_and_truncated_files_are_refused() {
    use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
    let tmp = tempfile::tempdir().unwrap();

    let gpt2 = tmp.path().join("gpt2.gguf");
    let w = QTensor::quantize(&Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap(), GgmlDType::F32)
        .unwrap();
    let arch = gguf_file::Value::String("gpt2".into());
    let mut f = std::fs::File::create(&gpt2).unwrap();
    gguf_file::write(&mut f, &[("general.architecture", &arch)], &[("token_embd.weight", &w)]).unwrap();
    drop(f);
    expect_invalid(&gpt2, "unsupported architecture \"gpt2\"");

    // The real file cut short: the header parses, the tensors do not fit.
    let src = std::fs::read(gguf_path()).unwrap();
    let cut = tmp.path().join("cut.gguf");
    std::fs::write(&cut, &src[..src.len() / 2]).unwrap();
    expect_invalid(&cut, "truncated");
    assert!(Gguf::open(&cut).is_err());
    // Cut inside the metadata: not a GGUF at all.
    std::fs::write(&cut, &src[..4096]).unwrap();
    expect_invalid(&cut, "not a valid GGUF");
}
