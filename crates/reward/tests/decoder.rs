//! Reward models on decoder backbones: a 2-layer, 64-dim tiny GPT built here (word-level
//! tokenizer, random init) and the real SmolLM2-135M (frozen, head only).

mod common;

use candle_core::Device;
use common::{pairs, tiny_gpt};
use mismatch_reward::train::{train, train_in_memory};
use mismatch_reward::{BackboneKind, Pair, RewardModel, TrainConfig};
use std::path::Path;

fn accuracy(rm: &RewardModel, p: &[Pair]) -> f64 {
    let prompts: Vec<&str> = p.iter().map(|x| x.prompt.as_str()).collect();
    let c: Vec<&str> = p.iter().map(|x| x.chosen.as_str()).collect();
    let r: Vec<&str> = p.iter().map(|x| x.rejected.as_str()).collect();
    let (sc, sr) = (rm.score(&prompts, &c).unwrap(), rm.score(&prompts, &r).unwrap());
    sc.iter().zip(&sr).filter(|(a, b)| a > b).count() as f64 / p.len() as f64
}

fn cfg(backbone: &Path) -> TrainConfig {
    TrainConfig { epochs: 3, batch_size: 16, lr: 3e-3, ..TrainConfig::new(backbone.to_str().unwrap()) }
}

fn scores(rm: &RewardModel, p: &[Pair]) -> Vec<Vec<f32>> {
    let prompts: Vec<&str> = p.iter().map(|x| x.prompt.as_str()).collect();
    let c: Vec<&str> = p.iter().map(|x| x.chosen.as_str()).collect();
    rm.score_members(&prompts, &c).unwrap()
}

#[test]
fn tiny_gpt_rm_learns_a_word_preference() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt = tiny_gpt(tmp.path());
    let (tr, ev) = (pairs(256, 1), pairs(100, 2));
    let rm = train_in_memory(&cfg(&gpt), &tr, &[], false).unwrap();
    assert_eq!(rm.config.backbone_kind, BackboneKind::Decoder);
    let acc = accuracy(&rm, &ev);
    eprintln!("tiny GPT RM held-out accuracy {acc}");
    assert!(acc > 0.9, "held-out accuracy {acc}");
    // Untrained (head only, 0 epochs) is near chance: the preference was learned.
    let rm0 = train_in_memory(&TrainConfig { epochs: 0, ..cfg(&gpt) }, &tr, &[], false).unwrap();
    let acc0 = accuracy(&rm0, &ev);
    eprintln!("untrained accuracy {acc0}");
    assert!(acc0 < 0.8, "untrained accuracy {acc0}");
}

#[test]
fn ensemble_round_trip_warm_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt = tiny_gpt(tmp.path());
    let (tr, ev) = (pairs(48, 3), pairs(16, 4));
    let c = TrainConfig { members: 3, epochs: 2, ..cfg(&gpt) };

    // On disk, uninterrupted; then interrupted after one epoch and resumed.
    let a = tmp.path().join("a");
    let rm = train(&c, &gpt, &tr, &ev, &a, false, false, None).unwrap();
    let b = tmp.path().join("b");
    let e = train(&c, &gpt, &tr, &ev, &b, false, false, Some(3)).err().unwrap().to_string();
    assert!(e.contains("--resume"), "{e}");
    train(&c, &gpt, &tr, &ev, &b, true, false, None).unwrap();
    for m in ["member-0", "member-1", "member-2"] {
        let f = Path::new("model").join(m).join("model.safetensors");
        assert!(std::fs::read(a.join(&f)).unwrap() == std::fs::read(b.join(&f)).unwrap(), "{m} differs after resume");
    }
    assert_eq!(std::fs::read(a.join("metrics.jsonl")).unwrap(), std::fs::read(b.join("metrics.jsonl")).unwrap());

    // Saved → loaded: bit-identical member scores; members differ (head seeds, data orders).
    let loaded = RewardModel::load(&a.join("model"), &Device::Cpu).unwrap();
    assert_eq!(loaded.config, rm.config);
    let s = scores(&rm, &ev);
    assert_eq!(scores(&loaded, &ev), s);
    assert_ne!(s[0], s[1]);
    // In memory gives the same model as on disk.
    let mem = train_in_memory(&c, &tr, &ev, false).unwrap();
    assert_eq!(scores(&mem, &ev), s);
    // A member directory is a self-contained HF checkpoint that loads as a causal LM.
    let m0 = a.join("model/member-0");
    assert!(m0.join("tokenizer.json").exists());
    mismatch_models::load_causal_lm(m0.to_str().unwrap(), &Device::Cpu, false).unwrap();

    // WARM: one member whose every weight (trunk included) is the members' mean.
    let w = tmp.path().join("warm");
    rm.save_warm(&w).unwrap();
    let warm = RewardModel::load(&w, &Device::Cpu).unwrap();
    assert!(warm.config.warm && warm.members.len() == 1);
    let avg = rm.average_weights().unwrap();
    let got = warm.members[0].tensors().unwrap();
    let mut trunk_moved = false;
    for name in ["transformer.h.0.attn.c_attn.weight", "transformer.wte.weight", "score.weight", "score.bias"] {
        let d = (&got[name] - &avg[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        assert!(d < 1e-7, "{name}: {d}");
        let m0 = rm.members[0].tensors().unwrap();
        let spread = (&m0[name] - &avg[name]).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
        trunk_moved |= name.starts_with("transformer") && spread > 1e-4;
    }
    assert!(trunk_moved, "members' trunks should differ after fine-tuning");
    // The trunk is non-linear: the weight average's score is not the mean of the scores.
    let ws = &scores(&warm, &ev)[0];
    let mean: Vec<f32> = (0..ev.len()).map(|i| (s[0][i] + s[1][i] + s[2][i]) / 3.0).collect();
    let gap = ws.iter().zip(&mean).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(gap > 1e-4, "WARM equals the score mean ({gap})");
}

#[test]
fn frozen_tiny_gpt_members_share_the_backbone_and_warm_is_the_mean() {
    let tmp = tempfile::tempdir().unwrap();
    let gpt = tiny_gpt(tmp.path());
    let (tr, ev) = (pairs(32, 5), pairs(8, 6));
    let c = TrainConfig { members: 2, frozen: true, ..cfg(&gpt) };
    let rm = train_in_memory(&c, &tr, &ev, false).unwrap();
    assert!(rm.config.frozen_backbone);
    let out = tmp.path().join("rm");
    rm.save(&out).unwrap();
    let back = RewardModel::load(&out, &Device::Cpu).unwrap();
    let s = scores(&rm, &ev);
    assert_eq!(scores(&back, &ev), s);
    // Resume with frozen members (shared backbone, head-only member checkpoints).
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    train(&c, &gpt, &tr, &ev, &a, false, false, None).unwrap();
    assert!(train(&c, &gpt, &tr, &ev, &b, false, false, Some(4)).is_err());
    train(&c, &gpt, &tr, &ev, &b, true, false, None).unwrap();
    let (ra, rb) = (
        RewardModel::load(&a.join("model"), &Device::Cpu).unwrap(),
        RewardModel::load(&b.join("model"), &Device::Cpu).unwrap(),
    );
    assert_eq!(scores(&ra, &ev), s);
    assert_eq!(scores(&rb, &ev), s);
    rm.save_warm(&tmp.path().join("w")).unwrap();
    let w = RewardModel::load(&tmp.path().join("w"), &Device::Cpu).unwrap();
    for (i, x) in scores(&w, &ev)[0].iter().enumerate() {
        assert!((x - (s[0][i] + s[1][i]) / 2.0).abs() < 1e-5);
    }
}

#[test]
fn smollm2_frozen_head_smoke() {
    let dir = mismatch_models::hub::cache_root().unwrap().join("models/smollm2-135m");
    if !dir.exists() {
        println!("SKIPPED: {} is absent (run `mismatch models fetch smollm2-135m`)", dir.display());
        return;
    }
    let tr = vec![
        Pair {
            prompt: "Say something kind.".into(),
            chosen: "You are wonderful.".into(),
            rejected: "Go away.".into(),
            margin: 0.0,
        },
        Pair { prompt: "Greet me.".into(), chosen: "Hello, friend!".into(), rejected: "Whatever.".into(), margin: 0.0 },
        Pair { prompt: "Thank me.".into(), chosen: "Thank you so much!".into(), rejected: "No.".into(), margin: 0.0 },
    ];
    let c = TrainConfig { frozen: true, epochs: 3, batch_size: 3, ..TrainConfig::new("smollm2-135m") };
    let rm = train_in_memory(&c, &tr, &[], false).unwrap();
    assert_eq!(rm.config.backbone_kind, BackboneKind::Decoder);
    let p: Vec<&str> = tr.iter().map(|x| x.prompt.as_str()).collect();
    let ch: Vec<&str> = tr.iter().map(|x| x.chosen.as_str()).collect();
    let s = rm.score(&p, &ch).unwrap();
    assert!(s.iter().all(|x| x.is_finite()));
    // Saving writes the full backbone per member as an HF Llama directory; loading scores the same.
    let tmp = tempfile::tempdir().unwrap();
    rm.save(&tmp.path().join("rm")).unwrap();
    assert!(tmp.path().join("rm/member-0/tokenizer.json").exists());
    let back = RewardModel::load(&tmp.path().join("rm"), &Device::Cpu).unwrap();
    assert_eq!(back.score(&p, &ch).unwrap(), s);

    // With the chat template: the model reads SmolLM2's own turn markup (training prepares
    // inputs through the same `prepare`).
    let cfg = mismatch_reward::RmConfig { chat_template: true, ..back.config.clone() };
    let chat = RewardModel::from_members(cfg, back.members).unwrap();
    assert!(chat.config.chat_template);
    let ids = match chat.prepare(&p[..1], &ch[..1]).unwrap() {
        mismatch_reward::member::Inputs::Ids(v) => v.into_iter().next().unwrap(),
        _ => panic!("decoder inputs are ids"),
    };
    let tok = match &chat.members[0] {
        mismatch_reward::Member::Decoder(m) => m.tok.clone(),
        _ => panic!("decoder member"),
    };
    let text = tok.decode(&ids, false).unwrap();
    assert!(text.contains("<|im_start|>assistant") && text.contains("You are wonderful."), "{text}");
    assert!(chat.score(&p, &ch).unwrap().iter().all(|x| x.is_finite()));
}
