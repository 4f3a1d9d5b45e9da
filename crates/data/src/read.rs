//! Reading preference files: bytes → records with line numbers → normalised [`Dataset`].
//!
//! Containers: JSONL (one record per `\n`-terminated line; `\r\n` and blank lines accepted), a JSON array of
//! records (each element's starting line is tracked), either of them gzip-compressed (detected by the magic
//! bytes 1f 8b, not by the file name). A UTF-8 BOM is skipped. Lines are split on `\n` only: some prompts
//! contain U+2028, which a Unicode-aware line splitter would cut.
//!
//! Every error names the file and, for a bad record, the line it starts on and the offending field.

use crate::error::{DataError, Result};
use crate::types::*;
use serde_json::{Map, Value};
use std::io::Read;
use std::path::Path;

/// Records nested deeper than this are rejected before serde_json sees them: no supported format needs more
/// than 4 levels, and serde_json's own recursion limit (128) would otherwise be the only guard.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, Clone, Copy, Default)]
pub struct ReadOptions {
    /// Parse every record as this format instead of detecting it from the first record.
    pub format: Option<Format>,
    /// Reject HH records whose chosen and rejected transcripts differ before the final assistant turn,
    /// instead of using their common turns as the prompt (5 of the 2,312 harmless-base test pairs do this).
    pub strict: bool,
}

/// Reads and validates a whole preference file.
pub fn read_dataset(path: &Path, opts: ReadOptions) -> Result<Dataset> {
    let (bytes, gzip) = read_bytes(path)?;
    let raw = split_records(path, &bytes)?;
    let Some(first) = raw.first() else {
        return Err(DataError::file(path, "no records (the file holds only whitespace or an empty array)"));
    };
    let format = match opts.format {
        Some(f) => f,
        None => detect(&first.1).map_err(|m| DataError::at_line(path, first.0, m))?,
    };
    let mut ds = Dataset {
        path: path.to_path_buf(),
        format,
        records: match format {
            Format::PandaLm => Records::Judgements(Vec::new()),
            Format::Ranking => Records::Rankings(Vec::new()),
            _ => Records::Pairs(Vec::new()),
        },
        raw: Vec::with_capacity(raw.len()),
        hh_diverging: Vec::new(),
        gzip,
    };
    let mut annotators = None;
    for (line, value) in raw {
        let err = |m: String| DataError::at_line(path, line, m);
        let obj = value.as_object().ok_or_else(|| err(format!("expected a JSON object, found {}", kind(&value))))?;
        match &mut ds.records {
            Records::Pairs(v) => {
                let (mut p, diverged) = parse_pair(format, obj, opts.strict).map_err(err)?;
                p.line = line;
                if diverged {
                    ds.hh_diverging.push(line);
                }
                v.push(p);
            }
            Records::Rankings(v) => {
                let mut r = parse_ranking(obj).map_err(err)?;
                r.line = line;
                v.push(r);
            }
            Records::Judgements(v) => {
                let n = *annotators.get_or_insert_with(|| count_annotators(obj));
                let mut j = parse_judgement(obj, n).map_err(err)?;
                j.line = line;
                v.push(j);
            }
        }
        ds.raw.push((line, value));
    }
    Ok(ds)
}

/// The file's bytes, gunzipped when they start with the gzip magic; the flag says whether they were.
pub fn read_bytes(path: &Path) -> Result<(Vec<u8>, bool)> {
    let bytes = std::fs::read(path).map_err(|e| DataError::file(path, format!("cannot read: {e}")))?;
    if bytes.is_empty() {
        return Err(DataError::file(path, "empty file"));
    }
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok((bytes, false));
    }
    // MultiGzDecoder: `cat a.gz b.gz` is a valid gzip file with two members.
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut out)
        .map_err(|e| DataError::file(path, format!("corrupt gzip data: {e}")))?;
    if out.is_empty() {
        return Err(DataError::file(path, "empty file (gzip stream decompresses to nothing)"));
    }
    Ok((out, true))
}

/// Splits the decompressed bytes into `(line, value)` records: JSONL, or a JSON array when the first
/// non-space byte is `[`.
pub fn split_records(path: &Path, bytes: &[u8]) -> Result<Vec<(usize, Value)>> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace());
    let Some(start) = start else {
        return Err(DataError::file(path, "empty file (only whitespace)"));
    };
    if bytes[start] == b'[' {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
            DataError::at_line(path, line, "invalid UTF-8")
        })?;
        let elems = split_array(text, start).map_err(|(line, m)| DataError::at_line(path, line, m))?;
        elems
            .into_iter()
            .map(|(line, s)| {
                parse_json(s).map(|v| (line, v)).map_err(|(off, m)| DataError::at_line(path, line + off, m))
            })
            .collect()
    } else {
        let mut out = Vec::new();
        for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
            let line = i + 1;
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let text = std::str::from_utf8(raw).map_err(|e| {
                DataError::at_line(path, line, format!("invalid UTF-8 at byte {} of the line", e.valid_up_to() + 1))
            })?;
            if text.trim().is_empty() {
                continue;
            }
            check_depth(text).map_err(|m| DataError::at_line(path, line, m))?;
            let v = parse_json(text).map_err(|(_, m)| {
                // A pretty-printed object spread over several lines looks like a truncated JSONL record.
                let hint = if m.starts_with("truncated") { " (JSONL needs one complete record per line)" } else { "" };
                DataError::at_line(path, line, format!("{m}{hint}"))
            })?;
            out.push((line, v));
        }
        Ok(out)
    }
}

/// serde_json with messages that say what happened; the offset is the number of lines into `text` where
/// the problem is.
fn parse_json(text: &str) -> std::result::Result<Value, (usize, String)> {
    serde_json::from_str(text).map_err(|e| {
        let off = e.line().saturating_sub(1);
        let inner = e.to_string();
        let inner = inner.rfind(" at line ").map_or(inner.as_str(), |i| &inner[..i]).to_string();
        if let Some((tok_off, tok, key)) = find_nonfinite(text) {
            let field = key.map_or(String::new(), |k| format!("field `{k}`: "));
            return (tok_off, format!("{field}{tok} is not a number in JSON (write a finite number)"));
        }
        let msg = match e.classify() {
            serde_json::error::Category::Eof => format!("truncated record: {inner}"),
            _ => format!("invalid JSON at column {}: {inner}", e.column()),
        };
        (off, msg)
    })
}

/// Finds a bare `NaN` / `Infinity` / `-Infinity` token (what Python's json.dumps writes for non-finite floats)
/// outside strings, with its line offset and the key it is the value of.
fn find_nonfinite(text: &str) -> Option<(usize, &'static str, Option<String>)> {
    let b = text.as_bytes();
    let (mut i, mut line, mut last_str, mut key) = (0, 0, None::<(usize, usize)>, None::<String>);
    while i < b.len() {
        match b[i] {
            b'"' => {
                let s = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                last_str = Some((s, i.min(b.len())));
            }
            b':' => key = last_str.map(|(s, e)| text[s..e].to_string()),
            b'\n' => line += 1,
            _ => {
                for tok in ["NaN", "-Infinity", "Infinity"] {
                    if b[i..].starts_with(tok.as_bytes()) {
                        return Some((line, tok, key));
                    }
                }
            }
        }
        i += 1;
    }
    None
}

/// Tracks whether a byte-by-byte scan of JSON text is inside a string literal, so that brackets
/// and commas inside strings are not counted as structure.
#[derive(Default)]
struct StringScan {
    in_str: bool,
    esc: bool,
}

impl StringScan {
    /// Feeds one byte; true when it belongs to a string literal (its quotes included).
    fn step(&mut self, c: u8) -> bool {
        if self.in_str {
            match (self.esc, c) {
                (true, _) => self.esc = false,
                (false, b'\\') => self.esc = true,
                (false, b'"') => self.in_str = false,
                _ => {}
            }
            true
        } else {
            self.in_str = c == b'"';
            self.in_str
        }
    }
}

/// Rejects nesting deeper than [`MAX_DEPTH`] (a cheap scan; strings are skipped).
fn check_depth(text: &str) -> std::result::Result<(), String> {
    let (mut depth, mut strings) = (0usize, StringScan::default());
    for &c in text.as_bytes() {
        if strings.step(c) {
            continue;
        }
        match c {
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(format!("nesting deeper than {MAX_DEPTH} levels"));
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Splits a top-level JSON array (starting at byte `start`) into its elements' texts and starting lines,
/// without parsing them, so each element's errors can be reported at its own line.
fn split_array(text: &str, start: usize) -> std::result::Result<Vec<(usize, &str)>, (usize, String)> {
    let b = text.as_bytes();
    let mut line = 1 + b[..start].iter().filter(|&&c| c == b'\n').count();
    let mut i = start + 1;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize, line: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            if b[*i] == b'\n' {
                *line += 1;
            }
            *i += 1;
        }
    };
    skip_ws(&mut i, &mut line);
    if i < b.len() && b[i] == b']' {
        i += 1;
    } else {
        loop {
            skip_ws(&mut i, &mut line);
            if i >= b.len() {
                return Err((line, "truncated JSON array: expected an element or `]`".into()));
            }
            if b[i] == b']' || b[i] == b',' {
                return Err((line, "empty element in JSON array (stray comma?)".into()));
            }
            let (elem_start, elem_line) = (i, line);
            let (mut depth, mut strings) = (0usize, StringScan::default());
            while i < b.len() {
                let c = b[i];
                if c == b'\n' {
                    line += 1;
                }
                if !strings.step(c) {
                    match c {
                        b'{' | b'[' => {
                            depth += 1;
                            if depth > MAX_DEPTH {
                                return Err((line, format!("nesting deeper than {MAX_DEPTH} levels")));
                            }
                        }
                        b'}' | b']' if depth > 0 => depth -= 1,
                        b']' | b',' if depth == 0 => break,
                        _ => {}
                    }
                }
                i += 1;
            }
            if i >= b.len() {
                return Err((
                    line,
                    format!("truncated JSON array: the element starting at line {elem_line} is not closed"),
                ));
            }
            out.push((elem_line, text[elem_start..i].trim_end()));
            let sep = b[i];
            i += 1;
            if sep == b']' {
                break;
            }
        }
    }
    skip_ws(&mut i, &mut line);
    if i < b.len() {
        return Err((line, "unexpected content after the closing `]` of the JSON array".into()));
    }
    Ok(out)
}

/// Detects the format from the keys of the first record.
pub fn detect(v: &Value) -> std::result::Result<Format, String> {
    let Some(o) = v.as_object() else {
        return Err(format!("expected a JSON object, found {}", kind(v)));
    };
    let has = |k: &str| o.contains_key(k);
    Ok(if has("response1") && has("response2") {
        Format::PandaLm
    } else if has("completions") && has("ranking") {
        Format::Ranking
    } else if has("preferred_output") || has("non_preferred_output") {
        Format::OpenAi
    } else if has("conversations") {
        Format::ShareGpt
    } else if has("chosen") && has("rejected") {
        if !has("prompt") && o["chosen"].is_string() {
            Format::Hh
        } else {
            Format::Trl
        }
    } else {
        let keys: Vec<_> = o.keys().map(|k| format!("`{k}`")).collect();
        return Err(format!(
            "cannot detect the format from the fields {{{}}}: expected prompt/chosen/rejected (trl), chosen/rejected \
             transcripts (hh), input/preferred_output/non_preferred_output (openai), conversations/chosen/rejected \
             (sharegpt), instruction/response1/response2/annotator1.. (pandalm) or prompt/completions/ranking (ranking)",
            keys.join(", ")
        ));
    })
}

type FieldResult<T> = std::result::Result<T, String>;

pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn field<'a>(o: &'a Map<String, Value>, name: &str, ctx: &str) -> FieldResult<&'a Value> {
    o.get(name).ok_or_else(|| format!("missing field `{ctx}{name}`"))
}

fn string(v: &Value, name: &str) -> FieldResult<String> {
    v.as_str().map(str::to_owned).ok_or_else(|| format!("field `{name}`: expected a string, found {}", kind(v)))
}

/// A list of `{role, content}` messages (or ShareGPT `{from, value}` when `sharegpt`).
fn messages(v: &Value, name: &str, sharegpt: bool) -> FieldResult<Vec<Message>> {
    let arr = v.as_array().ok_or_else(|| format!("field `{name}`: expected a list of messages, found {}", kind(v)))?;
    arr.iter().enumerate().map(|(i, m)| message(m, &format!("{name}[{i}]"), sharegpt)).collect()
}

fn message(m: &Value, name: &str, sharegpt: bool) -> FieldResult<Message> {
    let (rk, ck) = if sharegpt { ("from", "value") } else { ("role", "content") };
    let o = m.as_object().ok_or_else(|| format!("field `{name}`: expected a message object, found {}", kind(m)))?;
    let role_v = o.get(rk).ok_or_else(|| format!("missing field `{name}.{rk}`"))?;
    let role_s =
        role_v.as_str().ok_or_else(|| format!("field `{name}.{rk}`: expected a string, found {}", kind(role_v)))?;
    let role = Role::parse(role_s).ok_or_else(|| {
        let known = if sharegpt { "human, gpt, system" } else { "system, user, assistant" };
        format!("field `{name}.{rk}`: unknown role \"{role_s}\" (expected {known})")
    })?;
    let content = string(o.get(ck).ok_or_else(|| format!("missing field `{name}.{ck}`"))?, &format!("{name}.{ck}"))?;
    Ok(Message { role, content })
}

/// A string or a message list.
fn turns(v: &Value, name: &str) -> FieldResult<Turns> {
    match v {
        Value::String(s) => Ok(Turns::Text(s.clone())),
        Value::Array(_) => Ok(Turns::Chat(messages(v, name, false)?)),
        _ => Err(format!("field `{name}`: expected a string or a list of messages, found {}", kind(v))),
    }
}

fn margin(o: &Map<String, Value>) -> FieldResult<Option<f64>> {
    match o.get("margin") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let m = n.as_f64().filter(|m| m.is_finite()).ok_or("field `margin`: not a finite number")?;
            Ok(Some(m))
        }
        Some(v) => Err(format!("field `margin`: expected a number, found {}", kind(v))),
    }
}

fn parse_pair(format: Format, o: &Map<String, Value>, strict: bool) -> FieldResult<(Preference, bool)> {
    let margin = margin(o)?;
    let pref = |prompt, chosen, rejected| Preference { prompt, chosen, rejected, margin, line: 0 };
    match format {
        Format::Trl => {
            let chosen = turns(field(o, "chosen", "")?, "chosen")?;
            let rejected = turns(field(o, "rejected", "")?, "rejected")?;
            if let Some(p) = o.get("prompt") {
                let prompt = turns(p, "prompt")?;
                if prompt.is_chat() != chosen.is_chat() || chosen.is_chat() != rejected.is_chat() {
                    return Err("fields `prompt`, `chosen`, `rejected` mix plain strings and message lists".into());
                }
                return Ok((pref(prompt, chosen, rejected), false));
            }
            // Implicit prompt (TRL's "conversational, implicit prompt"): the shared messages before the last one.
            let (Turns::Chat(c), Turns::Chat(r)) = (chosen, rejected) else {
                return Err("missing field `prompt` (required when `chosen`/`rejected` are strings)".into());
            };
            let (Some((cl, cp)), Some((rl, rp))) = (c.split_last(), r.split_last()) else {
                return Err("fields `chosen`/`rejected`: empty message list".into());
            };
            if cp != rp {
                return Err("fields `chosen` and `rejected` (implicit prompt) differ before their last message".into());
            }
            Ok((pref(Turns::Chat(cp.to_vec()), Turns::Chat(vec![cl.clone()]), Turns::Chat(vec![rl.clone()])), false))
        }
        Format::Hh => {
            let c = hh_turns(&string(field(o, "chosen", "")?, "chosen")?, "chosen")?;
            let r = hh_turns(&string(field(o, "rejected", "")?, "rejected")?, "rejected")?;
            let (p, diverged) = hh_prompt_len(&c, &r, strict)?;
            let prompt = Turns::Chat(c[..p].to_vec());
            Ok((pref(prompt, Turns::Chat(c[p..].to_vec()), Turns::Chat(r[p..].to_vec())), diverged))
        }
        Format::OpenAi => {
            let input = field(o, "input", "")?;
            let io =
                input.as_object().ok_or_else(|| format!("field `input`: expected an object, found {}", kind(input)))?;
            let prompt = messages(field(io, "messages", "input.")?, "input.messages", false)?;
            let chosen = messages(field(o, "preferred_output", "")?, "preferred_output", false)?;
            let rejected = messages(field(o, "non_preferred_output", "")?, "non_preferred_output", false)?;
            Ok((pref(Turns::Chat(prompt), Turns::Chat(chosen), Turns::Chat(rejected)), false))
        }
        Format::ShareGpt => {
            let prompt = messages(field(o, "conversations", "")?, "conversations", true)?;
            let one = |name: &str| -> FieldResult<Turns> {
                let v = field(o, name, "")?;
                // LLaMA-Factory writes a single message; accept a list too.
                let m = if v.is_array() { messages(v, name, true)? } else { vec![message(v, name, true)?] };
                Ok(Turns::Chat(m))
            };
            Ok((pref(Turns::Chat(prompt), one("chosen")?, one("rejected")?), false))
        }
        Format::PandaLm | Format::Ranking => unreachable!("not a pairwise format"),
    }
}

/// Splits an HH-RLHF transcript `\n\nHuman: … \n\nAssistant: …` into messages (contents trimmed).
fn hh_turns(t: &str, name: &str) -> FieldResult<Vec<Message>> {
    const H: &str = "\n\nHuman:";
    const A: &str = "\n\nAssistant:";
    // Some copies of the data strip the leading blank lines.
    let owned;
    let t = if t.starts_with("Human:") {
        owned = format!("\n\n{t}");
        owned.as_str()
    } else {
        t
    };
    if !t.starts_with(H) {
        return Err(format!("field `{name}`: transcript must start with \"\\n\\nHuman:\""));
    }
    let mut out = Vec::new();
    let mut rest = t;
    while !rest.is_empty() {
        let (role, body) = if let Some(b) = rest.strip_prefix(H) {
            (Role::User, b)
        } else {
            (Role::Assistant, rest.strip_prefix(A).expect("rest starts at a marker"))
        };
        let end = [body.find(H), body.find(A)].into_iter().flatten().min().unwrap_or(body.len());
        out.push(Message { role, content: body[..end].trim().to_string() });
        rest = &body[end..];
    }
    if out.last().map(|m| m.role) != Some(Role::Assistant) {
        return Err(format!("field `{name}`: transcript does not end with an \"\\n\\nAssistant:\" turn"));
    }
    Ok(out)
}

/// How many leading messages form the shared prompt of an HH pair, and whether the pair diverged before the
/// final assistant turn (then the prompt is the longest common prefix ending with a human turn).
fn hh_prompt_len(c: &[Message], r: &[Message], strict: bool) -> FieldResult<(usize, bool)> {
    if c[..c.len() - 1] == r[..r.len() - 1] {
        return Ok((c.len() - 1, false));
    }
    let common = c.iter().zip(r).take_while(|(a, b)| a == b).count();
    let at = format!("chosen and rejected transcripts do not share the prompt: they differ at turn {}", common + 1);
    if strict {
        return Err(format!("{at} (before the final assistant turn)"));
    }
    let p = (1..=common.min(c.len() - 1).min(r.len() - 1)).rev().find(|&p| c[p - 1].role == Role::User);
    match p {
        Some(p) if c[p].role == Role::Assistant && r[p].role == Role::Assistant => Ok((p, true)),
        _ => Err(format!("{at}, before any shared human turn")),
    }
}

fn parse_ranking(o: &Map<String, Value>) -> FieldResult<Ranking> {
    let prompt = turns(field(o, "prompt", "")?, "prompt")?;
    let cv = field(o, "completions", "")?;
    let ca = cv.as_array().ok_or_else(|| format!("field `completions`: expected an array, found {}", kind(cv)))?;
    let completions: Vec<Turns> =
        ca.iter().enumerate().map(|(i, c)| turns(c, &format!("completions[{i}]"))).collect::<FieldResult<_>>()?;
    if completions.len() < 2 {
        return Err(format!("field `completions`: need at least 2 completions to rank, found {}", completions.len()));
    }
    let rv = field(o, "ranking", "")?;
    let ra =
        rv.as_array().ok_or_else(|| format!("field `ranking`: expected an array of indices, found {}", kind(rv)))?;
    if ra.len() != completions.len() {
        return Err(format!(
            "field `ranking`: has {} entries but there are {} completions (list every index once, best first)",
            ra.len(),
            completions.len()
        ));
    }
    let mut seen = vec![false; completions.len()];
    let mut order = Vec::with_capacity(ra.len());
    for (i, v) in ra.iter().enumerate() {
        let idx =
            v.as_i64().ok_or_else(|| format!("field `ranking[{i}]`: expected an integer index, found {}", kind(v)))?;
        if idx < 0 || idx as usize >= completions.len() {
            return Err(format!(
                "field `ranking[{i}]`: index {idx} is out of range for {} completions (0..{})",
                completions.len(),
                completions.len() - 1
            ));
        }
        let idx = idx as usize;
        if std::mem::replace(&mut seen[idx], true) {
            return Err(format!("field `ranking[{i}]`: index {idx} appears twice"));
        }
        order.push(idx);
    }
    Ok(Ranking { prompt, completions, order, line: 0 })
}

/// `annotator1`, `annotator2`, … present in the first record.
fn count_annotators(o: &Map<String, Value>) -> usize {
    (1..).take_while(|i| o.contains_key(&format!("annotator{i}"))).count()
}

fn parse_judgement(o: &Map<String, Value>, n: usize) -> FieldResult<Judgement> {
    let instruction = string(field(o, "instruction", "")?, "instruction")?;
    let input = match o.get("input") {
        None | Some(Value::Null) => String::new(),
        Some(v) => string(v, "input")?,
    };
    // PandaLM's own prompt joins instruction and input with a blank line when the input is non-empty.
    let prompt = if input.is_empty() { instruction } else { format!("{instruction}\n\n{input}") };
    // The PandaLM test set holds six responses that were JSON-decoded upstream into booleans (a model answered
    // "True"); keep them as the text they were.
    let response = |name: &str| -> FieldResult<Turns> {
        match field(o, name, "")? {
            v @ (Value::Bool(_) | Value::Number(_)) => Ok(Turns::Text(v.to_string())),
            v => turns(v, name),
        }
    };
    let (response1, response2) = (response("response1")?, response("response2")?);
    if n == 0 {
        return Err("missing field `annotator1` (need at least one label: 0 tie, 1 or 2)".into());
    }
    let labels = (1..=n)
        .map(|i| {
            let name = format!("annotator{i}");
            let v = field(o, &name, "")?;
            match v.as_u64() {
                Some(l @ 0..=2) => Ok(l as u8),
                _ => Err(format!("field `{name}`: expected 0 (tie), 1 or 2, found {v}")),
            }
        })
        .collect::<FieldResult<_>>()?;
    Ok(Judgement { prompt: Turns::Text(prompt), response1, response2, labels, line: 0 })
}
