//! Line plots with CI bands, reference lines and a log-x option.

use super::*;
use std::fmt::Write;

/// A line plot. `vlines` are labelled vertical reference lines (e.g. a fitted peak d*); they
/// widen the x range so they are always visible, so leave out ones far from the data.
#[derive(Debug, Clone, Default)]
pub struct LinePlot {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub vlines: Vec<(f64, String)>,
    /// Log-scale x axis (base 10); points with x ≤ 0 are skipped.
    pub log_x: bool,
}

impl LinePlot {
    fn x_ok(&self, x: f64) -> bool {
        x.is_finite() && (!self.log_x || x > 0.0)
    }

    /// Renders the plot as a standalone `<svg>` element.
    pub fn to_svg(&self) -> String {
        let names: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        let legend_w = legend_width(&names);
        let right = if legend_w > 0.0 { legend_w + 16.0 } else { RIGHT_BARE };
        let (x0, x1, y0, y1) = (LEFT, WIDTH - right, HEIGHT - BOTTOM, TOP);

        // Ranges over every drawable point, band edge and reference line.
        let (mut xmin, mut xmax, mut ymin, mut ymax) =
            (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        let mut any = false;
        for s in &self.series {
            let n = s.xs.len();
            for i in 0..n {
                let x = s.xs[i];
                if !self.x_ok(x) {
                    continue;
                }
                let mut ys = vec![s.ys.get(i).copied().unwrap_or(f64::NAN)];
                if let Some((lo, hi)) = &s.band {
                    ys.push(lo.get(i).copied().unwrap_or(f64::NAN));
                    ys.push(hi.get(i).copied().unwrap_or(f64::NAN));
                }
                for y in ys.into_iter().filter(|y| y.is_finite()) {
                    any = true;
                    xmin = xmin.min(x);
                    xmax = xmax.max(x);
                    ymin = ymin.min(y);
                    ymax = ymax.max(y);
                }
            }
        }
        for (x, _) in &self.vlines {
            if self.x_ok(*x) {
                xmin = xmin.min(*x);
                xmax = xmax.max(*x);
            }
        }
        let xa = if self.log_x && xmin.is_finite() {
            Axis::log10(xmin, xmax)
        } else if self.log_x {
            Axis::log10(1.0, 10.0)
        } else {
            Axis::linear(xmin, xmax)
        };
        let ya = Axis::linear(ymin, ymax);

        let mut out = String::new();
        open(&mut out, &self.title, &self.x_label, &self.y_label, x1 - x0);
        y_axis(&mut out, &ya, x0, x1, y0, y1);
        for &t in &xa.ticks {
            let x = xa.map_tick(t, x0, x1);
            let _ = write!(
                out,
                r##"<line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{y1:.1}" stroke="#efefef"/><line x1="{x:.1}" y1="{y0:.1}" x2="{x:.1}" y2="{:.1}" stroke="#444"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#444">{}</text>"##,
                y0 + 5.0,
                y0 + 19.0,
                escape(&xa.label(t))
            );
        }
        let _ = write!(out, r##"<line x1="{x0:.1}" y1="{y0:.1}" x2="{x1:.1}" y2="{y0:.1}" stroke="#444"/>"##);
        if !any {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">no data</text>"##,
                (x0 + x1) / 2.0,
                (y0 + y1) / 2.0
            );
        }

        let px = |x: f64| xa.map(x, x0, x1);
        let py = |y: f64| ya.map(y, y0, y1);
        // Bands first, so every line is drawn on top of every band.
        for (k, s) in self.series.iter().enumerate() {
            let Some((lo, hi)) = &s.band else { continue };
            let ok = |i: usize| {
                self.x_ok(s.xs[i])
                    && lo.get(i).is_some_and(|v| v.is_finite())
                    && hi.get(i).is_some_and(|v| v.is_finite())
            };
            for run in runs(s.xs.len(), ok) {
                let mut pts = String::new();
                for &i in &run {
                    let _ = write!(pts, "{:.1},{:.1} ", px(s.xs[i]), py(hi[i]));
                }
                for &i in run.iter().rev() {
                    let _ = write!(pts, "{:.1},{:.1} ", px(s.xs[i]), py(lo[i]));
                }
                let _ = write!(
                    out,
                    r##"<polygon class="band" points="{}" fill="{}" fill-opacity="0.18" stroke="none"/>"##,
                    pts.trim_end(),
                    colour(k)
                );
            }
        }
        for (k, s) in self.series.iter().enumerate() {
            let c = colour(k);
            let ok = |i: usize| self.x_ok(s.xs[i]) && s.ys.get(i).is_some_and(|v| v.is_finite());
            let dash = if s.dashed { r#" stroke-dasharray="7 4""# } else { "" };
            for run in runs(s.xs.len(), ok) {
                let mut d = String::new();
                for (j, &i) in run.iter().enumerate() {
                    let _ = write!(d, "{}{:.1},{:.1}", if j == 0 { "M" } else { " L" }, px(s.xs[i]), py(s.ys[i]));
                }
                let _ = write!(
                    out,
                    r##"<path class="line" d="{d}" fill="none" stroke="{c}" stroke-width="2" stroke-linejoin="round"{dash}/>"##
                );
                if s.points || run.len() == 1 {
                    for &i in &run {
                        let _ = write!(
                            out,
                            r##"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"><title>{}: ({}, {})</title></circle>"##,
                            px(s.xs[i]),
                            py(s.ys[i]),
                            escape(&s.name),
                            fmt_compact(s.xs[i]),
                            fmt_compact(s.ys[i])
                        );
                    }
                }
            }
        }
        for (j, (x, label)) in self.vlines.iter().enumerate() {
            if !self.x_ok(*x) {
                continue;
            }
            let vx = px(*x);
            let (tx, anchor) = if vx > x1 - 120.0 { (vx - 4.0, "end") } else { (vx + 4.0, "start") };
            let _ = write!(
                out,
                r##"<line class="vline" x1="{vx:.1}" y1="{y0:.1}" x2="{vx:.1}" y2="{y1:.1}" stroke="#555" stroke-dasharray="3 3"/><text x="{tx:.1}" y="{:.1}" text-anchor="{anchor}" font-size="11" fill="#333">{}</text>"##,
                y1 + 12.0 + 13.0 * (j % 4) as f64,
                escape(label)
            );
        }
        let entries: Vec<(usize, &Series)> =
            self.series.iter().enumerate().filter(|(_, s)| !s.name.is_empty()).collect();
        for (row, (k, s)) in entries.into_iter().enumerate() {
            let (lx, ly) = (x1 + 16.0, y1 + 8.0 + 20.0 * row as f64);
            let c = colour(k);
            if s.band.is_some() {
                let _ = write!(
                    out,
                    r##"<rect x="{lx:.1}" y="{:.1}" width="26" height="12" fill="{c}" fill-opacity="0.18"/>"##,
                    ly - 6.0
                );
            }
            let dash = if s.dashed { r#" stroke-dasharray="7 4""# } else { "" };
            let _ = write!(
                out,
                r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{c}" stroke-width="2"{dash}/>"##,
                lx + 26.0
            );
            if s.points {
                let _ = write!(out, r##"<circle cx="{:.1}" cy="{ly:.1}" r="3" fill="{c}"/>"##, lx + 13.0);
            }
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" fill="#222"><title>{}</title>{}</text>"##,
                lx + 32.0,
                ly + 4.0,
                escape(&s.name),
                escape(&clip(&s.name, 28))
            );
        }
        out.push_str("</svg>");
        out
    }
}
