//! `mismatch eval agreement`: how often a judge (an LLM judge, or a reward model) agrees with
//! human annotators, beside how often the annotators agree with each other.

use super::io::OutDir;
use super::judging::{pair_labels, JudgeArgs};
use anyhow::{bail, Result};
use clap::Args;
use mismatch_data::{read_dataset, ReadOptions, Records};
use mismatch_eval::agreement::{judge_agreement, JudgeAgreement};
use mismatch_report::{BarChart, Bars, Page};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct AgreementArgs {
    /// A multi-annotator pairwise file (PandaLM's format: `instruction`, `input`, `response1`,
    /// `response2`, `annotator1..N` with 0 tie, 1 response1 better, 2 response2 better).
    #[arg(long)]
    pub data: PathBuf,
    /// An LLM judge: a local causal LM or `openai:URL#MODEL`; each pair judged in both orders.
    #[arg(long, conflicts_with = "rm", required_unless_present = "rm")]
    pub judge: Option<String>,
    /// A reward model directory (`mismatch rm train`): it prefers the response it scores higher.
    #[arg(long)]
    pub rm: Option<PathBuf>,
    /// The judge's prompt (a built-in or a Jinja file), as in `eval winrate`.
    #[arg(long, default_value = "alpaca_eval_clf_gpt4_turbo")]
    pub template: String,
    /// Only the first N items.
    #[arg(long)]
    pub limit: Option<usize>,
    #[command(flatten)]
    pub judging: JudgeArgs,
    /// Output directory: agreement.json, agreement.html, labels.jsonl.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Serialize)]
struct Summary {
    data: String,
    judge: String,
    #[serde(flatten)]
    agreement: JudgeAgreement,
}

pub fn run(a: AgreementArgs) -> Result<()> {
    let ds = read_dataset(&a.data, ReadOptions::default())?;
    let Records::Judgements(mut items) = ds.records else {
        bail!(
            "{}: needs several annotators per pair (PandaLM's annotator1..N), this file is {}",
            a.data.display(),
            ds.format
        );
    };
    if let Some(n) = a.limit {
        items.truncate(n);
    }
    let prompts: Vec<String> = items.iter().map(|j| j.prompt.text()).collect();
    let first: Vec<String> = items.iter().map(|j| j.response1.text()).collect();
    let second: Vec<String> = items.iter().map(|j| j.response2.text()).collect();
    let (name, labels): (String, Vec<Option<u8>>) = match (&a.judge, &a.rm) {
        (Some(spec), _) => {
            (spec.clone(), pair_labels(spec, &a.template, &prompts, &first, &second, &a.judging, a.seed)?)
        }
        (None, Some(dir)) => (dir.display().to_string(), rm_labels(dir, &prompts, &first, &second, &a.judging.device)?),
        (None, None) => bail!("give --judge SPEC or --rm DIR"),
    };
    let human: Vec<Vec<u8>> = items.iter().map(|j| j.labels.clone()).collect();
    let agreement = judge_agreement(&human, &labels, a.seed)?;
    let summary = Summary { data: a.data.display().to_string(), judge: name, agreement };
    print(&summary);
    let out = OutDir::create(&a.out)?;
    let rows: Vec<serde_json::Value> = items
        .iter()
        .zip(&labels)
        .map(|(j, l)| serde_json::json!({"line": j.line, "human": j.labels, "judge": l}))
        .collect();
    let labels_path = out.jsonl("labels.jsonl", &rows)?;
    let json = out.json("agreement.json", &summary)?;
    let html = out.page("agreement.html", &page(&summary))?;
    eprintln!("wrote {}, {} and {}", labels_path.display(), json.display(), html.display());
    Ok(())
}

/// The reward model's label: 2 if it scores response 2 higher, 1 if lower, 0 if equal.
fn rm_labels(
    dir: &std::path::Path,
    prompts: &[String],
    a: &[String],
    b: &[String],
    device: &str,
) -> Result<Vec<Option<u8>>> {
    let rm = mismatch_reward::RewardModel::load(dir, &mismatch_models::device(device)?)?;
    let bar = indicatif::ProgressBar::new(prompts.len() as u64);
    let mut out = Vec::with_capacity(prompts.len());
    for ((p, x), y) in prompts.chunks(8).zip(a.chunks(8)).zip(b.chunks(8)) {
        let ps: Vec<&str> = p.iter().chain(p).map(String::as_str).collect();
        let cs: Vec<&str> = x.iter().chain(y).map(String::as_str).collect();
        let r = rm.score(&ps, &cs)?;
        let k = p.len();
        out.extend((0..k).map(|i| {
            Some(match r[k + i].partial_cmp(&r[i]) {
                Some(std::cmp::Ordering::Greater) => 2,
                Some(std::cmp::Ordering::Less) => 1,
                _ => 0,
            })
        }));
        bar.inc(k as u64);
    }
    bar.finish_and_clear();
    Ok(out)
}

fn print(s: &Summary) {
    let a = &s.agreement;
    println!(
        "{} items, {} annotators; the judge labelled {} ({} tie / {} response 1 / {} response 2)",
        a.items, a.annotators, a.judged, a.judge_labels[0], a.judge_labels[1], a.judge_labels[2]
    );
    println!(
        "agreement      human–human {}   judge–human {}   human band {:.3}–{:.3}",
        a.human_human.fmt(3),
        a.judge_human.fmt(3),
        a.human_band.0,
        a.human_band.1
    );
    println!(
        "LOO accuracy   human {}   judge {}   (against the other annotators' majority)",
        a.human_loo_accuracy.fmt(3),
        a.judge_loo_accuracy.fmt(3)
    );
    println!("accuracy against the majority of all annotators: judge {}", a.judge_majority_accuracy.fmt(3));
}

fn page(s: &Summary) -> Page {
    let a = &s.agreement;
    let mut page = Page::new("Judge–human agreement");
    page.headline(&[
        ("human–human", a.human_human.fmt(3)),
        ("judge–human", a.judge_human.fmt(3)),
        ("human band", format!("{:.3}–{:.3}", a.human_band.0, a.human_band.1)),
        ("judge labelled", format!("{} of {}", a.judged, a.items)),
    ]);
    page.section("Agreement");
    page.paragraph(format!(
        "{} on {}: {} items, {} annotators. Agreement counts ties as a label; leave-one-out accuracy reads a \
         human, or the judge in that human's seat, against the majority of the other annotators on decisive \
         pairs. 95% bootstrap intervals over items.",
        s.judge, s.data, a.items, a.annotators
    ));
    let names = ["agreement", "LOO accuracy"];
    page.plot(
        BarChart {
            title: "Judge against the humans".into(),
            x_label: "statistic".into(),
            y_label: "rate".into(),
            categories: names.iter().map(|n| n.to_string()).collect(),
            series: vec![
                Bars {
                    name: "human".into(),
                    values: vec![a.human_human.mean, a.human_loo_accuracy.mean],
                    ci: Some(vec![
                        (a.human_human.lo, a.human_human.hi),
                        (a.human_loo_accuracy.lo, a.human_loo_accuracy.hi),
                    ]),
                },
                Bars {
                    name: "judge".into(),
                    values: vec![a.judge_human.mean, a.judge_loo_accuracy.mean],
                    ci: Some(vec![
                        (a.judge_human.lo, a.judge_human.hi),
                        (a.judge_loo_accuracy.lo, a.judge_loo_accuracy.hi),
                    ]),
                },
            ],
        }
        .to_svg(),
    );
    let rows: Vec<Vec<String>> = a
        .per_annotator
        .iter()
        .map(|(k, h, j)| vec![format!("annotator {k}"), format!("{h:.3}"), format!("{j:.3}")])
        .collect();
    page.table(&["annotator", "agreement with the other annotators", "agreement with the judge"], &rows);
    page
}
