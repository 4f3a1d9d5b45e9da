//! `mismatch label`: a small web app where people label response pairs, for the human side of RLHF.
//!
//! ```text
//! mismatch label serve --pairs pairs.jsonl --db labels.sqlite [--per-item 3] [--host 127.0.0.1] [--port 8080]
//! mismatch label add-annotator --db labels.sqlite alice [--admin] [--rotate] [--url http://HOST:PORT]
//! mismatch label export --db labels.sqlite --out prefs.jsonl [--aggregate majority|all] [--min-labels K]
//! ```
//!
//! `label serve` imports a pairs file (any format mismatch-data reads) into a SQLite database ([`db`],
//! [`import`]; re-importing adds nothing twice) and serves it ([`server`], [`routes`]). People log in with a
//! personal link that `add-annotator` prints ([`auth`]; only the token's SHA-256 is stored). Each item goes
//! to K of them, balanced — the next item is the least-labelled one they have not seen — with the two
//! responses in an order drawn per annotator and recorded ([`assign`]). They pick A, B, tie or both bad,
//! optionally a strength (Llama 2's four levels) and a reason, on a server-rendered page with keyboard
//! shortcuts ([`pages`], [`html`], `static/app.js`). Annotators never see each other's labels, the source
//! file, or model names. Admins see the dashboard: labels and median time per annotator, pairwise agreement,
//! Fleiss' κ and the accuracy ceiling with bootstrap intervals, agreement with the others' majority,
//! position bias ([`stats`]; the same as JSON at `/api/stats`). `label export` writes TRL-style pairs that
//! `mismatch rm train` reads ([`export`]).
//!
//! Security: every text is HTML-escaped; a strict Content-Security-Policy (no inline script or style);
//! sessions in `HttpOnly; SameSite=Strict` cookies; a per-session CSRF token on every form, an Origin /
//! Sec-Fetch-Site check on every POST, a 64 KiB body limit, and a label is written only for an assignment
//! of the poster's own — committed (WAL, `synchronous=FULL`) before the reply. Put it behind a TLS proxy to
//! serve beyond localhost.
//!
//! For tests and embedding, [`spawn`] runs the server on a background thread (port 0 picks one).

pub mod assign;
pub mod auth;
pub mod cli;
pub mod db;
pub mod error;
pub mod export;
pub mod html;
pub mod import;
pub mod pages;
pub mod rounds;
pub mod routes;
pub mod server;
pub mod stats;

pub use error::{LabelError, Result};
pub use server::{serve, spawn, Server, ServerConfig};
