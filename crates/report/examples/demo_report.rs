//! Writes a demo report (synthetic numbers) and checks it in Chromium:
//! `cargo run -p mismatch-report --example demo_report -- /tmp/demo.html [/tmp/demo.png]`.

use mismatch_eval::stats::{diff_ci, mean_ci, spearman_ci};
use mismatch_report::{check_in_chromium, fit_bon, fit_rl, BarChart, Bars, LinePlot, Page, Series};
use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(args.first().map(String::as_str).unwrap_or("demo_report.html"));
    let shot = args.get(1).map(PathBuf::from);

    // Synthetic over-optimisation curves: gold peaks, proxy keeps rising.
    let d: Vec<f64> = (0..16).map(|i| 0.25 * i as f64).collect();
    let wiggle = |i: usize| 0.04 * (((i * 7919) % 13) as f64 / 6.0 - 1.0);
    let gold_bon: Vec<f64> = d.iter().enumerate().map(|(i, d)| d * (1.0 - 0.3 * d) + wiggle(i)).collect();
    let gold_rl: Vec<f64> = d
        .iter()
        .enumerate()
        .map(|(i, &d)| if d == 0.0 { 0.0 } else { d * (0.6 - 0.35 * d.ln()) } + wiggle(i + 3))
        .collect();
    let proxy: Vec<f64> = d.iter().map(|d| 0.8 * d).collect();
    let (fb, fr) = (fit_bon(&d, &gold_bon), fit_rl(&d, &gold_rl));
    let (cx, cb) = fb.curve(3.75, 60);
    let (_, cr) = fr.curve(3.75, 60);
    let band = |ys: &[f64]| (ys.iter().map(|y| y - 0.12).collect(), ys.iter().map(|y| y + 0.12).collect());

    let plot = LinePlot {
        title: "Gold and proxy score vs √KL".into(),
        x_label: "d = √KL(π ‖ π_init)".into(),
        y_label: "score (centred)".into(),
        series: vec![
            Series {
                band: Some(band(&gold_bon)),
                points: true,
                ..Series::new("gold, best-of-n", d.clone(), gold_bon.clone())
            },
            Series { band: Some(band(&gold_rl)), points: true, ..Series::new("gold, PPO", d.clone(), gold_rl.clone()) },
            Series { dashed: true, ..Series::new("proxy", d.clone(), proxy.clone()) },
            Series { dashed: true, ..Series::new("fit: d(α − βd)", cx.clone(), cb) },
            Series { dashed: true, ..Series::new("fit: d(α − β ln d)", cx, cr) },
        ],
        vlines: [fb.d_star, fr.d_star].iter().flatten().map(|&x| (x, format!("d* = {x:.2}"))).collect(),
        log_x: false,
    };
    let ns = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
    let log_plot = LinePlot {
        title: "Best-of-n gold vs n".into(),
        x_label: "n".into(),
        y_label: "gold".into(),
        series: vec![Series {
            points: true,
            ..Series::new(
                "",
                ns.to_vec(),
                ns.iter().map(|n: &f64| n.ln().sqrt() * (1.0 - 0.3 * n.ln().sqrt())).collect(),
            )
        }],
        vlines: vec![],
        log_x: true,
    };
    let bars = BarChart {
        title: "Refusal rate".into(),
        x_label: "policy".into(),
        y_label: "rate".into(),
        categories: vec!["SFT".into(), "PPO".into(), "DPO".into(), "best-of-16".into()],
        series: vec![
            Bars {
                name: "harmful prompts".into(),
                values: vec![0.31, 0.72, 0.64, 0.55],
                ci: Some(vec![(0.25, 0.37), (0.66, 0.78), (0.57, 0.70), (0.48, 0.61)]),
            },
            Bars {
                name: "benign prompts".into(),
                values: vec![0.02, 0.11, 0.07, 0.04],
                ci: Some(vec![(0.0, 0.05), (0.07, 0.15), (0.04, 0.1), (0.02, 0.07)]),
            },
        ],
    };

    let before: Vec<f64> = (0..50).map(|i| (i % 7) as f64 * 0.1).collect();
    let after: Vec<f64> = before.iter().enumerate().map(|(i, b)| b - 0.1 + 0.05 * ((i % 3) as f64 - 1.0)).collect();
    let fall = diff_ci(&before, &after, 0);
    let rho = spearman_ci(&proxy, &gold_bon, 0);
    let mut page = Page::new("mismatch demo report");
    page.headline(&[
        ("gold fell by", fall.fmt(3)),
        ("ρ(proxy, gold)", rho.fmt(2)),
        ("BoN d*", fb.d_star.map_or("none".into(), |v| format!("{v:.2}"))),
        ("mean gold", mean_ci(&gold_bon, 0).fmt(3)),
    ]);
    page.section("Over-optimisation")
        .paragraph("Synthetic numbers, to show the layout.")
        .plot(plot.to_svg())
        .plot(log_plot.to_svg());
    page.table(
        &["form", "α", "β", "R²", "d*", "n"],
        &[fb.clone(), fr.clone()]
            .iter()
            .map(|f| {
                vec![
                    f.form.to_string(),
                    format!("{:.3}", f.alpha),
                    format!("{:.3}", f.beta),
                    format!("{:.3}", f.r2),
                    f.d_star.map_or("–".into(), |v| format!("{v:.2}")),
                    f.n.to_string(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    page.section("Refusals").plot(bars.to_svg());
    page.section("Reproduce").code("mismatch run --config run.toml --seed 0");
    page.write(&out)?;
    let check = check_in_chromium(&out, shot.as_deref())?;
    println!("{}: {check:?}", out.display());
    anyhow::ensure!(check.ok, "report check failed");
    Ok(())
}
