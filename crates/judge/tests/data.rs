//! The judge's pieces on real released data: AlpacaEval 2's weighted preference against its own
//! annotations, the shipped templates against `../shared/data`, MT-Bench's files.

use mismatch_judge::template::{Fill, Template};
use mismatch_judge::{mtbench, preference_b, TokenLogprob};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data").join(rel)
}

/// Every released annotation of weighted_alpaca_eval_gpt4_turbo (alpaca-7b vs
/// gpt4_1106_preview) that carries log-probs: `preference − 1` is `p_B` of the first token's
/// top-5 alternatives in the order the judge saw, which AlpacaEval randomises, so it is `p_B`
/// or `1 − p_B`. The file rounds preferences to 10 decimals.
#[test]
fn weighted_preference_reproduces_alpaca_evals_annotations() {
    let rows: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(shared("alpaca-eval/annotations/alpaca-7b.json")).unwrap())
            .unwrap();
    let (mut checked, mut swapped, mut worst) = (0, 0, 0.0f64);
    for r in &rows {
        let Some(top) = r["raw_completion"]["logprobs"]["content"][0]["top_logprobs"].as_array() else {
            continue;
        };
        let top: Vec<TokenLogprob> = top
            .iter()
            .map(|t| TokenLogprob {
                token: t["token"].as_str().unwrap().into(),
                logprob: t["logprob"].as_f64().unwrap(),
            })
            .collect();
        let p = preference_b(&top, "m", "M").expect("m or M is among the top 5 in every annotation");
        let got = r["preference"].as_f64().unwrap() - 1.0;
        let (direct, flipped) = ((got - p).abs(), (got - (1.0 - p)).abs());
        swapped += (flipped < direct) as usize;
        worst = worst.max(direct.min(flipped));
        checked += 1;
    }
    assert_eq!(checked, 802, "805 annotations, 3 without a raw completion");
    assert!(worst < 1e-9, "largest difference {worst:e}");
    // Shown in a random order: roughly half the items were swapped.
    assert!((300..500).contains(&swapped), "{swapped}");
}

/// The templates shipped in `templates/` are the released text: the MT-Bench prompts as in
/// FastChat's judge_prompts.jsonl and the AlpacaEval prompt byte for byte.
#[test]
fn shipped_templates_are_the_released_ones() {
    let shipped = |f: &str| std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").join(f)).unwrap();
    assert_eq!(shipped("mt_bench_judge_prompts.jsonl"), std::fs::read(shared("mt-bench/judge_prompts.jsonl")).unwrap());
    assert_eq!(
        shipped("alpaca_eval_clf_gpt4_turbo.txt"),
        std::fs::read(shared("alpaca-eval/judge_prompts/alpaca_eval_clf_gpt4_turbo__alpaca_eval_clf.txt")).unwrap()
    );
    for name in Template::BUILTIN {
        Template::builtin(name).unwrap();
    }
}

/// MT-Bench's questions and GPT-4 references: 80 questions, 10 per category, and a reference
/// for each of the 30 math, reasoning and coding questions; a real question renders into
/// single-math-v1 with its reference.
#[test]
fn mt_bench_files_are_read_whole() {
    let qs = mtbench::read_questions(&shared("mt-bench/mt_bench_question.jsonl")).unwrap();
    let refs = mtbench::read_reference_answers(&shared("mt-bench/mt_bench_reference_answer_gpt-4.jsonl")).unwrap();
    assert_eq!(qs.len(), 80);
    assert!(qs.iter().all(|q| q.turns.len() == 2));
    let needing: Vec<u64> =
        qs.iter().filter(|q| mismatch_judge::needs_reference(Some(&q.category))).map(|q| q.question_id).collect();
    assert_eq!(needing.len(), 30);
    assert_eq!(refs.keys().copied().collect::<Vec<_>>(), needing);
    let q = qs.iter().find(|q| q.question_id == needing[0]).unwrap();
    let t = Template::builtin("single-math-v1").unwrap();
    let m = t.render(&Fill::single(&q.turns[0], "42").with_reference(Some(&refs[&q.question_id][0]))).unwrap();
    assert!(m[1].content.contains(&q.turns[0]) && m[1].content.contains(&refs[&q.question_id][0]));
}

/// Bad lines name the file, the line and the field.
#[test]
fn bad_mt_bench_lines_say_where() {
    let dir = tempfile::tempdir().unwrap();
    let real = std::fs::read_to_string(shared("mt-bench/mt_bench_question.jsonl")).unwrap();
    let mut lines: Vec<String> = real.split('\n').map(str::to_string).collect();
    lines[2] = lines[2].replacen("\"category\": \"writing\"", "\"category\": 7", 1);
    let p = dir.path().join("q.jsonl");
    std::fs::write(&p, lines.join("\n")).unwrap();
    let e = mtbench::read_questions(&p).unwrap_err().to_string();
    assert!(e.contains("q.jsonl:3") && e.contains("'category'"), "{e}");
    std::fs::write(&p, &real[..real.len() / 2]).unwrap();
    let e = mtbench::read_questions(&p).unwrap_err().to_string();
    assert!(e.contains("q.jsonl:") && e.contains("not JSON"), "{e}");
    let e = mtbench::read_reference_answers(&dir.path().join("none.jsonl")).unwrap_err().to_string();
    assert!(e.contains("none.jsonl"), "{e}");
}
