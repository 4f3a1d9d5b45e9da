//! Aggregates the seeds' results into `summary.json`: every number the report shows.
//!
//! Curves are means over seeds at each evaluation step with a Student-t 95% band across seeds
//! (`*_lo`, `*_hi`). Gao fits use d = √KL and gold centred on the start policy (gold − gold at
//! step 0 / n = 1). The gold drop of a run is the paired difference (same seed, same prompt)
//! between the step where the mean gold peaks and the last step; its CI is a two-stage bootstrap
//! over seeds and then prompts ([`clustered_diff_ci`]), so it carries the run-to-run spread.
//! Mitigations are compared with the single proxy the same way (same seeds, same prompts).

use crate::pipeline::SeedResult;
use crate::proxy::RmKind;
use mismatch_eval::stats::{clustered_diff_ci, spearman_ci, t_ci, Ci};
use mismatch_report::fit::{fit_bon, fit_rl, Fit};
use mismatch_world::meters::FAILURE_METERS;
use serde_json::{json, Value};

/// One (a, b) cluster per seed, for [`clustered_diff_ci`].
fn paired<'a>(n_seeds: usize, get: impl Fn(usize) -> (&'a Vec<f64>, &'a Vec<f64>)) -> Vec<(Vec<f64>, Vec<f64>)> {
    (0..n_seeds).map(|s| (get(s).0.clone(), get(s).1.clone())).collect()
}

fn ci(c: &Ci) -> Value {
    json!({"mean": c.mean, "lo": c.lo, "hi": c.hi, "n": c.n})
}

fn fit_json(f: &Fit) -> Value {
    json!({"alpha": f.alpha, "beta": f.beta, "r2": f.r2, "d_star": f.d_star, "r_star": f.r_star, "n": f.n})
}

/// Per-step mean and t band across seeds of `get(seed, eval index)`.
fn across(n_seeds: usize, n_points: usize, get: impl Fn(usize, usize) -> f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let (mut m, mut lo, mut hi) = (vec![], vec![], vec![]);
    for j in 0..n_points {
        let xs: Vec<f64> = (0..n_seeds).map(|s| get(s, j)).collect();
        let c = t_ci(&xs);
        m.push(c.mean);
        lo.push(c.lo);
        hi.push(c.hi);
    }
    (m, lo, hi)
}

pub fn summarise(results: &[SeedResult], command: &str, config: &crate::config::RunConfig) -> Value {
    let ns = results.len();
    let mut runs = Vec::new();
    for (r, first) in results[0].runs.iter().enumerate() {
        let np = first.evals.iter().map(|_| 1).sum::<usize>();
        let ev = |s: usize, j: usize| &results[s].runs[r].evals[j];
        let (kl, kl_lo, kl_hi) = across(ns, np, |s, j| ev(s, j).kl);
        let (proxy, proxy_lo, proxy_hi) = across(ns, np, |s, j| ev(s, j).proxy);
        let (gold, gold_lo, gold_hi) = across(ns, np, |s, j| ev(s, j).gold);
        let steps: Vec<usize> = first.evals.iter().map(|e| e.step).collect();
        let mut meters = serde_json::Map::new();
        for name in [
            "correct",
            "benign_refusal",
            "harmful_refusal",
            "hedging",
            "repetition",
            "filler",
            "length",
            "garbage",
            "distinct1",
            "distinct2",
        ] {
            let (m, _, _) = across(ns, np, |s, j| ev(s, j).meters.get(name).unwrap_or(f64::NAN));
            meters.insert(name.into(), json!(m));
        }
        let d: Vec<f64> = kl.iter().map(|k| k.max(0.0).sqrt()).collect();
        let centred: Vec<f64> = gold.iter().map(|g| g - gold[0]).collect();
        let fit = fit_rl(&d, &centred);
        let peak = (0..np).max_by(|&a, &b| gold[a].total_cmp(&gold[b]).then(b.cmp(&a))).unwrap_or(0);
        let last = np - 1;
        let drop = clustered_diff_ci(&paired(ns, |s| (&ev(s, peak).golds, &ev(s, last).golds)), 17);
        let proxy_rise = clustered_diff_ci(&paired(ns, |s| (&ev(s, last).proxies, &ev(s, peak).proxies)), 19);
        // Meter rise from the gold peak to the end, paired by (seed, prompt).
        let mut rises = serde_json::Map::new();
        for name in FAILURE_METERS {
            let clusters: Vec<(Vec<f64>, Vec<f64>)> = (0..ns)
                .map(|s| {
                    ev(s, last).per_sample[name]
                        .iter()
                        .zip(&ev(s, peak).per_sample[name])
                        .filter(|(x, y)| x.is_finite() && y.is_finite())
                        .map(|(x, y)| (*x, *y))
                        .unzip()
                })
                .collect();
            rises.insert(name.to_string(), ci(&clustered_diff_ci(&clusters, 29)));
        }
        let (mut xs, mut ys) = (vec![], vec![]);
        for s in 0..ns {
            for j in 0..np {
                xs.push(ev(s, j).proxy);
                ys.push(ev(s, j).gold);
            }
        }
        let rho = spearman_ci(&xs, &ys, 23);
        // Over-refusal (refusals of benign prompts) against the training reward, where defined.
        let (xs, zs): (Vec<f64>, Vec<f64>) = (0..ns)
            .flat_map(|s| (0..np).map(move |j| (s, j)))
            .map(|(s, j)| (ev(s, j).proxy, ev(s, j).meters.benign_refusal))
            .filter(|(x, z)| x.is_finite() && z.is_finite())
            .unzip();
        let rho_refusal = spearman_ci(&xs, &zs, 41);
        runs.push(json!({
            "name": first.name,
            "step": steps,
            "kl": kl, "kl_lo": kl_lo, "kl_hi": kl_hi,
            "d": d,
            "proxy": proxy, "proxy_lo": proxy_lo, "proxy_hi": proxy_hi,
            "gold": gold, "gold_lo": gold_lo, "gold_hi": gold_hi,
            "meters": meters,
            "fit": fit_json(&fit),
            "alpha": fit.alpha, "beta": fit.beta, "r2": fit.r2,
            "peak": {"index": peak, "step": steps[peak], "kl": kl[peak], "gold": gold[peak], "proxy": proxy[peak]},
            "final": {"step": steps[last], "kl": kl[last], "gold": gold[last], "proxy": proxy[last]},
            "gold_drop": ci(&drop),
            "proxy_rise_after_peak": ci(&proxy_rise),
            "meter_rise_after_peak": rises,
            "spearman_proxy_gold": ci(&rho),
            "spearman_proxy_over_refusal": ci(&rho_refusal),
        }));
    }

    let mut bon = Vec::new();
    for (c, first) in results[0].bon.iter().enumerate() {
        let np = first.n.len();
        let (proxy, proxy_lo, proxy_hi) = across(ns, np, |s, j| results[s].bon[c].proxy[j]);
        let (gold, gold_lo, gold_hi) = across(ns, np, |s, j| results[s].bon[c].gold[j]);
        let d: Vec<f64> = first.kl.iter().map(|k| k.sqrt()).collect();
        let centred: Vec<f64> = gold.iter().map(|g| g - gold[0]).collect();
        let fit = fit_bon(&d, &centred);
        bon.push(json!({
            "name": first.name, "n": first.n, "kl": first.kl, "d": d,
            "proxy": proxy, "proxy_lo": proxy_lo, "proxy_hi": proxy_hi,
            "gold": gold, "gold_lo": gold_lo, "gold_hi": gold_hi,
            "fit": fit_json(&fit), "alpha": fit.alpha, "beta": fit.beta, "r2": fit.r2,
        }));
    }

    let mut guided = Vec::new();
    for (c, first) in results[0].guided.iter().enumerate() {
        let np = first.param.len();
        let (kl, kl_lo, kl_hi) = across(ns, np, |s, j| results[s].guided[c].kl[j]);
        let (proxy, proxy_lo, proxy_hi) = across(ns, np, |s, j| results[s].guided[c].proxy[j]);
        let (gold, gold_lo, gold_hi) = across(ns, np, |s, j| results[s].guided[c].gold[j]);
        let d: Vec<f64> = kl.iter().map(|k| k.max(0.0).sqrt()).collect();
        // The point of highest mean gold, and how far gold falls from it to the last point.
        let peak = (0..np).fold(0, |b, j| if gold[j] > gold[b] { j } else { b });
        let drop = t_ci(&results.iter().map(|r| r.guided[c].gold[peak] - r.guided[c].gold[np - 1]).collect::<Vec<_>>());
        guided.push(json!({
            "name": first.name, "param": first.param, "kl_is_bound": first.kl_is_bound,
            "kl": kl, "kl_lo": kl_lo, "kl_hi": kl_hi, "d": d,
            "proxy": proxy, "proxy_lo": proxy_lo, "proxy_hi": proxy_hi,
            "gold": gold, "gold_lo": gold_lo, "gold_hi": gold_hi,
            "peak": {"index": peak, "param": first.param[peak], "gold": gold[peak], "kl": kl[peak]},
            "gold_drop": ci(&drop),
        }));
    }

    let mut rms = Vec::new();
    for (k, first) in results[0].rms.iter().enumerate() {
        let get = |f: &dyn Fn(&crate::pipeline::RmEval) -> f64| {
            ci(&t_ci(&results.iter().map(|s| f(&s.rms[k])).collect::<Vec<_>>()))
        };
        rms.push(json!({
            "name": first.name, "kind": first.kind, "pairs": first.pairs,
            "acc_gold": get(&|e| e.acc_gold),
            "acc_annotators": get(&|e| e.acc_annotators),
            "ece": get(&|e| e.ece),
            "length_corr": get(&|e| e.length_corr),
            "gold_length_corr": get(&|e| e.gold_length_corr),
        }));
    }
    let ann = t_ci(&results.iter().map(|s| s.annotator_acc_gold).collect::<Vec<_>>());

    let vs_single = versus_single(results, &runs, config);
    let mut headline = headline(&runs, &bon, config, &vs_single);
    headline["per_seed"] = per_seed(results, &runs, config);
    let mut out = json!({
        "command": command,
        "seeds": results.iter().map(|s| s.seed).collect::<Vec<_>>(),
        "config": config,
        "headline": headline,
        "annotators_acc_gold": ci(&ann),
        "reward_models": rms,
        "bon": bon,
        "runs": runs,
    });
    if !guided.is_empty() {
        out["guided"] = guided.into();
    }
    if let Some(first) = &results[0].judge {
        let mut vs_start = crate::real::judge::JudgeCounts::default();
        for r in results {
            vs_start.merge(&r.judge.as_ref().expect("every seed has the judge").vs_start);
        }
        out["judge"] = json!({
            "name": first.name,
            "vs_start": judge_json(&vs_start),
            "human_pairs": judge_json(&first.human_pairs),
            // Every seed shares the judge's verdicts on the held-out pairs: the interval is over pairs.
            "agreement_with_humans": rate_ci(first.agrees_with_humans, first.held_out_pairs, 59),
        });
    }
    out
}

/// A judge's counts with its rates, each with a bootstrap 95% CI over the pairs (null where
/// there is nothing to count): position consistency (consistent ÷ pairs with both verdicts
/// read), the rate of naming position A (÷ read verdicts), and the unparsed rate (÷ verdicts
/// asked for, two per judged pair).
fn judge_json(c: &crate::real::judge::JudgeCounts) -> Value {
    let unparsed = c.unparsed_1_first + c.unparsed_2_first;
    json!({
        "counts": c,
        "position_consistency": rate_ci(c.consistent, c.both, 43),
        "position_a_rate": rate_ci(c.picks_a, c.verdicts, 47),
        "unparsed_rate": rate_ci(unparsed, 2 * c.judged, 53),
    })
}

/// `hits` of `of` as a rate with its bootstrap 95% CI ([`mismatch_eval::stats::proportion_ci`]);
/// null when there is nothing to count.
fn rate_ci(hits: usize, of: usize, seed: u64) -> Value {
    if of == 0 {
        return Value::Null;
    }
    let xs: Vec<bool> = (0..of).map(|i| i < hits).collect();
    ci(&mismatch_eval::stats::proportion_ci(&xs, seed))
}

/// The name of the RLOO run against `kind` at the first (small) KL coefficient: the runs the
/// headline and the mitigation comparisons read.
fn small_beta_run(kind: RmKind, cfg: &crate::config::RunConfig) -> String {
    crate::pipeline::run_name_rl(kind, cfg.rl.kl_coefs[0])
}

/// Index of the run called `name` (every seed runs the same list).
fn run_index(results: &[SeedResult], name: &str) -> Option<usize> {
    results[0].runs.iter().position(|r| r.name == name)
}

/// Each mitigation run against the single proxy at the same KL coefficient, paired by (seed,
/// prompt): gold at its own peak minus the single run's gold at its peak, and the same at the
/// last step (positive = the mitigation is better).
fn versus_single(
    results: &[SeedResult],
    runs: &[Value],
    cfg: &crate::config::RunConfig,
) -> serde_json::Map<String, Value> {
    let mut out = serde_json::Map::new();
    let Some(si) = run_index(results, &small_beta_run(RmKind::Single, cfg)) else { return out };
    let peak_of = |i: usize| runs[i]["peak"]["index"].as_u64().unwrap_or(0) as usize;
    for &k in &cfg.rl.mitigations {
        let name = small_beta_run(k, cfg);
        let Some(mi) = run_index(results, &name) else { continue };
        let golds = |s: usize, run: usize, j: usize| &results[s].runs[run].evals[j].golds;
        let (last_m, last_s) = (results[0].runs[mi].evals.len() - 1, results[0].runs[si].evals.len() - 1);
        let ns = results.len();
        let at_peak = clustered_diff_ci(&paired(ns, |s| (golds(s, mi, peak_of(mi)), golds(s, si, peak_of(si)))), 31);
        let at_end = clustered_diff_ci(&paired(ns, |s| (golds(s, mi, last_m), golds(s, si, last_s))), 37);
        out.insert(name, json!({"gold_vs_single_at_peak": ci(&at_peak), "gold_vs_single_at_end": ci(&at_end)}));
    }
    out
}

/// The single proxy's gold drop and proxy rise (at the mean curve's peak, as in the headline)
/// and each mitigation's gold against the single proxy's at the end, per seed (means over
/// prompts): whether one seed, and in the world its start policy, carries a headline number.
fn per_seed(results: &[SeedResult], runs: &[Value], cfg: &crate::config::RunConfig) -> Value {
    let Some(si) = run_index(results, &small_beta_run(RmKind::Single, cfg)) else { return json!([]) };
    let peak = runs[si]["peak"]["index"].as_u64().unwrap_or(0) as usize;
    let mean = |v: &[f64]| mismatch_eval::stats::mean(v);
    let rows = results.iter().map(|r| {
        let ev = &r.runs[si].evals;
        let last = ev.len() - 1;
        let mut row = json!({
            "seed": r.seed,
            "gold_drop": mean(&ev[peak].golds) - mean(&ev[last].golds),
            "proxy_rise_after_peak": mean(&ev[last].proxies) - mean(&ev[peak].proxies),
        });
        if cfg.real.is_none() {
            row["start_seed"] = json!(cfg.start_seed_of(r.seed));
        }
        let mut at_end = serde_json::Map::new();
        for &k in &cfg.rl.mitigations {
            if let Some(mi) = run_index(results, &small_beta_run(k, cfg)) {
                let m = &r.runs[mi].evals;
                at_end.insert(k.name().into(), json!(mean(&m[m.len() - 1].golds) - mean(&ev[last].golds)));
            }
        }
        row["gold_vs_single_at_end"] = Value::Object(at_end);
        row
    });
    Value::Array(rows.collect())
}

fn headline(
    runs: &[Value],
    bon: &[Value],
    cfg: &crate::config::RunConfig,
    vs_single: &serde_json::Map<String, Value>,
) -> Value {
    let small = small_beta_run(RmKind::Single, cfg);
    let find = |n: &str| runs.iter().find(|r| r["name"] == n);
    let mut h = serde_json::Map::new();
    if let Some(r) = find(&small) {
        h.insert("single_run".into(), json!(small));
        h.insert("gold_peak".into(), r["peak"].clone());
        h.insert("gold_final".into(), r["final"].clone());
        h.insert("gold_drop".into(), r["gold_drop"].clone());
        h.insert("proxy_rise_after_peak".into(), r["proxy_rise_after_peak"].clone());
        let rising: Vec<&String> = r["meter_rise_after_peak"]
            .as_object()
            .map(|o| o.iter().filter(|(_, v)| v["lo"].as_f64().unwrap_or(0.0) > 0.0).map(|(k, _)| k).collect())
            .unwrap_or_default();
        h.insert("failure_modes_rising".into(), json!(rising));
        // Mitigations: gold peak height and position per RM kind at the same KL coefficient.
        let mut best: Option<(Value, f64)> = None;
        let mut per = Vec::new();
        for k in std::iter::once(RmKind::Single).chain(cfg.rl.mitigations.iter().copied()) {
            let name = small_beta_run(k, cfg);
            if let Some(m) = find(&name) {
                let g = m["peak"]["gold"].as_f64().unwrap_or(f64::NAN);
                let mut e = json!({"name": name, "rm": k.name(), "peak_gold": g, "peak_step": m["peak"]["step"], "peak_kl": m["peak"]["kl"], "final_gold": m["final"]["gold"]});
                if let Some(Value::Object(v)) = vs_single.get(&name) {
                    e.as_object_mut().expect("object").extend(v.clone());
                }
                if k != RmKind::Single && best.as_ref().is_none_or(|b| g > b.1) {
                    best = Some((e.clone(), g));
                }
                per.push(e);
            }
        }
        h.insert("mitigations".into(), json!(per));
        if let Some((e, _)) = best {
            h.insert("best_mitigation".into(), e);
        }
    }
    if let Some(b) = bon.iter().find(|b| b["name"] == "bon-single") {
        h.insert("bon_single_fit".into(), b["fit"].clone());
    }
    Value::Object(h)
}
