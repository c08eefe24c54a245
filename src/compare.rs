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

/// The report: title, intro, the table (the runs, then the first run's
/// baselines, which every run of the same split shares), and the reading
/// (kept from `previous`).
pub fn render(title: &str, intro: &str, runs: &[RunRecord], previous: Option<&str>) -> String {
    let mut s = format!("# {title}\n\n{}\n\n", intro.trim());
    // The columns are the first run's evaluator's headline metrics, as that
    // run recorded them: the comparison names no metric itself.
    let columns: Vec<String> = runs
        .first()
        .map(|r| {
            if r.metrics.headline_metrics.is_empty() {
                r.metrics.test.keys().take(4).cloned().collect()
            } else {
                r.metrics.headline_metrics.clone()
            }
        })
        .unwrap_or_default();
    s.push_str("| experiment | model | sampler |");
    for c in &columns {
        s.push_str(&format!(" test {c} |"));
    }
    s.push_str(" parameters | examples/s | epochs to best |\n");
    s.push_str(&format!("|---|---|---|{}---|---|---|\n", "---|".repeat(columns.len())));
    let cell = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.4}"));
    for r in runs {
        let m = &r.metrics;
        s.push_str(&format!("| {} | {} | {} |", m.experiment, m.model, m.sampler));
        for c in &columns {
            s.push_str(&format!(" {} |", cell(r.test(c))));
        }
        s.push_str(&format!(" {} | {:.0} | {} of {} |\n", m.parameters, m.examples_per_second, m.best_epoch, m.epochs));
    }
    let baselines = runs.first().map(|r| &r.metrics.baselines);
    for (name, b) in baselines.into_iter().flatten() {
        s.push_str(&format!("| {name} (baseline) | {} | none |", if b.kind.is_empty() { name } else { &b.kind }));
        for c in &columns {
            s.push_str(&format!(" {} |", cell(b.test.get(c).copied())));
        }
        s.push_str(&format!(" {} | n/a | n/a |\n", b.parameters));
    }
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
                "baselines": {"most_popular": {"type": "most_popular", "recall@10": 0.05, "recall@50": 0.15,
                    "ndcg@10": 0.02, "mrr": 0.03, "parameters": 3706}}
            }))
            .unwrap(),
        }
    }

    #[test]
    fn tables_every_run_and_keeps_the_reading() {
        let first = render("T", "Intro.", &[run("a", 0.1), run("b", 0.2)], None);
        assert!(
            first.contains("| a | youtube_dnn | mixed | 0.1000 | 0.3000 | 0.0700 | 0.0600 | 1000 | 12346 | 8 of 10 |"),
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
        let second = render("T", "Intro.", &[run("a", 0.15)], Some(&edited));
        assert!(second.contains("Mixed wins.") && second.contains("| a | youtube_dnn | mixed | 0.1500 |"), "{second}");
    }
}
