//! RewardModel checkpoint round trip, ensemble aggregation, WARM and input formatting on
//! the real all-MiniLM-L6-v2 backbone (frozen: a few forward passes, seconds on CPU).

use candle_core::Device;
use mismatch_reward::member::{detect, Backbone, Member};
use mismatch_reward::{format_input, HeadKind, RewardModel, RmConfig};

const PROMPTS: [&str; 3] = ["How do I boil an egg?", "Tell me a joke.", "What is 2+2?"];
const COMPLETIONS: [&str; 3] = ["Put it in boiling water for 8 minutes.", "No.", "4"];

fn ensemble(k: usize) -> RewardModel {
    let (kind, dir) = detect("minilm-l6").unwrap();
    let b = Backbone::load(kind, &dir, &Device::Cpu, true).unwrap();
    let members = (0..k).map(|s| b.clone().member(HeadKind::Scalar, 10 + s as u64, true).unwrap()).collect();
    RewardModel::from_members(RmConfig::new("minilm-l6", true, k), members).unwrap()
}

fn encoder(rm: &RewardModel) -> &mismatch_models::bert::Encoder {
    match &rm.members[0] {
        Member::Encoder(m) => &m.encoder,
        _ => panic!("not an encoder"),
    }
}

#[test]
fn save_load_round_trip_and_aggregation() {
    let rm = ensemble(3);
    let members = rm.score_members(&PROMPTS, &COMPLETIONS).unwrap();
    assert_eq!(members.len(), 3);
    assert_ne!(members[0], members[1], "different seeds give different heads");
    let mean = rm.score(&PROMPTS, &COMPLETIONS).unwrap();
    for i in 0..3 {
        let m = (members[0][i] + members[1][i] + members[2][i]) / 3.0;
        assert!((mean[i] - m).abs() < 1e-6);
    }

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("rm");
    rm.save(&out).unwrap();
    rm.save(&out).unwrap(); // overwriting an existing checkpoint works
    let back = RewardModel::load(&out, &Device::Cpu).unwrap();
    assert_eq!(back.config, rm.config);
    assert_eq!(back.score_members(&PROMPTS, &COMPLETIONS).unwrap(), members);

    let mut wco = back;
    wco.config.aggregate = "wco".into();
    let min = wco.score(&PROMPTS, &COMPLETIONS).unwrap();
    for i in 0..3 {
        assert_eq!(min[i], members.iter().map(|m| m[i]).fold(f32::INFINITY, f32::min));
    }

    // Frozen backbone: the reward is linear in the head, so WARM == mean ensemble.
    let warm_dir = tmp.path().join("warm");
    rm.save_warm(&warm_dir).unwrap();
    let warm = RewardModel::load(&warm_dir, &Device::Cpu).unwrap();
    assert!(warm.config.warm);
    assert_eq!(warm.members.len(), 1);
    let w = warm.score(&PROMPTS, &COMPLETIONS).unwrap();
    for i in 0..3 {
        assert!((w[i] - mean[i]).abs() < 1e-5, "{} vs {}", w[i], mean[i]);
    }
}

#[test]
fn bad_checkpoints_are_named_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let e = RewardModel::load(tmp.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("config.json"), "{e}");
    std::fs::write(tmp.path().join("config.json"), r#"{"model_type": "bert"}"#).unwrap();
    let e = RewardModel::load(tmp.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("config.json"), "{e}");
    let mut cfg = RmConfig::new("minilm-l6", true, 1);
    cfg.aggregate = "median".into();
    std::fs::write(tmp.path().join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    let e = RewardModel::load(tmp.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("config.json") && e.contains("median"), "{e}");
    cfg.aggregate = "mean".into();
    std::fs::write(tmp.path().join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
    let e = RewardModel::load(tmp.path(), &Device::Cpu).err().unwrap().to_string();
    assert!(e.contains("member-0"), "{e}");
}

#[test]
fn long_inputs_keep_prompt_tail_and_completion() {
    let rm = ensemble(1);
    let tok = encoder(&rm).tokenizer().clone();
    let mut tok = tok;
    tok.with_truncation(None).unwrap();
    let prompt = format!("START {} the final question is about eggs", "blah ".repeat(600));
    let completion = "boil them for eight minutes";
    let text = format_input(&tok, 256, &prompt, completion).unwrap();
    assert!(text.ends_with(" [SEP] boil them for eight minutes"), "{text}");
    assert!(text.contains("the final question is about eggs [SEP]"));
    assert!(!text.contains("START"));
    let n = encoder(&rm).token_ids(&text).unwrap().len();
    assert!(n <= 256, "{n}");
    // Short pairs are untouched.
    assert_eq!(format_input(&tok, 256, "Hi", "Hello").unwrap(), "Hi [SEP] Hello");
    // A huge completion is cut from the front and still leaves a quarter for the prompt.
    let long_c = format!("{}END", "word ".repeat(600));
    let text = format_input(&tok, 256, "question here", &long_c).unwrap();
    assert!(text.starts_with("question here [SEP] ") && text.ends_with("word END"), "{text}");
    assert!(encoder(&rm).token_ids(&text).unwrap().len() <= 256);
}
