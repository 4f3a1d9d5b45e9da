//! Acceptance: a local judge and the same model behind `mismatch serve` (started in-process on
//! a free loopback port, a real HTTP server) give the same replies and verdicts at temperature
//! 0, in both orders, with MT-Bench's and AlpacaEval's prompts; where the server's top-20 holds
//! both AlpacaEval labels, the weighted preferences agree to 1e-4 (both are f32 log-probs of the
//! same forward; only the batching of the prefill differs).

use candle_core::Device;
use mismatch_judge::template::Template;
use mismatch_judge::{from_spec, judge_pairs, JudgeOptions, PairItem, Remote};
use mismatch_openai::{Client, Endpoint, EndpointArgs, Options};
use std::time::Instant;

fn tiny_items() -> Vec<PairItem> {
    let item = |id: &str, q: &str, a: &str, b: &str| PairItem {
        id: id.into(),
        question: q.into(),
        answer_1: a.into(),
        answer_2: b.into(),
        ref_answer: None,
    };
    vec![
        item(
            "capital",
            "What is the capital of France?",
            "The capital of France is Paris.",
            "The capital of France is Berlin.",
        ),
        item("sum", "What is 2 + 2?", "2 + 2 = 4.", "2 + 2 = 5."),
        item("colour", "Name a primary colour.", "Red.", "Green is made by mixing, so: purple."),
    ]
}

#[test]
fn a_local_judge_and_the_served_model_give_the_same_verdicts() {
    let addr = mismatch_serve::spawn(mismatch_serve::ServeArgs {
        max_batch: 8,
        ..mismatch_serve::ServeArgs::new("smollm2-135m")
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("openai:http://{addr}/v1#smollm2-135m");
    let endpoint = Endpoint { base: format!("http://{addr}/v1"), model: "smollm2-135m".into() };
    let options = Options { cache: Some(dir.path().join("judge.sqlite")), ..Options::default() };
    let remote = Remote::new(Client::new(endpoint.clone(), options.clone()).unwrap(), &spec);
    let local = from_spec("smollm2-135m", &Device::Cpu, &EndpointArgs::default()).unwrap();
    assert_eq!(local.name(), "smollm2-135m");
    let items = tiny_items();
    let mut sent = 0;
    for name in ["pair-v2", "alpaca_eval_clf_gpt4_turbo"] {
        let t = Template::builtin(name).unwrap();
        let opts = JudgeOptions { max_tokens: Some(t.max_tokens.min(48)), seed: 0 };
        let started = Instant::now();
        let l = judge_pairs(local.as_ref(), &t, &items, &opts).unwrap();
        let local_s = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let r = judge_pairs(&remote, &t, &items, &opts).unwrap();
        eprintln!("{name}: local {local_s:.1}s, served {:.1}s", started.elapsed().as_secs_f64());
        assert_eq!(r.judge, spec);
        for (a, b) in l.items.iter().zip(&r.items) {
            assert_eq!(a.reply_1_first, b.reply_1_first, "{name} {}", a.id);
            assert_eq!(a.reply_2_first, b.reply_2_first, "{name} {}", a.id);
            assert_eq!((&a.verdict_1_first, &a.verdict_2_first), (&b.verdict_1_first, &b.verdict_2_first));
            assert_eq!((a.preference, a.consistent, a.winner), (b.preference, b.consistent, b.winner));
            for (x, y) in [(a.weighted_1_first, b.weighted_1_first), (a.weighted_2_first, b.weighted_2_first)] {
                if let (Some(x), Some(y)) = (x, y) {
                    eprintln!("  {} weighted local {x:.6} served {y:.6}", a.id);
                    assert!((x - y).abs() < 1e-4, "{name} {}: {x} vs {y}", a.id);
                }
            }
        }
        if name == "alpaca_eval_clf_gpt4_turbo" {
            // Both labels are among SmolLM2's 20 likeliest first tokens here, so the served judge
            // has every weighted preference the local one has.
            assert_eq!(r.summary.n_weighted, 3, "{:?}", r.summary);
        }
        sent += 2 * items.len();
        assert_eq!(remote.client().counts(), (sent, 0));
    }
    // A rerun is answered by the cache, the same replies without a request.
    let again = Remote::new(Client::new(endpoint, options).unwrap(), &spec);
    let t = Template::builtin("pair-v2").unwrap();
    let opts = JudgeOptions { max_tokens: Some(48), seed: 0 };
    let (a, b) = (judge_pairs(&remote, &t, &items, &opts).unwrap(), judge_pairs(&again, &t, &items, &opts).unwrap());
    assert_eq!(a.items, b.items);
    assert_eq!(again.client().counts(), (0, 6));
    // A malformed endpoint spec is refused, naming it.
    let e =
        from_spec("openai:http://127.0.0.1:1/v1", &Device::Cpu, &EndpointArgs::default()).err().unwrap().to_string();
    assert!(e.contains("openai:http://127.0.0.1:1/v1"), "{e}");
}
