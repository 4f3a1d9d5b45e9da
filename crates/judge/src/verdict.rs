//! A judge's reply to a verdict, read exactly as the original evaluation reads it.
//!
//! - **MT-Bench pairwise** (`run_judge_pair`, FastChat `fastchat/llm_judge/common.py` @0e6d3e4):
//!   `if "[[A]]" in judgment: A elif "[[B]]" in judgment: B elif "[[C]]" in judgment: tie else
//!   error`. The markers are tested in that order, so a reply holding several markers is A if it
//!   holds `[[A]]` at all, B if it holds `[[B]]` but not `[[A]]`: FastChat does not treat such a
//!   reply as a failure, and neither do we. [`Verdict::Unparsed`] is its `"error"`.
//! - **MT-Bench single** (`run_judge_single`): the first match of `\[\[(\d+\.?\d*)\]\]`, else the
//!   first of `\[(\d+\.?\d*)\]`, read as a number (`ast.literal_eval`); no match is its rating
//!   `-1`, here [`Verdict::Unparsed`]. A rating outside 1–10 is kept, as FastChat keeps it.
//!   Digits are ASCII (`literal_eval` reads no other).
//! - **AlpacaEval 2 classifier** (`alpaca_eval_clf_gpt4_turbo`): the judge answers one token, the
//!   identifier `m` (the output shown first) or `M`. AlpacaEval reads it from the first token's
//!   log-probs, not the text ([`crate::logprob::binarized`]), and so does the pairwise judge
//!   whenever the backend returns log-probs. [`parse_label`] reads the text, for endpoints that
//!   return none: the reply's first word (leading whitespace, quotes, backticks and asterisks
//!   dropped, up to the first character that is not a letter or digit) must be one of the two
//!   identifiers, case-sensitively.

use crate::template::Output;
use serde::Serialize;

/// What a judge said. Positions, not answers: `A` is whatever was shown first.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    A,
    B,
    Tie,
    Rating(f64),
    /// The reply could not be read; kept whole so that failures can be inspected and counted.
    Unparsed {
        raw: String,
    },
}

impl Verdict {
    pub fn is_unparsed(&self) -> bool {
        matches!(self, Verdict::Unparsed { .. })
    }
}

/// Reads `reply` as `output` says.
pub fn parse(reply: &str, output: &Output) -> Verdict {
    match output {
        Output::Markers => parse_markers(reply),
        Output::Rating => parse_rating(reply),
        Output::Labels { a, b } => parse_label(reply, a, b),
    }
}

/// MT-Bench pairwise: `[[A]]`, then `[[B]]`, then `[[C]]` anywhere in the reply.
pub fn parse_markers(reply: &str) -> Verdict {
    if reply.contains("[[A]]") {
        Verdict::A
    } else if reply.contains("[[B]]") {
        Verdict::B
    } else if reply.contains("[[C]]") {
        Verdict::Tie
    } else {
        Verdict::Unparsed { raw: reply.into() }
    }
}

/// MT-Bench single: `[[x]]`, else `[x]`.
pub fn parse_rating(reply: &str) -> Verdict {
    match find_number(reply, "[[", "]]").or_else(|| find_number(reply, "[", "]")) {
        Some(x) => Verdict::Rating(x),
        None => Verdict::Unparsed { raw: reply.into() },
    }
}

/// The first `open` `\d+\.?\d*` `close` in `text`, leftmost as `re.search` finds it.
fn find_number(text: &str, open: &str, close: &str) -> Option<f64> {
    let b = text.as_bytes();
    let digits = |mut i: usize| {
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        i
    };
    (0..b.len()).find_map(|start| {
        let from = start + open.len();
        if !b[start..].starts_with(open.as_bytes()) {
            return None;
        }
        let mut end = digits(from);
        if end == from {
            return None;
        }
        if end < b.len() && b[end] == b'.' {
            end = digits(end + 1);
        }
        // `from..end` is ASCII, so it lies on char boundaries even in non-ASCII text.
        b[end..].starts_with(close.as_bytes()).then(|| text[from..end].parse().ok()).flatten()
    })
}

/// AlpacaEval's identifiers: the reply's first word is `a` (position A) or `b` (position B).
pub fn parse_label(reply: &str, a: &str, b: &str) -> Verdict {
    let t = reply.trim_start_matches(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '*'));
    let word = t.split(|c: char| !c.is_alphanumeric()).next().unwrap_or("");
    if word == a {
        Verdict::A
    } else if word == b {
        Verdict::B
    } else {
        Verdict::Unparsed { raw: reply.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unparsed(r: &str) -> Verdict {
        Verdict::Unparsed { raw: r.into() }
    }

    #[test]
    fn pairwise_markers_as_fastchat_reads_them() {
        let cases = [
            ("Assistant A is more detailed.\n\n[[A]]", Verdict::A),
            ("Both are wrong, but B is closer. Final verdict: [[B]]", Verdict::B),
            ("They are equally good. [[C]]", Verdict::Tie),
            // FastChat tests "[[A]]" first: a reply that mentions the format and then decides B
            // is still A. Kept as the original does it.
            ("Format: \"[[A]]\" if A is better, \"[[B]]\" if B is better. My verdict: [[B]]", Verdict::A),
            ("Not [[A]] — [[C]]", Verdict::A),
            ("I choose [[B]] over [[C]]", Verdict::B),
            // Near misses are failures, not verdicts.
            ("[A]", unparsed("[A]")),
            ("[[ A ]]", unparsed("[[ A ]]")),
            ("[[a]]", unparsed("[[a]]")),
            ("Assistant A is better.", unparsed("Assistant A is better.")),
            ("", unparsed("")),
        ];
        for (reply, want) in cases {
            assert_eq!(parse_markers(reply), want, "{reply:?}");
        }
    }

    #[test]
    fn ratings_as_fastchat_reads_them() {
        let cases: [(&str, Option<f64>); 14] = [
            ("The answer is good. Rating: [[8]]", Some(8.0)),
            ("Rating: [[7.5]]", Some(7.5)),
            ("Rating: [[10.]]", Some(10.0)),
            // The first [[x]] wins, even the example the prompt gives.
            ("As in \"Rating: [[5]]\", I give [[9]]", Some(5.0)),
            // The backup pattern only when no [[x]] exists anywhere.
            ("[3] is a citation. Rating: [[6]]", Some(6.0)),
            ("Rating: [4]", Some(4.0)),
            ("Rating: [[4]", Some(4.0)),
            ("Out of range is kept: [[15]]", Some(15.0)),
            ("Rating: [[8/10]]", None),
            ("Rating: [[ 8 ]]", None),
            ("Rating: [[.5]]", None),
            ("Rating: 8", None),
            ("Rating: [[eight]]", None),
            ("Rating: [[-3]]", None),
        ];
        for (reply, want) in cases {
            let got = parse_rating(reply);
            match want {
                Some(x) => assert_eq!(got, Verdict::Rating(x), "{reply:?}"),
                None => assert_eq!(got, unparsed(reply), "{reply:?}"),
            }
        }
        // "[[8/10]]" has no [[x]] but does it have a [x]? No: "8/" is not followed by "]".
        assert_eq!(parse_rating("a [2.25] b"), Verdict::Rating(2.25));
        assert_eq!(parse_rating("é [[3]]"), Verdict::Rating(3.0));
    }

    #[test]
    fn alpaca_eval_labels_are_case_sensitive_first_words() {
        let cases = [
            ("m", Verdict::A),
            ("M", Verdict::B),
            (" M", Verdict::B),
            ("\"m\"", Verdict::A),
            ("**M**", Verdict::B),
            ("M\n\nBecause it is longer.", Verdict::B),
            ("Model M", unparsed("Model M")),
            ("MM", unparsed("MM")),
            ("", unparsed("")),
            ("The best model is m", unparsed("The best model is m")),
        ];
        for (reply, want) in cases {
            assert_eq!(parse_label(reply, "m", "M"), want, "{reply:?}");
        }
        let labels = Output::Labels { a: "m".into(), b: "M".into() };
        assert_eq!(parse("m", &labels), Verdict::A);
        assert_eq!(parse("[[C]]", &Output::Markers), Verdict::Tie);
        assert_eq!(parse("[[2]]", &Output::Rating), Verdict::Rating(2.0));
    }

    #[test]
    fn verdicts_serialise_for_the_cli() {
        let j = |v: &Verdict| serde_json::to_string(v).unwrap();
        assert_eq!(j(&Verdict::A), "\"a\"");
        assert_eq!(j(&Verdict::Rating(7.0)), "{\"rating\":7.0}");
        assert_eq!(j(&unparsed("x")), "{\"unparsed\":{\"raw\":\"x\"}}");
    }
}
