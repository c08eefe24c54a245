//! `[sampler] type = "popularity"`: shared negatives drawn from the training
//! positives' unigram distribution raised to `alpha` (word2vec's 0.75 by
//! default), with replacement, through an alias table.
//!
//! Item `j` is drawn with probability `P(j) = count(j)^alpha / sum`, so its
//! expected number of copies among `N` draws, the logQ term, is `N * P(j)`.
//! Items never seen in training are never drawn.

use anyhow::{bail, Context, Result};
use funnel_api::{BuildCx, Candidates, ExampleSet, ItemIdx, Registry, Sampler};
use rand::rngs::StdRng;
use rand_distr::{Distribution, WeightedAliasIndex};
use serde::{Deserialize, Serialize};

pub(crate) fn register(reg: &mut Registry) {
    reg.sampler::<PopularityParams>(
        "popularity",
        "Shared negatives drawn from unigram^alpha of training positives (alias method), logQ-corrected",
        |p, cx: &BuildCx| Ok(Box::new(PopularitySampler::new(p, cx.n_items)?)),
    );
}

/// Parameters of `popularity`.
#[funnel_api::params]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PopularityParams {
    /// Negatives drawn per batch with replacement, shared by its rows.
    #[param(default = 1000)]
    pub num_negatives: usize,
    /// Exponent on training counts; 0 is uniform over seen items, 1 is unigram.
    #[param(default = 0.75)]
    pub alpha: f64,
    /// Subtract log(expected copies) from candidate logits.
    #[param(default = true)]
    pub log_q_correction: bool,
}

pub struct PopularitySampler {
    params: PopularityParams,
    n_items: usize,
    draw: Option<PopularityDraw>,
}

/// Draws from `count^alpha` of training positives; shared with `mixed`.
pub(crate) struct PopularityDraw {
    table: WeightedAliasIndex<f64>,
    /// P(j) per item.
    probabilities: Vec<f64>,
}

impl PopularityDraw {
    pub(crate) fn fit(item_counts: &[u64], alpha: f64) -> Result<PopularityDraw> {
        if item_counts.iter().all(|&c| c == 0) {
            bail!("no training positives to estimate item frequencies from");
        }
        let weights: Vec<f64> =
            item_counts.iter().map(|&c| if c == 0 { 0.0 } else { (c as f64).powf(alpha) }).collect();
        let total: f64 = weights.iter().sum();
        Ok(PopularityDraw {
            probabilities: weights.iter().map(|w| w / total).collect(),
            table: WeightedAliasIndex::new(weights).context("building the alias table")?,
        })
    }

    /// Appends `k` draws (with replacement) to `out`.
    pub(crate) fn draw(&self, k: usize, rng: &mut StdRng, out: &mut Vec<ItemIdx>) {
        out.extend((0..k).map(|_| self.table.sample(rng) as ItemIdx));
    }

    /// Expected copies of `item` among `k` draws.
    pub(crate) fn expected_copies(&self, item: ItemIdx, k: usize) -> f64 {
        k as f64 * self.probabilities[item as usize]
    }
}

pub(crate) fn check_alpha(alpha: f64) -> Result<()> {
    if !(alpha.is_finite() && alpha >= 0.0) {
        bail!("key `alpha`: must be a non-negative number, found {alpha}");
    }
    Ok(())
}

impl PopularitySampler {
    pub fn new(params: PopularityParams, n_items: usize) -> Result<PopularitySampler> {
        if params.num_negatives == 0 {
            bail!("key `num_negatives`: must be at least 1");
        }
        check_alpha(params.alpha)?;
        Ok(PopularitySampler { params, n_items, draw: None })
    }
}

impl Sampler for PopularitySampler {
    fn fit(&mut self, item_counts: &[u64], _examples: &ExampleSet) -> Result<()> {
        if item_counts.len() != self.n_items {
            bail!("item counts cover {} items, the catalog {}", item_counts.len(), self.n_items);
        }
        self.draw = Some(PopularityDraw::fit(item_counts, self.params.alpha)?);
        Ok(())
    }

    fn sample(&mut self, positives: &[ItemIdx], rng: &mut StdRng, out: &mut Candidates) {
        let draw = self.draw.as_ref().expect("the core fits a sampler before sampling");
        let k = self.params.num_negatives;
        draw.draw(k, rng, &mut out.shared);
        out.shared_log_q.extend(out.shared.iter().map(|&i| draw.expected_copies(i, k).ln() as f32));
        // A positive's own column is not a negative; its logQ term is the
        // same expected-copies value, floored so unseen items stay finite.
        out.positive_log_q.extend(positives.iter().map(|&i| draw.expected_copies(i, k).max(1e-12).ln() as f32));
        out.log_q_correction = self.params.log_q_correction;
    }

    fn item_probabilities(&self) -> Vec<f64> {
        let k = self.params.num_negatives;
        self.draw
            .as_ref()
            .map_or_else(Vec::new, |d| (0..self.n_items as ItemIdx).map(|i| d.expected_copies(i, k)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn draws_match_the_declared_distribution() {
        // Counts 1, 8, 27, 0, 64 with alpha 1/3 give weights 1, 2, 3, 0, 4.
        let mut s = PopularitySampler::new(
            PopularityParams { num_negatives: 100, alpha: 1.0 / 3.0, log_q_correction: true },
            5,
        )
        .unwrap();
        s.fit(&[1, 8, 27, 0, 64], &ExampleSet::default()).unwrap();
        let mut rng = StdRng::seed_from_u64(11);
        let mut out = Candidates::default();
        let mut counts = [0f64; 5];
        for _ in 0..1000 {
            out.clear();
            s.sample(&[0], &mut rng, &mut out);
            out.shared.iter().for_each(|&i| counts[i as usize] += 1.0);
        }
        assert_eq!(counts[3], 0.0, "an unseen item was drawn");
        let declared = [0.1, 0.2, 0.3, 0.0, 0.4];
        let total: f64 = counts.iter().sum();
        let chi2: f64 = (0..5)
            .filter(|&i| declared[i] > 0.0)
            .map(|i| (counts[i] - total * declared[i]).powi(2) / (total * declared[i]))
            .sum();
        // 3 degrees of freedom: the 0.999 quantile of chi2(3) is 16.27.
        assert!(chi2 < 16.27, "chi2 = {chi2}, counts {counts:?}");
        for (&i, &lq) in out.shared.iter().zip(&out.shared_log_q) {
            assert!((lq as f64 - (100.0 * declared[i as usize]).ln()).abs() < 1e-5);
        }
    }
}
