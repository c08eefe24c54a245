//! funnel's samplers: which candidates each training batch is scored against,
//! and with which probability each entered the set (for the logQ correction
//! of Yi et al. 2019).

mod mixed;
mod uniform;

pub use mixed::{InBatchParams, MixedParams, MixedSampler};
pub use uniform::{UniformParams, UniformSampler};

pub fn register(reg: &mut funnel_api::Registry) {
    uniform::register(reg);
    mixed::register(reg);
}
