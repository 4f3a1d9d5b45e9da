//! Pairwise win rates against a baseline, as AlpacaEval reports them, and the length-controlled
//! win rate of AlpacaEval 2 (Dubois, Galambosi, Liang & Hashimoto 2024, "Length-Controlled
//! AlpacaEval: A Simple Way to Debias Automatic Evaluators", arXiv:2404.04475).
//!
//! A *preference* here is p ∈ [0, 1], the judge's probability that the model's output beats the
//! baseline's (AlpacaEval stores `preference − 1` ∈ [1, 2]; its 0 and 1.5 are draws, p = ½).
//!
//! **Win rate** (AlpacaEval's `AbsoluteScoringRule`): `100 · mean(p)`, ties count half, standard
//! error `100 · s/√n` (s with divisor n − 1), plus a percentile bootstrap interval from
//! [`crate::stats`]. `n_wins = #{p > ½}`, `n_wins_base = #{p < ½}`, `n_draws = #{p = ½}`;
//! the *discrete* win rate rounds each p to 0, ½ or 1 first: `100 (n_wins + n_draws/2)/n`.
//!
//! **Length-controlled win rate** (Dubois et al. 2024, §3; AlpacaEval's `glm_winrate.py`,
//! GLM `length_controlled_v1`): fit, by soft-label logistic regression without intercept,
//!
//! ```text
//! logit P(model ≻ baseline on instruction i) = θ_len · tanh(Δᵢ / sd(Δ)) + θ_diff · γᵢ + θ_m · 1[not gamed]
//! ```
//!
//! where `Δᵢ = len(baseline output) − len(model output)` in characters (Unicode scalar values,
//! as Python's `len`), sd with divisor n − 1 over the model's rows, and γᵢ the *instruction
//! difficulty* (per-instruction intercepts of a joint fit over many models). The LC win rate is
//! the model's predicted win rate with the length difference set to zero:
//! `100 · meanᵢ σ(θ_diff γᵢ + θ_m)`, its standard error the SEM of those predictions.
//! `length_controlled_v1` also trains on the *gamed baselines* (the baseline prompted to be
//! verbose or concise, judged against itself; the `1[not gamed]` term is 0 on those rows) with
//! sample weight λ/2 = 0.1 each, which ties θ_len to pure length effects. `noreg` drops those
//! rows; `minimal` also drops γ.
//!
//! The fit is AlpacaEval's: L1-penalised, `min_θ ‖θ‖₁ + C Σᵢ wᵢ CE(pᵢ, σ(xᵢ·θ))` (liblinear's
//! objective; CE the cross-entropy with the soft label pᵢ), with C chosen from
//! `logspace(−4, 4, 10)` by 5-fold grouped cross-validation on the mean weighted log loss
//! (scikit-learn's `LogisticRegressionCV` with `GroupKFold`, whose fold of training row k of N
//! is `(N − 1 − k) mod 5`), then refitted on all rows. The solver is proximal Newton
//! (coordinate descent on the quadratic model, backtracking line search) run to 1e-12, where
//! liblinear stops at tol 1e-4; `tests/alpaca_eval.rs` matches AlpacaEval's own code.

use crate::stats::{self, sigmoid, softplus, Ci};
use crate::{Error, Result};
use serde::Serialize;

/// Instruction difficulty γ for AlpacaEval's 805 instructions (index = position in AlpacaEval's
/// order): refitted by `scripts/alpaca_eval_difficulty.py` from the public annotation files of
/// the AlpacaEval repository, because AlpacaEval's own fit lives on the Hugging Face hub.
pub const ALPACA_EVAL_DIFFICULTY: &str = include_str!("../data/alpaca_eval_instruction_difficulty.csv");

/// AlpacaEval's 805 instructions as `index,sha256` (the first 16 hex digits of the SHA-256 of the
/// instruction's UTF-8 text), written by `scripts/alpaca_eval_instruction_ids.py`: annotations
/// in any order find their row of [`ALPACA_EVAL_DIFFICULTY`] through [`alpaca_eval_index`].
pub const ALPACA_EVAL_INSTRUCTION_IDS: &str = include_str!("../data/alpaca_eval_instruction_ids.csv");

/// The position of `instruction` in AlpacaEval's order (the index of its difficulty), or `None`
/// when it is not one of AlpacaEval's instructions (the text must match exactly).
pub fn alpaca_eval_index(instruction: &str) -> Option<usize> {
    use sha2::{Digest, Sha256};
    use std::sync::OnceLock;
    static IDS: OnceLock<std::collections::HashMap<String, usize>> = OnceLock::new();
    let ids = IDS.get_or_init(|| {
        ALPACA_EVAL_INSTRUCTION_IDS
            .lines()
            .skip(1)
            .filter_map(|l| l.split_once(','))
            .filter_map(|(i, h)| Some((h.to_string(), i.parse().ok()?)))
            .collect()
    });
    let digest = Sha256::digest(instruction.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    ids.get(&hex).copied()
}

/// The regularisation grid of scikit-learn's `LogisticRegressionCV(Cs=10)`.
fn grid() -> Vec<f64> {
    (0..10).map(|i| 10f64.powf(-4.0 + 8.0 * i as f64 / 9.0)).collect()
}

/// Win rate against the baseline with AlpacaEval's counts.
#[derive(Debug, Clone, Serialize)]
pub struct WinRate {
    /// `100 · mean(p)`, ties half.
    pub win_rate: f64,
    pub standard_error: f64,
    /// 95% percentile-bootstrap interval of `win_rate` (points).
    pub ci: Ci,
    pub n_wins: usize,
    pub n_wins_base: usize,
    pub n_draws: usize,
    pub n_total: usize,
    pub discrete_win_rate: f64,
}

/// Win rate of preferences `p ∈ [0, 1]` (P(model ≻ baseline)); NaN rows are skipped.
pub fn win_rate(preferences: &[f64], seed: u64) -> Result<WinRate> {
    let p: Vec<f64> = preferences.iter().copied().filter(|x| !x.is_nan()).collect();
    if p.is_empty() {
        return Err(Error::Usage("win rate of no preferences".into()));
    }
    if let Some(bad) = p.iter().find(|x| !(0.0..=1.0).contains(*x)) {
        return Err(Error::Usage(format!("preference {bad} is outside [0, 1]")));
    }
    let n = p.len();
    let n_wins = p.iter().filter(|&&x| x > 0.5).count();
    let n_wins_base = p.iter().filter(|&&x| x < 0.5).count();
    let n_draws = n - n_wins - n_wins_base;
    let points: Vec<f64> = p.iter().map(|x| 100.0 * x).collect();
    Ok(WinRate {
        win_rate: stats::mean(&points),
        standard_error: sem(&points),
        ci: stats::mean_ci(&points, seed),
        n_wins,
        n_wins_base,
        n_draws,
        n_total: n,
        discrete_win_rate: 100.0 * (n_wins as f64 + n_draws as f64 / 2.0) / n as f64,
    })
}

/// Standard error of the mean, divisor n − 1 (pandas' `sem`); NaN for n < 2.
fn sem(xs: &[f64]) -> f64 {
    stats::variance(xs).sqrt() / (xs.len() as f64).sqrt()
}

/// Which of AlpacaEval's GLMs to fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Glm {
    /// Length, difficulty and model terms, regularised towards the gamed baselines (λ = 0.2).
    LengthControlledV1,
    /// The same terms without the gamed baselines.
    LengthControlledNoreg,
    /// Length and model terms only.
    LengthControlledMinimal,
}

impl Glm {
    pub fn name(self) -> &'static str {
        match self {
            Glm::LengthControlledV1 => "length_controlled_v1",
            Glm::LengthControlledNoreg => "length_controlled_noreg",
            Glm::LengthControlledMinimal => "length_controlled_minimal",
        }
    }
    fn uses_difficulty(self) -> bool {
        self != Glm::LengthControlledMinimal
    }
}

/// One judged instruction of the model against the baseline.
#[derive(Debug, Clone, Copy)]
pub struct Judged {
    /// Position of the instruction (indexes the difficulty).
    pub index: usize,
    /// P(model ≻ baseline); NaN when the judge gave none (the row is predicted, not trained on).
    pub preference: f64,
    /// Output lengths in characters.
    pub len_model: usize,
    pub len_baseline: usize,
}

/// One row of AlpacaEval's `df_gamed.csv`: a gamed baseline judged against the baseline.
#[derive(Debug, Clone, Copy)]
pub struct GamedRow {
    pub index: usize,
    pub preference: f64,
    /// Its length feature, already standardised within its gamed model.
    pub std_delta_len: f64,
    pub instruction_difficulty: f64,
}

/// The fitted GLM and the length-controlled win rate.
#[derive(Debug, Clone, Serialize)]
pub struct LengthControlled {
    pub glm: Glm,
    /// `100 · mean σ(θ_diff γᵢ + θ_m)` over every judged row.
    pub win_rate: f64,
    pub standard_error: f64,
    /// θ in the order (length, difficulty, model); difficulty is 0 for `minimal`.
    pub coefficients: [f64; 3],
    /// The L1 strength C chosen by cross-validation.
    pub c: f64,
    /// The length-controlled preference of each judged row, in input order.
    #[serde(skip)]
    pub predictions: Vec<f64>,
}

/// Fit AlpacaEval's length-controlled GLM `glm` to one model's judged rows. `difficulty[i]` is γ
/// of instruction i (required unless `minimal`); `gamed` the gamed-baseline rows (required by
/// `v1`, ignored otherwise).
pub fn length_controlled(
    glm: Glm,
    rows: &[Judged],
    difficulty: Option<&[f64]>,
    gamed: &[GamedRow],
) -> Result<LengthControlled> {
    let design = Design::new(glm, rows, difficulty, gamed)?;
    let c = cross_validated_c(&design.x, design.k, &design.p, &design.w);
    let theta = l1_logistic(&design.x, design.k, &design.p, &design.w, c);
    let predictions: Vec<f64> =
        rows.iter().map(|r| sigmoid(dot(&design.features(0.0, design.gamma(r.index), 1.0), &theta))).collect();
    let points: Vec<f64> = predictions.iter().map(|q| 100.0 * q).collect();
    let coefficients = if design.k == 3 { [theta[0], theta[1], theta[2]] } else { [theta[0], 0.0, theta[1]] };
    Ok(LengthControlled {
        glm,
        win_rate: stats::mean(&points),
        standard_error: sem(&points),
        coefficients,
        c,
        predictions,
    })
}

/// The GLM's training rows: features (length, [difficulty,] model), soft labels and weights.
struct Design<'a> {
    k: usize,
    x: Vec<f64>,
    p: Vec<f64>,
    w: Vec<f64>,
    difficulty: Option<&'a [f64]>,
}

impl<'a> Design<'a> {
    fn new(glm: Glm, rows: &[Judged], difficulty: Option<&'a [f64]>, gamed: &[GamedRow]) -> Result<Design<'a>> {
        if rows.len() < 3 {
            return Err(Error::Usage(format!("length control needs at least 3 judged rows, got {}", rows.len())));
        }
        let difficulty = match (glm.uses_difficulty(), difficulty) {
            (false, _) => None,
            (true, Some(d)) => Some(d),
            (true, None) => return Err(Error::Usage(format!("{} needs the instruction difficulty", glm.name()))),
        };
        if let Some(d) = difficulty {
            if let Some(r) = rows.iter().find(|r| r.index >= d.len()) {
                return Err(Error::Usage(format!(
                    "instruction index {} has no difficulty ({} instructions known)",
                    r.index,
                    d.len()
                )));
            }
        }
        if glm == Glm::LengthControlledV1 && gamed.is_empty() {
            return Err(Error::Usage("length_controlled_v1 needs the gamed-baseline rows (df_gamed)".into()));
        }
        let delta: Vec<f64> = rows.iter().map(|r| r.len_baseline as f64 - r.len_model as f64).collect();
        let sd = stats::variance(&delta).sqrt();
        if sd.is_nan() || sd <= 0.0 {
            return Err(Error::Usage("every output has the same length difference to the baseline".into()));
        }
        let k = if glm.uses_difficulty() { 3 } else { 2 };
        let mut design = Design { k, x: Vec::new(), p: Vec::new(), w: Vec::new(), difficulty };
        // Training rows: the gamed baselines first (as AlpacaEval concatenates them), then the
        // model's rows that have a preference.
        if glm == Glm::LengthControlledV1 {
            for g in gamed {
                design.push(
                    design.features(g.std_delta_len.tanh(), g.instruction_difficulty, 0.0),
                    g.preference,
                    0.2 / 2.0,
                );
            }
        }
        for (r, d) in rows.iter().zip(&delta) {
            if !r.preference.is_nan() {
                design.push(design.features((d / sd).tanh(), design.gamma(r.index), 1.0), r.preference, 1.0);
            }
        }
        if let Some(bad) = design.p.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(Error::Usage(format!("preference {bad} is outside [0, 1]")));
        }
        Ok(design)
    }

    fn push(&mut self, features: Vec<f64>, p: f64, w: f64) {
        self.x.extend(features);
        self.p.push(p);
        self.w.push(w);
    }

    fn gamma(&self, i: usize) -> f64 {
        self.difficulty.map_or(0.0, |d| d[i])
    }

    fn features(&self, len: f64, gamma: f64, not_gamed: f64) -> Vec<f64> {
        if self.k == 3 {
            vec![len, gamma, not_gamed]
        } else {
            vec![len, not_gamed]
        }
    }

    /// `‖θ‖₁ + C Σᵢ wᵢ CE(pᵢ, xᵢ·θ)`.
    fn objective(&self, c: f64, theta: &[f64]) -> f64 {
        objective(&self.x, self.k, &self.p, &self.w, c, theta)
    }
}

/// The penalised objective the fit minimises, at strength `c` and coefficients `theta` (in
/// [`LengthControlled::coefficients`]' order), for comparing fits: a smaller value is a better
/// solution of the same problem.
pub fn length_controlled_objective(
    glm: Glm,
    rows: &[Judged],
    difficulty: Option<&[f64]>,
    gamed: &[GamedRow],
    c: f64,
    coefficients: [f64; 3],
) -> Result<f64> {
    let design = Design::new(glm, rows, difficulty, gamed)?;
    let theta = if design.k == 3 { coefficients.to_vec() } else { vec![coefficients[0], coefficients[2]] };
    Ok(design.objective(c, &theta))
}

/// Parse an `index,instruction_difficulty` CSV (AlpacaEval's `instruction_difficulty.csv`;
/// `#` lines are comments) into γ by index. Errors name the line.
pub fn parse_difficulty(text: &str) -> std::result::Result<Vec<f64>, String> {
    let mut out: Vec<(usize, f64)> = Vec::new();
    let mut header = true;
    for (no, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if header {
            header = false;
            if line.split(',').nth(1).is_some_and(|f| f.trim().parse::<f64>().is_err()) {
                continue;
            }
        }
        let mut fields = line.split(',');
        let (Some(i), Some(v), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(format!("line {}: expected `index,instruction_difficulty`", no + 1));
        };
        let i = i.trim().parse::<usize>().map_err(|_| format!("line {}: field index: not an integer", no + 1))?;
        let v = v
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("line {}: field instruction_difficulty: not a number", no + 1))?;
        out.push((i, v));
    }
    out.sort_by_key(|&(i, _)| i);
    for (pos, &(i, _)) in out.iter().enumerate() {
        if i != pos {
            return Err(format!("instruction index {pos} is missing or repeated"));
        }
    }
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// Parse AlpacaEval's `df_gamed.csv` (columns `index`, `preference` in [0, 1], `std_delta_len`,
/// `instruction_difficulty`, `not_gamed_baseline`; others such as `model` ignored, any order).
/// Rows with `not_gamed_baseline` true are not gamed rows and are skipped. Errors name the line
/// and the field.
pub fn parse_gamed(text: &str) -> std::result::Result<Vec<GamedRow>, String> {
    let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let Some((_, header)) = lines.next() else {
        return Err("empty file".into());
    };
    let header: Vec<&str> = header.split(',').map(str::trim).collect();
    let col = |name: &str| header.iter().position(|h| *h == name).ok_or(format!("line 1: no column `{name}`"));
    let (i, p, s, d) = (col("index")?, col("preference")?, col("std_delta_len")?, col("instruction_difficulty")?);
    let g = header.iter().position(|h| *h == "not_gamed_baseline");
    let mut out = Vec::new();
    for (no, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let field = |k: usize| f.get(k).copied().ok_or(format!("line {}: field {}: missing", no + 1, header[k]));
        let num = |k: usize| -> std::result::Result<f64, String> {
            field(k)?.parse::<f64>().map_err(|_| format!("line {}: field {}: not a number", no + 1, header[k]))
        };
        if let Some(g) = g {
            if field(g)?.eq_ignore_ascii_case("true") {
                continue;
            }
        }
        let index = field(i)?.parse::<usize>().map_err(|_| format!("line {}: field index: not an integer", no + 1))?;
        let preference = num(p)?;
        if !(0.0..=1.0).contains(&preference) {
            return Err(format!("line {}: field preference: {preference} is outside [0, 1]", no + 1));
        }
        out.push(GamedRow { index, preference, std_delta_len: num(s)?, instruction_difficulty: num(d)? });
    }
    if out.is_empty() {
        return Err("no gamed rows".into());
    }
    Ok(out)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Cross-entropy of soft label `p` against logit `z`: −p ln σ(z) − (1−p) ln(1−σ(z)).
fn cross_entropy(p: f64, z: f64) -> f64 {
    p * softplus(-z) + (1.0 - p) * softplus(z)
}

/// `‖θ‖₁ + C Σᵢ wᵢ CE(pᵢ, xᵢ·θ)` over rows of `k` features.
fn objective(x: &[f64], k: usize, p: &[f64], w: &[f64], c: f64, theta: &[f64]) -> f64 {
    let smooth: f64 = (0..p.len()).map(|i| w[i] * cross_entropy(p[i], dot(&x[i * k..(i + 1) * k], theta))).sum();
    theta.iter().map(|t| t.abs()).sum::<f64>() + c * smooth
}

/// The C of [`grid`] with the best mean held-out score over scikit-learn's `GroupKFold(5)`
/// folds (each training row its own group); the score of a fold is
/// `−Σ_test wᵢ CE(pᵢ, clip(qᵢ, 1e-15)) / n_test`, AlpacaEval's `logloss_continuous`.
fn cross_validated_c(x: &[f64], k: usize, p: &[f64], w: &[f64]) -> f64 {
    const FOLDS: usize = 5;
    let n = p.len();
    let fold = |i: usize| (n - 1 - i) % FOLDS;
    let mut best = (f64::NEG_INFINITY, 0.0);
    for c in grid() {
        let mut total = 0.0;
        for f in 0..FOLDS {
            let train: Vec<usize> = (0..n).filter(|&i| fold(i) != f).collect();
            let (tx, tp, tw) = select(x, k, p, w, &train);
            let theta = l1_logistic(&tx, k, &tp, &tw, c);
            let test: Vec<usize> = (0..n).filter(|&i| fold(i) == f).collect();
            let loss: f64 = test
                .iter()
                .map(|&i| {
                    let q = sigmoid(dot(&x[i * k..(i + 1) * k], &theta)).clamp(1e-15, 1.0 - 1e-15);
                    w[i] * -(p[i] * q.ln() + (1.0 - p[i]) * (1.0 - q).ln())
                })
                .sum();
            total += -loss / test.len() as f64;
        }
        if total > best.0 {
            best = (total, c);
        }
    }
    best.1
}

fn select(x: &[f64], k: usize, p: &[f64], w: &[f64], rows: &[usize]) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let tx = rows.iter().flat_map(|&i| x[i * k..(i + 1) * k].iter().copied()).collect();
    (tx, rows.iter().map(|&i| p[i]).collect(), rows.iter().map(|&i| w[i]).collect())
}

/// `argmin_θ ‖θ‖₁ + C Σᵢ wᵢ CE(pᵢ, xᵢ·θ)` by proximal Newton (Lee, Sun & Saunders 2014; the
/// newGLMNET scheme liblinear uses for L1 logistic regression, Yuan et al. 2012): each step
/// minimises the quadratic model plus the L1 term by coordinate descent, then backtracks until
/// the objective drops by a fraction of the model's predicted decrease.
fn l1_logistic(x: &[f64], k: usize, p: &[f64], w: &[f64], c: f64) -> Vec<f64> {
    let objective = |theta: &[f64]| objective(x, k, p, w, c, theta);
    let mut theta = vec![0.0; k];
    let mut f = objective(&theta);
    for _ in 0..200 {
        let (mut g, mut h) = (vec![0.0; k], vec![0.0; k * k]);
        for i in 0..p.len() {
            let xi = &x[i * k..(i + 1) * k];
            let q = sigmoid(dot(xi, &theta));
            for a in 0..k {
                g[a] += c * w[i] * (q - p[i]) * xi[a];
                for b in 0..k {
                    h[a * k + b] += c * w[i] * q * (1.0 - q) * xi[a] * xi[b];
                }
            }
        }
        // min_d gᵀd + ½dᵀHd + ‖θ + d‖₁, one coordinate at a time (soft thresholding)
        let mut d = vec![0.0; k];
        for _ in 0..1000 {
            let mut moved: f64 = 0.0;
            for j in 0..k {
                let a = h[j * k + j];
                if a <= 0.0 {
                    continue;
                }
                let b = g[j] + (0..k).map(|l| h[j * k + l] * d[l]).sum::<f64>() - a * d[j];
                let v = theta[j] - b / a;
                let u = v.signum() * (v.abs() - 1.0 / a).max(0.0);
                moved = moved.max((u - theta[j] - d[j]).abs());
                d[j] = u - theta[j];
            }
            if moved < 1e-15 {
                break;
            }
        }
        let l1 = |t: &[f64]| t.iter().map(|v| v.abs()).sum::<f64>();
        let next: Vec<f64> = theta.iter().zip(&d).map(|(t, s)| t + s).collect();
        let decrease = dot(&g, &d) + l1(&next) - l1(&theta);
        if decrease > -1e-14 * f.abs().max(1.0) {
            break;
        }
        let mut t = 1.0;
        loop {
            let trial: Vec<f64> = theta.iter().zip(&d).map(|(v, s)| v + t * s).collect();
            let ft = objective(&trial);
            if ft <= f + 0.01 * t * decrease || t < 1e-10 {
                theta = trial;
                f = ft;
                break;
            }
            t *= 0.5;
        }
        if d.iter().map(|s| (t * s).abs()).fold(0.0, f64::max) < 1e-12 {
            break;
        }
    }
    theta
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_ties_as_half() {
        let w = win_rate(&[1.0, 0.0, 0.5, 0.75, f64::NAN], 0).unwrap();
        assert_eq!((w.n_wins, w.n_wins_base, w.n_draws, w.n_total), (2, 1, 1, 4));
        assert!((w.win_rate - 56.25).abs() < 1e-12);
        assert!((w.discrete_win_rate - 62.5).abs() < 1e-12);
        // sd of (100, 0, 50, 75) = 42.696…, / √4
        assert!((w.standard_error - 42.69562819149833 / 2.0).abs() < 1e-9);
        assert!(win_rate(&[1.2], 0).is_err());
    }

    #[test]
    fn l1_solution_satisfies_the_optimality_conditions() {
        // One feature, soft labels: the unpenalised optimum is logit(mean p) = logit(0.8);
        // with the L1 term the stationarity condition is C Σ(σ(θ) − p) = −sign(θ).
        let x = vec![1.0; 5];
        let p = vec![1.0, 1.0, 1.0, 1.0, 0.0];
        let w = vec![1.0; 5];
        let big = l1_logistic(&x, 1, &p, &w, 1e8)[0];
        assert!((big - (0.8f64 / 0.2).ln()).abs() < 1e-6, "{big}");
        // C = 2: 2·5·(σ(θ) − 0.8) = −1, so σ(θ) = 0.7 and θ = ln(7/3)
        let theta = l1_logistic(&x, 1, &p, &w, 2.0)[0];
        assert!((theta - (7.0f64 / 3.0).ln()).abs() < 1e-6, "{theta}");
        // a penalty the gradient at 0 cannot beat gives exactly zero: |C Σ(½ − p)| = 0.5·1.5 ≤ 1
        assert_eq!(l1_logistic(&x, 1, &p, &w, 0.5)[0], 0.0);
    }

    #[test]
    fn parses_difficulty_files() {
        assert_eq!(parse_difficulty("# c\nindex,instruction_difficulty\n1,0.5\n0,-1\n").unwrap(), vec![-1.0, 0.5]);
        assert!(parse_difficulty("index,instruction_difficulty\n0,x\n").unwrap_err().contains("line 2"));
        assert!(parse_difficulty("0,1\n2,1\n").unwrap_err().contains("index 1"));
        assert_eq!(parse_difficulty(ALPACA_EVAL_DIFFICULTY).unwrap().len(), 805);
    }
}
