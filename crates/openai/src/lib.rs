//! The OpenAI API in mismatch: the types `mismatch serve` answers with ([`api`]), and a client
//! ([`Client`]) that sends generation, best-of-n pools and judging to any OpenAI-compatible
//! endpoint, with a response cache ([`Cache`]) that makes reruns free and reproducible.
//!
//! An endpoint is named by a model spec `openai:URL#MODEL`, e.g.
//! `openai:http://127.0.0.1:8000/v1#smollm2-135m`, wherever mismatch takes a model.

pub mod api;
pub mod cache;
pub mod client;

pub use cache::Cache;
pub use client::{Client, EndpointArgs, Options, Sample, Sampling};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model spec '{spec}': {message}")]
    Spec { spec: String, message: String },
    #[error("{url}: HTTP {status}: {message}")]
    Status { url: String, status: u16, message: String },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{url}: the response is not what the OpenAI API returns: {message}")]
    Decode { url: String, message: String },
    #[error("response cache {}: {message}", path.display())]
    Cache { path: PathBuf, message: String },
}

pub type Result<T> = std::result::Result<T, Error>;

/// An OpenAI-compatible endpoint: its base URL (up to and including `/v1`) and a model name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub base: String,
    pub model: String,
}

/// The prefix of a model spec that names an endpoint.
pub const SCHEME: &str = "openai:";

impl Endpoint {
    /// `Some` for a spec `openai:URL#MODEL`, `None` for any other spec (a local model).
    pub fn from_spec(spec: &str) -> Option<Result<Self>> {
        let rest = spec.strip_prefix(SCHEME)?;
        let bad = |message: &str| Some(Err(Error::Spec { spec: spec.into(), message: message.into() }));
        let Some((base, model)) = rest.rsplit_once('#') else {
            return bad("expected openai:URL#MODEL, e.g. openai:http://127.0.0.1:8000/v1#smollm2-135m");
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return bad("the URL must start with http:// or https://");
        }
        if model.is_empty() {
            return bad("the model name after '#' is empty");
        }
        Some(Ok(Self { base: base.trim_end_matches('/').into(), model: model.into() }))
    }
}

/// Where responses are cached unless told otherwise: `$MISMATCH_HOME/cache/openai.sqlite`, else
/// the user cache directory's `mismatch/cache/openai.sqlite`.
pub fn default_cache_path() -> Option<PathBuf> {
    let root = std::env::var_os("MISMATCH_HOME")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("mismatch")))?;
    Some(root.join("cache").join("openai.sqlite"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_name_an_endpoint_or_say_what_is_wrong() {
        let e = Endpoint::from_spec("openai:http://127.0.0.1:8000/v1/#smollm2-135m").unwrap().unwrap();
        assert_eq!(e, Endpoint { base: "http://127.0.0.1:8000/v1".into(), model: "smollm2-135m".into() });
        // The model name may hold '#'-free slashes; the last '#' splits.
        let e = Endpoint::from_spec("openai:https://api.example.com/v1#org/model-7b").unwrap().unwrap();
        assert_eq!(e.model, "org/model-7b");
        assert!(Endpoint::from_spec("smollm2-135m").is_none());
        for bad in ["openai:http://x/v1", "openai:ftp://x#m", "openai:http://x/v1#"] {
            let err = Endpoint::from_spec(bad).unwrap().unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn the_cache_keeps_answers_by_request() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::open(&dir.path().join("sub/c.sqlite")).unwrap();
        let k1 = Cache::key("http://x/v1/completions", r#"{"a":1}"#);
        let k2 = Cache::key("http://x/v1/completions", r#"{"a":2}"#);
        assert_ne!(k1, k2);
        assert_eq!(c.get(&k1).unwrap(), None);
        c.put(&k1, "u", "q", "answer").unwrap();
        assert_eq!(c.get(&k1).unwrap().as_deref(), Some("answer"));
        assert_eq!(c.len().unwrap(), 1);
        drop(c);
        let c = Cache::open(&dir.path().join("sub/c.sqlite")).unwrap();
        assert_eq!(c.get(&k1).unwrap().as_deref(), Some("answer"));
        assert_eq!(c.get(&k2).unwrap(), None);
    }
}
