//! Progress bars: shown on a terminal unless `--no-progress`.

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn bar(show: bool, len: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{prefix:>22} [{bar:30}] {pos}/{len} {msg} ({elapsed})")
            .expect("valid template")
            .progress_chars("=> "),
    );
    b.set_prefix(what.to_string());
    b
}

/// The bars of seeds run side by side, drawn together (hidden unless `show`).
pub fn group(show: bool) -> MultiProgress {
    let multi = MultiProgress::new();
    if !show {
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
    multi
}
