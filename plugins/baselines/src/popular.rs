//! `[[baselines]] type = "most_popular"`: every user gets the items with the
//! most training positives.

use funnel_api::anyhow::{bail, Result};
use funnel_api::{Baseline, ExampleSet, ItemIdx, SparseScores, UserIdx};

/// Scores each item by how often it is a training target.
#[derive(Debug, Clone, Default)]
pub struct MostPopular {
    counts: Vec<f32>,
}

impl MostPopular {
    /// Training positives of each item (empty before `fit`).
    pub fn counts(&self) -> &[f32] {
        &self.counts
    }
}

impl Baseline for MostPopular {
    fn fit(&mut self, examples: &ExampleSet, n_items: usize) -> Result<()> {
        let mut counts = vec![0u64; n_items];
        for &ex in &examples.train {
            let item = examples.target(ex) as usize;
            if item >= n_items {
                bail!("training target {item} of user {} is outside the catalog of {n_items} items", ex.user);
            }
            counts[item] += 1;
        }
        self.counts = counts.into_iter().map(|c| c as f32).collect();
        Ok(())
    }

    fn score(&self, _user: UserIdx, _history: &[ItemIdx], out: &mut [f32]) {
        out.copy_from_slice(&self.counts);
    }

    /// Every user gets the same scores: the counts themselves.
    fn shared_base(&self) -> Option<&[f32]> {
        Some(&self.counts)
    }

    fn sparse_score(&self, _user: UserIdx, _history: &[ItemIdx], out: &mut SparseScores) {
        out.own.clear();
        out.scale = 1.0;
    }

    fn parameter_count(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::examples;

    #[test]
    fn scores_are_training_target_counts_and_never_count_held_out_targets() {
        // Targets: user 0 trains on positions 1 and 2 (items 1, 2), then
        // validates on item 3 and tests on item 4; user 1 trains on position
        // 1 (item 2), validates on 4, tests on 3. Position 0 is never a target.
        let set = examples(&[&[0, 1, 2, 3, 4], &[1, 2, 4, 3]], true);
        let mut b = MostPopular::default();
        b.fit(&set, 6).unwrap();
        assert_eq!(b.counts(), [0.0, 1.0, 2.0, 0.0, 0.0, 0.0]);
        assert_eq!(b.parameter_count(), 6);
    }

    #[test]
    fn every_query_gets_the_same_scores_for_the_whole_catalog() {
        let set = examples(&[&[0, 1, 2, 1], &[2, 1]], false);
        let mut b = MostPopular::default();
        b.fit(&set, 4).unwrap();
        let (mut a, mut c) = (vec![f32::NAN; 4], vec![f32::NAN; 4]);
        b.score(0, &[0], &mut a);
        b.score(1, &[], &mut c);
        assert_eq!(a, [0.0, 3.0, 1.0, 0.0]);
        assert_eq!(a, c);
    }

    #[test]
    fn a_target_outside_the_catalog_is_an_error() {
        let set = examples(&[&[0, 7]], false);
        let err = MostPopular::default().fit(&set, 3).unwrap_err();
        assert!(err.to_string().contains("outside the catalog of 3 items"), "{err}");
    }
}
