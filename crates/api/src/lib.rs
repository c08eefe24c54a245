//! The contract between funnel's core and its plugins.
//!
//! Every component of an experiment (dataset, features, sampler, model,
//! evaluation, index, tracking) is a trait object built from its TOML table by
//! a function registered in a [`Registry`]. This crate holds those traits, the
//! plain data that flows between them, and the registry itself. It knows no
//! component by name and depends on no numeric, ANN or HTTP library, so every
//! plugin crate can depend on it without cycles.

#![forbid(unsafe_code)]

// The `#[params]` expansion names `::funnel_api`, here too.
extern crate self as funnel_api;

mod components;
mod data;
mod matrix;
mod outcome;
mod params;
mod registry;
mod train;

pub use components::*;
pub use data::*;
pub use matrix::Matrix;
pub use outcome::{Comparison, OutcomeRules, Rule, RuleValue, MAX_OUTCOMES};
pub use params::{serialize_f32, NoParams, ParamDoc, Params};
pub use registry::{documented, parse_params, BuildCx, ComponentKind, ParamError, ParamRow, PluginInfo, Registry};
pub use train::{Engine, LrSchedule, Targets, TrainConfig, WindowCuts};

/// Declares a plugin's parameters once: see [`Params`].
pub use funnel_api_macros::params;

/// Re-exported so plugins agree with the core on one version.
pub use anyhow;
pub use toml;
