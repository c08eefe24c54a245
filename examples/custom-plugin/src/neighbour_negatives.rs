//! `[sampler] type = "neighbour_negatives"`: hard negatives. Each row of a
//! batch gets `per_positive` items drawn from its positive's co-visitation
//! neighbours (items a user consumed within `window` positions of it in the
//! training sequences, weighted by how often), plus `num_uniform` uniform
//! negatives shared by the batch. Each candidate carries log q, the log of
//! its expected copies among the row's candidates, so the logQ correction
//! keeps the softmax unbiased.

use funnel_api::anyhow::{ensure, Result};
use funnel_api::{BuildCx, Candidates, ExampleSet, ItemIdx, Registry, Sampler};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

pub fn register(reg: &mut Registry) {
    reg.sampler::<NeighbourParams>(
        "neighbour_negatives",
        "Hard negatives from each positive's co-visitation neighbours, plus shared uniform ones, logQ-corrected",
        |params, cx: &BuildCx| {
            ensure!(params.window >= 1, "key `window`: at least 1");
            ensure!(
                params.num_uniform <= cx.n_items,
                "key `num_uniform`: more than the catalog's {} items",
                cx.n_items
            );
            Ok(Box::new(NeighbourNegatives::new(params, cx.n_items)))
        },
    );
}

/// Parameters of `neighbour_negatives`.
#[funnel_api::params]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NeighbourParams {
    /// Neighbours drawn for each row's positive (with replacement).
    #[param(default = 8)]
    pub per_positive: usize,
    /// Uniform negatives shared by every row of a batch.
    #[param(default = 100)]
    pub num_uniform: usize,
    /// Two items are neighbours when at most this many positions apart in a
    /// user's training sequence.
    #[param(default = 3)]
    pub window: usize,
    /// Subtract log q from every candidate's logit.
    #[param(default = true)]
    pub log_q_correction: bool,
}

/// Each item's neighbours as a cumulative weight table.
#[derive(Default)]
struct Neighbours {
    items: Vec<ItemIdx>,
    cumulative: Vec<u64>,
}

impl Neighbours {
    fn total(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }

    fn draw(&self, rng: &mut StdRng) -> (ItemIdx, f64) {
        let r = rng.gen_range(0..self.total());
        let i = self.cumulative.partition_point(|&c| c <= r);
        let weight = self.cumulative[i] - if i == 0 { 0 } else { self.cumulative[i - 1] };
        (self.items[i], weight as f64 / self.total() as f64)
    }
}

pub struct NeighbourNegatives {
    params: NeighbourParams,
    n_items: usize,
    neighbours: Vec<Neighbours>,
    /// Expected copies of each item among one row's candidates, averaged
    /// over training positives (written beside the run).
    expected: Vec<f64>,
}

impl NeighbourNegatives {
    fn new(params: NeighbourParams, n_items: usize) -> NeighbourNegatives {
        NeighbourNegatives { params, n_items, neighbours: Vec::new(), expected: Vec::new() }
    }
}

impl Sampler for NeighbourNegatives {
    fn fit(&mut self, item_counts: &[u64], examples: &ExampleSet) -> Result<()> {
        let mut counts = vec![std::collections::BTreeMap::<ItemIdx, u64>::new(); self.n_items];
        // Training positions only: the held-out targets must not leak in.
        for &ex in &examples.train {
            let target = examples.target(ex);
            let seen = examples.seen(ex);
            for &before in &seen[seen.len().saturating_sub(self.params.window)..] {
                if before != target {
                    *counts[target as usize].entry(before).or_default() += 1;
                    *counts[before as usize].entry(target).or_default() += 1;
                }
            }
        }
        self.neighbours = counts
            .into_iter()
            .map(|map| {
                let mut n = Neighbours::default();
                let mut sum = 0;
                for (item, c) in map {
                    sum += c;
                    n.items.push(item);
                    n.cumulative.push(sum);
                }
                n
            })
            .collect();
        let uniform = self.params.num_uniform as f64 / self.n_items as f64;
        self.expected = vec![uniform; self.n_items];
        let positives: u64 = item_counts.iter().sum();
        for (item, &count) in item_counts.iter().enumerate() {
            let n = &self.neighbours[item];
            let share = count as f64 / positives.max(1) as f64 * self.params.per_positive as f64;
            let mut previous = 0;
            for (&j, &c) in n.items.iter().zip(&n.cumulative) {
                self.expected[j as usize] += share * (c - previous) as f64 / n.total() as f64;
                previous = c;
            }
        }
        Ok(())
    }

    fn sample(&mut self, positives: &[ItemIdx], rng: &mut StdRng, out: &mut Candidates) {
        let uniform_log_q = (self.params.num_uniform as f64 / self.n_items as f64).ln() as f32;
        for _ in 0..self.params.num_uniform {
            out.shared.push(rng.gen_range(0..self.n_items) as ItemIdx);
            out.shared_log_q.push(uniform_log_q);
        }
        // The row's own positive is corrected as a uniform draw would be.
        out.positive_log_q.resize(positives.len(), (1.0 / self.n_items as f64).ln() as f32);
        let k = self.params.per_positive as f64;
        for &p in positives {
            let n = &self.neighbours[p as usize];
            for _ in 0..self.params.per_positive {
                // A positive never seen with anything falls back to uniform draws.
                let (item, q) = if n.total() == 0 {
                    (rng.gen_range(0..self.n_items) as ItemIdx, 1.0 / self.n_items as f64)
                } else {
                    n.draw(rng)
                };
                out.per_row.push(item);
                out.per_row_log_q.push((k * q).ln() as f32);
            }
        }
        out.log_q_correction = self.params.log_q_correction;
    }

    fn item_probabilities(&self) -> Vec<f64> {
        self.expected.clone()
    }
}
