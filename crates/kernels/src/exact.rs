//! Exact maximum-inner-product top-k for many queries at GEMM speed.
//!
//! Queries are taken in blocks and items in tiles; one sgemm scores a block
//! against a tile, and each query's row of scores is swept into its own
//! [`TopK`]. Memory is one block x tile of scores per thread plus `2k` kept
//! candidates per query: never queries x items.

use std::fmt;

use funnel_api::{ItemIdx, Matrix};

use crate::linalg::{gemm, ROW_MAJOR};
use crate::par::*;
use crate::topk::TopK;

/// Queries scored per sgemm: each sgemm packs its tile of items once, so the
/// packing's share of the work falls with the rows that share it.
const QUERY_BLOCK: usize = 256;
/// Items scored per sgemm: a block's scores (256 x 1024 f32, 1 MiB) stay in
/// the cache while their row is swept.
const ITEM_TILE: usize = 1024;

/// A score that is NaN: the query or an item vector holds NaN, or their
/// product overflows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NanScore {
    pub query: usize,
    pub item: ItemIdx,
}

impl fmt::Display for NanScore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "query {}: score of item {} is NaN; the query or item vectors hold NaN or overflow",
            self.query, self.item
        )
    }
}

impl std::error::Error for NanScore {}

/// Exact top-k answers, one list per query.
pub type ExactTopK = Vec<Vec<(ItemIdx, f32)>>;

/// The `k` items of `items` with the largest inner product with each row of
/// `queries`, best first with ties to the lower item index, none in
/// `exclude(q)` for query `q` (ids outside the catalog and repeats are
/// harmless). Parallel over query blocks; the answer does not depend on the
/// number of threads. Panics when `items` and `queries` differ in width.
pub fn exact_top_k<'a, F>(items: &Matrix, queries: &Matrix, k: usize, exclude: F) -> Result<ExactTopK, NanScore>
where
    F: Fn(usize) -> &'a [ItemIdx] + Sync,
{
    assert_eq!(items.cols, queries.cols, "queries and items differ in width");
    let mut out: Vec<Vec<(ItemIdx, f32)>> = vec![Vec::new(); queries.rows];
    if k == 0 || queries.rows == 0 {
        return Ok(out);
    }
    let blocks: Vec<Result<(), NanScore>> = out
        .par_chunks_mut(QUERY_BLOCK)
        .enumerate()
        .map_init(
            || vec![0f32; QUERY_BLOCK * ITEM_TILE.min(items.rows)],
            |scores, (b, answers)| score_block(items, queries, b * QUERY_BLOCK, answers, k, &exclude, scores),
        )
        .collect();
    // The earliest failing block names the earliest failing query.
    blocks.into_iter().collect::<Result<(), NanScore>>()?;
    Ok(out)
}

fn score_block<'a>(
    items: &Matrix,
    queries: &Matrix,
    first: usize,
    answers: &mut [Vec<(ItemIdx, f32)>],
    k: usize,
    exclude: &(impl Fn(usize) -> &'a [ItemIdx] + Sync),
    scores: &mut [f32],
) -> Result<(), NanScore> {
    let (m, d) = (answers.len(), items.cols);
    let block = &queries.data[first * d..(first + m) * d];
    let excluded: Vec<Vec<ItemIdx>> = (first..first + m)
        .map(|q| {
            let mut e = exclude(q).to_vec();
            e.sort_unstable();
            e.dedup();
            e
        })
        .collect();
    let mut tops: Vec<TopK> = (0..m).map(|_| TopK::new(k)).collect();
    for start in (0..items.rows).step_by(ITEM_TILE) {
        let n = ITEM_TILE.min(items.rows - start);
        let tile = &items.data[start * d..(start + n) * d];
        gemm(m, d, n, (block, ROW_MAJOR(d)), (tile, [1, d]), scores);
        for (r, top) in tops.iter_mut().enumerate() {
            let row = &scores[r * n..(r + 1) * n];
            let mut floor = top.floor();
            for (j, &s) in row.iter().enumerate() {
                // Almost every score is below the floor: one comparison. NaN
                // fails `<` too and is caught below.
                if s < floor {
                    continue;
                }
                let item = (start + j) as ItemIdx;
                if s.is_nan() {
                    return Err(NanScore { query: first + r, item });
                }
                if excluded[r].binary_search(&item).is_ok() {
                    continue;
                }
                top.push(item, s);
                floor = top.floor();
            }
        }
    }
    for (answer, top) in answers.iter_mut().zip(tops) {
        *answer = top.into_sorted();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::linalg::dot;
    use crate::topk::better;

    fn random(rows: usize, cols: usize, rng: &mut StdRng) -> Matrix {
        Matrix::from_vec(rows, cols, (0..rows * cols).map(|_| rng.gen_range(-1.0..1.0)).collect())
    }

    /// The plain reference: score everything, sort, cut.
    fn by_sorting(items: &Matrix, q: &[f32], k: usize, exclude: &[ItemIdx]) -> Vec<ItemIdx> {
        let mut all: Vec<(ItemIdx, f32)> = (0..items.rows as ItemIdx)
            .filter(|j| !exclude.contains(j))
            .map(|j| (j, dot(q, items.row(j as usize))))
            .collect();
        all.sort_by(better);
        all.into_iter().take(k).map(|p| p.0).collect()
    }

    #[test]
    fn hand_computed_top_k_with_ties_and_exclusions() {
        // Query (1, 2) scores items 0..6 as 1, 2, 3, 2, -1, 3.
        let items = Matrix::from_vec(6, 2, vec![1., 0., 0., 1., 1., 1., 2., 0., -1., 0., 1., 1.]);
        let queries = Matrix::from_vec(2, 2, vec![1., 2., 1., 2.]);
        let ex: [&[ItemIdx]; 2] = [&[], &[2, 2, 99]];
        let top = exact_top_k(&items, &queries, 3, |q| ex[q]).unwrap();
        assert_eq!(top[0], vec![(2, 3.), (5, 3.), (1, 2.)]);
        assert_eq!(top[1], vec![(5, 3.), (1, 2.), (3, 2.)]);
        assert_eq!(exact_top_k(&items, &queries, 0, |_| &[]).unwrap(), vec![vec![], vec![]]);
        let all: Vec<ItemIdx> = (0..6).collect();
        assert_eq!(exact_top_k(&items, &queries, 3, |_| &all).unwrap(), vec![vec![], vec![]]);
    }

    #[test]
    fn matches_sorting_across_blocks_and_tiles() {
        let mut rng = StdRng::seed_from_u64(7);
        // More items than a tile and more queries than a block, odd sizes.
        let items = random(ITEM_TILE * 2 + 37, 13, &mut rng);
        let queries = random(QUERY_BLOCK + 9, 13, &mut rng);
        let excludes: Vec<Vec<ItemIdx>> =
            (0..queries.rows).map(|_| (0..20).map(|_| rng.gen_range(0..items.rows as ItemIdx)).collect()).collect();
        let top = exact_top_k(&items, &queries, 50, |q| &excludes[q]).unwrap();
        for q in 0..queries.rows {
            let ids: Vec<ItemIdx> = top[q].iter().map(|p| p.0).collect();
            let want = by_sorting(&items, queries.row(q), 50, &excludes[q]);
            // Scores come from sgemm, not `dot`: sums may differ in the last
            // bit, so near-ties may swap; the sets must agree.
            let overlap = ids.iter().filter(|i| want.contains(i)).count();
            assert!(overlap >= 49, "query {q}: {overlap} of 50");
            assert!(top[q].windows(2).all(|w| better(&w[0], &w[1]).is_lt()));
        }
    }

    #[test]
    fn the_answer_does_not_depend_on_threads_or_blocking() {
        let mut rng = StdRng::seed_from_u64(3);
        let items = random(5000, 16, &mut rng);
        let queries = random(150, 16, &mut rng);
        let all = exact_top_k(&items, &queries, 20, |_| &[]).unwrap();
        let one = crate::par::with_threads(1, || exact_top_k(&items, &queries, 20, |_| &[]).unwrap());
        assert_eq!(all, one);
        // One query at a time gives the same bits as the block it sat in.
        for q in [0, 63, 64, 149] {
            let single = Matrix::from_vec(1, 16, queries.row(q).to_vec());
            assert_eq!(exact_top_k(&items, &single, 20, |_| &[]).unwrap()[0], all[q], "query {q}");
        }
    }

    #[test]
    fn nan_is_an_error_naming_query_and_item() {
        let items = Matrix::from_vec(3, 1, vec![1., f32::NAN, 2.]);
        let queries = Matrix::from_vec(2, 1, vec![1., 1.]);
        let err = exact_top_k(&items, &queries, 2, |_| &[]).unwrap_err();
        assert_eq!(err, NanScore { query: 0, item: 1 });
    }

    #[test]
    fn retained_memory_is_k_per_query() {
        let mut rng = StdRng::seed_from_u64(1);
        let items = random(20_000, 8, &mut rng);
        let queries = random(200, 8, &mut rng);
        let top = exact_top_k(&items, &queries, 100, |_| &[]).unwrap();
        assert!(top.iter().all(|t| t.len() == 100 && t.capacity() == 100));
    }
}
