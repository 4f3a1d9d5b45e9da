//! Reward models of mismatch: the training losses (pairwise Bradley-Terry and its margin
//! variant, InstructGPT K-wise, best-of-K softmax / Plackett-Luce, reward centering),
//! ensemble aggregation (mean, WCO, UWO) and temperature calibration.

pub mod calibration;
pub mod ensemble;
pub mod loss;

pub use calibration::{fit_temperature, pairwise_nll};
pub use ensemble::{aggregate, Aggregate};
pub mod model;
pub use model::{format_input, RewardModel, RmConfig};
pub mod train;
pub use train::{train, LossKind, Pair, TrainConfig};
pub mod cli;
pub mod eval;
