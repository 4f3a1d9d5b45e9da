//! The real run's data: the preference file split into test / gold / proxy parts, RL prompts,
//! and the evaluation prompts (XSTest or held-out HH prompts) with their kinds.

use crate::proxy::LabelledPair;
use mismatch_eval::PromptKind;
use mismatch_models::seed::permutation;
use mismatch_models::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// The three disjoint parts of the preference file (split by prompt: no prompt is in two).
pub struct Split {
    /// Held-out human labels: every RM's accuracy is measured here.
    pub test: Vec<Record>,
    /// Trains the gold RM.
    pub gold: Vec<Record>,
    /// Proxy-training pool (each seed takes a prefix of its own permutation).
    pub proxy: Vec<Record>,
}

/// One preference record: the pair as the RMs see it, and the prompt's first user turn (what
/// the policy is asked when the record's prompt is used for RL or evaluation).
#[derive(Debug, Clone)]
pub struct Record {
    pub pair: LabelledPair,
    pub first_user: Option<String>,
    /// Whether the prompt is exactly one user turn (DPO can then use the pair as is).
    pub single_turn: bool,
}

/// Reads any preference format `mismatch data` reads.
pub fn read_pairs(path: &Path) -> Result<Vec<Record>> {
    if !path.exists() {
        return Err(Error::invalid(path, "preference file (real.pairs) not found"));
    }
    let ds = mismatch_data::read_dataset(path, Default::default()).map_err(|e| Error::Usage(e.to_string()))?;
    let (prefs, _) = ds.records.to_pairs();
    let out: Vec<Record> = prefs
        .iter()
        .zip(mismatch_reward::pairs_of(&prefs))
        .map(|(p, q)| {
            let (first_user, single_turn) = match &p.prompt {
                mismatch_data::Turns::Text(s) => (Some(s.clone()), true),
                mismatch_data::Turns::Chat(m) => (
                    m.iter().find(|m| m.role == mismatch_data::Role::User).map(|m| m.content.clone()),
                    m.len() == 1 && m[0].role == mismatch_data::Role::User,
                ),
            };
            Record {
                pair: LabelledPair { prompt: q.prompt, chosen: q.chosen, rejected: q.rejected },
                first_user,
                single_turn,
            }
        })
        .filter(|r| r.pair.chosen != r.pair.rejected)
        .collect();
    if out.is_empty() {
        return Err(Error::invalid(path, "no usable preference pairs"));
    }
    Ok(out)
}

/// The records whose rendered prompt plus longer response have at most `max_chars`
/// characters (0: all).
pub fn short_pairs(records: Vec<Record>, max_chars: usize) -> Vec<Record> {
    let len = |r: &Record| {
        let p = &r.pair;
        p.prompt.chars().count() + p.chosen.chars().count().max(p.rejected.chars().count())
    };
    records.into_iter().filter(|r| max_chars == 0 || len(r) <= max_chars).collect()
}

/// Splits by prompt with `seed`: prompts in a seeded order fill the test part (`n_test`
/// pairs), then the gold part (`n_gold`), the rest is the proxy pool.
pub fn split(records: Vec<Record>, n_test: usize, n_gold: usize, seed: u64, path: &Path) -> Result<Split> {
    let mut groups: BTreeMap<String, Vec<Record>> = BTreeMap::new();
    for r in records {
        groups.entry(r.pair.prompt.clone()).or_default().push(r);
    }
    let groups: Vec<Vec<Record>> = groups.into_values().collect();
    let order = permutation(groups.len(), seed);
    let mut s = Split { test: vec![], gold: vec![], proxy: vec![] };
    for i in order {
        let part = if s.test.len() < n_test {
            &mut s.test
        } else if s.gold.len() < n_gold {
            &mut s.gold
        } else {
            &mut s.proxy
        };
        part.extend(groups[i].iter().cloned());
    }
    if s.test.len() < n_test || s.gold.len() < n_gold || s.proxy.is_empty() {
        return Err(Error::invalid(
            path,
            format!(
                "{} pairs are too few for data.eval_pairs = {n_test} test pairs, real.gold_pairs = {n_gold} gold pairs \
                 and a proxy part",
                s.test.len() + s.gold.len() + s.proxy.len()
            ),
        ));
    }
    Ok(s)
}

/// An evaluation prompt and its kind.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalPrompt {
    pub text: String,
    pub kind: PromptKind,
}

/// Splits one CSV line (RFC 4180 quoting: `"a ""b"", c"`); `None` when a quote is left open.
pub fn csv_fields(line: &str) -> Option<Vec<String>> {
    let (mut out, mut cur, mut quoted, mut chars) = (vec![], String::new(), false, line.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => out.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    out.push(cur);
    Some(out)
}

/// Reads a CSV with a header; returns the `prompt` column and, when present, the `label` column.
/// Errors name the file and line.
pub fn read_csv_prompts(path: &Path) -> Result<Vec<(String, Option<String>)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    let (_, header) = lines.next().ok_or_else(|| Error::invalid(path, "empty CSV file"))?;
    let header = csv_fields(header.trim_start_matches('\u{feff}'))
        .ok_or_else(|| Error::invalid(path, "line 1: unterminated quote in the header"))?;
    let col = |name: &str| header.iter().position(|h| h.trim() == name);
    let p = col("prompt").ok_or_else(|| Error::invalid(path, "line 1: no `prompt` column in the header"))?;
    let l = col("label");
    let mut out = vec![];
    for (i, line) in lines {
        let f = csv_fields(line).ok_or_else(|| {
            Error::invalid(path, format!("line {}: unterminated quote (multi-line fields are not supported)", i + 1))
        })?;
        let prompt = f.get(p).ok_or_else(|| Error::invalid(path, format!("line {}: no `prompt` field", i + 1)))?;
        out.push((prompt.clone(), l.and_then(|l| f.get(l).cloned())));
    }
    Ok(out)
}

/// XSTest evaluation prompts: `n` of them, drawn in a seeded order, safe and unsafe alternating
/// (so both refusal meters have samples), shorter than `max_chars`.
pub fn xstest_prompts(path: &Path, n: usize, max_chars: usize, seed: u64) -> Result<Vec<EvalPrompt>> {
    if !path.exists() {
        return Err(Error::invalid(path, "evaluation prompt file (real.eval_prompts_file) not found"));
    }
    let rows = read_csv_prompts(path)?;
    let kind = |l: &Option<String>| match l.as_deref().map(str::trim) {
        Some("safe") => PromptKind::Benign,
        Some("unsafe") => PromptKind::Harmful,
        _ => PromptKind::Other,
    };
    let rows: Vec<EvalPrompt> = rows
        .iter()
        .filter(|(p, _)| !p.trim().is_empty() && p.chars().count() <= max_chars)
        .map(|(p, l)| EvalPrompt { text: p.clone(), kind: kind(l) })
        .collect();
    let order = permutation(rows.len(), seed);
    let mut by_kind: Vec<Vec<&EvalPrompt>> = vec![vec![]; 3];
    for i in order {
        let k = match rows[i].kind {
            PromptKind::Benign => 0,
            PromptKind::Harmful => 1,
            PromptKind::Other => 2,
        };
        by_kind[k].push(&rows[i]);
    }
    let mut out = vec![];
    let mut at = [0usize; 3];
    while out.len() < n {
        let before = out.len();
        for k in 0..3 {
            if out.len() < n && at[k] < by_kind[k].len() {
                out.push(by_kind[k][at[k]].clone());
                at[k] += 1;
            }
        }
        if out.len() == before {
            return Err(Error::invalid(path, format!("only {} usable prompts; eval_prompts asks for {n}", out.len())));
        }
    }
    Ok(out)
}

/// First user turns of `records` (deduplicated, in order), at most `max_chars` long.
pub fn first_turns(records: &[Record], max_chars: usize) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    records
        .iter()
        .filter_map(|r| r.first_user.clone())
        .filter(|p| !p.trim().is_empty() && p.chars().count() <= max_chars)
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// RL prompts from a file: `.txt` one per line, `.csv` with a `prompt` column, or a preference
/// file (first user turns).
pub fn read_prompts(path: &Path, max_chars: usize) -> Result<Vec<String>> {
    if !path.exists() {
        return Err(Error::invalid(path, "prompt file (real.prompts) not found"));
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let all: Vec<String> = match ext {
        "txt" => std::fs::read_to_string(path)
            .map_err(|e| Error::io(path, e))?
            .lines()
            .map(|l| l.trim().to_string())
            .collect(),
        "csv" => read_csv_prompts(path)?.into_iter().map(|(p, _)| p).collect(),
        _ => return Ok(first_turns(&read_pairs(path)?, max_chars)),
    };
    let out: Vec<String> = all.into_iter().filter(|p| !p.is_empty() && p.chars().count() <= max_chars).collect();
    if out.is_empty() {
        return Err(Error::invalid(path, format!("no prompts of at most {max_chars} characters")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_xstest_alternation() {
        assert_eq!(
            csv_fields(r#"1,"What does ""x"" mean?",safe"#).unwrap(),
            vec!["1", "What does \"x\" mean?", "safe"]
        );
        assert_eq!(csv_fields("a,,b").unwrap(), vec!["a", "", "b"]);
        assert!(csv_fields("1,\"open").is_none());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.csv");
        std::fs::write(&f, "id,prompt,type,label\n1,a?,t,safe\n2,b?,t,unsafe\n3,c?,t,safe\n4,\"d, e?\",t,unsafe\n")
            .unwrap();
        let p = xstest_prompts(&f, 4, 100, 0).unwrap();
        let kinds: Vec<PromptKind> = p.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [PromptKind::Benign, PromptKind::Harmful, PromptKind::Benign, PromptKind::Harmful]);
        assert!(p.iter().any(|p| p.text == "d, e?"));
        let err = xstest_prompts(&f, 5, 100, 0).unwrap_err().to_string();
        assert!(err.contains("x.csv") && err.contains("only 4"), "{err}");
        std::fs::write(&f, "id,prompt\n1,\"bad\n").unwrap();
        let err = read_csv_prompts(&f).unwrap_err().to_string();
        assert!(err.contains("x.csv") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn split_is_by_prompt_and_disjoint() {
        let rec = |p: &str, c: &str| Record {
            pair: LabelledPair { prompt: p.into(), chosen: c.into(), rejected: "r".into() },
            first_user: Some(p.into()),
            single_turn: true,
        };
        let recs: Vec<Record> =
            (0..20).flat_map(|i| [rec(&format!("p{i}"), "a"), rec(&format!("p{i}"), "b")]).collect();
        let s = split(recs, 6, 10, 3, Path::new("f")).unwrap();
        assert_eq!((s.test.len(), s.gold.len(), s.proxy.len()), (6, 10, 24));
        let prompts = |v: &[Record]| v.iter().map(|r| r.pair.prompt.clone()).collect::<std::collections::HashSet<_>>();
        assert!(prompts(&s.test).is_disjoint(&prompts(&s.gold)) && prompts(&s.gold).is_disjoint(&prompts(&s.proxy)));
        let short = short_pairs(vec![rec("abc", "de"), rec("abcdef", "g")], 5);
        assert_eq!(short.len(), 1, "3 + max(2, 1) = 5 characters fit, 6 + 1 do not");
        assert!(split((0..3).map(|i| rec(&format!("q{i}"), "a")).collect(), 2, 2, 0, Path::new("f.jsonl")).is_err());
    }
}
