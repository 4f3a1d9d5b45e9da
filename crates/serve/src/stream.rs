//! Streaming (`"stream": true`): server-sent events, one `data:` line of JSON per new piece of
//! text, then `data: [DONE]`, as the OpenAI API streams.

use crate::sampling::{Choice, Plan};
use crate::worker::Update;
use crate::{log_request, Served};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use mismatch_models::engine::Event;
use mismatch_openai::api::Usage;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_stream::wrappers::UnboundedReceiverStream;

/// Builds one chunk: choice index, new text, the tokens behind it, the finish reason if any.
pub type ChunkFn = dyn Fn(usize, &str, &[Event], Option<&str>) -> serde_json::Value + Send + Sync;

pub struct Stream {
    pub path: &'static str,
    pub started: Instant,
    pub prompt_tokens: usize,
    /// Chunks sent before any token (the chat API's `role` deltas).
    pub opening: Vec<serde_json::Value>,
    pub chunk: Box<ChunkFn>,
    /// The final chunk carrying `usage`, when the client asked for it.
    pub usage: Option<Box<dyn Fn(Usage) -> serde_json::Value + Send + Sync>>,
}

pub fn respond(s: Arc<Served>, mut rx: UnboundedReceiver<Update>, plan: Plan, st: Stream) -> Response {
    let (tx, out) = unbounded_channel::<Result<SseEvent, Infallible>>();
    tokio::spawn(async move {
        let send = |v: &serde_json::Value| tx.send(Ok(SseEvent::default().data(v.to_string()))).is_ok();
        let mut open = st.opening.iter().all(send);
        let mut choices: Vec<Choice> = (0..plan.n).map(|_| Choice::new(&plan.stops)).collect();
        while open && choices.iter().any(|c| c.finish.is_none()) {
            match rx.recv().await {
                Some(Ok(e)) => {
                    let i = e.choice;
                    let c = &mut choices[i];
                    let before = c.events.len();
                    let delta = match c.take(&s, e) {
                        Ok(d) => d,
                        Err(err) => {
                            open =
                                send(&serde_json::json!({"error": {"message": err.message, "type": "server_error"}}));
                            break;
                        }
                    };
                    if !delta.is_empty() || c.finish.is_some() || c.events.len() > before {
                        open = send(&(st.chunk)(i, &delta, &c.events[before..], c.finish));
                    }
                }
                failed => {
                    let m = match failed {
                        Some(Err(m)) => m,
                        _ => "the decode thread dropped the request".to_string(),
                    };
                    let _ = send(&serde_json::json!({"error": {"message": m, "type": "server_error"}}));
                    open = false;
                }
            }
        }
        let completion_tokens: usize = choices.iter().map(|c| c.generated).sum();
        let usage = Usage {
            prompt_tokens: st.prompt_tokens,
            completion_tokens,
            total_tokens: st.prompt_tokens + completion_tokens,
        };
        if open {
            if let Some(u) = &st.usage {
                open = send(&u(usage.clone()));
            }
        }
        if open {
            let _ = tx.send(Ok(SseEvent::default().data("[DONE]")));
        }
        log_request("POST", st.path, if open { 200 } else { 499 }, st.started, Some(&usage), true);
    });
    Sse::new(UnboundedReceiverStream::new(out)).into_response()
}
