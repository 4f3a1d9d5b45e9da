//! Shared test helpers: a pairs file, annotators, and an HTTP client that keeps its session cookie and
//! never follows redirects (so tests see the 303s, 401s and 403s themselves).
#![allow(dead_code)]

use mismatch_label::{auth, db, import};
use std::path::{Path, PathBuf};

/// Writes a TRL JSONL pairs file with `n` pairs: prompt `prompt-i`, responses `item-i-first` (chosen, so
/// the database's response A) and `item-i-second`.
pub fn pairs_file(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join("pairs.jsonl");
    let mut s = String::new();
    for i in 1..=n {
        let row = serde_json::json!({
            "prompt": format!("prompt-{i}"),
            "chosen": format!("item-{i}-first"),
            "rejected": format!("item-{i}-second"),
        });
        s.push_str(&row.to_string());
        s.push('\n');
    }
    std::fs::write(&path, s).unwrap();
    path
}

/// A database at `dir/labels.sqlite` holding the pairs of `pairs`.
pub fn database(dir: &Path, pairs: &Path) -> PathBuf {
    let db = dir.join("labels.sqlite");
    import::import_file(&db, pairs).unwrap();
    db
}

/// Adds an annotator and returns their login token.
pub fn annotator(db_path: &Path, name: &str, admin: bool) -> String {
    let mut conn = db::open(db_path).unwrap();
    auth::add_annotator(&mut conn, name, admin, false).unwrap()
}

pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A browser stand-in: one cookie, no redirects, statuses returned rather than raised.
pub struct Client {
    agent: ureq::Agent,
    pub base: String,
    pub cookie: Option<String>,
}

fn convert(mut r: ureq::http::Response<ureq::Body>) -> Resp {
    let headers =
        r.headers().iter().map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned())).collect();
    let body = r.body_mut().read_to_string().unwrap_or_default();
    Resp { status: r.status().as_u16(), headers, body }
}

impl Client {
    pub fn new(base: &str) -> Client {
        let agent = ureq::Agent::config_builder().http_status_as_error(false).max_redirects(0).build().into();
        Client { agent, base: base.to_owned(), cookie: None }
    }

    /// Opens the login link and keeps the session cookie it sets.
    pub fn login(base: &str, token: &str) -> Client {
        let mut c = Client::new(base);
        let r = c.get(&format!("/login?token={token}"));
        assert_eq!(r.status, 200, "{}", r.body);
        let set = r.header("set-cookie").expect("login sets a cookie").to_owned();
        for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set.contains(attr), "cookie {set} lacks {attr}");
        }
        c.cookie = Some(set.split(';').next().unwrap().to_owned());
        c
    }

    pub fn get(&self, path: &str) -> Resp {
        let mut req = self.agent.get(&format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", c);
        }
        convert(req.call().unwrap())
    }

    /// POSTs a form; `origin`: an Origin header to send, if any.
    pub fn post(&self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Resp {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        self.post_with(path, form, &headers)
    }

    /// POSTs a form with extra headers.
    pub fn post_with(&self, path: &str, form: &[(&str, &str)], headers: &[(&str, &str)]) -> Resp {
        let mut req = self.agent.post(&format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("Cookie", c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        convert(req.send_form(form.iter().copied()).unwrap())
    }
}

/// The value of the first `name="NAME" value="…"` in a page.
pub fn field(body: &str, name: &str) -> Option<String> {
    let key = format!("name=\"{name}\" value=\"");
    let start = body.find(&key)? + key.len();
    Some(body[start..start + body[start..].find('"')?].to_owned())
}

/// A task page as a test needs it: the item id, the CSRF token, the pair's number (from `prompt-N`), and
/// whether the file's first response is on the left.
pub struct Shown {
    pub item: String,
    pub csrf: String,
    pub n: usize,
    pub first_on_left: bool,
}

pub fn shown(body: &str) -> Option<Shown> {
    let item = field(body, "item")?;
    let csrf = field(body, "csrf")?;
    let p = body.find("prompt-")? + "prompt-".len();
    let n: usize = body[p..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()?;
    let first = body.find(&format!("item-{n}-first<"))?;
    let second = body.find(&format!("item-{n}-second<"))?;
    Some(Shown { item, csrf, n, first_on_left: first < second })
}

/// The screen choice (`left`/`right`) that picks the file's response `a` or `b`.
pub fn side(s: &Shown, file_choice: &str) -> &'static str {
    match (file_choice, s.first_on_left) {
        ("a", true) | ("b", false) => "left",
        ("a", false) | ("b", true) => "right",
        (other, _) => panic!("not a response: {other}"),
    }
}

/// Labels rows in the database.
pub fn label_rows(db_path: &Path) -> i64 {
    let conn = rusqlite::Connection::open(db_path).unwrap();
    conn.query_row("SELECT COUNT(*) FROM labels", [], |r| r.get(0)).unwrap()
}
