//! `POST /v1/chat/completions`: messages through the model's chat template, then sampling.

use crate::error::ApiError;
use crate::sampling::{chat_logprob, collect, new_id, now, plan, submit, Asked};
use crate::stream::{self, Stream};
use crate::{parse, Served, Usage as Logged};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use mismatch_models::ChatMessage;
use mismatch_openai::api::{
    ChatChoice, ChatChunk, ChatLogprobs, ChatRequest, ChatResponse, ChunkChoice, Delta, Message, Usage,
};
use std::sync::Arc;
use std::time::Instant;

pub async fn handle(State(s): State<Arc<Served>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req: ChatRequest = parse(body)?;
    s.check_model(&req.model)?;
    if req.messages.is_empty() {
        return Err(ApiError::param("messages", "messages must hold at least one message"));
    }
    let mut msgs = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        if !matches!(m.role.as_str(), "system" | "user" | "assistant" | "developer") {
            return Err(ApiError::param(
                "messages",
                format!("messages[{i}].role '{}' is not system, user or assistant", m.role),
            ));
        }
        let text = m.content.text().map_err(|e| ApiError::param("messages", format!("messages[{i}].content: {e}")))?;
        let role = if m.role == "developer" { "system" } else { m.role.as_str() };
        msgs.push(ChatMessage::new(role, text));
    }
    if s.lm.tok.chat_template.is_none() {
        return Err(ApiError::invalid("this model has no chat template; use /v1/completions"));
    }
    let text = s.lm.tok.apply_chat_template(&msgs, true)?;
    // The template carries its own special tokens.
    let prompt = s.lm.tok.encode(&text, false)?;
    let want_logprobs = req.logprobs.unwrap_or(false);
    let top = if want_logprobs { req.top_logprobs.unwrap_or(0) } else { 0 };
    if req.top_logprobs.is_some_and(|k| k > 0) && !want_logprobs {
        return Err(ApiError::param("top_logprobs", "top_logprobs needs logprobs: true"));
    }
    let p = plan(
        &s,
        Asked {
            params: &req.params,
            max_tokens: req.max_completion_tokens.or(req.params.max_tokens),
            top_logprobs: top,
        },
        prompt.len(),
        None,
    )?;
    let prompt_tokens = prompt.len();
    let rx = submit(&s, prompt, &p)?;
    let (id, created, model) = (new_id("chatcmpl"), now(), s.name.clone());
    if req.params.stream.unwrap_or(false) {
        // Every chunk of the stream has the same envelope.
        let envelope = {
            let (id, model) = (id.clone(), model.clone());
            move |choices: Vec<ChunkChoice>, usage: Option<Usage>| {
                let chunk = ChatChunk {
                    id: id.clone(),
                    object: "chat.completion.chunk".into(),
                    created,
                    model: model.clone(),
                    choices,
                    usage,
                };
                serde_json::to_value(chunk).expect("json")
            }
        };
        let chunk = {
            let (envelope, s2) = (envelope.clone(), s.clone());
            move |index: usize, delta: &str, events: &[mismatch_models::engine::Event], finish: Option<&str>| {
                let logprobs = want_logprobs
                    .then(|| ChatLogprobs { content: events.iter().map(|e| chat_logprob(&s2, e)).collect() });
                let delta = Delta { role: None, content: Some(delta.to_string()) };
                envelope(vec![ChunkChoice { index, delta, logprobs, finish_reason: finish.map(Into::into) }], None)
            }
        };
        let opening = (0..p.n)
            .map(|index| {
                let delta = Delta { role: Some("assistant".into()), content: Some(String::new()) };
                envelope(vec![ChunkChoice { index, delta, logprobs: None, finish_reason: None }], None)
            })
            .collect();
        let usage = req.params.stream_options.as_ref().filter(|o| o.include_usage).map(|_| {
            let envelope = envelope.clone();
            Box::new(move |u: Usage| envelope(vec![], Some(u))) as Box<dyn Fn(Usage) -> serde_json::Value + Send + Sync>
        });
        let st =
            Stream { path: "/v1/chat/completions", started, prompt_tokens, opening, chunk: Box::new(chunk), usage };
        return Ok(stream::respond(s, rx, p, st));
    }
    let choices = collect(&s, rx, &p).await?;
    let completion_tokens: usize = choices.iter().map(|c| c.generated).sum();
    let usage = Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens };
    let body = ChatResponse {
        id,
        object: "chat.completion".into(),
        created,
        model,
        choices: choices
            .iter()
            .enumerate()
            .map(|(index, c)| ChatChoice {
                index,
                message: Message::new("assistant", c.detok.text()),
                logprobs: want_logprobs
                    .then(|| ChatLogprobs { content: c.events.iter().map(|e| chat_logprob(&s, e)).collect() }),
                finish_reason: c.finish.map(Into::into),
            })
            .collect(),
        usage: usage.clone(),
    };
    let mut resp = axum::Json(body).into_response();
    resp.extensions_mut().insert(Logged(usage));
    Ok(resp)
}
