//! A real browser: headless Chromium driven over WebDriver (chromedriver) opens a login link, is forwarded
//! to the task page by /static/app.js (so the script runs under the Content-Security-Policy and the
//! SameSite=Strict cookie is sent), refuses a form posted from a foreign page (a `data:` URL holding the
//! real CSRF token), labels four pairs with the keyboard shortcuts 1, b, t, x, and never runs the markup
//! inside a response. Skipped, with a note, where `chromedriver` or `chromium` is not on
//! PATH; where both are, a failure is a failure.

mod common;

use common::*;
use mismatch_label::{spawn, ServerConfig};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?).map(|d| d.join(name)).find(|p| p.is_file())
}

/// Polls `f` until it returns `Some`, for at most 30 s (a deadline against hanging, not a timing assertion).
fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A chromedriver process and one browser session: the W3C WebDriver protocol, JSON over HTTP.
struct Driver {
    child: Child,
    base: String,
    agent: ureq::Agent,
}

impl Driver {
    fn start(chromedriver: &PathBuf, chromium: &PathBuf) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // A fresh connection per command: chromedriver may close an idle keep-alive connection, and a
        // pooled one would then fail on reuse.
        let agent: ureq::Agent =
            ureq::Agent::config_builder().http_status_as_error(false).max_idle_connections_per_host(0).build().into();
        let mut d = Driver { child, base: format!("http://127.0.0.1:{port}"), agent };
        wait_for("chromedriver", || {
            let r = d.agent.get(&format!("{}/status", d.base)).call().ok()?;
            (r.status() == 200).then_some(())
        });
        let caps = json!({ "capabilities": { "alwaysMatch": { "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        } } } });
        let v = d.call("POST", "/session", Some(caps));
        d.base = format!("{}/session/{}", d.base, v["sessionId"].as_str().expect("a session id"));
        d
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let mut r = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self.agent.post(&url).header("Content-Type", "application/json").send(body.unwrap().to_string()),
        }
        .unwrap_or_else(|e| panic!("webdriver {method} {path}: {e}"));
        let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None).as_str().unwrap().to_owned()
    }

    /// The text of the first element matching a CSS selector, if there is one.
    fn text(&self, css: &str) -> Option<String> {
        let id = self.element(css)?;
        self.call("GET", &format!("/element/{id}/text"), None).as_str().map(str::to_owned)
    }

    fn press(&self, key: &str) {
        let actions = json!({ "actions": [{ "type": "key", "id": "keyboard", "actions": [
            { "type": "keyDown", "value": key }, { "type": "keyUp", "value": key } ] }] });
        self.call("POST", "/actions", Some(actions));
    }

    /// The W3C web element identifier: the key under which a found element's reference comes back.
    const ELEMENT: &'static str = "element-6066-11e4-a52e-4f735466cecf";

    /// The first element matching a CSS selector; `None` while there is none (a "no such element" error).
    fn element(&self, css: &str) -> Option<String> {
        let e = self.call("POST", "/element", Some(json!({ "using": "css selector", "value": css })));
        e.get(Self::ELEMENT)?.as_str().map(str::to_owned)
    }

    fn click(&self, css: &str) {
        let id = self.element(css).unwrap_or_else(|| panic!("no element {css}"));
        self.call("POST", &format!("/element/{id}/click"), Some(json!({})));
    }

    /// Runs a script in the page (WebDriver's own channel, not subject to the page's CSP).
    fn script(&self, js: &str) -> Value {
        self.call("POST", "/execute/sync", Some(json!({ "script": js, "args": [] })))
    }

    /// The text of an open alert (a script from a response ran), if any.
    fn alert(&self) -> Option<String> {
        self.call("GET", "/alert/text", None).as_str().map(str::to_owned)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.base).call();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_headless_browser_labels_with_the_keyboard() {
    let (Some(chromedriver), Some(chromium)) = (on_path("chromedriver"), on_path("chromium")) else {
        eprintln!("skipped: chromedriver and chromium are needed on PATH for the browser test");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pairs.jsonl");
    let mut s = String::new();
    for i in 1..=4 {
        let evil = format!("<img src=x onerror=alert({i})><script>alert('s{i}')</script>");
        let row = json!({ "prompt": format!("prompt-{i} {evil}"), "chosen": format!("item-{i}-first {evil}"),
            "rejected": format!("item-{i}-second") });
        s.push_str(&format!("{row}\n"));
    }
    std::fs::write(&f, s).unwrap();
    let db = database(dir.path(), &f);
    let token = annotator(&db, "alice", false);
    let server = spawn(&ServerConfig { per_item: 1, ..ServerConfig::new(&db) }).unwrap();
    let d = Driver::start(&chromedriver, &chromium);

    d.go(&format!("{}/login?token={token}", server.url()));
    // app.js forwards the login page to /task: the script ran under the CSP and the cookie was sent.
    wait_for("the forward to /task", || d.url().ends_with("/task").then_some(()));
    // A foreign page that knows the CSRF token and the item posts a label: the browser marks the request
    // cross-site (and withholds the Strict cookie); the server refuses it and writes nothing.
    let csrf = d.script("return document.querySelector('input[name=csrf]').value");
    let item = d.script("return document.querySelector('input[name=item]').value");
    let forged = format!(
        "<form method=post action='{}/label'><input name=csrf value='{}'><input name=item value='{}'>\
         <button name=choice value=left id=go>go</button></form>",
        server.url(),
        csrf.as_str().unwrap(),
        item.as_str().unwrap()
    );
    d.go(&format!("data:text/html,{}", forged.replace('#', "%23")));
    d.click("#go");
    let refused = wait_for("the refusal", || d.text("h1").filter(|h| !h.is_empty() && d.url().ends_with("/label")));
    assert_eq!(refused, "Forbidden", "the Origin check answers first");
    assert_eq!(d.text("main p").unwrap(), "cross-origin request refused");
    assert_eq!(label_rows(&db), 0);
    d.go(&format!("{}/task", server.url()));

    // A screenshot of the task page as an annotator sees it (target/tmp/label-task.png).
    wait_for("the task page", || d.text("#left .text"));
    let png = base64(d.call("GET", "/screenshot", None).as_str().expect("a base64 PNG"));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot of {} bytes", png.len());
    std::fs::write(Path::new(env!("CARGO_TARGET_TMPDIR")).join("label-task.png"), &png).unwrap();

    // Keys in order: 1 (A = left), b (B = right), t (tie), x (both bad).
    let keys = ["1", "b", "t", "x"];
    let mut left_texts = Vec::new();
    for (k, key) in keys.iter().enumerate() {
        let left = wait_for("the next pair", || {
            let t = d.text("#left .text")?;
            let p = d.text(".progress")?;
            p.starts_with(&format!("{k} labelled")).then_some(t)
        });
        let prompt = d.text(".prompt .text").unwrap();
        assert!(prompt.contains("<img src=x onerror=") && prompt.contains("<script>"), "markup as text: {prompt}");
        assert_eq!(d.alert(), None, "no script from a response ran");
        left_texts.push(left);
        d.press(key);
        wait_for("the label to be stored", || (label_rows(&db) == k as i64 + 1).then_some(()));
    }
    wait_for("the done page", || d.text("h1").filter(|h| h.contains("Nothing left")));

    let conn = rusqlite::Connection::open(&db).unwrap();
    let rows: Vec<(String, Option<bool>, String)> = conn
        .prepare(
            "SELECT l.choice, l.chose_left, i.response_a FROM labels l JOIN items i ON i.id = l.item ORDER BY l.id",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rows.iter().map(|r| r.1).collect::<Vec<_>>(), [Some(true), Some(false), None, None]);
    for (k, (choice, _, a)) in rows.iter().enumerate() {
        let a: String = serde_json::from_str(a).unwrap();
        let a_on_left = left_texts[k] == a;
        let want = match k {
            0 if a_on_left => "a",
            0 => "b",
            1 if a_on_left => "b",
            1 => "a",
            2 => "tie",
            _ => "both_bad",
        };
        assert_eq!(choice, want, "label {k}: key {} with A on the left: {a_on_left}", keys[k]);
    }
}

/// Standard base64 (RFC 4648, with padding), as WebDriver returns screenshots.
fn base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=' && !c.is_ascii_whitespace()).map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, &d)| acc | (d as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
