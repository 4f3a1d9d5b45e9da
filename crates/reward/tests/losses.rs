//! Losses, ensemble aggregates and temperature scaling against hand-computed values and
//! against PyTorch/TRL reference values (`tests/reference/rm_losses.py` →
//! `tests/fixtures/rm_losses.json`).

use candle_core::{DType, Device, Tensor, Var};
use mismatch_reward::loss::{best_of_k, bradley_terry, centering, kwise, margin_bt, pairwise_accuracy, plackett_luce};
use mismatch_reward::{aggregate, fit_temperature, pairwise_nll, Aggregate};
use serde_json::Value;

fn fixture() -> Value {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/rm_losses.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("read rm_losses.json")).unwrap()
}
fn vec1(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}
fn vec2(v: &Value) -> Vec<Vec<f64>> {
    v.as_array().unwrap().iter().map(vec1).collect()
}
fn t1(v: &[f64]) -> Tensor {
    Tensor::new(v, &Device::Cpu).unwrap()
}
fn t2(v: &[Vec<f64>]) -> Tensor {
    Tensor::new(v.to_vec(), &Device::Cpu).unwrap()
}
fn s(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}
fn close(a: &[f64], b: &[f64], tol: f64) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y} ({a:?} vs {b:?})");
    }
}

#[test]
fn hand_computed_values() {
    let z = t1(&[0.0, 0.0]);
    // −log σ(0) = ln 2.
    assert!((s(&bradley_terry(&z, &z).unwrap()) - 2f64.ln()).abs() < 1e-12);
    // −log σ(1 − 0 − 1) = ln 2, and −log σ(3 − 1 − 0) = log(1 + e⁻²).
    let m = s(&margin_bt(&t1(&[1.0, 3.0]), &t1(&[0.0, 1.0]), &t1(&[1.0, 0.0])).unwrap());
    assert!((m - (2f64.ln() + (-2f64).exp().ln_1p()) / 2.0).abs() < 1e-12);
    // η · mean((1 + 2)², (−1 + 0)²) = 0.1 · 5.
    let c = s(&centering(&t1(&[1.0, -1.0]), &t1(&[2.0, 0.0]), 0.1).unwrap());
    assert!((c - 0.5).abs() < 1e-12);
    // Far-apart rewards: f32 must not overflow to inf (naive log(1+exp(100)) does).
    let big =
        bradley_terry(&Tensor::new(&[-100f32], &Device::Cpu).unwrap(), &Tensor::new(&[0f32], &Device::Cpu).unwrap())
            .unwrap();
    assert!((s(&big) - 100.0).abs() < 1e-4);
    let acc = pairwise_accuracy(&t1(&[1.0, 2.0, 0.0]), &t1(&[0.0, 3.0, 0.0])).unwrap();
    assert!((acc - 1.0 / 3.0).abs() < 1e-6, "ties count as wrong");
}

#[test]
fn listwise_losses_reduce_to_bt_for_two() {
    let r = t2(&[vec![1.5, -0.5], vec![0.2, 0.9]]);
    let bt = s(&bradley_terry(&t1(&[1.5, 0.2]), &t1(&[-0.5, 0.9])).unwrap());
    assert!((s(&kwise(&r).unwrap()) - bt).abs() < 1e-12);
    assert!((s(&plackett_luce(&r).unwrap()) - bt).abs() < 1e-12);
    let best = Tensor::new(&[0u32, 0], &Device::Cpu).unwrap();
    assert!((s(&best_of_k(&r, &best).unwrap()) - bt).abs() < 1e-12);
    assert!(kwise(&t2(&[vec![1.0]])).is_err());
}

#[test]
fn pairwise_losses_match_trl() {
    let f = fixture();
    let (rc, rr, mg) = (vec1(&f["r_chosen"]), vec1(&f["r_rejected"]), vec1(&f["margin"]));
    let eta = f["eta"].as_f64().unwrap();
    let vc = Var::from_tensor(&t1(&rc)).unwrap();
    let vr = Var::from_tensor(&t1(&rr)).unwrap();

    let bt = bradley_terry(vc.as_tensor(), vr.as_tensor()).unwrap();
    close(&[s(&bt)], &[f["bt"].as_f64().unwrap()], 1e-12);
    let g = bt.backward().unwrap();
    close(&g.get(&vc).unwrap().to_vec1().unwrap(), &vec1(&f["bt_grad_chosen"]), 1e-12);
    close(&g.get(&vr).unwrap().to_vec1().unwrap(), &vec1(&f["bt_grad_rejected"]), 1e-12);

    let m = margin_bt(vc.as_tensor(), vr.as_tensor(), &t1(&mg)).unwrap();
    close(&[s(&m)], &[f["margin_loss"].as_f64().unwrap()], 1e-12);
    let g = m.backward().unwrap();
    close(&g.get(&vc).unwrap().to_vec1().unwrap(), &vec1(&f["margin_grad_chosen"]), 1e-12);

    let c = centering(vc.as_tensor(), vr.as_tensor(), eta).unwrap();
    close(&[s(&c)], &[f["centering"].as_f64().unwrap()], 1e-12);
    let total = (bt + c).unwrap();
    close(&[s(&total)], &[f["bt_centered"].as_f64().unwrap()], 1e-12);
    let g = total.backward().unwrap();
    close(&g.get(&vc).unwrap().to_vec1().unwrap(), &vec1(&f["bt_centered_grad_chosen"]), 1e-12);

    // Same losses in f32 (the training dtype) agree to float precision.
    let bt32 = bradley_terry(&t1(&rc).to_dtype(DType::F32).unwrap(), &t1(&rr).to_dtype(DType::F32).unwrap()).unwrap();
    close(&[s(&bt32)], &[f["bt"].as_f64().unwrap()], 1e-6);
}

#[test]
fn listwise_losses_match_torch() {
    let f = fixture();
    let r = vec2(&f["ranked_rewards"]);
    let best: Vec<u32> = vec1(&f["best"]).iter().map(|&b| b as u32).collect();
    let v = Var::from_tensor(&t2(&r)).unwrap();
    let kw = kwise(v.as_tensor()).unwrap();
    close(&[s(&kw)], &[f["kwise"].as_f64().unwrap()], 1e-12);
    let g = kw.backward().unwrap().get(&v).unwrap().flatten_all().unwrap();
    let want: Vec<f64> = vec2(&f["kwise_grad"]).concat();
    close(&g.to_vec1().unwrap(), &want, 1e-12);
    let best = Tensor::new(best.as_slice(), &Device::Cpu).unwrap();
    close(&[s(&best_of_k(&t2(&r), &best).unwrap())], &[f["best_of_k"].as_f64().unwrap()], 1e-12);
    close(&[s(&plackett_luce(&t2(&r)).unwrap())], &[f["plackett_luce"].as_f64().unwrap()], 1e-12);
}

#[test]
fn ensemble_aggregates_match_numpy() {
    let f = fixture();
    let m = t2(&vec2(&f["members"]));
    let lambda = f["uwo_lambda"].as_f64().unwrap();
    let got = |a| aggregate(&m, a).unwrap().to_vec1::<f64>().unwrap();
    close(&got(Aggregate::Mean), &vec1(&f["agg_mean"]), 1e-12);
    close(&got(Aggregate::WorstCase), &vec1(&f["agg_min"]), 1e-12);
    close(&got(Aggregate::UncertaintyWeighted { lambda }), &vec1(&f["agg_uwo"]), 1e-12);
}

#[test]
fn temperature_matches_torch_lbfgs() {
    let f = fixture();
    let d = vec1(&f["calib_margins"]);
    let t = fit_temperature(&d);
    close(&[t], &[f["temperature"].as_f64().unwrap()], 1e-6);
    close(&[pairwise_nll(&d, t)], &[f["calib_nll"].as_f64().unwrap()], 1e-10);
    // Never wrong on validation: sharper is always better, so T hits the lower bound.
    assert!(fit_temperature(&[1.0, 2.0]) < 0.0101);
    assert_eq!(fit_temperature(&[]), 1.0);
}

#[test]
fn gaussian_bt_hand_computed() {
    use mismatch_reward::loss::{gaussian_bt, log_phi};
    let t = |v: &[f64]| Tensor::new(v, &Device::Cpu).unwrap();
    // z = 0 (equal means): −log Φ(0) = ln 2, whatever the variances.
    let l = s(&gaussian_bt(&t(&[0.5]), &t(&[1.0]), &t(&[0.5]), &t(&[0.0])).unwrap());
    assert!((l - 2f64.ln()).abs() < 1e-12, "{l}");
    // μ_c − μ_r = 1, σ² = 1 + 1: z = 1/√2, Φ(z) = ½(1 + erf(½)) = ½(1 + 0.5204998778130465).
    let want = -(0.5 * (1.0 + 0.5204998778130465f64)).ln();
    let l = s(&gaussian_bt(&t(&[1.0]), &t(&[0.0]), &t(&[0.0]), &t(&[0.0])).unwrap());
    assert!((l - want).abs() < 1e-12, "{l} vs {want}");
    // Far tail, z = −10 (σ² = ½ + ½): the asymptotic branch. Mills-ratio series
    // log Φ(z) = −z²/2 − log(−z) − ½ log 2π + log(1 − 1/z² + 3/z⁴ − 15/z⁶ + 105/z⁸ …) = −53.2312851505…
    // (torch.special.log_ndtr(−10) = −53.23128515051248).
    let half = 0.5f64.ln();
    let l = s(&gaussian_bt(&t(&[-10.0]), &t(&[half]), &t(&[0.0]), &t(&[half])).unwrap());
    assert!((l - 53.23128515051248).abs() < 1e-6, "{l}");
    // Both branches agree at the switch (z = −7) and the tail gradient is finite.
    let z = t(&[-7.0 - 1e-9, -7.0 + 1e-9]);
    let v = log_phi(&z).unwrap().to_vec1::<f64>().unwrap();
    assert!((v[0] - v[1]).abs() < 1e-5 * v[0].abs(), "{v:?}");
    let mu = Var::new(&[-10.0f64, 1.0], &Device::Cpu).unwrap();
    let lv = t(&[half, 0.0]);
    let loss = gaussian_bt(mu.as_tensor(), &lv, &t(&[0.0, 0.0]), &lv).unwrap();
    let g = loss.backward().unwrap().get(mu.as_tensor()).unwrap().to_vec1::<f64>().unwrap();
    // d/dμ_c mean(−log Φ(z)) = −½ φ(z)/Φ(z) / sqrt(σ²): at z = −10, φ/Φ = 10.0981… (Mills ratio).
    assert!((g[0] - -0.5 * 10.09809323).abs() < 1e-4, "{g:?}");
    assert!(g.iter().all(|x| x.is_finite()));
}
