//! `mismatch run --config FILE` with a `[real]` table: SmolLM2-135M-Instruct against MiniLM
//! proxies trained on HH-RLHF labels, gold = an RM on a disjoint part of the labels, XSTest
//! evaluation prompts. A tiny configuration that runs the whole pipeline in a debug build.

use mismatch_experiment::config::RunConfig;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn shared_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data").canonicalize().expect("../shared/data exists")
}

fn tiny_config(dir: &Path) -> PathBuf {
    let data = shared_data();
    let text = format!(
        r#"seeds = 1
seed = 0
threads = 1
max_new_tokens = 8
eval_prompts = 4

[data]
pair_sizes = [8, 16]
eval_pairs = 16

[rm]
members = 2

[rm.train]
epochs = 2
batch_size = 8
lr = 0.001
frozen = true

[bon]
n_max = 4
prompts = 2
ns = [1, 2, 4]

[guided]
rad_betas = [0.0, 2.0]
rad_top_k = 2
block_candidates = [2]
block_tokens = 4
prompts = 2

[rl]
steps = 2
prompts_per_step = 2
samples_per_prompt = 2
lr = 0.0003
kl_coefs = [0.05]
eval_every = 2
mitigations = []

# DPO on real pairs is left out here to keep the test short (tests/offline.rs of the policy crate
# covers the loop); the example config runs it.
[dpo]
steps = 0
batch_size = 2
lr = 0.0001
eval_every = 1

[real]
policy = "smollm2-135m"
chat = true
rm_backbone = "minilm-l6"
pairs = "{}"
max_pair_chars = 250
gold_pairs = 24
eval_prompts_file = "{}"
standardise_samples = 4
max_prompt_chars = 120
dpo_max_chars = 250
"#,
        data.join("hh-rlhf/harmless-base-test.jsonl.gz").display(),
        data.join("xstest/xstest_prompts.csv").display()
    );
    let path = dir.join("real.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn finite(v: &Value) -> bool {
    v.as_f64().is_some_and(f64::is_finite)
}

#[test]
fn real_run_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RunConfig::load(&tiny_config(dir.path())).unwrap();
    assert!(cfg.real.is_some());
    let out = dir.path().join("out");
    let s = mismatch_experiment::report::run_and_report(&cfg, &out, "mismatch run --config real.toml", false).unwrap();

    assert_eq!(s["setting"], "real");
    assert!(s["gold"].as_str().unwrap().contains("held-out human labels"));
    // The gold RM's accuracy on the held-out labels is a proper rate.
    let ann = s["annotators_acc_gold"]["mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ann), "{ann}");

    // Reward models: 5 kinds × 2 sizes, finite accuracies in [0, 1].
    let rms = s["reward_models"].as_array().unwrap();
    assert_eq!(rms.len(), 10);
    for r in rms {
        for k in ["acc_gold", "acc_annotators", "ece"] {
            let x = r[k]["mean"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&x), "{k} {x} of {}", r["name"]);
        }
    }

    // Best-of-n: one curve per proxy kind plus gold, each with a point per n.
    let bon = s["bon"].as_array().unwrap();
    assert_eq!(bon.len(), 6);
    for b in bon {
        assert_eq!(b["n"].as_array().unwrap().len(), 3);
        assert!(b["gold"].as_array().unwrap().iter().all(finite) && b["proxy"].as_array().unwrap().iter().all(finite));
        assert_eq!(b["kl"][0].as_f64().unwrap(), 0.0);
    }
    let bg = &bon.iter().find(|b| b["name"] == "bon-gold").unwrap()["gold"];
    // Best-of-n against gold itself cannot lower the expected gold score.
    assert!(bg[2].as_f64().unwrap() >= bg[0].as_f64().unwrap() - 1e-9);

    // Value-guided decoding of SmolLM2 against the MiniLM proxy: RAD at two β, blockwise at K = 2.
    let g = s["guided"].as_array().unwrap();
    assert_eq!(g.iter().map(|c| c["name"].as_str().unwrap()).collect::<Vec<_>>(), ["rad-single", "cd-single"]);
    for c in g {
        assert!(["kl", "proxy", "gold"].iter().all(|k| c[*k].as_array().unwrap().iter().all(finite)), "{c}");
    }
    assert!(g[0]["kl"].as_array().unwrap().iter().all(|k| k.as_f64().unwrap() >= 0.0));
    assert!(g[1]["kl_is_bound"].as_bool().unwrap() && g[1]["kl"][0].as_f64().unwrap() > 0.0);

    // Runs: RL against the single proxy at the one KL coefficient, DPO; evaluated at step 0 and at the end.
    let runs = s["runs"].as_array().unwrap();
    let names: Vec<&str> = runs.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["rl-single-kl0.05"]);
    for r in runs {
        let n = 2;
        for k in ["step", "kl", "proxy", "gold", "d"] {
            assert_eq!(r[k].as_array().unwrap().len(), n, "{k} of {}", r["name"]);
        }
        assert!(r["gold"].as_array().unwrap().iter().all(finite) && r["proxy"].as_array().unwrap().iter().all(finite));
        // Step 0 samples the start policy and scores it under itself: KL is ~0 (only the
        // numerical difference between cached sampling and teacher forcing).
        let kl0 = r["kl"][0].as_f64().unwrap();
        assert!(kl0.abs() < 1e-2, "step-0 KL {kl0} of {}", r["name"]);
        // Refusal meters on XSTest: both safe and unsafe prompts were asked.
        assert!(finite(&r["meters"]["benign_refusal"][0]) && finite(&r["meters"]["harmful_refusal"][0]));
        assert!(r["meters"]["correct"][0].is_null(), "correct is undefined on open prompts");
    }
    let kl_end = runs[0]["kl"][1].as_f64().unwrap();
    assert!(kl_end > 0.0, "RL moved the policy: KL after training {kl_end}");
    // Headline is computed from the single-proxy run.
    assert_eq!(s["headline"]["single_run"], "rl-single-kl0.05");

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("real models and human labels") && html.contains("Gold here is not a true reward"));
    assert!(out.join("metrics/rl-single-kl0.05-seed0/metrics.jsonl").exists());
    assert!(out.join("work/rl-single-kl0.05-seed0/model.safetensors").exists());
    assert!(!out.join("work/rl-single-kl0.05-seed0/optimizer.safetensors").exists());
    let summary: Value = serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["setting"], "real");
}

/// `real.judge`: gold is SmolLM2 judging each completion against the start policy's, with
/// AlpacaEval's log-prob template. Every number the judge section reports adds up.
#[test]
fn a_judge_can_be_gold() {
    let dir = tempfile::tempdir().unwrap();
    let path = tiny_config(dir.path());
    // One proxy size and one member, no guided decoding: the judge is what is tested here.
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("pair_sizes = [8, 16]", "pair_sizes = [16]")
        .replace("members = 2", "members = 1")
        .replace("rad_betas = [0.0, 2.0]", "rad_betas = []")
        .replace("block_candidates = [2]", "block_candidates = []")
        + "judge = \"smollm2-135m\"\njudge_template = \"alpaca_eval_clf_gpt4_turbo\"\n";
    std::fs::write(&path, text).unwrap();
    let cfg = RunConfig::load(&path).unwrap();
    let out = dir.path().join("out");
    let s = mismatch_experiment::report::run_and_report(&cfg, &out, "mismatch run --config real.toml", false).unwrap();

    assert!(s["gold"].as_str().unwrap().contains("LLM judge"), "{}", s["gold"]);
    let j = &s["judge"];
    assert_eq!(j["name"], "smollm2-135m (alpaca_eval_clf_gpt4_turbo)");
    // The held-out human pairs: 16 (data.eval_pairs), each judged in both orders.
    let h = &j["human_pairs"]["counts"];
    assert_eq!(h["judged"].as_u64().unwrap() + h["identical"].as_u64().unwrap(), 16);
    // Against the start policy: 2 evaluations × 4 prompts and the best-of-n pool (2 prompts × 4).
    // Step 0 is the start policy's own evaluation: its completions are the references, ties unjudged.
    let v = &j["vs_start"]["counts"];
    // The best-of-n gold curve reads the pool's judgements again, from the seed's cache.
    let (judged, identical) = (v["judged"].as_u64().unwrap(), v["identical"].as_u64().unwrap());
    assert_eq!(judged + identical + v["repeated"].as_u64().unwrap(), 2 * 4 + 2 * (2 * 4), "{v}");
    assert!(v["repeated"].as_u64().unwrap() >= 2 * 4, "{v}");
    assert!(identical >= 4, "{v}");
    // The log-prob template always yields a weighted preference from a local model.
    assert_eq!(v["weighted"], v["judged"]);
    assert_eq!(v["unscored"], 0);
    for part in ["vs_start", "human_pairs"] {
        for rate in ["position_consistency", "position_a_rate", "unparsed_rate"] {
            let r = &j[part][rate];
            assert!(r.is_null() || (0.0..=1.0).contains(&r["mean"].as_f64().unwrap()), "{part} {rate} {r}");
        }
    }
    // The same agreement, its interval over the 16 pairs (every seed shares them).
    let agree = &j["agreement_with_humans"];
    assert!((agree["mean"].as_f64().unwrap() - s["annotators_acc_gold"]["mean"].as_f64().unwrap()).abs() < 1e-12);
    assert_eq!(agree["n"], 16);
    assert!(agree["lo"].as_f64().unwrap() <= agree["mean"].as_f64().unwrap());

    let run = &s["runs"][0];
    // Gold is a win rate against the start policy: exactly ½ for the start policy itself.
    assert_eq!(run["gold"][0].as_f64().unwrap(), 0.5);
    assert!(run["gold"].as_array().unwrap().iter().all(|g| (0.0..=1.0).contains(&g.as_f64().unwrap())));
    assert!(run["spearman_proxy_over_refusal"].is_object());
    let bg = &s["bon"].as_array().unwrap().iter().find(|b| b["name"] == "bon-gold").unwrap()["gold"];
    assert!(bg[2].as_f64().unwrap() >= bg[0].as_f64().unwrap() - 1e-9);

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("The judge") && html.contains("judge win rate"), "judge section missing");

    // A template that grades single answers cannot be gold.
    let text = std::fs::read_to_string(&path).unwrap().replace("alpaca_eval_clf_gpt4_turbo", "single-v1");
    std::fs::write(&path, text).unwrap();
    let err = RunConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("real.toml") && err.contains("real.judge_template") && err.contains("pairwise"), "{err}");
}

#[test]
fn bad_real_config_names_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "seeds = 1\n\n[real]\npolicy = \"smollm2-135m\"\ngold_pairz = 5\n").unwrap();
    let err = RunConfig::load(&p).unwrap_err().to_string();
    assert!(err.contains("bad.toml") && err.contains("line 5, field real.gold_pairz"), "{err}");
    std::fs::write(&p, "[real]\ngold_pairs = \"many\"\n").unwrap();
    let err = RunConfig::load(&p).unwrap_err().to_string();
    assert!(err.contains("bad.toml") && err.contains("line 2, field real.gold_pairs"), "{err}");
    // Validation names the field too.
    std::fs::write(&p, "[real]\npairs = \"x.jsonl\"\ngold_pairs = 1\n").unwrap();
    let err = RunConfig::load(&p).unwrap_err().to_string();
    assert!(err.contains("bad.toml") && err.contains("real.gold_pairs"), "{err}");
}

#[test]
fn missing_files_are_named_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("exp.toml");
    std::fs::write(&p, "[real]\npairs = \"data/nope.jsonl\"\n").unwrap();
    let cfg = RunConfig::load(&p).unwrap();
    let err =
        mismatch_experiment::report::run_and_report(&cfg, &dir.path().join("out"), "x", false).unwrap_err().to_string();
    assert!(
        err.contains(&dir.path().join("data/nope.jsonl").display().to_string()) && err.contains("not found"),
        "{err}"
    );

    let data = shared_data();
    std::fs::write(
        &p,
        format!(
            "[data]\npair_sizes = [10]\n\n[real]\npairs = \"{}\"\neval_prompts_file = \"missing.csv\"\n",
            data.join("hh-rlhf/harmless-base-test.jsonl.gz").display()
        ),
    )
    .unwrap();
    let cfg = RunConfig::load(&p).unwrap();
    let err =
        mismatch_experiment::report::run_and_report(&cfg, &dir.path().join("out"), "x", false).unwrap_err().to_string();
    assert!(err.contains("missing.csv") && err.contains("not found"), "{err}");
}

/// `real.pool_endpoint`: the best-of-n pool sampled on `mismatch serve` (started here on the
/// start policy), scored here; a second pool of the same seed comes from the cache.
#[test]
fn the_best_of_n_pool_can_be_sampled_on_an_endpoint() {
    let addr = mismatch_serve::spawn(mismatch_serve::ServeArgs {
        max_batch: 8,
        ..mismatch_serve::ServeArgs::new("smollm2-135m")
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = mismatch_openai::Endpoint { base: format!("http://{addr}/v1"), model: "smollm2-135m".into() };
    let options = mismatch_openai::Options { cache: Some(dir.path().join("cache.sqlite")), ..Default::default() };
    let client = mismatch_openai::Client::new(endpoint.clone(), options.clone()).unwrap();
    let gold = mismatch_policy::reward::parse_reward("rule:length").unwrap();
    let prompts = ["Tell me about cats.", "What is rain?"];
    let pool = mismatch_experiment::real::sample::pool_on(&client, true, gold.as_ref(), &prompts, 3, 10, 5).unwrap();
    assert_eq!(pool.texts.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3]);
    assert!(pool.texts[0].iter().collect::<std::collections::HashSet<_>>().len() > 1);
    for (t, g) in pool.texts.iter().flatten().zip(pool.gold.iter().flatten()) {
        assert_eq!(*g, gold.score(&["x"], &[t.as_str()]).unwrap()[0] as f64);
    }
    assert_eq!(client.counts(), (2, 0));
    let again = mismatch_openai::Client::new(endpoint, options).unwrap();
    let pool2 = mismatch_experiment::real::sample::pool_on(&again, true, gold.as_ref(), &prompts, 3, 10, 5).unwrap();
    assert_eq!((pool2.texts, pool2.gold), (pool.texts, pool.gold));
    assert_eq!(again.counts(), (0, 2));
    // A malformed endpoint is refused when the config is read, naming the field.
    let p = dir.path().join("e.toml");
    std::fs::write(&p, "[real]\npairs = \"x.jsonl\"\npool_endpoint = \"openai:http://x/v1\"\n").unwrap();
    let err = RunConfig::load(&p).unwrap_err().to_string();
    assert!(err.contains("e.toml") && err.contains("real.pool_endpoint"), "{err}");
}

/// Sets `table.key` (a dotted table path; "" = top level) of an experiment file, which must
/// already have it.
fn set(t: &mut toml::Table, table: &str, key: &str, v: toml::Value) {
    let mut slot = t;
    for part in table.split('.').filter(|p| !p.is_empty()) {
        slot = slot.get_mut(part).and_then(toml::Value::as_table_mut).unwrap();
    }
    assert!(slot.contains_key(key), "{table}.{key} is in the example config");
    slot.insert(key.into(), v);
}

/// `configs/real-verifiable-smollm2.toml` at a tiny size: SmolLM2 answers generated arithmetic
/// problems, simulated annotators label pairs of its answers, gold is the program.
#[test]
fn the_verifiable_task_runs_end_to_end() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(repo.join("configs/real-verifiable-smollm2.toml")).unwrap();
    let mut t: toml::Table = text.parse().unwrap();
    let ints = |v: &[i64]| toml::Value::Array(v.iter().map(|&x| toml::Value::Integer(x)).collect());
    set(&mut t, "", "seeds", 1.into());
    set(&mut t, "", "max_new_tokens", 8.into());
    set(&mut t, "", "eval_prompts", 4.into());
    set(&mut t, "data", "pair_sizes", ints(&[8, 16]));
    set(&mut t, "data", "eval_pairs", 8.into());
    set(&mut t, "rm", "members", 2.into());
    set(&mut t, "rm.train", "epochs", 2.into());
    set(&mut t, "bon", "n_max", 4.into());
    set(&mut t, "bon", "prompts", 2.into());
    set(&mut t, "bon", "ns", ints(&[1, 2, 4]));
    set(&mut t, "guided", "rad_betas", toml::Value::Array(vec![]));
    set(&mut t, "guided", "block_candidates", ints(&[2]));
    set(&mut t, "guided", "prompts", 2.into());
    set(&mut t, "rl", "steps", 2.into());
    set(&mut t, "rl", "eval_every", 2.into());
    set(&mut t, "rl", "mitigations", toml::Value::Array(vec![]));
    set(&mut t, "real", "task_prompts", 32.into());
    set(&mut t, "real", "standardise_samples", 4.into());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("verifiable.toml");
    std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
    let cfg = RunConfig::load(&path).unwrap();
    let out = dir.path().join("out");
    let s = mismatch_experiment::report::run_and_report(&cfg, &out, "mismatch run --config v.toml", false).unwrap();

    assert_eq!(s["setting"], "real");
    assert!(s["gold"].as_str().unwrap().contains("Gold is a program"), "{}", s["gold"]);
    // The annotators' agreement with the program on the held-out pairs is a proper rate.
    let ann = s["annotators_acc_gold"]["mean"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&ann), "{ann}");
    assert_eq!(s["reward_models"].as_array().unwrap().len(), 10);
    let run = &s["runs"][0];
    assert_eq!(run["name"], "rl-single-kl0.01");
    // gold(y) ≤ 1 (a right answer) and the correct meter is defined on the task's prompts.
    for (g, c) in run["gold"].as_array().unwrap().iter().zip(run["meters"]["correct"].as_array().unwrap()) {
        assert!(g.as_f64().unwrap() <= 1.0, "{g}");
        assert!((0.0..=1.0).contains(&c.as_f64().unwrap()), "{c}");
    }
    let bg = &s["bon"].as_array().unwrap().iter().find(|b| b["name"] == "bon-gold").unwrap()["gold"];
    assert!(bg[2].as_f64().unwrap() >= bg[0].as_f64().unwrap() - 1e-9);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("Gold is a program"), "the report says what gold is");

    // Too few problems for the pairs asked for, an unknown task, a judge beside a task: named.
    let mut small = t.clone();
    set(&mut small, "real", "task_prompts", 20.into());
    std::fs::write(&path, toml::to_string(&small).unwrap()).unwrap();
    let err = RunConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("verifiable.toml") && err.contains("real.task_prompts"), "{err}");
    for (key, value, field) in [("task", "chess", "real.task"), ("judge", "smollm2-135m", "real.judge")] {
        let mut bad = t.clone();
        bad.get_mut("real").and_then(toml::Value::as_table_mut).unwrap().insert(key.into(), value.into());
        std::fs::write(&path, toml::to_string(&bad).unwrap()).unwrap();
        let err = RunConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("verifiable.toml") && err.contains(field), "{err}");
    }
}

/// Sampling spread over threads draws the same completions as one thread (each chunk's seed
/// depends on its index only).
#[test]
fn threaded_sampling_is_the_same_sampling() {
    let policy = mismatch_policy::Policy::load("smollm2-135m", false, true).unwrap();
    let prompts: Vec<String> = (0..20).map(|i| format!("What is {i} plus 2?")).collect();
    let p: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let one = mismatch_experiment::real::sample::sample(&policy, &p, 4, 3).unwrap();
    let two = mismatch_experiment::real::sample::sample_on(&policy, &p, 4, 3, 2).unwrap();
    assert_eq!((one.texts.len(), &one.texts, &one.comp_ids), (20, &two.texts, &two.comp_ids));
}
