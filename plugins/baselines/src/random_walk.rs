//! `[[baselines]] type = "random_walk"`: recommendation by short random
//! walks with restart on an item graph, as Pinterest's Pixie does
//! (Eksombatchai et al., "Pixie: A System for Recommending 3+ Billion Items
//! to 200+ Million Users in Real-Time", WWW 2018), here on the item-to-item
//! graph of consumption order.
//!
//! The graph: an edge `a -> b` for every pair of positions of one user's
//! training sequence with `b` up to `window` positions after `a`, weighted
//! `0.5^(age / half_life_days)` (the age of `b`'s consumption, in days before
//! the end of training; `half_life_days = 0` weighs every pair 1), so fresh
//! co-consumption counts more. A "no item watched" node links to each user's
//! first training item with the same weights.
//!
//! A query's seeds are its `seeds` most recent distinct history items (the
//! new-user node when the history is empty). From each seed, `walks` walks of
//! at most `walk_length` steps: each step moves along an out-edge chosen with
//! probability proportional to its weight, or, with probability `restart`
//! (or at a node without out-edges), jumps back to the seed. An item scores
//! its visits over all walks; items never visited follow, below every
//! visited one, by training popularity. The walks are seeded by the
//! experiment seed and the query, so the same query gets the same scores.

use funnel_api::anyhow::{bail, Result};
use funnel_api::{Baseline, ExampleSet, ItemIdx, UserIdx};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::covisitation::training_ends;

/// Parameters of `random_walk`.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomWalkParams {
    /// An edge a -> b for b consumed at most this many positions after a;
    /// at least 1.
    #[serde(deserialize_with = "crate::bounds::at_least_one")]
    #[param(default = 3)]
    pub window: usize,
    /// Each step jumps back to the seed with this probability; between 0 and 1.
    #[serde(deserialize_with = "crate::bounds::unit_interval")]
    #[param(default = 0.7)]
    pub restart: f64,
    /// Steps of one walk; at least 1.
    #[serde(deserialize_with = "crate::bounds::at_least_one")]
    #[param(default = 10)]
    pub walk_length: usize,
    /// Walks from each seed; at least 1.
    #[serde(deserialize_with = "crate::bounds::at_least_one")]
    #[param(default = 1000)]
    pub walks: usize,
    /// The query's most recent distinct items the walks start from; at least 1.
    #[serde(deserialize_with = "crate::bounds::at_least_one")]
    #[param(default = 3)]
    pub seeds: usize,
    /// Freshness: an edge's weight halves for every this many days its
    /// consumption lies before the end of training; 0 = every edge weighs 1.
    #[serde(deserialize_with = "crate::bounds::non_negative")]
    #[param(default = 0.0)]
    pub half_life_days: f64,
}

/// The fitted graph: node `n`'s out-edges are
/// `targets[offsets[n]..offsets[n + 1]]`, with the running sums of their
/// weights in `cumulative`. Nodes are the items, then the new-user node.
#[derive(Debug, Clone, Default)]
pub struct RandomWalk {
    params: RandomWalkParams,
    seed: u64,
    n_items: usize,
    offsets: Vec<usize>,
    targets: Vec<ItemIdx>,
    cumulative: Vec<f64>,
    /// Training occurrences of each item, for the order of unvisited items.
    popularity: Vec<u32>,
    max_popularity: u32,
}

impl RandomWalk {
    pub fn new(params: RandomWalkParams, seed: u64) -> RandomWalk {
        RandomWalk { params, seed, ..Default::default() }
    }

    /// The node of "no item watched yet".
    fn new_user_node(&self) -> usize {
        self.n_items
    }

    /// Builds the graph from weighted edges `(from, to, weight)`, `from` up
    /// to the new-user node `n_items`.
    fn build(&mut self, n_items: usize, mut edges: Vec<(usize, ItemIdx, f64)>) {
        edges.sort_by_key(|e| (e.0, e.1));
        self.n_items = n_items;
        self.offsets = vec![0; n_items + 2];
        self.targets.clear();
        self.cumulative.clear();
        let mut last: Option<(usize, ItemIdx)> = None;
        let mut running = 0.0;
        for (from, to, w) in edges {
            if last.map(|l| l.0) != Some(from) {
                running = 0.0;
            }
            running += w;
            if last == Some((from, to)) {
                *self.cumulative.last_mut().expect("pushed with its target") = running;
                continue;
            }
            last = Some((from, to));
            self.offsets[from + 1] += 1;
            self.targets.push(to);
            self.cumulative.push(running);
        }
        for n in 0..=n_items {
            self.offsets[n + 1] += self.offsets[n];
        }
    }

    /// The next node from `node`: an out-edge by weight, `None` when it has none.
    fn step(&self, node: usize, rng: &mut StdRng) -> Option<usize> {
        let range = self.offsets[node]..self.offsets[node + 1];
        let sums = &self.cumulative[range.clone()];
        let total = *sums.last()?;
        let r = rng.gen::<f64>() * total;
        let k = sums.partition_point(|&s| s <= r).min(sums.len() - 1);
        Some(self.targets[range.start + k] as usize)
    }

    /// Visits per item over every walk from each seed node.
    pub fn visits(&self, seeds: &[usize], query_seed: u64) -> Vec<u32> {
        let mut visits = vec![0u32; self.n_items];
        let p = &self.params;
        let mut rng = StdRng::seed_from_u64(self.seed ^ query_seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for &seed in seeds {
            for _ in 0..p.walks {
                let mut node = seed;
                for _ in 0..p.walk_length {
                    let next = if rng.gen::<f64>() < p.restart { None } else { self.step(node, &mut rng) };
                    node = next.unwrap_or(seed);
                    if node < self.n_items {
                        visits[node] += 1;
                    }
                }
            }
        }
        visits
    }

    /// Out-edges of item `i` with their weights, ascending by target.
    pub fn edges(&self, i: usize) -> Vec<(ItemIdx, f64)> {
        let range = self.offsets[i]..self.offsets[i + 1];
        let mut previous = 0.0;
        self.targets[range.clone()]
            .iter()
            .zip(&self.cumulative[range])
            .map(|(&t, &c)| {
                let w = c - previous;
                previous = c;
                (t, w)
            })
            .collect()
    }
}

impl Baseline for RandomWalk {
    fn fit(&mut self, examples: &ExampleSet, n_items: usize) -> Result<()> {
        let ends = training_ends(examples)?;
        let p = &self.params;
        let fresh = p.half_life_days > 0.0;
        if fresh && examples.timestamps.len() != examples.sequences.len() {
            bail!(
                "half_life_days needs the time of each consumption, and the features give none (use \
                 half_life_days = 0)"
            );
        }
        let end = (0..examples.sequences.len())
            .filter(|&u| ends[u] > 0)
            .filter_map(|u| examples.timestamps.get(u).and_then(|t| t.get(ends[u] - 1)).copied())
            .max()
            .unwrap_or(0);
        let weight = |u: usize, q: usize| -> f64 {
            if !fresh {
                return 1.0;
            }
            let age_days = (end - examples.timestamps[u][q]).max(0) as f64 / 86_400.0;
            0.5f64.powf(age_days / p.half_life_days)
        };
        let mut edges = Vec::new();
        let mut popularity = vec![0u32; n_items];
        for (u, seq) in examples.sequences.iter().enumerate() {
            let seq = &seq[..ends[u]];
            for (q, &b) in seq.iter().enumerate() {
                if b as usize >= n_items {
                    bail!("item {b} in the training sequence of user {u} is outside the catalog of {n_items} items");
                }
                popularity[b as usize] += 1;
                let w = weight(u, q);
                if q == 0 {
                    edges.push((n_items, b, w));
                }
                for &a in &seq[q.saturating_sub(p.window)..q] {
                    if a != b {
                        edges.push((a as usize, b, w));
                    }
                }
            }
        }
        self.max_popularity = popularity.iter().copied().max().unwrap_or(0);
        self.popularity = popularity;
        self.build(n_items, edges);
        Ok(())
    }

    fn score(&self, user: UserIdx, history: &[ItemIdx], out: &mut [f32]) {
        let mut seeds: Vec<usize> = Vec::with_capacity(self.params.seeds);
        for &h in history.iter().rev() {
            if seeds.len() == self.params.seeds {
                break;
            }
            if (h as usize) < self.n_items && !seeds.contains(&(h as usize)) {
                seeds.push(h as usize);
            }
        }
        if seeds.is_empty() {
            seeds.push(self.new_user_node());
        }
        let query = (u64::from(user) << 32) ^ history.len() as u64;
        let visits = self.visits(&seeds, query);
        // Unvisited items by popularity, below one visit.
        let tie = 1.0 / (2.0 * (self.max_popularity.max(1)) as f32);
        for (i, o) in out.iter_mut().enumerate().take(self.n_items) {
            *o = if visits[i] > 0 { visits[i] as f32 } else { self.popularity[i] as f32 * tie };
        }
    }

    fn parameter_count(&self) -> usize {
        self.targets.len() * 2 + self.popularity.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixture::examples;

    fn params() -> RandomWalkParams {
        RandomWalkParams { window: 1, restart: 0.25, walk_length: 1, walks: 1, seeds: 1, half_life_days: 0.0 }
    }

    /// Visit shares of one long walk against the walk's exact stationary
    /// distribution `pi = r e_s + (1 - r) pi P` (a node without out-edges
    /// jumps back to the seed).
    #[test]
    fn a_long_walk_visits_items_as_often_as_the_stationary_distribution_says() {
        // Items 0..4; edges 0->1 (w 2), 0->2 (w 1), 1->2, 2->0, 2->3; 3 has none.
        let mut g = RandomWalk::new(RandomWalkParams { walk_length: 400_000, ..params() }, 5);
        g.build(4, vec![(0, 1, 2.0), (0, 2, 1.0), (1, 2, 1.0), (2, 0, 1.0), (2, 3, 1.0)]);
        assert_eq!(g.edges(0), vec![(1, 2.0), (2, 1.0)]);
        let r = 0.25;
        // Transition matrix with the seed 0 standing in for dangling node 3.
        let p = [[0.0, 2.0 / 3.0, 1.0 / 3.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.5, 0.0, 0.0, 0.5], [1.0, 0.0, 0.0, 0.0]];
        let mut pi = [0.25; 4];
        for _ in 0..10_000 {
            let mut next = [0.0; 4];
            next[0] += r;
            for (from, row) in p.iter().enumerate() {
                for (to, w) in row.iter().enumerate() {
                    next[to] += (1.0 - r) * pi[from] * w;
                }
            }
            pi = next;
        }
        let visits = g.visits(&[0], 1);
        let total: u32 = visits.iter().sum();
        for (i, &v) in visits.iter().enumerate() {
            let share = v as f64 / total as f64;
            assert!((share - pi[i]).abs() < 0.005, "item {i}: {share} vs {} ({visits:?})", pi[i]);
        }
    }

    #[test]
    fn edges_follow_consumption_order_within_the_window_and_new_users_start_at_first_items() {
        // Training prefixes (holdout): user 0 [0, 1, 2], user 1 [1, 2, 3].
        let set = examples(&[&[0, 1, 2, 7, 8], &[1, 2, 3, 7, 8]], true);
        let mut g = RandomWalk::new(RandomWalkParams { window: 2, walks: 100, walk_length: 3, ..params() }, 0);
        g.fit(&set, 10).unwrap();
        assert_eq!(g.edges(0), vec![(1, 1.0), (2, 1.0)]);
        assert_eq!(g.edges(1), vec![(2, 2.0), (3, 1.0)]);
        assert_eq!(g.edges(2), vec![(3, 1.0)]);
        // Held-out items 7 and 8 are never in the graph.
        assert!(g.edges(7).is_empty() && (0..10).all(|i| g.edges(i).iter().all(|e| e.0 < 7)));
        assert_eq!(g.edges(g.new_user_node()), vec![(0, 1.0), (1, 1.0)]);
        // An empty history walks from the new-user node: only first items and what follows them.
        let mut out = vec![0f32; 10];
        g.score(0, &[], &mut out);
        assert!(out[0] >= 1.0 && out[1] >= 1.0, "{out:?}");
        assert!(out[7] < 1.0 && out[8] < 1.0);
    }

    #[test]
    fn fresher_consumption_weighs_more() {
        let mut set = examples(&[&[0, 1, 5, 6], &[0, 2, 5, 6]], true);
        // User 0 consumed 1 ten days before user 1 consumed 2, at the end of training.
        set.timestamps = vec![vec![0, 0, 0, 0], vec![0, 10 * 86_400, 0, 0]];
        let mut g = RandomWalk::new(RandomWalkParams { half_life_days: 10.0, ..params() }, 0);
        g.fit(&set, 7).unwrap();
        assert_eq!(g.edges(0), vec![(1, 0.5), (2, 1.0)]);
        let e = RandomWalk::new(RandomWalkParams { half_life_days: 10.0, ..params() }, 0)
            .fit(&examples(&[&[0, 1, 5, 6]], true), 7)
            .unwrap_err()
            .to_string();
        assert!(e.contains("half_life_days"), "{e}");
    }

    #[test]
    fn the_same_query_gets_the_same_scores_and_unvisited_items_rank_by_popularity() {
        let set = examples(&[&[0, 1, 2, 8, 9], &[0, 1, 3, 8, 9], &[4, 4, 5, 8, 9], &[4, 6, 5, 8, 9]], true);
        let mut g = RandomWalk::new(RandomWalkParams { walks: 50, walk_length: 5, ..params() }, 3);
        g.fit(&set, 10).unwrap();
        let (mut a, mut b) = (vec![0f32; 10], vec![0f32; 10]);
        g.score(1, &[0], &mut a);
        g.score(1, &[0], &mut b);
        assert_eq!(a, b);
        // From item 0 the walk reaches 1 and beyond, never the other component.
        assert!(a[1] >= 1.0 && a[4] < 1.0 && a[5] < 1.0, "{a:?}");
        // Unvisited: 4 (3 occurrences) above 6 (1) above 7 (0).
        assert!(a[4] > a[6] && a[6] > a[7], "{a:?}");
    }
}
