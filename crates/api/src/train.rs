//! `[train]`: the one table every component may read.
//!
//! The core runs the training loop, but the model owns its optimizer, so
//! three of these keys are a contract with the model rather than core
//! settings: a `Model` built from a [`crate::BuildCx`] must step its optimizer
//! by `lr`, expect `TrainBatch`es of at most `batch_size` rows, and keep its
//! parameters on `device` (or fail at build, naming `[train] device`). They
//! live in `[train]`, not in `[model]`, because they mean the same for every
//! model: a sweep varies them without knowing which model it trains.

/// `[train]`.
#[crate::params]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Passes over the training examples.
    #[param(default = 10)]
    pub epochs: usize,
    /// Examples per optimisation step; every `TrainBatch` has at most this many rows.
    #[param(default = 256)]
    pub batch_size: usize,
    /// Step size of the model's optimizer (Adam for the built-in models).
    #[param(default = 1e-3)]
    pub lr: f64,
    /// Where the model keeps its parameters: "cpu", "cuda" or "cuda:N".
    #[param(default = "cpu")]
    pub device: String,
    /// Write a checkpoint every this many epochs and after the last; 0 never.
    #[param(default = 1)]
    pub checkpoint_every: usize,
    /// A step whose gradient norm exceeds this (or is not finite) stops the
    /// run as diverged, before the step is applied.
    #[param(default = 1e4)]
    pub max_grad_norm: f64,
}
