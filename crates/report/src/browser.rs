//! Renders a report in headless Chromium and reads back what the page's own check found (see
//! [`crate::html`]): how many plots drew with a nonzero size, and any script errors.
//!
//! Chromium runs with `--dump-dom` under a virtual-time budget, so the `load` handler has run
//! when the DOM is printed; the `data-*` attributes it set on `<body>` are parsed from that dump.
//! Uncaught exceptions are also read from Chromium's own console log on stderr
//! (`--enable-logging=stderr`), which catches errors even in pages without the recorder script.

use mismatch_models::{Error, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What Chromium saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserCheck {
    /// `svg.plot` elements that rendered with a nonzero size.
    pub plots: usize,
    /// The page reported every plot drawn and no errors, and Chromium logged no uncaught error.
    pub ok: bool,
    /// Uncaught exceptions, failed loads and `console.error` messages, without duplicates.
    pub console_errors: Vec<String>,
}

/// A Chromium run that takes longer than this is killed and reported as an error.
const TIMEOUT: Duration = Duration::from_secs(90);

/// The Chromium binary: `$CHROMIUM` if set, else `/usr/bin/chromium`.
pub fn chromium_path() -> Result<PathBuf> {
    let p = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(Error::Usage(format!(
            "chromium not found at {} (set $CHROMIUM, or install it: `apt-get install chromium`)",
            p.display()
        )))
    }
}

/// Opens `html` in headless Chromium, waits for the page to load, and returns what the page's
/// check reported. With `screenshot`, also writes a 1200×2400 PNG of the top of the page.
pub fn check_in_chromium(html: &Path, screenshot: Option<&Path>) -> Result<BrowserCheck> {
    let bin = chromium_path()?;
    let abs = std::fs::canonicalize(html).map_err(|e| Error::io(html, e))?;
    // A private profile: parallel runs would otherwise fight over the default profile's lock.
    let profile = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let out_path = profile.path().join("dom.html");
    let err_path = profile.path().join("stderr.txt");
    let mut cmd = Command::new(&bin);
    cmd.args(["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions"])
        .arg("--disable-dev-shm-usage")
        .args(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--window-size=1200,2400"])
        .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
        .arg("--dump-dom");
    if let Some(shot) = screenshot {
        let shot = absolute(shot)?;
        if let Some(dir) = shot.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        cmd.arg(format!("--screenshot={}", shot.display()));
    }
    cmd.arg(file_url(&abs));
    // Output goes to files, not pipes: a chatty Chromium could fill a pipe while we wait on it.
    let stdout = std::fs::File::create(&out_path).map_err(|e| Error::io(&out_path, e))?;
    let stderr = std::fs::File::create(&err_path).map_err(|e| Error::io(&err_path, e))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| Error::Usage(format!("cannot start {}: {e}", bin.display())))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| Error::io(&bin, e))? {
            Some(s) => break s,
            None if start.elapsed() > TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Usage(format!("chromium did not finish {} within {TIMEOUT:?}", html.display())));
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let dom = std::fs::read_to_string(&out_path).map_err(|e| Error::io(&out_path, e))?;
    let log = String::from_utf8_lossy(&std::fs::read(&err_path).map_err(|e| Error::io(&err_path, e))?).into_owned();
    if !status.success() || dom.trim().is_empty() {
        let tail: Vec<&str> = log.lines().rev().take(15).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(Error::Usage(format!("chromium failed on {} ({status}):\n{}", html.display(), tail.join("\n"))));
    }
    Ok(parse(&dom, &log))
}

/// Interprets Chromium's DOM dump and stderr log.
fn parse(dom: &str, log: &str) -> BrowserCheck {
    let attrs = body_attrs(dom);
    let get = |k: &str| attrs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let plots = get("data-plots").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut errors: Vec<String> = get("data-errors").and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default();
    for e in uncaught(log) {
        if !errors.contains(&e) {
            errors.push(e);
        }
    }
    let ok = get("data-ok") == Some("true") && errors.is_empty();
    BrowserCheck { plots, ok, console_errors: errors }
}

/// Console messages that are uncaught exceptions, from lines such as
/// `[..:INFO:CONSOLE:1] "Uncaught ReferenceError: f is not defined", source: file:///x.html (1)`.
/// Chromium logs every console level the same way, so only "Uncaught" can be told apart here;
/// `console.error` calls reach us through the page's recorder instead.
fn uncaught(log: &str) -> Vec<String> {
    let mut out = vec![];
    for line in log.lines() {
        let Some(pos) = line.find("CONSOLE") else { continue };
        let Some(q) = line[pos..].find("] \"") else { continue };
        let msg = &line[pos + q + 3..];
        let msg = msg.rsplit_once("\", source:").map(|(m, _)| m).unwrap_or(msg.trim_end_matches('"'));
        if msg.starts_with("Uncaught") {
            out.push(msg.to_string());
        }
    }
    out
}

/// Attributes of the first `<body ...>` tag, values un-escaped.
fn body_attrs(dom: &str) -> Vec<(String, String)> {
    let Some(start) = dom.find("<body") else { return vec![] };
    let b = &dom.as_bytes()[start + 5..];
    let mut out = vec![];
    let mut i = 0;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() || b[i] == b'>' || b[i] == b'/' {
            break;
        }
        let ns = i;
        while i < b.len() && !b"= \t\n\r>".contains(&b[i]) {
            i += 1;
        }
        let name = String::from_utf8_lossy(&b[ns..i]).to_ascii_lowercase();
        let mut value = String::new();
        if i < b.len() && b[i] == b'=' {
            i += 1;
            if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                let q = b[i];
                let vs = i + 1;
                i = vs;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
                value = unescape(&String::from_utf8_lossy(&b[vs..i.min(b.len())]));
                i += 1;
            } else {
                let vs = i;
                while i < b.len() && !b[i].is_ascii_whitespace() && b[i] != b'>' {
                    i += 1;
                }
                value = unescape(&String::from_utf8_lossy(&b[vs..i]));
            }
        }
        out.push((name, value));
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir().map_err(|e| Error::io(".", e))?.join(p))
    }
}

/// `file://` URL of an absolute path, percent-encoding everything but unreserved characters and `/`.
fn file_url(p: &Path) -> String {
    let mut s = String::from("file://");
    for &c in p.to_string_lossy().as_bytes() {
        if c.is_ascii_alphanumeric() || b"/-._~".contains(&c) {
            s.push(c as char);
        } else {
            s.push_str(&format!("%{c:02X}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_body_attributes_and_console_log() {
        let dom = r#"<html><head></head><body class="x" data-plots="2" data-plots-total="2" data-errors="[&quot;Uncaught Error: a &amp; b&quot;,&quot;boom&quot;]" data-ok="false"><p>hi</p></body></html>"#;
        let log = "[1:1:1126/214533.396803:INFO:CONSOLE:1] \"just a log\", source: file:///t.html (1)\n\
                   [1:1:1126/214533.396889:INFO:CONSOLE:1] \"Uncaught Error: a & b\", source: file:///t.html (1)\n\
                   [1:1:1126/214533.396889:INFO:CONSOLE:7] \"Uncaught TypeError: x\", source: file:///t.html (7)\n";
        let c = parse(dom, log);
        assert_eq!(c.plots, 2);
        assert!(!c.ok);
        assert_eq!(c.console_errors, ["Uncaught Error: a & b", "boom", "Uncaught TypeError: x"]);
        let clean = parse(r#"<body data-plots="3" data-errors="[]" data-ok="true">"#, "");
        assert_eq!(clean, BrowserCheck { plots: 3, ok: true, console_errors: vec![] });
        // An uncaught error in the log alone makes the page not ok.
        assert!(!parse(r#"<body data-plots="3" data-errors="[]" data-ok="true">"#, log).ok);
        // A page without the check script is never ok.
        assert!(!parse("<body><p>x</p></body>", "").ok);
    }

    #[test]
    fn file_urls_are_encoded() {
        assert_eq!(file_url(Path::new("/tmp/a b/r#1.html")), "file:///tmp/a%20b/r%231.html");
    }
}
