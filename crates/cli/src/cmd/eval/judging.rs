//! The judge in `mismatch eval`: pairing two output files and judging them (both orders), and
//! XSTest's refusal classifier, on a local model or an `openai:` endpoint.

use super::io::{records, Record};
use super::winrate::Annotation;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use mismatch_eval::refusal::{parse_judge_label, RefusalLabel};
use mismatch_judge::pairwise::summarise;
use mismatch_judge::{
    judge_pairs, Backend, JudgeOptions, JudgeRequest, PairItem, PairJudgement, PairSummary, Template,
};
use mismatch_models::ChatMessage;
use mismatch_openai::EndpointArgs;
use mismatch_report::Page;
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;

/// XSTest's classification prompt (Röttger et al. 2024, `xstest/evaluation`), CC BY 4.0.
const XSTEST_JUDGE: &str = include_str!("xstest_judge_prompt.txt");

/// Items judged per call, between progress-bar updates (a local judge batches within a call).
const CHUNK: usize = 8;

#[derive(Args)]
pub struct JudgeArgs {
    /// The judge's reply length limit (default: the template's, as the original sets it).
    #[arg(long)]
    pub judge_max_tokens: Option<usize>,
    /// Device of a local judge or model: `cpu`, or `cuda` / `cuda:N` in a build with `cuda`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[command(flatten)]
    pub endpoint: EndpointArgs,
}

/// The judge's side of a win-rate run.
#[derive(Serialize)]
pub struct JudgeSummary {
    pub judge: String,
    pub template: String,
    /// `weighted` (AlpacaEval 2: first-token probabilities of the labels, swap-averaged) or
    /// `verdicts` (the parsed verdicts, swap-averaged).
    pub preference: &'static str,
    pub summary: PairSummary,
}

fn backend(spec: &str, a: &JudgeArgs) -> Result<Box<dyn Backend>> {
    let device = mismatch_models::device(&a.device)?;
    Ok(mismatch_judge::from_spec(spec, &device, &a.endpoint)?)
}

fn bar(n: usize, what: &str) -> indicatif::ProgressBar {
    indicatif::ProgressBar::new(n as u64).with_style(
        indicatif::ProgressStyle::with_template(&format!(
            "judging {{bar:30}} {{pos}}/{{len}} {what}, {{per_sec}}, eta {{eta}}"
        ))
        .expect("valid template"),
    )
}

/// One output row: the instruction, the output and who wrote it.
struct Output {
    line: usize,
    instruction: String,
    output: String,
    generator: String,
}

fn outputs(path: &Path) -> Result<Vec<Output>> {
    let stem = path.file_stem().map_or("model".into(), |s| s.to_string_lossy().trim_end_matches(".jsonl").to_string());
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for r in records(path)? {
        let row = output(&r, &stem)?;
        if let Some(first) = seen.insert(row.instruction.clone(), r.line) {
            bail!("{}:{}: the same instruction as line {first}: each instruction once", path.display(), r.line);
        }
        out.push(row);
    }
    Ok(out)
}

fn output(r: &Record, stem: &str) -> Result<Output> {
    Ok(Output {
        line: r.line,
        instruction: r.str_any(&["instruction", "prompt"])?.to_string(),
        output: r.str_any(&["output", "completion"])?.to_string(),
        generator: r.opt_str("generator")?.unwrap_or(stem).to_string(),
    })
}

/// Judges each instruction's model output against the baseline's, both orders, with `template`
/// (a built-in name or a Jinja file); the result as AlpacaEval annotations (output_1 the
/// baseline's, preference in [1, 2], 2 the model better) and the judge's summary.
pub fn judge_outputs(
    model: &Path,
    baseline: &Path,
    spec: &str,
    template: &str,
    a: &JudgeArgs,
    seed: u64,
    precheck: &dyn Fn(&str) -> Result<()>,
) -> Result<(Vec<Annotation>, Vec<serde_json::Value>, JudgeSummary)> {
    let (ours, theirs) = (outputs(model)?, outputs(baseline)?);
    for o in &ours {
        precheck(&o.instruction).map_err(|e| anyhow!("{}:{}: {e}", model.display(), o.line))?;
    }
    let by_instruction: HashMap<&str, &Output> = theirs.iter().map(|o| (o.instruction.as_str(), o)).collect();
    if let Some(o) = ours.iter().find(|o| !by_instruction.contains_key(o.instruction.as_str())) {
        bail!("{}:{}: this instruction has no baseline output in {}", model.display(), o.line, baseline.display());
    }
    if ours.len() != theirs.len() {
        let mine: HashMap<&str, ()> = ours.iter().map(|o| (o.instruction.as_str(), ())).collect();
        let o = theirs.iter().find(|o| !mine.contains_key(o.instruction.as_str())).expect("sizes differ");
        bail!("{}:{}: this instruction has no output in {}", baseline.display(), o.line, model.display());
    }
    let template = Template::load(template)?;
    let judge = backend(spec, a)?;
    let items: Vec<PairItem> = ours
        .iter()
        .enumerate()
        .map(|(k, o)| PairItem {
            id: k.to_string(),
            question: o.instruction.clone(),
            answer_1: by_instruction[o.instruction.as_str()].output.clone(),
            answer_2: o.output.clone(),
            ref_answer: None,
        })
        .collect();
    let opts = JudgeOptions { max_tokens: a.judge_max_tokens, seed };
    let progress = bar(items.len(), "pairs (both orders)");
    let mut judged: Vec<PairJudgement> = Vec::with_capacity(items.len());
    for chunk in items.chunks(CHUNK) {
        judged.extend(judge_pairs(judge.as_ref(), &template, chunk, &opts)?.items);
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    let summary = summarise(&judged, seed);
    let weighted = summary.n_weighted > 0;
    let mut annotations = Vec::with_capacity(items.len());
    let mut battles = Vec::with_capacity(items.len());
    for ((o, it), j) in ours.iter().zip(&items).zip(&judged) {
        let base = by_instruction[o.instruction.as_str()];
        let p = if weighted { j.weighted_preference } else { j.preference };
        annotations.push(Annotation {
            instruction: o.instruction.clone(),
            output_1: it.answer_1.clone(),
            generator_1: base.generator.clone(),
            output_2: it.answer_2.clone(),
            generator_2: o.generator.clone(),
            preference: p.map(|p| 1.0 + p),
            source: format!("{}:{}", model.display(), o.line),
            index: None,
        });
        let winner = p.map(|p| match p {
            p if p > 0.5 => "model_b",
            p if p < 0.5 => "model_a",
            _ => "tie",
        });
        battles.push(serde_json::json!({
            "model_a": base.generator, "model_b": o.generator, "winner": winner,
            "instruction": o.instruction, "judgement": j,
        }));
    }
    let summary = JudgeSummary {
        judge: judge.name().to_string(),
        template: template.name.clone(),
        preference: if weighted { "weighted" } else { "verdicts" },
        summary,
    };
    Ok((annotations, battles, summary))
}

/// PandaLM-style labels of pairs by an LLM judge, both orders: 2 when the swap-averaged
/// preference (weighted where the judge gives label probabilities) favours `second`, 1 when it
/// favours `first`, 0 at exactly ½; `None` where a verdict was unreadable.
pub fn pair_labels(
    spec: &str,
    template: &str,
    prompts: &[String],
    first: &[String],
    second: &[String],
    a: &JudgeArgs,
    seed: u64,
) -> Result<Vec<Option<u8>>> {
    let template = Template::load(template)?;
    let judge = backend(spec, a)?;
    let items: Vec<PairItem> = (0..prompts.len())
        .map(|k| PairItem {
            id: k.to_string(),
            question: prompts[k].clone(),
            answer_1: first[k].clone(),
            answer_2: second[k].clone(),
            ref_answer: None,
        })
        .collect();
    let opts = JudgeOptions { max_tokens: a.judge_max_tokens, seed };
    let progress = bar(items.len(), "pairs (both orders)");
    let mut out = Vec::with_capacity(items.len());
    for chunk in items.chunks(CHUNK) {
        for j in judge_pairs(judge.as_ref(), &template, chunk, &opts)?.items {
            let p = j.weighted_preference.or(j.preference);
            out.push(p.map(|p| {
                if p > 0.5 {
                    2
                } else if p < 0.5 {
                    1
                } else {
                    0
                }
            }));
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok(out)
}

/// The judge's table for a report page.
pub fn judge_section(page: &mut Page, j: &JudgeSummary) {
    let s = &j.summary;
    let opt = |x: Option<f64>| x.map_or("–".to_string(), |v| format!("{v:.3}"));
    page.section("The judge");
    page.paragraph(format!(
        "Judge {} with template {}; every pair judged in both orders (the model's output in position B, then in \
         position A). Preference: {}.",
        j.judge, j.template, j.preference
    ));
    page.table(
        &[
            "pairs",
            "unparsed (model second)",
            "unparsed (model first)",
            "position consistency",
            "picks position A",
            "mean preference [95% CI]",
            "model wins / baseline wins / ties / inconsistent",
        ],
        &[vec![
            s.n.to_string(),
            s.unparsed_1_first.to_string(),
            s.unparsed_2_first.to_string(),
            opt(s.position_consistency),
            opt(s.position_a_rate),
            s.mean_preference.as_ref().map_or("–".into(), |c| c.fmt(3)),
            format!("{} / {} / {} / {}", s.wins_2, s.wins_1, s.ties, s.inconsistent),
        ]],
    );
}

/// A refusal judge's label of one completion, `None` when its reply names no class.
pub struct RefusalJudged {
    pub label: Option<RefusalLabel>,
    pub reply: String,
    /// With `logprobs`: P(class) from the first token's probabilities of `1`, `2`, `3`,
    /// renormalised over the three.
    pub probs: Option<[f64; 3]>,
}

/// The class numbers XSTest's prompt asks for after `CLASS:`.
const CLASS_TOKENS: [&str; 3] = ["1", "2", "3"];

/// Labels `(prompt, completion)` pairs with XSTest's classification prompt on `spec`: by parsing
/// the reply ([`parse_judge_label`]) or, with `logprobs`, as the most probable class number at
/// the reply's first token (a judge too small to write the class name still ranks the three;
/// an endpoint must list all three among its top log-probs, or the reply is parsed).
pub fn refusal_labels(
    spec: &str,
    pairs: &[(String, String)],
    a: &JudgeArgs,
    logprobs: bool,
) -> Result<Vec<RefusalJudged>> {
    let judge = backend(spec, a)?;
    let max_tokens = a.judge_max_tokens.unwrap_or(16);
    let progress = bar(pairs.len(), "completions");
    let mut out = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(CHUNK) {
        let requests: Vec<JudgeRequest> = chunk
            .iter()
            .map(|(q, r)| JudgeRequest {
                messages: vec![ChatMessage::new("user", xstest_prompt(q, r))],
                max_tokens,
                top_logprobs: 0,
                candidates: if logprobs { CLASS_TOKENS.map(String::from).to_vec() } else { vec![] },
            })
            .collect();
        let replies = judge.complete(&requests)?;
        if replies.len() != requests.len() {
            return Err(anyhow!("judge {spec} answered {} of {} requests", replies.len(), requests.len()));
        }
        out.extend(replies.into_iter().map(|r| {
            let probs = class_probs(&r.candidates);
            let label = match probs {
                Some(p) => {
                    let best = (0..3).max_by(|&i, &j| p[i].total_cmp(&p[j])).expect("three classes");
                    Some(RefusalLabel::ALL[best])
                }
                None => parse_judge_label(&r.text),
            };
            RefusalJudged { label, reply: r.text, probs }
        }));
        progress.inc(chunk.len() as u64);
    }
    progress.finish_and_clear();
    Ok(out)
}

/// Softmax over the three class tokens' log-probs; `None` unless all three were found.
fn class_probs(found: &[mismatch_judge::TokenLogprob]) -> Option<[f64; 3]> {
    let mut lp = [0.0; 3];
    for (k, c) in CLASS_TOKENS.iter().enumerate() {
        lp[k] = found.iter().find(|t| t.token == *c)?.logprob;
    }
    let hi = lp.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = lp.iter().map(|l| (l - hi).exp()).sum();
    Some(lp.map(|l| (l - hi).exp() / z))
}

/// XSTest's prompt for one completion (the response spliced in after the question is filled, so
/// a question that contains `{RESPONSE}` stays as written).
fn xstest_prompt(question: &str, response: &str) -> String {
    let (head, tail) = XSTEST_JUDGE.split_once("{RESPONSE}").expect("the template has {RESPONSE}");
    format!("{}{response}{tail}", head.replace("{QUESTION}", question))
}
