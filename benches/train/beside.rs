//! `youtube_dnn_beside_device`: the host engine's `youtube_dnn` with a
//! device engine copy of it taken along, step by step.
//!
//! Before each step the device model is given the host model's parameters
//! and optimizer state; both take the step, and the device's loss, gradient
//! norm and update are compared with the host's. Training follows the host
//! model alone, so rounding does not add up from step to step as it does
//! between two independent runs: this measures how far one step of each
//! engine lands apart anywhere along a real run. Each epoch's figures go to
//! stderr as one line starting with [`LINE`].
//!
//! The bench binary acts as `funnel` with this model registered when
//! [`AS_FUNNEL`] is set (it starts itself that way).

use anyhow::Result;
use funnel::api::{
    BuildCx, Engine, Matrix, Model, ModelState, Queries, Registry, StepStats, TrainBatch, TrainingState,
};
use funnel_model_youtube_dnn::YoutubeDnnParams;

/// The model's `type`.
pub const NAME: &str = "youtube_dnn_beside_device";
/// Set in the environment: the bench binary runs as `funnel` (not a
/// `FUNNEL_` name, which the experiment layering would read as a key).
pub const AS_FUNNEL: &str = "TRAIN_BENCH_AS_FUNNEL";
/// How each epoch's line on stderr starts.
pub const LINE: &str = "beside device:";

/// The built-in plugins and [`NAME`].
pub fn registry() -> Registry {
    let mut reg = funnel::plugins::builtin();
    reg.model::<YoutubeDnnParams>(
        NAME,
        "youtube_dnn on the host engine, with the device engine's step taken from the same state beside each step",
        |params, cx| {
            let table = toml::Table::try_from(&params)?;
            let on = |engine: Engine| BuildCx {
                train: funnel::api::TrainConfig { engine, ..cx.train.clone() },
                ..cx.clone()
            };
            let builtin = funnel::plugins::builtin();
            Ok(Box::new(BesideDevice {
                host: builtin.build_model("youtube_dnn", table.clone(), &on(Engine::Host))?,
                device: builtin.build_model("youtube_dnn", table, &on(Engine::Device))?,
                before: None,
                epoch: 0,
                agreement: Agreement::default(),
            }))
        },
    );
    reg
}

/// Relative differences of the device's step from the host's, one per step.
#[derive(Default)]
struct Agreement {
    loss: Vec<f64>,
    grad_norm: Vec<f64>,
    /// Length of (device's new weights - host's new weights) over the
    /// length of the host's update, over every weight of the model.
    update: Vec<f64>,
}

fn relative(device: f32, host: f32) -> f64 {
    ((device as f64 - host as f64) / host as f64).abs()
}

/// The largest and the median.
fn spread(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v.last().copied().unwrap_or(f64::NAN), v.get(v.len() / 2).copied().unwrap_or(f64::NAN))
}

fn is_moment(name: &str) -> bool {
    name.ends_with(".adam_m") || name.ends_with(".adam_v")
}

struct BesideDevice {
    host: Box<dyn Model>,
    device: Box<dyn Model>,
    /// The host's state before the step whose gradients are in flight.
    before: Option<TrainingState>,
    epoch: usize,
    agreement: Agreement,
}

impl Model for BesideDevice {
    fn dim(&self) -> usize {
        self.host.dim()
    }

    fn parameter_count(&self) -> usize {
        self.host.parameter_count()
    }

    fn compute_gradients(&mut self, batch: &TrainBatch<'_>) -> Result<StepStats> {
        let before = self.host.training_state();
        self.device.load_training_state(&before)?;
        let host = self.host.compute_gradients(batch)?;
        let device = self.device.compute_gradients(batch)?;
        self.agreement.loss.push(relative(device.loss, host.loss));
        self.agreement.grad_norm.push(relative(device.grad_norm, host.grad_norm));
        self.before = Some(before);
        Ok(host)
    }

    fn apply_gradients(&mut self) {
        self.host.apply_gradients();
        self.device.apply_gradients();
        let Some(before) = self.before.take() else { return };
        let (host, device) = (self.host.training_state(), self.device.training_state());
        let (mut apart, mut step) = (0f64, 0f64);
        for (name, was) in before.f32s.iter().filter(|(name, _)| !is_moment(name)) {
            for ((h, d), w) in host.f32s[name].iter().zip(&device.f32s[name]).zip(was) {
                apart += (*h as f64 - *d as f64).powi(2);
                step += (*h as f64 - *w as f64).powi(2);
            }
        }
        self.agreement.update.push((apart / step).sqrt());
    }

    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        self.host.set_learning_rate(lr)?;
        self.device.set_learning_rate(lr)
    }

    fn finish_steps(&mut self) -> Result<()> {
        self.host.finish_steps()?;
        let a = &mut self.agreement;
        if !a.loss.is_empty() {
            self.epoch += 1;
            let steps = a.loss.len();
            let ((loss, loss_median), (norm, _), (update, update_median)) =
                (spread(&mut a.loss), spread(&mut a.grad_norm), spread(&mut a.update));
            eprintln!(
                "{LINE} epoch {}, {steps} steps: loss within {loss:.1e} relative (median {loss_median:.1e}), \
                 gradient norm within {norm:.1e}, update off by {update:.1e} of its length (median {update_median:.1e})",
                self.epoch
            );
            *a = Agreement::default();
        }
        Ok(())
    }

    fn user_vectors(&self, queries: &Queries) -> Result<Matrix> {
        self.host.user_vectors(queries)
    }

    fn item_vectors(&self) -> Result<Matrix> {
        self.host.item_vectors()
    }

    fn state(&self) -> ModelState {
        self.host.state()
    }

    fn load_state(&mut self, state: &ModelState) -> Result<()> {
        self.host.load_state(state)
    }

    fn training_state(&self) -> TrainingState {
        self.host.training_state()
    }

    fn load_training_state(&mut self, state: &TrainingState) -> Result<()> {
        self.host.load_training_state(state)
    }
}
