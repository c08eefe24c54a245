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

/// How the learning rate moves over training (`[train] lr_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedule {
    /// `lr` at every step (after any warmup).
    Constant,
    /// Half a cosine from `lr` down to `lr * lr_final_fraction` at the last step.
    Cosine,
    /// A straight line from `lr` down to `lr * lr_final_fraction` at the last step.
    Linear,
}

/// Where a user's sequence windows are cut (`[train] window_cuts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WindowCuts {
    /// The same cuts every epoch.
    Fixed,
    /// Each epoch moves each user's cuts by a seeded random shift.
    Random,
}

/// Where a training step runs (`[train] engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    /// "device" on a GPU when the model supports it, "host" otherwise.
    Auto,
    /// Batch inputs gathered, loss and optimizer run on the host; the
    /// towers on the device.
    Host,
    /// The whole step on the model's device: parameters and optimizer state
    /// stay there, only the batch's indices go up.
    Device,
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
    /// With `targets = "all_positions"`: items a user's consecutive windows
    /// share. A window's first `window_overlap` items are then context only
    /// (the window before it trains their targets), so every target after a
    /// user's first window is predicted from at least this many items, as a
    /// served query with a long history is; without it the positions near a
    /// window's start see only the few items before them. Encoder passes per
    /// epoch grow by `max_history / (max_history - window_overlap)`. Below
    /// `[features] max_history`.
    #[param(default = 0)]
    pub window_overlap: usize,
    /// With `targets = "all_positions"`: "fixed" cuts a user's windows at
    /// the same places every epoch; "random" makes each epoch's most recent
    /// window train only its last `max_history - s` positions (its earlier
    /// ones context only), `s` drawn per user and epoch from the run's seed,
    /// and cuts the rest end to end before it. A target is then read after
    /// contexts of different lengths from epoch to epoch rather than always
    /// the same one; every target is still trained once an epoch, at about
    /// one more encoder pass per user.
    #[param(default = WindowCuts::Fixed)]
    pub window_cuts: WindowCuts,
    /// Step size of the model's optimizer (Adam for the built-in models).
    #[param(default = 1e-3)]
    pub lr: f64,
    /// "constant", "cosine" or "linear": how the step size moves from `lr`
    /// (reached after the warmup) to `lr * lr_final_fraction` at the run's
    /// last step. Decaying lets the last epochs settle instead of hopping
    /// around a minimum at full step size.
    #[param(default = LrSchedule::Constant)]
    pub lr_schedule: LrSchedule,
    /// Steps over which the step size rises linearly from `lr /
    /// lr_warmup_steps` to `lr` (any schedule); 0 starts at `lr`.
    #[param(default = 0)]
    pub lr_warmup_steps: usize,
    /// Where a decaying schedule ends, as a fraction of `lr` (0 to 1).
    #[param(default = 0.0)]
    pub lr_final_fraction: f64,
    /// Where the model keeps its parameters: "cpu", "cuda" or "cuda:N".
    #[param(default = "cpu")]
    pub device: String,
    /// "host": a step gathers the batch's rows, computes the loss and steps
    /// the optimizer on the host, the towers on `device` (fastest on a CPU).
    /// "device": the whole step on `device`, parameters and optimizer state
    /// staying there (what a GPU needs; the model names what it does not
    /// cover). "auto": "device" on a GPU where the model allows, else "host".
    #[param(default = Engine::Auto)]
    pub engine: Engine,
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

impl TrainConfig {
    /// Whether the step size ever differs from `lr` (a model is then told
    /// each step's).
    pub fn lr_varies(&self) -> bool {
        self.lr_schedule != LrSchedule::Constant || self.lr_warmup_steps > 0
    }

    /// The step size of optimisation step `step` (0-based) of `total`.
    pub fn lr_at(&self, step: usize, total: usize) -> f64 {
        let warm = self.lr_warmup_steps;
        if step < warm {
            return self.lr * (step + 1) as f64 / warm as f64;
        }
        // Progress from the end of the warmup (0) to the last step (1).
        let span = total.saturating_sub(warm + 1);
        let progress = if span == 0 { 1.0 } else { ((step - warm) as f64 / span as f64).min(1.0) };
        let floor = self.lr * self.lr_final_fraction;
        match self.lr_schedule {
            LrSchedule::Constant => self.lr,
            LrSchedule::Cosine => floor + (self.lr - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            LrSchedule::Linear => self.lr - (self.lr - floor) * progress,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(schedule: LrSchedule, warmup: usize, fraction: f64) -> TrainConfig {
        TrainConfig {
            lr: 0.01,
            lr_schedule: schedule,
            lr_warmup_steps: warmup,
            lr_final_fraction: fraction,
            ..TrainConfig::default()
        }
    }

    #[test]
    fn constant_without_warmup_is_lr_throughout() {
        let c = cfg(LrSchedule::Constant, 0, 0.0);
        assert!(!c.lr_varies());
        assert!((0..10).all(|s| c.lr_at(s, 10) == 0.01));
    }

    #[test]
    fn warmup_rises_linearly_then_holds() {
        let c = cfg(LrSchedule::Constant, 4, 0.0);
        assert!(c.lr_varies());
        let lrs: Vec<f64> = (0..6).map(|s| c.lr_at(s, 6)).collect();
        let want = [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01];
        for (a, b) in lrs.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{lrs:?}");
        }
    }

    #[test]
    fn cosine_and_linear_by_hand() {
        // 2 warmup steps, then steps 2..=6 span progress 0, 1/4, 1/2, 3/4, 1.
        let cos = cfg(LrSchedule::Cosine, 2, 0.1);
        let lin = cfg(LrSchedule::Linear, 2, 0.1);
        let floor = 0.001;
        let cos_want = [
            0.005,
            0.01,
            0.01,
            floor + 0.009 * 0.5 * (1.0 + std::f64::consts::FRAC_1_SQRT_2),
            floor + 0.009 * 0.5,
            floor + 0.009 * 0.5 * (1.0 - std::f64::consts::FRAC_1_SQRT_2),
            floor,
        ];
        let lin_want = [0.005, 0.01, 0.01, 0.00775, 0.0055, 0.00325, 0.001];
        for s in 0..7 {
            assert!((cos.lr_at(s, 7) - cos_want[s]).abs() < 1e-12, "cosine step {s}");
            assert!((lin.lr_at(s, 7) - lin_want[s]).abs() < 1e-12, "linear step {s}");
        }
        // Past the end (never asked by the trainer) it stays at the floor.
        assert!((lin.lr_at(9, 7) - floor).abs() < 1e-12);
    }
}
