//! Aggregating the rewards of an ensemble of K reward models (members trained from
//! different seeds and/or data orders) into one conservative reward, after
//! Coste et al. 2023, "Reward model ensembles help mitigate overoptimization".

use candle_core::{Result, Tensor};

/// How member rewards `r_1..r_K` of one completion are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregate {
    /// `R = (1/K) Σ_k r_k`.
    Mean,
    /// Worst-case optimisation (WCO): `R = min_k r_k`.
    WorstCase,
    /// Uncertainty-weighted optimisation (UWO): `R = mean_k r_k − λ · Var_k r_k`, with the
    /// *population* variance `(1/K) Σ_k (r_k − mean)²` (as `np.var`, Coste et al.'s code).
    /// Their λ is 0.5 for best-of-n and 0.1 for PPO; it is a parameter here.
    UncertaintyWeighted { lambda: f64 },
}

/// Combine member rewards `[K, n]` into `[n]`.
pub fn aggregate(member_rewards: &Tensor, how: Aggregate) -> Result<Tensor> {
    match how {
        Aggregate::Mean => member_rewards.mean(0),
        Aggregate::WorstCase => member_rewards.min(0),
        Aggregate::UncertaintyWeighted { lambda } => {
            let mean = member_rewards.mean_keepdim(0)?;
            let var = member_rewards.broadcast_sub(&mean)?.sqr()?.mean(0)?;
            mean.squeeze(0)? - (var * lambda)?
        }
    }
}
