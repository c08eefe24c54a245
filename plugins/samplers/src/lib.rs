//! funnel's samplers: which candidates each training batch is scored against,
//! and with which probability each entered the set (for the logQ correction
//! of Yi et al. 2019).

#![forbid(unsafe_code)]

mod full;
mod mixed;
mod popularity;
mod uniform;

pub use full::FullSoftmax;
pub use mixed::{Frequency, InBatchParams, MixedParams, MixedSampler, NegativesFrom};
pub use popularity::{PopularityParams, PopularitySampler};
pub use uniform::{UniformParams, UniformSampler};

pub fn register(reg: &mut funnel_api::Registry) {
    uniform::register(reg);
    popularity::register(reg);
    mixed::register(reg);
    full::register(reg);
}
