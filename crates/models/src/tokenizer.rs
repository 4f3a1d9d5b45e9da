//! Tokenizer and chat template of a decoder, built either from GGUF metadata or from an HF
//! directory's `tokenizer.json` + `tokenizer_config.json`.
//!
//! From GGUF (`tokenizer.ggml.model = "gpt2"`) we rebuild the byte-level BPE of Radford et al.
//! 2019 the way transformers does (`integrations/gguf/gguf_tokenizer_mapping.py`): the vocabulary
//! in GPT-2's byte alphabet, the file's merges, control tokens (type 3) as special added tokens,
//! user-defined tokens (type 4) as plain added tokens, and the pre-tokenizer split chosen by
//! `tokenizer.ggml.pre`. Chat templates are the model's own Jinja strings, rendered with
//! minijinja under the settings transformers uses (`trim_blocks`, `lstrip_blocks`).

use crate::error::{Error, Result};
use crate::gguf::Gguf;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use tokenizers::Tokenizer;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self { role: role.into(), content: content.into() }
    }
}

/// A tokenizer with the special ids generation needs and an optional chat template.
#[derive(Debug, Clone)]
pub struct Tok {
    inner: Tokenizer,
    pub bos_id: Option<u32>,
    /// Generation stops at any of these.
    pub eos_ids: Vec<u32>,
    /// Fills left padding in batches; never attended to.
    pub pad_id: u32,
    pub chat_template: Option<String>,
    /// Whether `encode(.., add_special = true)` prepends BOS (done by the post-processor).
    pub add_bos: bool,
    /// Where the tokenizer was read from, for error messages.
    pub source: PathBuf,
}

// Pre-tokenizer splits transformers uses for `tokenizer.ggml.pre` values (GGUF_PRE_TOKENIZER_SPLITS);
// any other value keeps GPT-2's own regex inside the ByteLevel pre-tokenizer.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str =
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn pre_split(pre: &str) -> Option<&'static str> {
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" | "dbrx" | "smaug-bpe" => Some(LLAMA3_SPLIT),
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => Some(QWEN2_SPLIT),
        _ => None,
    }
}

/// GPT-2's reversible byte → printable-character map (`bytes_to_unicode`).
fn bytes_to_unicode() -> [char; 256] {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32).chain(0xA1..=0xAC).chain(0xAE..=0xFF).collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut out = ['\0'; 256];
    for (b, c) in printable.into_iter().zip(chars) {
        out[b as usize] = char::from_u32(c).expect("valid char");
    }
    out
}

impl Tok {
    /// Builds the byte-level BPE tokenizer a GGUF file describes.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let path = &g.path;
        let model = g.string("tokenizer.ggml.model")?.unwrap_or("");
        if model != "gpt2" {
            return Err(Error::invalid(
                path,
                format!("unsupported tokenizer.ggml.model \"{model}\" (supported: gpt2 byte-level BPE)"),
            ));
        }
        let tokens =
            g.strings("tokenizer.ggml.tokens")?.ok_or_else(|| Error::invalid(path, "missing tokenizer.ggml.tokens"))?;
        let merges =
            g.strings("tokenizer.ggml.merges")?.ok_or_else(|| Error::invalid(path, "missing tokenizer.ggml.merges"))?;
        let types = g.ints("tokenizer.ggml.token_type")?.unwrap_or_default();
        let spell = bytes_to_unicode();
        let alphabet: std::collections::HashSet<char> = spell.iter().copied().collect();
        let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));

        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let spelled = if in_alphabet(t) { t.clone() } else { t.bytes().map(|b| spell[b as usize]).collect() };
            vocab.insert(spelled, json!(i));
        }
        let merges: Vec<serde_json::Value> = merges
            .iter()
            .map(|m| {
                let (a, b) =
                    m.split_once(' ').ok_or_else(|| Error::invalid(path, format!("malformed merge \"{m}\"")))?;
                Ok(json!([a, b]))
            })
            .collect::<Result<_>>()?;
        let mut added = Vec::new();
        for (i, (t, &ty)) in tokens.iter().zip(types.iter()).enumerate() {
            // 3 = CONTROL, 4 = USER_DEFINED. A control token outside the byte alphabet is a llama.cpp
            // mislabel; transformers skips it, and so do we.
            let special = ty == 3 && in_alphabet(t);
            if special || ty == 4 {
                added.push(json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                                  "normalized": false, "special": special}));
            }
        }
        let pre_tokenizer = match g.string("tokenizer.ggml.pre")?.and_then(pre_split) {
            Some(re) => json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
                {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}),
            None => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}),
        };
        let id = |k: &str| -> Result<Option<u32>> {
            match g.uint(k)? {
                Some(v) if (v as usize) < tokens.len() => Ok(Some(v as u32)),
                Some(v) => {
                    Err(Error::invalid(path, format!("{k} = {v} is outside the vocabulary of {} tokens", tokens.len())))
                }
                None => Ok(None),
            }
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let pad = id("tokenizer.ggml.padding_token_id")?;
        let add_bos = g.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(false) && bos.is_some();
        let post = post_processor(add_bos, bos.map(|b| (tokens[b as usize].clone(), b)));
        let tj = json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": post,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                      "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges}
        });
        let inner = Tokenizer::from_bytes(serde_json::to_vec(&tj).expect("json"))
            .map_err(|e| Error::invalid(path, format!("building the tokenizer from GGUF metadata: {e}")))?;
        Ok(Self {
            inner,
            bos_id: bos,
            eos_ids: eos.into_iter().collect(),
            pad_id: pad.or(eos).unwrap_or(0),
            chat_template: g.string("tokenizer.chat_template")?.map(str::to_string),
            add_bos,
            source: path.clone(),
        })
    }

    /// Reads `tokenizer.json` and (if present) `tokenizer_config.json` and `chat_template.jinja`.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let tj = dir.join("tokenizer.json");
        if !tj.exists() {
            return Err(Error::invalid(&tj, "file not found"));
        }
        let inner =
            Tokenizer::from_file(&tj).map_err(|e| Error::invalid(&tj, format!("not a valid tokenizer: {e}")))?;
        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value =
            if cfg_path.exists() { crate::checkpoint::read_json(&cfg_path)? } else { json!({}) };
        let token_id = |key: &str| -> Result<Option<u32>> {
            let content = match &cfg[key] {
                serde_json::Value::String(s) => s.as_str(),
                serde_json::Value::Object(o) => o.get("content").and_then(|c| c.as_str()).unwrap_or(""),
                _ => return Ok(None),
            };
            inner
                .token_to_id(content)
                .map(Some)
                .ok_or_else(|| Error::invalid(&cfg_path, format!("{key} \"{content}\" is not in {}", tj.display())))
        };
        let bos = token_id("bos_token")?;
        let eos = token_id("eos_token")?;
        let pad = token_id("pad_token")?;
        let chat_template = match &cfg["chat_template"] {
            serde_json::Value::String(s) => Some(s.clone()),
            // A list of named templates: use the default one.
            serde_json::Value::Array(a) => {
                a.iter().find(|t| t["name"] == "default").and_then(|t| t["template"].as_str()).map(str::to_string)
            }
            _ => {
                let jinja = dir.join("chat_template.jinja");
                if jinja.exists() {
                    Some(std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?)
                } else {
                    None
                }
            }
        };
        let add_bos = cfg["add_bos_token"].as_bool().unwrap_or(false);
        Ok(Self {
            inner,
            bos_id: bos,
            eos_ids: eos.into_iter().collect(),
            pad_id: pad.or(eos).unwrap_or(0),
            chat_template,
            add_bos,
            source: tj,
        })
    }

    /// Errors when token ids could exceed the model's embedding table.
    pub fn check_vocab(&self, model_vocab: usize) -> Result<()> {
        let n = self.vocab_size();
        if n > model_vocab {
            return Err(Error::invalid(
                &self.source,
                format!("tokenizer has {n} tokens but the model's vocab_size is {model_vocab}"),
            ));
        }
        Ok(())
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Special tokens in `text` (e.g. `<|im_start|>`) are matched whole; `add_special` adds BOS
    /// when the tokenizer is configured to.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, add_special).map_err(|e| Error::Usage(format!("tokenizing: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(|e| Error::Usage(format!("decoding: {e}")))
    }

    fn token_str(&self, id: Option<u32>) -> String {
        id.and_then(|i| self.inner.id_to_token(i)).unwrap_or_default()
    }

    /// Renders the model's chat template over `messages`, as transformers'
    /// `apply_chat_template(..., tokenize=False)` does.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        let tpl = self
            .chat_template
            .as_deref()
            .ok_or_else(|| Error::invalid(&self.source, "the tokenizer has no chat template"))?;
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, msg))
        });
        let bad = |e: minijinja::Error| Error::invalid(&self.source, format!("chat template: {e}"));
        env.add_template("chat", tpl).map_err(bad)?;
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.token_str(self.bos_id),
            eos_token => self.token_str(self.eos_ids.first().copied()),
        };
        env.get_template("chat").map_err(bad)?.render(ctx).map_err(bad)
    }

    /// `tokenizer.json` content.
    pub fn to_tokenizer_json(&self) -> Result<String> {
        self.inner.to_string(false).map_err(|e| Error::Usage(format!("serialising the tokenizer: {e}")))
    }

    /// `tokenizer_config.json` content, readable by both [`Tok::from_hf_dir`] and transformers.
    pub fn tokenizer_config(&self) -> serde_json::Value {
        let mut v = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "add_bos_token": self.add_bos,
            "add_eos_token": false,
            "clean_up_tokenization_spaces": false,
            "pad_token": self.token_str(Some(self.pad_id)),
        });
        if let Some(b) = self.bos_id {
            v["bos_token"] = self.token_str(Some(b)).into();
        }
        if let Some(&e) = self.eos_ids.first() {
            v["eos_token"] = self.token_str(Some(e)).into();
        }
        if let Some(t) = &self.chat_template {
            v["chat_template"] = t.clone().into();
        }
        v
    }
}

/// The post-processor transformers builds: BOS prepended when the model wants it, else nothing.
fn post_processor(add_bos: bool, bos: Option<(String, u32)>) -> serde_json::Value {
    match bos.filter(|_| add_bos) {
        Some((tok, id)) => json!({
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": tok, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": tok, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {tok.clone(): {"id": tok, "ids": [id], "tokens": [tok]}}
        }),
        None => json!({
            "type": "TemplateProcessing",
            "single": [{"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {}
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let m = bytes_to_unicode();
        assert_eq!(m[b'A' as usize], 'A');
        assert_eq!(m[b' ' as usize], 'Ġ');
        assert_eq!(m[b'\n' as usize], 'Ċ');
        assert_eq!(m[0], 'Ā');
        let distinct: std::collections::HashSet<char> = m.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
