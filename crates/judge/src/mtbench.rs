//! MT-Bench's data files (FastChat `fastchat/llm_judge/data/mt_bench/`): `question.jsonl` (80
//! two-turn questions in 8 categories) and `reference_answer/gpt-4.jsonl` (GPT-4's answers to
//! the 30 math, reasoning and coding questions, the references of `*-math-v1`). Only what the
//! judges here need is read; an error names the file, the line and the field.

use crate::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Question {
    pub question_id: u64,
    pub category: String,
    pub turns: Vec<String>,
}

/// `question.jsonl`.
pub fn read_questions(path: &Path) -> Result<Vec<Question>> {
    lines(path)?
        .into_iter()
        .map(|(at, v)| {
            Ok(Question {
                question_id: id(&v, &at)?,
                category: v["category"].as_str().ok_or_else(|| field(&at, "category", "a string"))?.into(),
                turns: strings(&v["turns"]).ok_or_else(|| field(&at, "turns", "a list of strings"))?,
            })
        })
        .collect()
}

/// `reference_answer/*.jsonl`: question id → the turns of the first choice.
pub fn read_reference_answers(path: &Path) -> Result<BTreeMap<u64, Vec<String>>> {
    lines(path)?
        .into_iter()
        .map(|(at, v)| {
            let turns = strings(&v["choices"][0]["turns"])
                .ok_or_else(|| field(&at, "choices[0].turns", "a list of strings"))?;
            Ok((id(&v, &at)?, turns))
        })
        .collect()
}

/// Each non-empty line as JSON, with its `FILE:LINE`. Lines split on `\n` only: some prompts
/// hold U+2028.
fn lines(path: &Path) -> Result<Vec<(String, serde_json::Value)>> {
    let text = std::fs::read_to_string(path).map_err(|err| Error::Io { path: path.into(), err })?;
    text.split('\n')
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let at = format!("{}:{}", path.display(), i + 1);
            let v = serde_json::from_str(l).map_err(|e| Error::invalid(&at, format!("not JSON: {e}")))?;
            Ok((at, v))
        })
        .collect()
}

fn id(v: &serde_json::Value, at: &str) -> Result<u64> {
    v["question_id"].as_u64().ok_or_else(|| field(at, "question_id", "a non-negative integer"))
}

fn strings(v: &serde_json::Value) -> Option<Vec<String>> {
    v.as_array()?.iter().map(|t| t.as_str().map(str::to_string)).collect()
}

fn field(at: &str, name: &str, want: &str) -> Error {
    Error::invalid(at, format!("field '{name}' must be {want}"))
}
