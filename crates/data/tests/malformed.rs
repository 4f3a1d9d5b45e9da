//! One test per class of malformed input: each asserts the exact `FILE:LINE: message` (or `FILE: message`).

mod common;
use common::*;
use mismatch_data::*;
use std::path::PathBuf;

const GOOD: &str = r#"{"prompt": "p", "chosen": "c", "rejected": "r"}"#;

/// Writes `lines` (joined by `\n`) and returns the file and its error message.
fn fails(name: &str, body: impl AsRef<[u8]>) -> (PathBuf, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let f = write(dir.path(), name, body);
    let e = read_err(&f, ReadOptions::default());
    (f, e, dir)
}

#[test]
fn truncated_jsonl_line() {
    let (f, e, _d) = fails("t.jsonl", format!("{GOOD}\n\n{}\n", &GOOD[..30]));
    assert_eq!(
        e,
        format!(
            "{}:3: truncated record: EOF while parsing a value (JSONL needs one complete record per line)",
            f.display()
        )
    );
}

#[test]
fn truncated_json_array() {
    let (f, e, _d) = fails("t.json", format!("[\n{GOOD},\n{}", &GOOD[..30]));
    assert_eq!(e, format!("{}:3: truncated JSON array: the element starting at line 3 is not closed", f.display()));
}

#[test]
fn missing_field() {
    let (f, e, _d) = fails("m.jsonl", format!("{GOOD}\n{{\"prompt\": \"p\", \"chosen\": \"c\"}}\n"));
    assert_eq!(e, format!("{}:2: missing field `rejected`", f.display()));
    let (f, e, _d) = fails("m.jsonl", r#"{"input": {"msgs": []}, "preferred_output": [], "non_preferred_output": []}"#);
    assert_eq!(e, format!("{}:1: missing field `input.messages`", f.display()));
    let (f, e, _d) = fails(
        "m.jsonl",
        r#"{"input": {"messages": [{"role": "user"}]}, "preferred_output": [], "non_preferred_output": []}"#,
    );
    assert_eq!(e, format!("{}:1: missing field `input.messages[0].content`", f.display()));
}

#[test]
fn wrongly_typed_fields() {
    let (f, e, _d) = fails("w.jsonl", format!("{GOOD}\n{{\"prompt\": \"p\", \"chosen\": 5, \"rejected\": \"r\"}}\n"));
    assert_eq!(
        e,
        format!("{}:2: field `chosen`: expected a string or a list of messages, found a number", f.display())
    );
    let (f, e, _d) = fails(
        "w.jsonl",
        format!("{GOOD}\n{{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"margin\": \"big\"}}"),
    );
    assert_eq!(e, format!("{}:2: field `margin`: expected a number, found a string", f.display()));
    let (f, e, _d) = fails("w.jsonl", format!("{GOOD}\n[1, 2]\n"));
    assert_eq!(e, format!("{}:2: expected a JSON object, found an array", f.display()));
    // In a JSON array the line is that of the element.
    let (f, e, _d) = fails(
        "w.json",
        "[\n  {\"instruction\": \"i\", \"input\": \"\", \"response1\": \"a\", \"response2\": \"b\", \"annotator1\": 1, \"annotator2\": 1},\n  {\"instruction\": \"i\",\n   \"response1\": \"a\", \"response2\": \"b\", \"annotator1\": 1, \"annotator2\": 3}\n]",
    );
    assert_eq!(e, format!("{}:3: field `annotator2`: expected 0 (tie), 1 or 2, found 3", f.display()));
}

#[test]
fn invalid_json_inside_array_element_reports_its_line() {
    let (f, e, _d) = fails("j.json", format!("[\n{GOOD},\n{{\"prompt\": \"p\",\n \"chosen\": x}}\n]"));
    assert_eq!(e, format!("{}:4: invalid JSON at column 12: expected value", f.display()));
}

#[test]
fn invalid_utf8() {
    let mut body = format!("{GOOD}\n{GOOD}\n").into_bytes();
    body.extend_from_slice(b"{\"prompt\": \"\xff\xfe\", \"chosen\": \"c\", \"rejected\": \"r\"}\n");
    let (f, e, _d) = fails("u.jsonl", &body);
    assert_eq!(e, format!("{}:3: invalid UTF-8 at byte 13 of the line", f.display()));
    let mut arr = format!("[\n{GOOD},\n").into_bytes();
    arr.extend_from_slice(b"{\"prompt\": \"\xc3\", \"chosen\": \"c\", \"rejected\": \"r\"}\n]");
    let (f, e, _d) = fails("u.json", &arr);
    assert_eq!(e, format!("{}:3: invalid UTF-8", f.display()));
}

#[test]
fn empty_files() {
    let (f, e, _d) = fails("e.jsonl", "");
    assert_eq!(e, format!("{}: empty file", f.display()));
    let (f, e, _d) = fails("e.jsonl", " \n\r\n\n");
    assert_eq!(e, format!("{}: empty file (only whitespace)", f.display()));
    let (f, e, _d) = fails("e.json", "[ ]\n");
    assert_eq!(e, format!("{}: no records (the file holds only whitespace or an empty array)", f.display()));
    let (f, e, _d) = fails("e.jsonl.gz", gzip(b""));
    assert_eq!(e, format!("{}: empty file (gzip stream decompresses to nothing)", f.display()));
}

#[test]
fn corrupt_gzip() {
    let good = gzip(format!("{GOOD}\n{GOOD}\n").as_bytes());
    let (f, e, _d) = fails("c.jsonl.gz", &good[..good.len() / 2]);
    assert!(e.starts_with(&format!("{}: corrupt gzip data: ", f.display())), "{e}");
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 6] ^= 0xff; // CRC32 of the payload
    let (f, e, _d) = fails("c.jsonl.gz", &bad);
    assert!(e.starts_with(&format!("{}: corrupt gzip data: ", f.display())), "{e}");
}

#[test]
fn unknown_roles() {
    let (f, e, _d) = fails(
        "r.jsonl",
        r#"{"prompt": [{"role": "user", "content": "q"}, {"role": "bot", "content": "x"}], "chosen": [], "rejected": []}"#,
    );
    assert_eq!(
        e,
        format!("{}:1: field `prompt[1].role`: unknown role \"bot\" (expected system, user, assistant)", f.display())
    );
    let (f, e, _d) = fails(
        "r.json",
        "[{\"conversations\": [{\"from\": \"human\", \"value\": \"q\"}], \"chosen\": {\"from\": \"observation\", \"value\": \"y\"}, \"rejected\": {\"from\": \"gpt\", \"value\": \"n\"}}]",
    );
    assert_eq!(
        e,
        format!("{}:1: field `chosen.from`: unknown role \"observation\" (expected human, gpt, system)", f.display())
    );
}

#[test]
fn nan_and_infinite_margins() {
    let (f, e, _d) = fails(
        "n.jsonl",
        format!("{GOOD}\n{{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"margin\": NaN}}\n"),
    );
    assert_eq!(e, format!("{}:2: field `margin`: NaN is not a number in JSON (write a finite number)", f.display()));
    let (f, e, _d) =
        fails("n.jsonl", "{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"margin\": -Infinity}");
    assert_eq!(
        e,
        format!("{}:1: field `margin`: -Infinity is not a number in JSON (write a finite number)", f.display())
    );
    // 1e999 overflows f64: serde_json reports it out of range.
    let (f, e, _d) = fails("n.jsonl", "{\"prompt\": \"p\", \"chosen\": \"c\", \"rejected\": \"r\", \"margin\": 1e999}");
    assert!(
        e.starts_with(&format!("{}:1: invalid JSON at column ", f.display())) && e.ends_with("number out of range"),
        "{e}"
    );
}

#[test]
fn out_of_range_and_duplicate_ranking_indices() {
    let (f, e, _d) =
        fails("k.jsonl", "{\"prompt\": \"q\", \"completions\": [\"a\", \"b\", \"c\"], \"ranking\": [0, 3, 1]}");
    assert_eq!(e, format!("{}:1: field `ranking[1]`: index 3 is out of range for 3 completions (0..2)", f.display()));
    let (f, e, _d) = fails("k.jsonl", "{\"prompt\": \"q\", \"completions\": [\"a\", \"b\"], \"ranking\": [-1, 0]}");
    assert_eq!(e, format!("{}:1: field `ranking[0]`: index -1 is out of range for 2 completions (0..1)", f.display()));
    let (f, e, _d) = fails("k.jsonl", "{\"prompt\": \"q\", \"completions\": [\"a\", \"b\"], \"ranking\": [1, 1]}");
    assert_eq!(e, format!("{}:1: field `ranking[1]`: index 1 appears twice", f.display()));
    let (f, e, _d) = fails("k.jsonl", "{\"prompt\": \"q\", \"completions\": [\"a\", \"b\"], \"ranking\": [1]}");
    assert_eq!(
        e,
        format!(
            "{}:1: field `ranking`: has 1 entries but there are 2 completions (list every index once, best first)",
            f.display()
        )
    );
}

#[test]
fn pathological_nesting_is_an_error_not_a_crash() {
    let deep = |d: usize| {
        format!("{{\"prompt\": {}\"p\"{}, \"chosen\": \"c\", \"rejected\": \"r\"}}", "[".repeat(d), "]".repeat(d))
    };
    let (f, e, _d) = fails("d.jsonl", format!("{GOOD}\n{}\n", deep(1_000_000)));
    assert_eq!(e, format!("{}:2: nesting deeper than 64 levels", f.display()));
    let (f, e, _d) = fails("d.json", format!("[\n{GOOD},\n{}\n]", deep(1_000_000)));
    assert_eq!(e, format!("{}:3: nesting deeper than 64 levels", f.display()));
    // Within the limit, the type error names the field.
    let (f, e, _d) = fails("d.jsonl", deep(60));
    assert_eq!(e, format!("{}:1: field `prompt[0]`: expected a message object, found an array", f.display()));
}

#[test]
fn undetectable_format_and_trailing_garbage() {
    let (f, e, _d) = fails("x.jsonl", "{\"question\": \"q\", \"answer\": \"a\"}");
    assert!(
        e.starts_with(&format!("{}:1: cannot detect the format from the fields {{`answer`, `question`}}", f.display())),
        "{e}"
    );
    let (f, e, _d) = fails("x.json", format!("[{GOOD}]\n{GOOD}"));
    assert_eq!(e, format!("{}:2: unexpected content after the closing `]` of the JSON array", f.display()));
    let (f, e, _d) = fails("x.json", format!("[{GOOD},\n]"));
    assert_eq!(e, format!("{}:2: empty element in JSON array (stray comma?)", f.display()));
}

#[test]
fn missing_file() {
    let e = read_err(std::path::Path::new("/nonexistent/prefs.jsonl"), ReadOptions::default());
    assert!(e.starts_with("/nonexistent/prefs.jsonl: cannot read: "), "{e}");
}
