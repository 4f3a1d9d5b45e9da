//! Inline SVG plots: no JavaScript, no external fonts or resources, so a report stays one file.
//!
//! Every plot is an `<svg class="plot" role="img">` whose first child is a `<title>` (its
//! accessible name). Non-finite points are skipped: a line breaks at a NaN instead of being drawn
//! through it. Colours are the Okabe & Ito (2008) colour-blind-safe palette.

use crate::html::escape;
use std::fmt::Write;

/// Okabe–Ito palette, ordered so the first colours stay distinct in greyscale prints; yellow is
/// last because it is faint on white.
pub const PALETTE: [&str; 8] = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#000000", "#F0E442"];

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 52.0;
const LEFT: f64 = 72.0;
const RIGHT_BARE: f64 = 20.0;
const FONT: &str = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";

/// Colour of series `i` (cycles through [`PALETTE`]).
pub fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// One line of a [`LinePlot`].
#[derive(Debug, Clone, Default)]
pub struct Series {
    /// Legend entry; an empty name is left out of the legend.
    pub name: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    /// `(lower, upper)`, one value per x: a shaded band (CI or seed spread) behind the line.
    pub band: Option<(Vec<f64>, Vec<f64>)>,
    pub dashed: bool,
    /// Draw a marker at every point (useful when there are few points).
    pub points: bool,
}

impl Series {
    /// A solid line with no band or markers.
    pub fn new(name: impl Into<String>, xs: Vec<f64>, ys: Vec<f64>) -> Self {
        Series { name: name.into(), xs, ys, ..Default::default() }
    }
}

/// A linear or log10 axis; `lo`, `hi` and `ticks` are in plotting space (log10 of x when `log`).
struct Axis {
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    step: f64,
    log: bool,
}

impl Axis {
    fn linear(min: f64, max: f64) -> Axis {
        let (min, max) = widen(min, max);
        let step = nice_num(nice_num(max - min, false) / 4.0, true);
        if !(step.is_finite() && step > 0.0) {
            return Axis { lo: min, hi: max, ticks: vec![min, max], step: max - min, log: false };
        }
        let lo = (min / step).floor() * step;
        let hi = (max / step).ceil() * step;
        let k = ((hi - lo) / step).round() as usize;
        let ticks = (0..=k).map(|i| lo + i as f64 * step).collect();
        Axis { lo, hi, ticks, step, log: false }
    }

    /// `min`, `max` are positive data values (not logs). The axis spans the data; ticks are the
    /// decades inside it, or 1-2-5 steps when fewer than three decades fit, plus the two ends when
    /// even that gives fewer than two ticks.
    fn log10(min: f64, max: f64) -> Axis {
        let (lmin, lmax) = widen(min.log10(), max.log10());
        let inside = |t: f64| t >= lmin - 1e-9 && t <= lmax + 1e-9;
        let (first, last) = (lmin.floor() as i64, lmax.ceil() as i64);
        let decades: Vec<f64> = (first..=last).map(|e| e as f64).filter(|&t| inside(t)).collect();
        let mut ticks: Vec<f64> = if decades.len() >= 3 {
            let every = decades.len().div_ceil(8);
            decades.into_iter().step_by(every).collect()
        } else {
            (first..=last)
                .flat_map(|e| [1.0, 2.0, 5.0].map(|m: f64| (m * 10f64.powi(e as i32)).log10()))
                .filter(|&t| inside(t))
                .collect()
        };
        if ticks.len() < 2 {
            ticks.insert(0, lmin);
            ticks.push(lmax);
            ticks.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
        }
        Axis { lo: lmin, hi: lmax, ticks, step: 1.0, log: true }
    }

    /// Maps a data value (not yet logged) onto `[p0, p1]`.
    fn map(&self, v: f64, p0: f64, p1: f64) -> f64 {
        let t = if self.log { v.log10() } else { v };
        p0 + (t - self.lo) / (self.hi - self.lo) * (p1 - p0)
    }

    /// Maps a tick (already in plotting space) onto `[p0, p1]`.
    fn map_tick(&self, t: f64, p0: f64, p1: f64) -> f64 {
        p0 + (t - self.lo) / (self.hi - self.lo) * (p1 - p0)
    }

    fn label(&self, t: f64) -> String {
        if self.log {
            fmt_compact(10f64.powf(t))
        } else {
            fmt_tick(t, self.step)
        }
    }
}

/// A range that is empty, inverted, not finite or (relatively) zero-width becomes a usable one.
fn widen(min: f64, max: f64) -> (f64, f64) {
    if !(min.is_finite() && max.is_finite()) || min > max {
        return (0.0, 1.0);
    }
    let scale = min.abs().max(max.abs());
    if max - min <= 1e-12 * scale || max == min {
        let pad = if scale == 0.0 { 1.0 } else { 0.1 * scale };
        return (min - pad, max + pad);
    }
    (min, max)
}

/// Heckbert's "nice numbers" (Graphics Gems, 1990): 1, 2, 5 or 10 times a power of ten.
fn nice_num(x: f64, round: bool) -> f64 {
    let e = x.log10().floor();
    let f = x / 10f64.powf(e);
    let n = if round {
        if f < 1.5 {
            1.0
        } else if f < 3.0 {
            2.0
        } else if f < 7.0 {
            5.0
        } else {
            10.0
        }
    } else if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    n * 10f64.powf(e)
}

/// Tick label with as many decimals as the tick step needs.
fn fmt_tick(v: f64, step: f64) -> String {
    if v.abs() <= step.abs() * 1e-9 {
        return "0".into();
    }
    let a = v.abs().max(step.abs());
    if a >= 1e6 || step.abs() < 1e-4 {
        return fmt_exp(v);
    }
    let decimals = (-step.abs().log10().floor()).clamp(0.0, 10.0) as usize;
    format!("{v:.decimals$}")
}

/// Short human label for any number: `0.02`, `150`, `3e6`.
pub fn fmt_compact(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() >= 1e5 || v.abs() < 1e-3 {
        return fmt_exp(v);
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn fmt_exp(v: f64) -> String {
    let s = format!("{v:.2e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let m = if m.contains('.') { m.trim_end_matches('0').trim_end_matches('.') } else { m };
    format!("{m}e{e}")
}

/// Truncates to `max` characters, with an ellipsis.
fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max.saturating_sub(1)).collect::<String>())
    }
}

/// Width of the legend column needed for these names (0 when there is no named entry).
fn legend_width(names: &[&str]) -> f64 {
    let longest = names.iter().map(|n| clip(n, 28).chars().count()).max().unwrap_or(0);
    if longest == 0 {
        0.0
    } else {
        (longest as f64 * 7.0 + 44.0).min(240.0)
    }
}

/// The common frame: `<svg>` open tag, `<title>`, background, plot title and axis labels.
fn open(out: &mut String, title: &str, x_label: &str, y_label: &str, plot_w: f64) {
    let t = escape(title);
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="{FONT}" font-size="12"><title>{t}</title><rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/>"##
    );
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="22" text-anchor="middle" font-size="15" font-weight="600" fill="#222">{t}</text>"##,
        LEFT + plot_w / 2.0
    );
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#222">{}</text>"##,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0,
        escape(x_label)
    );
    let cy = TOP + (HEIGHT - TOP - BOTTOM) / 2.0;
    let _ = write!(
        out,
        r##"<text x="16" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 16 {cy:.1})" fill="#222">{}</text>"##,
        escape(y_label)
    );
}

/// Horizontal grid lines with y tick labels, and the y axis line.
fn y_axis(out: &mut String, ya: &Axis, x0: f64, x1: f64, y0: f64, y1: f64) {
    for &t in &ya.ticks {
        let y = ya.map_tick(t, y0, y1);
        let _ = write!(
            out,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{x1:.1}" y2="{y:.1}" stroke="#e3e3e3"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#444">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            escape(&ya.label(t))
        );
    }
    let _ = write!(out, r##"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x0:.1}" y2="{y1:.1}" stroke="#444"/>"##);
}

/// Splits indices `0..n` into maximal runs where `keep(i)` holds.
fn runs(n: usize, keep: impl Fn(usize) -> bool) -> Vec<Vec<usize>> {
    let mut out = vec![];
    let mut cur = vec![];
    for i in 0..n {
        if keep(i) {
            cur.push(i);
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

mod bar;
mod line;

pub use bar::{BarChart, Bars};
pub use line::LinePlot;

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny XML well-formedness check: balanced, properly nested tags, quoted attributes, no
    /// stray `<` or `&` in text. Returns the element names in document order.
    fn parse(xml: &str) -> Result<Vec<String>, String> {
        let b = xml.as_bytes();
        let mut stack: Vec<String> = vec![];
        let mut names = vec![];
        let mut i = 0;
        let mut roots = 0;
        while i < b.len() {
            match b[i] {
                b'<' => {
                    let end = find_tag_end(b, i)?;
                    let inner = &xml[i + 1..end];
                    if let Some(name) = inner.strip_prefix('/') {
                        let open = stack.pop().ok_or(format!("close </{name}> with nothing open"))?;
                        if open != name.trim() {
                            return Err(format!("</{name}> closes <{open}>"));
                        }
                    } else {
                        let self_close = inner.ends_with('/');
                        let body = inner.trim_end_matches('/');
                        let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
                        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':') {
                            return Err(format!("bad tag name in <{inner}>"));
                        }
                        check_attrs(&body[name.len()..])?;
                        if stack.is_empty() {
                            roots += 1;
                        }
                        names.push(name.clone());
                        if !self_close {
                            stack.push(name);
                        }
                    }
                    i = end + 1;
                }
                b'&' => {
                    let semi = xml[i..].find(';').ok_or("bare &")?;
                    let ent = &xml[i + 1..i + semi];
                    if !["amp", "lt", "gt", "quot", "#39"].contains(&ent) {
                        return Err(format!("unknown entity &{ent};"));
                    }
                    i += semi + 1;
                }
                _ => i += 1,
            }
        }
        if !stack.is_empty() {
            return Err(format!("unclosed {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(names)
    }

    fn find_tag_end(b: &[u8], start: usize) -> Result<usize, String> {
        let mut quote = None;
        for (j, &c) in b.iter().enumerate().skip(start + 1) {
            match (quote, c) {
                (None, b'"') | (None, b'\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, b'<') => return Err("< inside a tag".into()),
                (None, b'>') => return Ok(j),
                _ => {}
            }
        }
        Err("unterminated tag".into())
    }

    fn check_attrs(s: &str) -> Result<(), String> {
        let mut rest = s.trim();
        while !rest.is_empty() {
            let eq = rest.find('=').ok_or(format!("attribute without value: {rest}"))?;
            let name = rest[..eq].trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("bad attribute name {name:?}"));
            }
            let after = &rest[eq + 1..];
            let q = after.chars().next().ok_or("missing value")?;
            if q != '"' && q != '\'' {
                return Err(format!("unquoted attribute {name}"));
            }
            let close = after[1..].find(q).ok_or("unterminated value")?;
            let value = &after[1..1 + close];
            if value.contains('<') {
                return Err(format!("< in attribute {name}"));
            }
            rest = after[close + 2..].trim_start();
        }
        Ok(())
    }

    fn plot() -> LinePlot {
        LinePlot {
            title: "Gold vs √KL <proxy & gold>".into(),
            x_label: "√KL".into(),
            y_label: "score".into(),
            series: vec![
                Series {
                    name: "gold".into(),
                    xs: vec![0.0, 1.0, 2.0, 3.0],
                    ys: vec![0.0, 0.8, 1.1, 0.9],
                    band: Some((vec![-0.1, 0.6, 0.9, 0.6], vec![0.1, 1.0, 1.3, 1.2])),
                    dashed: false,
                    points: true,
                },
                Series {
                    name: "proxy".into(),
                    dashed: true,
                    ..Series::new("", vec![0.0, 1.0, 2.0, 3.0], vec![0.0, 1.0, 2.0, 3.0])
                },
            ],
            vlines: vec![(2.2, "d* = 2.2".into())],
            log_x: false,
        }
    }

    #[test]
    fn line_plot_is_well_formed_and_accessible() {
        let svg = plot().to_svg();
        let names = parse(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(names[0], "svg");
        assert_eq!(names[1], "title", "the title must be the svg's first child");
        assert!(svg.starts_with("<svg ") && svg.contains(r#"class="plot""#) && svg.contains(r#"role="img""#));
        assert!(svg.contains("<title>Gold vs √KL &lt;proxy &amp; gold&gt;</title>"));
        assert_eq!(names.iter().filter(|n| *n == "polygon").count(), 1, "one band polygon");
        assert!(svg.contains(r#"class="band""#));
        assert_eq!(svg.matches(r#"class="line""#).count(), 2);
        assert!(svg.contains("stroke-dasharray=\"7 4\""), "proxy is dashed");
        assert!(svg.contains(r#"class="vline""#) && svg.contains("d* = 2.2"));
        assert!(svg.contains(">gold</text>") && svg.contains(">proxy</text>"), "legend entries");
        assert!(svg.contains(PALETTE[0]) && svg.contains(PALETTE[1]));
    }

    #[test]
    fn band_polygon_walks_upper_then_lower() {
        let p = LinePlot {
            series: vec![Series {
                band: Some((vec![0.0, 0.0], vec![10.0, 10.0])),
                ..Series::new("s", vec![0.0, 10.0], vec![5.0, 5.0])
            }],
            ..Default::default()
        };
        let svg = p.to_svg();
        let pts = svg.split(r#"points=""#).nth(1).unwrap().split('"').next().unwrap();
        let pts: Vec<(f64, f64)> = pts
            .split(' ')
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert_eq!(pts.len(), 4);
        // Upper edge left to right (small SVG y), then lower edge right to left.
        assert!(pts[0].0 < pts[1].0 && pts[2].0 > pts[3].0);
        assert_eq!(pts[0].1, pts[1].1);
        assert!(pts[0].1 < pts[2].1, "upper (10) is above lower (0)");
        assert_eq!(pts[0].0, pts[3].0);
    }

    #[test]
    fn nan_points_break_the_line_and_never_reach_the_output() {
        let p = LinePlot {
            series: vec![Series {
                band: Some((vec![0.0, f64::NAN, 0.0, 0.0, 0.0], vec![1.0, 1.0, 1.0, f64::INFINITY, 1.0])),
                ..Series::new("s", vec![0.0, 1.0, 2.0, f64::NAN, 4.0], vec![0.5, f64::NAN, 0.5, 0.5, 0.5])
            }],
            ..Default::default()
        };
        let svg = p.to_svg();
        parse(&svg).unwrap();
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        // y: points 0, 2, 4 are valid but not adjacent -> three one-point runs.
        assert_eq!(svg.matches(r#"class="line""#).count(), 3);
        // band: indices 0 and 2 valid only; 4 too (index 3 has x NaN) -> three runs.
        assert_eq!(svg.matches(r#"class="band""#).count(), 3);
    }

    #[test]
    fn empty_and_degenerate_plots_still_render() {
        let empty = LinePlot { title: "empty".into(), ..Default::default() }.to_svg();
        parse(&empty).unwrap();
        assert!(empty.contains("no data"));
        let all_nan = LinePlot { series: vec![Series::new("s", vec![f64::NAN], vec![1.0])], ..Default::default() };
        assert!(all_nan.to_svg().contains("no data"));
        // One point, and a constant line: ranges of zero width must widen, not divide by zero.
        for s in [Series::new("one", vec![3.0], vec![7.0]), Series::new("flat", vec![1.0, 2.0, 3.0], vec![0.0; 3])] {
            let svg = LinePlot { series: vec![s], ..Default::default() }.to_svg();
            parse(&svg).unwrap();
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        }
        let log = LinePlot {
            series: vec![Series::new("s", vec![0.0, -1.0], vec![1.0, 2.0])],
            log_x: true,
            ..Default::default()
        };
        assert!(log.to_svg().contains("no data"), "x <= 0 is skipped on a log axis");
    }

    #[test]
    fn ticks_are_nice_and_cover_the_data() {
        let a = Axis::linear(0.13, 9.7);
        assert_eq!(a.ticks, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        let a = Axis::linear(-0.037, 0.052);
        assert!(a.lo <= -0.037 && a.hi >= 0.052);
        assert_eq!(a.step, 0.02);
        assert_eq!(
            a.ticks.iter().map(|&t| a.label(t)).collect::<Vec<_>>(),
            ["-0.04", "-0.02", "0", "0.02", "0.04", "0.06"]
        );
        let a = Axis::linear(5.0, 5.0);
        assert!(a.lo < 5.0 && a.hi > 5.0);
        let l = Axis::log10(1.0, 1e4);
        assert_eq!(l.ticks, vec![0.0, 1.0, 2.0, 3.0, 4.0]);
        let l = Axis::log10(1.0, 256.0);
        assert_eq!(l.ticks, vec![0.0, 1.0, 2.0]);
        assert!(l.lo == 0.0 && (l.hi - 256f64.log10()).abs() < 1e-12, "the axis ends at the data");
        let l = Axis::log10(0.3, 0.7);
        assert_eq!(l.ticks.iter().map(|&t| l.label(t)).collect::<Vec<_>>(), ["0.3", "0.5", "0.7"]);
        assert_eq!(l.label(3.0), "1000");
        let l = Axis::log10(1.0, 64.0);
        assert_eq!(l.ticks.iter().map(|&t| l.label(t)).collect::<Vec<_>>(), ["1", "2", "5", "10", "20", "50"]);
        assert_eq!(fmt_compact(2.5e6), "2.5e6");
        assert_eq!(fmt_compact(0.125), "0.125");
    }

    #[test]
    fn log_x_places_decades_evenly() {
        let p = LinePlot {
            series: vec![Series::new("s", vec![1.0, 10.0, 100.0], vec![0.0, 1.0, 2.0])],
            log_x: true,
            ..Default::default()
        };
        let svg = p.to_svg();
        let d = svg.split(r#"class="line" d=""#).nth(1).unwrap().split('"').next().unwrap();
        let xs: Vec<f64> = d
            .split(' ')
            .filter(|t| !t.is_empty())
            .map(|t| t.trim_start_matches(['M', 'L']).split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(xs.len(), 3);
        assert!(((xs[1] - xs[0]) - (xs[2] - xs[1])).abs() < 0.11, "{xs:?}");
    }

    #[test]
    fn bar_chart_has_bars_and_error_bars() {
        let chart = BarChart {
            title: "Refusal rate".into(),
            x_label: "policy".into(),
            y_label: "rate".into(),
            categories: vec!["base".into(), "ppo".into(), "dpo".into()],
            series: vec![
                Bars {
                    name: "harmful".into(),
                    values: vec![0.2, 0.5, f64::NAN],
                    ci: Some(vec![(0.1, 0.3), (0.4, 0.6), (0.0, 0.0)]),
                },
                Bars { name: "benign".into(), values: vec![0.05, 0.1, 0.08], ci: None },
            ],
        };
        let svg = chart.to_svg();
        let names = parse(&svg).unwrap_or_else(|e| panic!("{e}\n{svg}"));
        assert_eq!(names[1], "title");
        assert!(svg.contains(r#"class="plot""#) && svg.contains(r#"role="img""#));
        assert_eq!(svg.matches(r#"class="bar""#).count(), 5, "the NaN bar is skipped");
        assert_eq!(svg.matches(r#"class="errorbar""#).count(), 2);
        assert!(svg.contains("harmful / ppo: 0.5 [0.4, 0.6]"));
        assert!(!svg.contains("NaN"));
        let empty = BarChart::default().to_svg();
        parse(&empty).unwrap();
        assert!(empty.contains("no data"));
    }
}
