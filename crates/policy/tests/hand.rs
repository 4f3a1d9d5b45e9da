//! Every function on small fixed inputs against values computed by hand (arithmetic in comments).

use candle_core::{Device, Tensor, Var};
use mismatch_policy::dpo::{log_sigmoid, preference_loss, PairLogps, PreferenceLoss};
use mismatch_policy::grpo::{group_advantages, grpo_loss, Aggregation, GrpoConfig};
use mismatch_policy::kl::{per_token_kl, KlController, KlEstimator};
use mismatch_policy::ppo::{self, MissingEos};
use mismatch_policy::{masked, rloo, sft};

const CPU: Device = Device::Cpu;

fn t(rows: &[&[f32]]) -> Tensor {
    let c = rows[0].len();
    Tensor::from_vec(rows.concat(), (rows.len(), c), &CPU).unwrap()
}

fn v1(x: &[f32]) -> Tensor {
    Tensor::from_slice(x, x.len(), &CPU).unwrap()
}

fn s(x: &Tensor) -> f64 {
    masked::scalar(x).unwrap()
}

fn assert_vec(what: &str, got: &Tensor, want: &[f32], tol: f32) {
    let g = got.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(g.len(), want.len(), "{what}");
    for (i, (a, b)) in g.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol, "{what}[{i}]: got {a}, want {b} (all: {g:?})");
    }
}

fn assert_close(what: &str, got: f64, want: f64, tol: f64) {
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want}");
}

#[test]
fn kl_estimators_by_hand() {
    // π = 0.5, π_ref = 0.25: log r = ln 0.5 = −0.693147;
    // k1 = 0.693147, k2 = ½·0.480453 = 0.240227, k3 = (0.5 − 1) + 0.693147 = 0.193147.
    let lp = t(&[&[0.5f32.ln()]]);
    let rp = t(&[&[0.25f32.ln()]]);
    assert_vec("k1", &per_token_kl(&lp, &rp, KlEstimator::K1).unwrap(), &[std::f32::consts::LN_2], 1e-6);
    assert_vec("k2", &per_token_kl(&lp, &rp, KlEstimator::K2).unwrap(), &[0.240227], 1e-6);
    assert_vec("k3", &per_token_kl(&lp, &rp, KlEstimator::K3).unwrap(), &[0.193147], 1e-6);
    assert!(KlEstimator::parse("k4").is_err());
}

#[test]
fn kl_controllers_by_hand() {
    let mut fixed = KlController::Fixed { beta: 0.05 };
    fixed.update(100.0, 512);
    assert_eq!(fixed.beta(), 0.05);
    // KL 3 vs target 6: e = clip(0.5 − 1) = −0.2; β = 0.1·(1 − 0.2·512/10000) = 0.098976.
    let mut a = KlController::Adaptive { beta: 0.1, target: 6.0, horizon: 10000.0 };
    a.update(3.0, 512);
    assert_close("adaptive down", a.beta(), 0.098976, 1e-12);
    // KL 6.6: e = 0.1; β = 0.098976·(1 + 0.1·1000/10000) = 0.098976·1.01 = 0.09996576.
    a.update(6.6, 1000);
    assert_close("adaptive up", a.beta(), 0.09996576, 1e-12);
}

#[test]
fn masked_whiten_by_hand() {
    // Real tokens 1, 2, 3 (the 100 is padding): μ = 2, unbiased σ² = (1 + 0 + 1)/2 = 1.
    let x = t(&[&[1.0, 2.0], &[3.0, 100.0]]);
    let m = t(&[&[1.0, 1.0], &[1.0, 0.0]]);
    assert_vec("whiten", &masked::whiten(&x, &m, true).unwrap(), &[-1.0, 0.0, 1.0, 0.0], 1e-6);
    assert_vec("whiten keep mean", &masked::whiten(&x, &m, false).unwrap(), &[1.0, 2.0, 3.0, 0.0], 1e-6);
    assert!(masked::var(&x, &t(&[&[1.0, 0.0], &[0.0, 0.0]])).is_err(), "one token has no unbiased variance");
}

#[test]
fn ppo_rewards_by_hand() {
    // β = 0.5: non-score = −0.5·kl on real tokens; the score lands on the last real token.
    // row 0: [−.05, −.1, −.15 + 1] ; row 1: [−.2, −.25 + 2, 0 (pad)].
    let kl = t(&[&[0.1, 0.2, 0.3], &[0.4, 0.5, 9.0]]);
    let m = t(&[&[1.0, 1.0, 1.0], &[1.0, 1.0, 0.0]]);
    let (r, nsr) = ppo::token_rewards(&kl, &[1.0, 2.0], &m, 0.5).unwrap();
    assert_vec("non-score", &nsr, &[-0.05, -0.1, -0.15, -0.2, -0.25, 0.0], 1e-6);
    assert_vec("rewards", &r, &[-0.05, -0.1, 0.85, -0.2, 1.75, 0.0], 1e-6);
    assert!(ppo::token_rewards(&kl, &[1.0], &m, 0.5).is_err());
    assert!(ppo::token_rewards(&kl, &[1.0, 2.0], &t(&[&[1.0, 1.0, 1.0], &[0.0, 0.0, 0.0]]), 0.5).is_err());
    assert!(ppo::lengths(&t(&[&[1.0, 0.0, 1.0]])).is_err(), "left padding is rejected");
    // Missing EOS on rows 1 and 2.
    let sc = [1.0, 2.0, 3.0];
    let eos = [true, false, false];
    assert_eq!(ppo::penalize_missing_eos(&sc, &eos, MissingEos::Subtract(1.0)).unwrap(), vec![1.0, 1.0, 2.0]);
    assert_eq!(ppo::penalize_missing_eos(&sc, &eos, MissingEos::Replace(-1.0)).unwrap(), vec![1.0, -1.0, -1.0]);
    assert_eq!(ppo::penalize_missing_eos(&sc, &eos, MissingEos::Keep).unwrap(), sc.to_vec());
}

#[test]
fn gae_by_hand() {
    // γ = 1, λ = 0.5. Row 0: r = [0, 0, 1], V = [.5, .6, .7]
    //   δ2 = 1 − .7 = .3 → A2 = .3; δ1 = .7 − .6 = .1 → A1 = .1 + .5·.3 = .25;
    //   δ0 = .6 − .5 = .1 → A0 = .1 + .5·.25 = .225; R = A + V = [.725, .85, 1].
    // Row 1 (last column is padding, its 5 and 9 are ignored): r = [0, 1], V = [.5, .6]
    //   δ1 = 1 − .6 = .4 → A1 = .4; δ0 = .6 − .5 = .1 → A0 = .1 + .5·.4 = .3; R = [.8, 1].
    let r = t(&[&[0.0, 0.0, 1.0], &[0.0, 1.0, 5.0]]);
    let v = t(&[&[0.5, 0.6, 0.7], &[0.5, 0.6, 9.0]]);
    let m = t(&[&[1.0, 1.0, 1.0], &[1.0, 1.0, 0.0]]);
    let (a, ret) = ppo::gae(&r, &v, &m, 1.0, 0.5).unwrap();
    assert_vec("advantages", &a, &[0.225, 0.25, 0.3, 0.3, 0.4, 0.0], 1e-6);
    assert_vec("returns", &ret, &[0.725, 0.85, 1.0, 0.8, 1.0, 0.0], 1e-6);
    // γ = 0.9, λ = 1, one row r = [0, 1], V = 0: A1 = 1, A0 = 0.9 (discounted return).
    let (a, _) = ppo::gae(&t(&[&[0.0, 1.0]]), &t(&[&[0.0, 0.0]]), &t(&[&[1.0, 1.0]]), 0.9, 1.0).unwrap();
    assert_vec("discount", &a, &[0.9, 1.0], 1e-6);
}

#[test]
fn ppo_policy_loss_and_gradient_by_hand() {
    // old log-probs 0, ratios ρ = [1.5, 1.5, 0.5], A = [1, −1, 1], ε = 0.2:
    //   t0: max(−1.5, −1.2) = −1.2 (clipped); t1: max(1.5, 1.2) = 1.5; t2: max(−0.5, −0.8) = −0.5.
    //   loss = (−1.2 + 1.5 − 0.5)/3 = −0.0666667; clipfrac = 1/3; mean ρ = 3.5/3 = 1.1666667;
    //   approxkl = ½·(2·ln²1.5 + ln²0.5)/3 = 0.1348762.
    // d loss/d log π_θ = −A·ρ/3 where unclipped, 0 where clipped: [0, 0.5, −0.1666667].
    let new = Var::from_tensor(&t(&[&[1.5f32.ln(), 1.5f32.ln(), 0.5f32.ln()]])).unwrap();
    let old = t(&[&[0.0, 0.0, 0.0]]);
    let adv = t(&[&[1.0, -1.0, 1.0]]);
    let m = t(&[&[1.0, 1.0, 1.0]]);
    let pl = ppo::policy_loss(new.as_tensor(), &old, &adv, &m, 0.2).unwrap();
    assert_close("loss", s(&pl.loss), -0.0666667, 1e-6);
    assert_close("clipfrac", pl.clipfrac, 1.0 / 3.0, 1e-6);
    assert_close("ratio", pl.ratio, 1.1666667, 1e-6);
    assert_close("approxkl", pl.approxkl, 0.1348762, 1e-6);
    let g = pl.loss.backward().unwrap();
    assert_vec("grad", g.get(new.as_tensor()).unwrap(), &[0.0, 0.5, -0.1666667], 1e-6);
}

#[test]
fn ppo_value_loss_entropy_ptx_by_hand() {
    // V_old = .5, ε_v = .2 → clip range [.3, .7].
    //   t0: V = 1, R = 2: (1−2)² = 1 vs (.7−2)² = 1.69 → 1.69 (clipped);
    //   t1: V = 0, R = 0: 0 vs (.3)² = .09 → .09 (clipped);
    //   t2: V = .6, R = 0: .36 vs .36 → .36 (not clipped).
    //   loss = ½·(1.69 + .09 + .36)/3 = 0.3566667; clipfrac = 2/3.
    let vl = ppo::value_loss(
        &t(&[&[1.0, 0.0, 0.6]]),
        &t(&[&[0.5, 0.5, 0.5]]),
        &t(&[&[2.0, 0.0, 0.0]]),
        &t(&[&[1.0, 1.0, 1.0]]),
        0.2,
    )
    .unwrap();
    assert_close("value loss", s(&vl.loss), 0.3566667, 1e-6);
    assert_close("value clipfrac", vl.clipfrac, 2.0 / 3.0, 1e-6);
    // Uniform over 4: H = ln 4 = 1.3862944. p = [.25, .75] (logits [0, ln 3]):
    // H = .25·ln 4 + .75·ln(4/3) = 0.3465736 + 0.2157616 = 0.5623351.
    let logits = Tensor::from_vec(vec![0f32, 0.0, 0.0, 0.0, 0.0, 3f32.ln(), -1e9, -1e9], (1, 2, 4), &CPU).unwrap();
    assert_vec("entropy", &ppo::entropy_from_logits(&logits).unwrap(), &[1.3862944, 0.5623351], 1e-6);
    // PPO-ptx: 0.5 + 27.8·0.1 = 3.28.
    let l = ppo::ptx_loss(
        &Tensor::new(0.5f32, &CPU).unwrap(),
        &Tensor::new(0.1f32, &CPU).unwrap(),
        ppo::INSTRUCTGPT_PTX_COEF,
    )
    .unwrap();
    assert_close("ptx", s(&l), 3.28, 1e-6);
}

#[test]
fn ppo_metrics_by_hand() {
    // kl (k1, π_old vs π_ref) = [[.1, .2], [.3, pad]], β = 1, scores [1, 3]:
    //   objective/kl = mean(.3, .3) = .3; non_score = −.3; scores 2; rlhf_reward = 1.7.
    let m = t(&[&[1.0, 1.0], &[1.0, 0.0]]);
    let lp = t(&[&[0.1, 0.2], &[0.3, 7.0]]);
    let rp = t(&[&[0.0, 0.0], &[0.0, 0.0]]);
    let cfg = ppo::PpoConfig::default();
    let r = ppo::rollout(&cfg, &lp, &rp, &t(&[&[0.0, 0.0], &[0.0, 0.0]]), &[1.0, 3.0], &m, 1.0).unwrap();
    let mt = ppo::rollout_metrics(&r, &[1.0, 3.0], None, &m).unwrap();
    assert_close("kl", mt["objective/kl"], 0.3, 1e-6);
    assert_close("nsr", mt["objective/non_score_reward"], -0.3, 1e-6);
    assert_close("rlhf", mt["objective/rlhf_reward"], 1.7, 1e-6);
}

#[test]
fn rloo_by_hand() {
    // r = [1, 2, 6], k = 3: A = [1 − 8/2, 2 − 7/2, 6 − 3/2] = [−3, −1.5, 4.5] (sums to 0).
    assert_eq!(rloo::advantages(&[1.0, 2.0, 6.0, 0.0, 0.0, 0.0], 3).unwrap(), vec![-3.0, -1.5, 4.5, 0.0, 0.0, 0.0]);
    assert!(rloo::advantages(&[1.0, 2.0, 3.0], 2).is_err());
    assert!(rloo::advantages(&[1.0], 1).is_err());
    // 1 − 0.1·2 = 0.8.
    assert_close("shaped", rloo::kl_shaped_rewards(&[1.0], &[2.0], 0.1).unwrap()[0] as f64, 0.8, 1e-6);
    // Σ log π = [−3, −0.5], A = [1, −2]: −mean(−3·1, −0.5·−2) = −(−3 + 1)/2 = 1.
    let l = rloo::reinforce_loss(&t(&[&[-1.0, -2.0], &[-0.5, -100.0]]), &t(&[&[1.0, 1.0], &[1.0, 0.0]]), &[1.0, -2.0])
        .unwrap();
    assert_close("reinforce", s(&l), 1.0, 1e-6);
    // KL as a loss: π = .5, π_ref = .25 on 2 + 1 tokens, k1 = ln 2: β·mean(2 ln 2, ln 2) = .1·1.5·0.693147.
    let lp = t(&[&[0.5f32.ln(), 0.5f32.ln()], &[0.5f32.ln(), 0.0]]);
    let rp = t(&[&[0.25f32.ln(), 0.25f32.ln()], &[0.25f32.ln(), 0.0]]);
    let kl = rloo::kl_loss(&lp, &rp, &t(&[&[1.0, 1.0], &[1.0, 0.0]]), KlEstimator::K1, 0.1).unwrap();
    assert_close("kl loss", s(&kl), 0.1 * 1.5 * std::f64::consts::LN_2, 1e-6);
}

#[test]
fn grpo_by_hand() {
    // Group [1, 0, .5]: mean .5, unbiased std sqrt((.25 + .25 + 0)/2) = .5;
    // A = ±.5/(.5 + 1e-4) = ±0.9998, 0. Dr. GRPO: [.5, −.5, 0]. A constant group gives 0.
    let a = group_advantages(&[1.0, 0.0, 0.5, 2.0, 2.0, 2.0], 3, true).unwrap();
    for (g, w) in a.iter().zip([0.9998f32, -0.9998, 0.0, 0.0, 0.0, 0.0]) {
        assert!((g - w).abs() < 1e-6, "{a:?}");
    }
    assert_eq!(group_advantages(&[1.0, 0.0, 0.5], 3, false).unwrap(), vec![0.5, -0.5, 0.0]);
    assert!(group_advantages(&[1.0, 2.0, 3.0], 2, true).is_err());
    // ρ = 1, A = [1, −3], rows of 2 and 1 tokens: per-token loss −A = [[−1, −1], [3]].
    //   Token: (−1 − 1 + 3)/3 = 0.3333333; Sequence: (−1 + 3)/2 = 1; Constant(4): 1/(2·4) = 0.125.
    // With β = .1 and k3 = 0.193147 everywhere (π = .5, π_ref = .25): +0.0193147 to token and
    // sequence means, +0.0193147·3/8 = 0.0072430 to Constant.
    let lp = t(&[&[0.5f32.ln(), 0.5f32.ln()], &[0.5f32.ln(), 0.0]]);
    let rp = t(&[&[0.25f32.ln(), 0.25f32.ln()], &[0.25f32.ln(), 0.0]]);
    let m = t(&[&[1.0, 1.0], &[1.0, 0.0]]);
    for (agg, no_kl, with_kl) in [
        (Aggregation::Token, 0.3333333, 0.3526480),
        (Aggregation::Sequence, 1.0, 1.0193147),
        (Aggregation::Constant(4), 0.125, 0.1322430),
    ] {
        let cfg = GrpoConfig { beta: 0.0, aggregation: agg, ..GrpoConfig::default() };
        let l = grpo_loss(&cfg, &lp, &lp, Some(&rp), &[1.0, -3.0], &m).unwrap();
        assert_close("grpo no kl", s(&l.loss), no_kl, 1e-6);
        let cfg = GrpoConfig { beta: 0.1, ..cfg };
        let l = grpo_loss(&cfg, &lp, &lp, Some(&rp), &[1.0, -3.0], &m).unwrap();
        assert_close("grpo kl", s(&l.loss), with_kl, 1e-6);
        assert_close("grpo kl metric", l.kl, 0.193147, 1e-6);
        assert_eq!(l.clipfrac, 0.0);
    }
    assert_eq!(GrpoConfig::default().aggregation, Aggregation::Token);
}

fn pair() -> PairLogps {
    // Δ_w = −10 − (−12) = 2, Δ_l = −15 − (−14) = −1, h = 3; |y_w| = 2, |y_l| = 4.
    PairLogps {
        chosen: v1(&[-10.0]),
        rejected: v1(&[-15.0]),
        ref_chosen: v1(&[-12.0]),
        ref_rejected: v1(&[-14.0]),
        chosen_len: v1(&[2.0]),
        rejected_len: v1(&[4.0]),
    }
}

#[test]
fn dpo_family_by_hand() {
    let p = pair();
    // DPO β = .1: −log σ(0.3) = log(1 + e^−0.3) = 0.5543552.
    // cDPO ε = .1: .9·0.5543552 + .1·log(1 + e^0.3) = .9·0.5543552 + .1·0.8543552 = 0.5843552.
    // IPO: h = 2/2 + 1/4 = 1.25, (1.25 − 1/(2·.1))² = (−3.75)² = 14.0625.
    // LN-DPO: −log σ(.1·1.25) = 0.6325990.
    // SimPO γ = .5: .1·(−10/2 + 15/4) − .5 = −0.625; −log σ(−0.625) = 1.0537007.
    for (kind, want) in [
        (PreferenceLoss::Dpo { beta: 0.1, label_smoothing: 0.0 }, 0.5543552),
        (PreferenceLoss::Dpo { beta: 0.1, label_smoothing: 0.1 }, 0.5843552),
        (PreferenceLoss::Ipo { beta: 0.1 }, 14.0625),
        (PreferenceLoss::LengthNormDpo { beta: 0.1 }, 0.6325990),
        (PreferenceLoss::Simpo { beta: 0.1, gamma: 0.5 }, 1.0537007),
    ] {
        let (l, _, _) = preference_loss(&kind, &p).unwrap();
        assert_close(&format!("{kind:?}"), s(&l), want, 1e-5);
    }
    // rewards: β·Δ = 0.2 and −0.1; margin 0.3; accuracy 1; logps −10, −15.
    let (_, _, m) = preference_loss(&PreferenceLoss::Dpo { beta: 0.1, label_smoothing: 0.0 }, &p).unwrap();
    for (k, w) in [
        ("rewards/chosen", 0.2),
        ("rewards/rejected", -0.1),
        ("rewards/margins", 0.3),
        ("rewards/accuracies", 1.0),
        ("logps/chosen", -10.0),
        ("logps/rejected", -15.0),
    ] {
        assert_close(k, m[k], w, 1e-6);
    }
    assert!(preference_loss(&PreferenceLoss::Dpo { beta: 0.1, label_smoothing: 0.5 }, &p).is_err());
}

#[test]
fn dpo_gradient_by_hand() {
    // ∂/∂log π(y_w) of −log σ(βh) = −β(1 − σ(βh)) = −.1·(1 − σ(.3)) = −0.0425557; rejected: +0.0425557.
    let p = pair();
    let cw = Var::from_tensor(&p.chosen).unwrap();
    let rl = Var::from_tensor(&p.rejected).unwrap();
    let p = PairLogps { chosen: cw.as_tensor().clone(), rejected: rl.as_tensor().clone(), ..p };
    let (l, _, _) = preference_loss(&PreferenceLoss::Dpo { beta: 0.1, label_smoothing: 0.0 }, &p).unwrap();
    let g = l.backward().unwrap();
    assert_vec("d/dchosen", g.get(cw.as_tensor()).unwrap(), &[-0.0425557], 1e-6);
    assert_vec("d/drejected", g.get(rl.as_tensor()).unwrap(), &[0.0425557], 1e-6);
}

#[test]
fn log_sigmoid_is_stable() {
    // log σ(−1000) = −1000 (naive log(1/(1 + e^1000)) = −inf), log σ(1000) = 0, log σ(0) = −ln 2.
    assert_vec(
        "logsig",
        &log_sigmoid(&v1(&[-1000.0, 1000.0, 0.0])).unwrap(),
        &[-1000.0, 0.0, -std::f32::consts::LN_2],
        1e-5,
    );
}

#[test]
fn sft_by_hand() {
    // −(−1 − 2 − 3)/3 = 2; the −100 is padding.
    let lp = t(&[&[-1.0, -2.0], &[-3.0, -100.0]]);
    let m = t(&[&[1.0, 1.0], &[1.0, 0.0]]);
    assert_close("sft", s(&sft::sft_loss_from(&lp, &m).unwrap()), 2.0, 1e-6);
    let c = mismatch_models::CompletionLogprobs {
        logprobs: lp,
        mask: m,
        hidden: Tensor::zeros((2, 2, 1), candle_core::DType::F32, &CPU).unwrap(),
        vocab_logprobs: None,
    };
    assert_close("sft", s(&sft::sft_loss(&c).unwrap()), 2.0, 1e-6);
    assert!(sft::sft_loss_from(&t(&[&[-1.0]]), &t(&[&[0.0]])).is_err(), "no tokens is an error, not NaN");
}
