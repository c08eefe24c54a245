//! Beyond-accuracy measures of the lists users are shown: how diverse each
//! list is, how much of the catalog and of its categories the lists reach,
//! how novel their items are, and how evenly exposure spreads over items.
//!
//! Every function takes the final lists (item indices, best first) of all
//! users and returns one number; each has a hand-computed test below.

use funnel_api::ItemIdx;

/// Intra-list diversity by embedding: the mean over lists of `1 - mean
/// pairwise cosine similarity` of the items' vectors (`vectors[i]` is item
/// `i`'s). A list of fewer than two items contributes 0 (nothing to differ).
pub fn intra_list_diversity_embedding(lists: &[Vec<ItemIdx>], vectors: &[&[f32]]) -> f64 {
    let norms: Vec<f64> = vectors.iter().map(|v| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt()).collect();
    let cosine = |a: ItemIdx, b: ItemIdx| -> f64 {
        let (a, b) = (a as usize, b as usize);
        let dot: f64 = vectors[a].iter().zip(vectors[b]).map(|(x, y)| f64::from(*x) * f64::from(*y)).sum();
        let n = norms[a] * norms[b];
        if n > 0.0 {
            dot / n
        } else {
            0.0
        }
    };
    mean_over_lists(lists, |list| 1.0 - mean_pairwise(list, &cosine))
}

/// Intra-list diversity by categories: the mean over lists of `1 - mean
/// pairwise Jaccard similarity` of the items' category sets (two items
/// without categories are taken as unlike: similarity 0).
pub fn intra_list_diversity_categories(lists: &[Vec<ItemIdx>], categories: &[Vec<u32>]) -> f64 {
    let jaccard = |a: ItemIdx, b: ItemIdx| funnel_kernels::jaccard(&categories[a as usize], &categories[b as usize]);
    mean_over_lists(lists, |list| 1.0 - mean_pairwise(list, &jaccard))
}

/// Category coverage of a list: the share of the catalog's `n_categories`
/// categories that its items carry, averaged over lists.
pub fn category_coverage(lists: &[Vec<ItemIdx>], categories: &[Vec<u32>], n_categories: usize) -> f64 {
    if n_categories == 0 {
        return 0.0;
    }
    mean_over_lists(lists, |list| {
        let mut seen: Vec<u32> = list.iter().flat_map(|&i| categories[i as usize].iter().copied()).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.len() as f64 / n_categories as f64
    })
}

/// Catalog coverage: the share of the `n_items` items recommended to at
/// least one user.
pub fn catalog_coverage(lists: &[Vec<ItemIdx>], n_items: usize) -> f64 {
    if n_items == 0 {
        return 0.0;
    }
    let mut shown = vec![false; n_items];
    for &i in lists.iter().flatten() {
        shown[i as usize] = true;
    }
    shown.iter().filter(|s| **s).count() as f64 / n_items as f64
}

/// Novelty: the mean over every recommended item of `-log2 p(i)`, where
/// `p(i) = (c_i + 1) / (N + n)` is item `i`'s add-one-smoothed share of the
/// `N` training positives (`counts[i] = c_i`, `n` items), so an item never
/// consumed in training is the most novel and still finite.
pub fn novelty(lists: &[Vec<ItemIdx>], counts: &[u64]) -> f64 {
    let total = counts.iter().sum::<u64>() as f64 + counts.len() as f64;
    let items: Vec<ItemIdx> = lists.iter().flatten().copied().collect();
    if items.is_empty() {
        return 0.0;
    }
    items.iter().map(|&i| -((counts[i as usize] as f64 + 1.0) / total).log2()).sum::<f64>() / items.len() as f64
}

/// Gini index of exposure over the `n_items` items (exposure: how many
/// lists show the item): 0 when every item is shown equally often, towards
/// 1 when a few items take all exposure. With exposures sorted ascending,
/// `G = sum_k (2k - n - 1) e_k / (n sum_k e_k)`, k from 1.
pub fn gini_of_exposure(lists: &[Vec<ItemIdx>], n_items: usize) -> f64 {
    let mut exposure = vec![0u64; n_items];
    for &i in lists.iter().flatten() {
        exposure[i as usize] += 1;
    }
    exposure.sort_unstable();
    let total: u64 = exposure.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let n = n_items as f64;
    let weighted: f64 = exposure.iter().enumerate().map(|(k, &e)| (2.0 * (k as f64 + 1.0) - n - 1.0) * e as f64).sum();
    weighted / (n * total as f64)
}

fn mean_over_lists(lists: &[Vec<ItemIdx>], f: impl Fn(&[ItemIdx]) -> f64) -> f64 {
    if lists.is_empty() {
        return 0.0;
    }
    lists.iter().map(|l| f(l)).sum::<f64>() / lists.len() as f64
}

/// Mean similarity over unordered pairs; a list of fewer than two items has
/// none, and counts as fully similar (so its diversity is 0).
fn mean_pairwise(list: &[ItemIdx], similarity: &impl Fn(ItemIdx, ItemIdx) -> f64) -> f64 {
    if list.len() < 2 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut pairs = 0usize;
    for (a, &i) in list.iter().enumerate() {
        for &j in &list[a + 1..] {
            sum += similarity(i, j);
            pairs += 1;
        }
    }
    sum / pairs as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn embedding_diversity_by_hand() {
        // Items 0 and 1 point the same way, 2 is orthogonal, 3 opposite to 0.
        let v: [&[f32]; 4] = [&[1.0, 0.0], &[2.0, 0.0], &[0.0, 3.0], &[-1.0, 0.0]];
        // [0, 1]: cosine 1 -> 0. [0, 2, 3]: cosines 0, -1, 0 -> mean -1/3 -> 4/3.
        close(intra_list_diversity_embedding(&[vec![0, 1]], &v), 0.0);
        close(intra_list_diversity_embedding(&[vec![0, 2, 3]], &v), 4.0 / 3.0);
        close(intra_list_diversity_embedding(&[vec![0, 1], vec![0, 2, 3]], &v), 2.0 / 3.0);
        close(intra_list_diversity_embedding(&[vec![2]], &v), 0.0);
    }

    #[test]
    fn category_diversity_and_coverage_by_hand() {
        // 0: {0, 1}; 1: {1}; 2: {2}; 3: none.
        let c = vec![vec![0, 1], vec![1], vec![2], vec![]];
        // [0, 1, 2]: Jaccard 1/2, 0, 0 -> mean 1/6 -> 5/6.
        close(intra_list_diversity_categories(&[vec![0, 1, 2]], &c), 5.0 / 6.0);
        // [3, 3]: no categories on either side -> unlike -> 1.
        close(intra_list_diversity_categories(&[vec![3, 3]], &c), 1.0);
        // Coverage of 4 categories: [0, 1] carries {0, 1} -> 1/2; [2, 3] {2} -> 1/4.
        close(category_coverage(&[vec![0, 1], vec![2, 3]], &c, 4), 0.375);
    }

    #[test]
    fn catalog_coverage_novelty_and_gini_by_hand() {
        let lists = vec![vec![0, 1], vec![0, 2]];
        // Items 0, 1, 2 of 5 shown.
        close(catalog_coverage(&lists, 5), 0.6);
        // counts [6, 2, 0, 0]: N + n = 12; p = 7/12, 3/12, 1/12, 1/12.
        let counts = [6, 2, 0, 0];
        let want = (2.0 * -(7.0f64 / 12.0).log2() - (3.0f64 / 12.0).log2() - (1.0f64 / 12.0).log2()) / 4.0;
        close(novelty(&lists, &counts), want);
        // Exposure over 4 items: [2, 1, 1, 0] sorted [0, 1, 1, 2]:
        // (-3*0 - 1*1 + 1*1 + 3*2) / (4 * 4) = 6/16.
        close(gini_of_exposure(&lists, 4), 0.375);
        // Everyone sees every item equally: 0.
        close(gini_of_exposure(&[vec![0, 1], vec![1, 0]], 2), 0.0);
        // One item of n takes everything: (n - 1) / n.
        close(gini_of_exposure(&[vec![3], vec![3]], 4), 0.75);
    }
}
