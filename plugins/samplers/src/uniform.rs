//! `[sampler] type = "uniform"`: one set of negatives per batch, drawn
//! uniformly from the catalog and shared by every row (the sampled softmax of
//! Jean et al. 2015 as used by Covington et al. 2016).
//!
//! Every item enters the set with probability `q = num_negatives / n_items`
//! (with or without replacement), so `log q` is a constant and the logQ
//! correction leaves the softmax unchanged; it is reported all the same.

use anyhow::{bail, Result};
use funnel_api::{BuildCx, Candidates, ExampleSet, ItemIdx, Registry, Sampler};
use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

pub(crate) fn register(reg: &mut Registry) {
    reg.sampler::<UniformParams>("uniform", "Shared negatives drawn uniformly from the catalog", |p, cx: &BuildCx| {
        Ok(Box::new(UniformSampler::new(p, cx.n_items)?))
    });
}

/// Parameters of `uniform`.
#[funnel_api::params]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UniformParams {
    /// Negatives drawn per batch, or per row when not shared.
    #[param(default = 1000)]
    pub num_negatives: usize,
    /// One set of negatives for the whole batch (one GEMM); false draws each row its own.
    #[param(default = true)]
    pub shared: bool,
    /// Draw with replacement; false draws distinct items.
    #[param(default = false)]
    pub replacement: bool,
    /// Subtract log q from candidate logits.
    #[param(default = true)]
    pub log_q_correction: bool,
}

pub struct UniformSampler {
    params: UniformParams,
    draw: UniformDraw,
    /// One row's draws, reused.
    row: Vec<ItemIdx>,
}

impl UniformSampler {
    pub fn new(params: UniformParams, n_items: usize) -> Result<UniformSampler> {
        if params.num_negatives == 0 {
            bail!("key `num_negatives`: must be at least 1");
        }
        let draw = UniformDraw::new(n_items, params.num_negatives, params.replacement)
            .map_err(|e| anyhow::anyhow!("key `num_negatives`: {e}"))?;
        Ok(UniformSampler { params, draw, row: Vec::new() })
    }
}

impl Sampler for UniformSampler {
    fn fit(&mut self, _item_counts: &[u64], _examples: &ExampleSet) -> Result<()> {
        Ok(())
    }

    fn sample(&mut self, positives: &[ItemIdx], rng: &mut StdRng, out: &mut Candidates) {
        let log_q = self.draw.inclusion_probability().ln() as f32;
        if self.params.shared {
            self.draw.draw(rng, &mut out.shared);
            out.shared_log_q.resize(out.shared.len(), log_q);
        } else {
            for _ in positives {
                self.draw.draw(rng, &mut self.row);
                out.per_row.extend_from_slice(&self.row);
            }
            out.per_row_log_q.resize(out.per_row.len(), log_q);
        }
        out.positive_log_q.resize(positives.len(), log_q);
        out.log_q_correction = self.params.log_q_correction;
    }

    fn item_probabilities(&self) -> Vec<f64> {
        vec![self.draw.inclusion_probability(); self.draw.n_items]
    }
}

/// `k` items drawn uniformly from `0..n_items`, with or without replacement.
pub(crate) struct UniformDraw {
    n_items: usize,
    k: usize,
    replacement: bool,
}

impl UniformDraw {
    pub(crate) fn new(n_items: usize, k: usize, replacement: bool) -> Result<UniformDraw> {
        if n_items == 0 {
            bail!("the catalog is empty");
        }
        if !replacement && k > n_items {
            bail!("{k} distinct negatives asked of a catalog of {n_items} items (lower it or set replacement = true)");
        }
        Ok(UniformDraw { n_items, k, replacement })
    }

    /// Expected number of copies of one item among the draws (its inclusion
    /// probability when drawing without replacement).
    pub(crate) fn inclusion_probability(&self) -> f64 {
        self.k as f64 / self.n_items as f64
    }

    /// Replaces the contents of `out` with `k` fresh draws.
    pub(crate) fn draw(&self, rng: &mut StdRng, out: &mut Vec<ItemIdx>) {
        let n = self.n_items as u32;
        out.clear();
        if self.replacement {
            out.extend((0..self.k).map(|_| rng.gen_range(0..n)));
        } else {
            // rand picks Floyd's algorithm, rejection or a partial shuffle by
            // how k compares with the catalog.
            out.extend(rand::seq::index::sample(rng, self.n_items, self.k).into_iter().map(|i| i as ItemIdx));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn sampler(num_negatives: usize, replacement: bool, n_items: usize) -> UniformSampler {
        UniformSampler::new(UniformParams { num_negatives, replacement, ..Default::default() }, n_items).unwrap()
    }

    /// Pearson's statistic of `counts` against equal expected counts.
    fn chi_square_uniform(counts: &[u64]) -> f64 {
        let total: u64 = counts.iter().sum();
        let expected = total as f64 / counts.len() as f64;
        counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum()
    }

    #[test]
    fn draws_match_the_uniform_distribution() {
        // 50 items -> 49 degrees of freedom; the 0.999 quantile of chi2(49) is 85.4.
        for replacement in [true, false] {
            let mut s = sampler(10, replacement, 50);
            let mut rng = StdRng::seed_from_u64(7);
            let mut out = Candidates::default();
            let mut counts = vec![0u64; 50];
            for _ in 0..20_000 {
                out.clear();
                s.sample(&[0], &mut rng, &mut out);
                for &i in &out.shared {
                    counts[i as usize] += 1;
                }
            }
            let chi2 = chi_square_uniform(&counts);
            assert!(chi2 < 85.4, "replacement = {replacement}: chi2 = {chi2}");
        }
    }

    #[test]
    fn without_replacement_items_are_distinct() {
        let mut s = sampler(30, false, 31);
        let mut rng = StdRng::seed_from_u64(1);
        let mut out = Candidates::default();
        for _ in 0..100 {
            out.clear();
            s.sample(&[0, 1], &mut rng, &mut out);
            let mut seen = out.shared.clone();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen.len(), 30);
        }
    }

    #[test]
    fn log_q_is_the_inclusion_probability() {
        let mut s = sampler(10, false, 40);
        let mut out = Candidates::default();
        s.sample(&[3, 4, 5], &mut StdRng::seed_from_u64(0), &mut out);
        let expected = (10.0f32 / 40.0).ln();
        assert!(out.shared_log_q.iter().all(|&q| (q - expected).abs() < 1e-6));
        assert_eq!(out.positive_log_q.len(), 3);
        assert_eq!(s.item_probabilities(), vec![0.25; 40]);
    }

    #[test]
    fn per_row_negatives_are_drawn_for_each_row() {
        let params = UniformParams { num_negatives: 4, shared: false, ..Default::default() };
        let mut s = UniformSampler::new(params, 20).unwrap();
        let mut out = Candidates::default();
        s.sample(&[1, 2, 3], &mut StdRng::seed_from_u64(9), &mut out);
        assert!(out.shared.is_empty());
        assert_eq!(out.per_row.len(), 12);
        assert!(out.per_row_log_q.iter().all(|&q| (q - (4.0f32 / 20.0).ln()).abs() < 1e-6));
        let rows: Vec<_> = out.per_row.chunks(4).collect();
        assert!(rows[0] != rows[1] || rows[1] != rows[2], "rows share their draws: {rows:?}");
    }

    #[test]
    fn same_seed_same_draws() {
        let draw = || {
            let mut s = sampler(5, false, 100);
            let mut out = Candidates::default();
            s.sample(&[0], &mut StdRng::seed_from_u64(42), &mut out);
            out.shared
        };
        assert_eq!(draw(), draw());
    }

    #[test]
    fn too_many_distinct_negatives_is_an_error() {
        let err = UniformSampler::new(UniformParams { num_negatives: 11, ..Default::default() }, 10).err().unwrap();
        assert!(err.to_string().contains("num_negatives"), "{err}");
    }
}
