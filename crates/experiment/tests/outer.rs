//! `mismatch loop` in the embedded world: a small loop (2 seeds, 3 rounds) runs end to end, every
//! number of its summary is computed, two runs are byte-identical, and the page renders.

use mismatch_experiment::config::RunConfig;
use mismatch_experiment::outer::{LoopAlgo, LoopConfig, RmData};
use serde_json::Value;
use std::path::Path;

fn small() -> RunConfig {
    let mut c = RunConfig::default();
    c.seeds = 2;
    c.threads = 2;
    c.eval_prompts = 16;
    c.start.steps = 60;
    c.start.demos = 800;
    c.start.n_embd = 32;
    c.data.eval_pairs = 80;
    c.rm.train.epochs = 1;
    c.rl.steps = 4;
    c.rl.prompts_per_step = 8;
    c.rl.eval_every = 4;
    c.dpo.steps = 4;
    c.dpo.batch_size = 8;
    c.dpo.eval_every = 4;
    c.outer = Some(LoopConfig {
        rounds: 3,
        pairs_per_round: 80,
        rm_data: RmData::All,
        algo: LoopAlgo::Rloo,
        ..LoopConfig::default()
    });
    c
}

/// One model cache for every test of this file: `MISMATCH_HOME` is the process's, and tests run
/// side by side, so none may point it at a directory another test deletes.
fn shared_home() {
    static HOME: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let home = HOME.get_or_init(|| tempfile::tempdir().unwrap());
    std::env::set_var("MISMATCH_HOME", home.path());
}

fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn a_small_loop_is_computed_deterministic_and_renders() {
    shared_home();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cfg = small();
    let s = mismatch_experiment::outer::run_loop(&cfg, a.path(), "mismatch loop --config test.toml", false).unwrap();
    mismatch_experiment::outer::run_loop(&cfg, b.path(), "mismatch loop --config test.toml", false).unwrap();
    let read = |d: &Path| std::fs::read(d.join("summary.json")).unwrap();
    assert_eq!(read(a.path()), read(b.path()), "two loops with the same seeds differ");

    let rounds = s["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3);
    for (r, row) in rounds.iter().enumerate() {
        // Labels accumulate (rm_data = all): each round adds at most pairs_per_round.
        let (new, all) = (number(&row["new_labels"]["mean"]), number(&row["labels"]["mean"]));
        assert!(new > 0.0 && new <= 80.0 && all >= new, "round {r}: {new} new of {all}");
        if r > 0 {
            assert!(all > number(&rounds[r - 1]["labels"]["mean"]));
        }
        for k in ["annotators_acc_gold", "rm_acc_on_policy", "round0_rm_acc_on_policy"] {
            let x = number(&row[k]["mean"]);
            assert!((0.0..=1.0).contains(&x), "round {r} {k} {x}");
            assert!(number(&row[k]["lo"]) <= x && x <= number(&row[k]["hi"]), "round {r} {k}");
        }
        for k in ["gold", "proxy", "kl_to_start"] {
            assert!(number(&row["policy"][k]["mean"]).is_finite(), "round {r} {k}");
        }
        // Each round's policy has moved away from the start policy.
        assert!(number(&row["policy"]["kl_to_start"]["mean"]) > 0.0, "round {r}");
        assert_eq!(row["rm_gain_vs_round0"].is_object(), r > 0, "round {r}");
        assert_eq!(row["rm_acc_on_previous_policy"].is_object(), r > 0, "round {r}");
    }
    // Round 0's RM is the round-0 RM: no gain by definition.
    assert_eq!(rounds[0]["rm_acc_on_policy"], rounds[0]["round0_rm_acc_on_policy"]);
    assert!(number(&s["gold_change_first_to_last"]["mean"]).is_finite());
    assert!(s["finding"].as_str().unwrap().contains("gold"));
    assert!(number(&s["start"]["kl_to_start"]["mean"]).abs() < 1e-3, "the start policy against itself");

    let html = std::fs::read_to_string(a.path().join("report.html")).unwrap();
    assert!(html.contains("Outer loop") && html.matches("<svg").count() >= 3);
    assert!(a.path().join("work/loop-seed0/round-3/model.safetensors").exists());
    assert!(a.path().join("metrics/loop-round2-seed1/metrics.jsonl").exists());
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("loop-report.png");
    let c = mismatch_report::browser::check_in_chromium(&a.path().join("report.html"), Some(&shot)).unwrap();
    assert!(c.ok && c.console_errors.is_empty() && c.plots >= 3, "{c:?}");
}

/// DPO as the loop's optimiser, on each round's labels only: every round moves the policy and
/// the reward model trains on that round's pairs alone.
#[test]
fn dpo_on_new_labels_only() {
    shared_home();
    let out = tempfile::tempdir().unwrap();
    let mut cfg = small();
    cfg.seeds = 1;
    cfg.outer = Some(LoopConfig {
        rounds: 2,
        pairs_per_round: 80,
        rm_data: RmData::New,
        algo: LoopAlgo::Dpo,
        ..LoopConfig::default()
    });
    let s = mismatch_experiment::outer::run_loop(&cfg, out.path(), "mismatch loop", false).unwrap();
    let rounds = s["rounds"].as_array().unwrap();
    for row in rounds {
        assert_eq!(row["labels"]["mean"], row["new_labels"]["mean"], "rm_data = new");
        assert!(number(&row["policy"]["kl_to_start"]["mean"]) > 0.0);
    }
    let m = std::fs::read_to_string(out.path().join("metrics/loop-round1-seed0/metrics.jsonl")).unwrap();
    assert!(m.contains("rewards/margins"), "DPO's metrics: {}", &m[..m.len().min(300)]);
    let html = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    assert!(html.contains("DPO on the reward model"));
}

/// `loop.labels_from`: the loop posts each round's pairs to a labelling database and waits while
/// a person labels them there (here a program standing in for one, labelling through the app's
/// own assignment and storage code by gold); their verdicts are what the RM learns from.
#[test]
fn labels_can_come_from_the_labelling_app() {
    use mismatch_label::assign::{next_task, record_label, ScreenChoice, Submission};
    shared_home();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("labels.sqlite");
    let mut cfg = small();
    cfg.seeds = 1;
    cfg.outer = Some(LoopConfig {
        rounds: 2,
        pairs_per_round: 40,
        labels_from: db.to_string_lossy().into_owned(),
        wait_s: 600,
        ..LoopConfig::default()
    });
    let mut conn = mismatch_label::db::open(&db).unwrap();
    mismatch_label::auth::add_annotator(&mut conn, "ann", false, false).unwrap();
    let id: i64 = conn.query_row("SELECT id FROM annotators WHERE name = 'ann'", [], |r| r.get(0)).unwrap();
    let world = mismatch_world::world::World::new(&cfg.world).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let text = |json: &str| serde_json::from_str::<String>(json).unwrap();
    let (s, labelled) = std::thread::scope(|sc| {
        let person = sc.spawn(|| {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let Some(t) = next_task(&mut conn, id, 1, n % 2 == 1).unwrap() else {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    continue;
                };
                let p = text(&t.prompt);
                let (l, r) =
                    (world.gold_score(&p, &text(&t.left)).unwrap(), world.gold_score(&p, &text(&t.right)).unwrap());
                let choice = if l > r {
                    ScreenChoice::Left
                } else if r > l {
                    ScreenChoice::Right
                } else {
                    ScreenChoice::Tie
                };
                record_label(&mut conn, id, &Submission { item: t.item, choice, strength: None, reason: None })
                    .unwrap()
                    .unwrap();
                n += 1;
            }
            n
        });
        let out = dir.path().join("out");
        let s = mismatch_experiment::outer::run_loop(&cfg, &out, "mismatch loop", false);
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        (s, person.join().unwrap())
    });
    let s = s.unwrap();
    let rounds = s["rounds"].as_array().unwrap();
    // This person labels by gold: every kept label agrees with it (gold ties were dropped as ties).
    for row in rounds {
        assert_eq!(number(&row["annotators_acc_gold"]["mean"]), 1.0, "{row}");
    }
    let items: i64 =
        mismatch_label::db::open(&db).unwrap().query_row("SELECT COUNT(*) FROM items", [], |r| r.get(0)).unwrap();
    assert!(labelled as i64 >= items && items > 0, "{labelled} labels for {items} items");
    assert!(number(&rounds[1]["labels"]["mean"]) > number(&rounds[0]["labels"]["mean"]));

    // With nobody labelling, the loop stops after loop.wait_s, naming the database.
    let mut cfg2 = cfg.clone();
    if let Some(l) = cfg2.outer.as_mut() {
        l.wait_s = 0;
        l.labels_from = dir.path().join("empty.sqlite").to_string_lossy().into_owned();
    }
    let e = mismatch_experiment::outer::run_loop(&cfg2, &dir.path().join("out2"), "x", false).unwrap_err().to_string();
    assert!(e.contains("empty.sqlite") && e.contains("labels"), "{e}");
}

#[test]
fn a_bad_loop_table_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("l.toml");
    std::fs::write(&p, "[loop]\nrounds = 0\n").unwrap();
    let e = RunConfig::load(&p).unwrap_err().to_string();
    assert!(e.contains("l.toml") && e.contains("loop.rounds"), "{e}");
    std::fs::write(&p, "[loop]\nrm_data = \"some\"\n").unwrap();
    let e = RunConfig::load(&p).unwrap_err().to_string();
    assert!(e.contains("l.toml") && e.contains("loop.rm_data"), "{e}");
}
