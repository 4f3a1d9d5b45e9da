//! Every function against TRL's formulas transcribed in torch (tests/reference/policy_trl.py,
//! f64) on the same small random batch; Rust computes in f32, so tolerances are f32 round-off.

use candle_core::{Device, Tensor};
use mismatch_policy::dpo::{preference_loss, PairLogps, PreferenceLoss};
use mismatch_policy::grpo::{group_advantages, grpo_loss, Aggregation, GrpoConfig};
use mismatch_policy::kl::{per_token_kl, KlController, KlEstimator};
use mismatch_policy::ppo::{self, PpoConfig};
use mismatch_policy::{masked, rloo, sft};
use serde_json::Value;

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/policy_trl.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("fixture json")
}

fn vec1(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn t1(v: &Value) -> Tensor {
    let x = vec1(v);
    let n = x.len();
    Tensor::from_vec(x, n, &Device::Cpu).unwrap()
}

fn t2(v: &Value) -> Tensor {
    let rows: Vec<Vec<f32>> = v.as_array().unwrap().iter().map(vec1).collect();
    let (b, c) = (rows.len(), rows[0].len());
    Tensor::from_vec(rows.concat(), (b, c), &Device::Cpu).unwrap()
}

fn t3(v: &Value) -> Tensor {
    let m: Vec<Tensor> = v.as_array().unwrap().iter().map(t2).collect();
    Tensor::stack(&m, 0).unwrap()
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol * (1.0 + want.abs()), "{what}: got {got}, want {want}");
}

fn close2(what: &str, got: &Tensor, want: &Value, tol: f64) {
    let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let w: Vec<f32> = t2(want).flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(g.len(), w.len(), "{what}: shape");
    for (i, (a, b)) in g.iter().zip(&w).enumerate() {
        close(&format!("{what}[{i}]"), *a as f64, *b as f64, tol);
    }
}

fn scalar(t: &Tensor) -> f64 {
    masked::scalar(t).unwrap()
}

#[test]
fn kl_estimators_match() {
    let fx = fixture();
    let i = &fx["inputs"];
    let (lp, rp, mask) = (t2(&i["logp"]), t2(&i["ref_logp"]), t2(&i["mask"]));
    close2("k1", &per_token_kl(&lp, &rp, KlEstimator::K1).unwrap(), &fx["kl"]["k1"], 1e-5);
    close2("k2", &per_token_kl(&lp, &rp, KlEstimator::K2).unwrap(), &fx["kl"]["k2"], 1e-5);
    close2("k3", &per_token_kl(&lp, &rp, KlEstimator::K3).unwrap(), &fx["kl"]["k3"], 1e-5);
    let seq = mismatch_policy::kl::sequence_kl(&lp, &rp, &mask, KlEstimator::K3).unwrap().to_vec1::<f32>().unwrap();
    for (g, w) in seq.iter().zip(vec1(&fx["kl"]["seq_k3"])) {
        close("seq_k3", *g as f64, w as f64, 1e-5);
    }
    let m = mismatch_policy::kl::mean_token_kl(&lp, &rp, &mask, KlEstimator::K1).unwrap();
    close("mean_k1", scalar(&m), f(&fx["kl"]["mean_k1"]), 1e-5);
}

#[test]
fn ppo_rollout_and_losses_match() {
    let fx = fixture();
    let i = &fx["inputs"];
    let (lp, rp, mask, values) = (t2(&i["logp"]), t2(&i["ref_logp"]), t2(&i["mask"]), t2(&i["values"]));
    let scores = vec1(&i["scores"]);
    let beta = f(&i["beta"]);
    for (name, whiten) in [("plain", false), ("whiten_rewards", true)] {
        let cfg = PpoConfig { whiten_rewards: whiten, ..PpoConfig::default() };
        let r = ppo::rollout(&cfg, &lp, &rp, &values, &scores, &mask, beta).unwrap();
        let want = &fx["ppo"][name];
        close2(&format!("{name} rewards"), &r.rewards, &want["rewards"], 1e-5);
        close2(&format!("{name} non_score"), &r.non_score_reward, &want["non_score_reward"], 1e-5);
        close2(&format!("{name} returns"), &r.returns, &want["returns"], 1e-5);
        close2(&format!("{name} advantages"), &r.advantages, &want["advantages"], 1e-4);
    }
    let cfg = PpoConfig::default();
    let r = ppo::rollout(&cfg, &lp, &rp, &values, &scores, &mask, beta).unwrap();
    let want = &fx["ppo"]["loss"];
    let pl = ppo::policy_loss(&t2(&i["new_logp"]), &lp, &r.advantages, &mask, cfg.cliprange).unwrap();
    close("policy_loss", scalar(&pl.loss), f(&want["policy_loss"]), 1e-4);
    close("clipfrac", pl.clipfrac, f(&want["policy/clipfrac_avg"]), 1e-6);
    close("approxkl", pl.approxkl, f(&want["policy/approxkl_avg"]), 1e-5);
    close("ratio", pl.ratio, f(&want["val/ratio"]), 1e-5);
    let vl = ppo::value_loss(&t2(&i["vpred"]), &values, &r.returns, &mask, cfg.cliprange_value).unwrap();
    close("value_loss", scalar(&vl.loss), f(&want["value_loss"]), 1e-5);
    close("val/clipfrac", vl.clipfrac, f(&want["val/clipfrac_avg"]), 1e-6);
    let h = ppo::entropy_from_logits(&t3(&i["logits"])).unwrap();
    close2("entropy", &h, &want["entropy"], 1e-5);
    let m = ppo::rollout_metrics(&r, &scores, Some(&h), &mask).unwrap();
    for (k, v) in fx["ppo"]["metrics"].as_object().unwrap() {
        close(k, m[k.as_str()], f(v), 1e-5);
    }
}

#[test]
fn rloo_matches() {
    let fx = fixture();
    let r = &fx["rloo"];
    let k = r["k"].as_u64().unwrap() as usize;
    let rewards = rloo::kl_shaped_rewards(&vec1(&r["scores"]), &vec1(&r["seq_kl"]), f(&r["beta"])).unwrap();
    for (g, w) in rewards.iter().zip(vec1(&r["rewards"])) {
        close("rloo reward", *g as f64, w as f64, 1e-6);
    }
    let adv = rloo::advantages(&rewards, k).unwrap();
    for (g, w) in adv.iter().zip(vec1(&r["advantages"])) {
        close("rloo advantage", *g as f64, w as f64, 1e-6);
    }
    let i = &fx["inputs"];
    let loss = rloo::reinforce_loss(&t2(&i["logp"]), &t2(&i["mask"]), &adv[..4]).unwrap();
    close("reinforce loss", scalar(&loss), f(&r["reinforce_loss"]), 1e-5);
}

#[test]
fn grpo_matches() {
    let fx = fixture();
    let g = &fx["grpo"];
    let group = g["group"].as_u64().unwrap() as usize;
    let rewards = vec1(&g["rewards"]);
    for (scale, key) in [(true, "adv_std"), (false, "adv_none")] {
        let adv = group_advantages(&rewards, group, scale).unwrap();
        for (a, w) in adv.iter().zip(vec1(&g[key])) {
            close(key, *a as f64, w as f64, 1e-6);
        }
    }
    let adv = group_advantages(&rewards, group, true).unwrap();
    let i = &fx["inputs"];
    let (new, old, rp, mask) = (t2(&i["new_logp"]), t2(&i["logp"]), t2(&i["ref_logp"]), t2(&i["mask"]));
    let c = mask.dim(1).unwrap();
    for (agg, key) in [
        (Aggregation::Sequence, "loss_sequence"),
        (Aggregation::Token, "loss_token"),
        (Aggregation::Constant(c), "loss_constant"),
    ] {
        let cfg = GrpoConfig {
            epsilon_low: f(&g["epsilon_low"]) as f32,
            epsilon_high: f(&g["epsilon_high"]) as f32,
            beta: f(&g["beta"]),
            scale_by_std: true,
            aggregation: agg,
        };
        let l = grpo_loss(&cfg, &new, &old, Some(&rp), &adv[..4], &mask).unwrap();
        close(key, scalar(&l.loss), f(&g[key]), 1e-5);
        close("grpo kl", l.kl, f(&g["kl"]), 1e-5);
        close("grpo clipfrac", l.clipfrac, f(&g["clipfrac"]), 1e-6);
    }
}

#[test]
fn dpo_family_matches() {
    let fx = fixture();
    let d = &fx["dpo"];
    let p = PairLogps {
        chosen: t1(&d["chosen"]),
        rejected: t1(&d["rejected"]),
        ref_chosen: t1(&d["ref_chosen"]),
        ref_rejected: t1(&d["ref_rejected"]),
        chosen_len: t1(&d["chosen_len"]),
        rejected_len: t1(&d["rejected_len"]),
    };
    let beta = f(&d["beta"]);
    let cases = [
        (PreferenceLoss::Dpo { beta, label_smoothing: 0.0 }, "sigmoid"),
        (PreferenceLoss::Dpo { beta, label_smoothing: 0.1 }, "sigmoid_ls0.1"),
        (PreferenceLoss::Ipo { beta }, "ipo"),
        (PreferenceLoss::LengthNormDpo { beta }, "sigmoid_norm"),
        (PreferenceLoss::Simpo { beta, gamma: f(&d["simpo_gamma"]) }, "simpo"),
    ];
    for (kind, key) in cases {
        let (loss, _, m) = preference_loss(&kind, &p).unwrap();
        close(key, scalar(&loss), f(&d[key]), 1e-5);
        if key == "sigmoid" {
            for (k, v) in d["metrics"].as_object().unwrap() {
                close(k, m[k.as_str()], f(v), 1e-5);
            }
        }
    }
}

#[test]
fn sft_matches() {
    let fx = fixture();
    let i = &fx["inputs"];
    let l = sft::sft_loss_from(&t2(&i["logp"]), &t2(&i["mask"])).unwrap();
    close("sft", scalar(&l), f(&fx["sft"]["loss"]), 1e-6);
}

#[test]
fn adaptive_kl_controller_matches_lm_human_preferences() {
    let fx = fixture();
    let c = &fx["kl_controller"];
    let mut ctl = KlController::Adaptive { beta: f(&c["init"]), target: f(&c["target"]), horizon: f(&c["horizon"]) };
    for step in c["trace"].as_array().unwrap() {
        ctl.update(f(&step["kl"]), step["n_steps"].as_u64().unwrap() as usize);
        close("beta", ctl.beta(), f(&step["beta"]), 1e-12);
    }
}
