//! `mismatch eval mtbench`: MT-Bench single-answer grading (Zheng et al. 2023) — each of the 80
//! two-turn questions graded 1–10 per turn by a judge, the second turn with the conversation
//! (`*-multi-turn` templates), math, reasoning and coding against GPT-4's reference answers;
//! scores per category and per turn with CIs.

use super::io::{records, OutDir};
use super::judging::JudgeArgs;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use mismatch_eval::stats::{mean_ci, Ci};
use mismatch_judge::mtbench::{read_questions, read_reference_answers, Question};
use mismatch_judge::{judge_single, needs_reference, JudgeOptions, SingleItem, SingleJudgement, Template, Turn};
use mismatch_models::ChatMessage;
use mismatch_report::{BarChart, Bars, Page};
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// Items graded per judge call, between progress-bar updates.
const CHUNK: usize = 4;

#[derive(Args)]
pub struct MtBenchArgs {
    /// MT-Bench's `question.jsonl` (`question_id`, `category`, `turns`).
    #[arg(long)]
    pub questions: PathBuf,
    /// GPT-4's reference answers (`reference_answer/gpt-4.jsonl`), for math, reasoning, coding.
    #[arg(long)]
    pub references: Option<PathBuf>,
    /// The answers to grade, FastChat's `model_answer` JSONL (`question_id`, `model_id`,
    /// `choices[0].turns`).
    #[arg(long, conflicts_with = "model", required_unless_present = "model")]
    pub answers: Option<PathBuf>,
    /// Generate the answers instead (a local causal LM or `openai:URL#MODEL`), both turns, greedy;
    /// they are written to answers.jsonl.
    #[arg(long)]
    pub model: Option<String>,
    /// Tokens per answer (with --model).
    #[arg(long, default_value_t = 1024)]
    pub max_new_tokens: usize,
    /// The judge: a local causal LM or `openai:URL#MODEL`.
    #[arg(long)]
    pub judge: String,
    /// Only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub judging: JudgeArgs,
    /// Output directory: mtbench.json, mtbench.html, judgements.jsonl (and answers.jsonl).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Serialize)]
struct Group {
    name: String,
    /// Mean score (1–10) with a 95% bootstrap CI over the graded answers; `n` graded.
    score: Option<Ci>,
    unparsed: usize,
}

#[derive(Serialize)]
struct Summary {
    model: String,
    judge: String,
    questions: usize,
    overall: Group,
    turn_1: Group,
    turn_2: Group,
    /// Per category, both turns pooled, in MT-Bench's order of first appearance.
    categories: Vec<Group>,
}

pub fn run(a: MtBenchArgs) -> Result<()> {
    let mut questions = read_questions(&a.questions)?;
    if let Some(n) = a.limit {
        questions.truncate(n);
    }
    if questions.iter().any(|q| q.turns.len() != 2) {
        bail!("{}: every MT-Bench question has two turns", a.questions.display());
    }
    let refs = match &a.references {
        Some(p) => read_reference_answers(p)?,
        None => BTreeMap::new(),
    };
    if let Some(q) = questions.iter().find(|q| needs_reference(Some(&q.category)) && !refs.contains_key(&q.question_id))
    {
        bail!(
            "question {} ({}) is graded against a reference answer: give --references (MT-Bench's reference_answer/gpt-4.jsonl)",
            q.question_id,
            q.category
        );
    }
    let (model, answers) = match (&a.answers, &a.model) {
        (Some(path), _) => read_answers(path, &questions)?,
        (None, Some(spec)) => (spec.clone(), generate(spec, &a, &questions)?),
        (None, None) => bail!("give --answers FILE or --model SPEC"),
    };
    let out = OutDir::create(&a.out)?;
    if a.model.is_some() {
        let rows: Vec<serde_json::Value> = questions
            .iter()
            .map(|q| json!({"question_id": q.question_id, "model_id": model, "choices": [{"index": 0, "turns": answers[&q.question_id]}]}))
            .collect();
        eprintln!("wrote {}", out.jsonl("answers.jsonl", &rows)?.display());
    }
    let judge = mismatch_judge::from_spec(&a.judge, &mismatch_models::device(&a.judging.device)?, &a.judging.endpoint)?;
    let opts = JudgeOptions { max_tokens: a.judging.judge_max_tokens, seed: a.seed };
    let t1 = (Template::builtin("single-v1")?, Template::builtin("single-math-v1")?);
    let t2 = (Template::builtin("single-v1-multi-turn")?, Template::builtin("single-math-v1-multi-turn")?);
    let mut items = Vec::with_capacity(2 * questions.len());
    for q in &questions {
        let r = refs.get(&q.question_id);
        let ans = &answers[&q.question_id];
        let category = Some(q.category.clone());
        items.push((
            1,
            SingleItem {
                id: format!("{}/1", q.question_id),
                question: q.turns[0].clone(),
                answer: ans[0].clone(),
                category: category.clone(),
                ref_answer: r.and_then(|r| r.first().cloned()),
                first_turn: None,
            },
        ));
        items.push((
            2,
            SingleItem {
                id: format!("{}/2", q.question_id),
                question: q.turns[1].clone(),
                answer: ans[1].clone(),
                category,
                ref_answer: r.and_then(|r| r.get(1).cloned()),
                first_turn: Some(Turn {
                    question: q.turns[0].clone(),
                    answer: ans[0].clone(),
                    ref_answer: r.and_then(|r| r.first().cloned()),
                }),
            },
        ));
    }
    let bar = indicatif::ProgressBar::new(items.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("grading {bar:30} {pos}/{len} answers, {per_sec}, eta {eta}")
            .expect("valid template"),
    );
    let mut graded: Vec<(usize, String, SingleJudgement)> = Vec::with_capacity(items.len());
    for turn in [1, 2] {
        let (general, reference) = if turn == 1 { &t1 } else { &t2 };
        let these: Vec<&(usize, SingleItem)> = items.iter().filter(|(t, _)| *t == turn).collect();
        for chunk in these.chunks(CHUNK) {
            let batch: Vec<SingleItem> = chunk.iter().map(|(_, it)| it.clone()).collect();
            let r = judge_single(judge.as_ref(), general, Some(reference), &batch, &opts)?;
            for (it, j) in batch.iter().zip(r.items) {
                graded.push((turn, it.category.clone().unwrap_or_default(), j));
            }
            bar.inc(chunk.len() as u64);
        }
    }
    bar.finish_and_clear();
    let group = |name: &str, keep: &dyn Fn(usize, &str) -> bool| {
        let js: Vec<&SingleJudgement> = graded.iter().filter(|(t, c, _)| keep(*t, c)).map(|(_, _, j)| j).collect();
        let scores: Vec<f64> = js.iter().filter_map(|j| j.score).collect();
        Group {
            name: name.to_string(),
            score: (!scores.is_empty()).then(|| mean_ci(&scores, a.seed)),
            unparsed: js.len() - scores.len(),
        }
    };
    let mut order: Vec<&str> = Vec::new();
    for q in &questions {
        if !order.contains(&q.category.as_str()) {
            order.push(&q.category);
        }
    }
    let summary = Summary {
        model,
        judge: judge.name().to_string(),
        questions: questions.len(),
        overall: group("overall", &|_, _| true),
        turn_1: group("turn 1", &|t, _| t == 1),
        turn_2: group("turn 2", &|t, _| t == 2),
        categories: order.iter().map(|c| group(c, &|_, cat| cat == *c)).collect(),
    };
    print(&summary);
    let rows: Vec<serde_json::Value> =
        graded.iter().map(|(turn, cat, j)| json!({"turn": turn, "category": cat, "judgement": j})).collect();
    let jl = out.jsonl("judgements.jsonl", &rows)?;
    let json = out.json("mtbench.json", &summary)?;
    let html = out.page("mtbench.html", &page(&summary, &graded, &order))?;
    eprintln!("wrote {}, {} and {}", jl.display(), json.display(), html.display());
    Ok(())
}

/// FastChat answers by question id (both turns), and the model's name.
fn read_answers(path: &std::path::Path, questions: &[Question]) -> Result<(String, HashMap<u64, Vec<String>>)> {
    let mut by_id = HashMap::new();
    let mut model = None;
    for r in records(path)? {
        let id = r
            .opt_f64("question_id")?
            .filter(|x| *x >= 0.0 && x.fract() == 0.0)
            .ok_or_else(|| r.error("question_id", "missing or not a question id"))? as u64;
        let turns: Vec<String> = r
            .fields
            .get("choices")
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("turns"))
            .and_then(|t| t.as_array())
            .and_then(|t| t.iter().map(|x| x.as_str().map(str::to_string)).collect())
            .ok_or_else(|| r.error("choices", "expected choices[0].turns, a list of strings"))?;
        if turns.len() != 2 {
            return Err(r.error("choices", format!("{} turns; MT-Bench answers have two", turns.len())));
        }
        if model.is_none() {
            model = r.opt_str("model_id")?.map(str::to_string);
        }
        if by_id.insert(id, turns).is_some() {
            return Err(r.error("question_id", format!("question {id} answered twice")));
        }
    }
    if let Some(q) = questions.iter().find(|q| !by_id.contains_key(&q.question_id)) {
        bail!("{}: no answer to question {}", path.display(), q.question_id);
    }
    Ok((model.unwrap_or_else(|| path.display().to_string()), by_id))
}

/// Both turns of every question: turn 2 continues the conversation with the model's own turn 1.
fn generate(spec: &str, a: &MtBenchArgs, questions: &[Question]) -> Result<HashMap<u64, Vec<String>>> {
    let s = crate::cmd::generate::ChatSampling {
        max_new_tokens: a.max_new_tokens,
        temperature: 0.0,
        seed: a.seed,
        batch: 8,
    };
    let first: Vec<Vec<ChatMessage>> = questions.iter().map(|q| vec![ChatMessage::new("user", &q.turns[0])]).collect();
    let one = crate::cmd::generate::complete(spec, &a.judging.endpoint, &first, &s)?;
    let second: Vec<Vec<ChatMessage>> = questions
        .iter()
        .zip(&one)
        .map(|(q, r)| {
            vec![
                ChatMessage::new("user", &q.turns[0]),
                ChatMessage::new("assistant", r),
                ChatMessage::new("user", &q.turns[1]),
            ]
        })
        .collect();
    let two = crate::cmd::generate::complete(spec, &a.judging.endpoint, &second, &s)?;
    if one.len() != questions.len() || two.len() != questions.len() {
        return Err(anyhow!("{spec} answered {} and {} of {} questions", one.len(), two.len(), questions.len()));
    }
    Ok(questions.iter().zip(one.into_iter().zip(two)).map(|(q, (x, y))| (q.question_id, vec![x, y])).collect())
}

fn text(g: &Group) -> String {
    g.score.as_ref().map_or("–".into(), |c| c.fmt(2))
}

fn print(s: &Summary) {
    println!("MT-Bench, {} graded by {} ({} questions)", s.model, s.judge, s.questions);
    for g in std::iter::once(&s.overall).chain([&s.turn_1, &s.turn_2]).chain(&s.categories) {
        println!("{:<12} {:>22}   {} unparsed", g.name, text(g), g.unparsed);
    }
}

fn page(s: &Summary, graded: &[(usize, String, SingleJudgement)], order: &[&str]) -> Page {
    let mut page = Page::new("MT-Bench single-answer grading");
    page.headline(&[
        ("model", s.model.clone()),
        ("judge", s.judge.clone()),
        ("score (1–10)", text(&s.overall)),
        ("unparsed", s.overall.unparsed.to_string()),
    ]);
    page.section("Scores by category");
    page.paragraph(
        "Each answer graded 1–10 by the judge with MT-Bench's prompts (single-v1; math, reasoning and coding \
         against GPT-4's references; the second turn with the whole conversation). Means with 95% bootstrap \
         intervals; replies without a rating are counted as unparsed and left out.",
    );
    let series = |turn: usize| {
        let stats: Vec<Option<Ci>> = order
            .iter()
            .map(|c| {
                let xs: Vec<f64> = graded
                    .iter()
                    .filter(|(t, cat, _)| *t == turn && cat == c)
                    .filter_map(|(_, _, j)| j.score)
                    .collect();
                (!xs.is_empty()).then(|| mean_ci(&xs, 0))
            })
            .collect();
        Bars {
            name: format!("turn {turn}"),
            values: stats.iter().map(|c| c.as_ref().map_or(f64::NAN, |c| c.mean)).collect(),
            ci: Some(stats.iter().map(|c| c.as_ref().map_or((f64::NAN, f64::NAN), |c| (c.lo, c.hi))).collect()),
        }
    };
    page.plot(
        BarChart {
            title: "MT-Bench score by category".into(),
            x_label: "category".into(),
            y_label: "score (1–10)".into(),
            categories: order.iter().map(|c| c.to_string()).collect(),
            series: vec![series(1), series(2)],
        }
        .to_svg(),
    );
    let rows: Vec<Vec<String>> = std::iter::once(&s.overall)
        .chain([&s.turn_1, &s.turn_2])
        .chain(&s.categories)
        .map(|g| vec![g.name.clone(), text(g), g.score.as_ref().map_or(0, |c| c.n).to_string(), g.unparsed.to_string()])
        .collect();
    page.table(&["", "score [95% CI]", "graded", "unparsed"], &rows);
    page
}
