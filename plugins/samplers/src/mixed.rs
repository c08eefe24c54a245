//! `[sampler] type = "in_batch"` and `type = "mixed"`: the batch's own
//! positives as negatives for each other, optionally joined by items drawn
//! uniformly or by popularity (mixed negative sampling, Yang et al. 2020).
//!
//! Candidates are one shared set: the `B` positives of the batch and `N`
//! uniform draws. The logQ term of candidate `j` is the log of its expected
//! number of copies in that set, `B * p(j) + N / n_items`, where `p(j)` is
//! `j`'s share of training positives: positives arrive with the training
//! distribution, uniform draws with `1 / n_items` each (popularity draws
//! with `N * P(j)` in place of `N / n_items`). With
//! `frequency = "exact"` (the default) `B * p(j)` comes from training-set
//! counts; with `"streaming"` it is the streaming estimate of Yi et al. 2019
//! (§4): per item, the last step it was seen and a moving average of the
//! steps between sightings, whose inverse is its probability of being in a
//! batch. The streaming estimate needs no pass over the data, as in a
//! production stream. A candidate equal to a row's positive (its own
//! column aside) is an accidental hit and is masked by the loss; duplicates
//! among the candidates are kept, each copy a column, which matches the
//! expected-count correction above.

use anyhow::{bail, Result};
use funnel_api::{BuildCx, Candidates, ExampleSet, ItemIdx, Registry, Sampler, TrainingState};
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};

use crate::popularity::{check_alpha, PopularityDraw};
use crate::uniform::UniformDraw;

pub(crate) fn register(reg: &mut Registry) {
    reg.sampler::<InBatchParams>(
        "in_batch",
        "The batch's other positives as negatives, logQ from training frequencies",
        |p, cx: &BuildCx| {
            let mixed = MixedParams {
                num_uniform: 0,
                log_q_correction: p.log_q_correction,
                frequency: p.frequency,
                streaming_rate: p.streaming_rate,
                ..MixedParams::default()
            };
            Ok(Box::new(MixedSampler::new(mixed, cx)?))
        },
    );
    reg.sampler::<MixedParams>(
        "mixed",
        "Mixed negative sampling: in-batch positives plus shared uniform negatives, logQ-corrected",
        |p, cx: &BuildCx| Ok(Box::new(MixedSampler::new(p, cx)?)),
    );
}

/// Parameters of `in_batch`.
#[funnel_api::params]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InBatchParams {
    /// Subtract log(expected copies in the batch) from each candidate's logit.
    #[param(default = true)]
    pub log_q_correction: bool,
    /// How in-batch probabilities are known: "exact" training counts or Yi
    /// et al.'s "streaming" estimate.
    #[param(default = Frequency::Exact)]
    pub frequency: Frequency,
    /// Learning rate of the streaming estimate's moving average.
    #[param(default = 0.05)]
    pub streaming_rate: f64,
}

/// The distribution of the negatives added to the in-batch ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NegativesFrom {
    Uniform,
    Popularity,
}

/// Where the in-batch part of q comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Frequency {
    Exact,
    Streaming,
}

/// Parameters of `mixed`.
#[funnel_api::params]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MixedParams {
    /// Negatives added to the in-batch ones per batch.
    #[param(default = 1000)]
    pub num_uniform: usize,
    /// Where those negatives come from: "uniform" or "popularity" (count^alpha).
    #[param(default = NegativesFrom::Uniform)]
    pub negatives_from: NegativesFrom,
    /// Exponent on training counts for popularity negatives.
    #[param(default = 0.75)]
    pub alpha: f64,
    /// Draw uniform negatives with replacement; popularity draws always are.
    #[param(default = false)]
    pub replacement: bool,
    /// Subtract log(expected copies in the candidate set) from each candidate's logit.
    #[param(default = true)]
    pub log_q_correction: bool,
    /// How in-batch probabilities are known: "exact" training counts or Yi
    /// et al.'s "streaming" estimate.
    #[param(default = Frequency::Exact)]
    pub frequency: Frequency,
    /// Learning rate of the streaming estimate's moving average.
    #[param(default = 0.05)]
    pub streaming_rate: f64,
}

pub struct MixedSampler {
    params: MixedParams,
    uniform: Option<UniformDraw>,
    /// Set by `fit` when negatives come from popularity.
    popularity: Option<PopularityDraw>,
    n_items: usize,
    batch_size: usize,
    /// Share of training positives per item; set by `fit`.
    unigram: Option<Vec<f64>>,
    streaming: StreamingFrequency,
}

/// Yi et al. 2019, Algorithm 2, with one slot per item (item indices are
/// dense, so no hashing is needed).
struct StreamingFrequency {
    rate: f64,
    step: u64,
    /// Step at which each item was last in a batch.
    last_seen: Vec<u64>,
    /// Moving average of the steps between an item's sightings.
    gap: Vec<f64>,
}

impl StreamingFrequency {
    fn new(n_items: usize, batch_size: usize, rate: f64) -> StreamingFrequency {
        // Before any sighting every item is assumed equally likely.
        let prior_gap = (n_items as f64 / batch_size as f64).max(1.0);
        StreamingFrequency { rate, step: 0, last_seen: vec![0; n_items], gap: vec![prior_gap; n_items] }
    }

    fn observe(&mut self, batch: &[ItemIdx]) {
        self.step += 1;
        for &i in batch {
            let i = i as usize;
            if self.last_seen[i] != self.step {
                let gap = (self.step - self.last_seen[i]) as f64;
                self.gap[i] = (1.0 - self.rate) * self.gap[i] + self.rate * gap;
                self.last_seen[i] = self.step;
            }
        }
    }

    /// Estimated probability that `item` is in a batch (about its expected copies).
    fn per_batch(&self, item: ItemIdx) -> f64 {
        1.0 / self.gap[item as usize]
    }
}

impl MixedSampler {
    pub fn new(params: MixedParams, cx: &BuildCx) -> Result<MixedSampler> {
        if cx.n_items == 0 {
            bail!("the catalog is empty");
        }
        check_alpha(params.alpha)?;
        let uniform = (params.num_uniform > 0 && params.negatives_from == NegativesFrom::Uniform)
            .then(|| UniformDraw::new(cx.n_items, params.num_uniform, params.replacement))
            .transpose()
            .map_err(|e| anyhow::anyhow!("key `num_uniform`: {e}"))?;
        if !(params.streaming_rate > 0.0 && params.streaming_rate <= 1.0) {
            bail!("key `streaming_rate`: must be in (0, 1], found {}", params.streaming_rate);
        }
        let batch_size = cx.train.batch_size.max(1);
        let streaming = StreamingFrequency::new(cx.n_items, batch_size, params.streaming_rate);
        Ok(MixedSampler {
            params,
            uniform,
            popularity: None,
            n_items: cx.n_items,
            batch_size,
            unigram: None,
            streaming,
        })
    }

    /// Expected copies of `item` in a candidate set built for `b` positives.
    fn expected_copies(&self, item: ItemIdx, b: usize) -> f64 {
        let extra = match (&self.uniform, &self.popularity) {
            (Some(u), _) => u.inclusion_probability(),
            (None, Some(p)) => p.expected_copies(item, self.params.num_uniform),
            (None, None) => 0.0,
        };
        let in_batch = match self.params.frequency {
            Frequency::Exact => {
                let unigram = self.unigram.as_ref().expect("the core fits a sampler before sampling");
                b as f64 * unigram[item as usize]
            }
            Frequency::Streaming => self.streaming.per_batch(item),
        };
        in_batch + extra
    }
}

impl Sampler for MixedSampler {
    fn fit(&mut self, item_counts: &[u64], _examples: &ExampleSet) -> Result<()> {
        let total: u64 = item_counts.iter().sum();
        if total == 0 || item_counts.len() != self.n_items {
            bail!("no training positives to estimate item frequencies from");
        }
        self.unigram = Some(item_counts.iter().map(|&c| c as f64 / total as f64).collect());
        if self.params.negatives_from == NegativesFrom::Popularity && self.params.num_uniform > 0 {
            self.popularity = Some(PopularityDraw::fit(item_counts, self.params.alpha)?);
        }
        Ok(())
    }

    fn sample(&mut self, positives: &[ItemIdx], rng: &mut StdRng, out: &mut Candidates) {
        let b = positives.len();
        if self.params.frequency == Frequency::Streaming {
            self.streaming.observe(positives);
        }
        if let Some(u) = &mut self.uniform {
            u.draw(rng, &mut out.shared);
        }
        if let Some(p) = &self.popularity {
            p.draw(self.params.num_uniform, rng, &mut out.shared);
        }
        out.in_batch = true;
        out.log_q_correction = self.params.log_q_correction;
        out.positive_log_q.extend(positives.iter().map(|&i| self.expected_copies(i, b).ln() as f32));
        out.shared_log_q.extend(out.shared.iter().map(|&i| self.expected_copies(i, b).ln() as f32));
    }

    fn training_state(&self) -> TrainingState {
        let mut s = TrainingState::default();
        if self.params.frequency == Frequency::Streaming {
            let f = &self.streaming;
            s.u64s.insert("streaming.step".into(), vec![f.step]);
            s.u64s.insert("streaming.last_seen".into(), f.last_seen.clone());
            s.f64s.insert("streaming.gap".into(), f.gap.clone());
        }
        s
    }

    fn load_training_state(&mut self, state: &TrainingState) -> Result<()> {
        if self.params.frequency == Frequency::Streaming {
            let n = self.n_items;
            let f = &mut self.streaming;
            f.step = TrainingState::take(&state.u64s, "streaming.step", 1)?[0];
            f.last_seen.copy_from_slice(TrainingState::take(&state.u64s, "streaming.last_seen", n)?);
            f.gap.copy_from_slice(TrainingState::take(&state.f64s, "streaming.gap", n)?);
        }
        Ok(())
    }

    fn item_probabilities(&self) -> Vec<f64> {
        if self.unigram.is_none() {
            return Vec::new();
        }
        (0..self.n_items as u32).map(|i| self.expected_copies(i, self.batch_size)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use funnel_api::TrainConfig;
    use rand::SeedableRng;

    fn fitted(num_uniform: usize, counts: &[u64]) -> MixedSampler {
        let cx = BuildCx {
            n_items: counts.len(),
            train: TrainConfig { batch_size: 2, ..Default::default() },
            ..Default::default()
        };
        let mut s = MixedSampler::new(MixedParams { num_uniform, ..Default::default() }, &cx).unwrap();
        s.fit(counts, &ExampleSet::default()).unwrap();
        s
    }

    #[test]
    fn log_q_is_the_log_of_expected_copies() {
        // Counts 1, 3, 0, 4 of 8 positives; batches of 2; 2 uniform draws of 4 items.
        // Item 1: 2 * 3/8 + 2/4 = 1.25. Item 3: 2 * 4/8 + 0.5 = 1.5. Item 2: 0 + 0.5.
        let mut s = fitted(2, &[1, 3, 0, 4]);
        let mut out = Candidates::default();
        s.sample(&[1, 3], &mut StdRng::seed_from_u64(0), &mut out);
        assert!(out.in_batch && out.log_q_correction);
        assert!((out.positive_log_q[0] - 1.25f32.ln()).abs() < 1e-6);
        assert!((out.positive_log_q[1] - 1.5f32.ln()).abs() < 1e-6);
        assert_eq!(out.shared.len(), 2);
        let expected = [0.25 + 0.5, 1.25, 0.5, 1.5];
        for (&i, &lq) in out.shared.iter().zip(&out.shared_log_q) {
            assert!((lq - (expected[i as usize] as f32).ln()).abs() < 1e-6, "item {i}");
        }
        assert_eq!(s.item_probabilities(), expected.to_vec());
    }

    #[test]
    fn streaming_estimate_converges_to_the_true_batch_probability() {
        // Item 0 is in every batch, item 1 in every 4th, item 2 in every 10th.
        let cx =
            BuildCx { n_items: 3, train: TrainConfig { batch_size: 1, ..Default::default() }, ..Default::default() };
        let params = MixedParams { num_uniform: 0, frequency: Frequency::Streaming, ..Default::default() };
        let mut s = MixedSampler::new(params, &cx).unwrap();
        s.fit(&[1, 1, 1], &ExampleSet::default()).unwrap();
        let mut out = Candidates::default();
        let mut rng = StdRng::seed_from_u64(0);
        for step in 1..=4000u64 {
            let mut batch = vec![0];
            if step % 4 == 0 {
                batch.push(1);
            }
            if step % 10 == 0 {
                batch.push(2);
            }
            out.clear();
            s.sample(&batch, &mut rng, &mut out);
        }
        for (item, truth) in [(0, 1.0), (1, 0.25), (2, 0.1)] {
            let est = s.streaming.per_batch(item);
            assert!((est - truth).abs() < 0.02 * truth.max(0.1), "item {item}: {est} vs {truth}");
        }
        assert!((out.positive_log_q[0] - 0.0).abs() < 1e-3, "log q of an every-batch item is log 1");
    }

    #[test]
    fn popularity_negatives_add_their_expected_copies() {
        // Counts 1, 3, 0, 4 with alpha 1: P = 1/8, 3/8, 0, 4/8; 2 draws; batches of 2.
        let cx =
            BuildCx { n_items: 4, train: TrainConfig { batch_size: 2, ..Default::default() }, ..Default::default() };
        let params =
            MixedParams { num_uniform: 2, negatives_from: NegativesFrom::Popularity, alpha: 1.0, ..Default::default() };
        let mut s = MixedSampler::new(params, &cx).unwrap();
        s.fit(&[1, 3, 0, 4], &ExampleSet::default()).unwrap();
        let mut out = Candidates::default();
        s.sample(&[1, 3], &mut StdRng::seed_from_u64(3), &mut out);
        assert_eq!(out.shared.len(), 2);
        assert!(!out.shared.contains(&2), "an item without training positives was drawn");
        // Item 1: 2 * 3/8 + 2 * 3/8 = 1.5; item 3: 2 * 4/8 + 2 * 4/8 = 2.
        assert!((out.positive_log_q[0] - 1.5f32.ln()).abs() < 1e-6);
        assert!((out.positive_log_q[1] - 2.0f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn mixed_candidates_match_their_declared_expected_copies() {
        // Batches of shuffled training targets plus 3 uniform draws of 6
        // items: each item's count over many batches against its declared
        // expected copies per batch, by Pearson's chi-square.
        use rand::seq::SliceRandom;
        let counts = [1u64, 2, 3, 4, 5, 0];
        let mut targets: Vec<ItemIdx> =
            counts.iter().enumerate().flat_map(|(i, &c)| std::iter::repeat_n(i as ItemIdx, c as usize)).collect();
        let b = 5;
        let cx =
            BuildCx { n_items: 6, train: TrainConfig { batch_size: b, ..Default::default() }, ..Default::default() };
        let mut s = MixedSampler::new(MixedParams { num_uniform: 3, ..Default::default() }, &cx).unwrap();
        s.fit(&counts, &ExampleSet::default()).unwrap();
        let mut rng = StdRng::seed_from_u64(21);
        let mut out = Candidates::default();
        let mut seen = [0f64; 6];
        let mut batches = 0.0;
        for _ in 0..4000 {
            targets.shuffle(&mut rng);
            for chunk in targets.chunks(b) {
                out.clear();
                s.sample(chunk, &mut rng, &mut out);
                chunk.iter().chain(&out.shared).for_each(|&i| seen[i as usize] += 1.0);
                batches += 1.0;
            }
        }
        let declared = s.item_probabilities();
        let chi2: f64 = (0..6).map(|i| (seen[i] - batches * declared[i]).powi(2) / (batches * declared[i])).sum();
        // 5 degrees of freedom: the 0.999 quantile of chi2(5) is 20.52.
        assert!(chi2 < 20.52, "chi2 = {chi2}, seen {seen:?}, declared {declared:?}");
    }

    #[test]
    fn in_batch_alone_draws_nothing_else() {
        let mut s = fitted(0, &[1, 1]);
        let mut out = Candidates::default();
        s.sample(&[0, 1], &mut StdRng::seed_from_u64(0), &mut out);
        assert!(out.shared.is_empty());
        assert!((out.positive_log_q[0] - 1.0f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn expected_copies_match_simulated_batches() {
        // Positives arrive as shuffled training targets, so each item's mean
        // count per batch approaches B * p(item).
        use rand::seq::SliceRandom;
        let counts = [10u64, 30, 60];
        let mut targets: Vec<ItemIdx> =
            counts.iter().enumerate().flat_map(|(i, &c)| std::iter::repeat_n(i as ItemIdx, c as usize)).collect();
        let s = fitted(0, &counts);
        let mut rng = StdRng::seed_from_u64(5);
        let (b, rounds) = (10usize, 2000);
        let mut seen = [0f64; 3];
        for _ in 0..rounds {
            targets.shuffle(&mut rng);
            for chunk in targets.chunks(b) {
                chunk.iter().for_each(|&i| seen[i as usize] += 1.0);
            }
        }
        let batches = (rounds * targets.len() / b) as f64;
        for (i, &count) in seen.iter().enumerate() {
            let mean = count / batches;
            assert!((mean - s.expected_copies(i as ItemIdx, b)).abs() < 1e-9, "item {i}: {mean}");
        }
    }
}
