//! Labels acknowledged before the server is killed (SIGKILL, no shutdown of any kind) are in the database
//! when it is opened again. The server runs as a child process: the crate's `mismatch-label` binary.

mod common;

use common::*;
use std::io::BufRead;
use std::process::{Command, Stdio};

#[test]
fn acknowledged_labels_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let pairs = pairs_file(dir.path(), 30);
    let db = dir.path().join("labels.sqlite");
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
    let url = url.expect("the server prints its address");
    // The database exists once the server listens; annotators can be added while it runs (WAL).
    let token = annotator(&db, "alice", false);
    let c = Client::login(&url, &token);
    for _ in 0..20 {
        let s = shown(&c.get("/task").body).unwrap();
        let r = c.post("/label", &[("csrf", &s.csrf), ("item", &s.item), ("choice", "right"), ("strength", "3")], None);
        assert_eq!(r.status, 303);
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(label_rows(&db), 20);
    let out = dir.path().join("out.jsonl");
    let rep = mismatch_label::export::export(&db, &out, mismatch_label::export::Aggregate::All, 1).unwrap();
    assert_eq!(rep.rows, 20);
}
