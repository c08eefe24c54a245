//! Ranking metrics of one ranked list against a set of relevant items, and
//! their single-target fast path from a rank alone.
//!
//! The general functions take any number of relevant items so multi-target
//! evaluation can reuse them; the evaluator itself uses [`single_target`],
//! which needs only the target's rank and agrees with them (tested).

use std::collections::HashSet;

use funnel_api::ItemIdx;

/// Discount of 0-based position `pos`: `1 / log2(pos + 2)`.
fn discount(pos: usize) -> f64 {
    1.0 / ((pos + 2) as f64).log2()
}

/// 0-based positions within the first `k` of `ranked` at which a relevant item
/// appears for the first time; a repeat of an item earns nothing, so a list
/// with duplicates cannot score above 1.
fn first_hits<'a>(ranked: &'a [ItemIdx], relevant: &'a HashSet<ItemIdx>, k: usize) -> impl Iterator<Item = usize> + 'a {
    let mut found = HashSet::new();
    ranked
        .iter()
        .take(k)
        .enumerate()
        .filter(move |&(_, item)| relevant.contains(item) && found.insert(*item))
        .map(|(pos, _)| pos)
}

/// Share of `relevant` found in the first `k` of `ranked`; 0 when `relevant`
/// is empty.
pub fn recall_at_k(ranked: &[ItemIdx], relevant: &HashSet<ItemIdx>, k: usize) -> f64 {
    if relevant.is_empty() {
        return 0.0;
    }
    first_hits(ranked, relevant, k).count() as f64 / relevant.len() as f64
}

/// 1 when any relevant item is among the first `k` of `ranked`, else 0.
pub fn hit_rate_at_k(ranked: &[ItemIdx], relevant: &HashSet<ItemIdx>, k: usize) -> f64 {
    if first_hits(ranked, relevant, k).next().is_some() {
        1.0
    } else {
        0.0
    }
}

/// Binary-relevance NDCG of the first `k` of `ranked`: DCG with gain 1 and
/// discount `1 / log2(pos + 2)`, divided by the DCG of a list that puts
/// `min(|relevant|, k)` relevant items first; 0 when `relevant` is empty.
pub fn ndcg_at_k(ranked: &[ItemIdx], relevant: &HashSet<ItemIdx>, k: usize) -> f64 {
    let ideal: f64 = (0..relevant.len().min(k)).map(discount).sum();
    if ideal == 0.0 {
        return 0.0;
    }
    first_hits(ranked, relevant, k).map(discount).sum::<f64>() / ideal
}

/// `1 / (pos + 1)` of the first relevant item in `ranked` (untruncated); 0 when
/// none appears.
pub fn reciprocal_rank(ranked: &[ItemIdx], relevant: &HashSet<ItemIdx>) -> f64 {
    match first_hits(ranked, relevant, ranked.len()).next() {
        Some(pos) => 1.0 / (pos + 1) as f64,
        None => 0.0,
    }
}

/// The metrics of one case whose single relevant item sits at 0-based `rank`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SingleTarget {
    rank: usize,
}

/// Metrics of a case with exactly one relevant item, from its rank alone: the
/// general functions specialised to `|relevant| = 1`, where recall@K and
/// hit_rate@K coincide and the ideal DCG is 1.
pub fn single_target(rank: u32) -> SingleTarget {
    SingleTarget { rank: rank as usize }
}

impl SingleTarget {
    pub fn recall_at_k(self, k: usize) -> f64 {
        self.hit_rate_at_k(k)
    }

    pub fn hit_rate_at_k(self, k: usize) -> f64 {
        if self.rank < k {
            1.0
        } else {
            0.0
        }
    }

    pub fn ndcg_at_k(self, k: usize) -> f64 {
        if self.rank < k {
            discount(self.rank)
        } else {
            0.0
        }
    }

    pub fn reciprocal_rank(self) -> f64 {
        1.0 / (self.rank + 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[ItemIdx]) -> HashSet<ItemIdx> {
        items.iter().copied().collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    // ranked = [3, 1, 4, 1, 5], relevant = {1, 5}.
    // First hits: item 1 at position 1, item 5 at position 4; the repeat of 1
    // at position 3 earns nothing.
    const RANKED: [ItemIdx; 5] = [3, 1, 4, 1, 5];

    #[test]
    fn recall_known_answers() {
        let rel = set(&[1, 5]);
        // @1: [3] has no hit -> 0/2.
        assert_eq!(recall_at_k(&RANKED, &rel, 1), 0.0);
        // @2: [3, 1] finds item 1 -> 1/2.
        assert_eq!(recall_at_k(&RANKED, &rel, 2), 0.5);
        // @4: [3, 1, 4, 1] still only item 1 (counted once) -> 1/2.
        assert_eq!(recall_at_k(&RANKED, &rel, 4), 0.5);
        // @5 and beyond the list: both found -> 2/2.
        assert_eq!(recall_at_k(&RANKED, &rel, 5), 1.0);
        assert_eq!(recall_at_k(&RANKED, &rel, 100), 1.0);
        assert_eq!(recall_at_k(&RANKED, &rel, 0), 0.0);
        assert_eq!(recall_at_k(&RANKED, &set(&[]), 5), 0.0);
    }

    #[test]
    fn hit_rate_known_answers() {
        let rel = set(&[1, 5]);
        assert_eq!(hit_rate_at_k(&RANKED, &rel, 1), 0.0);
        assert_eq!(hit_rate_at_k(&RANKED, &rel, 2), 1.0);
        assert_eq!(hit_rate_at_k(&RANKED, &rel, 5), 1.0);
        assert_eq!(hit_rate_at_k(&RANKED, &set(&[9]), 5), 0.0);
        assert_eq!(hit_rate_at_k(&RANKED, &set(&[]), 5), 0.0);
    }

    #[test]
    fn ndcg_known_answers() {
        let rel = set(&[1, 5]);
        // IDCG with two relevant items and k >= 2: 1/log2(2) + 1/log2(3)
        //   = 1 + 0.6309297535714575 = 1.6309297535714575.
        // @5: DCG = 1/log2(1+2) + 1/log2(4+2) = 0.6309297535714575 + 0.38685280723454163
        //   = 1.0177825608059991; NDCG = 1.0177825608059991 / 1.6309297535714575 = 0.6240505200038379.
        assert!(close(ndcg_at_k(&RANKED, &rel, 5), 0.6240505200038379));
        // @4: only item 1 at position 1 (its repeat earns nothing):
        //   0.6309297535714575 / 1.6309297535714575 = 0.38685280723454163.
        assert!(close(ndcg_at_k(&RANKED, &rel, 4), 0.38685280723454163));
        assert!(close(ndcg_at_k(&RANKED, &rel, 2), 0.38685280723454163));
        // @1: IDCG = 1 (only one slot), DCG = 0.
        assert_eq!(ndcg_at_k(&RANKED, &rel, 1), 0.0);
        // One relevant item first: DCG = IDCG = 1.
        assert!(close(ndcg_at_k(&RANKED, &set(&[3]), 1), 1.0));
        assert_eq!(ndcg_at_k(&RANKED, &set(&[]), 5), 0.0);
        assert_eq!(ndcg_at_k(&RANKED, &rel, 0), 0.0);
    }

    #[test]
    fn reciprocal_rank_known_answers() {
        // First relevant item (1) at position 1 -> 1/2.
        assert_eq!(reciprocal_rank(&RANKED, &set(&[1, 5])), 0.5);
        // Item 5 at position 4 -> 1/5.
        assert_eq!(reciprocal_rank(&RANKED, &set(&[5])), 0.2);
        assert_eq!(reciprocal_rank(&RANKED, &set(&[3])), 1.0);
        assert_eq!(reciprocal_rank(&RANKED, &set(&[9])), 0.0);
    }

    #[test]
    fn single_target_matches_general_functions() {
        let ranked: Vec<ItemIdx> = (0..30).collect();
        for target in 0..30 {
            let rel = set(&[target]);
            let fast = single_target(target);
            for k in [0, 1, 2, 5, 10, 29, 30, 31] {
                assert_eq!(fast.recall_at_k(k), recall_at_k(&ranked, &rel, k));
                assert_eq!(fast.hit_rate_at_k(k), hit_rate_at_k(&ranked, &rel, k));
                assert!(close(fast.ndcg_at_k(k), ndcg_at_k(&ranked, &rel, k)));
            }
            assert_eq!(fast.reciprocal_rank(), reciprocal_rank(&ranked, &rel));
        }
    }
}
