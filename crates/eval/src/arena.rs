//! Ratings of N models from pairwise judgements, as Chatbot Arena computes them (Chiang et al.
//! 2024, "Chatbot Arena: An Open Platform for Evaluating LLMs by Human Preference", §5, and its
//! notebook's `compute_mle_elo`, `compute_online_elo` and `get_bootstrap_result`).
//!
//! - **Bradley–Terry by maximum likelihood** (Bradley & Terry 1952, "Rank Analysis of Incomplete
//!   Block Designs", Biometrika 39): `P(i beats j) = σ(βᵢ − βⱼ)`. A [`Battle`] with outcome `y`
//!   (1 a wins, 0 b wins, ½ tie) adds `y log σ(β_a − β_b) + (1 − y) log σ(β_b − β_a)` to the
//!   log-likelihood, so a tie is half a win each way — the notebook's weighting (wins 2, ties 1 in
//!   each direction of a logistic regression without intercept on the ±ln 10 design matrix). With
//!   `Wᵢⱼ` i's score against j (wins plus half the ties) and `nᵢⱼ = Wᵢⱼ + Wⱼᵢ`,
//!   `ℓ(β) = Σ_{i≠j} Wᵢⱼ log σ(βᵢ − βⱼ) − (λ/2) Σᵢ βᵢ²`,
//!   `∂ℓ/∂βᵢ = Σⱼ (Wᵢⱼ − nᵢⱼ pᵢⱼ) − λβᵢ` and
//!   `∇²ℓ = −Σ_{i<j} nᵢⱼ pᵢⱼ(1 − pᵢⱼ)(eᵢ − eⱼ)(eᵢ − eⱼ)ᵀ − λI`, `pᵢⱼ = σ(βᵢ − βⱼ)`. ℓ is concave;
//!   it is maximised by Newton's method, with a halving line search while steps are large.
//! - **Gauge.** Without the ridge ℓ is unchanged by adding a constant to every β, so only
//!   differences are identified; the fit fixes `Σβ = 0` over the models that played (where the
//!   notebook's lbfgs from zero lands too: every row of its design sums to 0, so its gradient never
//!   leaves that plane). Each Newton system adds `c·11ᵀ/m` (m models, c the mean curvature) to
//!   the Hessian, whose null space is `1`: that makes it solvable and, as the gradient is ⟂ 1,
//!   keeps the step in the plane.
//! - **Ridge** λ = [`RIDGE`] = 1e-6 by default. The MLE exists iff every split of the models into
//!   two groups has a win (or a tie) each way across it (Zermelo 1929; Ford 1957); a model that
//!   wins every battle has none, its β runs off to infinity. The ridge keeps it finite (about
//!   ln(n/λ) logits above the rest, n its battles) and moves ordinary ratings by O(λ/n) logits
//!   (4e-8 on the 120-battle fixture); centred at 0, it agrees with the gauge. λ = 0 is the
//!   notebook's unpenalised fit, and then a split without a win one way is an error.
//! - **Elo scale**, as the Arena reports: `R = 400·β/ln 10 + 1000` (scale 400, base 10, initial
//!   rating 1000), so `P(i beats j) = 1/(1 + 10^{(Rⱼ − Rᵢ)/400})` and the ratings average 1000.
//!   With an anchor `(m, r)` all ratings shift so that `R_m = r` (the Arena pins
//!   Mixtral-8x7B-Instruct at 1114).
//! - **Online Elo** (Elo 1978; `compute_online_elo`): in battle order,
//!   `E_a = 1/(1 + 10^{(R_b − R_a)/400})`, `R_a += K(y − E_a)`, `R_b += K((1 − y) − (1 − E_a))`,
//!   K = [`ELO_K`] = 4, all from 1000. It depends on the order of the battles — recent battles
//!   weigh more — which is why the Arena moved to the MLE, which does not.
//! - **Intervals** (`get_bootstrap_result`): resample the battles with replacement
//!   ([`Resampler`], ChaCha8, seeded), refit (from the full-data fit), and take each rating's
//!   percentile interval ([`percentile_ci`]). Only contrasts are identified, so with an anchor the
//!   interval is that of the difference to the anchor (the anchor's own is a point); without one,
//!   of the centred rating (Σβ = 0 in every resample). A model missing from a resample gives no
//!   value there.
//! - **Ranks**: 1 + the number of models rated strictly above, with the percentile interval of
//!   that rank over the resamples; and the Arena's rank (UB): 1 + the number of models whose
//!   lower bound lies above this model's upper bound.
//! - **Adaptive pairs** ([`next_pair`]): judge next the pair whose battle would most lower the
//!   expected number of misordered pairs `Σ_{a<b} Φ(−|β_a − β_b|/se_ab)`, se from the observed
//!   information.

use crate::stats::{normal_cdf, percentile_ci, sigmoid, softplus, Ci, Resampler, RESAMPLES};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Points on the Elo scale per factor of [`BASE`] in the odds.
pub const SCALE: f64 = 400.0;
/// Base of the Elo odds.
pub const BASE: f64 = 10.0;
/// Mean rating (and every model's start in online Elo).
pub const INIT_RATING: f64 = 1000.0;
/// Online Elo's K (the Arena notebook's).
pub const ELO_K: f64 = 4.0;
/// Default ridge λ on `(λ/2) Σβ²` (logit units).
pub const RIDGE: f64 = 1e-6;

/// Newton iterations before giving up (a separable graph with λ = 0 climbs about one logit each).
const MAX_ITER: usize = 200;
/// Converged when a full Newton step moves no β by more than this (logits); Newton is quadratic
/// there, so the error left is far below it.
const STEP_TOL: f64 = 1e-10;
/// Steps larger than this (logits) go through the line search; smaller ones are in Newton's
/// quadratic region and are taken whole, where roundoff could fool a sufficient-decrease test.
const LINE_SEARCH_ABOVE: f64 = 1e-3;

/// One judgement: `outcome` 1 if model `a` won, 0 if `b` won, 0.5 for a tie (any value in [0, 1]
/// counts as that fraction of a win for `a`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Battle {
    pub a: usize,
    pub b: usize,
    pub outcome: f64,
}

/// Models by name and their battles by index.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Arena {
    pub models: Vec<String>,
    pub battles: Vec<Battle>,
}

impl Arena {
    /// Battles given as `(model a, model b, outcome)`; models are numbered in order of first
    /// appearance.
    pub fn from_named<S: AsRef<str>>(battles: &[(S, S, f64)]) -> Result<Arena> {
        let mut arena = Arena::default();
        for (a, b, outcome) in battles {
            let (a, b) = (arena.intern(a.as_ref()), arena.intern(b.as_ref()));
            arena.battles.push(Battle { a, b, outcome: *outcome });
        }
        check(arena.models.len(), &arena.battles)?;
        Ok(arena)
    }

    fn intern(&mut self, name: &str) -> usize {
        self.index(name).unwrap_or_else(|| {
            self.models.push(name.to_string());
            self.models.len() - 1
        })
    }

    /// The index of a model.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m == name)
    }

    /// [`leaderboard`] over these battles.
    pub fn leaderboard(&self, opts: &Options) -> Result<Leaderboard> {
        leaderboard(self.models.len(), &self.battles, opts)
    }

    /// [`online_elo`] over these battles, in order.
    pub fn online_elo(&self, k_factor: f64) -> Result<Vec<f64>> {
        online_elo(self.models.len(), &self.battles, k_factor)
    }
}

/// How [`leaderboard`] fits and resamples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Options {
    /// λ of the ridge `(λ/2) Σβ²` (module doc); 0 for the unpenalised MLE.
    pub ridge: f64,
    /// `(model, rating)`: shift all ratings so this model has this rating.
    pub anchor: Option<(usize, f64)>,
    /// Bootstrap resamples of the battles (0: no intervals, lo = hi = the estimate).
    pub resamples: usize,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options { ridge: RIDGE, anchor: None, resamples: RESAMPLES, seed: 0 }
    }
}

/// Bradley–Terry ratings with their intervals.
#[derive(Debug, Clone, Serialize)]
pub struct Leaderboard {
    /// The fit in logits, Σβ = 0 over the models that played; NaN for a model without battles.
    pub beta: Vec<f64>,
    /// Elo-scale rating with its 95% bootstrap interval; `n` is the number of battles the model
    /// played.
    pub rating: Vec<Ci>,
    /// `win_prob[i][j]` = P(i beats j) = σ(βᵢ − βⱼ).
    pub win_prob: Vec<Vec<f64>>,
    /// Rank (1 = best) with its bootstrap interval.
    pub rank: Vec<Ci>,
    /// The Arena's rank (UB): 1 + the number of models whose interval lies wholly above.
    pub rank_ub: Vec<usize>,
    /// Resamples whose fit had no finite maximum (only with ridge 0); they are left out.
    pub failed_resamples: usize,
}

/// Rejects battles with an index out of `0..k`, a model against itself, or an outcome outside
/// [0, 1].
fn check(k: usize, battles: &[Battle]) -> Result<()> {
    for (t, b) in battles.iter().enumerate() {
        if b.a >= k || b.b >= k {
            return Err(Error::Usage(format!("battle {t}: model index out of 0..{k}")));
        }
        if b.a == b.b {
            return Err(Error::Usage(format!("battle {t}: model {} against itself", b.a)));
        }
        if !(0.0..=1.0).contains(&b.outcome) {
            return Err(Error::Usage(format!("battle {t}: outcome {} outside [0, 1]", b.outcome)));
        }
    }
    Ok(())
}

/// The battles summed per pair: `(i, j, Wᵢⱼ, nᵢⱼ)` for i < j with nᵢⱼ > 0, and which models
/// played. The likelihood depends on the battles only through these.
struct Scores {
    pairs: Vec<(usize, usize, f64, f64)>,
    played: Vec<bool>,
}

impl Scores {
    fn new<'a>(k: usize, battles: impl Iterator<Item = &'a Battle>) -> Scores {
        // w[i·k + j]: i's score against j.
        let mut w = vec![0.0; k * k];
        let mut played = vec![false; k];
        for b in battles {
            w[b.a * k + b.b] += b.outcome;
            w[b.b * k + b.a] += 1.0 - b.outcome;
            played[b.a] = true;
            played[b.b] = true;
        }
        let mut pairs = Vec::new();
        for i in 0..k {
            for j in i + 1..k {
                let n = w[i * k + j] + w[j * k + i];
                if n > 0.0 {
                    pairs.push((i, j, w[i * k + j], n));
                }
            }
        }
        Scores { pairs, played }
    }

    /// The gradient and Hessian (k×k, row-major) of −ℓ at β, the Hessian with the gauge term
    /// `c·11ᵀ/m` over the m models that played, c their mean curvature (module doc). A model
    /// without battles gets an identity row and a zero gradient, so Newton leaves it put.
    fn gradient_hessian(&self, beta: &[f64], ridge: f64) -> (Vec<f64>, Vec<f64>) {
        let k = self.played.len();
        let m = self.played.iter().filter(|&&p| p).count();
        let mut g = vec![0.0; k];
        let mut h = vec![0.0; k * k];
        for &(i, j, w, n) in &self.pairs {
            let p = sigmoid(beta[i] - beta[j]);
            let r = n * p - w;
            g[i] += r;
            g[j] -= r;
            let c = n * p * (1.0 - p);
            h[i * k + i] += c;
            h[j * k + j] += c;
            h[i * k + j] -= c;
            h[j * k + i] -= c;
        }
        let c = (0..k).filter(|&i| self.played[i]).map(|i| h[i * k + i]).sum::<f64>() / m.max(1) as f64;
        let c = c.max(f64::MIN_POSITIVE);
        for i in 0..k {
            if !self.played[i] {
                h[i * k + i] = 1.0;
                continue;
            }
            g[i] += ridge * beta[i];
            h[i * k + i] += ridge;
            for j in (0..k).filter(|&j| self.played[j]) {
                h[i * k + j] += c / m as f64;
            }
        }
        (g, h)
    }

    /// −ℓ(β) (module doc).
    fn objective(&self, beta: &[f64], ridge: f64) -> f64 {
        let nll: f64 = self
            .pairs
            .iter()
            .map(|&(i, j, w, n)| {
                let d = beta[i] - beta[j];
                w * softplus(-d) + (n - w) * softplus(d)
            })
            .sum();
        let ridge_term: f64 = beta.iter().zip(&self.played).filter(|(_, &p)| p).map(|(b, _)| b * b).sum();
        nll + 0.5 * ridge * ridge_term
    }
}

/// Solves `h x = g` for symmetric positive-definite `h` (k×k, row-major) by Cholesky; `None`
/// when a pivot is not clearly positive (a singular system).
fn cholesky_solve(mut h: Vec<f64>, k: usize, g: &[f64]) -> Option<Vec<f64>> {
    let max_diag = (0..k).map(|i| h[i * k + i]).fold(0.0, f64::max);
    for j in 0..k {
        let mut d = h[j * k + j];
        for p in 0..j {
            d -= h[j * k + p] * h[j * k + p];
        }
        // Also catches a NaN pivot.
        if d.is_nan() || d <= 1e-13 * max_diag {
            return None;
        }
        let d = d.sqrt();
        h[j * k + j] = d;
        for i in j + 1..k {
            let mut s = h[i * k + j];
            for p in 0..j {
                s -= h[i * k + p] * h[j * k + p];
            }
            h[i * k + j] = s / d;
        }
    }
    // L y = g, then Lᵀ x = y.
    let mut x = g.to_vec();
    for i in 0..k {
        for p in 0..i {
            x[i] -= h[i * k + p] * x[p];
        }
        x[i] /= h[i * k + i];
    }
    for i in (0..k).rev() {
        for p in i + 1..k {
            x[i] -= h[p * k + i] * x[p];
        }
        x[i] /= h[i * k + i];
    }
    Some(x)
}

fn no_maximum() -> Error {
    Error::Usage(
        "Bradley-Terry has no finite maximum: some group of models never loses (or never wins, or never \
         meets the rest); use a ridge > 0"
            .into(),
    )
}

/// Newton's method on −ℓ from `start` (module doc). Models that did not play get NaN.
fn newton(s: &Scores, ridge: f64, start: &[f64]) -> Result<Vec<f64>> {
    let k = s.played.len();
    let mut beta: Vec<f64> =
        start.iter().zip(&s.played).map(|(&b, &p)| if p && b.is_finite() { b } else { 0.0 }).collect();
    center(&mut beta, &s.played);
    for _ in 0..MAX_ITER {
        let (g, h) = s.gradient_hessian(&beta, ridge);
        let step = cholesky_solve(h, k, &g).ok_or_else(no_maximum)?;
        let size = step.iter().fold(0.0, |a: f64, s| a.max(s.abs()));
        if !size.is_finite() {
            return Err(no_maximum());
        }
        let mut t = 1.0;
        if size > LINE_SEARCH_ABOVE {
            // Halve until the Armijo condition f(β − t·s) ≤ f(β) − 10⁻⁴·t·gᵀs holds.
            let f0 = s.objective(&beta, ridge);
            let slope: f64 = g.iter().zip(&step).map(|(g, s)| g * s).sum();
            loop {
                let cand: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b - t * s).collect();
                if s.objective(&cand, ridge) <= f0 - 1e-4 * t * slope || t < 1e-10 {
                    break;
                }
                t *= 0.5;
            }
        }
        for (b, d) in beta.iter_mut().zip(&step) {
            *b -= t * d;
        }
        if size <= STEP_TOL {
            // Roundoff could drift the plane by ~1e-16 per step; put it back.
            center(&mut beta, &s.played);
            for (b, &p) in beta.iter_mut().zip(&s.played) {
                if !p {
                    *b = f64::NAN;
                }
            }
            return Ok(beta);
        }
    }
    Err(no_maximum())
}

/// Shifts the models that played to Σβ = 0.
fn center(beta: &mut [f64], played: &[bool]) {
    let m = played.iter().filter(|&&p| p).count();
    if m == 0 {
        return;
    }
    let mean = beta.iter().zip(played).filter(|(_, &p)| p).map(|(b, _)| b).sum::<f64>() / m as f64;
    for (b, &p) in beta.iter_mut().zip(played) {
        if p {
            *b -= mean;
        }
    }
}

/// Bradley–Terry β (logits) maximising the log-likelihood with ties as half wins and ridge λ
/// (module doc), Σβ = 0 over the models that played; NaN for a model without battles.
pub fn fit_bt(k: usize, battles: &[Battle], ridge: f64) -> Result<Vec<f64>> {
    check(k, battles)?;
    if !(ridge >= 0.0 && ridge.is_finite()) {
        return Err(Error::Usage(format!("ridge {ridge} must be finite and >= 0")));
    }
    newton(&Scores::new(k, battles.iter()), ridge, &vec![0.0; k])
}

/// β in logits on the Elo scale: `400·β/ln 10 + 1000`.
pub fn elo_scale(beta: f64) -> f64 {
    SCALE * beta / BASE.ln() + INIT_RATING
}

/// Elo-scale ratings of `beta`, shifted so that `anchor.0` has rating `anchor.1` when given.
pub fn ratings(beta: &[f64], anchor: Option<(usize, f64)>) -> Vec<f64> {
    let mut r: Vec<f64> = beta.iter().map(|&b| elo_scale(b)).collect();
    if let Some((m, at)) = anchor {
        let shift = at - r[m];
        r.iter_mut().for_each(|x| *x += shift);
    }
    r
}

/// `P[i][j]` = P(i beats j) = σ(βᵢ − βⱼ) (0.5 on the diagonal).
pub fn win_matrix(beta: &[f64]) -> Vec<Vec<f64>> {
    beta.iter().map(|bi| beta.iter().map(|bj| sigmoid(bi - bj)).collect()).collect()
}

/// Elo's expected score of a player rated `ra` against one rated `rb`: `1/(1 + 10^{(rb − ra)/400})`.
pub fn expected_score(ra: f64, rb: f64) -> f64 {
    1.0 / (1.0 + BASE.powf((rb - ra) / SCALE))
}

/// Online Elo over the battles in order (module doc), every model starting at 1000. The result
/// depends on the order.
pub fn online_elo(k: usize, battles: &[Battle], k_factor: f64) -> Result<Vec<f64>> {
    check(k, battles)?;
    let mut r = vec![INIT_RATING; k];
    for b in battles {
        let ea = expected_score(r[b.a], r[b.b]);
        r[b.a] += k_factor * (b.outcome - ea);
        r[b.b] += k_factor * ((1.0 - b.outcome) - (1.0 - ea));
    }
    Ok(r)
}

/// Online Elo with percentile intervals, as the Arena notebook's `get_bootstrap_result` over
/// `compute_online_elo`: each resample draws the battles with replacement (in the drawn order)
/// and replays them. A model missing from a resample keeps 1000 there, as in the notebook.
pub fn online_elo_intervals(
    k: usize,
    battles: &[Battle],
    k_factor: f64,
    resamples: usize,
    seed: u64,
) -> Result<Vec<Ci>> {
    let point = online_elo(k, battles, k_factor)?;
    let mut games = vec![0usize; k];
    for b in battles {
        games[b.a] += 1;
        games[b.b] += 1;
    }
    let mut boots = vec![Vec::with_capacity(resamples); k];
    let mut resampler = Resampler::new(battles.len(), seed);
    for _ in 0..resamples {
        let drawn: Vec<Battle> = resampler.draw().iter().map(|&t| battles[t]).collect();
        for (i, r) in online_elo(k, &drawn, k_factor)?.into_iter().enumerate() {
            boots[i].push(r);
        }
    }
    Ok((0..k)
        .map(|i| {
            if resamples == 0 {
                Ci::point(point[i], games[i])
            } else {
                percentile_ci(point[i], games[i], std::mem::take(&mut boots[i]))
            }
        })
        .collect())
}

/// 1 + the number of ratings strictly above each (NaN for NaN ratings).
fn rank_of(r: &[f64]) -> Vec<f64> {
    r.iter().map(|&x| if x.is_nan() { f64::NAN } else { 1.0 + r.iter().filter(|&&y| y > x).count() as f64 }).collect()
}

/// Bradley–Terry ratings of `k` models from their battles, with bootstrap intervals of ratings
/// and ranks and the win-probability matrix (module doc).
pub fn leaderboard(k: usize, battles: &[Battle], opts: &Options) -> Result<Leaderboard> {
    let beta = fit_bt(k, battles, opts.ridge)?;
    if battles.is_empty() {
        return Err(Error::Usage("no battles".into()));
    }
    if let Some((m, _)) = opts.anchor {
        if m >= k || beta[m].is_nan() {
            return Err(Error::Usage(format!("anchor model {m} has no battles")));
        }
    }
    let point = ratings(&beta, opts.anchor);
    let mut games = vec![0usize; k];
    for b in battles {
        games[b.a] += 1;
        games[b.b] += 1;
    }
    let mut boot_r = vec![Vec::with_capacity(opts.resamples); k];
    let mut boot_rank = vec![Vec::with_capacity(opts.resamples); k];
    let mut failed = 0;
    let mut resampler = Resampler::new(battles.len(), opts.seed);
    for _ in 0..opts.resamples {
        let s = Scores::new(k, resampler.draw().iter().map(|&t| &battles[t]));
        // The full-data fit is a close start: a resample converges in a few steps.
        let Ok(b) = newton(&s, opts.ridge, &beta) else {
            failed += 1;
            continue;
        };
        let r = ratings(&b, opts.anchor);
        for (i, rank) in rank_of(&r).into_iter().enumerate() {
            boot_r[i].push(r[i]);
            boot_rank[i].push(rank);
        }
    }
    let interval = |point: f64, n: usize, boots: Vec<f64>| {
        if opts.resamples == 0 || point.is_nan() {
            Ci::point(point, n)
        } else {
            percentile_ci(point, n, boots)
        }
    };
    let rating: Vec<Ci> = (0..k).map(|i| interval(point[i], games[i], std::mem::take(&mut boot_r[i]))).collect();
    let point_rank = rank_of(&point);
    let rank = (0..k).map(|i| interval(point_rank[i], games[i], std::mem::take(&mut boot_rank[i]))).collect();
    let rank_ub = rating.iter().map(|c| 1 + rating.iter().filter(|o| o.lo > c.hi).count()).collect();
    Ok(Leaderboard { win_prob: win_matrix(&beta), beta, rating, rank, rank_ub, failed_resamples: failed })
}

/// The next pair to judge, adaptively: the pair whose one more battle most lowers the expected
/// number of pairs the fit has the wrong way round, `D = Σ_{a<b} Φ(−|β_a − β_b|/se_ab)` (the
/// expected Kendall distance to the truth under the normal approximation), ties to the lowest
/// indices. `se²_ab = vᵀΣv`, `v = e_a − e_b`, Σ = H⁻¹ the inverse observed information at the
/// ridge fit over all `k` models, so a model without battles has the prior variance 1/λ and is
/// drawn early; a battle of (i, j) would add `p(1 − p)·vvᵀ` to H, p = σ(βᵢ − βⱼ), and D is
/// evaluated at that Σ with β kept (one-step lookahead on the variances; pairs with equal β count
/// ½ whatever their variance, so exact ties give no preference). A greedy relative of
/// the Arena's active sampling (Chiang et al. 2024, §5.2, which draws pairs to shrink the
/// intervals fastest); against uniform pairs see tests/arena.rs. Needs `ridge > 0`.
pub fn next_pair(k: usize, battles: &[Battle], ridge: f64) -> Result<(usize, usize)> {
    check(k, battles)?;
    if k < 2 || !(ridge > 0.0 && ridge.is_finite()) {
        return Err(Error::Usage(format!("next_pair needs k >= 2 models and ridge > 0 (k {k}, ridge {ridge})")));
    }
    let mut s = Scores::new(k, battles.iter());
    // Every model under the ridge prior, played or not.
    s.played = vec![true; k];
    let beta = newton(&s, ridge, &vec![0.0; k])?;
    let (_, h) = s.gradient_hessian(&beta, ridge);
    // H⁻¹ column by column. The gauge term in H shares the eigenvector 1 with the rest, so it
    // does not change vᵀH⁻¹v for a contrast v ⟂ 1.
    let cols: Vec<Vec<f64>> = (0..k)
        .map(|j| {
            let e: Vec<f64> = (0..k).map(|i| (i == j) as u8 as f64).collect();
            cholesky_solve(h.clone(), k, &e).ok_or_else(no_maximum)
        })
        .collect::<Result<_>>()?;
    let sigma: Vec<f64> = (0..k * k).map(|ij| cols[ij % k][ij / k]).collect();
    // Expected discordant pairs Σ_{a<b} Φ(−|β_a − β_b|/se_ab) under covariance `cov`.
    let discordant = |cov: &[f64]| {
        let mut total = 0.0;
        for a in 0..k {
            for b in a + 1..k {
                let var = cov[a * k + a] + cov[b * k + b] - 2.0 * cov[a * k + b];
                total += normal_cdf(-(beta[a] - beta[b]).abs() / var.max(1e-300).sqrt());
            }
        }
        total
    };
    let mut best = (f64::INFINITY, (0, 1));
    for i in 0..k {
        for j in i + 1..k {
            // One more battle of (i, j) adds w·vvᵀ to H, w = p(1 − p): Sherman–Morrison,
            // Σ' = Σ − w(Σv)(Σv)ᵀ/(1 + w·vᵀΣv).
            let p = sigmoid(beta[i] - beta[j]);
            let w = p * (1.0 - p);
            let sv: Vec<f64> = (0..k).map(|a| sigma[a * k + i] - sigma[a * k + j]).collect();
            let vsv = sv[i] - sv[j];
            let f = w / (1.0 + w * vsv);
            let next: Vec<f64> = (0..k * k).map(|ab| sigma[ab] - f * sv[ab / k] * sv[ab % k]).collect();
            let score = discordant(&next);
            if score < best.0 {
                best = (score, (i, j));
            }
        }
    }
    Ok(best.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn battles(v: &[(usize, usize, f64)]) -> Vec<Battle> {
        v.iter().map(|&(a, b, outcome)| Battle { a, b, outcome }).collect()
    }

    /// Two models, a beats b 3 times in 4: the MLE solves 4σ(d) = 3, so d = β_a − β_b = ln 3,
    /// 400·log₁₀3 = 190.85 Elo points, split evenly around 1000.
    #[test]
    fn three_wins_in_four_is_ln_3() {
        let v = battles(&[(0, 1, 1.0), (1, 0, 0.0), (0, 1, 1.0), (0, 1, 0.0)]);
        let beta = fit_bt(2, &v, 0.0).unwrap();
        assert!((beta[0] - beta[1] - 3f64.ln()).abs() < 1e-12, "{beta:?}");
        assert!((beta[0] + beta[1]).abs() < 1e-15);
        let r = ratings(&beta, None);
        assert!((r[0] - (1000.0 + 200.0 * 3f64.log10())).abs() < 1e-9, "{r:?}");
        // The default ridge moves it by λ·ln3/1.5 = 7.3e-7 (from 4σ'·δ = −λd/2, σ' = 3/16).
        let beta = fit_bt(2, &v, RIDGE).unwrap();
        let d = beta[0] - beta[1];
        assert!((d - 3f64.ln() + RIDGE * 3f64.ln() / 1.5).abs() < 1e-11, "{d}");
        assert!((win_matrix(&beta)[0][1] - 0.75).abs() < 1e-6);
    }

    /// A tie is half a win each way: one win and one tie is a score of 1.5 to 0.5, the same fit
    /// as three wins and one loss.
    #[test]
    fn ties_are_half_wins() {
        let tie = fit_bt(2, &battles(&[(0, 1, 1.0), (1, 0, 0.5)]), 0.0).unwrap();
        assert!((tie[0] - tie[1] - 3f64.ln()).abs() < 1e-12, "{tie:?}");
        // Three models, ties only: everyone equal.
        let even = fit_bt(3, &battles(&[(0, 1, 0.5), (1, 2, 0.5), (2, 0, 0.5)]), 0.0).unwrap();
        assert!(even.iter().all(|b| b.abs() < 1e-15), "{even:?}");
    }

    /// A cycle a > b > c > a with equal margins is a tie; a chain with a closed form:
    /// a beats b 2–1, b beats c 2–1, no a–c games → β_a − β_b = β_b − β_c = ln 2.
    #[test]
    fn three_models_closed_form() {
        let chain = battles(&[(0, 1, 1.0), (0, 1, 1.0), (0, 1, 0.0), (1, 2, 1.0), (1, 2, 1.0), (2, 1, 1.0)]);
        let b = fit_bt(3, &chain, 0.0).unwrap();
        assert!((b[0] - b[1] - 2f64.ln()).abs() < 1e-12 && (b[1] - b[2] - 2f64.ln()).abs() < 1e-12, "{b:?}");
        assert!(b[1].abs() < 1e-15, "centred: the middle model at 0");
        let cycle = battles(&[(0, 1, 1.0), (1, 2, 1.0), (2, 0, 1.0), (1, 0, 0.5)]);
        let b = fit_bt(3, &cycle, 0.0).unwrap();
        assert!(b.iter().all(|x| x.abs() < 1e-12), "{b:?}");
    }

    /// Online Elo by hand, K = 4: (0 beats 1) E = 0.5 → 1002, 998; (1 ties 2) E₁ =
    /// 1/(1 + 10^{2/400}) = 0.497121800425189 → R₁ = 998 + 4(0.5 − E₁) = 998.011512798299,
    /// R₂ = 999.988487201701; (2 beats 0) E₂ = 1/(1 + 10^{(1002 − R₂)/400}) = 0.497105232728774 →
    /// R₂ = 1002.000066270786, R₀ = 999.988420930915.
    #[test]
    fn online_elo_by_hand() {
        let v = battles(&[(0, 1, 1.0), (1, 2, 0.5), (2, 0, 1.0)]);
        let r = online_elo(3, &v, ELO_K).unwrap();
        let want = [999.988420930915, 998.011512798299, 1002.000066270786];
        for (r, w) in r.iter().zip(want) {
            assert!((r - w).abs() < 1e-9, "{r} vs {w}");
        }
        // Order matters for Elo, not for the MLE.
        let rev: Vec<Battle> = v.iter().rev().copied().collect();
        assert_ne!(online_elo(3, &rev, ELO_K).unwrap(), r);
        let (f, b) = (fit_bt(3, &v, RIDGE).unwrap(), fit_bt(3, &rev, RIDGE).unwrap());
        assert!(f.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12));
    }

    /// Elo intervals: every resample of one repeated battle is that battle n times, so the
    /// interval is a point at the replayed rating; on mixed battles it brackets the point
    /// (here the point is an order effect, not the resample mean) and a seed repeats it.
    #[test]
    fn online_elo_intervals_replay_resamples() {
        let same = battles(&[(0, 1, 1.0); 5]);
        let ci = online_elo_intervals(2, &same, ELO_K, 50, 3).unwrap();
        let r = online_elo(2, &same, ELO_K).unwrap();
        for i in 0..2 {
            assert_eq!((ci[i].lo, ci[i].hi, ci[i].mean, ci[i].n), (r[i], r[i], r[i], 5));
        }
        let mixed = battles(&[(0, 1, 1.0), (1, 2, 0.5), (2, 0, 1.0), (0, 2, 0.0), (1, 0, 1.0), (2, 1, 0.0)]);
        let a = online_elo_intervals(3, &mixed, ELO_K, 200, 7).unwrap();
        assert_eq!(a, online_elo_intervals(3, &mixed, ELO_K, 200, 7).unwrap());
        assert!(a.iter().all(|c| c.lo < c.hi && c.lo <= c.mean && c.mean <= c.hi), "{a:?}");
        assert!(online_elo_intervals(3, &mixed, ELO_K, 0, 7).unwrap().iter().all(|c| c.lo == c.hi));
    }

    /// A model that wins everything: no finite MLE without the ridge; with it, finite, on top,
    /// and the others still ordered.
    #[test]
    fn all_wins_needs_the_ridge() {
        let v = battles(&[(0, 1, 1.0), (0, 2, 1.0), (2, 0, 0.0), (1, 2, 1.0), (2, 1, 1.0), (1, 2, 1.0)]);
        assert!(fit_bt(3, &v, 0.0).is_err());
        let b = fit_bt(3, &v, RIDGE).unwrap();
        assert!(b.iter().all(|x| x.is_finite()) && b[0] > b[1] + 5.0 && b[1] > b[2], "{b:?}");
        assert!(b.iter().sum::<f64>().abs() < 1e-12);
        // Disconnected parts are not comparable without the ridge either.
        let apart = battles(&[(0, 1, 1.0), (1, 0, 1.0), (2, 3, 1.0), (3, 2, 1.0)]);
        assert!(fit_bt(4, &apart, 0.0).is_err());
        assert!(fit_bt(4, &apart, RIDGE).is_ok());
    }

    #[test]
    fn names_map_to_indices_and_bad_input_is_refused() {
        let arena =
            Arena::from_named(&[("gpt", "llama", 1.0), ("llama", "mistral", 0.5), ("mistral", "gpt", 0.0)]).unwrap();
        assert_eq!(arena.models, ["gpt", "llama", "mistral"]);
        assert_eq!(arena.index("mistral"), Some(2));
        assert_eq!(arena.battles[2], Battle { a: 2, b: 0, outcome: 0.0 });
        assert!(Arena::from_named(&[("a", "a", 1.0)]).is_err());
        assert!(Arena::from_named(&[("a", "b", 1.5)]).is_err());
        assert!(Arena::from_named(&[("a", "b", f64::NAN)]).is_err());
        assert!(fit_bt(2, &battles(&[(0, 2, 1.0)]), RIDGE).is_err());
        assert!(fit_bt(2, &battles(&[(0, 1, 1.0)]), -1.0).is_err());
        let opts = Options { anchor: Some((5, 1000.0)), ..Options::default() };
        assert!(arena.leaderboard(&opts).is_err());
    }

    /// The leaderboard: seeded, the anchor pinned (its interval a point), a model without
    /// battles NaN, intervals around the estimates, ranks consistent with the ratings, and
    /// P[i][j] the Elo expectation of the ratings.
    #[test]
    fn leaderboard_anchor_ranks_and_win_matrix() {
        // Model 3 never plays.
        let mut v = Vec::new();
        for t in 0..60 {
            let (a, b) = [(0, 1), (1, 2), (0, 2)][t % 3];
            // a wins 2 in 3 of its games against b.
            v.push(Battle { a, b, outcome: if t % 9 < 6 { 1.0 } else { 0.0 } });
        }
        let opts = Options { anchor: Some((1, 1100.0)), resamples: 300, seed: 5, ..Options::default() };
        let lb = leaderboard(4, &v, &opts).unwrap();
        // NaN ≠ NaN, so compare the printed values.
        assert_eq!(format!("{:?}", leaderboard(4, &v, &opts).unwrap()), format!("{lb:?}"), "seeded");
        assert_eq!(lb.rating[1], Ci::point(1100.0, 40));
        assert!(lb.rating[0].mean > 1100.0 && lb.rating[2].mean < 1100.0);
        for c in &lb.rating[..3] {
            assert!(c.lo <= c.mean && c.mean <= c.hi, "{c:?}");
        }
        assert!(lb.rating[3].mean.is_nan() && lb.beta[3].is_nan());
        assert_eq!((lb.rank[0].mean, lb.rank[1].mean, lb.rank[2].mean), (1.0, 2.0, 3.0));
        assert!(lb.rank[0].lo >= 1.0 && lb.rank[2].hi <= 3.0);
        for i in 0..3 {
            for j in 0..3 {
                let p = expected_score(lb.rating[i].mean, lb.rating[j].mean);
                assert!((lb.win_prob[i][j] - p).abs() < 1e-12);
                assert!((lb.win_prob[i][j] + lb.win_prob[j][i] - 1.0).abs() < 1e-12);
            }
        }
        assert_eq!(lb.failed_resamples, 0);
        // Rank (UB) counts the models wholly above.
        for i in 0..3 {
            let above = (0..3).filter(|&j| lb.rating[j].lo > lb.rating[i].hi).count();
            assert_eq!(lb.rank_ub[i], 1 + above);
        }
        // No resamples: point intervals.
        let none = leaderboard(4, &v, &Options { resamples: 0, ..opts }).unwrap();
        assert_eq!(none.rating[0], Ci::point(lb.rating[0].mean, 40));
    }

    /// The sampler draws a model that never played before a well-measured pair, and needs the
    /// ridge. (When all estimates are equal, D is ½ per pair whatever the variances, so the
    /// lowest indices win: the first pair, like a 10–10 split, gives no reason to move on.)
    #[test]
    fn next_pair_explores_the_unplayed() {
        let v: Vec<Battle> = (0..20).map(|t| Battle { a: 0, b: 1, outcome: (t % 4 != 0) as u8 as f64 }).collect();
        let (i, j) = next_pair(3, &v, RIDGE).unwrap();
        assert!(i == 2 || j == 2, "({i}, {j})");
        assert_eq!(next_pair(3, &[], RIDGE).unwrap(), (0, 1), "all alike: the lowest indices");
        assert!(next_pair(3, &v, 0.0).is_err());
        assert!(next_pair(1, &[], RIDGE).is_err());
    }
}
