//! `mismatch label`: a small web app where people label response pairs, for the human side of RLHF.
//!
//! `label serve` imports a pairs file into a SQLite database ([`db`], [`import`]) and serves it
//! ([`server`], [`routes`]): annotators log in with a personal link ([`auth`]), each item goes to K of them,
//! balanced, with the two responses in an order drawn per annotator and recorded ([`assign`]); they pick
//! A, B, tie or both bad, optionally a strength and a reason, on a server-rendered page ([`pages`],
//! [`html`]). Admins see agreement statistics ([`stats`]); `label export` writes TRL-style pairs for
//! `mismatch rm train` ([`export`]).

pub mod assign;
pub mod auth;
pub mod cli;
pub mod db;
pub mod error;
pub mod export;
pub mod html;
pub mod import;
pub mod pages;
pub mod routes;
pub mod server;
pub mod stats;

pub use error::{LabelError, Result};
pub use server::{serve, spawn, Server, ServerConfig};
