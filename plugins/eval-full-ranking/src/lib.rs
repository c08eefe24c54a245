//! The `full_ranking` evaluation: ranks every held-out target against the
//! whole catalog by inner product and reports recall@K, ndcg@K, hit_rate@K
//! and MRR.
//!
//! Sampled metrics (ranking the target against a few random negatives) are
//! inconsistent with their full-catalog counterparts and can even reorder
//! models (Krichene & Rendle, "On Sampled Metrics for Item Recommendation",
//! KDD 2020), so every catalog item is scored for every case. Items the user
//! has already seen are excluded from the ranking, except the target itself:
//! a target the user saw before (a re-consumption) still counts.
//!
//! Ties count against the target: its 0-based rank is the number of other
//! eligible items scoring at least as high. That is pessimistic and does not
//! depend on item order, so a model that scores everything equally cannot
//! look good.

#![forbid(unsafe_code)]

pub mod beyond;
mod metrics;

use anyhow::{bail, Result};
use funnel_api::{
    BuildCx, CaseScorer, EvalCase, Evaluation, Evaluator, ItemIdx, Matrix, Metrics, Registry, SparseScores,
};
use funnel_kernels::par::{self, IndexedParallelIterator, IntoParallelRefIterator, ParallelIterator, ParallelSliceMut};
use funnel_kernels::{gemm, ROW_MAJOR};
use serde::{Deserialize, Serialize};

pub use metrics::{hit_rate_at_k, ndcg_at_k, recall_at_k, reciprocal_rank, single_target, SingleTarget};

/// Registers the `full_ranking` evaluation.
pub fn register(reg: &mut Registry) {
    reg.evaluation::<FullRankingParams>(
        "full_ranking",
        "Ranks each held-out target against every catalog item by inner product (no sampled \
         negatives), excluding items the user has already seen except the target itself; ties \
         count against the target. Reports recall@K, ndcg@K and hit_rate@K for each K, and mrr.",
        build,
    );
}

fn build(params: FullRankingParams, cx: &BuildCx) -> Result<Box<dyn Evaluator>> {
    // A cutoff beyond the catalog would make every metric at it trivially 1.
    if let Some(&k) = params.ks.iter().find(|&&k| cx.n_items > 0 && k > cx.n_items) {
        bail!("key `ks`: {k} is larger than the catalog ({} items)", cx.n_items);
    }
    Ok(Box::new(FullRanking::new(params)?))
}

/// Parameters of `full_ranking`.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct FullRankingParams {
    /// Cutoffs K of recall@K, ndcg@K and hit_rate@K; non-empty, each at least 1.
    #[param(default = vec![10, 20, 50, 100])]
    pub ks: Vec<usize>,
    /// Validation metric that picks the best epoch, higher is better; one of
    /// the metrics this evaluation reports, e.g. recall@20 or mrr.
    #[param(default = "recall@10")]
    pub select_by: String,
    /// Users scored per matrix-multiply block, at most; each scoring thread
    /// holds batch_users x n_items f32 scores, capped at 64 MiB by scoring
    /// fewer users per block on large catalogs.
    #[param(default = 1024)]
    pub batch_users: usize,
    /// Rank a seeded sample of this many validation users after each epoch
    /// (the same users every epoch) instead of all of them, so per-epoch
    /// validation stays cheap on large datasets; the test always ranks every
    /// user. Unset: every user.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_users: Option<usize>,
}

/// Scores one scoring thread may hold at once.
const SCRATCH_BYTES: usize = 64 << 20;

/// The `full_ranking` evaluator.
#[derive(Debug, Clone)]
pub struct FullRanking {
    /// Cutoffs as configured, repeats dropped.
    ks: Vec<usize>,
    select_by: String,
    batch_users: usize,
    validation_users: Option<usize>,
    /// A pool of its own; `None` for rayon's global pool.
    threads: Option<usize>,
}

impl FullRanking {
    /// Checks `params` and builds the evaluator; scores with all available
    /// cores.
    pub fn new(params: FullRankingParams) -> Result<FullRanking> {
        if params.ks.is_empty() {
            bail!("ks must list at least one cutoff");
        }
        if let Some(k) = params.ks.iter().find(|&&k| k == 0) {
            bail!("ks must be at least 1, got {k}");
        }
        if params.batch_users == 0 {
            bail!("batch_users must be at least 1");
        }
        if params.validation_users == Some(0) {
            bail!("validation_users must be at least 1; leave it out to validate on every user");
        }
        let mut ks = Vec::with_capacity(params.ks.len());
        for k in params.ks {
            if !ks.contains(&k) {
                ks.push(k);
            }
        }
        let names = metric_names(&ks);
        if !names.contains(&params.select_by) {
            bail!(
                "select_by \"{}\" is not a metric of full_ranking; expected one of: {}",
                params.select_by,
                names.join(", ")
            );
        }
        Ok(FullRanking {
            ks,
            select_by: params.select_by,
            batch_users: params.batch_users,
            validation_users: params.validation_users,
            threads: None,
        })
    }

    /// Scores on a pool of `threads` threads (at least one) instead of the
    /// global one. Results do not depend on it: blocks are fixed by
    /// `batch_users` and metrics are summed in case order.
    pub fn with_threads(mut self, threads: usize) -> FullRanking {
        self.threads = Some(threads.max(1));
        self
    }

    /// 0-based rank of each case's target, in case order.
    pub fn ranks(&self, users: &Matrix, items: &Matrix, cases: &[EvalCase<'_>]) -> Result<Vec<u32>> {
        validate(users, items, cases)?;
        self.ranks_by(items.rows, cases, |first, m, scores| gemm_scores(users, items, first, m, scores))
    }

    /// 0-based rank of each case's target under the scores of `scorer`:
    /// from its sparse form when it has one (a case costs what it scores
    /// itself plus a binary search), else from a score per catalog item.
    pub fn ranks_of_scores(&self, scorer: &dyn CaseScorer, n_items: usize, cases: &[EvalCase<'_>]) -> Result<Vec<u32>> {
        validate_cases(n_items, cases)?;
        if let Some(base) = scorer.shared_base() {
            if base.len() == n_items {
                return sparse_ranks(scorer, base, cases);
            }
        }
        self.ranks_by(n_items, cases, |first, m, scores| {
            for (r, row) in scores.chunks_exact_mut(n_items).take(m).enumerate() {
                scorer.score(first + r, row);
            }
        })
    }

    /// Ranks cases in blocks of `batch_users`; `fill(first, m, scores)` writes
    /// the `m x n_items` scores of cases `first..first + m`.
    fn ranks_by(
        &self,
        n_items: usize,
        cases: &[EvalCase<'_>],
        fill: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) -> Result<Vec<u32>> {
        // A block's scores stay within SCRATCH_BYTES per thread however large
        // the catalog; blocks only group users, so results do not change.
        let fit = (SCRATCH_BYTES / (4 * n_items.max(1))).max(1);
        let block = self.batch_users.min(fit).min(cases.len());
        let mut ranks = vec![0u32; cases.len()];
        // Blocks depend only on batch_users, never on the thread count, and
        // each writes its own slice of `ranks`, so threads cannot change results.
        let mut rank_blocks = || -> Vec<Result<(), (usize, anyhow::Error)>> {
            ranks
                .par_chunks_mut(block)
                .enumerate()
                .map_init(
                    || vec![0f32; block * n_items],
                    |scores, (b, out)| {
                        let (first, m) = (b * block, out.len());
                        let scores = &mut scores[..m * n_items];
                        fill(first, m, scores);
                        for (r, (case, rank)) in cases[first..first + m].iter().zip(out).enumerate() {
                            *rank = target_rank(&mut scores[r * n_items..(r + 1) * n_items], case)
                                .map_err(|e| (first + r, e))?;
                        }
                        Ok(())
                    },
                )
                .collect()
        };
        let outcomes = match self.threads {
            Some(threads) => par::with_threads(threads, rank_blocks),
            None => rank_blocks(),
        };
        // Blocks come back in order: the first error is the earliest case's.
        if let Some(Err((case, e))) = outcomes.into_iter().find(Result::is_err) {
            bail!("case {case}: {e}");
        }
        Ok(ranks)
    }

    /// Recall/NDCG/hit rate at each K and MRR over `ranks`.
    fn summarize(&self, ranks: Vec<u32>) -> Evaluation {
        let mut sums = vec![[0f64; 3]; self.ks.len()];
        let mut mrr = 0f64;
        for &rank in &ranks {
            let m = single_target(rank);
            for (sum, &k) in sums.iter_mut().zip(&self.ks) {
                sum[0] += m.recall_at_k(k);
                sum[1] += m.ndcg_at_k(k);
                sum[2] += m.hit_rate_at_k(k);
            }
            mrr += m.reciprocal_rank();
        }
        let n = ranks.len() as f64;
        let mut metrics = Metrics::new();
        for (sum, &k) in sums.iter().zip(&self.ks) {
            metrics.insert(format!("recall@{k}"), sum[0] / n);
            metrics.insert(format!("ndcg@{k}"), sum[1] / n);
            metrics.insert(format!("hit_rate@{k}"), sum[2] / n);
        }
        metrics.insert("mrr".to_string(), mrr / n);
        Evaluation { metrics, ranks }
    }
}

impl Evaluator for FullRanking {
    fn selection_metric(&self) -> &str {
        &self.select_by
    }

    fn validation_cases(&self) -> Option<usize> {
        self.validation_users
    }

    fn metric_names(&self) -> Vec<String> {
        metric_names(&self.ks)
    }

    fn metric_at_rank(&self, metric: &str, rank: u64) -> Option<f64> {
        if !self.metric_names().iter().any(|m| m == metric) {
            return None;
        }
        // A case that was not retrieved ranks past every cutoff.
        let m = single_target(u32::try_from(rank).unwrap_or(u32::MAX));
        let at = |name: &str| metric.strip_prefix(name).and_then(|k| k.parse::<usize>().ok());
        Some(if let Some(k) = at("recall@") {
            m.recall_at_k(k)
        } else if let Some(k) = at("ndcg@") {
            m.ndcg_at_k(k)
        } else if let Some(k) = at("hit_rate@") {
            m.hit_rate_at_k(k)
        } else if rank == u64::MAX {
            0.0
        } else {
            m.reciprocal_rank()
        })
    }

    /// recall@ and ndcg@ at the smallest cutoff, recall@ at the first cutoff
    /// of at least five times that (a candidate list a later stage re-ranks),
    /// and mrr.
    fn headline_metrics(&self) -> Vec<String> {
        let mut ks = self.ks.clone();
        ks.sort_unstable();
        let mut out = vec![format!("recall@{}", ks[0]), format!("ndcg@{}", ks[0])];
        if let Some(k) = ks.iter().find(|&&k| k >= 5 * ks[0]) {
            out.push(format!("recall@{k}"));
        }
        out.push("mrr".to_string());
        out
    }

    fn evaluate(&self, users: &Matrix, items: &Matrix, cases: &[EvalCase<'_>]) -> Result<Evaluation> {
        Ok(self.summarize(self.ranks(users, items, cases)?))
    }

    fn evaluate_scores(&self, scorer: &dyn CaseScorer, n_items: usize, cases: &[EvalCase<'_>]) -> Result<Evaluation> {
        Ok(self.summarize(self.ranks_of_scores(scorer, n_items, cases)?))
    }
}

fn metric_names(ks: &[usize]) -> Vec<String> {
    let mut names = Vec::with_capacity(3 * ks.len() + 1);
    for k in ks {
        names.push(format!("recall@{k}"));
        names.push(format!("ndcg@{k}"));
        names.push(format!("hit_rate@{k}"));
    }
    names.push("mrr".to_string());
    names
}

fn validate(users: &Matrix, items: &Matrix, cases: &[EvalCase<'_>]) -> Result<()> {
    if cases.is_empty() {
        bail!("no evaluation cases");
    }
    for (what, m) in [("user", users), ("item", items)] {
        if m.data.len() != m.rows * m.cols {
            bail!("{what} matrix holds {} values but claims {}x{}", m.data.len(), m.rows, m.cols);
        }
    }
    if users.rows != cases.len() {
        bail!(
            "user matrix has {} rows but there are {} cases; expected one user vector per case",
            users.rows,
            cases.len()
        );
    }
    if users.cols != items.cols {
        bail!("user vectors have {} dimensions but item vectors have {}", users.cols, items.cols);
    }
    validate_cases(items.rows, cases)
}

fn validate_cases(n: usize, cases: &[EvalCase<'_>]) -> Result<()> {
    if cases.is_empty() {
        bail!("no evaluation cases");
    }
    for (i, case) in cases.iter().enumerate() {
        if case.target as usize >= n {
            bail!("case {i}: target item {} is outside the catalog of {n} items", case.target);
        }
        if let Some(s) = case.seen.iter().find(|&&s| s as usize >= n) {
            bail!("case {i}: seen item {s} is outside the catalog of {n} items");
        }
    }
    Ok(())
}

/// Writes the `m x items.rows` inner products of users `first..first + m`
/// with every item into `scores`.
fn gemm_scores(users: &Matrix, items: &Matrix, first: usize, m: usize, scores: &mut [f32]) {
    let (d, n) = (items.cols, items.rows);
    let a = &users.data[first * d..(first + m) * d];
    // Items read as their transpose: d x n with strides (1, d).
    gemm(m, d, n, (a, ROW_MAJOR(d)), (&items.data, [1, d]), scores);
}

/// Every case's target rank from the scorer's sparse form, exactly as
/// [`target_rank`] would count it over the dense scores.
fn sparse_ranks(scorer: &dyn CaseScorer, base: &[f32], cases: &[EvalCase<'_>]) -> Result<Vec<u32>> {
    if let Some(j) = base.iter().position(|b| !b.is_finite()) {
        bail!("shared base score of item {j} is {}; expected finite values", base[j]);
    }
    let mut sorted = base.to_vec();
    sorted.sort_unstable_by(f32::total_cmp);
    let ranks: Vec<Result<u32>> = cases
        .par_iter()
        .enumerate()
        .map_init(
            || (SparseScores::default(), vec![false; base.len()]),
            |(sparse, is_own), (i, case)| {
                scorer.sparse(i, sparse);
                sparse_rank(base, &sorted, sparse, case, is_own).map_err(|e| anyhow::anyhow!("case {i}: {e}"))
            },
        )
        .collect();
    ranks.into_iter().collect()
}

/// One case's rank: the items at or above the target's score among the
/// base-scored ones (a binary search over the sorted base, since
/// `b -> b * scale` keeps the order), corrected for the case's own items,
/// the seen ones and the target itself.
/// `is_own` is all false on entry and on return.
fn sparse_rank(
    base: &[f32],
    sorted: &[f32],
    sparse: &SparseScores,
    case: &EvalCase<'_>,
    is_own: &mut [bool],
) -> Result<u32> {
    let scale = sparse.scale;
    if !(scale.is_finite() && scale >= 0.0) {
        bail!("sparse scores scale the base by {scale}; expected a finite value of at least 0");
    }
    if let Some(&(j, s)) = sparse.own.iter().find(|(_, s)| s.is_nan()) {
        bail!("score of item {j} is {s}; the scorer produced NaN");
    }
    if let Some(&(j, _)) = sparse.own.iter().find(|(j, _)| *j as usize >= base.len()) {
        bail!("the scorer scored item {j}, outside the catalog of {} items", base.len());
    }
    let target = case.target;
    let target_own = sparse.own.iter().find(|&&(i, _)| i == target).map(|&(_, s)| s);
    let target_score = target_own.unwrap_or(base[target as usize] * scale);
    let mut seen: Vec<ItemIdx> = case.seen.iter().copied().filter(|&s| s != target).collect();
    seen.sort_unstable();
    seen.dedup();
    let is_seen = |j: ItemIdx| seen.binary_search(&j).is_ok();
    // Base-scored items at or above the target (the target included when it
    // is base-scored).
    let mut count = (sorted.len() - sorted.partition_point(|&b| b * scale < target_score)) as i64;
    for &(j, s) in &sparse.own {
        is_own[j as usize] = true;
        if base[j as usize] * scale >= target_score {
            count -= 1;
        }
        if j != target && !is_seen(j) && s >= target_score {
            count += 1;
        }
    }
    for &j in &seen {
        if !is_own[j as usize] && base[j as usize] * scale >= target_score {
            count -= 1;
        }
    }
    for &(j, _) in &sparse.own {
        is_own[j as usize] = false;
    }
    if target_own.is_none() {
        count -= 1;
    }
    u32::try_from(count).map_err(|_| anyhow::anyhow!("sparse scores disagree with the shared base (count {count})"))
}

/// Number of eligible items other than the target scoring at least as high as
/// it. Overwrites the scores of excluded items.
fn target_rank(scores: &mut [f32], case: &EvalCase<'_>) -> Result<u32> {
    if let Some(j) = scores.iter().position(|s| s.is_nan()) {
        bail!("score of item {j} is NaN; the user or item vectors hold NaN or overflow");
    }
    let target_score = scores[case.target as usize];
    // NaN compares false with everything, so a masked item is never counted,
    // and masking twice (a repeated seen item) is harmless.
    for &s in case.seen {
        if s != case.target {
            scores[s as usize] = f32::NAN;
        }
    }
    let at_least: usize = scores.iter().map(|&s| usize::from(s >= target_score)).sum();
    // The target's own score is counted above (it is not NaN).
    Ok((at_least - 1) as u32)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use funnel_api::{parse_params, ComponentKind, ItemIdx};
    use funnel_kernels::dot;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn evaluator(ks: &[usize]) -> FullRanking {
        FullRanking::new(FullRankingParams {
            ks: ks.to_vec(),
            select_by: "mrr".to_string(),
            ..FullRankingParams::default()
        })
        .unwrap()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    fn table(src: &str) -> toml::Table {
        src.parse().unwrap()
    }

    /// Five 2-d items and two users, ranked by hand.
    ///
    /// items: 0 = (1, 0), 1 = (0, 1), 2 = (1, 1), 3 = (2, 0), 4 = (-1, 0)
    ///
    /// user 0 = (1, 0): scores [1, 0, 1, 2, -1]; target 0 (score 1), seen [3].
    ///   Item 3 (score 2) is excluded; item 2 ties the target and counts
    ///   against it; items 1 and 4 score lower. rank = 1.
    /// user 1 = (0, 1): scores [0, 1, 1, 0, 0]; target 1 (score 1), seen [1, 2].
    ///   The target was seen but still counts; item 2 (a tie) is excluded;
    ///   items 0, 3, 4 score lower. rank = 0.
    fn hand_example() -> (Matrix, Matrix) {
        let items = Matrix::from_vec(5, 2, vec![1., 0., 0., 1., 1., 1., 2., 0., -1., 0.]);
        let users = Matrix::from_vec(2, 2, vec![1., 0., 0., 1.]);
        (users, items)
    }

    #[test]
    fn hand_computed_example() {
        let (users, items) = hand_example();
        let cases = [EvalCase { seen: &[3], target: 0 }, EvalCase { seen: &[1, 2], target: 1 }];
        let eval = evaluator(&[1, 2]).evaluate(&users, &items, &cases).unwrap();
        assert_eq!(eval.ranks, vec![1, 0]);
        let m = &eval.metrics;
        // recall@1 = hit_rate@1 = ndcg@1 = (0 + 1) / 2.
        assert_eq!(m["recall@1"], 0.5);
        assert_eq!(m["hit_rate@1"], 0.5);
        assert_eq!(m["ndcg@1"], 0.5);
        // Both targets within the top 2.
        assert_eq!(m["recall@2"], 1.0);
        assert_eq!(m["hit_rate@2"], 1.0);
        // ndcg@2 = (1/log2(3) + 1/log2(2)) / 2 = (0.6309297535714575 + 1) / 2.
        assert!(close(m["ndcg@2"], 0.8154648767857288));
        // mrr = (1/2 + 1/1) / 2.
        assert_eq!(m["mrr"], 0.75);
        assert_eq!(m.len(), 7);

        // Without exclusions user 0's target also trails item 3: rank 2.
        let cases = [EvalCase { seen: &[], target: 0 }, EvalCase { seen: &[], target: 1 }];
        let eval = evaluator(&[1]).evaluate(&users, &items, &cases).unwrap();
        assert_eq!(eval.ranks, vec![2, 1]);
    }

    /// Sparse scores over a shared base, and the same numbers densely.
    struct Sparse {
        base: Vec<f32>,
        own: Vec<Vec<(ItemIdx, f32)>>,
        scale: Vec<f32>,
        dense_only: bool,
    }

    impl CaseScorer for Sparse {
        fn score(&self, case: usize, out: &mut [f32]) {
            for (o, b) in out.iter_mut().zip(&self.base) {
                *o = b * self.scale[case];
            }
            for &(j, s) in &self.own[case] {
                out[j as usize] = s;
            }
        }
        fn shared_base(&self) -> Option<&[f32]> {
            (!self.dense_only).then_some(&self.base[..])
        }
        fn sparse(&self, case: usize, out: &mut SparseScores) {
            out.own.clone_from(&self.own[case]);
            out.scale = self.scale[case];
        }
    }

    #[test]
    fn sparse_ranks_equal_dense_ranks_with_ties_exclusions_and_own_targets() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let n = 60;
        let e = evaluator(&[10]);
        for round in 0..50 {
            // Small integers: many ties between own and base-scored items.
            let base: Vec<f32> = (0..n).map(|_| rng.gen_range(0..6) as f32).collect();
            let m = 40;
            let mut own = Vec::new();
            let mut seen_lists = Vec::new();
            let mut targets = Vec::new();
            for _ in 0..m {
                let mut items: Vec<ItemIdx> = (0..rng.gen_range(0..15)).map(|_| rng.gen_range(0..n as u32)).collect();
                items.sort_unstable();
                items.dedup();
                own.push(items.iter().map(|&j| (j, rng.gen_range(0..12) as f32 * 0.5)).collect::<Vec<_>>());
                seen_lists.push((0..rng.gen_range(0..10)).map(|_| rng.gen_range(0..n as u32)).collect::<Vec<_>>());
                targets.push(rng.gen_range(0..n as u32));
            }
            let scale: Vec<f32> = (0..m).map(|i| [0.0, 0.5, 1.0, 2.0][(i + round) % 4]).collect();
            let cases: Vec<EvalCase<'_>> =
                seen_lists.iter().zip(&targets).map(|(s, &t)| EvalCase { seen: s, target: t }).collect();
            let mut scorer = Sparse { base: base.clone(), own, scale, dense_only: true };
            let dense = e.ranks_of_scores(&scorer, n, &cases).unwrap();
            scorer.dense_only = false;
            let sparse = e.ranks_of_scores(&scorer, n, &cases).unwrap();
            assert_eq!(sparse, dense, "round {round}");
        }
    }

    #[test]
    fn sparse_scores_that_are_nan_or_scaled_negatively_are_errors() {
        let e = evaluator(&[1]);
        let cases = [EvalCase { seen: &[], target: 0 }];
        let scorer =
            Sparse { base: vec![1.0, 2.0], own: vec![vec![(1, f32::NAN)]], scale: vec![1.0], dense_only: false };
        assert!(e.ranks_of_scores(&scorer, 2, &cases).unwrap_err().to_string().contains("NaN"));
        let scorer = Sparse { base: vec![1.0, 2.0], own: vec![vec![]], scale: vec![-1.0], dense_only: false };
        assert!(e.ranks_of_scores(&scorer, 2, &cases).unwrap_err().to_string().contains("scale"));
    }

    #[test]
    fn per_case_metrics_cutoffs_and_headline() {
        let e = FullRanking::new(FullRankingParams::default()).unwrap();
        let at = |m: &str, rank: u64| e.metric_at_rank(m, rank).unwrap();
        assert_eq!(at("recall@10", 9), 1.0);
        assert_eq!(at("recall@10", 10), 0.0);
        assert_eq!(at("hit_rate@20", 0), 1.0);
        assert_eq!(at("ndcg@10", 0), 1.0);
        assert!((at("ndcg@10", 2) - 0.5).abs() < 1e-12);
        assert_eq!(at("ndcg@10", 10), 0.0);
        assert_eq!(at("mrr", 3), 0.25);
        assert_eq!(at("recall@10", u64::MAX), 0.0);
        assert_eq!(at("mrr", u64::MAX), 0.0);
        assert_eq!(e.metric_at_rank("recall@5", 0), None, "not a metric it reports");
        assert_eq!(e.cutoffs(), vec![10, 20, 50, 100]);
        assert_eq!(e.headline_metrics(), ["recall@10", "ndcg@10", "recall@50", "mrr"]);
        let one =
            FullRanking::new(FullRankingParams { ks: vec![20, 5], select_by: "mrr".into(), ..Default::default() })
                .unwrap();
        assert_eq!(one.cutoffs(), vec![5, 20]);
        assert_eq!(one.headline_metrics(), ["recall@5", "ndcg@5", "mrr"]);
    }

    #[test]
    fn default_metric_names_and_selection() {
        let e = FullRanking::new(FullRankingParams::default()).unwrap();
        assert_eq!(e.selection_metric(), "recall@10");
        let names = e.metric_names();
        for name in ["recall@10", "ndcg@10", "hit_rate@10", "mrr", "recall@100"] {
            assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
        }
        let (users, items) = hand_example();
        let cases = [EvalCase { seen: &[], target: 0 }, EvalCase { seen: &[], target: 1 }];
        let eval = e.evaluate(&users, &items, &cases).unwrap();
        let reported: Vec<_> = eval.metrics.keys().cloned().collect();
        let mut expected = names.clone();
        expected.sort();
        assert_eq!(reported, expected);
    }

    /// Ranks the target by sorting every eligible item, ties placing the target
    /// last, then applies the general metric functions.
    fn reference(users: &Matrix, items: &Matrix, case: &EvalCase<'_>, u: usize) -> Vec<ItemIdx> {
        let mut ranked: Vec<(ItemIdx, f32)> = (0..items.rows as ItemIdx)
            .filter(|j| *j == case.target || !case.seen.contains(j))
            .map(|j| (j, dot(users.row(u), items.row(j as usize))))
            .collect();
        ranked.sort_by(|a, b| {
            b.1.partial_cmp(&a.1).unwrap().then((a.0 == case.target).cmp(&(b.0 == case.target))).then(a.0.cmp(&b.0))
        });
        ranked.into_iter().map(|(j, _)| j).collect()
    }

    #[test]
    fn fast_path_matches_general_functions_on_random_data() {
        let mut rng = StdRng::seed_from_u64(7);
        let (n_users, n_items, d) = (57, 40, 3);
        // Small integers: exact f32 scores with many ties.
        let mut random_matrix = |rows: usize| {
            let data = (0..rows * d).map(|_| rng.gen_range(-2..=2) as f32).collect();
            Matrix::from_vec(rows, d, data)
        };
        let users = random_matrix(n_users);
        let items = random_matrix(n_items);
        let seen: Vec<Vec<ItemIdx>> = (0..n_users)
            .map(|_| {
                let len = rng.gen_range(0..12);
                (0..len).map(|_| rng.gen_range(0..n_items as ItemIdx)).collect()
            })
            .collect();
        let targets: Vec<ItemIdx> = (0..n_users)
            .map(|u| {
                // Sometimes a re-consumption: the target is among the seen items.
                if !seen[u].is_empty() && rng.gen_bool(0.2) {
                    seen[u][0]
                } else {
                    rng.gen_range(0..n_items as ItemIdx)
                }
            })
            .collect();
        let cases: Vec<EvalCase> = (0..n_users).map(|u| EvalCase { seen: &seen[u], target: targets[u] }).collect();
        let ks = [1, 3, 10, 50];
        let eval = evaluator(&ks).evaluate(&users, &items, &cases).unwrap();

        let mut sums = vec![[0f64; 3]; ks.len()];
        let mut mrr = 0.0;
        for (u, case) in cases.iter().enumerate() {
            let ranked = reference(&users, &items, case, u);
            let pos = ranked.iter().position(|&j| j == case.target).unwrap();
            assert_eq!(eval.ranks[u] as usize, pos, "case {u}");
            let relevant = HashSet::from([case.target]);
            for (sum, &k) in sums.iter_mut().zip(&ks) {
                sum[0] += recall_at_k(&ranked, &relevant, k);
                sum[1] += ndcg_at_k(&ranked, &relevant, k);
                sum[2] += hit_rate_at_k(&ranked, &relevant, k);
            }
            mrr += reciprocal_rank(&ranked, &relevant);
        }
        let n = n_users as f64;
        for (sum, &k) in sums.iter().zip(&ks) {
            assert!(close(eval.metrics[&format!("recall@{k}")], sum[0] / n));
            assert!(close(eval.metrics[&format!("ndcg@{k}")], sum[1] / n));
            assert!(close(eval.metrics[&format!("hit_rate@{k}")], sum[2] / n));
        }
        assert!(close(eval.metrics["mrr"], mrr / n));
        // Ties really occurred, so the pessimistic rule was exercised.
        assert!(cases.iter().enumerate().any(|(u, c)| {
            let t = dot(users.row(u), items.row(c.target as usize));
            (0..n_items).any(|j| j != c.target as usize && dot(users.row(u), items.row(j)) == t)
        }));
    }

    #[test]
    fn results_do_not_depend_on_threads_or_blocks() {
        let mut rng = StdRng::seed_from_u64(11);
        let (n_users, n_items, d) = (203, 150, 16);
        let users = Matrix::from_vec(n_users, d, (0..n_users * d).map(|_| rng.gen_range(-1.0..1.0)).collect());
        let items = Matrix::from_vec(n_items, d, (0..n_items * d).map(|_| rng.gen_range(-1.0..1.0)).collect());
        let seen: Vec<Vec<ItemIdx>> = (0..n_users)
            .map(|_| (0..rng.gen_range(0..30)).map(|_| rng.gen_range(0..n_items as ItemIdx)).collect())
            .collect();
        let cases: Vec<EvalCase> =
            seen.iter().map(|s| EvalCase { seen: s, target: rng.gen_range(0..n_items as ItemIdx) }).collect();
        let run = |batch_users: usize, threads: usize| {
            FullRanking::new(FullRankingParams { batch_users, ..FullRankingParams::default() })
                .unwrap()
                .with_threads(threads)
                .evaluate(&users, &items, &cases)
                .unwrap()
        };
        let base = run(1024, 1);
        for (batch, threads) in [(1, 1), (1, 4), (7, 3), (64, 2), (64, 8), (5000, 16)] {
            let other = run(batch, threads);
            assert_eq!(other.ranks, base.ranks, "batch {batch}, threads {threads}");
            assert_eq!(other.metrics, base.metrics, "batch {batch}, threads {threads}");
        }
    }

    fn error(users: &Matrix, items: &Matrix, cases: &[EvalCase<'_>]) -> String {
        evaluator(&[1]).evaluate(users, items, cases).unwrap_err().to_string()
    }

    #[test]
    fn shape_errors() {
        let (users, items) = hand_example();
        let one = [EvalCase { seen: &[], target: 0 }];
        let two = [EvalCase { seen: &[], target: 0 }, EvalCase { seen: &[], target: 1 }];
        assert!(error(&users, &items, &[]).contains("no evaluation cases"));
        assert!(error(&users, &items, &one).contains("2 rows but there are 1 cases"));
        let wide = Matrix::from_vec(2, 3, vec![0.0; 6]);
        assert!(error(&wide, &items, &two).contains("3 dimensions but item vectors have 2"));
        let far = [EvalCase { seen: &[], target: 0 }, EvalCase { seen: &[], target: 5 }];
        let e = error(&users, &items, &far);
        assert!(e.contains("case 1") && e.contains("target item 5"), "{e}");
        let far_seen = [EvalCase { seen: &[0, 9], target: 0 }, EvalCase { seen: &[], target: 1 }];
        let e = error(&users, &items, &far_seen);
        assert!(e.contains("case 0") && e.contains("seen item 9"), "{e}");
        let broken = Matrix { rows: 2, cols: 2, data: vec![0.0; 3] };
        assert!(error(&broken, &items, &two).contains("user matrix holds 3 values"));
    }

    #[test]
    fn nan_scores_name_the_case() {
        let (mut users, items) = hand_example();
        users.row_mut(1)[0] = f32::NAN;
        let cases = [EvalCase { seen: &[], target: 0 }, EvalCase { seen: &[], target: 1 }];
        let e = error(&users, &items, &cases);
        assert!(e.starts_with("case 1:") && e.contains("NaN"), "{e}");

        let (users, mut items) = hand_example();
        items.row_mut(4)[1] = f32::NAN;
        let e = error(&users, &items, &cases);
        assert!(e.starts_with("case 0:") && e.contains("item 4"), "{e}");
    }

    #[test]
    fn params_are_checked() {
        let e = parse_params::<FullRankingParams>(table("k = [5]")).unwrap_err().to_string();
        assert!(e.contains("`k`"), "{e}");
        let p = parse_params::<FullRankingParams>(table("ks = [5]\nselect_by = \"ndcg@5\"")).unwrap();
        assert_eq!(p.ks, vec![5]);
        assert_eq!(p.batch_users, 1024);

        let bad = |p: FullRankingParams| FullRanking::new(p).unwrap_err().to_string();
        let e = bad(FullRankingParams { select_by: "recall@7".into(), ..Default::default() });
        assert!(e.contains("\"recall@7\""), "{e}");
        assert!(e.contains("recall@10, ndcg@10, hit_rate@10, recall@20"), "{e}");
        assert!(e.ends_with("hit_rate@100, mrr"), "{e}");
        assert!(bad(FullRankingParams { ks: vec![], ..Default::default() }).contains("at least one"));
        assert!(bad(FullRankingParams { ks: vec![10, 0], ..Default::default() }).contains("got 0"));
        assert!(bad(FullRankingParams { batch_users: 0, ..Default::default() }).contains("batch_users"));
    }

    #[test]
    fn cutoffs_beyond_the_catalog_are_refused() {
        let mut reg = Registry::new();
        register(&mut reg);
        let table: toml::Table = toml::from_str("ks = [10, 500]").unwrap();
        let cx = BuildCx { n_items: 100, ..Default::default() };
        let err = reg.build_evaluator("full_ranking", table, &cx).err().unwrap();
        assert!(err.to_string().contains("key `ks`: 500 is larger than the catalog (100 items)"), "{err}");
    }

    #[test]
    fn registered_and_built_from_toml() {
        let mut reg = Registry::new();
        register(&mut reg);
        let info = reg.info(ComponentKind::Evaluation, "full_ranking").unwrap();
        let keys: Vec<_> = info.params.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["ks", "select_by", "batch_users", "validation_users"]);
        // Every user unless a sample is asked for.
        assert!(info.params.iter().all(|(k, default, _)| (default == "(unset)") == (k == "validation_users")));
        let cx = BuildCx::default();
        let sampled = reg.build_evaluator("full_ranking", table("validation_users = 500"), &cx).unwrap();
        assert_eq!(sampled.validation_cases(), Some(500));
        assert_eq!(reg.build_evaluator("full_ranking", toml::Table::new(), &cx).unwrap().validation_cases(), None);
        let err = reg.build_evaluator("full_ranking", table("validation_users = 0"), &cx).err().unwrap();
        assert!(format!("{err:#}").contains("validation_users must be at least 1"), "{err:#}");

        let cx = BuildCx::default();
        let e = reg.build_evaluator("full_ranking", table("select_by = \"mrr\""), &cx).unwrap();
        assert_eq!(e.selection_metric(), "mrr");
        let err =
            reg.build_evaluator("full_ranking", table("select_by = \"recall@5\""), &cx).err().unwrap().to_string();
        assert!(err.contains("expected one of"), "{err}");
        let err = reg.build_evaluator("full_ranking", table("batch = 3"), &cx).err().unwrap().to_string();
        assert!(err.contains("`batch`"), "{err}");
    }
}
