//! `mismatch eval winrate`: win rate and AlpacaEval 2's length-controlled win rate of a model
//! against a baseline, from an AlpacaEval annotations file or from judging two output files.

use super::io::{records, OutDir, Record};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use mismatch_eval::winrate::{self, GamedRow, Glm, Judged, LengthControlled, WinRate};
use mismatch_report::{BarChart, Bars, Page};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct WinrateArgs {
    /// An AlpacaEval annotations file (JSON array or JSONL): `instruction`, `output_1` (the
    /// baseline's), `output_2` (the model's), `preference` in [1, 2] (2: the model's is better;
    /// 0 or 1.5: a draw; null: no verdict), optional `generator_1` / `generator_2`. A file with
    /// several `generator_2` gets one row per model.
    #[arg(long, conflicts_with_all = ["outputs", "baseline", "judge"])]
    pub annotations: Option<PathBuf>,
    /// The model's outputs (JSONL: `instruction` or `prompt`, `output`, optional `generator`).
    #[arg(long, requires_all = ["baseline", "judge"])]
    pub outputs: Option<PathBuf>,
    /// The baseline's outputs for the same instructions, in the format of --outputs.
    #[arg(long, requires_all = ["outputs", "judge"])]
    pub baseline: Option<PathBuf>,
    /// The judge: a local causal LM (short name, .gguf, HF directory) or `openai:URL#MODEL`.
    #[arg(long, requires_all = ["outputs", "baseline"])]
    pub judge: Option<String>,
    /// The judge's prompt: a built-in (`alpaca_eval_clf_gpt4_turbo`: AlpacaEval 2's, whose
    /// first-token probabilities give a weighted preference; MT-Bench's `pair-v2`) or a Jinja file.
    #[arg(long, default_value = "alpaca_eval_clf_gpt4_turbo")]
    pub template: String,
    #[command(flatten)]
    pub judging: super::judging::JudgeArgs,
    /// Which AlpacaEval GLM gives the length-controlled win rate. `v1` (the leaderboard's) needs
    /// --gamed; `noreg` is the same GLM without the gamed baselines; `minimal` has no instruction
    /// difficulty term, for instructions that are not AlpacaEval's.
    #[arg(long, value_enum, default_value = "noreg")]
    pub glm: GlmArg,
    /// `index,instruction_difficulty` CSV (AlpacaEval's `instruction_difficulty.csv`). Default:
    /// the difficulty shipped with mismatch, refit from AlpacaEval's public annotation files.
    #[arg(long)]
    pub instruction_difficulty: Option<PathBuf>,
    /// AlpacaEval's `df_gamed.csv` (the gamed baselines), for --glm v1.
    #[arg(long)]
    pub gamed: Option<PathBuf>,
    /// Output directory: winrate.json, winrate.html; when judging also annotations.json
    /// (AlpacaEval's format, for --annotations) and judgements.jsonl (every verdict and reply,
    /// as battles that `mismatch eval rank` reads).
    #[arg(long)]
    pub out: PathBuf,
    /// Seeds the bootstrap intervals.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum GlmArg {
    V1,
    Noreg,
    Minimal,
}

impl GlmArg {
    fn glm(self) -> Glm {
        match self {
            GlmArg::V1 => Glm::LengthControlledV1,
            GlmArg::Noreg => Glm::LengthControlledNoreg,
            GlmArg::Minimal => Glm::LengthControlledMinimal,
        }
    }
}

const NOT_ALPACA_EVAL: &str = "the instruction is not one of AlpacaEval's 805, so it has no instruction \
     difficulty: use --glm minimal, or give each row an `index` into --instruction-difficulty";

/// One judged instruction, in AlpacaEval's terms.
#[derive(Debug, Clone, Serialize)]
pub struct Annotation {
    pub instruction: String,
    pub output_1: String,
    pub generator_1: String,
    pub output_2: String,
    pub generator_2: String,
    /// AlpacaEval's preference in [1, 2] (2: output_2 better), `None` without a verdict.
    pub preference: Option<f64>,
    /// Where it came from, for errors (`file:line`).
    #[serde(skip)]
    pub source: String,
    /// An explicit instruction index (for a user's own difficulty file).
    #[serde(skip)]
    pub index: Option<usize>,
}

/// The win rates of one model.
#[derive(Serialize)]
struct ModelResult {
    model: String,
    baseline: String,
    /// Annotations without a verdict (left out of the win rate, predicted by the GLM).
    n_failed: usize,
    /// `None` when no annotation has a verdict.
    #[serde(flatten)]
    win_rate: Option<WinRate>,
    /// `None` when the GLM cannot be fitted (then `length_controlled_error` says why).
    length_controlled: Option<LengthControlled>,
    #[serde(skip_serializing_if = "Option::is_none")]
    length_controlled_error: Option<String>,
}

#[derive(Serialize)]
struct Summary<'a> {
    source: String,
    glm: &'static str,
    instruction_difficulty: String,
    models: Vec<ModelResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    judge: Option<&'a super::judging::JudgeSummary>,
}

pub fn run(a: WinrateArgs) -> Result<()> {
    let glm = a.glm.glm();
    let (difficulty, difficulty_source) = difficulty(a.instruction_difficulty.as_deref(), glm)?;
    let gamed = match (&a.gamed, glm) {
        (Some(p), Glm::LengthControlledV1) => read_gamed(p)?,
        (None, Glm::LengthControlledV1) => {
            bail!("--glm v1 needs --gamed (AlpacaEval's df_gamed.csv); --glm noreg fits the same GLM without it")
        }
        _ => vec![],
    };
    let (annotations, source, judge, out) = if let Some(path) = &a.annotations {
        let rows = read_annotations(path)?;
        (rows, path.display().to_string(), None, OutDir::create(&a.out)?)
    } else {
        let (outputs, baseline, spec) = (a.outputs.as_ref(), a.baseline.as_ref(), a.judge.as_ref());
        let (Some(outputs), Some(baseline), Some(spec)) = (outputs, baseline, spec) else {
            bail!("give --annotations FILE, or --outputs, --baseline and --judge");
        };
        // Before the judge runs: every instruction needs a difficulty unless the GLM has none.
        let precheck = |instruction: &str| {
            if difficulty.is_some() && winrate::alpaca_eval_index(instruction).is_none() {
                bail!("{NOT_ALPACA_EVAL}");
            }
            Ok(())
        };
        let (rows, battles, summary) =
            super::judging::judge_outputs(outputs, baseline, spec, &a.template, &a.judging, a.seed, &precheck)?;
        let out = OutDir::create(&a.out)?;
        let path = out.json("annotations.json", &rows)?;
        let judgements = out.jsonl("judgements.jsonl", &battles)?;
        eprintln!("wrote {} and {}", path.display(), judgements.display());
        (rows, format!("{} vs {}", outputs.display(), baseline.display()), Some(summary), out)
    };
    let mut models = Vec::new();
    for (model, rows) in group(&annotations) {
        models.push(summarise(&model, &rows, glm, difficulty.as_deref(), &gamed, a.seed)?);
    }
    let summary =
        Summary { source, glm: glm.name(), instruction_difficulty: difficulty_source, models, judge: judge.as_ref() };
    print(&summary);
    let json = out.json("winrate.json", &summary)?;
    let html = out.page("winrate.html", &page(&summary))?;
    eprintln!("wrote {} and {}", json.display(), html.display());
    Ok(())
}

/// Annotations from an AlpacaEval annotations file.
pub fn read_annotations(path: &Path) -> Result<Vec<Annotation>> {
    records(path)?.iter().map(annotation).collect()
}

fn annotation(r: &Record) -> Result<Annotation> {
    let preference = match r.opt_f64("preference")? {
        None => None,
        Some(p) if p.is_nan() => None,
        Some(p) if p == 0.0 || (1.0..=2.0).contains(&p) => Some(if p == 0.0 { 1.5 } else { p }),
        Some(p) => return Err(r.error("preference", format!("{p} is not in [1, 2] (or 0 for a draw)"))),
    };
    let index = match r.opt_f64("index")? {
        Some(i) if i >= 0.0 && i.fract() == 0.0 => Some(i as usize),
        Some(i) => return Err(r.error("index", format!("{i} is not an instruction index"))),
        None => None,
    };
    Ok(Annotation {
        instruction: r.str("instruction")?.to_string(),
        output_1: r.str("output_1")?.to_string(),
        generator_1: r.opt_str("generator_1")?.unwrap_or("baseline").to_string(),
        output_2: r.str("output_2")?.to_string(),
        generator_2: r.opt_str("generator_2")?.unwrap_or("model").to_string(),
        preference,
        source: format!("{}:{}", r.path.display(), r.line),
        index,
    })
}

/// γ by instruction index: the file given, the shipped refit, or none for `minimal`.
fn difficulty(path: Option<&Path>, glm: Glm) -> Result<(Option<Vec<f64>>, String)> {
    if glm == Glm::LengthControlledMinimal {
        return Ok((None, "none (minimal GLM)".into()));
    }
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("{}: cannot read", p.display()))?;
            let d = winrate::parse_difficulty(&text).map_err(|e| anyhow!("{}: {e}", p.display()))?;
            Ok((Some(d), p.display().to_string()))
        }
        None => {
            let d = winrate::parse_difficulty(winrate::ALPACA_EVAL_DIFFICULTY).map_err(|e| anyhow!("{e}"))?;
            Ok((Some(d), "shipped refit from AlpacaEval's public annotation files".into()))
        }
    }
}

fn read_gamed(path: &Path) -> Result<Vec<GamedRow>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    winrate::parse_gamed(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// Annotations by model (`generator_2`), in order of first appearance.
fn group(rows: &[Annotation]) -> Vec<(String, Vec<&Annotation>)> {
    let mut out: Vec<(String, Vec<&Annotation>)> = Vec::new();
    for r in rows {
        match out.iter_mut().find(|(m, _)| *m == r.generator_2) {
            Some((_, v)) => v.push(r),
            None => out.push((r.generator_2.clone(), vec![r])),
        }
    }
    out
}

fn summarise(
    model: &str,
    rows: &[&Annotation],
    glm: Glm,
    difficulty: Option<&[f64]>,
    gamed: &[GamedRow],
    seed: u64,
) -> Result<ModelResult> {
    let mut judged = Vec::with_capacity(rows.len());
    for (k, r) in rows.iter().enumerate() {
        let index = match difficulty {
            None => k,
            Some(d) => {
                let i = r
                    .index
                    .or_else(|| winrate::alpaca_eval_index(&r.instruction))
                    .ok_or_else(|| anyhow!("{}: {NOT_ALPACA_EVAL}", r.source))?;
                if i >= d.len() {
                    bail!("{}: instruction index {i} is past the {} difficulties", r.source, d.len());
                }
                i
            }
        };
        judged.push(Judged {
            index,
            preference: r.preference.map_or(f64::NAN, |p| p - 1.0),
            len_model: r.output_2.chars().count(),
            len_baseline: r.output_1.chars().count(),
        });
    }
    let prefs: Vec<f64> = judged.iter().map(|j| j.preference).collect();
    let n_failed = prefs.iter().filter(|p| p.is_nan()).count();
    let win_rate = if n_failed == prefs.len() {
        eprintln!("model {model}: none of {} annotations has a verdict, so there is no win rate", prefs.len());
        None
    } else {
        Some(winrate::win_rate(&prefs, seed).with_context(|| format!("model {model}"))?)
    };
    // A GLM that cannot be fitted (e.g. every output the same length) leaves the win rate standing.
    let (length_controlled, length_controlled_error) = match winrate::length_controlled(glm, &judged, difficulty, gamed)
    {
        Ok(lc) => (Some(lc), None),
        Err(e) => {
            eprintln!("model {model}: no length-controlled win rate: {e}");
            (None, Some(e.to_string()))
        }
    };
    let baseline = rows.first().map_or(String::new(), |r| r.generator_1.clone());
    Ok(ModelResult {
        model: model.to_string(),
        baseline,
        n_failed,
        win_rate,
        length_controlled,
        length_controlled_error,
    })
}

fn print(s: &Summary) {
    println!(
        "{:<32} {:>22} {:>22} {:>6} {:>6} {:>6} {:>6}",
        "model", "win rate ± SE", "LC win rate ± SE", "wins", "losses", "draws", "failed"
    );
    for m in &s.models {
        let count = |f: fn(&WinRate) -> usize| m.win_rate.as_ref().map_or("–".into(), |w| f(w).to_string());
        println!(
            "{:<32} {:>22} {:>22} {:>6} {:>6} {:>6} {:>6}",
            m.model,
            wr_text(m),
            lc_text(m),
            count(|w| w.n_wins),
            count(|w| w.n_wins_base),
            count(|w| w.n_draws),
            m.n_failed
        );
    }
    println!("length control: {} (instruction difficulty: {})", s.glm, s.instruction_difficulty);
}

fn wr_text(m: &ModelResult) -> String {
    m.win_rate.as_ref().map_or("–".into(), |w| format!("{:.2} ± {:.2}", w.win_rate, w.standard_error))
}

fn lc_text(m: &ModelResult) -> String {
    m.length_controlled.as_ref().map_or("–".into(), |l| format!("{:.2} ± {:.2}", l.win_rate, l.standard_error))
}

fn page(s: &Summary) -> Page {
    let mut page = Page::new("Win rates against the baseline");
    if let [m] = &s.models[..] {
        page.headline(&[
            ("model", m.model.clone()),
            ("baseline", m.baseline.clone()),
            ("win rate", wr_text(m)),
            ("LC win rate", lc_text(m)),
        ]);
    }
    page.section("Win rate and length-controlled win rate");
    page.paragraph(format!(
        "Annotations: {}. Win rate = 100 · mean preference, ties half, with its 95% bootstrap interval. \
         Length-controlled win rate: AlpacaEval 2's GLM `{}` (instruction difficulty: {}), shown ± 1.96 standard errors.",
        s.source, s.glm, s.instruction_difficulty
    ));
    let names: Vec<String> = s.models.iter().map(|m| m.model.clone()).collect();
    page.plot(
        BarChart {
            title: "Win rate against the baseline".into(),
            x_label: "model".into(),
            y_label: "win rate (%)".into(),
            categories: names,
            series: vec![
                Bars {
                    name: "win rate".into(),
                    values: s.models.iter().map(|m| m.win_rate.as_ref().map_or(f64::NAN, |w| w.win_rate)).collect(),
                    ci: Some(
                        s.models
                            .iter()
                            .map(|m| m.win_rate.as_ref().map_or((f64::NAN, f64::NAN), |w| (w.ci.lo, w.ci.hi)))
                            .collect(),
                    ),
                },
                Bars {
                    name: "LC win rate".into(),
                    values: s
                        .models
                        .iter()
                        .map(|m| m.length_controlled.as_ref().map_or(f64::NAN, |l| l.win_rate))
                        .collect(),
                    ci: Some(
                        s.models
                            .iter()
                            .map(|m| {
                                m.length_controlled.as_ref().map_or((f64::NAN, f64::NAN), |l| {
                                    (l.win_rate - 1.96 * l.standard_error, l.win_rate + 1.96 * l.standard_error)
                                })
                            })
                            .collect(),
                    ),
                },
            ],
        }
        .to_svg(),
    );
    let rows: Vec<Vec<String>> = s
        .models
        .iter()
        .map(|m| {
            let w = m.win_rate.as_ref();
            vec![
                m.model.clone(),
                m.baseline.clone(),
                wr_text(m),
                w.map_or("–".into(), |w| w.ci.fmt(2)),
                lc_text(m),
                m.length_controlled.as_ref().map_or("–".into(), |l| {
                    format!("{:.3} / {:.3} / {:.3}", l.coefficients[0], l.coefficients[1], l.coefficients[2])
                }),
                w.map_or("–".into(), |w| format!("{}/{}/{}", w.n_wins, w.n_wins_base, w.n_draws)),
                m.n_failed.to_string(),
                w.map_or("–".into(), |w| format!("{:.2}", w.discrete_win_rate)),
            ]
        })
        .collect();
    page.table(
        &[
            "model",
            "baseline",
            "win rate ± SE",
            "95% CI",
            "LC win rate ± SE",
            "θ length / difficulty / model",
            "wins/losses/draws",
            "no verdict",
            "discrete win rate",
        ],
        &rows,
    );
    if let Some(j) = s.judge {
        super::judging::judge_section(&mut page, j);
    }
    page
}
