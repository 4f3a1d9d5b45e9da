//! Reward models of mismatch: the training losses (pairwise Bradley-Terry and its margin
//! variant, InstructGPT K-wise, best-of-K softmax / Plackett-Luce, Gaussian BT for a
//! probabilistic head, reward centering), members on encoder (MiniLM) or decoder (tiny GPT,
//! SmolLM2, Llama) backbones, ensemble aggregation (mean, WCO, UWO), WARM and temperature
//! calibration.

pub mod calibration;
pub mod cli;
pub mod ensemble;
pub mod eval;
pub mod head;
pub mod loss;
pub mod member;
pub mod model;
pub mod train;

pub use calibration::{fit_temperature, pairwise_nll};
pub use ensemble::{aggregate, Aggregate};
pub use head::HeadKind;
pub use member::{BackboneKind, Member};
pub use model::{encode_decoder, format_input, RewardModel, RmConfig};
pub use train::{pairs_of, train, train_in_memory, LossKind, Pair, TrainConfig};
