//! Preference data for mismatch: read any common preference format into one representation
//! ([`types`]), validate and summarise it ([`stats`]), convert and split it ([`mod@write`]), and measure how
//! much human annotators agree ([`agreement`]).

pub mod agreement;
pub mod cli;
pub mod error;
pub mod read;
pub mod stats;
pub mod types;
pub mod write;

pub use error::{DataError, Result};
pub use read::{read_dataset, ReadOptions};
pub use types::*;
