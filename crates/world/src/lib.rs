//! The embedded gold-reward world of mismatch: a small world where the true reward is known, so
//! that over-optimisation can be seen against the truth.
//!
//! A small task language ([`lang`]) with a gold reward that stands in for what users want
//! ([`gold`]), simulated annotators with documented biases and label noise ([`annotators`]), a
//! demonstration corpus ([`corpus`]), a tiny GPT start policy pre-trained on it ([`start`]), and
//! the world's reading of a response for the failure-mode meters ([`meters`]). The experiment
//! that runs on it, `mismatch run`, is `mismatch-experiment`'s.

pub mod annotators;
pub mod config;
pub mod corpus;
pub mod gold;
pub mod lang;
pub mod meters;
pub mod start;
pub mod world;

pub use config::{StartConfig, WorldConfig};
pub use meters::Meters;
pub use mismatch_models::{Error, Result};
pub use world::{GoldReward, World};
