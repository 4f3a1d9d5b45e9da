//! Labels acknowledged before the server is killed (SIGKILL, no shutdown of any kind) are in the database
//! when it is opened again. The server runs as a child process: the crate's `mismatch-label` binary.

mod common;

use common::*;
use std::io::BufRead;
use std::process::{Command, Stdio};

/// Starts `mismatch-label serve` on a free port; returns the child, its URL and the database path.
/// The child's stdout reader is returned too: dropping it would close the pipe under the server.
fn start(dir: &std::path::Path) -> (std::process::Child, String, std::path::PathBuf, impl Sized) {
    let pairs = pairs_file(dir, 30);
    let db = dir.join("labels.sqlite");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mismatch-label"))
        .args(["serve", "--per-item", "1", "--port", "0", "--pairs"])
        .arg(&pairs)
        .arg("--db")
        .arg(&db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut url = None;
    for _ in 0..3 {
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        if let Some(rest) = line.strip_prefix("listening on ") {
            url = Some(rest.split_whitespace().next().unwrap().to_owned());
            break;
        }
    }
    (child, url.expect("the server prints its address"), db, out)
}

/// Logs in a new annotator and posts `n` labels, each acknowledged with a 303.
fn post_labels(url: &str, db: &std::path::Path, name: &str, n: usize) {
    let token = annotator(db, name, false);
    let c = Client::login(url, &token);
    for _ in 0..n {
        let s = shown(&c.get("/task").body).unwrap();
        let r = c.post("/label", &[("csrf", &s.csrf), ("item", &s.item), ("choice", "right"), ("strength", "3")], None);
        assert_eq!(r.status, 303);
    }
}

#[test]
fn acknowledged_labels_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, db, _out) = start(dir.path());
    // The database exists once the server listens; annotators can be added while it runs (WAL).
    post_labels(&url, &db, "alice", 20);
    child.kill().unwrap(); // SIGKILL: no shutdown code runs
    child.wait().unwrap();
    assert_eq!(label_rows(&db), 20);
    let out = dir.path().join("out.jsonl");
    let rep = mismatch_label::export::export(&db, &out, mismatch_label::export::Aggregate::All, 1).unwrap();
    assert_eq!(rep.rows, 20);
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, db, _out) = start(dir.path());
    post_labels(&url, &db, "bob", 3);
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success(), "graceful shutdown exits 0");
    assert_eq!(label_rows(&db), 3);
}
