//! `POST /v1/completions`: raw text in, text out. With `echo` and `logprobs` the prompt's own
//! tokens come back with their log-probs (the first one `null`), which is how a client scores
//! given text (`max_tokens: 0` scores without generating), as vLLM allows.

use crate::error::ApiError;
use crate::sampling::{collect, new_id, now, plan, submit, Asked, Choice};
use crate::stream::{self, Stream};
use crate::text::token_text;
use crate::{parse, Served, Usage as Logged};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use candle_core::{DType, Tensor};
use mismatch_models::engine::{logprobs_at, Event};
use mismatch_models::{CausalLm, Positions};
use mismatch_openai::api::{CompletionChoice, CompletionLogprobs, CompletionRequest, CompletionResponse, Usage};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

pub async fn handle(State(s): State<Arc<Served>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req: CompletionRequest = parse(body)?;
    s.check_model(&req.model)?;
    let prompts = req.prompt.as_ref().map(|p| p.items()).unwrap_or_default();
    if prompts.is_empty() {
        return Err(ApiError::param("prompt", "prompt must be a string or a non-empty list of strings"));
    }
    let echo = req.echo.unwrap_or(false);
    let top = req.logprobs.unwrap_or(0);
    let stream = req.params.stream.unwrap_or(false);
    if stream && (prompts.len() > 1 || echo) {
        return Err(ApiError::param("stream", "streaming takes one prompt and no echo"));
    }
    let mut ids = Vec::with_capacity(prompts.len());
    for p in &prompts {
        let t = s.lm.tok.encode(p, true)?;
        if t.is_empty() {
            return Err(ApiError::param("prompt", "a prompt encodes to no tokens"));
        }
        ids.push(t);
    }
    let asked = Asked { params: &req.params, max_tokens: req.params.max_tokens, top_logprobs: top };
    let plans = ids.iter().map(|t| plan(&s, asked, t.len(), Some(16))).collect::<Result<Vec<_>, _>>()?;
    if plans[0].params.max_new_tokens == 0 && !echo {
        return Err(ApiError::param("max_tokens", "max_tokens 0 generates nothing; it is for scoring with echo"));
    }
    let prompt_tokens: usize = ids.iter().map(Vec::len).sum();
    let (id, created, model) = (new_id("cmpl"), now(), s.name.clone());
    if stream {
        let rx = submit(&s, ids.pop().expect("one prompt"), &plans[0])?;
        let chunk = {
            let (id, model, s2) = (id.clone(), model.clone(), s.clone());
            move |index: usize, delta: &str, events: &[Event], finish: Option<&str>| {
                let logprobs = req.logprobs.is_some().then(|| logprobs(&s2, None, events, top));
                let c = CompletionChoice {
                    index,
                    text: delta.to_string(),
                    logprobs,
                    finish_reason: finish.map(Into::into),
                };
                serde_json::to_value(CompletionResponse {
                    id: id.clone(),
                    object: "text_completion".into(),
                    created,
                    model: model.clone(),
                    choices: vec![c],
                    usage: Usage::default(),
                })
                .expect("json")
            }
        };
        let st = Stream {
            path: "/v1/completions",
            started,
            prompt_tokens,
            opening: vec![],
            chunk: Box::new(chunk),
            usage: None,
        };
        return Ok(stream::respond(s, rx, plans.into_iter().next().expect("one plan"), st));
    }
    let mut choices = Vec::new();
    let mut completion_tokens = 0;
    for (i, (prompt_ids, p)) in ids.iter().zip(&plans).enumerate() {
        let generated: Vec<Choice> = if p.params.max_new_tokens == 0 {
            (0..p.n).map(|_| Choice::new(&p.stops)).collect()
        } else {
            collect(&s, submit(&s, prompt_ids.clone(), p)?, p).await?
        };
        let scored = match (echo, req.logprobs.is_some()) {
            (true, true) => {
                let (s2, t) = (s.clone(), prompt_ids.clone());
                Some(
                    tokio::task::spawn_blocking(move || prompt_logprobs(&s2.lm.model, &t, top))
                        .await
                        .map_err(|e| ApiError::internal(e.to_string()))??,
                )
            }
            _ => None,
        };
        for (j, c) in generated.iter().enumerate() {
            completion_tokens += c.generated;
            let text = if echo { format!("{}{}", prompts[i], c.detok.text()) } else { c.detok.text().to_string() };
            let lp = req.logprobs.is_some().then(|| {
                let echoed = echo.then_some((prompt_ids.as_slice(), scored.as_deref()));
                logprobs(&s, echoed, &c.events, top)
            });
            let finish = if p.params.max_new_tokens == 0 { Some("length") } else { c.finish };
            choices.push(CompletionChoice {
                index: i * p.n + j,
                text,
                logprobs: lp,
                finish_reason: finish.map(Into::into),
            });
        }
    }
    let usage = Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
    let body =
        CompletionResponse { id, object: "text_completion".into(), created, model, choices, usage: usage.clone() };
    let mut resp = axum::Json(body).into_response();
    resp.extensions_mut().insert(Logged(usage));
    Ok(resp)
}

/// The legacy log-prob arrays: the echoed prompt's tokens (when given, with their scores from
/// [`prompt_logprobs`]) and then the generated ones. Offsets count bytes of the text.
fn logprobs(
    s: &Served,
    echoed: Option<(&[u32], Option<&[Scored]>)>,
    events: &[Event],
    top: usize,
) -> CompletionLogprobs {
    let mut out = CompletionLogprobs::default();
    let mut at = 0;
    let mut push = |out: &mut CompletionLogprobs, id: u32, lp: Option<f32>, alts: Option<&[(u32, f32)]>| {
        let (text, _) = token_text(&s.lm.tok, id);
        out.text_offset.push(at);
        at += text.len();
        out.tokens.push(text);
        out.token_logprobs.push(lp);
        out.top_logprobs.push(
            alts.map(|a| a.iter().take(top).map(|&(t, l)| (token_text(&s.lm.tok, t).0, l)).collect::<BTreeMap<_, _>>()),
        );
    };
    if let Some((ids, scored)) = echoed {
        for (k, &id) in ids.iter().enumerate() {
            let sc = k.checked_sub(1).and_then(|k| scored.map(|s| &s[k]));
            push(&mut out, id, sc.map(|x| x.0), sc.map(|x| x.1.as_slice()));
        }
    }
    for e in events {
        push(&mut out, e.token, Some(e.logprob), Some(&e.top));
    }
    out
}

/// A prompt token's log-prob and the most likely tokens at its position.
pub type Scored = (f32, Vec<(u32, f32)>);

/// Positions of the vocabulary projection at once, so that a long prompt's logits never sit in
/// memory whole.
const ROWS_PER_PROJECTION: usize = 64;

/// log π(ids[t] | ids[<t]) for t = 1.., with the `top` most likely tokens at each position.
pub fn prompt_logprobs(model: &dyn CausalLm, ids: &[u32], top: usize) -> Result<Vec<Scored>, ApiError> {
    let model = model.detached()?;
    let n = ids.len();
    if n > model.max_seq_len() {
        return Err(ApiError::param(
            "prompt",
            format!("the prompt has {n} tokens; this model's context is {}", model.max_seq_len()),
        ));
    }
    let dev = model.device();
    mismatch_models::pool::on_pool(|| {
        let x = Tensor::from_vec(ids.to_vec(), (1, n), dev)?;
        let h = model.hidden(&x, &Positions::causal(1, n, dev)?, None)?;
        let mut out = Vec::with_capacity(n.saturating_sub(1));
        for start in (0..n.saturating_sub(1)).step_by(ROWS_PER_PROJECTION) {
            let len = ROWS_PER_PROJECTION.min(n - 1 - start);
            let rows = model
                .lm_logits(&h.narrow(1, start, len)?)
                .and_then(|l| l.squeeze(0)?.to_dtype(DType::F32)?.to_vec2::<f32>())?;
            for (k, l) in rows.iter().enumerate() {
                out.push(logprobs_at(l, ids[start + k + 1], top));
            }
        }
        Ok(out)
    })
}
