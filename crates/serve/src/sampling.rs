//! What chat and text completions share: parameter checks, handing a prompt to the decode
//! thread, and turning its tokens into choices (whole, or as a stream of deltas).

use crate::error::ApiError;
use crate::text::{token_text, Detok};
use crate::worker::{Job, Update};
use crate::Served;
use mismatch_models::engine::{Event, Finish, Request};
use mismatch_models::SamplingParams;
use mismatch_openai::api::{Params, Stop, TokenLogprob, TopLogprob};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

/// The sampling parameters as asked, before checking.
#[derive(Clone, Copy)]
pub struct Asked<'a> {
    pub params: &'a Params,
    /// `max_tokens` as the endpoint reads it.
    pub max_tokens: Option<usize>,
    pub top_logprobs: usize,
}

/// Checked parameters: what the engine gets, and the stop strings the handler applies.
pub struct Plan {
    pub params: SamplingParams,
    pub n: usize,
    pub top_logprobs: usize,
    pub stops: Vec<String>,
}

pub const MAX_N: usize = 128;
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Checks `a` for a prompt of `prompt_len` tokens; `default_max` is the endpoint's default for
/// `max_tokens` (`None`: the rest of the context, as vLLM does).
pub fn plan(s: &Served, a: Asked, prompt_len: usize, default_max: Option<usize>) -> Result<Plan, ApiError> {
    let q = a.params;
    let temperature = q.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::param("temperature", format!("temperature must be in [0, 2] (got {temperature})")));
    }
    let top_p = q.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::param("top_p", format!("top_p must be in (0, 1] (got {top_p})")));
    }
    let n = q.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(ApiError::param("n", format!("n must be between 1 and {MAX_N} (got {n})")));
    }
    if a.top_logprobs > MAX_TOP_LOGPROBS {
        return Err(ApiError::param(
            "top_logprobs",
            format!("at most {MAX_TOP_LOGPROBS} alternatives per token (got {})", a.top_logprobs),
        ));
    }
    let ctx = s.context();
    if prompt_len >= ctx {
        return Err(ApiError::param(
            "messages",
            format!("the prompt has {prompt_len} tokens; this model's context is {ctx} tokens"),
        ));
    }
    let room = ctx - prompt_len;
    let max_new = a.max_tokens.or(default_max.map(|d| d.min(room))).unwrap_or(room);
    if max_new > room {
        return Err(ApiError::param(
            "max_tokens",
            format!(
                "prompt of {prompt_len} tokens + max_tokens {max_new} exceeds this model's context of {ctx} tokens"
            ),
        ));
    }
    let stops = q.stop.as_ref().map(Stop::strings).unwrap_or_default();
    if stops.len() > 4 || stops.iter().any(|s| s.is_empty()) {
        return Err(ApiError::param("stop", "stop takes up to 4 non-empty strings"));
    }
    let params = SamplingParams {
        max_new_tokens: max_new,
        temperature,
        top_k: None,
        top_p: Some(top_p).filter(|&p| p < 1.0),
        stop_tokens: if q.ignore_eos.unwrap_or(false) { vec![] } else { s.lm.tok.eos_ids.clone() },
        seed: q.seed.unwrap_or_else(rand::random),
    };
    Ok(Plan { params, n, top_logprobs: a.top_logprobs, stops })
}

/// Queues `prompt` for decoding; its tokens arrive on the receiver.
pub fn submit(s: &Served, prompt: Vec<u32>, plan: &Plan) -> Result<UnboundedReceiver<Update>, ApiError> {
    let (tx, rx) = unbounded_channel();
    let request = Request { prompt, n: plan.n, params: plan.params.clone(), top_logprobs: plan.top_logprobs };
    s.jobs
        .lock()
        .expect("job queue lock")
        .send(Job { request, updates: tx })
        .map_err(|_| ApiError::internal("the decode thread has stopped"))?;
    Ok(rx)
}

/// One completion as it is built.
pub struct Choice {
    pub detok: Detok,
    /// Tokens shown to the client (special tokens left out), with their log-probs.
    pub events: Vec<Event>,
    /// Tokens generated, special ones and those after a stop string included.
    pub generated: usize,
    pub finish: Option<&'static str>,
}

impl Choice {
    pub fn new(stops: &[String]) -> Self {
        Self { detok: Detok::new(stops.to_vec()), events: vec![], generated: 0, finish: None }
    }

    /// Takes one token; returns the text it adds. Once a stop string matched, the choice is
    /// finished and ignores further tokens.
    pub fn take(&mut self, s: &Served, e: Event) -> Result<String, ApiError> {
        if self.finish.is_some() {
            return Ok(String::new());
        }
        self.generated += 1;
        let last = e.finish.is_some();
        let delta = self.detok.push(&s.lm.tok, e.token, last)?;
        if self.detok.stopped {
            self.finish = Some("stop");
        } else if let Some(f) = e.finish {
            self.finish = Some(match f {
                Finish::Stop => "stop",
                Finish::Length => "length",
            });
        }
        if !s.lm.tok.eos_ids.contains(&e.token) {
            self.events.push(e);
        }
        Ok(delta)
    }
}

/// Receives until every choice has finished.
pub async fn collect(s: &Served, mut rx: UnboundedReceiver<Update>, plan: &Plan) -> Result<Vec<Choice>, ApiError> {
    let mut choices: Vec<Choice> = (0..plan.n).map(|_| Choice::new(&plan.stops)).collect();
    while choices.iter().any(|c| c.finish.is_none()) {
        match rx.recv().await {
            Some(Ok(e)) => {
                let c = e.choice;
                choices[c].take(s, e)?;
            }
            Some(Err(m)) => return Err(ApiError::internal(m)),
            None => return Err(ApiError::internal("the decode thread dropped the request")),
        }
    }
    Ok(choices)
}

/// An event's token and alternatives as the chat API's `logprobs.content` entry.
pub fn chat_logprob(s: &Served, e: &Event) -> TokenLogprob {
    let (token, bytes) = token_text(&s.lm.tok, e.token);
    let top_logprobs = e
        .top
        .iter()
        .map(|&(id, logprob)| {
            let (token, bytes) = token_text(&s.lm.tok, id);
            TopLogprob { token, logprob, bytes: Some(bytes) }
        })
        .collect();
    TokenLogprob { token, logprob: e.logprob, bytes: Some(bytes), top_logprobs }
}

pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A response id: the prefix OpenAI uses, then a random hex number.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}
