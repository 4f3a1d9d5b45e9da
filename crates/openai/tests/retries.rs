//! The client against a real HTTP server (a raw TCP listener answering with canned statuses):
//! 429 and 5xx are retried, honouring `Retry-After`; other 4xx are not; the API key goes in the
//! Authorization header and nowhere else; answers land in the cache.

use mismatch_openai::api::{CompletionRequest, OneOrMany, Params};
use mismatch_openai::{Client, Endpoint, Options};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const OK: &str = r#"{"id":"cmpl-1","object":"text_completion","created":0,"model":"m","choices":[{"index":0,"text":" there","logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

/// Serves the `(status, extra header, body)` answers in order, one per connection, and records
/// each request's headers.
fn server(answers: Vec<(u16, &'static str, &'static str)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", l.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for (status, header, body) in answers {
            let (mut s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let (mut head, mut len) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let mut b = vec![0u8; len];
            r.read_exact(&mut b).unwrap();
            log.lock().unwrap().push(head);
            let reply = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{header}\r\n{body}",
                body.len()
            );
            s.write_all(reply.as_bytes()).unwrap();
        }
    });
    (url, seen)
}

fn request() -> CompletionRequest {
    CompletionRequest {
        model: "m".into(),
        prompt: Some(OneOrMany::One("hi".into())),
        params: Params { max_tokens: Some(1), ..Default::default() },
        ..Default::default()
    }
}

fn client(url: &str, cache: Option<std::path::PathBuf>) -> Client {
    let options = Options { backoff: Duration::from_millis(10), retries: 2, cache, ..Options::default() };
    Client::new(Endpoint { base: url.into(), model: "m".into() }, options).unwrap()
}

#[test]
fn rate_limits_and_server_errors_are_retried() {
    let busy = r#"{"error":{"message":"slow down","type":"rate_limit","param":null,"code":null}}"#;
    let (url, seen) = server(vec![(429, "Retry-After: 0\r\n", busy), (503, "", "{}"), (200, "", OK)]);
    let dir = tempfile::tempdir().unwrap();
    let c = client(&url, Some(dir.path().join("c.sqlite")));
    let r = c.complete(&request()).unwrap();
    assert_eq!(r.choices[0].text, " there");
    assert_eq!(c.counts(), (3, 0));
    assert_eq!(seen.lock().unwrap().len(), 3);
    // The answer is cached: no server is needed the second time.
    assert_eq!(c.complete(&request()).unwrap(), r);
    assert_eq!(c.counts(), (3, 1));
}

#[test]
fn other_client_errors_are_not_retried_and_retries_run_out() {
    let bad = r#"{"error":{"message":"max_tokens is too large","type":"invalid_request_error","param":"max_tokens","code":null}}"#;
    let (url, _) = server(vec![(400, "", bad)]);
    let c = client(&url, None);
    let e = c.complete(&request()).unwrap_err().to_string();
    assert!(e.contains("HTTP 400") && e.contains("max_tokens is too large") && e.contains(&url), "{e}");
    assert_eq!(c.counts(), (1, 0));

    let (url, _) = server(vec![(500, "", "{}"), (502, "", "{}"), (503, "", "oops")]);
    let c = client(&url, None);
    let e = c.complete(&request()).unwrap_err().to_string();
    assert!(e.contains("HTTP 503") && e.contains("oops"), "{e}");
    assert_eq!(c.counts(), (3, 0));
}

#[test]
fn the_key_is_sent_as_a_bearer_token_and_never_printed() {
    let (url, seen) = server(vec![(200, "", OK)]);
    // SAFETY: the only test in this binary that reads the key variables sets them first.
    unsafe { std::env::set_var("MISMATCH_API_KEY", "sk-secret-123") };
    let c = client(&url, None);
    unsafe { std::env::remove_var("MISMATCH_API_KEY") };
    c.complete(&request()).unwrap();
    let head = seen.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.contains("authorization: bearer sk-secret-123"), "{head}");
    assert!(!format!("{c:?}").contains("sk-secret"));
}
