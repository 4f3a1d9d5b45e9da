//! The world's pieces on their own: annotators against gold, the start policy.

use mismatch_world::annotators::Annotators;
use mismatch_world::corpus::sample_prompt;
use mismatch_world::lang::Features;
use mismatch_world::*;
use rand::SeedableRng;

/// Pairs of corpus responses with distinct gold scores.
fn gold_pairs(world: &World, n: usize) -> Vec<(usize, String, String)> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut out = Vec::new();
    while out.len() < n {
        let i = sample_prompt(&world.prompts, &world.train, &mut rng);
        let p = &world.prompts[i];
        let (a, b) = (world.config.corpus.sample(p, &mut rng), world.config.corpus.sample(p, &mut rng));
        let (ga, gb) = (world.gold.score(p, &Features::of(p, &a)), world.gold.score(p, &Features::of(p, &b)));
        if ga != gb {
            out.push((i, a, b));
        }
    }
    out
}

fn agreement(world: &World, ann: &Annotators, pairs: &[(usize, String, String)]) -> usize {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    pairs
        .iter()
        .filter(|(i, a, b)| {
            let p = &world.prompts[*i];
            let a_wins = ann.choose(&world.gold, p, a, b, &mut rng);
            let gold_a = world.gold.score(p, &Features::of(p, a)) > world.gold.score(p, &Features::of(p, b));
            a_wins == gold_a
        })
        .count()
}

#[test]
fn unbiased_noiseless_annotators_follow_gold_exactly() {
    let world = World::new(&WorldConfig::default()).unwrap();
    let pairs = gold_pairs(&world, 2000);
    assert_eq!(agreement(&world, &Annotators::gold_only(), &pairs), pairs.len());
}

#[test]
fn label_noise_flips_a_quarter_of_labels() {
    let world = World::new(&WorldConfig::default()).unwrap();
    let pairs = gold_pairs(&world, 4000);
    let ann = Annotators { noise: 0.25, ..Annotators::gold_only() };
    let k = agreement(&world, &ann, &pairs) as f64;
    let n = pairs.len() as f64;
    // Binomial 99.9% interval around 0.75: ±3.29·√(0.75·0.25/n).
    let half = 3.29 * (0.75f64 * 0.25 / n).sqrt();
    assert!((k / n - 0.75).abs() < half, "agreement {} outside 0.75 ± {half}", k / n);
}

#[test]
fn biased_annotators_disagree_with_gold_sometimes() {
    let world = World::new(&WorldConfig::default()).unwrap();
    let pairs = gold_pairs(&world, 2000);
    let ann = Annotators { noise: 0.0, ..Annotators::default() };
    let k = agreement(&world, &ann, &pairs) as f64 / pairs.len() as f64;
    assert!(k < 0.97 && k > 0.6, "biased annotators agree with gold on {k}");
}

fn tiny() -> StartConfig {
    StartConfig { steps: 60, demos: 800, n_embd: 32, ..StartConfig::default() }
}

#[test]
fn start_policy_is_cached_deterministic_and_samples_parse() {
    let world = World::new(&WorldConfig::default()).unwrap();
    let (h1, h2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let d1 = start::start_policy(&world, &tiny(), 4, h1.path(), &indicatif::ProgressBar::hidden()).unwrap();
    let d2 = start::start_policy(&world, &tiny(), 4, h2.path(), &indicatif::ProgressBar::hidden()).unwrap();
    let bytes = |d: &std::path::Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(bytes(&d1), bytes(&d2), "same seed, same start policy bytes");
    // Cached: a second call returns the same directory without retraining.
    let before = std::fs::metadata(d1.join("model.safetensors")).unwrap().modified().unwrap();
    assert_eq!(start::start_policy(&world, &tiny(), 4, h1.path(), &indicatif::ProgressBar::hidden()).unwrap(), d1);
    assert_eq!(std::fs::metadata(d1.join("model.safetensors")).unwrap().modified().unwrap(), before);
    // It is a normal mismatch-gpt checkpoint.
    let lm = mismatch_models::load_causal_lm(d1.to_str().unwrap(), &candle_core::Device::Cpu, false).unwrap();
    assert_eq!(lm.tok.eos_ids, vec![2]);
    let (gpt, _) = mismatch_models::Gpt::load(&d1, &candle_core::Device::Cpu, false).unwrap();
    let tok = start::tokenizer().unwrap();
    let prompts: Vec<&str> = world.heldout.iter().take(64).map(|&i| world.prompts[i].text.as_str()).collect();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| tok.encode(*p, true).unwrap().get_ids().to_vec()).collect();
    let params = mismatch_models::SamplingParams {
        max_new_tokens: 24,
        temperature: 1.0,
        stop_tokens: vec![2],
        seed: 1,
        ..Default::default()
    };
    let g = mismatch_models::generate(&gpt, &ids, &params, 0).unwrap();
    let texts: Vec<String> = g.tokens.iter().map(|t| tok.decode(t, true).unwrap()).collect();
    let distinct: std::collections::HashSet<&String> = texts.iter().collect();
    assert!(distinct.len() > 20, "only {} distinct samples", distinct.len());
    let (m, _) =
        mismatch_world::meters::measure(&world, &prompts, &texts.iter().map(String::as_str).collect::<Vec<_>>())
            .unwrap();
    assert!(m.length > 2.0 && m.distinct1 > 0.0, "{m:?}");
}
