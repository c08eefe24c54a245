//! `[train]`: the one table every component may read.
//!
//! The core runs the training loop, but the model owns its optimizer, so
//! three of these keys are a contract with the model rather than core
//! settings: a `Model` built from a [`crate::BuildCx`] must step its optimizer
//! by `lr`, expect `TrainBatch`es of at most `batch_size` rows (with `targets =
//! "all_positions"`, `batch_size` windows of up to `max_history` rows each),
//! and keep its parameters on `device` (or fail at build, naming `[train]
//! device`). They live in `[train]`, not in `[model]`, because they mean the
//! same for every model: a sweep varies them without knowing which model it
//! trains.

/// Which training targets a batch holds (`[train] targets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Targets {
    Last,
    AllPositions,
}

/// `[train]`.
#[crate::params]
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Passes over the training examples.
    #[param(default = 10)]
    pub epochs: usize,
    /// Examples per optimisation step; every `TrainBatch` has at most this
    /// many rows. With `targets = "all_positions"`, sequence windows per step
    /// (each trains up to `max_history` positions).
    #[param(default = 256)]
    pub batch_size: usize,
    /// "last": one example per training target, its history the items
    /// before it. "all_positions" (SASRec's way): each user's training
    /// positives are cut into windows of `max_history + 1` items from the
    /// most recent back, and every position of a window predicts the next
    /// item; a model may encode a window once for all its positions.
    #[param(default = Targets::Last)]
    pub targets: Targets,
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
    /// Outcomes to train on, each with its weight in the loss, e.g.
    /// `{ liked = 1.0, loved = 2.0 }` (names from the dataset's `outcomes`;
    /// weights >= 0, an outcome of weight 0 is not trained). Empty: every
    /// outcome the dataset declares, weight 1. An example whose target
    /// meets several trained outcomes is a training query for each. With
    /// two or more trained outcomes the model's query is conditioned on the
    /// outcome (ItemSage-style) and positives of every outcome share a batch.
    #[param(default = std::collections::BTreeMap::new())]
    pub outcomes: std::collections::BTreeMap<String, f64>,
    /// The outcome whose validation metric picks the best epoch, and that
    /// serving and the headline test metrics ask about: an outcome's name,
    /// or "mean" (select on the mean over the outcomes evaluated; serve the
    /// first trained outcome). Unused without outcomes.
    #[param(default = "mean")]
    pub select_outcome: String,
    /// Weight of each explicit negative (the dataset's `negative_feedback`):
    /// a user's disliked items join each of that user's training queries as
    /// negatives, counted this many times in the softmax; 0 turns them off.
    /// Only feedback up to the user's last training target is used.
    #[param(default = 1.0)]
    pub negative_feedback_weight: f64,
    /// Explicit negatives per training query at most (a seeded sample of
    /// the user's when they have more).
    #[param(default = 8)]
    pub negative_feedback_per_query: usize,
}
