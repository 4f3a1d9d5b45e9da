//! `mismatch eval rank`: ratings of N models from pairwise judgements, as Chatbot Arena computes
//! them (Bradley–Terry by maximum likelihood, or online Elo), with bootstrap intervals.

use super::io::{records, OutDir, Record};
use anyhow::{anyhow, bail, Result};
use clap::{Args, ValueEnum};
use mismatch_eval::arena::{self, Arena, Options};
use mismatch_eval::Ci;
use mismatch_report::{BarChart, Bars, Page};
use serde::Serialize;
use std::path::PathBuf;

#[derive(Args)]
pub struct RankArgs {
    /// Pairwise judgements, JSONL or a JSON array. Each row names `model_a` and `model_b` and
    /// gives `winner` (`model_a`, `model_b`, `tie`, `tie (bothbad)`: Chatbot Arena's battles) or
    /// `outcome` (model_a's share of the win, in [0, 1]). AlpacaEval annotations
    /// (`generator_1`, `generator_2`, `preference` in [1, 2]) are read too.
    #[arg(long)]
    pub judgements: PathBuf,
    /// `bt`: Bradley–Terry maximum likelihood (order-free); `elo`: online Elo in file order.
    #[arg(long, value_enum, default_value = "bt")]
    pub method: Method,
    /// Bootstrap resamples of the judgements for the intervals.
    #[arg(long, default_value_t = 1000)]
    pub resamples: usize,
    /// `MODEL=RATING`: shift the ratings so this model has this rating (the Arena pins one model).
    #[arg(long)]
    pub anchor: Option<String>,
    /// Elo's K factor (--method elo).
    #[arg(long, default_value_t = arena::ELO_K)]
    pub k_factor: f64,
    /// Print the pair to judge next (the pair that most lowers the expected number of
    /// misordered pairs) after the ratings.
    #[arg(long)]
    pub suggest: bool,
    /// Output directory: rank.json, rank.html.
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Clone, Copy, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Bt,
    Elo,
}

#[derive(Serialize)]
struct Row {
    model: String,
    rating: Ci,
    /// Rank 1 = best, with its bootstrap interval (BT only).
    #[serde(skip_serializing_if = "Option::is_none")]
    rank: Option<Ci>,
    /// The Arena's rank (UB): 1 + models whose interval lies wholly above.
    rank_ub: usize,
    battles: usize,
}

#[derive(Serialize)]
struct Summary {
    judgements: String,
    method: Method,
    n_judgements: usize,
    resamples: usize,
    seed: u64,
    /// Best first.
    models: Vec<Row>,
    /// `win_prob[i][j]`: P(model i beats model j) under the fit, in the order of `models`
    /// (BT only).
    #[serde(skip_serializing_if = "Option::is_none")]
    win_prob: Option<Vec<Vec<f64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_pair: Option<(String, String)>,
}

pub fn run(a: RankArgs) -> Result<()> {
    if !(a.k_factor > 0.0 && a.k_factor.is_finite()) {
        bail!("--k-factor must be a positive number (got {})", a.k_factor);
    }
    let rows = records(&a.judgements)?;
    let mut named = Vec::with_capacity(rows.len());
    for r in &rows {
        named.push(battle(r)?);
    }
    let arena = Arena::from_named(&named)?;
    if arena.models.len() < 2 {
        bail!("{}: the judgements name only one model", a.judgements.display());
    }
    let anchor = match &a.anchor {
        None => None,
        Some(s) => {
            let (m, r) = s.rsplit_once('=').ok_or_else(|| anyhow!("--anchor must be MODEL=RATING (got {s:?})"))?;
            let r: f64 = r.trim().parse().map_err(|_| anyhow!("--anchor {s:?}: {r:?} is not a number"))?;
            let i = arena.index(m).ok_or_else(|| anyhow!("--anchor: model {m:?} is not in the judgements"))?;
            Some((i, r))
        }
    };
    let k = arena.models.len();
    let (ratings, ranks, win_prob) = match a.method {
        Method::Bt => {
            let opts = Options { anchor, resamples: a.resamples, seed: a.seed, ..Options::default() };
            let lb = arena.leaderboard(&opts)?;
            if lb.failed_resamples > 0 {
                eprintln!("{} of {} resamples had no finite fit and were left out", lb.failed_resamples, a.resamples);
            }
            (lb.rating, Some(lb.rank), Some(lb.win_prob))
        }
        Method::Elo => {
            let mut r = arena::online_elo_intervals(k, &arena.battles, a.k_factor, a.resamples, a.seed)?;
            if let Some((i, target)) = anchor {
                let shift = target - r[i].mean;
                for c in &mut r {
                    *c = Ci { mean: c.mean + shift, lo: c.lo + shift, hi: c.hi + shift, n: c.n };
                }
            }
            (r, None, None)
        }
    };
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&i, &j| ratings[j].mean.total_cmp(&ratings[i].mean).then(i.cmp(&j)));
    let models = order
        .iter()
        .map(|&i| Row {
            model: arena.models[i].clone(),
            rating: ratings[i],
            rank: ranks.as_ref().map(|r| r[i]),
            rank_ub: 1 + ratings.iter().filter(|o| o.lo > ratings[i].hi).count(),
            battles: ratings[i].n,
        })
        .collect();
    let next_pair = if a.suggest {
        let (i, j) = arena::next_pair(k, &arena.battles, arena::RIDGE)?;
        Some((arena.models[i].clone(), arena.models[j].clone()))
    } else {
        None
    };
    let summary = Summary {
        judgements: a.judgements.display().to_string(),
        method: a.method,
        n_judgements: arena.battles.len(),
        resamples: a.resamples,
        seed: a.seed,
        models,
        win_prob: win_prob.map(|w| order.iter().map(|&i| order.iter().map(|&j| w[i][j]).collect()).collect()),
        next_pair,
    };
    print(&summary);
    let out = OutDir::create(&a.out)?;
    let json = out.json("rank.json", &summary)?;
    let html = out.page("rank.html", &page(&summary))?;
    eprintln!("wrote {} and {}", json.display(), html.display());
    Ok(())
}

/// `(model_a, model_b, model_a's score)` of one row.
fn battle(r: &Record) -> Result<(String, String, f64)> {
    if r.fields.contains_key("generator_1") && !r.fields.contains_key("model_a") {
        let p = r
            .opt_f64("preference")?
            .filter(|p| !p.is_nan())
            .ok_or_else(|| r.error("preference", "missing: an annotation without a verdict cannot be ranked"))?;
        let outcome = match p {
            0.0 => 0.5,
            p if (1.0..=2.0).contains(&p) => 2.0 - p,
            p => return Err(r.error("preference", format!("{p} is not in [1, 2] (or 0 for a draw)"))),
        };
        return Ok((r.str("generator_1")?.to_string(), r.str("generator_2")?.to_string(), outcome));
    }
    let (a, b) = (r.str("model_a")?, r.str("model_b")?);
    if a == b {
        return Err(r.error("model_b", format!("model {a:?} against itself")));
    }
    let outcome = if r.fields.contains_key("winner") {
        match r.str("winner")? {
            "model_a" => 1.0,
            "model_b" => 0.0,
            "tie" | "tie (bothbad)" => 0.5,
            w => return Err(r.error("winner", format!("{w:?} is not model_a, model_b, tie or \"tie (bothbad)\""))),
        }
    } else {
        match r.opt_f64("outcome")? {
            Some(o) if (0.0..=1.0).contains(&o) => o,
            Some(o) => return Err(r.error("outcome", format!("{o} is outside [0, 1]"))),
            None => return Err(r.error("winner", "missing (or give `outcome`)")),
        }
    };
    Ok((a.to_string(), b.to_string(), outcome))
}

fn print(s: &Summary) {
    println!("{:<4} {:<32} {:>26} {:>8} {:>8}", "rank", "model", "rating [95% CI]", "rank UB", "battles");
    for (i, m) in s.models.iter().enumerate() {
        println!("{:<4} {:<32} {:>26} {:>8} {:>8}", i + 1, m.model, m.rating.fmt(1), m.rank_ub, m.battles);
    }
    if let Some((a, b)) = &s.next_pair {
        println!("judge next: {a} vs {b}");
    }
}

fn page(s: &Summary) -> Page {
    let method = match s.method {
        Method::Bt => "Bradley–Terry maximum likelihood",
        Method::Elo => "online Elo (in file order)",
    };
    let mut page = Page::new("Model ratings from pairwise judgements");
    page.headline(&[
        ("judgements", s.n_judgements.to_string()),
        ("models", s.models.len().to_string()),
        ("top", s.models[0].model.clone()),
    ]);
    page.section("Ratings");
    page.paragraph(format!(
        "{} from {} on the Elo scale (400 points per factor of 10 in the odds), with 95% percentile intervals \
         over {} bootstrap resamples of the judgements (seed {}).",
        method, s.judgements, s.resamples, s.seed
    ));
    let centre = s.models.iter().map(|m| m.rating.mean).sum::<f64>() / s.models.len() as f64;
    page.plot(
        BarChart {
            title: "Rating relative to the mean, with 95% intervals".into(),
            x_label: "model".into(),
            y_label: "rating − mean".into(),
            categories: s.models.iter().map(|m| m.model.clone()).collect(),
            series: vec![Bars {
                name: String::new(),
                values: s.models.iter().map(|m| m.rating.mean - centre).collect(),
                ci: Some(s.models.iter().map(|m| (m.rating.lo - centre, m.rating.hi - centre)).collect()),
            }],
        }
        .to_svg(),
    );
    let rows: Vec<Vec<String>> = s
        .models
        .iter()
        .map(|m| {
            vec![
                m.model.clone(),
                m.rating.fmt(1),
                m.rank.as_ref().map_or("–".into(), |r| format!("{:.0} [{:.0}, {:.0}]", r.mean, r.lo, r.hi)),
                m.rank_ub.to_string(),
                m.battles.to_string(),
            ]
        })
        .collect();
    page.table(&["model", "rating [95% CI]", "rank [95% CI]", "rank (UB)", "battles"], &rows);
    if let Some(w) = &s.win_prob {
        page.section("Win probabilities");
        page.paragraph("P(row model beats column model) under the Bradley–Terry fit.");
        let mut headers = vec!["".to_string()];
        headers.extend(s.models.iter().map(|m| m.model.clone()));
        let rows: Vec<Vec<String>> = s
            .models
            .iter()
            .zip(w)
            .map(|(m, row)| {
                let mut cells = vec![m.model.clone()];
                cells.extend(row.iter().map(|p| format!("{p:.3}")));
                cells
            })
            .collect();
        page.table(&headers, &rows);
    }
    if let Some((a, b)) = &s.next_pair {
        page.paragraph(format!("Judge next: {a} vs {b}."));
    }
    page
}
