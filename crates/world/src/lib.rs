//! The embedded gold-reward world of mismatch and the main job, `mismatch run`.
//!
//! A small task language ([`lang`]) with a gold reward that stands in for what users want
//! ([`gold`]), simulated annotators with documented biases and label noise ([`annotators`]),
//! failure-mode meters ([`meters`]), a demonstration corpus ([`corpus`]) and a tiny GPT start
//! policy pre-trained on it ([`start`]). `mismatch run` ([`pipeline`], over a setting: the world
//! [`embedded`] or real models [`real`]) then reproduces Gao et al. (2022)'s over-optimisation
//! experiment end to end and writes the mismatch report.

pub mod annotators;
pub mod config;
pub mod corpus;
pub mod gold;
pub mod lang;
pub mod meters;
pub mod progress;
pub mod start;
pub mod world;

pub use config::{StartConfig, WorldConfig};
pub use meters::Meters;
pub use mismatch_models::{Error, Result};
pub use world::{GoldReward, World};
pub mod bon;
pub mod cli;
pub mod dpo;
pub mod embedded;
pub mod optimise;
pub mod pipeline;
pub mod proxy;
pub mod real;
pub mod report;
pub mod rl;
pub mod sample;
pub mod summary;
