//! A comparison report over finished runs: one row per run, read from each
//! run folder's `metrics.json`.
//!
//! A hand-written reading of the numbers lives between [`READING_START`] and
//! [`READING_END`] in the output file and survives regeneration.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::run_folder::RunMetrics;

pub const READING_START: &str = "<!-- reading: kept when the report is regenerated -->";
pub const READING_END: &str = "<!-- /reading -->";

/// One finished run as the comparison sees it.
#[derive(Debug, Clone)]
pub struct RunRecord {
    pub run_dir: PathBuf,
    pub metrics: RunMetrics,
}

impl RunRecord {
    pub fn read(run_dir: &Path) -> Result<RunRecord> {
        Ok(RunRecord { run_dir: run_dir.to_path_buf(), metrics: RunMetrics::read(run_dir)? })
    }

    fn test(&self, metric: &str) -> Option<f64> {
        self.metrics.test.get(metric).copied()
    }
}

/// Wall time of training and validating up to the best epoch, from the
/// run's stages; `None` for runs that recorded none.
fn minutes_to_best(m: &RunMetrics) -> Option<f64> {
    let epoch_of = |name: &str| -> Option<usize> {
        let (kind, n) = name.split_once(' ')?;
        matches!(kind, "epoch" | "validation").then(|| n.parse().ok())?
    };
    let seconds: Vec<f64> = m
        .stages
        .iter()
        .filter(|st| epoch_of(&st.name).is_some_and(|e| e <= m.best_epoch))
        .map(|st| st.seconds)
        .collect();
    (!seconds.is_empty()).then(|| seconds.iter().sum::<f64>() / 60.0)
}

/// The report: title, intro, the table (the runs, then the first run's
/// baselines, which every run of the same split shares), and the reading
/// (kept from `previous`). The metric columns are `columns` (test metric
/// keys, e.g. `outcome/loved/recall@10`), or the first run's headline
/// metrics when empty.
pub fn render(title: &str, intro: &str, runs: &[RunRecord], columns: &[String], previous: Option<&str>) -> String {
    let mut s = format!("# {title}\n\n{}\n\n", intro.trim());
    // By default the first run's evaluator's headline metrics, as that run
    // recorded them: the comparison names no metric itself.
    let columns: Vec<String> = if columns.is_empty() {
        runs.first()
            .map(|r| {
                if r.metrics.headline_metrics.is_empty() {
                    r.metrics.test.keys().take(4).cloned().collect()
                } else {
                    r.metrics.headline_metrics.clone()
                }
            })
            .unwrap_or_default()
    } else {
        columns.to_vec()
    };
    s.push_str("| experiment | model | sampler |");
    for c in &columns {
        s.push_str(&format!(" test {c} |"));
    }
    s.push_str(" parameters | examples/s | epochs to best | minutes to best |\n");
    s.push_str(&format!("|---|---|---|{}---|---|---|---|\n", "---|".repeat(columns.len())));
    let cell = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    for r in runs {
        let m = &r.metrics;
        s.push_str(&format!("| {} | {} | {} |", m.experiment, m.model, m.sampler));
        for c in &columns {
            s.push_str(&format!(" {} |", cell(r.test(c))));
        }
        let to_best = minutes_to_best(m).map_or("n/a".to_string(), |t| format!("{t:.1}"));
        s.push_str(&format!(
            " {} | {:.0} | {} of {} | {to_best} |\n",
            m.parameters, m.examples_per_second, m.best_epoch, m.epochs
        ));
    }
    let baselines = runs.first().map(|r| &r.metrics.baselines);
    // A baseline with none of the columns (e.g. per-outcome metrics) says nothing here.
    let shown = |b: &crate::run_folder::BaselineResult| columns.iter().any(|c| b.test.contains_key(c));
    for (name, b) in baselines.into_iter().flatten().filter(|(_, b)| shown(b)) {
        s.push_str(&format!("| {name} (baseline) | {} | none |", if b.kind.is_empty() { name } else { &b.kind }));
        for c in &columns {
            s.push_str(&format!(" {} |", cell(b.test.get(c).copied())));
        }
        s.push_str(&format!(" {} | n/a | n/a | n/a |\n", b.parameters));
    }
    s.push_str(&spread_table(runs, &columns));
    s.push_str(&funnel_table(runs));
    s.push_str("\nRows, in order:\n\n");
    for r in runs {
        s.push_str(&format!("- `{}`: {}\n", r.metrics.experiment, r.metrics.description));
    }
    if baselines.is_some_and(|b| !b.is_empty()) {
        s.push_str(
            "- baselines: fitted on the first run's training examples and ranked on its test cases over the full \
             catalog; they train nothing, so they have no examples/s or epochs.\n",
        );
    }
    let reading = previous.and_then(kept_reading).unwrap_or_else(|| "(No reading written yet.)".to_string());
    s.push_str(&format!("\n## Reading\n\n{READING_START}\n{}\n{READING_END}\n", reading.trim()));
    s
}

/// When several runs share an experiment name (seeds of one
/// configuration): each name's mean ± sample standard deviation over its
/// runs, per column; empty when every name is one run.
fn spread_table(runs: &[RunRecord], columns: &[String]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for r in runs {
        if !names.contains(&r.metrics.experiment.as_str()) {
            names.push(&r.metrics.experiment);
        }
    }
    fn of<'r>(runs: &'r [RunRecord], name: &'r str) -> impl Iterator<Item = &'r RunRecord> {
        runs.iter().filter(move |r| r.metrics.experiment == name)
    }
    if names.iter().all(|n| of(runs, n).count() < 2) {
        return String::new();
    }
    let mut s =
        String::from("\nMean ± standard deviation over the runs of each experiment (seeds):\n\n| experiment | runs |");
    for c in columns {
        s.push_str(&format!(" test {c} |"));
    }
    s.push_str(&format!("\n|---|---|{}\n", "---|".repeat(columns.len())));
    for name in names {
        s.push_str(&format!("| {name} | {} |", of(runs, name).count()));
        for c in columns {
            let values: Vec<f64> = of(runs, name).filter_map(|r| r.test(c)).collect();
            let cell = match values.len() {
                0 => "n/a".to_string(),
                1 => format!("{:.4}", values[0]),
                n => {
                    let mean = values.iter().sum::<f64>() / n as f64;
                    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
                    format!("{mean:.4} ± {:.4}", var.sqrt())
                }
            };
            s.push_str(&format!(" {cell} |"));
        }
        s.push('\n');
    }
    s
}

/// Runs with `[retrieval]`: what users are shown from the merged candidates
/// (and re-ranked, when declared) beside the same model alone.
fn funnel_table(runs: &[RunRecord]) -> String {
    let funnels: Vec<(&RunRecord, &crate::retrieval::Retrieved)> =
        runs.iter().filter_map(|r| r.metrics.retrieval.as_ref().map(|f| (r, f))).collect();
    let Some((_, first)) = funnels.first() else { return String::new() };
    let k = first.shown;
    let mut s = format!(
        "\nRuns with `[retrieval]`, each user's shown top {k}: the model alone (through its index), the merged \
         candidates by relevance, and re-ranked when the run has `[rerank]`.\n\n\
         | experiment | sources (quota) | candidates holding the target | recall@{k} alone | merged | re-ranked | \
         catalog coverage@{k} alone | merged | re-ranked |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    let cell = |v: Option<&f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    let recall = format!("recall@{k}");
    let coverage = format!("catalog_coverage@{k}");
    for (r, f) in funnels {
        let sources: Vec<String> = f.sources.iter().map(|(name, quota, _)| format!("{name} ({quota})")).collect();
        let reranked = f.reranked.as_ref();
        s.push_str(&format!(
            "| {} | {} | {:.4} of {} | {} | {} | {} | {} | {} | {} |\n",
            r.metrics.experiment,
            sources.join(", "),
            f.candidate_recall,
            f.candidates,
            cell(f.model_alone.metrics.get(&recall)),
            cell(f.merged.metrics.get(&recall)),
            cell(reranked.and_then(|x| x.metrics.get(&recall))),
            cell(f.model_alone.beyond.get(&coverage)),
            cell(f.merged.beyond.get(&coverage)),
            cell(reranked.and_then(|x| x.beyond.get(&coverage))),
        ));
    }
    s
}

fn kept_reading(previous: &str) -> Option<String> {
    let start = previous.find(READING_START)? + READING_START.len();
    let end = start + previous[start..].find(READING_END)?;
    Some(previous[start..end].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(name: &str, recall: f64) -> RunRecord {
        RunRecord {
            run_dir: PathBuf::from(name),
            metrics: serde_json::from_value(json!({
                "experiment": name, "model": "youtube_dnn", "sampler": "mixed", "description": "d",
                "headline_metrics": ["recall@10", "recall@50", "ndcg@10", "mrr"],
                "test": {"recall@10": recall, "recall@50": 0.3, "ndcg@10": 0.07, "mrr": 0.06},
                "parameters": 1000, "examples_per_second": 12345.6, "best_epoch": 8, "epochs": 10,
                "stages": [{"name": "load", "seconds": 5.0}, {"name": "epoch 8", "seconds": 50.0},
                    {"name": "validation 8", "seconds": 10.0}, {"name": "epoch 9", "seconds": 50.0}],
                "baselines": {"most_popular": {"type": "most_popular", "recall@10": 0.05, "recall@50": 0.15,
                    "ndcg@10": 0.02, "mrr": 0.03, "parameters": 3706}}
            }))
            .unwrap(),
        }
    }

    #[test]
    fn runs_with_retrieval_get_a_funnel_table() {
        let mut funnel = run("f", 0.2);
        funnel.metrics.retrieval = Some(
            serde_json::from_value(json!({
                "candidates": 200, "shown": 10, "candidate_recall": 0.69,
                "sources": [["model", 150, 150.0], ["random_walk", 50, 50.0]],
                "model_alone": {"metrics": {"recall@10": 0.2}, "beyond": {"catalog_coverage@10": 0.5}},
                "merged": {"metrics": {"recall@10": 0.21}, "beyond": {"catalog_coverage@10": 0.6}}
            }))
            .unwrap(),
        );
        let text = render("T", "Intro.", &[run("a", 0.1), funnel], &[], None);
        assert!(
            text.contains(
                "| f | model (150), random_walk (50) | 0.6900 of 200 | 0.2000 | 0.2100 | n/a | 0.5000 | 0.6000 | n/a |"
            ),
            "{text}"
        );
        assert!(!render("T", "Intro.", &[run("a", 0.1)], &[], None).contains("[retrieval]"));
    }

    #[test]
    fn tables_every_run_and_keeps_the_reading() {
        let first = render("T", "Intro.", &[run("a", 0.1), run("b", 0.2)], &[], None);
        assert!(
            first.contains(
                "| a | youtube_dnn | mixed | 0.1000 | 0.3000 | 0.0700 | 0.0600 | 1000 | 12346 | 8 of 10 | 1.0 |"
            ),
            "{first}"
        );
        assert!(
            first.contains(
                "| most_popular (baseline) | most_popular | none | 0.0500 | 0.1500 | 0.0200 | 0.0300 | 3706 |"
            ),
            "{first}"
        );
        assert!(first.contains("(No reading written yet.)"));
        let edited = first.replace("(No reading written yet.)", "Mixed wins.");
        let second = render("T", "Intro.", &[run("a", 0.15)], &[], Some(&edited));
        assert!(second.contains("Mixed wins.") && second.contains("| a | youtube_dnn | mixed | 0.1500 |"), "{second}");
    }

    #[test]
    fn runs_sharing_a_name_get_their_mean_and_spread() {
        let text = render("T", "Intro.", &[run("a", 0.1), run("a", 0.2), run("b", 0.3)], &[], None);
        assert!(text.contains("| a | 2 | 0.1500 ± 0.0707 |"), "{text}");
        assert!(text.contains("| b | 1 | 0.3000 |"), "{text}");
        assert!(!render("T", "Intro.", &[run("a", 0.1), run("b", 0.2)], &[], None).contains("Mean ±"));
    }

    #[test]
    fn named_columns_replace_the_headline_and_missing_ones_say_so() {
        let columns = ["ndcg@10".to_string(), "disliked@10".to_string()];
        let text = render("T", "Intro.", &[run("a", 0.1)], &columns, None);
        assert!(
            text.contains("| experiment | model | sampler | test ndcg@10 | test disliked@10 | parameters |"),
            "{text}"
        );
        assert!(text.contains("| a | youtube_dnn | mixed | 0.0700 | n/a | 1000 |"), "{text}");
        let only_outcomes = ["outcome/loved/recall@10".to_string()];
        let text = render("T", "Intro.", &[run("a", 0.1)], &only_outcomes, None);
        assert!(!text.contains("(baseline)"), "a baseline with no column is left out:\n{text}");
    }
}
