//! The experiment of mismatch, `mismatch run`: Gao et al. (2022)'s over-optimisation experiment
//! end to end, one pipeline ([`pipeline`]) over a [`pipeline::Setting`] — the embedded world
//! with its known gold reward ([`embedded`], on `mismatch-world`) or real models with human
//! labels and a gold RM ([`real`]) — and the mismatch report ([`summary`], [`report`]).
//!
//! - [`config`]: the experiment file (`mismatch run --print-config`);
//! - [`proxy`]: proxy reward models at every data size (single, mean / WCO / UWO ensembles, WARM);
//! - [`bon`]: best-of-n curves from one pool; [`guided`]: value-guided decoding (RAD, blockwise
//!   controlled decoding) against the proxy on the same axes; [`rl`], [`dpo`]: the optimisers' settings;
//!   [`optimise`]: train from the start policy and evaluate every checkpoint;
//! - [`sample`]: sampling and evaluating a world policy ([`sample::EvalPoint`]: one evaluation);
//! - [`summary`]: `summary.json`, every number of the page; [`report`]: `report.html`;
//! - [`sweep`]: one seed per job (`--seed-only`), merged into the same summary (`--merge`),
//!   and a Slurm array script (`--emit-slurm`); [`record`]: a seed's results as `seed.json`;
//! - [`outer`]: `mismatch loop`, the outer loop of RLHF in the embedded world (collect labels on
//!   the current policy, retrain the RM, optimise again), and its page ([`outer_report`]);
//! - [`cli`]: `mismatch run` and `mismatch loop`.

pub mod bon;
pub mod cli;
pub mod config;
pub mod dpo;
pub mod embedded;
pub mod guided;
pub mod optimise;
pub mod outer;
pub mod outer_report;
pub mod pipeline;
pub mod progress;
pub mod proxy;
pub mod real;
pub mod record;
pub mod report;
pub mod rl;
pub mod sample;
pub mod summary;
pub mod sweep;

pub use config::RunConfig;
pub use mismatch_models::{Error, Result};
