//! `mismatch eval refusal`: XSTest over-refusal. Labels each completion full compliance, full
//! refusal or partial refusal by string match and, with a judge, by XSTest's judge prompt; rates
//! on safe and unsafe prompts with intervals, and the two labelings side by side.

use super::io::{records, OutDir};
use anyhow::{anyhow, bail, Result};
use clap::Args;
use mismatch_eval::refusal::{self, Agreement, RefusalLabel, RefusalRates, Safety, XsPrompt};
use mismatch_models::ChatMessage;
use mismatch_report::{BarChart, Bars, Page};
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args)]
pub struct RefusalArgs {
    /// Completions to label (JSONL or JSON array): `prompt`, `completion`, optional `type`
    /// (XSTest's, e.g. `homonyms`; `contrast_*` types are unsafe) or `label` (`safe`/`unsafe`).
    #[arg(long, conflicts_with = "model", required_unless_present = "model")]
    pub completions: Option<PathBuf>,
    /// Generate the completions instead: a local causal LM or `openai:URL#MODEL`, each prompt of
    /// --prompts as one user turn of its chat template.
    #[arg(long, requires = "prompts")]
    pub model: Option<String>,
    /// XSTest's prompt file (`xstest_prompts.csv`): the prompts for --model, and the type and
    /// safety of completions whose rows lack them (matched by prompt text).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// Only the first N prompts (with --model).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Tokens per completion (with --model).
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Sampling temperature for --model (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Prompts decoded together by a local --model.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Also label with this judge (local causal LM or `openai:URL#MODEL`) and XSTest's
    /// classification prompt.
    #[arg(long)]
    pub judge: Option<String>,
    /// Label by the judge's first-token probabilities of the class numbers 1/2/3 instead of
    /// parsing its reply (for judges too small to write the class; see `judge_probs`).
    #[arg(long, requires = "judge")]
    pub judge_logprobs: bool,
    #[command(flatten)]
    pub judging: super::judging::JudgeArgs,
    /// Output directory: labels.jsonl, refusal.json, refusal.html.
    #[arg(long)]
    pub out: PathBuf,
    /// Seeds the intervals and the sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// One labelled completion.
struct Item {
    row: serde_json::Map<String, Value>,
    prompt: XsPrompt,
    completion: String,
}

#[derive(Serialize)]
struct Labeling {
    rates: RefusalRates,
    counts: [usize; 3],
}

#[derive(Serialize)]
struct Summary<'a> {
    source: String,
    n: usize,
    string_match: Labeling,
    #[serde(skip_serializing_if = "Option::is_none")]
    judge: Option<JudgeLabeling<'a>>,
}

#[derive(Serialize)]
struct JudgeLabeling<'a> {
    spec: &'a str,
    /// Replies the parser could not read (left out of the judge's rates and of the agreement).
    n_unparsed: usize,
    /// `None` when no reply could be read.
    labeling: Option<Labeling>,
    /// String match vs the judge over the completions the judge labelled.
    agreement: Option<Agreement>,
}

pub fn run(a: RefusalArgs) -> Result<()> {
    let known = match &a.prompts {
        Some(p) => refusal::read_prompts(p)?,
        None => vec![],
    };
    let (items, source) = match (&a.completions, &a.model) {
        (Some(path), _) => (read_completions(path, &known)?, path.display().to_string()),
        (None, Some(spec)) => (generate(spec, &a, known)?, format!("completions of {spec}")),
        (None, None) => bail!("give --completions FILE or --model SPEC --prompts xstest_prompts.csv"),
    };
    let out = OutDir::create(&a.out)?;
    let labels: Vec<RefusalLabel> = items.iter().map(|i| refusal::string_match(&i.completion)).collect();
    let prompts: Vec<XsPrompt> = items.iter().map(|i| i.prompt.clone()).collect();
    let string_match = labeling(&prompts, &labels, a.seed)?;
    let judged = match &a.judge {
        Some(spec) => {
            let pairs: Vec<(String, String)> =
                items.iter().map(|i| (i.prompt.prompt.clone(), i.completion.clone())).collect();
            Some((spec.as_str(), super::judging::refusal_labels(spec, &pairs, &a.judging, a.judge_logprobs)?))
        }
        None => None,
    };
    let mut rows = Vec::with_capacity(items.len());
    for (k, item) in items.iter().enumerate() {
        let mut row = item.row.clone();
        row.insert("prompt".into(), json!(item.prompt.prompt));
        row.insert("completion".into(), json!(item.completion));
        row.insert("type".into(), json!(item.prompt.kind));
        row.insert("safety".into(), json!(item.prompt.safety));
        row.insert("label".into(), json!(labels[k].xstest_name()));
        if let Some((_, j)) = &judged {
            row.insert("judge_label".into(), json!(j[k].label.map(|l| l.xstest_name())));
            row.insert("judge_reply".into(), json!(j[k].reply));
            if let Some(p) = j[k].probs {
                row.insert("judge_probs".into(), json!(p));
            }
        }
        rows.push(Value::Object(row));
    }
    let judge = match &judged {
        None => None,
        Some((spec, j)) => {
            let ok: Vec<usize> = (0..items.len()).filter(|&k| j[k].label.is_some()).collect();
            let (labeling, agreement) = if ok.is_empty() {
                eprintln!("the judge {spec} gave no readable label for any of {} completions (see judge_reply in labels.jsonl)", items.len());
                (None, None)
            } else {
                let jp: Vec<XsPrompt> = ok.iter().map(|&k| prompts[k].clone()).collect();
                let jl: Vec<RefusalLabel> = ok.iter().map(|&k| j[k].label.expect("filtered")).collect();
                let sl: Vec<RefusalLabel> = ok.iter().map(|&k| labels[k]).collect();
                (Some(labeling(&jp, &jl, a.seed)?), Some(refusal::agreement(&sl, &jl, a.seed)?))
            };
            Some(JudgeLabeling { spec, n_unparsed: items.len() - ok.len(), labeling, agreement })
        }
    };
    let summary = Summary { source, n: items.len(), string_match, judge };
    print(&summary);
    let labels_path = out.jsonl("labels.jsonl", &rows)?;
    let json = out.json("refusal.json", &summary)?;
    let html = out.page("refusal.html", &page(&summary))?;
    eprintln!("wrote {}, {} and {}", labels_path.display(), json.display(), html.display());
    Ok(())
}

fn labeling(prompts: &[XsPrompt], labels: &[RefusalLabel], seed: u64) -> Result<Labeling> {
    let mut counts = [0; 3];
    for l in labels {
        counts[l.index()] += 1;
    }
    Ok(Labeling { rates: refusal::refusal_rates(prompts, labels, seed)?, counts })
}

fn read_completions(path: &std::path::Path, known: &[XsPrompt]) -> Result<Vec<Item>> {
    let by_text: HashMap<&str, &XsPrompt> = known.iter().map(|p| (p.prompt.as_str(), p)).collect();
    let mut items = Vec::new();
    for r in records(path)? {
        let prompt = r.str("prompt")?.to_string();
        let completion = r.str("completion")?.to_string();
        let kind = r.opt_str("type")?.map(str::to_string);
        let safety = match r.opt_str("label")? {
            Some("safe") => Some(Safety::Safe),
            Some("unsafe") => Some(Safety::Unsafe),
            Some(l) => return Err(r.error("label", format!("{l:?} is neither \"safe\" nor \"unsafe\""))),
            None => None,
        };
        let found = by_text.get(prompt.as_str());
        let (kind, safety) = match (kind, safety, found) {
            (Some(k), Some(s), _) => (k, s),
            (Some(k), None, _) => {
                let s = if k.starts_with("contrast_") { Safety::Unsafe } else { Safety::Safe };
                (k, s)
            }
            (None, s, Some(p)) => (p.kind.clone(), s.unwrap_or(p.safety)),
            (None, Some(s), None) => ("unknown".to_string(), s),
            (None, None, None) => {
                return Err(anyhow!(
                    "{}:{}: field \"type\": missing, and the prompt is not in --prompts: give XSTest's type \
                     (e.g. homonyms, contrast_homonyms) or a `label` (safe / unsafe)",
                    path.display(),
                    r.line
                ))
            }
        };
        let id = found.map_or(items.len() as u32 + 1, |p| p.id);
        let prompt = XsPrompt { id, prompt, kind, safety, focus: String::new(), note: String::new() };
        items.push(Item { row: r.fields, prompt, completion });
    }
    Ok(items)
}

fn generate(spec: &str, a: &RefusalArgs, mut prompts: Vec<XsPrompt>) -> Result<Vec<Item>> {
    if let Some(n) = a.limit {
        prompts.truncate(n);
    }
    if prompts.is_empty() {
        bail!("no prompts to generate from");
    }
    if !(a.temperature >= 0.0 && a.temperature.is_finite()) {
        bail!("--temperature must be a finite number ≥ 0 (got {})", a.temperature);
    }
    let conversations: Vec<Vec<ChatMessage>> =
        prompts.iter().map(|p| vec![ChatMessage::new("user", &p.prompt)]).collect();
    let sampling = crate::cmd::generate::ChatSampling {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        seed: a.seed,
        batch: a.batch,
    };
    let completions = crate::cmd::generate::complete(spec, &a.judging.endpoint, &conversations, &sampling)?;
    Ok(prompts
        .into_iter()
        .zip(completions)
        .map(|(p, completion)| {
            let mut row = serde_json::Map::new();
            row.insert("id".into(), json!(p.id));
            row.insert("model".into(), json!(spec));
            Item { row, prompt: p, completion }
        })
        .collect())
}

fn print(s: &Summary) {
    let line = |name: &str, l: &Labeling| {
        println!(
            "{name:<14} over-refusal (safe, n={}) {}   refusal of unsafe (n={}) {}",
            l.rates.n_safe,
            l.rates.over_refusal.fmt(3),
            l.rates.n_unsafe,
            l.rates.unsafe_refusal.fmt(3)
        );
    };
    line("string match", &s.string_match);
    if let Some(j) = &s.judge {
        if let (Some(l), Some(ag)) = (&j.labeling, &j.agreement) {
            line("judge", l);
            println!(
                "agreement      {} raw, Cohen's κ {} (n={}, {} judge replies unreadable)",
                ag.raw.fmt(3),
                ag.kappa.fmt(3),
                ag.n,
                j.n_unparsed
            );
        } else {
            println!("judge          no readable label in {} replies", j.n_unparsed);
        }
    }
}

fn page(s: &Summary) -> Page {
    let mut page = Page::new("Over-refusal (XSTest)");
    let mut head = vec![
        ("completions".to_string(), s.n.to_string()),
        ("over-refusal, string match".to_string(), s.string_match.rates.over_refusal.fmt(3)),
    ];
    if let Some(JudgeLabeling { labeling: Some(l), agreement: Some(ag), .. }) = &s.judge {
        head.push(("over-refusal, judge".into(), l.rates.over_refusal.fmt(3)));
        head.push(("Cohen's κ".into(), ag.kappa.fmt(3)));
    }
    page.headline(&head);
    page.section("Refusal rates by prompt type");
    page.paragraph(format!(
        "{}. A refusal is a full or a partial refusal; 95% BCa intervals. Safe prompts should be answered \
         (refusing them is over-refusal); unsafe prompts (XSTest's contrast_* types) should be refused.",
        s.source
    ));
    let types: Vec<String> = s.string_match.rates.by_type.iter().map(|t| t.kind.clone()).collect();
    let bars = |name: &str, l: &Labeling| Bars {
        name: name.into(),
        values: types
            .iter()
            .map(|k| l.rates.by_type.iter().find(|t| &t.kind == k).map_or(f64::NAN, |t| t.refusal.mean))
            .collect(),
        ci: Some(
            types
                .iter()
                .map(|k| {
                    l.rates
                        .by_type
                        .iter()
                        .find(|t| &t.kind == k)
                        .map_or((f64::NAN, f64::NAN), |t| (t.refusal.lo, t.refusal.hi))
                })
                .collect(),
        ),
    };
    let judged = s.judge.as_ref().and_then(|j| Some((j, j.labeling.as_ref()?, j.agreement.as_ref()?)));
    let mut series = vec![bars("string match", &s.string_match)];
    if let Some((_, l, _)) = judged {
        series.push(bars("judge", l));
    }
    page.plot(
        BarChart {
            title: "Refusal rate by XSTest type".into(),
            x_label: "type".into(),
            y_label: "refusal rate".into(),
            categories: types,
            series,
        }
        .to_svg(),
    );
    let mut rows = vec![rates_row("string match", &s.string_match)];
    if let Some((_, l, _)) = judged {
        rows.push(rates_row("judge", l));
    }
    page.table(
        &[
            "labels",
            "over-refusal (safe)",
            "full refusal (safe)",
            "refusal (unsafe)",
            "full refusal (unsafe)",
            "compliance / refusal / partial",
        ],
        &rows,
    );
    if let Some(j) = s.judge.as_ref().filter(|_| judged.is_none()) {
        page.section("String match against the judge");
        page.paragraph(format!("Judge {}: none of its {} replies named a class.", j.spec, j.n_unparsed));
    }
    if let Some((j, _, ag)) = judged {
        page.section("String match against the judge");
        page.paragraph(format!(
            "Judge {}: {} completions labelled, {} replies unreadable (left out). Raw agreement {}, Cohen's κ {}.",
            j.spec,
            ag.n,
            j.n_unparsed,
            ag.raw.fmt(3),
            ag.kappa.fmt(3)
        ));
        let names = RefusalLabel::ALL.map(|l| l.name());
        let mut headers = vec!["string match ↓ / judge →".to_string()];
        headers.extend(names.iter().map(|n| n.to_string()));
        let rows: Vec<Vec<String>> = (0..3)
            .map(|i| {
                let mut r = vec![names[i].to_string()];
                r.extend(ag.confusion[i].iter().map(|c| c.to_string()));
                r
            })
            .collect();
        page.table(&headers, &rows);
    }
    page
}

fn rates_row(name: &str, l: &Labeling) -> Vec<String> {
    let r = &l.rates;
    vec![
        name.to_string(),
        r.over_refusal.fmt(3),
        r.over_refusal_full.fmt(3),
        r.unsafe_refusal.fmt(3),
        r.unsafe_refusal_full.fmt(3),
        format!("{} / {} / {}", l.counts[0], l.counts[1], l.counts[2]),
    ]
}
