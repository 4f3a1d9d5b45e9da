//! Who is asking: login tokens, sessions, CSRF tokens and the Origin check.
//!
//! - A login token is 32 random bytes from the thread-local CSPRNG (`rand::rng()`, ChaCha12 seeded from the
//!   OS), printed once as hex in the login link; the database stores only its SHA-256, so reading the
//!   database file does not let anyone log in.
//! - Visiting the link creates a session: another 32 random bytes, sent as an `HttpOnly; SameSite=Strict;
//!   Path=/` cookie and stored hashed, with a per-session CSRF token (a third random value) that every form
//!   embeds and every POST must echo.
//! - A POST whose `Origin` header is present and is not this server (its `Host`) is refused before anything
//!   else, as is one a browser marks with a `Sec-Fetch-Site` other than `same-origin`. SameSite=Strict and
//!   the CSRF token already stop cross-site forms; this third check also covers what SameSite does not:
//!   another app on the same host but a different port is "same-site" and would get the cookie.

use crate::db::now_ms;
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

/// How long a session lasts; after that the login link has to be opened again.
pub const SESSION_TTL_MS: i64 = 30 * 24 * 3600 * 1000;

/// The session cookie's name.
pub const COOKIE: &str = "mismatch_label_session";

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 32 random bytes as 64 hex characters.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex(&b)
}

/// SHA-256 of `s` as hex: how tokens and session ids are stored.
pub fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

/// Compares two secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A logged-in annotator, as a request's session resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub annotator: i64,
    pub name: String,
    pub admin: bool,
    pub csrf: String,
}

/// Adds an annotator and returns their login token (shown once). `rotate`: if the name exists, issue a new
/// token instead (the old link stops working and their sessions end); otherwise an existing name is an error.
pub fn add_annotator(conn: &mut Connection, name: &str, admin: bool, rotate: bool) -> crate::Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(crate::LabelError::Usage("annotator name: must be non-empty, without control characters".into()));
    }
    let token = random_token();
    let hash = sha256_hex(&token);
    let db = |e: rusqlite::Error| crate::LabelError::Usage(format!("database: {e}"));
    let tx = conn.transaction().map_err(db)?;
    let existing: Option<i64> =
        tx.query_row("SELECT id FROM annotators WHERE name = ?1", [name], |r| r.get(0)).optional().map_err(db)?;
    match existing {
        Some(id) if rotate => {
            tx.execute("UPDATE annotators SET token_hash = ?1, admin = ?2 WHERE id = ?3", params![hash, admin, id])
                .map_err(db)?;
            tx.execute("DELETE FROM sessions WHERE annotator = ?1", [id]).map_err(db)?;
        }
        Some(_) => {
            return Err(crate::LabelError::Usage(format!(
                "annotator `{name}` exists; pass --rotate to issue a new login link (the old one stops working)"
            )))
        }
        None => {
            tx.execute(
                "INSERT INTO annotators (name, token_hash, admin, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![name, hash, admin, now_ms()],
            )
            .map_err(db)?;
        }
    }
    tx.commit().map_err(db)?;
    Ok(token)
}

/// Exchanges a login token for a new session; returns the cookie value and the session, or `None` for an
/// unknown token.
pub fn login(conn: &Connection, token: &str) -> rusqlite::Result<Option<(String, Session)>> {
    let found: Option<(i64, String, bool)> = conn
        .query_row("SELECT id, name, admin FROM annotators WHERE token_hash = ?1", [sha256_hex(token)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    let Some((annotator, name, admin)) = found else { return Ok(None) };
    let (id, csrf) = (random_token(), random_token());
    conn.execute(
        "INSERT INTO sessions (id_hash, annotator, csrf, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![sha256_hex(&id), annotator, csrf, now_ms()],
    )?;
    Ok(Some((id, Session { annotator, name, admin, csrf })))
}

/// The session a cookie value belongs to, unless older than [`SESSION_TTL_MS`].
pub fn session(conn: &Connection, cookie: &str) -> rusqlite::Result<Option<Session>> {
    conn.query_row(
        "SELECT a.id, a.name, a.admin, s.csrf FROM sessions s JOIN annotators a ON a.id = s.annotator
         WHERE s.id_hash = ?1 AND s.created_at > ?2",
        params![sha256_hex(cookie), now_ms() - SESSION_TTL_MS],
        |r| Ok(Session { annotator: r.get(0)?, name: r.get(1)?, admin: r.get(2)?, csrf: r.get(3)? }),
    )
    .optional()
}

/// Ends the session a cookie value belongs to.
pub fn logout(conn: &Connection, cookie: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM sessions WHERE id_hash = ?1", [sha256_hex(cookie)]).map(|_| ())
}

/// The session cookie's value in a `Cookie` header, if any.
pub fn cookie_value(header: &str) -> Option<&str> {
    header.split(';').filter_map(|kv| kv.trim().split_once('=')).find(|(k, _)| *k == COOKIE).map(|(_, v)| v)
}

/// The `Set-Cookie` value that starts a session.
pub fn set_cookie(id: &str) -> String {
    format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}", SESSION_TTL_MS / 1000)
}

/// Whether a POST may proceed as far as its origin is concerned:
/// - `Sec-Fetch-Site`, when sent (browsers set it and scripts cannot), must be `same-origin`;
/// - `Origin`, when sent, must be `scheme://host[:port]` with `host[:port]` the request's `Host`; the opaque
///   origin `null` passes only with `Sec-Fetch-Site: same-origin` (browsers send `null` on their own
///   same-origin posts under some referrer policies and privacy settings);
/// - neither header (non-browser clients, old browsers): allowed, the CSRF token still has to match.
pub fn same_origin(origin: Option<&str>, host: Option<&str>, fetch_site: Option<&str>) -> bool {
    let same = match fetch_site {
        Some(s) if !s.eq_ignore_ascii_case("same-origin") => return false,
        Some(_) => true,
        None => false,
    };
    let Some(origin) = origin else { return true };
    if origin == "null" {
        return same;
    }
    let Some(host) = host else { return false };
    let authority = origin.split_once("://").map(|(_, rest)| rest);
    authority.is_some_and(|a| a.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_rules() {
        assert!(same_origin(None, Some("127.0.0.1:80"), None));
        assert!(same_origin(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"), Some("same-origin")));
        assert!(!same_origin(Some("http://evil.example"), Some("127.0.0.1:8080"), None));
        assert!(!same_origin(Some("null"), Some("127.0.0.1:8080"), None));
        assert!(same_origin(Some("null"), Some("127.0.0.1:8080"), Some("same-origin")));
        assert!(!same_origin(Some("http://127.0.0.1:9999"), Some("127.0.0.1:8080"), Some("same-origin")));
        assert!(!same_origin(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080"), Some("same-site")));
        assert!(!same_origin(None, Some("h"), Some("none")));
        assert!(!same_origin(Some("http://127.0.0.1:8080"), None, None));
        assert!(!same_origin(None, Some("h"), Some("cross-site")));
    }

    #[test]
    fn cookies_and_secrets() {
        assert_eq!(cookie_value("a=1; mismatch_label_session=xyz; b=2"), Some("xyz"));
        assert_eq!(cookie_value("a=1"), None);
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd") && !same_secret("abc", "ab"));
        let t = random_token();
        assert_eq!(t.len(), 64);
        assert_ne!(t, random_token());
        assert_eq!(sha256_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
