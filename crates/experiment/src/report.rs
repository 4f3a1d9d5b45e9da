//! Runs the experiment and writes `summary.json` and `report.html` (one self-contained page:
//! what was run, a headline, one section per link with SVG plots and tables, failure-mode
//! meters over training, and the command that reproduces it).

use crate::config::RunConfig;
use crate::pipeline::SeedResult;
use mismatch_models::{Error, Result};
use mismatch_report::html::Page;
use mismatch_report::svg::{LinePlot, Series};
use serde_json::Value;
use std::path::Path;

/// Runs every seed of `cfg` and writes `summary.json`, `config.toml` and `report.html` (with
/// the metrics and final policies under `out`); `command` is what the summary records.
pub fn run_and_report(cfg: &RunConfig, out: &Path, command: &str, progress: bool) -> Result<Value> {
    let all: Vec<usize> = (0..cfg.seeds).collect();
    let results = run_seeds(cfg, &all, out, progress)?;
    write_report(cfg, &results, command, out)
}

/// Runs the seeds at `indices` (0-based into the config's seeds) of the config's setting,
/// writing their metrics and final policies under `out`: the part of a run that
/// `mismatch run --seed-only` does alone.
pub fn run_seeds(cfg: &RunConfig, indices: &[usize], out: &Path, progress: bool) -> Result<Vec<SeedResult>> {
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    crate::pipeline::single_threaded_kernels();
    if cfg.real.is_some() {
        // Real models and data: no world, no start-policy pre-training (crate::real).
        crate::pipeline::run_all(&crate::real::RealSetting::new(cfg, progress)?, cfg, indices, out, progress)
    } else {
        let setting = crate::embedded::WorldSetting::new(cfg, &mismatch_world::start::home()?)?;
        crate::pipeline::run_all(&setting, cfg, indices, out, progress)
    }
}

/// Writes `summary.json`, `config.toml` and `report.html` into `out` from every seed's results
/// (in seed order) and returns the summary: the part of a run that `mismatch run --merge` does
/// alone, so both write the same bytes.
pub fn write_report(cfg: &RunConfig, results: &[SeedResult], command: &str, out: &Path) -> Result<Value> {
    let mut summary = crate::summary::summarise(results, command, cfg);
    if let Some(real) = &cfg.real {
        summary["setting"] = "real".into();
        summary["gold"] = if !real.task.is_empty() {
            crate::real::TASK_GOLD_DESCRIPTION
        } else if !real.judge.trim().is_empty() {
            crate::real::JUDGE_GOLD_DESCRIPTION
        } else {
            crate::real::GOLD_DESCRIPTION
        }
        .into();
    }
    let bytes = serde_json::to_vec_pretty(&summary).map_err(|e| Error::Usage(e.to_string()))?;
    mismatch_models::checkpoint::write_atomic(&out.join("summary.json"), &bytes)?;
    mismatch_models::checkpoint::write_atomic(&out.join("config.toml"), cfg.to_toml().as_bytes())?;
    let page = render(&summary);
    mismatch_models::checkpoint::write_atomic(&out.join("report.html"), page.as_bytes())?;
    Ok(summary)
}

pub(crate) fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn arr(v: &Value) -> Vec<f64> {
    v.as_array().map(|a| a.iter().map(f).collect()).unwrap_or_default()
}

fn ci_str(v: &Value, p: usize) -> String {
    format!("{:.p$} [{:.p$}, {:.p$}]", f(&v["mean"]), f(&v["lo"]), f(&v["hi"]), p = p)
}

/// [`ci_str`], or "—" where there is no interval (null, or a mean that is not a number).
pub(crate) fn ci_or_dash(v: &Value, p: usize) -> String {
    if v["mean"].is_number() {
        ci_str(v, p)
    } else {
        "—".into()
    }
}

fn band(v: &Value, key: &str) -> Option<(Vec<f64>, Vec<f64>)> {
    Some((arr(&v[format!("{key}_lo")]), arr(&v[format!("{key}_hi")])))
}

/// The report page, from the summary alone (so every number shown is in summary.json).
pub fn render(s: &Value) -> String {
    let h = &s["headline"];
    let real = s["setting"] == "real";
    let judge = s["judge"].is_object();
    let task = s["config"]["real"]["task"].as_str().filter(|t| !t.is_empty());
    let mut page = Page::new(if task.is_some() {
        "mismatch: reward model, RL reward and evaluation on a real model with a verifiable gold"
    } else if real {
        "mismatch: reward model, RL reward and evaluation on real models and human labels"
    } else {
        "mismatch: reward model, RL reward and evaluation in the embedded world"
    });
    let mut items: Vec<(String, String)> = vec![];
    if h["gold_peak"].is_object() {
        items.push((
            format!("gold peak ({})", h["single_run"].as_str().unwrap_or("")),
            format!(
                "{:.3} at step {} (KL {:.2})",
                f(&h["gold_peak"]["gold"]),
                h["gold_peak"]["step"],
                f(&h["gold_peak"]["kl"])
            ),
        ));
        items.push((
            "gold at the end".into(),
            format!("{:.3} (KL {:.2})", f(&h["gold_final"]["gold"]), f(&h["gold_final"]["kl"])),
        ));
        items.push(("gold fell by (95% CI)".into(), ci_str(&h["gold_drop"], 3)));
        items.push(("proxy rose after the peak by".into(), ci_str(&h["proxy_rise_after_peak"], 3)));
        let fm: Vec<String> = h["failure_modes_rising"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
            .unwrap_or_default();
        items.push((
            "failure modes rising as gold falls".into(),
            if fm.is_empty() { "none".into() } else { fm.join(", ") },
        ));
        if h["best_mitigation"].is_object() {
            let b = &h["best_mitigation"];
            let end = if b["gold_vs_single_at_end"].is_object() {
                format!("; {} gold vs single at the end", ci_str(&b["gold_vs_single_at_end"], 2))
            } else {
                String::new()
            };
            items.push((
                "best mitigation (gold peak)".into(),
                format!(
                    "{}: peak {:.2} at step {}{end}",
                    b["name"].as_str().unwrap_or(""),
                    f(&b["peak_gold"]),
                    b["peak_step"]
                ),
            ));
        }
        if h["bon_single_fit"].is_object() {
            items.push(("best-of-n Gao fit R²".into(), format!("{:.3}", f(&h["bon_single_fit"]["r2"]))));
        }
    }
    page.headline(&items);

    page.section("What was run");
    if let Some(task) = task {
        let r = &s["config"]["real"];
        page.paragraph(format!(
            "A real model on a verifiable task ({task}): the policy {} (chat template: {}) answers generated problems \
             with known answers and is optimised against proxy reward models on {}. {} The correct meter is the share of \
             evaluation answers whose last number is the answer; refusal, hedging, repetition and filler are read by the \
             same phrase and n-gram rules as on open text.",
            r["policy"].as_str().unwrap_or("?"),
            r["chat"],
            r["rm_backbone"].as_str().unwrap_or("?"),
            s["gold"].as_str().unwrap_or(""),
        ));
    } else if real {
        let r = &s["config"]["real"];
        page.paragraph(format!(
            "Real models and data: the policy {} (chat template: {}) is optimised against proxy reward models on {} \
             trained on human preference labels from {}. Gold here is not a true reward: {} Evaluation prompts: {}. \
             Refusal is detected from the opening of a response by phrase matching, as XSTest's string-match \
             classifier does (Röttger et al. 2024); hedging, repetition and filler by phrase and n-gram rules.",
            r["policy"].as_str().unwrap_or("?"),
            r["chat"],
            r["rm_backbone"].as_str().unwrap_or("?"),
            r["pairs"].as_str().unwrap_or("?"),
            s["gold"].as_str().unwrap_or(""),
            match r["eval_prompts_file"].as_str() {
                Some(f) if !f.is_empty() => format!("{f} (safe prompts: benign refusal; unsafe: harmful refusal)"),
                _ => "first user turns of held-out test pairs".into(),
            }
        ));
    } else {
        page.paragraph(
        "The embedded world: a word-level task language with four kinds of prompt (lookup, compare, benign requests that \
         sound dangerous, harmful requests). A gold reward stands in for what users want: correct, concise answers; refusal \
         only of harmful requests; penalties for hedges, filler, repetition and garbage. Simulated annotators label pairs of \
         start-policy responses with a Bradley-Terry choice on gold plus a length bias, a hedging/safety-phrase bias and an \
         over-caution bias, and flip a share of labels (noise). Proxy reward models (a tiny GPT with a scalar head) learn from \
         those labels (the single proxy from all pairs, the other ensemble members from bootstrap resamples); best-of-n, RLOO and DPO then optimise against them while the gold reward watches (Gao et al. 2022).",
        );
    }
    page.code(s["command"].as_str().unwrap_or("mismatch run"));
    let starts = match (real, s["config"]["start_per_seed"].as_bool()) {
        (false, Some(true)) => " Each seed optimises from its own pre-trained start policy, so the bands and intervals carry the spread over start policies too.".to_string(),
        (false, _) => format!(" All seeds share one start policy (start_seed {}): the intervals do not carry the spread over start policies.", s["config"]["start_seed"]),
        (true, _) => String::new(),
    };
    page.paragraph(format!(
        "Seeds: {}. Curves are means over seeds; bands are Student-t 95% intervals across seeds.{starts}",
        s["seeds"]
    ));

    // Link 1: RM <-> policy.
    page.section("Link 1: reward model ↔ policy (over-optimisation)");
    let runs = s["runs"].as_array().cloned().unwrap_or_default();
    let bons = s["bon"].as_array().cloned().unwrap_or_default();
    let mut bon_plot = LinePlot {
        title: "Best-of-n: gold and proxy vs d = √KL".into(),
        x_label: "d = √KL(π‖π_start)".into(),
        y_label: "score".into(),
        ..Default::default()
    };
    for b in &bons {
        let name = b["name"].as_str().unwrap_or("");
        if name == "bon-single" || name == "bon-gold" {
            bon_plot.series.push(Series {
                name: format!("{name}: gold"),
                xs: arr(&b["d"]),
                ys: arr(&b["gold"]),
                band: band(b, "gold"),
                points: true,
                ..Default::default()
            });
        }
        if name == "bon-single" {
            bon_plot.series.push(Series {
                name: format!("{name}: proxy"),
                xs: arr(&b["d"]),
                ys: arr(&b["proxy"]),
                dashed: true,
                ..Default::default()
            });
        }
    }
    page.plot(bon_plot.to_svg());
    guided_section(&mut page, s);
    let mut rl_plot = LinePlot {
        title: "RL: gold (solid) and proxy (dashed) vs d".into(),
        x_label: "d = √KL(π‖π_start)".into(),
        y_label: "score".into(),
        ..Default::default()
    };
    for r in &runs {
        let name = r["name"].as_str().unwrap_or("");
        rl_plot.series.push(Series {
            name: format!("{name} gold"),
            xs: arr(&r["d"]),
            ys: arr(&r["gold"]),
            // One band only (the headline run): with a few seeds the t bands are wide and hide the lines.
            band: if r["name"] == h["single_run"] { band(r, "gold") } else { None },
            points: true,
            ..Default::default()
        });
        if name.starts_with("rl-single") {
            rl_plot.series.push(Series {
                name: format!("{name} proxy"),
                xs: arr(&r["d"]),
                ys: arr(&r["proxy"]),
                dashed: true,
                ..Default::default()
            });
        }
    }
    page.plot(rl_plot.to_svg());
    let mut rows = vec![];
    for b in &bons {
        rows.push(vec![
            b["name"].as_str().unwrap_or("").to_string(),
            "d(α − βd)".into(),
            format!("{:.3}", f(&b["alpha"])),
            format!("{:.3}", f(&b["beta"])),
            format!("{:.3}", f(&b["r2"])),
            fmt_opt(&b["fit"]["d_star"]),
        ]);
    }
    for r in &runs {
        rows.push(vec![
            r["name"].as_str().unwrap_or("").to_string(),
            "d(α − β ln d)".into(),
            format!("{:.3}", f(&r["alpha"])),
            format!("{:.3}", f(&r["beta"])),
            format!("{:.3}", f(&r["r2"])),
            fmt_opt(&r["fit"]["d_star"]),
        ]);
    }
    page.paragraph("Gao et al.'s functional forms fitted to gold − gold(start) against d:");
    page.table(&["curve", "form", "α", "β", "R²", "d*"], &rows);
    let mut rows = vec![];
    for r in &runs {
        rows.push(vec![
            r["name"].as_str().unwrap_or("").to_string(),
            format!("{:.3} (step {}, KL {:.2})", f(&r["peak"]["gold"]), r["peak"]["step"], f(&r["peak"]["kl"])),
            format!("{:.3} (KL {:.2})", f(&r["final"]["gold"]), f(&r["final"]["kl"])),
            ci_str(&r["gold_drop"], 3),
            ci_str(&r["proxy_rise_after_peak"], 3),
        ]);
    }
    page.paragraph("Gold peak and fall per run (the drop is paired by seed and prompt, bootstrap 95% CI):");
    page.table(&["run", "gold peak", "gold at end", "gold drop after peak", "proxy rise after peak"], &rows);

    // Link 2: RM <-> eval.
    page.section("Link 2: reward model ↔ evaluation");
    let human = real && task.is_none();
    page.paragraph(if task.is_some() {
        format!(
            "Held-out pairs of two start-policy answers to one problem, labelled by the simulated annotators (never \
             trained on). The annotators themselves agree with gold on {} of them (a tie counts as a miss). Accuracy vs \
             annotators and ECE are against their labels.",
            ci_str(&s["annotators_acc_gold"], 3)
        )
    } else if human {
        let g = if judge { "the judge" } else { "the gold RM" };
        format!(
            "Held-out human-labelled pairs (never trained on). {} itself agrees with the held-out human labels on {} \
             of them: the ceiling on how far its verdicts can be trusted. Accuracy vs gold is agreement with {g}; \
             accuracy vs annotators is accuracy on the held-out human labels; ECE is against the human labels.",
            if judge { "The judge" } else { "The gold RM" },
            ci_str(&s["annotators_acc_gold"], 3)
        )
    } else {
        format!(
            "Held-out pairs of start-policy responses. The annotators themselves agree with gold on {} of the pairs with distinct gold.",
            ci_str(&s["annotators_acc_gold"], 3)
        )
    });
    let mut rows = vec![];
    for r in s["reward_models"].as_array().cloned().unwrap_or_default() {
        rows.push(vec![
            r["name"].as_str().unwrap_or("").to_string(),
            ci_str(&r["acc_gold"], 3),
            ci_str(&r["acc_annotators"], 3),
            ci_str(&r["ece"], 3),
            ci_str(&r["length_corr"], 3),
            ci_str(&r["gold_length_corr"], 3),
        ]);
    }
    let header: [&str; 6] = if human {
        [
            "RM (kind-pairs)",
            if judge { "agreement with the judge" } else { "agreement with the gold RM" },
            "accuracy on held-out human labels",
            "ECE vs human labels",
            "corr(score, length)",
            "corr(gold RM, length)",
        ]
    } else {
        [
            "RM (kind-pairs)",
            "accuracy vs gold",
            "accuracy vs annotators",
            if task.is_some() { "ECE vs annotators" } else { "ECE vs gold" },
            "corr(score, length)",
            "corr(gold, length)",
        ]
    };
    page.table(&header, &rows);

    // Link 3: policy <-> eval.
    page.section("Link 3: policy ↔ evaluation");
    page.paragraph(format!(
        "Spearman's ρ between the training reward (the optimised proxy, on held-out prompts) and {} across \
         checkpoints of all seeds, and between the training reward and over-refusal (the share of benign prompts \
         refused), with bootstrap 95% intervals:",
        if judge { "gold — the judge's win rate against the start policy" } else { "gold" }
    ));
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r["name"].as_str().unwrap_or("").to_string(),
                ci_str(&r["spearman_proxy_gold"], 3),
                ci_or_dash(&r["spearman_proxy_over_refusal"], 3),
            ]
        })
        .collect();
    let against = if judge { "ρ(training reward, judge win rate)" } else { "ρ(training reward, gold)" };
    page.table(&["run", against, "ρ(training reward, over-refusal)"], &rows);
    // Each run's path through (training reward, gold), step by step: where training and
    // evaluation agree it climbs to the right; over-optimisation bends it down.
    let series: Vec<Series> = runs
        .iter()
        .map(|r| Series {
            name: r["name"].as_str().unwrap_or("").to_string(),
            xs: arr(&r["proxy"]),
            ys: arr(&r["gold"]),
            points: true,
            ..Default::default()
        })
        .collect();
    let y_label = if judge { "judge win rate vs start" } else { "gold" };
    page.plot(
        LinePlot {
            title: format!("{y_label} against training reward, along training (mean over seeds)"),
            x_label: "training reward (proxy)".into(),
            y_label: y_label.into(),
            series,
            ..Default::default()
        }
        .to_svg(),
    );
    if judge {
        judge_section(&mut page, s);
    }

    page.section("Failure modes over training");
    if let Some(r) = runs.iter().find(|r| r["name"] == h["single_run"]) {
        let steps = arr(&r["step"]);
        let title = format!("{}: meters vs step", r["name"].as_str().unwrap_or(""));
        let rates = ["benign_refusal", "hedging", "repetition", "correct", "harmful_refusal"];
        page.plot(meter_plot(title, "rate", &steps, r, &rates));
        let title = "length (words) and filler sentences vs step".to_string();
        page.plot(meter_plot(title, "per response", &steps, r, &["length", "filler", "garbage"]));
        let rows: Vec<Vec<String>> = r["meter_rise_after_peak"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| vec![k.clone(), ci_str(v, 3)]).collect())
            .unwrap_or_default();
        page.paragraph("Change of each failure meter from the gold peak to the end (t 95% CI across seeds):");
        page.table(&["meter", "rise after the gold peak"], &rows);
    }
    let mut rows = vec![];
    for m in h["mitigations"].as_array().cloned().unwrap_or_default() {
        rows.push(vec![
            m["name"].as_str().unwrap_or("").to_string(),
            format!("{:.3}", f(&m["peak_gold"])),
            format!("{}", m["peak_step"]),
            format!("{:.2}", f(&m["peak_kl"])),
            format!("{:.3}", f(&m["final_gold"])),
            if m["gold_vs_single_at_peak"].is_object() {
                ci_str(&m["gold_vs_single_at_peak"], 3)
            } else {
                "—".into()
            },
            if m["gold_vs_single_at_end"].is_object() { ci_str(&m["gold_vs_single_at_end"], 3) } else { "—".into() },
        ]);
    }
    page.section("Mitigations");
    page.paragraph("Gold peak height and position per reward model at the small KL coefficient (conservative ensembles: Coste et al. 2023; WARM: Ramé et al. 2024). The last two columns compare each mitigation's gold with the single proxy's, paired by seed and prompt (positive = better), with a two-stage bootstrap 95% CI over seeds and prompts:");
    page.table(
        &["run", "gold peak", "peak step", "KL at peak", "gold at end", "vs single at peak", "vs single at end"],
        &rows,
    );
    // Gold along training for the single proxy and each mitigation at the same β.
    let names: Vec<&str> =
        h["mitigations"].as_array().map(|a| a.iter().filter_map(|m| m["name"].as_str()).collect()).unwrap_or_default();
    let series: Vec<Series> = runs
        .iter()
        .filter(|r| names.iter().any(|n| r["name"] == *n))
        .map(|r| Series {
            name: r["name"].as_str().unwrap_or("").to_string(),
            xs: arr(&r["step"]),
            ys: arr(&r["gold"]),
            points: true,
            ..Default::default()
        })
        .collect();
    if series.len() > 1 {
        let title = "Gold vs step: the single proxy and each mitigation".to_string();
        page.plot(
            LinePlot { title, x_label: "step".into(), y_label: "gold".into(), series, ..Default::default() }.to_svg(),
        );
    }

    per_seed_table(&mut page, s);

    page.section("Reproduce");
    page.code(s["command"].as_str().unwrap_or("mismatch run"));
    page.paragraph("The full configuration is in summary.json (field config) and config.toml next to this page; raw per-step metrics are under metrics/.");
    page.render()
}

/// How far the judge that is gold can be trusted: its position consistency, its pull to one
/// position and its unreadable verdicts, on the policies' completions and on the held-out
/// human pairs, and its agreement with the human labels.
fn judge_section(page: &mut Page, s: &Value) {
    let j = &s["judge"];
    page.section("The judge");
    page.paragraph(format!(
        "Gold is the judge {}: every completion is judged against the start policy's completion to the same prompt in \
         both orders, and gold is the swap-averaged preference (½ = as good as the start policy). It agrees with the \
         held-out human labels on {} of the pairs (a tie counts as a miss).",
        j["name"].as_str().unwrap_or("?"),
        ci_str(&j["agreement_with_humans"], 3)
    ));
    let rows: Vec<Vec<String>> =
        [("policy vs start policy", &j["vs_start"]), ("held-out human pairs", &j["human_pairs"])]
            .iter()
            .map(|(name, v)| {
                let c = &v["counts"];
                vec![
                    name.to_string(),
                    format!("{}", c["judged"]),
                    format!("{}", c["identical"]),
                    format!("{}", c["repeated"]),
                    ci_or_dash(&v["position_consistency"], 3),
                    ci_or_dash(&v["position_a_rate"], 3),
                    format!("{} + {}", c["unparsed_1_first"], c["unparsed_2_first"]),
                    format!("{}", c["unscored"]),
                ]
            })
            .collect();
    page.table(
        &[
            "pairs",
            "judged (both orders)",
            "identical (tie, not judged)",
            "read again (not judged)",
            "position consistency",
            "names position A",
            "unparsed verdicts (each order)",
            "unscored (scored ½)",
        ],
        &rows,
    );
}

/// Headline numbers seed by seed: the intervals above say how wide the spread is, this says
/// whether one seed (in the world, one start policy) carries a result.
fn per_seed_table(page: &mut Page, s: &Value) {
    let Some(seeds) = s["headline"]["per_seed"].as_array().filter(|a| !a.is_empty()) else { return };
    let kinds: Vec<String> =
        seeds[0]["gold_vs_single_at_end"].as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    let world = seeds[0]["start_seed"].is_u64();
    let mut header = vec!["seed".to_string()];
    if world {
        header.push("start policy".into());
    }
    header.extend(["gold drop after peak".into(), "proxy rise after peak".into()]);
    header.extend(kinds.iter().map(|k| format!("{} vs single at end", k.to_uppercase())));
    let rows: Vec<Vec<String>> = seeds
        .iter()
        .map(|r| {
            let mut row = vec![r["seed"].to_string()];
            if world {
                row.push(r["start_seed"].to_string());
            }
            row.extend([format!("{:.3}", f(&r["gold_drop"])), format!("{:.3}", f(&r["proxy_rise_after_peak"]))]);
            row.extend(kinds.iter().map(|k| format!("{:.3}", f(&r["gold_vs_single_at_end"][k]))));
            row
        })
        .collect();
    page.paragraph(format!(
        "Per seed (means over the held-out prompts; the single proxy at β = {}, its drop measured from the mean curve's peak){}:",
        s["config"]["rl"]["kl_coefs"][0],
        if world { "; each seed optimises from its own pre-trained start policy" } else { "" }
    ));
    page.table(&header, &rows);
}

fn fmt_opt(v: &Value) -> String {
    v.as_f64().map(|x| format!("{x:.3}")).unwrap_or_else(|| "—".into())
}

/// One run's failure meters `meters` (per evaluation point) against training step.
fn meter_plot(title: String, y_label: &str, steps: &[f64], run: &Value, meters: &[&str]) -> String {
    let series = meters
        .iter()
        .map(|&m| Series {
            name: m.into(),
            xs: steps.to_vec(),
            ys: arr(&run["meters"][m]),
            points: true,
            ..Default::default()
        })
        .collect();
    LinePlot { title, x_label: "step".into(), y_label: y_label.into(), series, ..Default::default() }.to_svg()
}

/// Value-guided decoding beside best-of-n: gold (solid) and proxy (dashed) of RAD and blockwise
/// controlled decoding against d, best-of-n's gold for reference, and a table of the points.
fn guided_section(page: &mut Page, s: &Value) {
    let Some(curves) = s["guided"].as_array() else { return };
    let mut plot = LinePlot {
        title: "Guided decoding vs the single proxy: gold and proxy vs d".into(),
        x_label: "d = √KL(π‖π_start)  (RAD: estimated; blockwise: bound)".into(),
        y_label: "score".into(),
        ..Default::default()
    };
    for c in curves {
        let name = c["name"].as_str().unwrap_or("");
        plot.series.push(Series {
            name: format!("{name}: gold"),
            xs: arr(&c["d"]),
            ys: arr(&c["gold"]),
            band: band(c, "gold"),
            points: true,
            ..Default::default()
        });
        plot.series.push(Series {
            name: format!("{name}: proxy"),
            xs: arr(&c["d"]),
            ys: arr(&c["proxy"]),
            dashed: true,
            ..Default::default()
        });
    }
    if let Some(b) = s["bon"].as_array().and_then(|b| b.iter().find(|b| b["name"] == "bon-single")) {
        plot.series.push(Series {
            name: "bon-single: gold".into(),
            xs: arr(&b["d"]),
            ys: arr(&b["gold"]),
            points: true,
            ..Default::default()
        });
    }
    page.plot(plot.to_svg());
    let mut rows = vec![];
    for c in curves {
        let (name, param) = (c["name"].as_str().unwrap_or(""), arr(&c["param"]));
        let label = if c["kl_is_bound"] == true { "K" } else { "β" };
        for (j, p) in param.iter().enumerate() {
            let at = |k: &str| f(&c[k][j]);
            rows.push(vec![
                name.to_string(),
                format!("{label} = {p}"),
                format!("{:.2} [{:.2}, {:.2}]", at("kl"), at("kl_lo"), at("kl_hi")),
                format!("{:.3} [{:.3}, {:.3}]", at("proxy"), at("proxy_lo"), at("proxy_hi")),
                format!("{:.3} [{:.3}, {:.3}]", at("gold"), at("gold_lo"), at("gold_hi")),
            ]);
        }
    }
    page.paragraph(
        "RAD (Deng & Raffel 2023) picks every token among the top-k by logit + β·proxy; blockwise controlled \
         decoding (Mudgal et al. 2024) keeps the proxy's favourite of K sampled blocks. KL is RAD's per-sample \
         estimate Σ_t KL(q_t‖π_t) and blockwise's bound blocks × (log K − (K−1)/K); intervals across seeds.",
    );
    page.table(&["decoder", "setting", "KL", "proxy", "gold"], &rows);
}
