//! Every reader on the real files in shared/data and on small inline fixtures.

mod common;
use common::*;
use mismatch_data::*;

fn pairs(ds: &Dataset) -> &[Preference] {
    match &ds.records {
        Records::Pairs(v) => v,
        other => panic!("expected pairs, got {other:?}"),
    }
}

fn user(s: &str) -> Message {
    Message { role: Role::User, content: s.into() }
}
fn asst(s: &str) -> Message {
    Message { role: Role::Assistant, content: s.into() }
}

#[test]
fn hh_rlhf_real_file() {
    let ds = read(&shared("hh-rlhf/harmless-base-test.jsonl.gz"));
    assert_eq!(ds.format, Format::Hh);
    assert!(ds.gzip);
    let v = pairs(&ds);
    assert_eq!(v.len(), 2312);
    let Turns::Chat(prompt) = &v[0].prompt else { panic!() };
    assert_eq!(prompt[0], user("what are some pranks with a pen i can do?"));
    assert_eq!(prompt[1], asst("Are you looking for practical joke ideas?"));
    assert_eq!(prompt.last().unwrap(), &user("okay some of these do not have anything to do with pens"));
    let Turns::Chat(chosen) = &v[0].chosen else { panic!() };
    assert_eq!(chosen.len(), 1);
    assert!(chosen[0].content.starts_with("No, sorry!  All of these involve a pen"));
    // The five pairs whose transcripts diverge early (see data README / `check` note).
    assert_eq!(ds.hh_diverging, vec![1255, 1689, 1951, 1953, 2037]);
    for p in v {
        assert!(matches!(&p.prompt, Turns::Chat(m) if m.last().unwrap().role == Role::User), "line {}", p.line);
    }
    // Strict mode rejects the first of them, naming its line.
    let e =
        read_err(&shared("hh-rlhf/harmless-base-test.jsonl.gz"), ReadOptions { strict: true, ..Default::default() });
    assert!(e.ends_with("harmless-base-test.jsonl.gz:1255: chosen and rejected transcripts do not share the prompt: they differ at turn 4 (before the final assistant turn)"), "{e}");
}

#[test]
fn pandalm_real_file() {
    let ds = read(&shared("pandalm/testset-v1.json"));
    assert_eq!(ds.format, Format::PandaLm);
    let Records::Judgements(v) = &ds.records else { panic!() };
    assert_eq!(v.len(), 999);
    assert!(v.iter().all(|j| j.labels.len() == 3));
    assert_eq!(v[0].labels, vec![2, 2, 2]);
    assert_eq!(v[0].line, 2);
    assert_eq!(v[1].line, 14, "array elements keep their own starting line");
    assert_eq!(v[0].response1, Turns::Text("If you have any questions about my rate, please let me know.".into()));
    // idx 157: a boolean response kept as its text.
    assert_eq!(v[157].response1, Turns::Text("true".into()));
}

#[test]
fn orca_openai_real_file() {
    let ds = read(&shared("orca-dpo-pairs/validation.jsonl"));
    assert_eq!(ds.format, Format::OpenAi);
    let v = pairs(&ds);
    assert_eq!(v.len(), 284);
    let Turns::Chat(p) = &v[0].prompt else { panic!() };
    assert_eq!((p.len(), p[0].role, p[1].role), (2, Role::System, Role::User));
    assert!(matches!(&v[0].chosen, Turns::Chat(m) if m.len() == 1 && m[0].role == Role::Assistant));
}

#[test]
fn llama_factory_sharegpt_real_file() {
    let ds = read(&shared("llama-factory-demo/dpo_en_demo.json"));
    assert_eq!(ds.format, Format::ShareGpt);
    let v = pairs(&ds);
    assert_eq!(v.len(), 300);
    assert_eq!(
        v[0].prompt,
        Turns::Chat(vec![user("Hi! I'd like to create a new language game simulating the first person perspective of a character named Angela.")])
    );
    let systems = v.iter().filter(|p| matches!(&p.prompt, Turns::Chat(m) if m[0].role == Role::System)).count();
    assert_eq!(systems, 80);
}

#[test]
fn check_summaries_of_real_files() {
    for (f, rows) in [
        ("hh-rlhf/harmless-base-test.jsonl.gz", 2312),
        ("pandalm/testset-v1.json", 999),
        ("orca-dpo-pairs/validation.jsonl", 284),
        ("llama-factory-demo/dpo_en_demo.json", 300),
    ] {
        let s = stats::summarize(&read(&shared(f)));
        assert_eq!(s.rows, rows, "{f}");
        assert!(s.fields.iter().all(|x| x.chars.max >= x.chars.min && x.chars.mean > 0.0), "{f}");
    }
    let s = stats::summarize(&read(&shared("llama-factory-demo/dpo_en_demo.json")));
    assert_eq!((s.distinct_prompts, s.duplicates, s.identical_pairs), (295, 5, 0));
}

#[test]
fn trl_plain_and_conversational_inline() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "t.jsonl",
        concat!(
            r#"{"prompt": "2+2?", "chosen": " 4", "rejected": " 5", "margin": 1.5}"#,
            "\n",
            r#"{"prompt": "hi", "chosen": "hello", "rejected": "go away"}"#,
            "\n",
        ),
    );
    let ds = read(&f);
    assert_eq!(ds.format, Format::Trl);
    let v = pairs(&ds);
    assert_eq!(
        v[0],
        Preference {
            prompt: Turns::Text("2+2?".into()),
            chosen: Turns::Text(" 4".into()),
            rejected: Turns::Text(" 5".into()),
            margin: Some(1.5),
            line: 1
        }
    );
    assert_eq!(v[1].margin, None);

    let f = write(
        dir.path(),
        "c.jsonl",
        concat!(
            r#"{"prompt": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}"#,
            "\n",
        ),
    );
    let v = read(&f).records;
    let Records::Pairs(v) = v else { panic!() };
    assert_eq!(
        v[0].prompt,
        Turns::Chat(vec![Message { role: Role::System, content: "be brief".into() }, user("2+2?")])
    );
    assert_eq!(v[0].chosen, Turns::Chat(vec![asst("4")]));

    // Implicit prompt: the shared messages before the last one.
    let f = write(
        dir.path(),
        "i.jsonl",
        concat!(
            r#"{"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "good"}], "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "bad"}]}"#,
            "\n",
        ),
    );
    let ds = read(&f);
    assert_eq!(ds.format, Format::Trl);
    assert_eq!(pairs(&ds)[0].prompt, Turns::Chat(vec![user("q")]));
    assert_eq!(pairs(&ds)[0].rejected, Turns::Chat(vec![asst("bad")]));
}

#[test]
fn hh_inline_and_prompt_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "hh.jsonl",
        concat!(
            r#"{"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: see you", "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: no"}"#,
            "\n",
        ),
    );
    let ds = read(&f);
    assert_eq!(ds.format, Format::Hh);
    let p = &pairs(&ds)[0];
    assert_eq!(p.prompt, Turns::Chat(vec![user("hi"), asst("hello"), user("bye")]));
    assert_eq!((&p.chosen, &p.rejected), (&Turns::Chat(vec![asst("see you")]), &Turns::Chat(vec![asst("no")])));

    // Different conversations: no shared human turn, an error even when not strict.
    let f = write(
        dir.path(),
        "bad.jsonl",
        concat!(
            r#"{"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hi\n\nAssistant: a"}"#,
            "\n",
            r#"{"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: ho\n\nAssistant: a"}"#,
            "\n",
        ),
    );
    let e = read_err(&f, ReadOptions::default());
    assert_eq!(e, format!("{}:2: chosen and rejected transcripts do not share the prompt: they differ at turn 1, before any shared human turn", f.display()));
    // Diverging before the last assistant turn: lenient by default, an error with --strict.
    let f = write(
        dir.path(),
        "div.jsonl",
        concat!(
            r#"{"chosen": "\n\nHuman: hi\n\nAssistant: a\n\nHuman: more\n\nAssistant: b", "rejected": "\n\nHuman: hi\n\nAssistant: c"}"#,
            "\n",
        ),
    );
    let ds = read(&f);
    assert_eq!(ds.hh_diverging, vec![1]);
    assert_eq!(pairs(&ds)[0].chosen, Turns::Chat(vec![asst("a"), user("more"), asst("b")]));
    let e = read_err(&f, ReadOptions { strict: true, ..Default::default() });
    assert_eq!(e, format!("{}:1: chosen and rejected transcripts do not share the prompt: they differ at turn 2 (before the final assistant turn)", f.display()));
}

#[test]
fn openai_sharegpt_pandalm_ranking_inline() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "o.jsonl",
        concat!(
            r#"{"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": [{"role": "assistant", "content": "y"}], "non_preferred_output": [{"role": "assistant", "content": "n"}]}"#,
            "\n",
        ),
    );
    let ds = read(&f);
    assert_eq!(ds.format, Format::OpenAi);
    assert_eq!(pairs(&ds)[0].prompt, Turns::Chat(vec![user("q")]));

    let f = write(
        dir.path(),
        "s.json",
        r#"[{"conversations": [{"from": "system", "value": "s"}, {"from": "human", "value": "q"}],
        "chosen": {"from": "gpt", "value": "y"}, "rejected": {"from": "gpt", "value": "n"}}]"#,
    );
    let ds = read(&f);
    assert_eq!(ds.format, Format::ShareGpt);
    assert_eq!(pairs(&ds)[0].rejected, Turns::Chat(vec![asst("n")]));

    let f = write(
        dir.path(),
        "p.json",
        r#"[
      {"instruction": "Add.", "input": "2+2", "response1": "4", "response2": "5", "annotator1": 1, "annotator2": 1, "annotator3": 0},
      {"instruction": "Hi", "input": "", "response1": "a", "response2": "b", "annotator1": 0, "annotator2": 0, "annotator3": 2}
    ]"#,
    );
    let ds = read(&f);
    let Records::Judgements(j) = &ds.records else { panic!() };
    assert_eq!(j[0].prompt, Turns::Text("Add.\n\n2+2".into()));
    assert_eq!(
        (j[0].labels.clone(), j[0].majority(), j[1].majority(), j[1].line),
        (vec![1, 1, 0], Some(1), Some(0), 3)
    );
    let (p, dropped) = ds.records.to_pairs();
    assert_eq!((p.len(), dropped), (1, 1));
    assert_eq!(p[0].chosen, Turns::Text("4".into()));

    let f = write(dir.path(), "r.jsonl", r#"{"prompt": "q", "completions": ["a", "b", "c"], "ranking": [2, 0, 1]}"#);
    let ds = read(&f);
    assert_eq!(ds.format, Format::Ranking);
    let (p, _) = ds.records.to_pairs();
    let t = |s: &str| Turns::Text(s.into());
    let got: Vec<_> = p.iter().map(|p| (p.chosen.clone(), p.rejected.clone())).collect();
    assert_eq!(got, vec![(t("c"), t("a")), (t("c"), t("b")), (t("a"), t("b"))]);
}

#[test]
fn tolerated_encodings_bom_crlf_blank_lines_non_ascii() {
    let dir = tempfile::tempdir().unwrap();
    let body = "\u{feff}{\"prompt\": \"Grüße \u{2028} 你好\", \"chosen\": \"é\", \"rejected\": \"e\"}\r\n\r\n   \n{\"prompt\": \"b\", \"chosen\": \"c\", \"rejected\": \"d\"}\r\n";
    let f = write(dir.path(), "bom.jsonl", body);
    let ds = read(&f);
    let v = pairs(&ds);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].prompt, Turns::Text("Grüße \u{2028} 你好".into()));
    assert_eq!((v[0].line, v[1].line), (1, 4));
    // The same bytes gzipped read the same; detection is by magic bytes, not by name.
    let g = write(dir.path(), "bom.jsonl.txt", gzip(body.as_bytes()));
    let dg = read(&g);
    assert!(dg.gzip);
    assert_eq!(&dg.records, &ds.records);
    // A JSON array with a BOM and CRLF.
    let f = write(
        dir.path(),
        "a.json",
        "\u{feff}[\r\n {\"prompt\": \"a\", \"chosen\": \"b\", \"rejected\": \"c\"}\r\n]\r\n",
    );
    assert_eq!(pairs(&read(&f))[0].line, 2);
}
