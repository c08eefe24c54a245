//! Serving-side retrieval: the run's `[index]` answers the test users'
//! queries the way production would, and is measured against exact search —
//! overlap with the exact top K, the end-to-end metrics through the index next
//! to the exact ones, and speed. These numbers describe the index, never the
//! model: the run's test metrics stay those of exact full-catalog ranking.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use funnel_api::{EvalCase, Evaluator, Index, ItemIdx, Matrix, Metrics};
use funnel_kernels::exact_top_k;
use funnel_kernels::par::{threads, IndexedParallelIterator, ParallelIterator, ParallelSlice};

/// What serving through the index measured.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Serving {
    pub build_seconds: f64,
    pub size_bytes: usize,
    pub queries: usize,
    /// The largest K asked for: every query fetched this many.
    pub k: usize,
    /// Mean overlap of the index's top K with the exact top K, per K.
    pub recall_vs_exact: BTreeMap<usize, f64>,
    /// Every metric of the evaluator for the held-out items through the
    /// index (an item beyond the `k` fetched counts as not retrieved).
    pub through_index: Metrics,
    /// The same metrics by exact search, for comparison.
    pub exact: Metrics,
    /// Queries timed one at a time on one thread (latency and one-thread q/s).
    pub timed_queries: usize,
    pub queries_per_second_one_thread: f64,
    pub queries_per_second_all_threads: f64,
    pub threads: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Beyond-accuracy measures of the lists the index served, cut at the
    /// evaluator's first cutoff (`novelty@10`, `catalog_coverage@10`, ...;
    /// see [`beyond_accuracy`]).
    pub beyond: Metrics,
}

impl Serving {
    /// Flat metrics for trackers, under `serving/`.
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        m.insert("serving/build_seconds".into(), self.build_seconds);
        m.insert("serving/size_bytes".into(), self.size_bytes as f64);
        for (k, v) in &self.recall_vs_exact {
            m.insert(format!("serving/recall_vs_exact@{k}"), *v);
        }
        for (k, v) in &self.through_index {
            m.insert(format!("serving/test/{k}"), *v);
        }
        for (k, v) in &self.beyond {
            m.insert(format!("serving/{k}"), *v);
        }
        m.insert("serving/qps_one_thread".into(), self.queries_per_second_one_thread);
        m.insert("serving/qps_all_threads".into(), self.queries_per_second_all_threads);
        m.insert("serving/p50_ms".into(), self.p50_ms);
        m.insert("serving/p99_ms".into(), self.p99_ms);
        m
    }
}

/// Queries timed one at a time on one thread for latency, evenly spread
/// over the test users: enough for a stable p99 without serving everyone a
/// second time.
const LATENCY_QUERIES: usize = 2000;
/// Queries per `search_batch` call in the all-threads pass.
const CHUNK: usize = 256;
/// Answers fetched per query when the evaluator names no cutoff.
const DEFAULT_K: usize = 100;

/// Serves one query per case through `index`, already built over `items`
/// in `build_seconds` (user row `i` for case `i`), excluding each user's
/// seen items, and returns the measures with each query's served list (the
/// evaluator's largest cutoff long). Every query is answered
/// once through the index (all threads) and once by exact search (blocked
/// GEMM); a sample of them is timed alone for latency. Memory held is
/// O(queries x k), never O(queries x items).
pub fn measure(
    index: &dyn Index,
    build_seconds: f64,
    items: &Matrix,
    users: &Matrix,
    cases: &[EvalCase<'_>],
    evaluator: &dyn Evaluator,
) -> Result<(Serving, Vec<Vec<ItemIdx>>)> {
    if users.rows != cases.len() {
        bail!("{} user vectors for {} cases", users.rows, cases.len());
    }
    if users.cols != items.cols {
        bail!("user vectors have {} dimensions but item vectors have {}", users.cols, items.cols);
    }
    let ks = evaluator.cutoffs();
    let k = ks.last().copied().unwrap_or(DEFAULT_K);

    // One thread: a sample of queries, each timed on its own.
    let timed = cases.len().min(LATENCY_QUERIES);
    let mut latencies = Vec::with_capacity(timed);
    let one_started = Instant::now();
    for s in 0..timed {
        let i = s * cases.len() / timed;
        let t = Instant::now();
        index.search(users.row(i), k, cases[i].seen).with_context(|| format!("query {i}"))?;
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let one_thread = one_started.elapsed().as_secs_f64();

    // All threads: every query, in chunks spread over the cores; the answers
    // (k each) are kept for the quality numbers.
    let d = users.cols;
    let all_started = Instant::now();
    let chunks: Vec<Vec<Vec<(ItemIdx, f32)>>> = users
        .data
        .par_chunks(CHUNK * d.max(1))
        .enumerate()
        .map(|(c, rows)| {
            let first = c * CHUNK;
            let queries = Matrix::from_vec(rows.len() / d.max(1), d, rows.to_vec());
            let excludes: Vec<&[ItemIdx]> = cases[first..first + queries.rows].iter().map(|c| c.seen).collect();
            let mut answers = index
                .search_batch(&queries, k, &excludes)
                .with_context(|| format!("queries {first}..{} (one chunk of the test users)", first + queries.rows))?;
            // An index may hand back lists with spare capacity; keep k each.
            for a in &mut answers {
                a.truncate(k);
                a.shrink_to_fit();
            }
            Ok(answers)
        })
        .collect::<Result<_>>()?;
    let all_threads = all_started.elapsed().as_secs_f64();
    let served: Vec<Vec<(ItemIdx, f32)>> = chunks.into_iter().flatten().collect();
    if served.len() != cases.len() {
        bail!("the index answered {} of {} queries", served.len(), cases.len());
    }

    let exact = exact_top_k(items, users, k, |i| cases[i].seen).context("exact search")?;
    let mut recall_vs_exact = BTreeMap::new();
    let n = cases.len().max(1) as f64;
    for &cut in &ks {
        let overlap: f64 = served
            .iter()
            .zip(&exact)
            .map(|(a, e)| {
                let truth: Vec<ItemIdx> = e.iter().take(cut).map(|p| p.0).collect();
                if truth.is_empty() {
                    return 1.0;
                }
                a.iter().take(cut).filter(|p| truth.contains(&p.0)).count() as f64 / truth.len() as f64
            })
            .sum();
        recall_vs_exact.insert(cut, overlap / n);
    }
    let (mut through_index, mut exact_metrics) = (Metrics::new(), Metrics::new());
    for (out, lists) in [(&mut through_index, &served), (&mut exact_metrics, &exact)] {
        let ranks: Vec<u64> = lists
            .iter()
            .zip(cases)
            .map(|(list, case)| list.iter().position(|p| p.0 == case.target).map_or(u64::MAX, |r| r as u64))
            .collect();
        for metric in evaluator.metric_names() {
            let values: Option<Vec<f64>> = ranks.iter().map(|&r| evaluator.metric_at_rank(&metric, r)).collect();
            if let Some(values) = values {
                out.insert(metric, values.iter().sum::<f64>() / n);
            }
        }
    }
    let mut sorted = latencies;
    sorted.sort_by(f64::total_cmp);
    let pct =
        |q: f64| sorted.get(((sorted.len() as f64 * q).ceil() as usize).saturating_sub(1)).copied().unwrap_or(0.0);
    Ok(Serving {
        build_seconds,
        size_bytes: index.size_bytes(),
        queries: cases.len(),
        k,
        recall_vs_exact,
        through_index,
        exact: exact_metrics,
        timed_queries: timed,
        queries_per_second_one_thread: timed as f64 / one_thread.max(1e-12),
        queries_per_second_all_threads: cases.len() as f64 / all_threads.max(1e-12),
        threads: threads(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        beyond: Metrics::new(),
    })
    .map(|serving| {
        let lists = served.iter().map(|l| l.iter().map(|p| p.0).collect()).collect();
        (serving, lists)
    })
}

/// What the beyond-accuracy measures read about the catalog.
pub struct Catalog<'a> {
    /// The item vectors the lists were served from (embedding diversity).
    pub items: &'a Matrix,
    /// Each item's categories as small ids (empty lists when the dataset
    /// has none).
    pub categories: &'a [Vec<u32>],
    pub n_categories: usize,
    /// Training positives per item (novelty).
    pub counts: &'a [u64],
}

/// Intra-list diversity (by embedding, and by categories when there are
/// any), category coverage, catalog coverage, novelty and the Gini index of
/// exposure of `lists` (each user's top `cut`), keyed `<measure>@<cut>`.
pub fn beyond_accuracy(lists: &[Vec<ItemIdx>], cut: usize, catalog: &Catalog<'_>) -> Metrics {
    use funnel_eval_full_ranking::beyond;
    let vectors: Vec<&[f32]> = (0..catalog.items.rows).map(|i| catalog.items.row(i)).collect();
    let n = catalog.items.rows;
    let mut m = Metrics::new();
    m.insert(format!("ild_embedding@{cut}"), beyond::intra_list_diversity_embedding(lists, &vectors));
    if catalog.n_categories > 0 {
        m.insert(format!("ild_categories@{cut}"), beyond::intra_list_diversity_categories(lists, catalog.categories));
        m.insert(
            format!("category_coverage@{cut}"),
            beyond::category_coverage(lists, catalog.categories, catalog.n_categories),
        );
    }
    m.insert(format!("catalog_coverage@{cut}"), beyond::catalog_coverage(lists, n));
    m.insert(format!("novelty@{cut}"), beyond::novelty(lists, catalog.counts));
    m.insert(format!("gini@{cut}"), beyond::gini_of_exposure(lists, n));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An index that returns the exact answer with one deliberate miss: the
    /// best item is dropped, so overlap and end-to-end recall fall by known
    /// amounts.
    struct DropsTheBest {
        items: Option<Matrix>,
    }

    impl Index for DropsTheBest {
        fn build(&mut self, items: &Matrix) -> Result<()> {
            self.items = Some(items.clone());
            Ok(())
        }
        fn search(&self, query: &[f32], k: usize, exclude: &[ItemIdx]) -> Result<Vec<(ItemIdx, f32)>> {
            let items = self.items.as_ref().unwrap();
            let users = Matrix::from_vec(1, query.len(), query.to_vec());
            let case = EvalCase { seen: exclude, target: 0 };
            let mut top = exact_top_k(items, &users, k + 1, |_| case.seen).unwrap().remove(0);
            top.remove(0);
            top.truncate(k);
            Ok(top)
        }
        fn size_bytes(&self) -> usize {
            7
        }
        fn save(&self, _: &std::path::Path) -> Result<Vec<std::path::PathBuf>> {
            Ok(vec![])
        }
        fn load(&mut self, _: &std::path::Path) -> Result<()> {
            Ok(())
        }
    }

    /// An evaluator the core knows nothing of: hits in the top 1 and 2, and
    /// a made-up `inverse` metric; serving reports whatever it names.
    struct HitsAt;

    impl Evaluator for HitsAt {
        fn selection_metric(&self) -> &str {
            "recall@1"
        }
        fn metric_names(&self) -> Vec<String> {
            vec!["recall@1".into(), "recall@2".into(), "ndcg@2".into(), "inverse".into()]
        }
        fn metric_at_rank(&self, metric: &str, rank: u64) -> Option<f64> {
            let cut = |k: u64| f64::from(u8::from(rank < k));
            Some(match metric {
                "recall@1" => cut(1),
                "recall@2" => cut(2),
                "ndcg@2" => cut(2) / ((rank.min(1) + 2) as f64).log2(),
                "inverse" => 1.0 / (rank as f64 + 1.0),
                _ => return None,
            })
        }
        fn evaluate(&self, _: &Matrix, _: &Matrix, _: &[EvalCase<'_>]) -> Result<funnel_api::Evaluation> {
            unimplemented!("serving never evaluates")
        }
        fn evaluate_scores(
            &self,
            _: &dyn funnel_api::CaseScorer,
            _: usize,
            _: &[EvalCase<'_>],
        ) -> Result<funnel_api::Evaluation> {
            unimplemented!("serving never evaluates")
        }
    }

    #[test]
    fn known_answers_for_an_index_that_misses_the_best_item() {
        // Items on a line: item i = (i, 1). User (1, 0) ranks 4 > 3 > 2 > 1 > 0.
        let items = Matrix::from_vec(5, 2, vec![0., 1., 1., 1., 2., 1., 3., 1., 4., 1.]);
        let users = Matrix::from_vec(2, 2, vec![1., 0., 1., 0.]);
        let seen_none: [ItemIdx; 0] = [];
        let seen_four = [4];
        // Case 0: target 4 (exact rank 0, missed by the index).
        // Case 1: 4 seen, target 2 (exact rank 1; the index drops 3, so rank 0).
        let cases = [EvalCase { seen: &seen_none, target: 4 }, EvalCase { seen: &seen_four, target: 2 }];
        let mut index = DropsTheBest { items: None };
        index.build(&items).unwrap();
        let (s, lists) = measure(&index, 0.5, &items, &users, &cases, &HitsAt).unwrap();
        assert_eq!(lists.len(), cases.len());
        assert_eq!(s.build_seconds, 0.5);
        assert_eq!(s.k, 2);
        assert_eq!(s.size_bytes, 7);
        assert_eq!(s.queries, 2);
        // Top 1: index {3} vs exact {4}; {2} vs {3}: no overlap.
        assert_eq!(s.recall_vs_exact[&1], 0.0);
        // Top 2: {3,2} vs {4,3} and {2,1} vs {3,2}: half each.
        assert_eq!(s.recall_vs_exact[&2], 0.5);
        assert_eq!(s.exact["recall@1"], 0.5);
        assert_eq!(s.exact["recall@2"], 1.0);
        assert_eq!(s.through_index["recall@1"], 0.5);
        assert_eq!(s.through_index["recall@2"], 0.5);
        assert!((s.exact["ndcg@2"] - (1.0 + 1.0 / 3f64.log2()) / 2.0).abs() < 1e-12);
        // Exact ranks 0 and 1; through the index, not retrieved and 0.
        assert_eq!(s.exact["inverse"], 0.75);
        assert!((s.through_index["inverse"] - 0.5).abs() < 1e-12);
        assert!(s.queries_per_second_one_thread > 0.0 && s.p99_ms >= s.p50_ms);
        assert!(s.metrics().contains_key("serving/recall_vs_exact@2"));
    }

    #[test]
    fn beyond_accuracy_names_each_measure_at_the_cut_and_skips_categories_when_there_are_none() {
        let items = Matrix::from_vec(3, 2, vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
        let lists = vec![vec![0, 1], vec![0, 2]];
        let counts = [3, 1, 0];
        let none: Vec<Vec<u32>> = vec![Vec::new(); 3];
        let plain =
            beyond_accuracy(&lists, 2, &Catalog { items: &items, categories: &none, n_categories: 0, counts: &counts });
        let keys: Vec<&str> = plain.keys().map(String::as_str).collect();
        assert_eq!(keys, ["catalog_coverage@2", "gini@2", "ild_embedding@2", "novelty@2"]);
        assert!((plain["catalog_coverage@2"] - 1.0).abs() < 1e-12);
        let cats = vec![vec![0], vec![1], vec![0, 1]];
        let with =
            beyond_accuracy(&lists, 2, &Catalog { items: &items, categories: &cats, n_categories: 2, counts: &counts });
        assert!((with["category_coverage@2"] - 1.0).abs() < 1e-12, "{with:?}");
        assert!(with.contains_key("ild_categories@2"));
    }
}
