//! Renders report pages in real headless Chromium. Needs `chromium` (Debian package; CI installs
//! it) at `/usr/bin/chromium` or `$CHROMIUM`; without it these tests fail rather than skip.

use mismatch_report::{check_in_chromium, BarChart, Bars, LinePlot, Page, Series};
use std::path::Path;

fn require_chromium() {
    if let Err(e) = mismatch_report::browser::chromium_path() {
        panic!("{e}\nThe browser tests need Chromium: `apt-get install chromium` (or set $CHROMIUM).");
    }
}

fn report() -> Page {
    let xs: Vec<f64> = (0..10).map(|i| i as f64 * 0.5).collect();
    let gold: Vec<f64> = xs.iter().map(|d| d * (1.2 - 0.3 * d)).collect();
    let lo = gold.iter().map(|g| g - 0.1).collect();
    let hi = gold.iter().map(|g| g + 0.1).collect();
    let line = LinePlot {
        title: "Gold vs √KL".into(),
        x_label: "√KL".into(),
        y_label: "gold".into(),
        series: vec![
            Series { band: Some((lo, hi)), points: true, ..Series::new("gold", xs.clone(), gold) },
            Series { dashed: true, ..Series::new("proxy", xs.clone(), xs.iter().map(|d| 0.9 * d).collect()) },
        ],
        vlines: vec![(2.0, "d* = 2.0".into())],
        log_x: false,
    };
    let bars = BarChart {
        title: "Refusal rates".into(),
        x_label: "policy".into(),
        y_label: "rate".into(),
        categories: vec!["base".into(), "ppo".into()],
        series: vec![Bars { name: "harmful".into(), values: vec![0.2, 0.6], ci: Some(vec![(0.1, 0.3), (0.5, 0.7)]) }],
    };
    let mut page = Page::new("Browser test <report>");
    page.headline(&[("gold Δ", "−0.12 [−0.20, −0.05]"), ("ρ(train, gold)", "0.41 [0.10, 0.70]")]);
    page.section("Curves").paragraph("Gold rises, then falls <as predicted>.").plot(line.to_svg());
    page.section("Rates").plot(bars.to_svg()).table(&["policy", "rate"], &[vec!["base", "0.2"], vec!["ppo", "0.6"]]);
    page.code("mismatch run --seed 0");
    page
}

fn write(page: &Page, dir: &Path, name: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    page.write(&p).unwrap();
    p
}

#[test]
fn report_renders_every_plot_without_errors() {
    require_chromium();
    let dir = tempfile::tempdir().unwrap();
    let path = write(&report(), dir.path(), "report.html");
    let shot = dir.path().join("shots/report.png");
    let check = check_in_chromium(&path, Some(&shot)).unwrap();
    assert_eq!(check.console_errors, Vec::<String>::new());
    assert_eq!(check.plots, 2, "{check:?}");
    assert!(check.ok, "{check:?}");
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "screenshot of {} bytes", png.len());
}

#[test]
fn script_errors_are_reported() {
    require_chromium();
    let dir = tempfile::tempdir().unwrap();
    let mut page = report();
    page.html("<script>undefinedFunctionInReport();</script>");
    let check = check_in_chromium(&write(&page, dir.path(), "thrown.html"), None).unwrap();
    assert!(!check.ok, "{check:?}");
    assert!(check.console_errors.iter().any(|e| e.contains("undefinedFunctionInReport")), "{check:?}");
    assert_eq!(check.plots, 2, "the error does not stop the plots from drawing");

    let mut page = report();
    page.html("<script>console.error('bad data in table 3');</script>");
    let check = check_in_chromium(&write(&page, dir.path(), "logged.html"), None).unwrap();
    assert!(!check.ok);
    assert_eq!(check.console_errors, ["bad data in table 3"]);
}

#[test]
fn a_plot_that_does_not_draw_is_caught() {
    require_chromium();
    let dir = tempfile::tempdir().unwrap();
    let mut page = report();
    page.html(r#"<div style="display:none"><svg class="plot" role="img" viewBox="0 0 10 10"><title>hidden</title></svg></div>"#);
    let check = check_in_chromium(&write(&page, dir.path(), "hidden.html"), None).unwrap();
    assert_eq!(check.plots, 2, "the hidden plot has zero size");
    assert!(!check.ok && check.console_errors.is_empty(), "{check:?}");
}

#[test]
fn missing_file_is_an_error() {
    require_chromium();
    let e = check_in_chromium(Path::new("/nonexistent/report.html"), None).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/report.html"), "{e}");
}
