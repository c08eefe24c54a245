//! `[sampler] type = "full"`: every catalog item is a candidate, so the
//! sampled softmax becomes the exact softmax (feasible for catalogs of a few
//! thousand items such as ml-1m). Each item is in the set exactly once:
//! `q = 1`, `log q = 0`. A row's positive also appears among the shared items;
//! that copy is masked as an accidental hit, leaving its own column.

use anyhow::{bail, Result};
use funnel_api::{BuildCx, Candidates, ExampleSet, ItemIdx, NoParams, Registry, Sampler};
use rand::rngs::StdRng;

pub(crate) fn register(reg: &mut Registry) {
    reg.sampler::<NoParams>(
        "full",
        "Every catalog item as a candidate: the exact (full) softmax",
        |_p, cx: &BuildCx| {
            if cx.n_items == 0 {
                bail!("the catalog is empty");
            }
            Ok(Box::new(FullSoftmax { n_items: cx.n_items }))
        },
    );
}

pub struct FullSoftmax {
    n_items: usize,
}

impl Sampler for FullSoftmax {
    fn fit(&mut self, _item_counts: &[u64], _examples: &ExampleSet) -> Result<()> {
        Ok(())
    }

    fn sample(&mut self, positives: &[ItemIdx], _rng: &mut StdRng, out: &mut Candidates) {
        out.shared.extend(0..self.n_items as ItemIdx);
        out.shared_log_q.resize(self.n_items, 0.0);
        out.positive_log_q.resize(positives.len(), 0.0);
    }

    fn item_probabilities(&self) -> Vec<f64> {
        vec![1.0; self.n_items]
    }
}
