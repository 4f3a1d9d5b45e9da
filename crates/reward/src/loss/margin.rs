use candle_core::{Result, Tensor};

/// Bradley-Terry with a preference-strength margin (Touvron et al. 2023, Llama 2, eq. 2):
///
/// `L = mean_i −log σ(r_c,i − r_r,i − m_i)`
///
/// `m_i ≥ 0` is larger for more clearly separated pairs, so the model must separate them by
/// at least that much. Identical to TRL `RewardTrainer` with a `margin` column:
/// `-logsigmoid(r_c - r_r - margin).mean()`. All tensors `[n]`.
pub fn margin_bt(r_chosen: &Tensor, r_rejected: &Tensor, margin: &Tensor) -> Result<Tensor> {
    let x = ((r_chosen - r_rejected)? - margin)?;
    super::softplus(&x.neg()?)?.mean_all()
}
