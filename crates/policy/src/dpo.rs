//! Offline preference losses on (prompt, chosen y_w, rejected y_l) pairs, from sequence
//! log-likelihoods log π(y|x) = Σ_t log π(y_t | x, y_<t) of the policy and a frozen reference.
//!
//! With h = [log π(y_w) − log π_ref(y_w)] − [log π(y_l) − log π_ref(y_l)]:
//!
//! - DPO (Rafailov et al. 2023, eq. 7): L = −log σ(β h).
//! - Conservative DPO / label smoothing ε (Mitchell 2023, "A note on DPO with noisy preferences";
//!   TRL `label_smoothing`): L = −(1−ε) log σ(β h) − ε log σ(−β h).
//! - IPO (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from Human
//!   Preferences", eq. 17): L = (h − 1/(2β))², β the paper's τ. The paper writes h on sequence
//!   log-probs; TRL (≥ 0.9, `loss_type="ipo"`) uses *length-averaged* log-ratios,
//!   h = Δ_w/|y_w| − Δ_l/|y_l|, which the IPO authors confirmed matches their experiments and
//!   which keeps the 1/(2β) target independent of length. We follow TRL: averaged.
//! - Length-normalised DPO (TRL `sigmoid_norm`): DPO with h on length-averaged log-ratios.
//! - SimPO (Meng et al. 2024, eq. 6), no reference model:
//!   L = −log σ(β/|y_w| log π(y_w) − β/|y_l| log π(y_l) − γ).
//!
//! Metrics use TRL's names: `rewards/chosen` = mean β(log π(y_w) − log π_ref(y_w)) (summed
//! log-probs, as TRL, whatever the loss; SimPO: β·avg log π), `rewards/rejected`, `rewards/margins`
//! = mean difference, `rewards/accuracies` = fraction with chosen reward > rejected reward,
//! `logps/chosen`, `logps/rejected` = mean summed policy log-probs.

use crate::masked::scalar;
use crate::{Error, Result};
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PreferenceLoss {
    Dpo { beta: f64, label_smoothing: f64 },
    Ipo { beta: f64 },
    LengthNormDpo { beta: f64 },
    Simpo { beta: f64, gamma: f64 },
}

/// `[b]` tensors of one batch of pairs. `*_len` are completion token counts (f32).
/// `ref_*` are ignored by SimPO (pass anything of the right shape, e.g. zeros).
#[derive(Debug, Clone)]
pub struct PairLogps {
    pub chosen: Tensor,
    pub rejected: Tensor,
    pub ref_chosen: Tensor,
    pub ref_rejected: Tensor,
    pub chosen_len: Tensor,
    pub rejected_len: Tensor,
}

/// log σ(x) = −softplus(−x), evaluated stably as min(x, 0) − log(1 + e^{−|x|}).
pub fn log_sigmoid(x: &Tensor) -> Result<Tensor> {
    let neg_abs = x.abs()?.neg()?;
    Ok((x.minimum(0f32)? - (neg_abs.exp()? + 1.0)?.log()?)?)
}

/// `(loss, per-pair losses [b], metrics)`; `loss` = mean over pairs, differentiable in the
/// policy log-probs.
pub fn preference_loss(kind: &PreferenceLoss, p: &PairLogps) -> Result<(Tensor, Tensor, BTreeMap<&'static str, f64>)> {
    let len_w = p.chosen_len.clamp(1f32, f32::INFINITY)?;
    let len_l = p.rejected_len.clamp(1f32, f32::INFINITY)?;
    let dw = (&p.chosen - &p.ref_chosen)?;
    let dl = (&p.rejected - &p.ref_rejected)?;
    let (per_pair, beta) = match *kind {
        PreferenceLoss::Dpo { beta, label_smoothing: eps } => {
            if !(0.0..0.5).contains(&eps) {
                return Err(Error::Usage(format!("label smoothing must be in [0, 0.5), got {eps}")));
            }
            let bh = ((&dw - &dl)? * beta)?;
            let l = ((log_sigmoid(&bh)? * -(1.0 - eps))? - (log_sigmoid(&bh.neg()?)? * eps)?)?;
            (l, beta)
        }
        PreferenceLoss::Ipo { beta } => {
            let h = (dw.div(&len_w)? - dl.div(&len_l)?)?;
            ((h - 1.0 / (2.0 * beta))?.sqr()?, beta)
        }
        PreferenceLoss::LengthNormDpo { beta } => {
            let h = (dw.div(&len_w)? - dl.div(&len_l)?)?;
            (log_sigmoid(&(h * beta)?)?.neg()?, beta)
        }
        PreferenceLoss::Simpo { beta, gamma } => {
            let h = (p.chosen.div(&len_w)? - p.rejected.div(&len_l)?)?;
            (log_sigmoid(&((h * beta)? - gamma)?)?.neg()?, beta)
        }
    };
    let (rw, rl) = match kind {
        PreferenceLoss::Simpo { .. } => ((p.chosen.div(&len_w)? * beta)?, (p.rejected.div(&len_l)? * beta)?),
        _ => ((dw * beta)?, (dl * beta)?),
    };
    let (rw, rl) = (rw.detach(), rl.detach());
    let mut m = BTreeMap::new();
    m.insert("rewards/chosen", scalar(&rw.mean_all()?)?);
    m.insert("rewards/rejected", scalar(&rl.mean_all()?)?);
    m.insert("rewards/margins", scalar(&(&rw - &rl)?.mean_all()?)?);
    m.insert("rewards/accuracies", scalar(&rw.gt(&rl)?.to_dtype(DType::F32)?.mean_all()?)?);
    m.insert("logps/chosen", scalar(&p.chosen.detach().mean_all()?)?);
    m.insert("logps/rejected", scalar(&p.rejected.detach().mean_all()?)?);
    Ok((per_pair.mean_all()?, per_pair, m))
}
