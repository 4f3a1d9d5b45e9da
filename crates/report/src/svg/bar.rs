//! Grouped bar charts with error bars.

use super::*;
use std::fmt::Write;

/// One series of a [`BarChart`]: `values[i]` (and `ci[i]`, if given) belong to `categories[i]`.
#[derive(Debug, Clone, Default)]
pub struct Bars {
    pub name: String,
    pub values: Vec<f64>,
    /// `(lower, upper)` per value, drawn as error bars.
    pub ci: Option<Vec<(f64, f64)>>,
}

/// Grouped bars: one group per category, one bar per series, bars start at 0.
#[derive(Debug, Clone, Default)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub categories: Vec<String>,
    pub series: Vec<Bars>,
}

impl BarChart {
    /// Renders the chart as a standalone `<svg>` element.
    pub fn to_svg(&self) -> String {
        let names: Vec<&str> = self.series.iter().map(|s| s.name.as_str()).collect();
        let legend_w = legend_width(&names);
        let right = if legend_w > 0.0 { legend_w + 16.0 } else { RIGHT_BARE };
        let (x0, x1, y0, y1) = (LEFT, WIDTH - right, HEIGHT - BOTTOM, TOP);
        let ncat = self.categories.len();

        let (mut ymin, mut ymax) = (0.0f64, 0.0f64);
        let mut any = false;
        for s in &self.series {
            for i in 0..ncat.min(s.values.len()) {
                let mut vs = vec![s.values[i]];
                if let Some((lo, hi)) = s.ci.as_ref().and_then(|c| c.get(i)) {
                    vs.extend([*lo, *hi]);
                }
                for v in vs.into_iter().filter(|v| v.is_finite()) {
                    any = true;
                    ymin = ymin.min(v);
                    ymax = ymax.max(v);
                }
            }
        }
        let ya = Axis::linear(ymin, ymax);
        let py = |y: f64| ya.map(y, y0, y1);

        let mut out = String::new();
        open(&mut out, &self.title, &self.x_label, &self.y_label, x1 - x0);
        y_axis(&mut out, &ya, x0, x1, y0, y1);
        let base = py(0.0);
        let _ = write!(out, r##"<line x1="{x0:.1}" y1="{base:.1}" x2="{x1:.1}" y2="{base:.1}" stroke="#444"/>"##);
        if !any {
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">no data</text>"##,
                (x0 + x1) / 2.0,
                (y0 + y1) / 2.0
            );
        }
        let group_w = (x1 - x0) / ncat.max(1) as f64;
        let nser = self.series.len().max(1);
        let bar_w = group_w * 0.8 / nser as f64;
        let max_chars = ((group_w / 7.0) as usize).max(3);
        for (i, cat) in self.categories.iter().enumerate() {
            let gx = x0 + group_w * i as f64;
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#444"><title>{}</title>{}</text>"##,
                gx + group_w / 2.0,
                y0 + 19.0,
                escape(cat),
                escape(&clip(cat, max_chars))
            );
            for (k, s) in self.series.iter().enumerate() {
                let Some(&v) = s.values.get(i) else { continue };
                if !v.is_finite() {
                    continue;
                }
                let bx = gx + group_w * 0.1 + bar_w * k as f64;
                let (top, bottom) = (py(v).min(base), py(v).max(base));
                let ci = s.ci.as_ref().and_then(|c| c.get(i)).filter(|(lo, hi)| lo.is_finite() && hi.is_finite());
                let tip = match ci {
                    Some((lo, hi)) => {
                        format!("{} / {}: {} [{}, {}]", s.name, cat, fmt_compact(v), fmt_compact(*lo), fmt_compact(*hi))
                    }
                    None => format!("{} / {}: {}", s.name, cat, fmt_compact(v)),
                };
                let _ = write!(
                    out,
                    r##"<rect class="bar" x="{bx:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}</title></rect>"##,
                    (bar_w - 2.0).max(1.0),
                    bottom - top,
                    colour(k),
                    escape(&tip)
                );
                if let Some((lo, hi)) = ci {
                    let cx = bx + (bar_w - 2.0).max(1.0) / 2.0;
                    let cap = (bar_w * 0.25).clamp(2.0, 8.0);
                    let (ylo, yhi) = (py(*lo), py(*hi));
                    let _ = write!(
                        out,
                        r##"<path class="errorbar" d="M{cx:.1},{ylo:.1} L{cx:.1},{yhi:.1} M{:.1},{ylo:.1} L{:.1},{ylo:.1} M{:.1},{yhi:.1} L{:.1},{yhi:.1}" stroke="#222" stroke-width="1.5" fill="none"/>"##,
                        cx - cap,
                        cx + cap,
                        cx - cap,
                        cx + cap
                    );
                }
            }
        }
        let mut row = 0;
        for (k, s) in self.series.iter().enumerate() {
            if s.name.is_empty() {
                continue;
            }
            let (lx, ly) = (x1 + 16.0, y1 + 8.0 + 20.0 * row as f64);
            row += 1;
            let _ = write!(
                out,
                r##"<rect x="{lx:.1}" y="{:.1}" width="14" height="12" fill="{}"/><text x="{:.1}" y="{:.1}" fill="#222"><title>{}</title>{}</text>"##,
                ly - 6.0,
                colour(k),
                lx + 20.0,
                ly + 4.0,
                escape(&s.name),
                escape(&clip(&s.name, 28))
            );
        }
        out.push_str("</svg>");
        out
    }
}
