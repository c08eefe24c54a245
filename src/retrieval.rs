//! `[retrieval]`: several candidate generators feeding one merged candidate
//! set per user, the way a production funnel retrieves before it ranks.
//!
//! ```toml
//! [retrieval]
//! candidates = 200          # per user, after merging
//! [[retrieval.sources]]
//! type = "model"            # the trained model through [index]
//! quota = 150
//! [[retrieval.sources]]
//! type = "covisitation"     # any baseline, with its parameters
//! quota = 50
//! ```
//!
//! Each source proposes its best `candidates` items for a test user (seen
//! items excluded). Merging takes each source's best `quota` in declared
//! order, skipping items an earlier source already gave, then backfills
//! from the sources' next-best items, in declared order, until there are
//! `candidates` (fewer only when every source runs dry). A candidate's
//! relevance is its score min-max normalised within the list a source
//! proposed (best 1, worst 0; a list of equal scores is all 1), so scores
//! of different scales compare, and the highest such value when several
//! sources proposed it. The list a user is shown is the merged
//! candidates by relevance (ties in merge order), cut at the evaluator's
//! first cutoff, and is measured for accuracy and beyond.

use anyhow::{bail, Context, Result};
use funnel_api::{ComponentKind, Evaluator, ItemIdx, Metrics, Registry};
use serde::{Deserialize, Serialize};

/// The source that is the trained model, searched through `[index]`.
pub const MODEL_SOURCE: &str = "model";

/// `[retrieval]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrievalSpec {
    /// Candidates per user after merging.
    pub candidates: usize,
    /// `[[retrieval.sources]]`, in merge order.
    pub sources: Vec<SourceSpec>,
}

/// One `[[retrieval.sources]]` entry: `type` (`model` or a baseline type),
/// `quota`, and the baseline's own parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceSpec {
    #[serde(rename = "type")]
    pub kind: String,
    pub quota: usize,
    #[serde(flatten)]
    pub params: toml::Table,
}

impl RetrievalSpec {
    /// Checks what can be checked from the file alone, and resolves each
    /// baseline source's parameters against the registry (defaults filled).
    pub fn resolve(&mut self, registry: &Registry) -> Result<()> {
        if self.candidates == 0 {
            bail!("[retrieval] candidates: must be at least 1");
        }
        if self.sources.is_empty() {
            bail!("[retrieval]: no [[retrieval.sources]]; name at least one (type = \"model\" is the trained model)");
        }
        let total: usize = self.sources.iter().map(|s| s.quota).sum();
        if total > self.candidates {
            bail!(
                "[retrieval]: the sources' quotas add up to {total}, more than candidates = {}; lower a quota or \
                 raise candidates",
                self.candidates
            );
        }
        for (i, s) in self.sources.iter_mut().enumerate() {
            let within = || format!("[[retrieval.sources]] #{} type = \"{}\"", i + 1, s.kind);
            if s.quota == 0 {
                bail!("{}: quota must be at least 1", within());
            }
            if s.kind == MODEL_SOURCE {
                if !s.params.is_empty() {
                    let keys: Vec<&String> = s.params.keys().collect();
                    bail!("{}: the model source takes only `quota`, found {keys:?}", within());
                }
                continue;
            }
            if registry.info(ComponentKind::Baseline, &s.kind).is_none() {
                let known: Vec<String> = registry
                    .plugins()
                    .into_iter()
                    .filter(|p| p.kind == ComponentKind::Baseline)
                    .map(|p| format!("\"{}\"", p.name))
                    .collect();
                bail!(
                    "{}: unknown source; a source is \"{MODEL_SOURCE}\" (the trained model through [index]) or a \
                     baseline type: {}",
                    within(),
                    known.join(", ")
                );
            }
            let table = std::mem::take(&mut s.params);
            s.params = registry.resolve(ComponentKind::Baseline, &s.kind, table.clone()).with_context(within)?;
        }
        Ok(())
    }
}

/// One merged candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub item: ItemIdx,
    /// The source (index into `sources`) that gave it.
    pub source: usize,
    /// Its score normalised within a source's list, in [0, 1]: the highest
    /// of any source that proposed it.
    pub relevance: f32,
}

/// Min-max normalised scores of one source's list (best first): best 1,
/// worst 0, all 1 when every score is equal.
pub fn normalise(list: &[(ItemIdx, f32)]) -> Vec<f32> {
    let (lo, hi) = list.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &(_, s)| (lo.min(s), hi.max(s)));
    list.iter().map(|&(_, s)| if hi > lo { (s - lo) / (hi - lo) } else { 1.0 }).collect()
}

/// Merges one user's source lists (each best first, seen items already
/// excluded): every source's best `quotas[s]` new items in source order,
/// then backfill from each source's next items in source order, up to
/// `candidates`; each with the highest normalised score any list gives it.
pub fn merge(lists: &[Vec<(ItemIdx, f32)>], quotas: &[usize], candidates: usize) -> Vec<Candidate> {
    // An item several sources propose counts as relevant as the most any of
    // them rates it.
    let mut best: std::collections::HashMap<ItemIdx, f32> = std::collections::HashMap::new();
    for list in lists {
        for (&(item, _), r) in list.iter().zip(normalise(list)) {
            let e = best.entry(item).or_insert(r);
            *e = e.max(r);
        }
    }
    let mut chosen: Vec<Candidate> = Vec::with_capacity(candidates);
    let mut taken = std::collections::HashSet::with_capacity(candidates);
    let mut next = vec![0usize; lists.len()];
    let mut take = |s: usize, limit: usize, chosen: &mut Vec<Candidate>, next: &mut Vec<usize>| {
        let mut got = 0;
        while got < limit && chosen.len() < candidates && next[s] < lists[s].len() {
            let (item, _) = lists[s][next[s]];
            let relevance = best[&item];
            next[s] += 1;
            if taken.insert(item) {
                chosen.push(Candidate { item, source: s, relevance });
                got += 1;
            }
        }
    };
    for (s, &quota) in quotas.iter().enumerate() {
        take(s, quota, &mut chosen, &mut next);
    }
    for s in 0..lists.len() {
        take(s, usize::MAX, &mut chosen, &mut next);
    }
    chosen
}

/// The list a user is shown without a re-ranker: the candidates by
/// relevance, ties in merge order, cut at `k`.
pub fn by_relevance(candidates: &[Candidate], k: usize) -> Vec<ItemIdx> {
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(|a, b| b.relevance.total_cmp(&a.relevance));
    order.into_iter().take(k).map(|c| c.item).collect()
}

/// The evaluator's metrics of shown lists (a target beyond a list is not
/// retrieved), for the cutoffs the lists can answer (at most their length)
/// and those without one (MRR).
pub fn list_metrics(lists: &[Vec<ItemIdx>], targets: &[ItemIdx], shown: usize, evaluator: &dyn Evaluator) -> Metrics {
    let ranks: Vec<u64> =
        lists.iter().zip(targets).map(|(l, t)| l.iter().position(|i| i == t).map_or(u64::MAX, |r| r as u64)).collect();
    let n = ranks.len().max(1) as f64;
    let mut out = Metrics::new();
    for metric in evaluator.metric_names() {
        let cutoff = metric.split_once('@').and_then(|(_, k)| k.parse::<usize>().ok());
        if cutoff.is_some_and(|k| k > shown) {
            continue;
        }
        let values: Option<Vec<f64>> = ranks.iter().map(|&r| evaluator.metric_at_rank(&metric, r)).collect();
        if let Some(values) = values {
            out.insert(metric, values.iter().sum::<f64>() / n);
        }
    }
    out
}

/// Measures of the lists users are shown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Shown {
    /// Accuracy (the evaluator's metrics at cutoffs the lists can answer).
    pub metrics: Metrics,
    /// Beyond-accuracy measures.
    pub beyond: Metrics,
}

/// What the retrieval stage measured, for `metrics.json`, the report and
/// the tracker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retrieved {
    pub candidates: usize,
    /// Per source: its name, quota, and the mean number of candidates per
    /// user it gave (quota plus backfill, less duplicates of earlier sources).
    pub sources: Vec<(String, usize, f64)>,
    /// Share of test users whose held-out item is among their candidates.
    pub candidate_recall: f64,
    /// Length of the list shown.
    pub shown: usize,
    /// The candidates by relevance.
    pub merged: Shown,
    /// The model's own top `shown` through the index, for comparison.
    pub model_alone: Shown,
    /// The candidates as `[rerank]` orders them, when declared.
    pub reranked: Option<Shown>,
    /// Seconds `[rerank]` took for every test user.
    pub rerank_seconds: f64,
    /// The re-ranker's trade-off parameter (`beta`) and each value's lists.
    pub tradeoff_parameter: String,
    pub tradeoff: Vec<(f64, Shown)>,
    pub seconds: f64,
}

impl Retrieved {
    /// Flat metrics for trackers, under `retrieval/` (the merged lists) and
    /// `rerank/` (the re-ranked ones).
    pub fn tracker_metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        m.insert("retrieval/candidate_recall".into(), self.candidate_recall);
        for (k, v) in self.merged.metrics.iter().chain(&self.merged.beyond) {
            m.insert(format!("retrieval/{k}"), *v);
        }
        if let Some(r) = &self.reranked {
            for (k, v) in r.metrics.iter().chain(&r.beyond) {
                m.insert(format!("rerank/{k}"), *v);
            }
            m.insert("rerank/seconds".into(), self.rerank_seconds);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevance_is_min_max_within_each_source() {
        assert_eq!(normalise(&[(4, 3.0), (1, 2.0), (7, -1.0)]), vec![1.0, 0.75, 0.0]);
        assert_eq!(normalise(&[(4, 2.0), (1, 2.0)]), vec![1.0, 1.0]);
        assert!(normalise(&[]).is_empty());
    }

    #[test]
    fn quotas_in_order_without_duplicates_then_backfill() {
        let model = vec![(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)];
        let other = vec![(2, 10.0), (5, 6.0), (6, 2.0)];
        // Quotas 2 and 2 of 5: model gives 1, 2; other skips 2, gives 5, 6;
        // backfill from the model: 3.
        let merged = merge(&[model.clone(), other.clone()], &[2, 2], 5);
        let items: Vec<(ItemIdx, usize)> = merged.iter().map(|c| (c.item, c.source)).collect();
        assert_eq!(items, vec![(1, 0), (2, 0), (5, 1), (6, 1), (3, 0)]);
        // Relevance normalised within a source's list: 5 is (6 - 2) / (10 - 2)
        // = 0.5 there; 2 is 2/3 in the model's list but 1 in the other's.
        assert_eq!(merged[2].relevance, 0.5);
        assert!((merged[4].relevance - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(merged[1].relevance, 1.0);
        // A short source is backfilled by the others; all dry stops early.
        let short = merge(&[vec![(9, 1.0)], other.clone()], &[3, 1], 4);
        assert_eq!(short.iter().map(|c| c.item).collect::<Vec<_>>(), vec![9, 2, 5, 6]);
        assert_eq!(merge(&[vec![(9, 1.0)]], &[1], 3).len(), 1);
        // Shown by relevance, ties in merge order.
        assert_eq!(by_relevance(&merged, 3), vec![1, 2, 5]);
    }
}
