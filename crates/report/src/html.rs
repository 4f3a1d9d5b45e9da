//! One self-contained HTML page: inline CSS, inline SVG, no network requests, readable on screen
//! and on paper.
//!
//! The page carries two tiny inline scripts. One, in `<head>`, records script errors, failed
//! resource loads and `console.error` calls. The other, on `load`, counts the `svg.plot` elements
//! that rendered with a nonzero size and sets `data-plots` (that count), `data-plots-total`,
//! `data-errors` (a JSON array of the recorded errors) and `data-ok` (`"true"` when every plot drew
//! and nothing went wrong) on `<body>`; [`crate::browser`] reads them back from headless Chromium.
//! Neither script changes what a reader sees.

use mismatch_models::checkpoint::write_atomic;
use mismatch_models::Result;
use std::fmt::Write;
use std::path::Path;

/// Escapes text for HTML/XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = r#"
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 980px; padding: 24px 28px 64px; font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.9em; margin: 0.2em 0 0.4em; line-height: 1.2; }
h2 { font-size: 1.35em; margin: 1.8em 0 0.5em; padding-top: 0.4em; border-top: 1px solid #ddd; }
p { margin: 0.6em 0; }
nav.toc { background: #f6f7f9; border: 1px solid #e2e4e8; border-radius: 6px; padding: 8px 16px; margin: 12px 0 20px; }
nav.toc ol { margin: 4px 0; padding-left: 1.4em; }
nav.toc a { color: #0b5cad; text-decoration: none; }
nav.toc a:hover { text-decoration: underline; }
figure.plot { margin: 14px 0; }
svg.plot { display: block; width: 100%; max-width: 720px; height: auto; border: 1px solid #eee; border-radius: 4px; }
table { border-collapse: collapse; margin: 12px 0; font-size: 0.92em; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: #f6f7f9; border-bottom: 2px solid #ccc; }
tr:nth-child(even) td { background: #fbfbfc; }
.table-wrap { overflow-x: auto; }
pre { background: #f4f5f7; border: 1px solid #e2e4e8; border-radius: 6px; padding: 10px 12px; overflow-x: auto; font-size: 0.88em; }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
dl.headline { display: flex; flex-wrap: wrap; gap: 10px; margin: 14px 0; padding: 0; }
dl.headline div { flex: 1 1 auto; min-width: 150px; border: 1px solid #d5dbe3; border-radius: 6px; padding: 8px 12px; background: #f8fafc; }
dl.headline dt { font-size: 0.8em; color: #555; }
dl.headline dd { margin: 2px 0 0; font-size: 1.2em; white-space: nowrap; font-weight: 600; font-variant-numeric: tabular-nums; }
@media print {
  body { max-width: none; padding: 0; font-size: 11pt; }
  nav.toc { background: none; }
  h2 { break-after: avoid; }
  figure.plot, table, pre, dl.headline { break-inside: avoid; }
  svg.plot { border: none; }
  a { color: inherit; }
}
"#;

/// Records errors before any other script runs, so the check below can report them.
const ERROR_RECORDER: &str = r#"
window.__reportErrors = [];
window.addEventListener("error", function (e) {
  var t = e.target;
  if (t && t !== window && (t.src || t.href)) { window.__reportErrors.push("failed to load " + (t.src || t.href)); }
  else { window.__reportErrors.push(String(e.message || "script error")); }
}, true);
window.addEventListener("unhandledrejection", function (e) { window.__reportErrors.push("Unhandled rejection: " + String(e.reason)); });
(function () {
  var orig = console.error;
  console.error = function () {
    window.__reportErrors.push(Array.prototype.map.call(arguments, String).join(" "));
    return orig.apply(console, arguments);
  };
})();
"#;

/// Counts plots that rendered with a nonzero size; see the module docs.
const PLOT_CHECK: &str = r#"
window.addEventListener("load", function () {
  var plots = document.querySelectorAll("svg.plot");
  var drawn = 0;
  for (var i = 0; i < plots.length; i++) {
    var r = plots[i].getBoundingClientRect();
    if (r.width > 0 && r.height > 0) { drawn++; }
  }
  var errs = window.__reportErrors || [];
  var b = document.body;
  b.dataset.plots = String(drawn);
  b.dataset.plotsTotal = String(plots.length);
  b.dataset.errors = JSON.stringify(errs);
  b.dataset.ok = String(drawn === plots.length && errs.length === 0);
});
"#;

enum Block {
    Section { id: String, heading: String },
    Raw(String),
}

/// Builder of one report page. Blocks appear in the order they are added; [`Page::section`]
/// starts a new `<section>` and adds it to the table of contents.
///
/// ```
/// use mismatch_report::Page;
/// let mut page = Page::new("Run report");
/// page.headline(&[("gold Δ", "−0.12 [−0.20, −0.05]")]).section("Setup").paragraph("Seed 0.");
/// page.table(&["metric", "value"], &[vec!["objective/kl".to_string(), "3.1".to_string()]]);
/// let html = page.render();
/// assert!(html.contains("<h2>Setup</h2>"));
/// ```
pub struct Page {
    title: String,
    blocks: Vec<Block>,
}

impl Page {
    pub fn new(title: impl Into<String>) -> Self {
        Page { title: title.into(), blocks: vec![] }
    }

    /// Starts a new section with a heading (listed in the table of contents).
    pub fn section(&mut self, heading: impl Into<String>) -> &mut Self {
        let n = self.blocks.iter().filter(|b| matches!(b, Block::Section { .. })).count() + 1;
        self.blocks.push(Block::Section { id: format!("sec-{n}"), heading: heading.into() });
        self
    }

    /// A paragraph of plain text (escaped).
    pub fn paragraph(&mut self, text: impl AsRef<str>) -> &mut Self {
        self.blocks.push(Block::Raw(format!("<p>{}</p>", escape(text.as_ref()))));
        self
    }

    /// Raw HTML, inserted as is. The caller is responsible for escaping and for keeping the page
    /// self-contained (no external `src`/`href`).
    pub fn html(&mut self, raw: impl Into<String>) -> &mut Self {
        self.blocks.push(Block::Raw(raw.into()));
        self
    }

    /// A table; headers and cells are plain text (escaped). Rows may be ragged.
    pub fn table<H: AsRef<str>, C: AsRef<str>>(&mut self, headers: &[H], rows: &[Vec<C>]) -> &mut Self {
        let mut s = String::from("<div class=\"table-wrap\"><table>");
        if !headers.is_empty() {
            s.push_str("<thead><tr>");
            for h in headers {
                let _ = write!(s, "<th>{}</th>", escape(h.as_ref()));
            }
            s.push_str("</tr></thead>");
        }
        s.push_str("<tbody>");
        for row in rows {
            s.push_str("<tr>");
            for c in row {
                let _ = write!(s, "<td>{}</td>", escape(c.as_ref()));
            }
            s.push_str("</tr>");
        }
        s.push_str("</tbody></table></div>");
        self.blocks.push(Block::Raw(s));
        self
    }

    /// An SVG string from [`crate::svg`] (inserted as is, inside a `<figure>`).
    pub fn plot(&mut self, svg: impl AsRef<str>) -> &mut Self {
        self.blocks.push(Block::Raw(format!("<figure class=\"plot\">{}</figure>", svg.as_ref())));
        self
    }

    /// A command or other code, shown verbatim (escaped) in a `<pre>` block.
    pub fn code(&mut self, cmd: impl AsRef<str>) -> &mut Self {
        self.blocks.push(Block::Raw(format!("<pre><code>{}</code></pre>", escape(cmd.as_ref()))));
        self
    }

    /// A small box of key numbers: `(label, value)` pairs, both plain text.
    pub fn headline<L: AsRef<str>, V: AsRef<str>>(&mut self, items: &[(L, V)]) -> &mut Self {
        let mut s = String::from("<dl class=\"headline\">");
        for (l, v) in items {
            let _ = write!(s, "<div><dt>{}</dt><dd>{}</dd></div>", escape(l.as_ref()), escape(v.as_ref()));
        }
        s.push_str("</dl>");
        self.blocks.push(Block::Raw(s));
        self
    }

    /// The whole page. Output depends only on what was added (no timestamps), so equal inputs give
    /// byte-identical pages.
    pub fn render(&self) -> String {
        let title = escape(&self.title);
        let mut out = String::new();
        let _ = write!(
            out,
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{title}</title>\n<style>{CSS}</style>\n<script>{ERROR_RECORDER}</script>\n</head>\n<body>\n<header><h1>{title}</h1></header>\n"
        );
        let sections: Vec<(&str, &str)> = self
            .blocks
            .iter()
            .filter_map(|b| match b {
                Block::Section { id, heading } => Some((id.as_str(), heading.as_str())),
                Block::Raw(_) => None,
            })
            .collect();
        if !sections.is_empty() {
            out.push_str("<nav class=\"toc\" aria-label=\"Contents\"><strong>Contents</strong><ol>");
            for (id, h) in &sections {
                let _ = write!(out, "<li><a href=\"#{id}\">{}</a></li>", escape(h));
            }
            out.push_str("</ol></nav>\n");
        }
        let mut open = false;
        for b in &self.blocks {
            match b {
                Block::Section { id, heading } => {
                    if open {
                        out.push_str("</section>\n");
                    }
                    let _ = write!(out, "<section id=\"{id}\">\n<h2>{}</h2>\n", escape(heading));
                    open = true;
                }
                Block::Raw(s) => {
                    out.push_str(s);
                    out.push('\n');
                }
            }
        }
        if open {
            out.push_str("</section>\n");
        }
        let _ = write!(out, "<script>{PLOT_CHECK}</script>\n</body>\n</html>\n");
        out
    }

    /// Renders and writes the page atomically (a reader never sees a half-written file).
    pub fn write(&self, path: &Path) -> Result<()> {
        write_atomic(path, self.render().as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svg::{LinePlot, Series};

    fn page() -> Page {
        let mut p = Page::new("Report <1>");
        p.headline(&[("gold", "0.5 [0.4, 0.6]")]);
        p.section("Intro & <script>").paragraph("<script>alert('x')</script> & more");
        p.table(&["a<b", "c"], &[vec!["<script>", "1"], vec!["x&y", "2"]]);
        p.section("Plots").plot(
            LinePlot { series: vec![Series::new("s", vec![0.0, 1.0], vec![1.0, 2.0])], ..Default::default() }.to_svg(),
        );
        p.code("mismatch run --seed 0 > out.txt && echo \"done\"");
        p
    }

    #[test]
    fn text_is_escaped() {
        let html = page().render();
        // The only <script> tags are the page's own two.
        assert_eq!(html.matches("<script>").count(), 2, "{html}");
        assert!(html.contains("<p>&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more</p>"));
        assert!(
            html.contains("<th>a&lt;b</th>")
                && html.contains("<td>&lt;script&gt;</td>")
                && html.contains("<td>x&amp;y</td>")
        );
        assert!(html.contains("<h2>Intro &amp; &lt;script&gt;</h2>"));
        assert!(html.contains("<title>Report &lt;1&gt;</title>"));
        assert!(html.contains("<code>mismatch run --seed 0 &gt; out.txt &amp;&amp; echo &quot;done&quot;</code>"));
        assert!(html.contains("<dt>gold</dt><dd>0.5 [0.4, 0.6]</dd>"));
    }

    #[test]
    fn page_is_self_contained() {
        let html = page().render();
        let lower = html.to_lowercase();
        for attr in ["src=", "href="] {
            for (i, _) in lower.match_indices(attr) {
                let v = lower[i + attr.len()..].trim_start_matches(['"', '\'']);
                assert!(
                    !v.starts_with("http:") && !v.starts_with("https:") && !v.starts_with("//"),
                    "external {attr} at {i}"
                );
            }
        }
        assert!(!lower.contains("@import") && !lower.contains("url("), "no external CSS resources");
        assert!(!lower.contains("<link") && !lower.contains("<img"), "nothing loaded from outside");
    }

    #[test]
    fn table_of_contents_links_every_section() {
        let html = page().render();
        assert!(html.contains("<a href=\"#sec-1\">Intro &amp; &lt;script&gt;</a>"));
        assert!(html.contains("<a href=\"#sec-2\">Plots</a>"));
        assert!(html.contains("<section id=\"sec-1\">") && html.contains("<section id=\"sec-2\">"));
        assert_eq!(html.matches("<section").count(), html.matches("</section>").count());
        assert!(Page::new("no sections").render().find("class=\"toc\"").is_none());
    }

    #[test]
    fn render_is_deterministic_and_write_is_atomic() {
        assert_eq!(page().render(), page().render());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/report.html");
        page().write(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), page().render());
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temp file left behind");
    }
}
