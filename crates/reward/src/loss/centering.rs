use candle_core::{Result, Tensor};

/// Reward-centering regulariser (Eisenstein et al. 2023, "Helping or herding? Reward model
/// ensembles mitigate but do not eliminate reward hacking", §3):
///
/// `R = η · mean_i (r_c,i + r_r,i)²`
///
/// The BT loss is invariant to adding a constant to every reward; this pins the free
/// offset so rewards stay centred at zero (and ensemble members stay comparable). Same as
/// TRL's `center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)`.
pub fn centering(r_chosen: &Tensor, r_rejected: &Tensor, eta: f64) -> Result<Tensor> {
    (r_chosen + r_rejected)?.sqr()?.mean_all()? * eta
}
