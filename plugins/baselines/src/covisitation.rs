//! `[[baselines]] type = "covisitation"`: the item-to-item co-visitation
//! recommender of Davidson et al., "The YouTube video recommendation system"
//! (RecSys 2010).
//!
//! Fitting reads each user's training sequence: the positions up to and
//! including the user's last training target, which is everything a training
//! example sees (its history and its target) and nothing held out. In those
//! sequences
//!
//! - `c_i` is the number of occurrences of item `i`, and
//! - `c_ij` the number of position pairs `(p, q)` of one user with
//!   `1 <= |p - q| <= window`, item `i` at `p` and a different item `j` at
//!   `q` (symmetric: `c_ij = c_ji`).
//!
//! The relatedness of `j` to `i` is `r(i, j) = c_ij / (c_i c_j)^alpha`
//! (`alpha = 0`: raw counts; `alpha = 1`: the paper's `c_i c_j`
//! normalisation), kept sparsely: one sorted row of neighbours per item.
//!
//! A query's seeds are its `seeds` most recent distinct history items; item
//! `j` scores `sum over seeds h of r(h, j)`. Items with no co-visitation
//! evidence for the query score `c_j * tie`, with `tie` small enough that all
//! of them rank below every item with evidence, by popularity among
//! themselves (so a query without history gets the popularity ranking).

use funnel_api::anyhow::{bail, Result};
use funnel_api::{Baseline, ExampleSet, ItemIdx, SparseScores, UserIdx};
use serde::{Deserialize, Serialize};

thread_local! {
    /// Per-item sums of one query, all zero between queries.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Parameters of `covisitation`.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CovisitationParams {
    /// Two items are co-visited when at most this many positions apart in a
    /// user's training sequence; at least 1.
    #[serde(deserialize_with = "crate::bounds::at_least_one")]
    #[param(default = 5)]
    pub window: usize,
    /// Relatedness r(i, j) = c_ij / (c_i c_j)^alpha; 0 is raw co-visitation
    /// counts, 1 the paper's c_i c_j normalisation; between 0 and 1.
    #[serde(deserialize_with = "crate::bounds::unit_interval")]
    #[param(default = 0.5)]
    pub alpha: f64,
    /// The user's most recent distinct items (from the whole history before
    /// the case, whatever the features' max_history) whose neighbours it
    /// scores; at least 1.
    #[serde(deserialize_with = "crate::bounds::at_least_one")]
    #[param(default = 5)]
    pub seeds: usize,
}

/// The fitted co-visitation graph.
#[derive(Debug, Clone, Default)]
pub struct Covisitation {
    params: CovisitationParams,
    /// `c_i`: occurrences of each item in the training sequences.
    counts: Vec<u32>,
    /// The counts as scores: what items without evidence are scaled from.
    base: Vec<f32>,
    max_count: u32,
    /// Item `i`'s neighbours are `neighbours[offsets[i]..offsets[i + 1]]`,
    /// ascending, with their relatedness at the same positions.
    offsets: Vec<usize>,
    neighbours: Vec<ItemIdx>,
    relatedness: Vec<f32>,
}

impl Covisitation {
    pub fn new(params: CovisitationParams) -> Covisitation {
        Covisitation { params, ..Default::default() }
    }

    /// `c_i`: how often item `i` occurs in the training sequences.
    pub fn count(&self, item: ItemIdx) -> u32 {
        self.counts.get(item as usize).copied().unwrap_or(0)
    }

    /// Item `i`'s neighbours with their relatedness `r(i, j)`, ascending by item.
    pub fn neighbours(&self, item: ItemIdx) -> impl Iterator<Item = (ItemIdx, f32)> + '_ {
        let range = match self.offsets.get(item as usize..item as usize + 2) {
            Some(&[start, end]) => start..end,
            _ => 0..0,
        };
        self.neighbours[range.clone()].iter().copied().zip(self.relatedness[range].iter().copied())
    }

    /// `r(i, j)`, 0 when `i` and `j` were never co-visited.
    pub fn relatedness(&self, i: ItemIdx, j: ItemIdx) -> f32 {
        self.neighbours(i).find(|&(n, _)| n == j).map_or(0.0, |(_, r)| r)
    }

    /// Stored relatedness values.
    pub fn nnz(&self) -> usize {
        self.neighbours.len()
    }
}

/// The exclusive end of each user's training sequence: one past their last
/// training target (0 for a user without training examples).
pub(crate) fn training_ends(examples: &ExampleSet) -> Result<Vec<usize>> {
    let mut ends = vec![0usize; examples.sequences.len()];
    for ex in &examples.train {
        let (user, position) = (ex.user as usize, ex.position as usize);
        let Some(seq) = examples.sequences.get(user) else {
            bail!("training example of user {user}, but there are {} sequences", examples.sequences.len());
        };
        if position >= seq.len() {
            bail!("training example at position {position} of user {user}, whose sequence has {} items", seq.len());
        }
        ends[user] = ends[user].max(position + 1);
    }
    Ok(ends)
}

impl Baseline for Covisitation {
    fn fit(&mut self, examples: &ExampleSet, n_items: usize) -> Result<()> {
        let ends = training_ends(examples)?;
        let prefix = |u: usize| &examples.sequences[u][..ends[u]];
        let users = examples.sequences.len();

        let mut counts = vec![0u32; n_items];
        for u in 0..users {
            for &i in prefix(u) {
                if i as usize >= n_items {
                    bail!("item {i} in the training sequence of user {u} is outside the catalog of {n_items} items");
                }
                counts[i as usize] += 1;
            }
        }
        // Where each item occurs, grouped by item (a counting sort), so each
        // item's row is accumulated at once in a dense scratch array.
        let mut starts = Vec::with_capacity(n_items + 1);
        starts.push(0usize);
        for &c in &counts {
            starts.push(starts.last().unwrap() + c as usize);
        }
        let mut next = starts.clone();
        let mut occurrences = vec![(0u32, 0u32); starts[n_items]];
        for u in 0..users {
            for (p, &i) in prefix(u).iter().enumerate() {
                occurrences[next[i as usize]] = (u as u32, p as u32);
                next[i as usize] += 1;
            }
        }

        let (window, alpha) = (self.params.window, self.params.alpha);
        let mut together = vec![0u32; n_items];
        let mut touched: Vec<ItemIdx> = Vec::new();
        let (mut offsets, mut neighbours, mut relatedness) = (vec![0usize], Vec::new(), Vec::new());
        for i in 0..n_items {
            for &(u, p) in &occurrences[starts[i]..starts[i + 1]] {
                let (seq, p) = (prefix(u as usize), p as usize);
                let lo = p.saturating_sub(window);
                let hi = (p + window).min(seq.len() - 1);
                for (q, &j) in (lo..=hi).zip(&seq[lo..=hi]) {
                    if q == p || j as usize == i {
                        continue;
                    }
                    if together[j as usize] == 0 {
                        touched.push(j);
                    }
                    together[j as usize] += 1;
                }
            }
            touched.sort_unstable();
            for &j in &touched {
                let c_ij = std::mem::take(&mut together[j as usize]);
                let norm = (counts[i] as f64 * counts[j as usize] as f64).powf(alpha);
                neighbours.push(j);
                relatedness.push((c_ij as f64 / norm) as f32);
            }
            touched.clear();
            offsets.push(neighbours.len());
        }
        self.max_count = counts.iter().copied().max().unwrap_or(0);
        self.base = counts.iter().map(|&c| c as f32).collect();
        self.counts = counts;
        self.offsets = offsets;
        self.neighbours = neighbours;
        self.relatedness = relatedness;
        Ok(())
    }

    fn score(&self, user: UserIdx, history: &[ItemIdx], out: &mut [f32]) {
        let mut sparse = SparseScores::default();
        self.sparse_score(user, history, &mut sparse);
        out.fill(0.0);
        for (s, &c) in out.iter_mut().zip(&self.base) {
            *s = c * sparse.scale;
        }
        for &(j, r) in &sparse.own {
            out[j as usize] = r;
        }
    }

    /// Items with evidence score the sum of their relatedness to the seeds;
    /// the rest their count times a `tie` below every evidence score (by a
    /// factor of 2, so rounding cannot close the gap), so they follow by
    /// popularity.
    fn shared_base(&self) -> Option<&[f32]> {
        Some(&self.base)
    }

    fn sparse_score(&self, _user: UserIdx, history: &[ItemIdx], out: &mut SparseScores) {
        out.own.clear();
        let mut seeds: Vec<ItemIdx> = Vec::with_capacity(self.params.seeds);
        for &h in history.iter().rev() {
            if seeds.len() == self.params.seeds {
                break;
            }
            if !seeds.contains(&h) {
                seeds.push(h);
            }
        }
        // Sums in seed order into a catalog-sized scratch (zero between
        // calls), each relatedness added as it comes: the same additions in
        // the same order as a dense accumulation, at the cost of the items
        // touched.
        SCRATCH.with_borrow_mut(|sums| {
            if sums.len() < self.base.len() {
                sums.resize(self.base.len(), 0.0);
            }
            for &h in &seeds {
                for (j, r) in self.neighbours(h) {
                    let sum = &mut sums[j as usize];
                    if *sum == 0.0 {
                        out.own.push((j, 0.0));
                    }
                    *sum += r;
                }
            }
            for (j, s) in &mut out.own {
                *s = std::mem::take(&mut sums[*j as usize]);
            }
        });
        let smallest = out.own.iter().map(|&(_, s)| s).filter(|&s| s > 0.0).fold(f32::INFINITY, f32::min);
        out.scale =
            if smallest.is_finite() && self.max_count > 0 { smallest / (2.0 * self.max_count as f32) } else { 1.0 };
    }

    fn parameter_count(&self) -> usize {
        self.nnz() + self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::examples;

    fn fitted(sequences: &[&[ItemIdx]], holdout: bool, params: CovisitationParams, n_items: usize) -> Covisitation {
        let mut c = Covisitation::new(params);
        c.fit(&examples(sequences, holdout), n_items).unwrap();
        c
    }

    fn scores(c: &Covisitation, history: &[ItemIdx], n_items: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; n_items];
        c.score(0, history, &mut out);
        out
    }

    fn close(a: f32, b: f64) -> bool {
        (a as f64 - b).abs() < 1e-6
    }

    /// Items 0..4: user 0 watched 0 1, user 1 watched 0 1, user 2 watched
    /// 0 2, user 3 watched 2 3 (every position from 1 on a training example).
    /// c = [3, 2, 2, 1, 0]; c_01 = 2, c_02 = 1, c_23 = 1.
    const FOUR_USERS: [&[ItemIdx]; 4] = [&[0, 1], &[0, 1], &[0, 2], &[2, 3]];

    #[test]
    fn counts_pairs_and_relatedness_by_hand_for_each_alpha() {
        for (alpha, r01, r02, r23) in [
            (0.0, 2.0, 1.0, 1.0),
            (0.5, 2.0 / 6f64.sqrt(), 1.0 / 6f64.sqrt(), 1.0 / 2f64.sqrt()),
            (1.0, 2.0 / 6.0, 1.0 / 6.0, 1.0 / 2.0),
        ] {
            let c = fitted(&FOUR_USERS, false, CovisitationParams { alpha, ..Default::default() }, 5);
            assert_eq!((0..5).map(|i| c.count(i)).collect::<Vec<_>>(), [3, 2, 2, 1, 0]);
            for (i, j, r) in [(0, 1, r01), (0, 2, r02), (2, 3, r23)] {
                assert!(close(c.relatedness(i, j), r), "alpha {alpha}: r({i}, {j}) = {}", c.relatedness(i, j));
                assert_eq!(c.relatedness(i, j), c.relatedness(j, i), "relatedness is symmetric");
            }
            assert_eq!(c.relatedness(0, 3), 0.0);
            assert_eq!(c.relatedness(1, 2), 0.0);
            // Six stored values (three pairs, both ways) plus five counts.
            assert_eq!((c.nnz(), c.parameter_count()), (6, 11));
        }
    }

    #[test]
    fn a_query_sums_the_relatedness_of_its_most_recent_seeds() {
        let raw = CovisitationParams { alpha: 0.0, seeds: 2, ..Default::default() };
        let c = fitted(&FOUR_USERS, false, raw.clone(), 5);
        // History 3, 2, 0 (0 most recent); seeds 0 and 2:
        // item 0: r(2,0) = 1; item 1: r(0,1) = 2; item 2: r(0,2) = 1; item 3: r(2,3) = 1.
        assert_eq!(scores(&c, &[3, 2, 0], 5)[..4], [1.0, 2.0, 1.0, 1.0]);
        // One seed: only item 0's neighbours have evidence.
        let c = fitted(&FOUR_USERS, false, CovisitationParams { seeds: 1, ..raw.clone() }, 5);
        let s = scores(&c, &[3, 2, 0], 5);
        assert_eq!(s[1..3], [2.0, 1.0]);
        assert!(s[3] < 1.0 && s[0] < 1.0, "{s:?}");
        // Repeats do not use up seeds: 0, 0, 0 then 2 are seeds 0 and 2.
        let c = fitted(&FOUR_USERS, false, raw, 5);
        assert_eq!(scores(&c, &[2, 0, 0, 0], 5)[..4], [1.0, 2.0, 1.0, 1.0]);
    }

    #[test]
    fn items_without_evidence_follow_by_popularity_below_every_item_with_evidence() {
        let c = fitted(&FOUR_USERS, false, CovisitationParams { alpha: 1.0, ..Default::default() }, 5);
        // Seed 3: only item 2 has evidence (r = 1/2). The rest rank by c_j:
        // item 0 (3) > item 1 (2) > item 3 (1) > item 4 (0).
        let s = scores(&c, &[3], 5);
        assert!(close(s[2], 0.5), "{s:?}");
        assert!(s[0] < s[2] && s[1] < s[0] && s[3] < s[1] && s[4] < s[3], "{s:?}");
        assert!(s[0] > 0.0 && s[4] == 0.0, "{s:?}");
        // Fallback scores are proportional to popularity: 3 : 2 : 1.
        assert!(close(s[0] / s[3], 3.0) && close(s[1] / s[3], 2.0), "{s:?}");
        // With no history at all, the ranking is popularity.
        assert_eq!(scores(&c, &[], 5), [3.0, 2.0, 2.0, 1.0, 0.0]);
        // An item that is its own only seed has no evidence from itself.
        assert_eq!(scores(&c, &[4], 5), [3.0, 2.0, 2.0, 1.0, 0.0]);
    }

    #[test]
    fn the_window_bounds_how_far_apart_co_visited_items_may_be() {
        // One user, 0 1 2 3, all training positions.
        let seq: [&[ItemIdx]; 1] = [&[0, 1, 2, 3]];
        let at = |window| fitted(&seq, false, CovisitationParams { window, alpha: 0.0, seeds: 10 }, 4);
        let c = at(1);
        assert_eq!([c.relatedness(0, 1), c.relatedness(1, 2), c.relatedness(2, 3)], [1.0, 1.0, 1.0]);
        assert_eq!([c.relatedness(0, 2), c.relatedness(1, 3), c.relatedness(0, 3)], [0.0, 0.0, 0.0]);
        let c = at(2);
        assert_eq!([c.relatedness(0, 2), c.relatedness(1, 3), c.relatedness(0, 3)], [1.0, 1.0, 0.0]);
        let c = at(3);
        assert_eq!(c.relatedness(0, 3), 1.0);
        assert_eq!(c.nnz(), 12);
    }

    #[test]
    fn repeated_pairs_count_once_per_pair_of_positions() {
        // 0 1 0: positions (0,1) and (1,2) both pair items 0 and 1; the two
        // 0s are the same item and never pair.
        let c = fitted(&[&[0, 1, 0]], false, CovisitationParams { alpha: 0.0, ..Default::default() }, 2);
        assert_eq!((c.count(0), c.count(1)), (2, 1));
        assert_eq!((c.relatedness(0, 1), c.relatedness(1, 0), c.relatedness(0, 0)), (2.0, 2.0, 0.0));
    }

    #[test]
    fn validation_and_test_targets_never_count() {
        // User 0: 0 1 2 | validation 3 | test 4. User 1: 1 2 | 4 | 3.
        // Training sequences: 0 1 2 and 1 2; items 3 and 4 were only held out.
        let c = fitted(&[&[0, 1, 2, 3, 4], &[1, 2, 4, 3]], true, CovisitationParams::default(), 5);
        assert_eq!((0..5).map(|i| c.count(i)).collect::<Vec<_>>(), [1, 2, 2, 0, 0]);
        for held_out in [3, 4] {
            assert_eq!(c.neighbours(held_out).count(), 0);
            assert!((0..5).all(|i| c.relatedness(i, held_out) == 0.0));
        }
        // Querying with the validation target as history (as a test query
        // does) finds no evidence, and the held-out items score 0.
        assert_eq!(scores(&c, &[0, 1, 2, 3], 5)[3..], [0.0, 0.0]);
        // A user whose only training target is position 1 contributes 0 and 1.
        let c = fitted(&[&[5, 6, 7, 8]], true, CovisitationParams::default(), 9);
        assert_eq!((5..9).map(|i| c.count(i)).collect::<Vec<_>>(), [1, 1, 0, 0]);
        assert_eq!(c.nnz(), 2);
    }

    #[test]
    fn scores_cover_the_catalog_and_are_finite() {
        let c = fitted(&[&[0, 1, 2, 0, 3], &[2, 3, 1]], false, CovisitationParams::default(), 7);
        for history in [&[][..], &[0], &[6], &[3, 2, 1, 0]] {
            let s = scores(&c, history, 7);
            assert_eq!(s.len(), 7);
            assert!(s.iter().all(|v| v.is_finite() && *v >= 0.0), "{history:?}: {s:?}");
        }
        // Before fitting (nothing learnt), every score is 0.
        assert_eq!(scores(&Covisitation::default(), &[0], 3), [0.0; 3]);
    }

    /// Scores the plain way: every catalog item, accumulated in place, then
    /// items without evidence filled in by popularity.
    fn dense_reference(c: &Covisitation, history: &[ItemIdx], n_items: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; n_items];
        let mut seeds: Vec<ItemIdx> = Vec::new();
        for &h in history.iter().rev() {
            if seeds.len() == c.params.seeds {
                break;
            }
            if !seeds.contains(&h) {
                seeds.push(h);
            }
        }
        for &h in &seeds {
            for (j, r) in c.neighbours(h) {
                out[j as usize] += r;
            }
        }
        let smallest = out.iter().copied().filter(|&s| s > 0.0).fold(f32::INFINITY, f32::min);
        let tie = if smallest.is_finite() && c.max_count > 0 { smallest / (2.0 * c.max_count as f32) } else { 1.0 };
        for (s, &count) in out.iter_mut().zip(&c.counts) {
            if *s == 0.0 {
                *s = count as f32 * tie;
            }
        }
        out
    }

    #[test]
    fn sparse_scores_are_the_dense_scores_bit_for_bit() {
        let seqs: Vec<Vec<ItemIdx>> =
            (0..30).map(|u| (0..12).map(|p| ((u * 7 + p * p * 3) % 23) as ItemIdx).collect()).collect();
        let refs: Vec<&[ItemIdx]> = seqs.iter().map(Vec::as_slice).collect();
        for alpha in [0.0, 0.5, 1.0] {
            let c = fitted(&refs, true, CovisitationParams { alpha, seeds: 4, window: 3 }, 25);
            for history in [&[][..], &[3], &[1, 2, 3, 1, 5, 8, 13, 21], &[24]] {
                let want = dense_reference(&c, history, 25);
                let got = scores(&c, history, 25);
                assert_eq!(
                    got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{history:?}"
                );
                let mut sparse = SparseScores::default();
                c.sparse_score(0, history, &mut sparse);
                assert!(sparse.own.iter().all(|&(j, s)| s > 0.0 && want[j as usize] == s));
                assert_eq!(c.shared_base().unwrap().len(), 25);
            }
        }
    }

    #[test]
    fn an_item_outside_the_catalog_is_an_error() {
        let mut c = Covisitation::default();
        let err = c.fit(&examples(&[&[0, 9]], false), 4).unwrap_err();
        assert!(err.to_string().contains("outside the catalog of 4 items"), "{err}");
    }
}
