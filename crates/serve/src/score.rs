//! `POST /v1/score` (vLLM's shape) for the reward model given with `--reward`: each `text_2` is
//! scored as the response to its `text_1` (a single `text_1` goes with every `text_2`).

use crate::error::ApiError;
use crate::sampling::{new_id, now};
use crate::{parse, Served, Usage as Logged};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use mismatch_openai::api::{ScoreData, ScoreRequest, ScoreResponse, Usage};
use std::sync::Arc;

/// Pairs scored per call of the reward model.
pub const MAX_PAIRS: usize = 1024;

pub async fn handle(State(s): State<Arc<Served>>, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let req: ScoreRequest = parse(body)?;
    let Some(rm) = &s.reward else {
        return Err(ApiError::not_found(
            "this server has no reward model (start it with --reward DIR)",
            "model_not_found",
        ));
    };
    if req.model != rm.name {
        return Err(ApiError::not_found(
            format!("the reward model here is '{}', not '{}'", rm.name, req.model),
            "model_not_found",
        ));
    }
    let (t1, t2) = (req.text_1.items(), req.text_2.items());
    if t2.is_empty() || t2.len() > MAX_PAIRS {
        return Err(ApiError::param("text_2", format!("text_2 must hold 1 to {MAX_PAIRS} texts")));
    }
    let prompts: Vec<String> = match t1.len() {
        1 => vec![t1[0].clone(); t2.len()],
        n if n == t2.len() => t1,
        n => {
            return Err(ApiError::param(
                "text_1",
                format!("text_1 holds {n} texts; give one or as many as text_2 ({})", t2.len()),
            ))
        }
    };
    let s2 = s.clone();
    let scores = tokio::task::spawn_blocking(move || {
        let rm = &s2.reward.as_ref().expect("checked above").model;
        let p: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let c: Vec<&str> = t2.iter().map(String::as_str).collect();
        rm.score(&p, &c)
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?
    .map_err(|e| ApiError::internal(e.to_string()))?;
    // Token counts are the reward model's business (it may truncate); usage stays zero.
    let usage = Usage::default();
    let body = ScoreResponse {
        id: new_id("score"),
        object: "list".into(),
        created: now(),
        model: rm.name.clone(),
        data: scores
            .iter()
            .enumerate()
            .map(|(index, &x)| ScoreData { index, object: "score".into(), score: x as f64 })
            .collect(),
        usage: usage.clone(),
    };
    let mut resp = axum::Json(body).into_response();
    resp.extensions_mut().insert(Logged(usage));
    Ok(resp)
}
