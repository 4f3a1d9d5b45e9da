//! The HTTP routes. Every route but `/login` and `/static/*` needs a session; the dashboard and
//! `/api/stats` need an admin. Every POST passes, in order: the Origin check (403), the session (401), the
//! CSRF token (403), validation (400), and the ownership of the assignment (403) — and only then writes, in a
//! transaction committed before the response is sent.
//!
//! | route              | who      | what                                                     |
//! |--------------------|----------|----------------------------------------------------------|
//! | GET  /             | anyone   | → /task with a session, else the "need a login link" page |
//! | GET  /login?token= | anyone   | starts a session (cookie), forwards to /task              |
//! | POST /logout       | session  | ends it                                                   |
//! | GET  /task         | session  | the next pair, with progress                              |
//! | POST /label        | session  | csrf, item, choice=left/right/tie/both_bad, strength, reason |
//! | POST /skip         | session  | csrf, item                                                |
//! | GET  /dashboard    | admin    | agreement statistics                                      |
//! | GET  /api/stats    | admin    | the same as JSON ([`crate::stats::Stats`])                |
//! | GET  /static/app.js, /static/app.css | anyone | keyboard shortcuts, style            |

use crate::assign::{self, Refusal, ScreenChoice, Submission};
use crate::auth::{self, Session};
use crate::pages;
use axum::extract::{DefaultBodyLimit, Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rusqlite::Connection;
use serde::Deserialize;
use std::sync::{Arc, Mutex};

/// Largest accepted request body: a label form is well under 4 KiB even with a long reason.
pub const BODY_LIMIT: usize = 64 * 1024;

/// Longest reason kept, in characters.
pub const MAX_REASON: usize = 2000;

/// The Content-Security-Policy of every response: only this server's own script and style, no plugins, no
/// framing, forms post only here.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; \
                       frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

const APP_JS: &str = include_str!("../static/app.js");
const APP_CSS: &str = include_str!("../static/app.css");

/// Shared state: one connection, used under a mutex from blocking threads. SQLite serialises writers
/// anyway, and one connection means no SQLITE_BUSY between the server's own requests.
pub struct App {
    pub db: Mutex<Connection>,
    pub per_item: usize,
    pub bootstrap: usize,
    pub seed: u64,
}

/// Why a request failed; each becomes a status and an HTML page.
#[derive(Debug)]
pub enum Failure {
    Unauthorized,
    Forbidden(String),
    BadRequest(String),
    NotFound,
    Internal(String),
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, page) = match self {
            Failure::Unauthorized => (StatusCode::UNAUTHORIZED, pages::need_login()),
            Failure::Forbidden(m) => (StatusCode::FORBIDDEN, pages::error("Forbidden", &m)),
            Failure::BadRequest(m) => (StatusCode::BAD_REQUEST, pages::error("Bad request", &m)),
            Failure::NotFound => (StatusCode::NOT_FOUND, pages::error("Not found", "There is no such page.")),
            Failure::Internal(m) => {
                eprintln!("mismatch label: internal error: {m}");
                (StatusCode::INTERNAL_SERVER_ERROR, pages::error("Server error", "Something went wrong; try again."))
            }
        };
        (status, Html(page)).into_response()
    }
}

impl From<rusqlite::Error> for Failure {
    fn from(e: rusqlite::Error) -> Self {
        Failure::Internal(format!("database: {e}"))
    }
}

type Reply = Result<Response, Failure>;

/// Runs `f` with the connection on a blocking thread.
async fn with_db<T: Send + 'static>(
    app: &Arc<App>,
    f: impl FnOnce(&mut Connection) -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = app.db.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    })
    .await
    .map_err(|e| Failure::Internal(format!("worker: {e}")))?
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The request's session, or 401.
async fn session(app: &Arc<App>, headers: &HeaderMap) -> Result<Session, Failure> {
    let Some(cookie) = header_str(headers, header::COOKIE).and_then(auth::cookie_value).map(str::to_owned) else {
        return Err(Failure::Unauthorized);
    };
    with_db(app, move |c| auth::session(c, &cookie)?.ok_or(Failure::Unauthorized)).await
}

/// The checks every POST passes before its form is looked at: Origin, session, CSRF token.
async fn post_session(app: &Arc<App>, headers: &HeaderMap, csrf: Option<&str>) -> Result<Session, Failure> {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if !auth::same_origin(header_str(headers, header::ORIGIN), header_str(headers, header::HOST), fetch_site) {
        return Err(Failure::Forbidden("cross-origin request refused".into()));
    }
    let s = session(app, headers).await?;
    match csrf {
        Some(t) if auth::same_secret(t, &s.csrf) => Ok(s),
        _ => Err(Failure::Forbidden("the form's security token is missing or stale; reload the page".into())),
    }
}

async fn admin_session(app: &Arc<App>, headers: &HeaderMap) -> Result<Session, Failure> {
    let s = session(app, headers).await?;
    if !s.admin {
        return Err(Failure::Forbidden("the dashboard is for admins".into()));
    }
    Ok(s)
}

async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply {
    session(&app, &headers).await?;
    Ok(Redirect::to("/task").into_response())
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

async fn login(State(app): State<Arc<App>>, Query(q): Query<LoginQuery>) -> Reply {
    let token = q.token.unwrap_or_default();
    let found = with_db(&app, move |c| Ok(auth::login(c, &token)?)).await?;
    let Some((id, s)) = found else {
        return Ok((StatusCode::UNAUTHORIZED, Html(pages::bad_login())).into_response());
    };
    let cookie = HeaderValue::from_str(&auth::set_cookie(&id)).map_err(|e| Failure::Internal(e.to_string()))?;
    Ok(([(header::SET_COOKIE, cookie)], Html(pages::logged_in(&s))).into_response())
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: Option<String>,
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Reply {
    post_session(&app, &headers, f.csrf.as_deref()).await?;
    let cookie = header_str(&headers, header::COOKIE).and_then(auth::cookie_value).unwrap_or("").to_owned();
    with_db(&app, move |c| Ok(auth::logout(c, &cookie)?)).await?;
    let clear = format!("{}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0", auth::COOKIE);
    let clear = HeaderValue::from_str(&clear).map_err(|e| Failure::Internal(e.to_string()))?;
    let page = pages::error("Logged out", "Open your login link again to continue.");
    Ok(([(header::SET_COOKIE, clear)], Html(page)).into_response())
}

async fn task(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply {
    let s = session(&app, &headers).await?;
    let per_item = app.per_item;
    // The order for a new assignment: a fair coin per (annotator, item), drawn here and recorded with it.
    let swap = rand::random::<bool>();
    let who = s.annotator;
    let (t, p) = with_db(&app, move |c| {
        let t = assign::next_task(c, who, per_item, swap)?;
        Ok((t, assign::progress(c, who, per_item)?))
    })
    .await?;
    Ok(Html(pages::task(&s, t.as_ref(), &p)).into_response())
}

#[derive(Deserialize)]
struct LabelForm {
    csrf: Option<String>,
    item: Option<String>,
    choice: Option<String>,
    strength: Option<String>,
    reason: Option<String>,
}

fn parse_item(item: Option<&str>) -> Result<i64, Failure> {
    item.and_then(|i| i.trim().parse().ok()).ok_or_else(|| Failure::BadRequest("missing or bad item id".into()))
}

/// Validates a label form (everything but the CSRF token, checked before).
fn submission(f: &LabelForm) -> Result<Submission, Failure> {
    let item = parse_item(f.item.as_deref())?;
    let choice = f
        .choice
        .as_deref()
        .and_then(ScreenChoice::parse)
        .ok_or_else(|| Failure::BadRequest("choice must be left, right, tie or both_bad".into()))?;
    let strength = match f.strength.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) => match s.parse::<u8>() {
            Ok(v @ 1..=4) => Some(v),
            _ => return Err(Failure::BadRequest("strength must be 1, 2, 3 or 4".into())),
        },
    };
    let reason = f.reason.as_deref().map(str::trim).filter(|r| !r.is_empty());
    if reason.is_some_and(|r| r.chars().count() > MAX_REASON) {
        return Err(Failure::BadRequest(format!("reason: at most {MAX_REASON} characters")));
    }
    Ok(Submission { item, choice, strength, reason: reason.map(str::to_owned) })
}

fn refused(r: Refusal) -> Reply {
    match r {
        Refusal::NotYours => Err(Failure::Forbidden("this item is not assigned to you".into())),
        // A second submit of the same page: the first one counted; carry on.
        Refusal::AlreadyAnswered => Ok(Redirect::to("/task").into_response()),
    }
}

async fn label(State(app): State<Arc<App>>, headers: HeaderMap, Form(f): Form<LabelForm>) -> Reply {
    let s = post_session(&app, &headers, f.csrf.as_deref()).await?;
    let sub = submission(&f)?;
    let who = s.annotator;
    match with_db(&app, move |c| Ok(assign::record_label(c, who, &sub)?)).await? {
        Ok(()) => Ok(Redirect::to("/task").into_response()),
        Err(r) => refused(r),
    }
}

async fn skip(State(app): State<Arc<App>>, headers: HeaderMap, Form(f): Form<LabelForm>) -> Reply {
    let s = post_session(&app, &headers, f.csrf.as_deref()).await?;
    let item = parse_item(f.item.as_deref())?;
    let who = s.annotator;
    match with_db(&app, move |c| Ok(assign::skip(c, who, item)?)).await? {
        Ok(()) => Ok(Redirect::to("/task").into_response()),
        Err(r) => refused(r),
    }
}

async fn stats(app: &Arc<App>) -> Result<crate::stats::Stats, Failure> {
    let (k, b, seed) = (app.per_item, app.bootstrap, app.seed);
    with_db(app, move |c| Ok(crate::stats::compute(c, k, b, seed)?)).await
}

async fn dashboard(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply {
    let s = admin_session(&app, &headers).await?;
    let st = stats(&app).await?;
    Ok(Html(pages::dashboard(&s, &st)).into_response())
}

async fn api_stats(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply {
    admin_session(&app, &headers).await?;
    Ok(Json(stats(&app).await?).into_response())
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Headers on every response: the CSP, no MIME sniffing, referrers only to this server (the login link holds
/// a token; `no-referrer` would be stricter but makes browsers send `Origin: null` on our own form posts),
/// no framing, and no caching of pages that hold a CSRF token or someone's labels.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.entry(header::CACHE_CONTROL).or_insert(HeaderValue::from_static("no-store"));
    r
}

/// The application's router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login))
        .route("/logout", post(logout))
        .route("/task", get(task))
        .route("/label", post(label))
        .route("/skip", post(skip))
        .route("/dashboard", get(dashboard))
        .route("/api/stats", get(api_stats))
        .route("/static/app.js", get(|| async { asset(APP_JS, "text/javascript; charset=utf-8") }))
        .route("/static/app.css", get(|| async { asset(APP_CSS, "text/css; charset=utf-8") }))
        .fallback(|| async { Failure::NotFound })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}
