//! Where a judge runs: a [`Local`] model or a [`Remote`] OpenAI-compatible endpoint, behind one
//! [`Backend`] trait that takes rendered messages and returns the reply text, with the first
//! token's log-probs when they are asked for.
//!
//! Both decode greedily (temperature 0), as FastChat and AlpacaEval's text judges do. The local
//! path decodes with the same continuous-batching engine (`mismatch_models::engine`) that
//! `mismatch serve` runs, and turns tokens into text the way the server does (the whole reply
//! decoded with special tokens dropped; each listed token decoded alone), so that a local judge
//! and the same model behind `mismatch serve` give the same replies (`tests/serve.rs`).

use crate::logprob::TokenLogprob;
use crate::{Error, Result};
use candle_core::Device;
use mismatch_models::engine::{Engine, Event, Request};
use mismatch_models::{load_causal_lm, CausalLm, ChatMessage, LoadedLm, SamplingParams};
use mismatch_openai::api::{ChatRequest, Message, Params};
use mismatch_openai::{Client, EndpointArgs};

/// The most alternatives OpenAI (and `mismatch serve`) list per token.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// One judge call.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: usize,
    /// Alternatives of the first generated token to return (0: none; at most 20).
    pub top_logprobs: usize,
    /// Tokens whose first-token log-probs are wanted (AlpacaEval's `m`, `M`). A local model
    /// gives them exactly, from the whole distribution; an endpoint only where they are among
    /// its 20 alternatives.
    pub candidates: Vec<String>,
}

/// A judge's answer to one [`JudgeRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeReply {
    pub text: String,
    /// The first token's `top_logprobs` most likely alternatives, most likely first.
    pub first_token: Vec<TokenLogprob>,
    /// The asked-for candidates that were found, in the order asked.
    pub candidates: Vec<TokenLogprob>,
}

/// A judge model.
pub trait Backend: Send + Sync {
    /// What the judge is, for reports (the model spec or `openai:URL#MODEL`).
    fn name(&self) -> &str;
    /// Replies to `requests`, in order. Implementations batch or parallelise as they can.
    fn complete(&self, requests: &[JudgeRequest]) -> Result<Vec<JudgeReply>>;
}

/// A backend for a model spec: `openai:URL#MODEL` is a [`Remote`] with `endpoint`'s client
/// options (concurrency, retries, cache), anything else a [`Local`] model on `device`.
pub fn from_spec(spec: &str, device: &Device, endpoint: &EndpointArgs) -> Result<Box<dyn Backend>> {
    match endpoint.client(spec) {
        Some(client) => Ok(Box::new(Remote::new(client?, spec))),
        None => Ok(Box::new(Local::load(spec, device)?)),
    }
}

/// A causal LM in this process, replying through its chat template.
pub struct Local {
    lm: LoadedLm,
    name: String,
    /// Prompts prefilled and decoded together at most (judge prompts are long: a batch of b
    /// prompts of t tokens holds b·heads·t² attention scores per layer during the prefill).
    pub max_batch: usize,
}

impl Local {
    /// Loads `spec` (a short name, a GGUF file, an HF directory) with [`load_causal_lm`].
    pub fn load(spec: &str, device: &Device) -> Result<Local> {
        Ok(Local::new(load_causal_lm(spec, device, false)?, spec))
    }

    pub fn new(lm: LoadedLm, name: &str) -> Local {
        Local { lm, name: name.into(), max_batch: 8 }
    }

    /// One batch through the engine: every prompt is prefilled in one forward, then all rows
    /// decode together until each has stopped.
    fn batch(&self, requests: &[JudgeRequest]) -> Result<Vec<JudgeReply>> {
        let tok = &self.lm.tok;
        let vocab = self.lm.model.vocab_size();
        let mut engine = Engine::new(&self.lm.model)?;
        let mut queued = Vec::with_capacity(requests.len());
        for (i, r) in requests.iter().enumerate() {
            if r.max_tokens == 0 {
                return Err(Error::Usage("a judge request needs max_tokens ≥ 1".into()));
            }
            // The template carries its own special tokens, as in `mismatch serve`'s chat route.
            let text = tok.apply_chat_template(&r.messages, true)?;
            let prompt = tok.encode(&text, false)?;
            let room = self.lm.model.max_seq_len().saturating_sub(prompt.len());
            let params = SamplingParams {
                max_new_tokens: r.max_tokens.min(room).max(1),
                temperature: 0.0,
                top_k: None,
                top_p: None,
                stop_tokens: tok.eos_ids.clone(),
                seed: 0,
            };
            // Candidates need the whole first-token distribution: the engine lists it as `top`,
            // so every generated token pays a sort of the vocabulary (cheap at AlpacaEval's
            // one-token replies).
            let top = if r.candidates.is_empty() { r.top_logprobs.min(MAX_TOP_LOGPROBS) } else { vocab };
            queued.push((i as u64, Request { prompt, n: 1, params, top_logprobs: top }));
        }
        let mut events: Vec<Vec<Event>> = vec![vec![]; requests.len()];
        let mut step = engine.add(queued)?;
        loop {
            for e in step {
                events[e.request as usize].push(e);
            }
            if engine.rows() == 0 {
                break;
            }
            step = engine.step()?;
        }
        requests.iter().zip(events).map(|(r, ev)| self.reply(r, &ev)).collect()
    }

    fn reply(&self, r: &JudgeRequest, events: &[Event]) -> Result<JudgeReply> {
        let tok = &self.lm.tok;
        let ids: Vec<u32> = events.iter().map(|e| e.token).collect();
        let text = tok.decode(&ids, true)?;
        let top: &[(u32, f32)] = events.first().map_or(&[], |e| &e.top);
        let first_token = top
            .iter()
            .take(r.top_logprobs.min(MAX_TOP_LOGPROBS))
            .map(|&(id, lp)| Ok(TokenLogprob { token: tok.decode(&[id], false)?, logprob: lp as f64 }))
            .collect::<Result<_>>()?;
        let mut candidates = Vec::new();
        for c in &r.candidates {
            // A candidate is the one token the tokenizer spells it with; text that takes several
            // tokens cannot be a first token, and is not found (as at an endpoint).
            let Some(id) = self.single_token(c)? else { continue };
            if let Some(&(_, lp)) = top.iter().find(|(t, _)| *t == id) {
                candidates.push(TokenLogprob { token: c.clone(), logprob: lp as f64 });
            }
        }
        Ok(JudgeReply { text, first_token, candidates })
    }

    fn single_token(&self, text: &str) -> Result<Option<u32>> {
        let tok = &self.lm.tok;
        Ok(match tok.encode(text, false)?.as_slice() {
            &[id] if tok.decode(&[id], false)? == text => Some(id),
            _ => None,
        })
    }
}

impl Backend for Local {
    fn name(&self) -> &str {
        &self.name
    }

    fn complete(&self, requests: &[JudgeRequest]) -> Result<Vec<JudgeReply>> {
        let mut out = Vec::with_capacity(requests.len());
        for chunk in requests.chunks(self.max_batch.max(1)) {
            out.extend(self.batch(chunk)?);
        }
        Ok(out)
    }
}

/// An OpenAI-compatible endpoint: chat completions at temperature 0, `client.map`'s
/// concurrency, retries and response cache.
pub struct Remote {
    client: Client,
    name: String,
}

impl Remote {
    pub fn new(client: Client, name: &str) -> Remote {
        Remote { client, name: name.into() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn one(&self, r: &JudgeRequest) -> mismatch_openai::Result<JudgeReply> {
        let want = r.top_logprobs > 0 || !r.candidates.is_empty();
        let top = if r.candidates.is_empty() { r.top_logprobs } else { MAX_TOP_LOGPROBS };
        let req = ChatRequest {
            model: self.client.endpoint.model.clone(),
            messages: r.messages.iter().map(|m| Message::new(&m.role, &m.content)).collect(),
            params: Params { temperature: Some(0.0), max_tokens: Some(r.max_tokens), ..Params::default() },
            logprobs: want.then_some(true),
            top_logprobs: want.then_some(top.min(MAX_TOP_LOGPROBS)),
            ..ChatRequest::default()
        };
        let resp = self.client.chat(&req)?;
        let bad = |message: &str| mismatch_openai::Error::Decode {
            url: self.client.endpoint.base.clone(),
            message: message.into(),
        };
        let choice = resp.choices.into_iter().next().ok_or_else(|| bad("the response has no choices"))?;
        let text = choice.message.content.text().map_err(|e| bad(&e))?;
        let alternatives: Vec<TokenLogprob> = choice
            .logprobs
            .and_then(|l| l.content.into_iter().next())
            .map(|t| {
                t.top_logprobs.into_iter().map(|a| TokenLogprob { token: a.token, logprob: a.logprob as f64 }).collect()
            })
            .unwrap_or_default();
        let candidates =
            r.candidates.iter().filter_map(|c| alternatives.iter().find(|t| &t.token == c).cloned()).collect();
        let first_token = alternatives.into_iter().take(r.top_logprobs).collect();
        Ok(JudgeReply { text, first_token, candidates })
    }
}

impl Backend for Remote {
    fn name(&self) -> &str {
        &self.name
    }

    fn complete(&self, requests: &[JudgeRequest]) -> Result<Vec<JudgeReply>> {
        self.client.map(requests, |r| self.one(r)).into_iter().map(|r| r.map_err(Error::from)).collect()
    }
}
