//! Checkpoints in Hugging Face layout: a directory holding `model.safetensors`, `config.json`
//! and the tokenizer files. Every write is atomic: files are staged in a sibling temporary
//! directory which replaces the target by rename, so a crash mid-save leaves the previous
//! checkpoint (or nothing) and never a half-written one.

use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One file of a checkpoint: its name inside the directory and its bytes.
pub enum CheckpointFile<'a> {
    Bytes(&'a str, Vec<u8>),
    /// A file copied from elsewhere (e.g. the tokenizer the model was loaded with).
    Copy(&'a str, PathBuf),
}

/// Writes `bytes` to `path` atomically (temp file in the same directory, fsync, rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
    tmp.write_all(bytes).map_err(|e| Error::io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| Error::io(path, e))?;
    tmp.persist(path).map_err(|e| Error::io(path, e.error))?;
    Ok(())
}

/// Serialises named tensors to safetensors bytes (names sorted, so output is reproducible).
pub fn safetensors_bytes(tensors: &HashMap<String, Tensor>) -> Result<Vec<u8>> {
    let mut named: Vec<(&String, &Tensor)> = tensors.iter().collect();
    named.sort_by(|a, b| a.0.cmp(b.0));
    let named: Vec<(String, Tensor)> = named
        .into_iter()
        .map(|(k, v)| Ok((k.clone(), v.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<candle_core::Result<_>>()?;
    Ok(safetensors::serialize(named.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| Error::Usage(format!("serialising tensors: {e}")))?)
}

/// Writes a checkpoint directory atomically: `model.safetensors` from `tensors`,
/// `config.json` from `config`, plus `extra` files. An existing `dir` is replaced whole.
pub fn save_checkpoint(
    dir: &Path,
    tensors: &HashMap<String, Tensor>,
    config: &serde_json::Value,
    extra: Vec<CheckpointFile<'_>>,
) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let stage = tempfile::Builder::new().prefix(".ckpt-").tempdir_in(parent).map_err(|e| Error::io(parent, e))?;
    let put = |name: &str, bytes: &[u8]| -> Result<()> {
        let p = stage.path().join(name);
        // Names may have a subdirectory (sentence-transformers' `1_Pooling/config.json`).
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
        }
        let mut f = std::fs::File::create(&p).map_err(|e| Error::io(&p, e))?;
        f.write_all(bytes).map_err(|e| Error::io(&p, e))?;
        f.sync_all().map_err(|e| Error::io(&p, e))
    };
    put("model.safetensors", &safetensors_bytes(tensors)?)?;
    let cfg = serde_json::to_vec_pretty(config).map_err(|e| Error::Usage(format!("config: {e}")))?;
    put("config.json", &cfg)?;
    for f in extra {
        match f {
            CheckpointFile::Bytes(name, bytes) => put(name, &bytes)?,
            CheckpointFile::Copy(name, src) => {
                let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
                put(name, &bytes)?
            }
        }
    }
    replace_dir(&stage.keep(), dir)
}

/// Moves a fully written staging directory to `dir`, replacing any existing `dir` whole: the
/// old directory is renamed aside, the new one renamed in, then the old one deleted. `stage`
/// must be on the same filesystem as `dir` (a sibling), so both renames are atomic.
pub fn replace_dir(stage: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("ckpt");
        let old = parent.join(format!(".old-{}-{name}", std::process::id()));
        std::fs::rename(dir, &old).map_err(|e| Error::io(dir, e))?;
        std::fs::rename(stage, dir).map_err(|e| Error::io(dir, e))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(stage, dir).map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

/// Loads every tensor of a safetensors file, with the file named in any error.
pub fn load_safetensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::invalid(path, "file not found"));
    }
    candle_core::safetensors::load(path, device)
        .map_err(|e| Error::invalid(path, format!("not a valid safetensors file: {e}")))
}

/// A config's layer count checked against a checkpoint of `tensors` tensors before every layer's
/// expected tensors are listed: with more layers than tensors (a corrupt count would make that list
/// endless), the first of layers `0..=tensors` whose tensor is absent, as `absent(layer)` names it
/// (one is, since there are more names than tensors); `None` when `layers <= tensors`.
pub(crate) fn missing_layer(layers: usize, tensors: usize, absent: impl Fn(usize) -> Option<String>) -> Option<String> {
    if layers <= tensors {
        return None;
    }
    (0..=tensors).find_map(absent)
}

/// Reads and parses a JSON file, naming the file (and line/column) on failure.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::invalid(path, format!("line {}, column {}: {e}", e.line(), e.column())))
}

/// Parses a TOML config read from `path`; an error names the file, the line and the field
/// (`table.key`, read off the text at the error's position), e.g.
/// `run.toml: line 2, field rl.steps: invalid type: string "many", expected usize`.
pub fn parse_toml<T: serde::de::DeserializeOwned>(path: &Path, text: &str) -> Result<T> {
    toml::from_str(text).map_err(|e| {
        let Some(start) = e.span().map(|s| s.start.min(text.len())) else {
            return Error::invalid(path, e.message().to_string());
        };
        let line = text[..start].matches('\n').count() + 1;
        let field = toml_field_at(text, line).map(|f| format!(", field {f}")).unwrap_or_default();
        Error::invalid(path, format!("line {line}{field}: {}", e.message()))
    })
}

/// The dotted key set on 1-based `line` (`key = …` under the nearest `[table]` header above).
fn toml_field_at(text: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = lines.get(line.checked_sub(1)?)?.trim();
    let key = here.split_once('=').map(|(k, _)| k.trim().trim_matches('"').to_string()).filter(|k| !k.is_empty())?;
    let table = lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_start_matches('[').trim_end_matches(']').trim().to_string());
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_errors_name_file_line_and_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Rl {
            steps: usize,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Cfg {
            seed: u64,
            rl: Rl,
        }
        let p = Path::new("run.toml");
        let e = parse_toml::<Cfg>(p, "seed = 1\n\n[rl]\nsteps = \"many\"\n").unwrap_err().to_string();
        assert!(e.contains("run.toml") && e.contains("line 4, field rl.steps") && e.contains("usize"), "{e}");
        let e = parse_toml::<Cfg>(p, "seed = -1\n[rl]\nsteps = 3\n").unwrap_err().to_string();
        assert!(e.contains("line 1, field seed"), "{e}");
        assert!(parse_toml::<Cfg>(p, "seed = 1\n[rl]\nsteps = 3\n").is_ok());
    }

    #[test]
    fn save_replaces_atomically_and_roundtrips_bit_identical() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ckpt");
        let t = Tensor::randn(0f32, 1.0, (3, 4), &Device::Cpu).unwrap();
        let mut m = HashMap::new();
        m.insert("w".to_string(), t.clone());
        let cfg = serde_json::json!({"model_type": "test"});
        save_checkpoint(&dir, &m, &cfg, vec![CheckpointFile::Bytes("tokenizer.json", b"{}".to_vec())]).unwrap();
        // Overwrite with different weights: the directory is replaced whole.
        m.insert("w".to_string(), (&t + 1.0).unwrap());
        save_checkpoint(&dir, &m, &cfg, vec![]).unwrap();
        assert!(!dir.join("tokenizer.json").exists());
        let back = load_safetensors(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
        let want = (&t + 1.0).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(back["w"].to_vec2::<f32>().unwrap(), want);
        let leftovers: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("ckpt")]);
    }

    #[test]
    fn corrupt_safetensors_names_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("model.safetensors");
        std::fs::write(&p, b"garbage").unwrap();
        let err = load_safetensors(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("model.safetensors") && err.contains("not a valid safetensors"), "{err}");
    }
}
