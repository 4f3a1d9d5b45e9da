//! `mismatch serve`: a causal LM (and optionally a reward model) behind the OpenAI API, so that
//! any client (the `openai` package, curl, evaluation harnesses, mismatch's own endpoint
//! backend) can use a mismatch checkpoint.
//!
//! | route | what |
//! |---|---|
//! | `GET /v1/models` | the served model (and reward model) |
//! | `POST /v1/chat/completions` | chat template + sampling, `logprobs`/`top_logprobs`, `stream` |
//! | `POST /v1/completions` | raw text; `echo` + `logprobs` scores given text |
//! | `POST /v1/score` | the reward model, vLLM's request and response shape |
//!
//! Concurrent requests share one decode loop ([`mismatch_models::engine`]): a request joins
//! the running batch at the next step and its rows leave when they finish.

mod chat;
mod completions;
mod error;
mod sampling;
mod score;
mod stream;
mod text;
mod worker;

pub use completions::prompt_logprobs;
pub use error::ApiError;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use mismatch_models::{load_causal_lm, CausalLm, LoadedLm};
use mismatch_openai::api::{ModelCard, ModelList};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Short name (smollm2-135m), a .gguf file, or an HF checkpoint directory.
    #[arg(long)]
    pub model: String,
    /// A reward model directory (`mismatch rm train --out`) to serve on /v1/score.
    #[arg(long)]
    pub reward: Option<PathBuf>,
    /// The name clients use in `model` (default: the --model argument).
    #[arg(long)]
    pub served_model_name: Option<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (printed on start).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Rows (completions) decoded together at most; more requests wait for room.
    #[arg(long, default_value_t = 32)]
    pub max_batch: usize,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body: usize,
    /// `cpu`, or `cuda` / `cuda:N` in a build with the `cuda` feature.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

impl ServeArgs {
    /// `model` on a free loopback port with the flags' defaults (programs that serve in-process).
    pub fn new(model: &str) -> Self {
        #[derive(clap::Parser)]
        struct Command {
            #[command(flatten)]
            args: ServeArgs,
        }
        <Command as clap::Parser>::parse_from(["serve", "--model", model, "--port", "0"]).args
    }
}

/// The served models and the queue to the decode thread.
pub struct Served {
    pub lm: LoadedLm,
    pub name: String,
    pub reward: Option<Reward>,
    jobs: Mutex<mpsc::Sender<worker::Job>>,
    created: u64,
}

pub struct Reward {
    pub name: String,
    pub model: mismatch_reward::model::RewardModel,
}

impl Served {
    /// Context length of the language model in tokens.
    pub fn context(&self) -> usize {
        self.lm.model.max_seq_len()
    }

    fn check_model(&self, asked: &str) -> Result<(), ApiError> {
        if asked == self.name {
            return Ok(());
        }
        Err(ApiError::not_found(
            format!("the model '{asked}' does not exist; this server has '{}'", self.name),
            "model_not_found",
        ))
    }
}

/// The token counts of an answered request, for its log line.
#[derive(Clone)]
pub(crate) struct Usage(pub mismatch_openai::api::Usage);

/// Loads the models, binds, and serves until SIGTERM or Ctrl-C; requests in flight finish first.
pub fn run(a: ServeArgs) -> anyhow::Result<()> {
    let served = load(&a)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port)).await?;
        let addr = listener.local_addr()?;
        eprintln!("serving {} on http://{addr}/v1 (Ctrl-C or SIGTERM stops)", served.name);
        axum::serve(listener, router(served, a.max_body)).with_graceful_shutdown(shutdown()).await?;
        eprintln!("stopped: every request in flight was answered");
        Ok(())
    })
}

/// Serves on a background thread for the life of the process and returns the bound address
/// (benchmarks and embedding programs).
pub fn spawn(a: ServeArgs) -> anyhow::Result<std::net::SocketAddr> {
    let served = load(&a)?;
    let rt = runtime()?;
    let listener = rt.block_on(tokio::net::TcpListener::bind((a.host.as_str(), a.port)))?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("serve".into())
        .spawn(move || rt.block_on(async move { axum::serve(listener, router(served, a.max_body)).await }))?;
    Ok(addr)
}

/// The language model, the reward model and the decode thread for `a`.
fn load(a: &ServeArgs) -> anyhow::Result<Arc<Served>> {
    let device = mismatch_models::device(&a.device)?;
    let lm = load_causal_lm(&a.model, &device, false)?;
    let reward = match &a.reward {
        Some(dir) => {
            let model = mismatch_reward::model::RewardModel::load(dir, &device)?;
            let name = dir.file_name().map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned());
            Some(Reward { name, model })
        }
        None => None,
    };
    let jobs = worker::spawn(&lm.model, a.max_batch)?;
    Ok(Arc::new(Served {
        lm,
        name: a.served_model_name.clone().unwrap_or_else(|| a.model.clone()),
        reward,
        jobs: Mutex::new(jobs),
        created: sampling::now(),
    }))
}

/// HTTP needs little: two threads, while the decode thread and the tensor pool do the work.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()
}

pub fn router(s: Arc<Served>, max_body: usize) -> Router {
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/completions", post(completions::handle))
        .route("/v1/score", post(score::handle))
        .route("/health", get(|| async { "ok" }))
        .fallback(|| async { ApiError::not_found("no such route; see /v1/models", "unknown_route") })
        .method_not_allowed_fallback(|| async {
            ApiError {
                status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
                ..ApiError::invalid("method not allowed on this route")
            }
        })
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(log_layer))
        .with_state(s)
}

async fn models(State(s): State<Arc<Served>>) -> axum::Json<ModelList> {
    let card = |id: &str, len| ModelCard {
        id: id.into(),
        object: "model".into(),
        created: s.created,
        owned_by: "mismatch".into(),
        max_model_len: len,
    };
    let mut data = vec![card(&s.name, Some(s.context()))];
    data.extend(s.reward.as_ref().map(|r| card(&r.name, None)));
    axum::Json(ModelList { object: "list".into(), data })
}

/// A request body as JSON of type `T`, or the 400/413 an OpenAI client expects.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| ApiError { status: r.status(), ..ApiError::invalid(r.body_text()) })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid JSON for this route: {e}")))
}

/// One log line per request: method, path, status, latency, tokens. Streams log their own
/// line when they end.
async fn log_layer(req: Request, next: Next) -> Response {
    let (method, path) = (req.method().to_string(), req.uri().path().to_string());
    let started = Instant::now();
    let resp = next.run(req).await;
    let streaming = resp.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if !streaming {
        let usage = resp.extensions().get::<Usage>().map(|u| u.0.clone());
        log_request(&method, &path, resp.status().as_u16(), started, usage.as_ref(), false);
    }
    resp
}

pub(crate) fn log_request(
    method: &str,
    path: &str,
    status: u16,
    started: Instant,
    usage: Option<&mismatch_openai::api::Usage>,
    stream: bool,
) {
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let tokens = usage.map_or(String::new(), |u| {
        format!(" prompt_tokens={} completion_tokens={}", u.prompt_tokens, u.completion_tokens)
    });
    let kind = if stream { " stream" } else { "" };
    eprintln!("{method} {path} {status} {ms:.0}ms{tokens}{kind}");
}

async fn shutdown() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
