//! Continuous batching gives every request what `generate` gives it alone, however requests
//! join and leave the batch: both cache layouts (the GPT's packed buffers, Llama's split keys
//! and values), greedy and sampled rows, stop tokens, lengths, cancellation.

use candle_core::{DType, Device};
use mismatch_models::engine::{Engine, Event, Finish, Request};
use mismatch_models::{generate, CausalLm, Gpt, GptConfig, Llama, LlamaConfig, SamplingParams};
use std::collections::BTreeMap;

fn gpt() -> Gpt {
    let vm = candle_nn::VarMap::new();
    Gpt::init(&GptConfig::new(30, 2, 2, 16, 64), &vm, 1, DType::F32, &Device::Cpu).unwrap()
}

fn llama() -> Llama {
    let cfg: LlamaConfig = serde_json::from_value(serde_json::json!({
        "model_type": "llama", "vocab_size": 30, "hidden_size": 16, "intermediate_size": 24,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 64,
        "tie_word_embeddings": false
    }))
    .unwrap();
    Llama::random(&cfg, &Device::Cpu).unwrap()
}

fn params(max: usize, temperature: f64, seed: u64, stop: &[u32]) -> SamplingParams {
    SamplingParams { max_new_tokens: max, temperature, top_k: None, top_p: None, stop_tokens: stop.to_vec(), seed }
}

/// The requests of the test, each with the step at which it joins.
fn requests() -> Vec<(usize, Request)> {
    let r = |prompt: &[u32], n, p, top| Request { prompt: prompt.to_vec(), n, params: p, top_logprobs: top };
    vec![
        (0, r(&[1, 5, 9, 4], 2, params(9, 1.0, 3, &[]), 0)),
        (0, r(&[2], 1, params(6, 0.0, 0, &[]), 3)),
        (2, r(&[1, 7], 1, params(5, 0.0, 0, &[]), 0)),
        (4, r(&[3, 3, 8, 2, 6, 11, 4, 1], 3, params(12, 0.8, 9, &[5, 9, 13]), 2)),
        (7, r(&[4, 4], 1, params(3, 1.0, 1, &[]), 0)),
    ]
}

/// Runs `requests` through one engine, joining each at its step; events per (request, choice).
fn run(m: &dyn CausalLm, reqs: &[(usize, Request)]) -> BTreeMap<(u64, usize), Vec<Event>> {
    let mut e = Engine::new(m).unwrap();
    let mut out: BTreeMap<(u64, usize), Vec<Event>> = BTreeMap::new();
    let mut step = 0;
    let mut longest = 0;
    loop {
        // Requests arriving at one step are prefilled together.
        let now: Vec<(u64, Request)> = reqs
            .iter()
            .enumerate()
            .filter(|(_, (at, _))| *at == step)
            .map(|(id, (_, r))| (id as u64, r.clone()))
            .collect();
        for ev in e.add(now).unwrap() {
            out.entry((ev.request, ev.choice)).or_default().push(ev);
        }
        if e.rows() == 0 && reqs.iter().all(|(at, _)| *at <= step) {
            break;
        }
        for ev in e.step().unwrap() {
            out.entry((ev.request, ev.choice)).or_default().push(ev);
        }
        longest = longest.max(e.cache_len());
        step += 1;
    }
    // The cache never outgrows the longest row: prompt 8 + 12 new tokens.
    assert!(longest <= 20, "cache grew to {longest}");
    out
}

fn check(m: &dyn CausalLm) {
    let reqs = requests();
    let got = run(m, &reqs);
    for (id, (_, r)) in reqs.iter().enumerate() {
        let alone = generate(m, &vec![r.prompt.clone(); r.n], &r.params, 0).unwrap();
        for c in 0..r.n {
            let evs = &got[&(id as u64, c)];
            let tokens: Vec<u32> = evs.iter().map(|e| e.token).collect();
            assert_eq!(tokens, alone.tokens[c], "request {id} choice {c}");
            for (e, want) in evs.iter().zip(&alone.raw_logprobs[c]) {
                assert!((e.logprob - want).abs() < 1e-5, "request {id} choice {c}: {} vs {want}", e.logprob);
                assert_eq!(e.top.len(), r.top_logprobs);
                if let Some(&(tok, lp)) = e.top.first() {
                    assert!(lp >= e.logprob - 1e-6 && (tok != e.token || (lp - e.logprob).abs() < 1e-5));
                }
            }
            let last = evs.last().unwrap().finish;
            assert_eq!(last, Some(if alone.finished[c] { Finish::Stop } else { Finish::Length }));
            assert!(evs[..evs.len() - 1].iter().all(|e| e.finish.is_none()));
        }
    }
}

#[test]
fn requests_joining_a_running_gpt_batch_get_what_they_get_alone() {
    check(&gpt());
}

#[test]
fn requests_joining_a_running_llama_batch_get_what_they_get_alone() {
    check(&llama());
}

#[test]
fn a_cancelled_request_leaves_and_the_others_carry_on() {
    let m = llama();
    let reqs = requests();
    let mut e = Engine::new(&m).unwrap();
    for (id, (_, r)) in reqs.iter().enumerate().take(2) {
        e.add(vec![(id as u64, r.clone())]).unwrap();
    }
    e.step().unwrap();
    assert_eq!(e.rows(), 3);
    e.cancel(0).unwrap();
    assert_eq!(e.rows(), 1);
    let mut rest = vec![];
    while e.rows() > 0 {
        rest.extend(e.step().unwrap().into_iter().map(|ev| ev.token));
    }
    let alone = generate(&m, &[reqs[1].1.prompt.clone()], &reqs[1].1.params, 0).unwrap();
    assert_eq!(rest, alone.tokens[0][2..]);
}

#[test]
fn requests_that_do_not_fit_are_refused() {
    let m = gpt();
    let e = Engine::new(&m).unwrap();
    let r = |len: usize, max| Request { prompt: vec![1; len], n: 1, params: params(max, 0.0, 0, &[]), top_logprobs: 0 };
    assert!(e.check(&r(60, 4)).is_ok());
    assert!(e.check(&r(61, 4)).unwrap_err().to_string().contains("context of 64"));
    assert!(e.check(&r(0, 4)).is_err());
    assert!(e.check(&r(3, 0)).is_err());
}
