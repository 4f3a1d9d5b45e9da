//! A blocking client for any OpenAI-compatible endpoint (vLLM, SGLang, llama.cpp's server,
//! hosted APIs, `mismatch serve`): a limit on requests in flight, a timeout, retries with
//! exponential backoff on 429 and 5xx (honouring `Retry-After`), and the response cache.

use crate::api::{
    ChatRequest, ChatResponse, CompletionRequest, CompletionResponse, ErrorBody, ScoreRequest, ScoreResponse,
};
use crate::cache::Cache;
use crate::{Endpoint, Error, Result};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The defaults of [`Options`] and of the flags in [`EndpointArgs`].
const CONCURRENCY: usize = 8;
const TIMEOUT_S: f64 = 600.0;
const RETRIES: u32 = 5;

/// How a [`Client`] behaves; the defaults suit a local server and hosted APIs alike.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests in flight at once from [`Client::map`].
    pub concurrency: usize,
    /// Per request, connection to last byte.
    pub timeout: Duration,
    /// Further attempts after a 429, a 5xx or a dropped connection.
    pub retries: u32,
    /// First backoff; doubled per attempt.
    pub backoff: Duration,
    /// `None`: every request goes to the endpoint.
    pub cache: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            concurrency: CONCURRENCY,
            timeout: Duration::from_secs_f64(TIMEOUT_S),
            retries: RETRIES,
            backoff: Duration::from_millis(500),
            cache: None,
        }
    }
}

pub struct Client {
    pub endpoint: Endpoint,
    key: Option<String>,
    agent: ureq::Agent,
    options: Options,
    cache: Option<Cache>,
    sent: AtomicUsize,
    hits: AtomicUsize,
}

/// The API key is never printed.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("key", &self.key.as_ref().map(|_| "<set>"))
            .field("options", &self.options)
            .finish()
    }
}

impl Client {
    /// A client for `endpoint`, with the key from `MISMATCH_API_KEY`, else `OPENAI_API_KEY`.
    pub fn new(endpoint: Endpoint, options: Options) -> Result<Self> {
        let key =
            ["MISMATCH_API_KEY", "OPENAI_API_KEY"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(options.timeout))
            .http_status_as_error(false)
            .build()
            .into();
        let cache = options.cache.as_deref().map(Cache::open).transpose()?;
        Ok(Self { endpoint, key, agent, options, cache, sent: AtomicUsize::new(0), hits: AtomicUsize::new(0) })
    }

    /// HTTP requests sent so far (retries included), and answers taken from the cache.
    pub fn counts(&self) -> (usize, usize) {
        (self.sent.load(Ordering::Relaxed), self.hits.load(Ordering::Relaxed))
    }

    pub fn chat(&self, req: &ChatRequest) -> Result<ChatResponse> {
        self.post("chat/completions", req)
    }

    pub fn complete(&self, req: &CompletionRequest) -> Result<CompletionResponse> {
        self.post("completions", req)
    }

    pub fn score(&self, req: &ScoreRequest) -> Result<ScoreResponse> {
        self.post("score", req)
    }

    /// `f` over `items` with at most `concurrency` calls in flight; results in input order.
    pub fn map<T: Sync, R: Send>(&self, items: &[T], f: impl Fn(&T) -> Result<R> + Sync) -> Vec<Result<R>> {
        let next = AtomicUsize::new(0);
        let workers = self.options.concurrency.clamp(1, items.len().max(1));
        let mut out: Vec<Option<Result<R>>> = (0..items.len()).map(|_| None).collect();
        let done: Vec<Vec<(usize, Result<R>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut mine = vec![];
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= items.len() {
                                return mine;
                            }
                            mine.push((i, f(&items[i])));
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("client worker panicked")).collect()
        });
        for (i, r) in done.into_iter().flatten() {
            out[i] = Some(r);
        }
        out.into_iter().map(|r| r.expect("every item answered")).collect()
    }

    /// POSTs `req` as JSON to `<base>/<path>`, through the cache.
    fn post<Q: Serialize, A: DeserializeOwned>(&self, path: &str, req: &Q) -> Result<A> {
        let url = format!("{}/{path}", self.endpoint.base.trim_end_matches('/'));
        let body = serde_json::to_string(req).expect("requests serialise");
        let key = Cache::key(&url, &body);
        if let Some(text) = self.cache.as_ref().map(|c| c.get(&key)).transpose()?.flatten() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return decode(&url, &text);
        }
        let text = self.send(&url, &body)?;
        let answer = decode(&url, &text)?;
        if let Some(c) = &self.cache {
            c.put(&key, &url, &body, &text)?;
        }
        Ok(answer)
    }

    fn send(&self, url: &str, body: &str) -> Result<String> {
        let mut attempt = 0;
        loop {
            self.sent.fetch_add(1, Ordering::Relaxed);
            let mut call = self.agent.post(url).header("Content-Type", "application/json");
            if let Some(k) = &self.key {
                call = call.header("Authorization", &format!("Bearer {k}"));
            }
            let (retry_after, failure) = match call.send(body) {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let text = resp
                        .body_mut()
                        .with_config()
                        .limit(256 << 20)
                        .read_to_string()
                        .map_err(|e| Error::Transport { url: url.into(), message: e.to_string() })?;
                    if status == 200 {
                        return Ok(text);
                    }
                    let message = serde_json::from_str::<ErrorBody>(&text).map(|e| e.error.message).unwrap_or(text);
                    let failure = Error::Status { url: url.into(), status, message };
                    if status != 429 && status < 500 {
                        return Err(failure);
                    }
                    let after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(|s| Duration::from_secs_f64(s.min(300.0)));
                    (after, failure)
                }
                Err(e) => (None, Error::Transport { url: url.into(), message: e.to_string() }),
            };
            if attempt >= self.options.retries {
                return Err(failure);
            }
            let wait = retry_after.unwrap_or(self.options.backoff * 2u32.saturating_pow(attempt));
            std::thread::sleep(wait.min(Duration::from_secs(300)));
            attempt += 1;
        }
    }
}

fn decode<A: DeserializeOwned>(url: &str, text: &str) -> Result<A> {
    serde_json::from_str(text).map_err(|e| Error::Decode { url: url.into(), message: e.to_string() })
}

/// The flags every command that can send work to an endpoint takes.
#[derive(clap::Args, Debug, Clone)]
pub struct EndpointArgs {
    /// Requests in flight at once to an `openai:` endpoint.
    #[arg(long, default_value_t = CONCURRENCY)]
    pub concurrency: usize,
    /// Seconds before an endpoint request is abandoned (then retried).
    #[arg(long, default_value_t = TIMEOUT_S)]
    pub request_timeout: f64,
    /// Further attempts after a 429, a 5xx or a dropped connection, with exponential backoff.
    #[arg(long, default_value_t = RETRIES)]
    pub retries: u32,
    /// Response cache (SQLite; default: $MISMATCH_HOME/cache/openai.sqlite).
    #[arg(long)]
    pub cache: Option<std::path::PathBuf>,
    /// Send every request to the endpoint, neither reading nor writing the cache.
    #[arg(long)]
    pub no_cache: bool,
}

/// The flags' defaults, for callers that build the arguments in code.
impl Default for EndpointArgs {
    fn default() -> Self {
        let o = Options::default();
        Self {
            concurrency: o.concurrency,
            request_timeout: o.timeout.as_secs_f64(),
            retries: o.retries,
            cache: None,
            no_cache: false,
        }
    }
}

impl EndpointArgs {
    pub fn options(&self) -> Result<Options> {
        if !(self.request_timeout > 0.0 && self.request_timeout.is_finite()) {
            return Err(Error::Spec {
                spec: "--request-timeout".into(),
                message: "must be a positive number of seconds".into(),
            });
        }
        let cache = match (self.no_cache, &self.cache) {
            (true, _) => None,
            (false, Some(p)) => Some(p.clone()),
            (false, None) => crate::default_cache_path(),
        };
        Ok(Options {
            concurrency: self.concurrency.max(1),
            timeout: Duration::from_secs_f64(self.request_timeout),
            retries: self.retries,
            cache,
            ..Options::default()
        })
    }

    /// A client for `spec` when it names an endpoint (`openai:URL#MODEL`), else `None`.
    pub fn client(&self, spec: &str) -> Option<Result<Client>> {
        Endpoint::from_spec(spec).map(|e| Client::new(e?, self.options()?))
    }
}

/// How to sample a prompt on an endpoint: chat (the prompt as one user turn, through the
/// server's chat template) or raw text completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub chat: bool,
    pub system: Option<String>,
    pub n: usize,
    pub temperature: f64,
    pub top_p: f64,
    pub max_tokens: usize,
    pub seed: u64,
}

/// One completion from an endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub text: String,
    /// log π of each token the endpoint returned (it shows no end-of-sequence token).
    pub logprobs: Vec<f32>,
    /// It ended at a stop (`finish_reason: "stop"`) rather than the length limit.
    pub finished: bool,
}

impl Client {
    /// `s.n` completions of `prompt` with their log-probs, in one request.
    pub fn samples(&self, prompt: &str, s: &Sampling) -> Result<Vec<Sample>> {
        use crate::api::{Message, OneOrMany, Params};
        let model = self.endpoint.model.clone();
        let params = Params {
            n: Some(s.n),
            seed: Some(s.seed),
            temperature: Some(s.temperature),
            top_p: Some(s.top_p),
            max_tokens: Some(s.max_tokens),
            ..Default::default()
        };
        let got: Vec<Sample> = if s.chat {
            let mut messages: Vec<Message> = s.system.iter().map(|t| Message::new("system", t)).collect();
            messages.push(Message::new("user", prompt));
            let req = ChatRequest { model, messages, params, logprobs: Some(true), ..Default::default() };
            self.chat(&req)?
                .choices
                .into_iter()
                .map(|c| Sample {
                    text: c.message.content.text().unwrap_or_default(),
                    logprobs: c.logprobs.map(|l| l.content.iter().map(|t| t.logprob).collect()).unwrap_or_default(),
                    finished: c.finish_reason.as_deref() == Some("stop"),
                })
                .collect()
        } else {
            let req = CompletionRequest {
                model,
                prompt: Some(OneOrMany::One(prompt.to_string())),
                params,
                logprobs: Some(0),
                ..Default::default()
            };
            self.complete(&req)?
                .choices
                .into_iter()
                .map(|c| Sample {
                    text: c.text,
                    logprobs: c.logprobs.map(|l| l.token_logprobs.into_iter().flatten().collect()).unwrap_or_default(),
                    finished: c.finish_reason.as_deref() == Some("stop"),
                })
                .collect()
        };
        if got.len() != s.n {
            return Err(Error::Decode {
                url: self.endpoint.base.clone(),
                message: format!("asked for {} choices, got {}", s.n, got.len()),
            });
        }
        Ok(got)
    }
}
