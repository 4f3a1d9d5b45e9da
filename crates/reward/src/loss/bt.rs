use candle_core::{Result, Tensor};

/// Bradley-Terry pairwise loss (Bradley & Terry 1952; as a reward-model objective:
/// Christiano et al. 2017, "Deep RL from human preferences"; Ouyang et al. 2022, InstructGPT):
///
/// `L = mean_i −log σ(r_c,i − r_r,i) = mean_i softplus(−(r_c,i − r_r,i))`
///
/// Identical to TRL `RewardTrainer` without margin: `-logsigmoid(r_c - r_r).mean()`.
/// `r_chosen`, `r_rejected`: `[n]` rewards of the preferred and dispreferred completions.
pub fn bradley_terry(r_chosen: &Tensor, r_rejected: &Tensor) -> Result<Tensor> {
    super::softplus(&(r_chosen - r_rejected)?.neg()?)?.mean_all()
}
