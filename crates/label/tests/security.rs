//! What the server refuses: markup in texts, forged or cross-origin posts, posts for someone else's item,
//! anonymous access, annotators on the dashboard, oversized bodies.

mod common;

use common::*;
use mismatch_label::{spawn, Server, ServerConfig};
use std::path::PathBuf;

const XSS: &str = "<script>alert(1)</script><img src=x onerror=alert(2)>";

struct Setup {
    _dir: tempfile::TempDir,
    db: PathBuf,
    server: Server,
    alice: String,
    bob: String,
    admin: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs_file(dir.path(), 4);
    let db = database(dir.path(), &pairs);
    let alice = annotator(&db, "alice", false);
    let bob = annotator(&db, "bob", false);
    let admin = annotator(&db, "root", true);
    let server = spawn(&ServerConfig { per_item: 2, ..ServerConfig::new(&db) }).unwrap();
    Setup { _dir: dir, db, server, alice, bob, admin }
}

#[test]
fn markup_in_a_response_renders_as_text_under_a_strict_csp() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("xss.jsonl");
    // Markup in every place a text can be: a plain prompt and responses, and a conversation.
    let text = serde_json::json!({ "prompt": "say <marquee>hi</marquee>", "chosen": XSS, "rejected": "'\"&" });
    let chat = serde_json::json!({ "prompt": [{ "role": "user", "content": "<iframe src=x>" }],
        "chosen": [{ "role": "assistant", "content": XSS }],
        "rejected": [{ "role": "assistant", "content": "</div><script src=//evil.example/x.js></script>" }] });
    std::fs::write(&f, format!("{text}\n{chat}\n")).unwrap();
    let db = database(dir.path(), &f);
    let token = annotator(&db, "alice", false);
    let server = spawn(&ServerConfig::new(&db)).unwrap();
    let c = Client::login(&server.url(), &token);
    for _ in 0..2 {
        let page = c.get("/task");
        assert_eq!(page.status, 200);
        let csp = page.header("content-security-policy").expect("CSP header");
        for d in [
            "default-src 'self'",
            "script-src 'self'",
            "object-src 'none'",
            "frame-ancestors 'none'",
            "form-action 'self'",
        ] {
            assert!(csp.contains(d), "{csp} lacks {d}");
        }
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        let body = &page.body;
        for raw in ["<script>", "<img", "<marquee", "<iframe", "evil.example/x.js\"", "</div><script"] {
            assert!(!body.contains(raw), "{raw} appears unescaped");
        }
        assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"), "{body}");
        // The only script element is the app's own file.
        assert_eq!(body.matches("<script").count(), 1);
        assert!(body.contains("<script src=\"/static/app.js\" defer></script>"));
        let s = field(body, "item").unwrap();
        let csrf = field(body, "csrf").unwrap();
        assert_eq!(c.post("/label", &[("csrf", &csrf), ("item", &s), ("choice", "tie")], None).status, 303);
    }
    let js = c.get("/static/app.js");
    assert_eq!(js.status, 200);
    assert!(js.header("content-type").unwrap().starts_with("text/javascript"));
    assert!(js.body.contains("keydown"));
}

#[test]
fn forged_cross_origin_and_foreign_posts_are_refused_and_write_nothing() {
    let s = setup();
    let alice = Client::login(&s.server.url(), &s.alice);
    let bob = Client::login(&s.server.url(), &s.bob);
    let a = shown(&alice.get("/task").body).unwrap();
    let b = shown(&bob.get("/task").body).unwrap();
    assert_ne!(a.item, b.item, "balanced: bob gets an item nobody holds yet");
    let good =
        |csrf: &str, item: &str| vec![("csrf", csrf.to_owned()), ("item", item.to_owned()), ("choice", "left".into())];
    let post = |c: &Client, form: Vec<(&str, String)>, origin: Option<&str>| {
        let f: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        c.post("/label", &f, origin).status
    };

    // No CSRF token, a wrong one, and bob's token on alice's session.
    assert_eq!(post(&alice, vec![("item", a.item.clone()), ("choice", "left".into())], None), 403);
    assert_eq!(post(&alice, good(&"0".repeat(64), &a.item), None), 403);
    assert_eq!(post(&alice, good(&b.csrf, &a.item), None), 403);
    // The right token from a foreign page, and from an opaque origin.
    assert_eq!(post(&alice, good(&a.csrf, &a.item), Some("http://evil.example")), 403);
    assert_eq!(post(&alice, good(&a.csrf, &a.item), Some("null")), 403);
    // What browsers say about where a request comes from: another port on this host is "same-site" (and
    // would get the SameSite=Strict cookie), so only "same-origin" passes.
    let form = [("csrf", a.csrf.as_str()), ("item", a.item.as_str()), ("choice", "left")];
    for site in ["same-site", "cross-site", "none"] {
        assert_eq!(alice.post_with("/label", &form, &[("Sec-Fetch-Site", site)]).status, 403, "{site}");
    }
    let other_port = format!("http://127.0.0.1:{}", s.server.addr().port() + 1);
    assert_eq!(post(&alice, good(&a.csrf, &a.item), Some(&other_port)), 403);
    // Alice posting for bob's item (changing the item id in the form), and for an item nobody was given.
    assert_eq!(post(&alice, good(&a.csrf, &b.item), None), 403);
    assert_eq!(post(&alice, good(&a.csrf, "999"), None), 403);
    // Skips follow the same rules.
    assert_eq!(alice.post("/skip", &[("csrf", "x"), ("item", &a.item)], None).status, 403);
    assert_eq!(alice.post("/skip", &[("csrf", &a.csrf), ("item", &b.item)], None).status, 403);
    // Malformed values are a 400, and no session at all a 401.
    assert_eq!(
        post(&alice, vec![("csrf", a.csrf.clone()), ("item", a.item.clone()), ("choice", "c".into())], None),
        400
    );
    let mut bad = good(&a.csrf, &a.item);
    bad.push(("strength", "5".into()));
    assert_eq!(post(&alice, bad, None), 400);
    assert_eq!(post(&Client::new(&s.server.url()), good(&a.csrf, &a.item), None), 401);
    assert_eq!(label_rows(&s.db), 0, "nothing was written");
    // Bob's item is still his to label, alice's still hers.
    assert_eq!(shown(&bob.get("/task").body).unwrap().item, b.item);

    // The same-origin post with the right token is accepted; a repeat of it writes nothing more.
    assert_eq!(post(&alice, good(&a.csrf, &a.item), Some(&s.server.url())), 303);
    assert_eq!(post(&alice, good(&a.csrf, &a.item), None), 303);
    assert_eq!(label_rows(&s.db), 1);

    // A body over 64 KiB is refused before it is parsed.
    let mut big = good(&a.csrf, &a.item);
    big.push(("reason", "x".repeat(70 * 1024)));
    assert_eq!(post(&alice, big, None), 413);
    assert_eq!(label_rows(&s.db), 1);
}

#[test]
fn anonymous_requests_get_401_and_annotators_get_403_on_the_dashboard() {
    let s = setup();
    let anon = Client::new(&s.server.url());
    for path in ["/", "/task", "/dashboard", "/api/stats"] {
        let r = anon.get(path);
        assert_eq!(r.status, 401, "{path}");
        assert!(r.body.contains("You need a login link"), "{path}");
        assert!(!r.body.contains("prompt-"), "{path} leaks an item");
    }
    assert_eq!(anon.post("/label", &[("item", "1"), ("choice", "left")], None).status, 401);
    // A made-up cookie and a wrong token.
    let mut forged = Client::new(&s.server.url());
    forged.cookie = Some(format!("mismatch_label_session={}", "ab".repeat(32)));
    assert_eq!(forged.get("/task").status, 401);
    assert_eq!(anon.get(&format!("/login?token={}", "cd".repeat(32))).status, 401);
    assert_eq!(anon.get("/login").status, 401);
    assert_eq!(anon.get("/no/such/page").status, 404);
    assert_eq!(anon.get("/static/app.css").status, 200, "the stylesheet holds no data");

    let alice = Client::login(&s.server.url(), &s.alice);
    assert_eq!(alice.get("/dashboard").status, 403);
    assert_eq!(alice.get("/api/stats").status, 403);
    assert!(!alice.get("/task").body.contains("Dashboard"), "no dashboard link for annotators");
    let root = Client::login(&s.server.url(), &s.admin);
    assert_eq!(root.get("/dashboard").status, 200);
    let stats = root.get("/api/stats");
    assert_eq!(stats.status, 200);
    let v: serde_json::Value = serde_json::from_str(&stats.body).unwrap();
    assert_eq!(v["items"], 4);

    // Logging out ends the session server-side: the old cookie no longer works.
    let csrf = field(&alice.get("/task").body, "csrf").unwrap();
    assert_eq!(alice.post("/logout", &[("csrf", &csrf)], None).status, 200);
    assert_eq!(alice.get("/task").status, 401);
}
