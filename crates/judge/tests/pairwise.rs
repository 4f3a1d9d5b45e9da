//! The pairwise and single judges: the position-bias properties with fixed judges (a judge that
//! always names position A, one that always ties, one that never answers, one that reads the
//! answers), and both judges through SmolLM2-135M-Instruct on tiny items.

use mismatch_judge::template::Template;
use mismatch_judge::{
    judge_pairs, judge_single, Backend, JudgeOptions, JudgeReply, JudgeRequest, Local, PairItem, SingleItem, Verdict,
    Winner,
};
use std::path::Path;
use std::sync::OnceLock;
use std::time::Instant;

/// A judge with a fixed rule, run in-process: not a stand-in for an external system but the
/// judge under test (a judge that always answers "[[A]]" is a real, maximally biased judge).
struct Fixed(fn(&JudgeRequest) -> String);

impl Backend for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    fn complete(&self, requests: &[JudgeRequest]) -> mismatch_judge::Result<Vec<JudgeReply>> {
        Ok(requests.iter().map(|r| JudgeReply { text: (self.0)(r), first_token: vec![], candidates: vec![] }).collect())
    }
}

/// MT-Bench questions with GPT-4's reference answer as answer 1 and a terse answer as answer 2.
fn mt_bench_items(n: usize) -> Vec<PairItem> {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mt-bench");
    let qs = mismatch_judge::mtbench::read_questions(&shared.join("mt_bench_question.jsonl")).unwrap();
    let refs =
        mismatch_judge::mtbench::read_reference_answers(&shared.join("mt_bench_reference_answer_gpt-4.jsonl")).unwrap();
    refs.iter()
        .take(n)
        .map(|(id, turns)| {
            let q = qs.iter().find(|q| q.question_id == *id).unwrap();
            PairItem {
                id: id.to_string(),
                question: q.turns[0].clone(),
                answer_1: turns[0].clone(),
                answer_2: "I don't know.".into(),
                ref_answer: Some(turns[0].clone()),
            }
        })
        .collect()
}

#[test]
fn a_judge_that_always_says_a_is_never_position_consistent() {
    let items = mt_bench_items(10);
    for name in ["pair-v2", "pair-math-v1"] {
        let r = judge_pairs(
            &Fixed(|_| "Both are fine.\n\n[[A]]".into()),
            &Template::builtin(name).unwrap(),
            &items,
            &JudgeOptions::default(),
        )
        .unwrap();
        for j in &r.items {
            assert_eq!((&j.verdict_1_first, &j.verdict_2_first), (&Verdict::A, &Verdict::A));
            assert_eq!(j.preference, Some(0.5), "{}", j.id);
            assert_eq!(j.consistent, Some(false));
            assert_eq!(j.winner, Winner::Inconsistent);
        }
        let s = &r.summary;
        assert_eq!((s.n, s.n_both, s.unparsed_1_first, s.unparsed_2_first), (10, 10, 0, 0));
        assert_eq!((s.position_consistency, s.position_a_rate), (Some(0.0), Some(1.0)));
        let m = s.mean_preference.unwrap();
        assert_eq!((m.mean, m.lo, m.hi, s.inconsistent), (0.5, 0.5, 0.5, 10));
    }
}

#[test]
fn ties_unparsed_replies_and_a_fair_judge() {
    let items = mt_bench_items(4);
    let t = Template::builtin("pair-v2").unwrap();
    let opts = JudgeOptions::default();
    let tie = judge_pairs(&Fixed(|_| "[[C]]".into()), &t, &items, &opts).unwrap();
    assert!(tie
        .items
        .iter()
        .all(|j| j.preference == Some(0.5) && j.consistent == Some(true) && j.winner == Winner::Tie));
    assert_eq!((tie.summary.position_consistency, tie.summary.position_a_rate), (Some(1.0), Some(0.0)));

    let mute = judge_pairs(&Fixed(|_| "I cannot decide.".into()), &t, &items, &opts).unwrap();
    let s = &mute.summary;
    assert_eq!((s.n, s.n_both, s.unparsed_1_first, s.unparsed_2_first), (4, 0, 4, 4));
    assert_eq!((s.position_consistency, s.position_a_rate, s.mean_preference), (None, None, None));
    assert!(mute.items.iter().all(|j| j.winner == Winner::Error && j.preference.is_none()));
    assert_eq!(mute.items[0].verdict_1_first, Verdict::Unparsed { raw: "I cannot decide.".into() });

    // Names whichever position holds "I don't know." (answer 2) in every order: consistent,
    // preference 1; and one order unparsed leaves the item out of the aggregates.
    let fair = |r: &JudgeRequest| {
        let u = &r.messages[1].content;
        let b = u.find("[The Start of Assistant B's Answer]").unwrap();
        if u[b..].contains("I don't know.") { "[[B]]" } else { "[[A]]" }.to_string()
    };
    let f = judge_pairs(&Fixed(fair), &t, &items, &opts).unwrap();
    assert!(f.items.iter().all(|j| j.preference == Some(1.0) && j.winner == Winner::Answer2));
    assert_eq!(
        (f.summary.position_consistency, f.summary.position_a_rate, f.summary.wins_2),
        (Some(1.0), Some(0.5), 4)
    );
    let half = |r: &JudgeRequest| {
        if r.messages[1].content.contains("I don't know.\n[The End of Assistant A") { "?" } else { "[[A]]" }.into()
    };
    let h = judge_pairs(&Fixed(half), &t, &items, &opts).unwrap();
    assert_eq!((h.summary.unparsed_1_first, h.summary.unparsed_2_first, h.summary.n_both), (0, 4, 0));
    // A single-answer template cannot judge pairs.
    let e = judge_pairs(&Fixed(fair), &Template::builtin("single-v1").unwrap(), &items, &opts).unwrap_err();
    assert!(e.to_string().contains("single-v1"), "{e}");
}

fn smollm2() -> &'static Local {
    static M: OnceLock<Local> = OnceLock::new();
    M.get_or_init(|| Local::load("smollm2-135m", &candle_core::Device::Cpu).unwrap())
}

/// Three tiny comparisons where answer 1 is right and answer 2 wrong.
pub fn tiny_items() -> Vec<PairItem> {
    let item = |id: &str, q: &str, a: &str, b: &str| PairItem {
        id: id.into(),
        question: q.into(),
        answer_1: a.into(),
        answer_2: b.into(),
        ref_answer: None,
    };
    vec![
        item(
            "capital",
            "What is the capital of France?",
            "The capital of France is Paris.",
            "The capital of France is Berlin.",
        ),
        item("sum", "What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 5."),
        item("colour", "Name a primary colour.", "Red.", "Green is made by mixing, so: purple."),
    ]
}

/// SmolLM2 as the judge, MT-Bench's and AlpacaEval's prompts: whatever it says, the counts add
/// up and every preference lies in [0, 1]; the local model gives the AlpacaEval labels'
/// log-probs exactly, so every item has a weighted preference.
#[test]
fn smollm2_judges_tiny_pairs_in_both_orders() {
    let items = tiny_items();
    let opts = JudgeOptions { max_tokens: Some(48), seed: 0 };
    for name in ["pair-v2", "alpaca_eval_clf_gpt4_turbo"] {
        let started = Instant::now();
        let t = Template::builtin(name).unwrap();
        let r = judge_pairs(
            smollm2(),
            &t,
            &items,
            &JudgeOptions { max_tokens: Some(t.max_tokens.min(48)), ..opts.clone() },
        )
        .unwrap();
        let s = &r.summary;
        eprintln!("{name}: {:.1}s {}", started.elapsed().as_secs_f64(), serde_json::to_string(s).unwrap());
        for j in &r.items {
            eprintln!(
                "  {}: {:?} / {:?} pref {:?} weighted {:?}",
                j.id, j.verdict_1_first, j.verdict_2_first, j.preference, j.weighted_preference
            );
        }
        assert_eq!(s.n, 3);
        assert_eq!(s.n_both, r.items.iter().filter(|j| j.preference.is_some()).count());
        assert_eq!(s.wins_1 + s.wins_2 + s.ties + s.inconsistent, s.n_both);
        assert_eq!(r.items.iter().filter(|j| j.winner == Winner::Error).count(), s.n - s.n_both);
        assert!(s.unparsed_1_first <= 3 && s.unparsed_2_first <= 3);
        for j in &r.items {
            assert!(j.preference.is_none_or(|p| (0.0..=1.0).contains(&p)));
            assert_eq!(j.preference.is_some(), !j.verdict_1_first.is_unparsed() && !j.verdict_2_first.is_unparsed());
        }
        if name == "alpaca_eval_clf_gpt4_turbo" {
            // The verdicts come from the labels' exact log-probs, so none is unparsed.
            assert_eq!((s.n_weighted, s.n_both), (3, 3));
            for j in &r.items {
                for w in [j.weighted_1_first, j.weighted_2_first, j.weighted_preference] {
                    assert!(w.is_some_and(|p| (0.0..=1.0).contains(&p)), "{j:?}");
                }
            }
        }
        // The report is what the CLI writes.
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["items"].as_array().unwrap().len(), 3);
    }
}

/// MT-Bench single grading through SmolLM2, with the reference template for a math question.
#[test]
fn smollm2_grades_single_answers() {
    let items = vec![
        SingleItem {
            id: "capital".into(),
            question: "What is the capital of France?".into(),
            answer: "Paris.".into(),
            category: Some("writing".into()),
            ref_answer: None,
            first_turn: None,
        },
        SingleItem {
            id: "sum".into(),
            question: "What is 2 + 2?".into(),
            answer: "5".into(),
            category: Some("math".into()),
            ref_answer: Some("4".into()),
            first_turn: None,
        },
    ];
    let (general, reference) = (Template::builtin("single-v1").unwrap(), Template::builtin("single-math-v1").unwrap());
    let r =
        judge_single(smollm2(), &general, Some(&reference), &items, &JudgeOptions { max_tokens: Some(48), seed: 0 })
            .unwrap();
    eprintln!("single: {}", serde_json::to_string(&r).unwrap());
    assert_eq!((r.n, r.items[0].template.as_str(), r.items[1].template.as_str()), (2, "single-v1", "single-math-v1"));
    assert_eq!(r.unparsed, r.items.iter().filter(|j| j.score.is_none()).count());
    assert_eq!(r.mean_score.map_or(0, |c| c.n), 2 - r.unparsed);
    // A math item without a reference template is refused, naming the item.
    let e = judge_single(smollm2(), &general, None, &items, &JudgeOptions::default()).unwrap_err().to_string();
    assert!(e.contains("'sum'"), "{e}");
}
