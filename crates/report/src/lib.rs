//! Building blocks of mismatch's report: one self-contained HTML page (no network, no external
//! fonts or scripts) with inline SVG plots, tables and headline numbers.
//!
//! - [`svg`]: line plots with CI bands and grouped bar charts, as SVG strings.
//! - [`html`]: the page builder ([`Page`]).
//! - [`fit`]: Gao, Schulman & Hilton (2022) over-optimisation curves fitted to (√KL, gold) points.
//! - [`browser`]: renders a page in headless Chromium and reads back whether every plot drew.

pub mod browser;
pub mod fit;
pub mod html;
pub mod svg;

pub use browser::{check_in_chromium, BrowserCheck};
pub use fit::{fit_bon, fit_rl, Fit, Form};
pub use html::Page;
pub use svg::{BarChart, Bars, LinePlot, Series};
