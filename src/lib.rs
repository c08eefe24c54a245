//! funnel: declarative candidate-generation experiments.
//!
//! The core loads an experiment file ([`experiment`]), resolves every
//! component through the plugin [`Registry`](funnel_api::Registry) built by
//! [`plugins::builtin`], and runs the pipeline ([`run`]): dataset -> features
//! -> sampler and model -> training ([`training`]) -> full-catalog evaluation
//! -> index -> report ([`report`]) and tracking. It names no component itself.

#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod experiment;
pub mod item_vectors;
pub mod outcomes;
pub mod plot;
pub mod plugins;
pub mod preflight;
pub mod recommend;
pub mod report;
pub mod retrieval;
pub mod run;
pub mod run_folder;
pub mod serving;
pub mod stages;
pub mod sweep;
pub mod training;

pub use funnel_api as api;
