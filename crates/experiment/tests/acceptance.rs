//! End-to-end checks of `mismatch run`.
//!
//! - `small_run_is_deterministic_and_renders`: a small config (one seed, a few steps), run twice;
//!   the two summary.json files must be byte-identical, and the report must render in headless
//!   Chromium with its plots and no console errors (screenshot kept under target/).
//! - `unseen_start_policy_over_optimises`: the headline on one start policy the defaults were
//!   not chosen on (seed 7 of the seeds 5–9 set), with the default world and RL but only what
//!   the single proxy's run needs (one RM member at 600 pairs, no mitigations, no DPO, a small
//!   best-of-n): gold peaks and then falls while the proxy keeps rising (both 95% CIs above 0),
//!   the text degenerates, and a second run gives the same summary.json bytes. About a minute in
//!   a debug build.
//! - `default_run_acceptance` (ignored in debug builds: it runs the real default config, about
//!   3 minutes in release): `cargo test --release -p mismatch-experiment --test acceptance -- --ignored`.
//!   Checks the acceptance criteria on the default world, and that with the annotator
//!   biases off the mismatch shrinks.
//! - `other_start_policies_still_over_optimise` (ignored likewise, about 2.5 minutes): the same
//!   experiment on seeds 5–9, whose five start policies the default run never sees. It checks
//!   the part of the headline that held on every set of start policies measured (gold falls,
//!   the proxy keeps rising, the text degenerates, best-of-n follows Gao's form); the failure
//!   meters beyond degeneration and the mitigations' lead did not (README, "What the default
//!   run shows").

use mismatch_experiment::config::RunConfig;
use mismatch_experiment::proxy::RmKind;
use serde_json::Value;
use std::path::Path;

fn small() -> RunConfig {
    let mut c = RunConfig::default();
    c.seeds = 1;
    c.threads = 1;
    c.eval_prompts = 16;
    c.start.steps = 60;
    c.start.demos = 800;
    c.start.n_embd = 32;
    c.data.pair_sizes = vec![100, 200];
    c.data.eval_pairs = 100;
    c.rm.members = 2;
    c.rm.train.epochs = 1;
    c.bon.n_max = 8;
    c.bon.prompts = 8;
    c.bon.ns = vec![1, 2, 4, 8];
    c.rl.steps = 6;
    c.rl.eval_every = 3;
    c.rl.mitigations = vec![RmKind::Wco, RmKind::Warm];
    c.dpo.steps = 4;
    c.dpo.eval_every = 2;
    c
}

fn run(cfg: &RunConfig, out: &Path, home: &Path) -> Value {
    std::env::set_var("MISMATCH_HOME", home);
    mismatch_experiment::report::run_and_report(cfg, out, "mismatch run --config test.toml", false).unwrap()
}

fn check_page(out: &Path, shot_name: &str) {
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join(shot_name);
    let c = mismatch_report::browser::check_in_chromium(&out.join("report.html"), Some(&shot)).unwrap();
    assert!(c.ok && c.console_errors.is_empty(), "{c:?}");
    assert!(c.plots >= 4, "only {} plots rendered", c.plots);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "screenshot {} is empty", shot.display());
}

#[test]
fn small_run_is_deterministic_and_renders() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = small();
    let s = run(&cfg, a.path(), home.path());
    run(&cfg, b.path(), home.path());
    let read = |d: &Path| std::fs::read(d.join("summary.json")).unwrap();
    assert_eq!(read(a.path()), read(b.path()), "two runs with one seed differ");
    // Every optimisation run carries its curves and fit.
    for r in s["runs"].as_array().unwrap() {
        for k in ["kl", "proxy", "gold", "gold_lo", "gold_hi"] {
            assert_eq!(r[k].as_array().unwrap().len(), r["step"].as_array().unwrap().len(), "{k}");
        }
        for k in ["alpha", "beta", "r2"] {
            assert!(r.get(k).is_some(), "{k}");
        }
    }
    let names: Vec<&str> = s["runs"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["rl-single-kl0.01", "rl-single-kl0.1", "rl-wco-kl0.01", "rl-warm-kl0.01", "dpo"]);
    // Value-guided decoding against the single proxy: blockwise K = 1 is the start policy (KL
    // bound 0), more candidates raise the proxy and the bound; RAD's KL estimate is ≥ 0.
    let guided: Vec<&str> = s["guided"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(guided, ["rad-single", "cd-single"]);
    let (rad, cd) = (&s["guided"][0], &s["guided"][1]);
    let col = |c: &Value, k: &str| c[k].as_array().unwrap().iter().map(f).collect::<Vec<f64>>();
    assert_eq!(col(cd, "param"), [1.0, 2.0, 4.0, 8.0]);
    assert_eq!(col(cd, "kl")[0], 0.0);
    assert!(col(cd, "kl").windows(2).all(|w| w[1] > w[0]), "{:?}", col(cd, "kl"));
    assert!(col(cd, "proxy")[3] > col(cd, "proxy")[0], "{:?}", col(cd, "proxy"));
    assert!(col(rad, "kl").iter().all(|&k| k >= 0.0) && col(rad, "gold").len() == 5);
    assert!(std::fs::read_to_string(a.path().join("report.html"))
        .unwrap()
        .contains("Guided decoding vs the single proxy"));
    assert!(a.path().join("metrics/rl-single-kl0.01-seed0/metrics.jsonl").exists());
    assert!(a.path().join("work/dpo-seed0/model.safetensors").exists());
    let html = std::fs::read_to_string(a.path().join("report.html")).unwrap();
    assert!(html.contains("mismatch run --config test.toml"));
    for bad in ["src=\"http", "href=\"http", "<link", "<script src", "url(http"] {
        assert!(!html.contains(bad), "the page must be self-contained (found {bad})");
    }
    check_page(a.path(), "report-small.png");
    // `mismatch run --report-only` rebuilds the same page from summary.json alone.
    std::fs::remove_file(b.path().join("report.html")).unwrap();
    let args = mismatch_experiment::cli::RunArgs {
        out: Some(b.path().to_path_buf()),
        no_progress: true,
        report_only: true,
        ..Default::default()
    };
    mismatch_experiment::cli::run(args).unwrap();
    assert_eq!(std::fs::read_to_string(b.path().join("report.html")).unwrap(), html);
    // Mitigations carry their paired comparison with the single proxy.
    let m = &s["headline"]["mitigations"][1];
    assert!(m["gold_vs_single_at_end"]["lo"].as_f64().unwrap() <= m["gold_vs_single_at_end"]["hi"].as_f64().unwrap());
    // Per seed: with one seed, its differences of prompt means are the paired intervals' means.
    let h = &s["headline"];
    let one = &h["per_seed"][0];
    assert_eq!(
        (one["seed"].as_u64(), one["start_seed"].as_u64(), h["per_seed"].as_array().unwrap().len()),
        (Some(0), Some(0), 1)
    );
    assert!((f(&one["gold_drop"]) - f(&h["gold_drop"]["mean"])).abs() < 1e-9, "{one} vs {}", h["gold_drop"]);
    assert!((f(&one["proxy_rise_after_peak"]) - f(&h["proxy_rise_after_peak"]["mean"])).abs() < 1e-9);
    assert!(
        (f(&one["gold_vs_single_at_end"]["wco"]) - f(&m["gold_vs_single_at_end"]["mean"])).abs() < 1e-9,
        "{one} vs {m}"
    );
    assert!(html.contains("each seed optimises from its own pre-trained start policy"));
}

/// The default experiment cut to the single proxy's RL run, on one unseen start policy.
fn unseen_single() -> RunConfig {
    let mut c = RunConfig { seeds: 1, seed: 7, start_seed: 7, threads: 1, ..RunConfig::default() };
    c.data.pair_sizes = vec![600];
    c.rm.members = 1;
    c.bon.n_max = 8;
    c.bon.prompts = 8;
    c.bon.ns = vec![1, 2, 4, 8];
    c.rl.kl_coefs = vec![0.01];
    c.rl.mitigations = vec![];
    c.dpo.steps = 0;
    c
}

#[test]
fn unseen_start_policy_over_optimises() {
    let home = tempfile::tempdir().unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = unseen_single();
    let s = run(&cfg, a.path(), home.path());
    let h = &s["headline"];
    let peak = &h["gold_peak"];
    let last = s["runs"][0]["step"].as_array().unwrap().last().unwrap().as_u64().unwrap();
    assert!(peak["step"].as_u64().unwrap() < last, "gold peaks at the end: {peak}");
    assert!(f(&h["gold_drop"]["lo"]) > 0.0, "gold drop {}", h["gold_drop"]);
    assert!(f(&h["proxy_rise_after_peak"]["lo"]) > 0.0, "proxy {}", h["proxy_rise_after_peak"]);
    let rising = h["failure_modes_rising"].as_array().unwrap();
    assert!(rising.iter().any(|m| m == "garbage"), "failure modes rising: {rising:?}");
    run(&cfg, b.path(), home.path());
    let read = |d: &Path| std::fs::read(d.join("summary.json")).unwrap();
    assert_eq!(read(a.path()), read(b.path()), "two runs with one seed differ");
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

#[test]
#[ignore = "runs the real default config (about 3 minutes in release)"]
fn default_run_acceptance() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let cfg = RunConfig::default();
    let s = run(&cfg, out.path(), home.path());
    let h = &s["headline"];
    // (a) single proxy, small KL coefficient: gold peaks then falls (CI excludes 0), proxy keeps
    // rising, at least two failure meters rise.
    assert!(f(&h["gold_drop"]["lo"]) > 0.0, "gold drop {:?}", h["gold_drop"]);
    assert!(f(&h["proxy_rise_after_peak"]["lo"]) > 0.0, "proxy {:?}", h["proxy_rise_after_peak"]);
    let rising = h["failure_modes_rising"].as_array().unwrap();
    assert!(rising.len() >= 2, "failure modes rising: {rising:?}");
    // (b) a conservative ensemble or WARM moves the gold peak higher or later, and ends the run
    // with more gold than the single proxy (paired CI over seeds and prompts above 0).
    let m = h["mitigations"].as_array().unwrap();
    let single = &m[0];
    assert!(
        m[1..]
            .iter()
            .any(|x| (f(&x["peak_gold"]) > f(&single["peak_gold"]) || f(&x["peak_step"]) > f(&single["peak_step"]))
                && f(&x["gold_vs_single_at_end"]["lo"]) > 0.0),
        "{m:?}"
    );
    // (c) best-of-n gold vs d fits Gao's form.
    assert!(f(&h["bon_single_fit"]["r2"]) >= 0.9, "{:?}", h["bon_single_fit"]);
    // (d) guided decoding over-optimises too: against the single proxy, blockwise controlled
    // decoding's proxy rises with K while its gold peaks before the largest K.
    let cd = s["guided"].as_array().unwrap().iter().find(|c| c["name"] == "cd-single").unwrap();
    let proxy: Vec<f64> = cd["proxy"].as_array().unwrap().iter().map(f).collect();
    assert!(proxy.windows(2).all(|w| w[1] > w[0]), "{proxy:?}");
    assert!(f(&cd["gold_drop"]["mean"]) > 0.0, "{:?}", cd["gold_drop"]);
    // (e) the page renders.
    check_page(out.path(), "report-default.png");
    // With the annotator biases off (noise kept), the mismatch shrinks: the gold drop after the
    // peak is smaller.
    let mut off = cfg.clone();
    off.world.annotators.length_bias = 0.0;
    off.world.annotators.hedge_bias = 0.0;
    off.world.annotators.refusal_bias = 0.0;
    let out2 = tempfile::tempdir().unwrap();
    let s2 = run(&off, out2.path(), home.path());
    let (on_drop, off_drop) = (f(&h["gold_drop"]["mean"]), f(&s2["headline"]["gold_drop"]["mean"]));
    assert!(off_drop < on_drop, "biases off: drop {off_drop} vs {on_drop} with biases");
}

#[test]
#[ignore = "runs the default config on seeds 5-9 (about 2.5 minutes in release)"]
fn other_start_policies_still_over_optimise() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let cfg = RunConfig { seed: 5, start_seed: 5, ..RunConfig::default() };
    let s = run(&cfg, out.path(), home.path());
    let h = &s["headline"];
    let starts: Vec<u64> =
        h["per_seed"].as_array().unwrap().iter().map(|r| r["start_seed"].as_u64().unwrap()).collect();
    assert_eq!(starts, [5, 6, 7, 8, 9]);
    assert!(f(&h["gold_drop"]["lo"]) > 0.0, "gold drop {:?}", h["gold_drop"]);
    assert!(f(&h["proxy_rise_after_peak"]["lo"]) > 0.0, "proxy {:?}", h["proxy_rise_after_peak"]);
    let rising = h["failure_modes_rising"].as_array().unwrap();
    assert!(rising.iter().any(|m| m == "garbage"), "failure modes rising: {rising:?}");
    assert!(f(&h["bon_single_fit"]["r2"]) >= 0.9, "{:?}", h["bon_single_fit"]);
}
