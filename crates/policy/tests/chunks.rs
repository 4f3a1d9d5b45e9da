//! Data-parallel scoring (`train::chunks`): a small model's batch scored in chunks gives the
//! log-probs and the parameter gradients of scoring it whole, and the same bits on one thread as
//! on several.

mod common;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use mismatch_models::CompletionLogprobs;
use mismatch_policy::train::chunks::Scored;
use mismatch_policy::Policy;
use rand::{Rng, SeedableRng};

/// 23 prompts with 1–4 rows each (73 rows: more than two chunks), completions of 1–9 tokens.
fn batch() -> (Vec<Vec<u32>>, Vec<usize>, Vec<Vec<u32>>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let word = |rng: &mut rand_chacha::ChaCha8Rng| rng.random_range(4..4 + common::WORDS.len() as u32);
    let prompts: Vec<Vec<u32>> =
        (0..23).map(|_| (0..rng.random_range(1..6)).map(|_| word(&mut rng)).collect()).collect();
    let mut group = Vec::new();
    for (g, n) in [1usize, 4, 2, 3, 4, 1, 2, 4, 4, 3, 1, 2, 4, 4, 4, 3, 2, 4, 4, 4, 4, 4, 1].iter().enumerate() {
        group.extend(std::iter::repeat_n(g, *n));
    }
    let comps = group.iter().map(|_| (0..rng.random_range(1..10)).map(|_| word(&mut rng)).collect()).collect();
    (prompts, group, comps)
}

/// A loss that reads the log-probs and the hidden states non-linearly, as PPO's does.
fn loss(c: &CompletionLogprobs) -> Tensor {
    let lp = ((&c.logprobs * &c.mask).unwrap().sqr().unwrap().sum_all().unwrap() * 0.01).unwrap();
    let h = c.hidden.tanh().unwrap().sum_keepdim(2).unwrap().squeeze(2).unwrap();
    let h = ((&h * &c.mask).unwrap().sqr().unwrap().sum_all().unwrap() * 0.001).unwrap();
    (lp + h).unwrap()
}

fn grads_of(vars: &[(String, Var)], g: &GradStore) -> Vec<Vec<f32>> {
    vars.iter().map(|(_, v)| g.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()).collect()
}

#[test]
fn chunked_scoring_matches_one_batch_and_does_not_depend_on_threads() {
    let dir = tempfile::tempdir().unwrap();
    common::write_random_policy(dir.path(), 3);
    let policy = Policy::load(dir.path().to_str().unwrap(), true, false).unwrap();
    let vars = policy.named_vars();
    let (prompts, group, comps) = batch();

    let whole = policy.logprobs_shared(&prompts, &group, &comps).unwrap();
    let want = grads_of(&vars, &loss(&whole).backward().unwrap());

    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let s = Scored::new(&policy, &prompts, &group, &comps).unwrap();
            let g = s.backward(&loss(&s.out)).unwrap();
            (s.out.logprobs.to_vec2::<f32>().unwrap(), s.out.mask.to_vec2::<f32>().unwrap(), grads_of(&vars, &g))
        })
    };
    let (lp1, mask1, g1) = run(1);
    let (lp2, mask2, g2) = run(2);
    assert_eq!((&lp1, &mask1, &g1), (&lp2, &mask2, &g2), "one thread and two give different bits");

    assert_eq!(mask1, whole.mask.to_vec2::<f32>().unwrap());
    let lp = whole.logprobs.to_vec2::<f32>().unwrap();
    for ((a, b), m) in lp1.iter().flatten().zip(lp.iter().flatten()).zip(mask1.iter().flatten()) {
        // Right padding is scored up to each chunk's longest completion only; it is masked out.
        if *m > 0.0 {
            assert!((a - b).abs() < 1e-5, "log-prob {a} vs {b}");
        }
    }
    let mut checked = 0;
    for ((name, _), (got, want)) in vars.iter().zip(g1.iter().zip(&want)) {
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!(scale > 0.0, "{name}: no gradient");
        for (a, b) in got.iter().zip(want) {
            assert!((a - b).abs() <= 1e-4 * scale, "{name}: {a} vs {b} (scale {scale})");
        }
        checked += 1;
    }
    assert_eq!(checked, vars.len());
}

#[test]
fn rows_of_a_prompt_must_be_contiguous() {
    let dir = tempfile::tempdir().unwrap();
    common::write_random_policy(dir.path(), 3);
    let policy = Policy::load(dir.path().to_str().unwrap(), true, false).unwrap();
    let p = vec![vec![5u32], vec![6]];
    let c = vec![vec![7u32]; 3];
    let err = Scored::new(&policy, &p, &[0, 1, 0], &c).err().unwrap().to_string();
    assert!(err.contains("contiguous"), "{err}");
    let err = Scored::new(&policy, &p, &[0, 1, 2], &c).err().unwrap().to_string();
    assert!(err.contains("below 2"), "{err}");
    let err = Scored::new(&policy, &p, &[0, 1], &c).err().unwrap().to_string();
    assert!(err.contains("2 indices, 3 completions"), "{err}");
}
