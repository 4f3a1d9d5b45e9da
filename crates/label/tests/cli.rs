//! The commands as a user runs them (the crate's `mismatch-label` binary): login links whose token is not
//! stored, rotation, and errors that name the file and exit non-zero.

mod common;

use common::*;
use mismatch_label::{spawn, ServerConfig};
use std::process::{Command, Output};

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mismatch-label")).args(args).output().unwrap()
}

fn token_of(out: &Output) -> String {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let link = text.split_whitespace().find(|w| w.contains("/login?token=")).expect("a login link");
    assert!(link.starts_with("http://127.0.0.1:8080/login?token="), "{link}");
    link.rsplit('=').next().unwrap().to_owned()
}

#[test]
fn login_links_rotation_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("labels.sqlite");
    let db_s = db.to_str().unwrap();
    let first = token_of(&bin(&["add-annotator", "--db", db_s, "alice"]));
    assert_eq!(first.len(), 64);
    let admin = bin(&["add-annotator", "--db", db_s, "root", "--admin"]);
    assert!(String::from_utf8_lossy(&admin.stdout).starts_with("admin root: "));
    let admin = token_of(&admin);

    // Only the SHA-256 of a token is stored: the token itself is nowhere in the database files.
    for f in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(f.unwrap().path()).unwrap();
        assert!(!bytes.windows(64).any(|w| w == first.as_bytes() || w == admin.as_bytes()));
    }

    let again = bin(&["add-annotator", "--db", db_s, "alice"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--rotate"));
    let rotated = token_of(&bin(&["add-annotator", "--db", db_s, "alice", "--rotate"]));
    assert_ne!(rotated, first);

    let pairs = pairs_file(dir.path(), 3);
    mismatch_label::import::import_file(&db, &pairs).unwrap();
    let server = spawn(&ServerConfig::new(&db)).unwrap();
    assert_eq!(Client::new(&server.url()).get(&format!("/login?token={first}")).status, 401, "the old link is dead");
    let alice = Client::login(&server.url(), &rotated);
    assert_eq!(alice.get("/task").status, 200);
    drop(server);

    // A garbled pairs file: non-zero exit, the file and line named, the database unchanged.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"prompt\":\"p\",\"chosen\":\"c\",\"rejected\":\"r\"}\n\n{\"prompt\":\"p\",\"chosen\":1,\"rejected\":\"r\"}\n")
        .unwrap();
    let before = std::fs::read(&db).unwrap();
    let out = bin(&["serve", "--pairs", bad.to_str().unwrap(), "--db", db_s, "--port", "0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3", bad.display())) && err.contains("chosen"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before);

    // Export from a database that does not exist, and an empty one.
    let nowhere = dir.path().join("nowhere.sqlite");
    let out = bin(&["export", "--db", nowhere.to_str().unwrap(), "--out", "x.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere.sqlite"));
    assert!(!nowhere.exists());
    let out_path = dir.path().join("out.jsonl");
    let out = bin(&["export", "--db", db_s, "--out", out_path.to_str().unwrap(), "--aggregate", "all"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 rows from 0 labels"));
    assert_eq!(std::fs::read(&out_path).unwrap(), b"");
}
