//! Best-first order and bounded top-k selection.

use std::cmp::Ordering;

use funnel_api::ItemIdx;

/// Best first: higher score, then lower item index. Every exact answer in
/// funnel is in this order, so recall against it is defined even on ties.
/// Scores are finite wherever it is used, so an unordered pair cannot occur.
pub fn better(a: &(ItemIdx, f32), b: &(ItemIdx, f32)) -> Ordering {
    b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal).then(a.0.cmp(&b.0))
}

/// The `k` best `(item, score)` pairs pushed so far, in [`better`] order.
///
/// Keeps up to `2k` candidates and cuts back to the best `k` when full, so
/// pushing `n` candidates costs O(n), a candidate below the current `k`-th
/// score is dropped with one comparison, and memory stays O(k) whatever `n`.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    kept: Vec<(ItemIdx, f32)>,
    /// The `k`-th best score after the last cut; `-inf` before the first.
    floor: f32,
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK { k, kept: Vec::with_capacity(2 * k.min(1 << 16)), floor: f32::NEG_INFINITY }
    }

    /// Scores below this cannot enter; ties with it still can, since the
    /// lower item index may win them.
    pub fn floor(&self) -> f32 {
        self.floor
    }

    /// Offers one candidate.
    pub fn push(&mut self, item: ItemIdx, score: f32) {
        if self.k == 0 || score < self.floor {
            return;
        }
        self.kept.push((item, score));
        if self.kept.len() >= 2 * self.k {
            self.cut();
        }
    }

    fn cut(&mut self) {
        if self.kept.len() > self.k {
            self.kept.select_nth_unstable_by(self.k - 1, better);
            self.kept.truncate(self.k);
            self.floor = self.kept[self.k - 1].1;
        }
    }

    /// The best `k` (fewer if fewer were pushed), best first, in a vector of
    /// exactly that length: nothing beyond the answer stays allocated.
    pub fn into_sorted(mut self) -> Vec<(ItemIdx, f32)> {
        self.cut();
        self.kept.sort_unstable_by(better);
        self.kept.shrink_to_fit();
        self.kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_best_with_ties_to_the_lower_index() {
        let mut top = TopK::new(3);
        for (i, s) in [(5, 1.0), (1, 3.0), (4, 2.0), (2, 3.0), (0, 2.0), (3, 0.5), (6, 2.0)] {
            top.push(i, s);
        }
        assert_eq!(top.into_sorted(), vec![(1, 3.0), (2, 3.0), (0, 2.0)]);
        assert!(TopK::new(0).into_sorted().is_empty());
    }

    #[test]
    fn memory_is_bounded_by_k() {
        let mut top = TopK::new(10);
        for i in 0..100_000u32 {
            top.push(i, (i % 977) as f32);
        }
        assert!(top.kept.capacity() <= 2 * 10 + 1);
        let out = top.into_sorted();
        assert_eq!(out.len(), 10);
        assert_eq!(out.capacity(), 10);
    }
}
