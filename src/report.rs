//! The Markdown report of a run: a pure function of what the run measured.

use std::fmt::Write;

use anyhow::Result;

use funnel_api::{ExampleSet, LoadedDataset, Metrics};

use crate::experiment::ExperimentMeta;
use crate::run_folder::{self, BaselineResult, EpochRecord};
use crate::stages::StageTime;

/// Size of the data a run trained and evaluated on.
#[derive(Debug, Clone)]
pub struct DatasetStats {
    pub name: String,
    pub source: String,
    pub checksum: String,
    pub raw_rows: usize,
    pub users: usize,
    pub items: usize,
    pub positives: usize,
    pub train_examples: usize,
    pub validation_cases: usize,
    pub test_cases: usize,
    pub load_seconds: f64,
    /// Items with a title.
    pub titled_items: usize,
    /// Items with at least one category (genre).
    pub categorized_items: usize,
    /// Distinct categories, and the most common few.
    pub categories: usize,
    pub common_categories: Vec<String>,
    /// The split, as the features describe it.
    pub protocol: String,
    /// Positives meeting each declared outcome, in the dataset's order.
    pub outcomes: Vec<(String, usize)>,
    /// Rows of explicit negative feedback.
    pub feedback: usize,
}

impl DatasetStats {
    pub fn of(data: &LoadedDataset, examples: &ExampleSet, load_seconds: f64) -> DatasetStats {
        let mut counts: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
        for c in data.catalog.genres.iter().flatten() {
            *counts.entry(c.as_str()).or_default() += 1;
        }
        // Most items first, names breaking ties.
        let mut common: Vec<(std::cmp::Reverse<usize>, &str)> =
            counts.iter().map(|(c, n)| (std::cmp::Reverse(*n), *c)).collect();
        common.sort_unstable();
        DatasetStats {
            name: data.name.clone(),
            source: data.source.clone(),
            checksum: data.checksum.clone(),
            raw_rows: data.raw_rows,
            users: data.n_users(),
            items: data.n_items(),
            positives: data.interactions.len(),
            train_examples: examples.train.len(),
            validation_cases: examples.validation.len(),
            test_cases: examples.test.len(),
            load_seconds,
            titled_items: data.catalog.titles.iter().filter(|t| !t.is_empty()).count(),
            categorized_items: data.catalog.genres.iter().filter(|g| !g.is_empty()).count(),
            categories: counts.len(),
            common_categories: common.into_iter().take(5).map(|(_, c)| c.to_string()).collect(),
            protocol: examples.protocol.clone(),
            outcomes: data
                .outcomes
                .iter()
                .enumerate()
                .map(|(i, name)| {
                    (name.clone(), data.interactions.outcomes.iter().filter(|&&m| m & (1 << i) != 0).count())
                })
                .collect(),
            feedback: data.feedback.len(),
        }
    }

    /// Share of the user x item matrix without a positive.
    pub fn sparsity(&self) -> f64 {
        1.0 - self.positives as f64 / (self.users as f64 * self.items as f64).max(1.0)
    }
}

/// A user shown in the report with what the model recommends.
#[derive(Debug, Clone)]
pub struct SampleUser {
    pub user_id: String,
    /// Most recent first.
    pub recent: Vec<String>,
    /// The held-out next watch.
    pub target: String,
    /// Title and whether it is the held-out target.
    pub recommended: Vec<(String, bool)>,
}

#[derive(Debug, Clone)]
pub struct Report {
    pub experiment: ExperimentMeta,
    pub started: String,
    pub experiment_file: String,
    pub run_dir: String,
    pub resolved: String,
    pub dataset: DatasetStats,
    pub parameters: usize,
    pub selection_metric: String,
    pub epochs: Vec<EpochRecord>,
    pub best_epoch: usize,
    pub test: Metrics,
    /// The `[[baselines]]` on the same test cases, in file order.
    pub baselines: Vec<BaselineResult>,
    pub wall_seconds: f64,
    pub samples: Vec<SampleUser>,
    /// Charts as (caption, path relative to the report).
    pub plots: Vec<(String, String)>,
    /// The `[index]` type and how serving through it measured.
    pub serving: Option<(String, crate::serving::Serving)>,
    /// Wall time and peak memory of each stage, in run order.
    pub stages: Vec<StageTime>,
    /// The evaluator's headline metrics: the per-epoch and baseline columns.
    pub headline: Vec<String>,
    /// `[retrieval]`'s merged candidates and shown lists, when declared.
    pub retrieval: Option<crate::retrieval::Retrieved>,
}

/// Folder of a run's (or a sweep's) charts, beside its `report.md`.
pub const PLOTS: &str = "plots";

/// Writes `markdown` as `<folder>/report.md`, whose chart links point into
/// `<folder>/plots/`, and as `report_path` (under `reports/`), with those
/// charts copied into a folder named after the report file and the links
/// rewritten to it.
pub fn publish(
    markdown: &str,
    folder: &std::path::Path,
    charts: &[String],
    report_path: &std::path::Path,
) -> Result<()> {
    run_folder::write(&folder.join(run_folder::REPORT), markdown)?;
    let name = report_path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for chart in charts {
        let svg = std::fs::read_to_string(folder.join(PLOTS).join(chart))?;
        run_folder::write(&report_path.with_file_name(&name).join(chart), &svg)?;
    }
    run_folder::write(report_path, &markdown.replace(&format!("]({PLOTS}/"), &format!("]({name}/")))
}

impl Report {
    pub fn render(&self) -> String {
        let mut s = String::new();
        let d = &self.dataset;
        let e = &self.experiment;
        let _ = writeln!(s, "# {}\n", e.name);
        if !e.description.is_empty() {
            let _ = writeln!(s, "{}\n", e.description.trim());
        }
        let _ = writeln!(
            s,
            "Run started {} from `{}` (seed {}); files in `{}`.\n",
            self.started, self.experiment_file, e.seed, self.run_dir
        );

        let _ =
            writeln!(s, "## Test metrics (best epoch {} by validation {})\n", self.best_epoch, self.selection_metric);
        let _ = writeln!(s, "Full-catalog ranking of each user's test target (the protocol is under Dataset); items already seen are excluded.\n");
        let (overall, by_outcome): (Metrics, Metrics) =
            self.test.iter().map(|(k, v)| (k.clone(), *v)).partition(|(k, _)| !is_outcome_metric(k));
        s.push_str(&metric_table(&overall));
        s.push_str(&outcome_section(&by_outcome, &self.headline));
        if !self.baselines.is_empty() {
            s.push_str(&self.baseline_section());
        }

        let _ = writeln!(s, "\n## Dataset\n");
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| dataset | {} |", d.name);
        let _ = writeln!(s, "| source | `{}` |", d.source);
        let _ = writeln!(s, "| sha256 | `{}` |", d.checksum);
        let _ = writeln!(s, "| rows read | {} |", d.raw_rows);
        let _ = writeln!(s, "| users | {} |", d.users);
        let _ = writeln!(s, "| items | {} |", d.items);
        let _ = writeln!(s, "| positives | {} |", d.positives);
        let _ = writeln!(s, "| sparsity | {:.4} % |", d.sparsity() * 100.0);
        let _ = writeln!(s, "| training examples | {} |", d.train_examples);
        let _ = writeln!(s, "| validation / test cases | {} / {} |", d.validation_cases, d.test_cases);
        if !d.protocol.is_empty() {
            let _ = writeln!(s, "| protocol | {} |", d.protocol);
        }
        if !d.outcomes.is_empty() {
            let counts: Vec<String> = d.outcomes.iter().map(|(n, c)| format!("{n} {c}")).collect();
            let _ = writeln!(s, "| positives per outcome | {} |", counts.join(", "));
        }
        if d.feedback > 0 {
            let _ = writeln!(s, "| explicit negative feedback | {} rows |", d.feedback);
        }
        let _ = writeln!(s, "| items with a title | {} |", d.titled_items);
        if d.categories > 0 {
            let _ = writeln!(
                s,
                "| item categories | {} distinct on {} items; most common: {} |",
                d.categories,
                d.categorized_items,
                d.common_categories.join(", ")
            );
        }
        let _ = writeln!(s, "| load time | {:.2} s |", d.load_seconds);

        let _ = writeln!(s, "\n## Training\n");
        let train_secs: f64 = self.epochs.iter().map(|r| r.train_seconds).sum();
        let examples: f64 = self.epochs.iter().map(|r| r.examples_per_second * r.train_seconds).sum();
        let _ = writeln!(
            s,
            "{} parameters; {:.0} training examples/s on average; {:.1} s training, {:.1} s wall time in all.\n",
            self.parameters,
            examples / train_secs.max(1e-9),
            train_secs,
            self.wall_seconds
        );
        let targets = toml::from_str::<toml::Table>(&self.resolved)
            .ok()
            .and_then(|t| Some(t.get("train")?.get("targets")?.as_str()? == "all_positions"));
        if targets == Some(true) {
            let _ = writeln!(
                s,
                "Trained on every position of sequence windows (`targets = \"all_positions\"`): an example is one \
                 position, a training target, so examples/s counts positions.\n"
            );
        }
        let cols: Vec<&str> = self
            .headline
            .iter()
            .map(String::as_str)
            .filter(|c| self.epochs.first().is_some_and(|r| r.validation.contains_key(*c)))
            .collect();
        let _ = write!(s, "| epoch | loss | examples/s | seconds |");
        for c in &cols {
            let _ = write!(s, " valid {c} |");
        }
        let _ = write!(s, "\n|---|---|---|---|");
        for _ in &cols {
            let _ = write!(s, "---|");
        }
        s.push('\n');
        for r in &self.epochs {
            let mark = if r.epoch == self.best_epoch { " (best)" } else { "" };
            let _ = write!(
                s,
                "| {}{mark} | {:.4} | {:.0} | {:.1} |",
                r.epoch, r.loss, r.examples_per_second, r.train_seconds
            );
            for c in &cols {
                let _ = write!(s, " {:.4} |", r.validation[*c]);
            }
            s.push('\n');
        }

        for (caption, path) in &self.plots {
            let _ = writeln!(s, "\n![{caption}]({path})");
        }

        if let Some((kind, sv)) = &self.serving {
            let _ = writeln!(s, "\n## Serving through the index\n");
            let _ = writeln!(
                s,
                "`[index] type = \"{kind}\"` over the {} item vectors, queried once per test user for the top {} \
                 (seen items excluded). These numbers describe the index; the test metrics above are exact \
                 full-catalog ranking and never come from an index.\n",
                self.dataset.items, sv.k
            );
            // The headline's cut-off families (recall@, ndcg@ ...), per K.
            let mut families: Vec<&str> = Vec::new();
            for m in &self.headline {
                if let Some((family, _)) = m.split_once('@') {
                    if !families.contains(&family) {
                        families.push(family);
                    }
                }
            }
            let _ = write!(s, "| K | recall vs exact top K |");
            for f in &families {
                let _ = write!(s, " test {f}@K via index | exact |");
            }
            let _ = writeln!(s, "\n|---|---|{}", "---|---|".repeat(families.len()));
            for (k, overlap) in &sv.recall_vs_exact {
                let _ = write!(s, "| {k} | {overlap:.4} |");
                for f in &families {
                    let g = |m: &Metrics| m.get(&format!("{f}@{k}")).copied().unwrap_or(f64::NAN);
                    let _ = write!(s, " {:.4} | {:.4} |", g(&sv.through_index), g(&sv.exact));
                }
                s.push('\n');
            }
            let _ = writeln!(
                s,
                "\nBuild {:.2} s, {:.1} MB in memory; {:.0} queries/s on one thread ({} queries timed one at a time), \
                 {:.0} on {} threads ({} queries); latency p50 {:.3} ms, p99 {:.3} ms.",
                sv.build_seconds,
                sv.size_bytes as f64 / 1e6,
                sv.queries_per_second_one_thread,
                sv.timed_queries,
                sv.queries_per_second_all_threads,
                sv.threads,
                sv.queries,
                sv.p50_ms,
                sv.p99_ms,
            );
            if !sv.beyond.is_empty() {
                let _ = writeln!(
                    s,
                    "\nBeyond accuracy, over the lists served (each test user's top K, seen items excluded):\n"
                );
                let _ = writeln!(s, "| measure | value |\n|---|---|");
                for (name, v) in &sv.beyond {
                    let _ = writeln!(s, "| {name} | {v:.4} |");
                }
                let _ = writeln!(
                    s,
                    "\nild: intra-list diversity (1 - mean pairwise cosine of item vectors, or Jaccard of categories); \
                     category coverage: share of all categories in a list; catalog coverage: share of items shown to \
                     anyone; novelty: mean -log2 of an item's add-one-smoothed share of training positives; gini: \
                     concentration of exposure over items (0 even, towards 1 concentrated)."
                );
            }
        }

        if let Some(r) = &self.retrieval {
            s.push_str(&self.retrieval_section(r));
        }

        if !self.samples.is_empty() {
            let _ = writeln!(s, "\n## Sample recommendations\n");
            let _ = writeln!(
                s,
                "Top {} by the index for a few test users; **bold** is the held-out next watch.\n",
                self.samples[0].recommended.len()
            );
            for u in &self.samples {
                let _ = writeln!(s, "### User {}\n", u.user_id);
                let _ = writeln!(s, "Recently watched (newest first): {}\n", u.recent.join("; "));
                let _ = writeln!(s, "Next watch (held out): {}\n", u.target);
                for (i, (title, hit)) in u.recommended.iter().enumerate() {
                    if *hit {
                        let _ = writeln!(s, "{}. **{title}**", i + 1);
                    } else {
                        let _ = writeln!(s, "{}. {title}", i + 1);
                    }
                }
                s.push('\n');
            }
        }

        s.push_str(&self.stage_section());
        let _ = writeln!(s, "## Resolved configuration\n\n```toml\n{}\n```", self.resolved.trim_end());
        s
    }
}

impl Report {
    /// Where the wall time and memory went, stage by stage; epochs and their
    /// validations summed into one row each beside their largest peak.
    fn stage_section(&self) -> String {
        if self.stages.is_empty() {
            return String::new();
        }
        let mut rows: Vec<(String, f64, Option<u64>, usize)> = Vec::new();
        for st in &self.stages {
            let group = if st.name.starts_with("epoch ") {
                "training (every epoch)".to_string()
            } else if st.name.starts_with("validation ") {
                "validation (every epoch)".to_string()
            } else {
                st.name.clone()
            };
            match rows.iter_mut().find(|r| r.0 == group) {
                Some(r) => {
                    r.1 += st.seconds;
                    r.2 = r.2.max(st.peak_rss_bytes);
                    r.3 += 1;
                }
                None => rows.push((group, st.seconds, st.peak_rss_bytes, 1)),
            }
        }
        let total: f64 = rows.iter().map(|r| r.1).sum();
        let mut s = String::from("## Where the time went\n\n");
        let _ = writeln!(s, "| stage | seconds | share | peak memory |\n|---|---|---|---|");
        for (name, secs, peak, n) in &rows {
            let name = if *n > 1 { format!("{name}, {n} times") } else { name.clone() };
            let peak = peak.map_or("n/a".to_string(), |b| format!("{:.0} MB", b as f64 / 1e6));
            let _ = writeln!(s, "| {name} | {secs:.2} | {:.1} % | {peak} |", 100.0 * secs / total.max(1e-9));
        }
        s.push('\n');
        s
    }

    /// The model beside each baseline: recall and ndcg at every cutoff of the
    /// test metrics, size and fitting time.
    fn baseline_section(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n## Baselines\n");
        let _ = writeln!(
            s,
            "Ranked by the same evaluator on the same {} test cases over the full catalog (seen items excluded), \
             fitted on the training examples only; the model's row repeats the test metrics above.\n",
            self.dataset.test_cases
        );
        let _ = write!(s, "| ranker |");
        for m in &self.headline {
            let _ = write!(s, " {m} |");
        }
        // Baselines answer no outcome's query: the column is the metric over
        // every validation case, as the overall test metrics are.
        let prefix = format!("{}/", crate::outcomes::PREFIX);
        let selection = match self.selection_metric.strip_prefix(&prefix).and_then(|r| r.split_once('/')) {
            Some((_, metric)) => metric,
            None => self.selection_metric.as_str(),
        };
        let _ = writeln!(s, " parameters | fit seconds | validation {selection} |");
        let _ = writeln!(s, "|---|{}---|---|---|", "---|".repeat(self.headline.len()));
        let train_seconds: f64 = self.epochs.iter().map(|r| r.train_seconds).sum();
        let model_validation = self.epochs.get(self.best_epoch.wrapping_sub(1)).map(|r| &r.validation);
        let rows = std::iter::once((
            "this run's model".to_string(),
            &self.test,
            model_validation,
            self.parameters,
            train_seconds,
        ))
        .chain(
            self.baselines
                .iter()
                .map(|b| (format!("`{}`", b.name), &b.test, Some(&b.validation), b.parameters, b.fit_seconds)),
        );
        let cell = |v: Option<&f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
        for (name, metrics, validation, parameters, seconds) in rows {
            let _ = write!(s, "| {name} |");
            for m in &self.headline {
                let _ = write!(s, " {} |", cell(metrics.get(m)));
            }
            let _ = writeln!(s, " {parameters} | {seconds:.2} | {} |", cell(validation.and_then(|v| v.get(selection))));
        }
        for b in &self.baselines {
            if let Some(summary) = &b.fit_summary {
                let _ = writeln!(s, "\n`{}`: {summary}", b.name);
            }
        }
        s
    }
}

impl Report {
    /// `[retrieval]`: where the candidates came from, how many held-out items
    /// they hold, and the shown lists beside the model's own.
    fn retrieval_section(&self, r: &crate::retrieval::Retrieved) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "\n## Retrieval: several generators, merged\n");
        let _ = writeln!(
            s,
            "Each source proposed its best {} items per test user (seen items excluded); each gave its quota in \
             order, skipping items an earlier source gave, and the sources' next items filled what was left. \
             A candidate's relevance is its score min-max normalised within a source's list (the highest, when \
             several proposed it); users are shown the {} most relevant candidates. Retrieval took {:.2} s.\n",
            r.candidates, r.shown, r.seconds
        );
        let _ = writeln!(s, "| source | quota | candidates per user |\n|---|---|---|");
        for (name, quota, given) in &r.sources {
            let _ = writeln!(s, "| `{name}` | {quota} | {given:.1} |");
        }
        let _ = writeln!(
            s,
            "\nThe held-out item is among the {} merged candidates for {:.2} % of test users.\n",
            r.candidates,
            100.0 * r.candidate_recall
        );
        let mut columns = vec![("model alone", &r.model_alone), ("merged, by relevance", &r.merged)];
        if let Some(re) = &r.reranked {
            columns.push(("re-ranked", re));
        }
        let _ = write!(s, "| top {} |", r.shown);
        for (name, _) in &columns {
            let _ = write!(s, " {name} |");
        }
        let _ = writeln!(s, "\n|---|{}", "---|".repeat(columns.len()));
        for (name, _) in r.merged.metrics.iter().chain(&r.merged.beyond) {
            let _ = write!(s, "| {name} |");
            for (_, shown) in &columns {
                match shown.metrics.get(name).or_else(|| shown.beyond.get(name)) {
                    Some(v) => {
                        let _ = write!(s, " {v:.4} |");
                    }
                    None => s.push_str(" |"),
                }
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "\n\"Model alone\" is the model's own top {} through the index; MRR counts a target only within the \
             shown list.",
            r.shown
        );
        if r.reranked.is_some() {
            let _ = writeln!(s, "Re-ranking every test user's candidates took {:.3} s.", r.rerank_seconds);
        }
        if !r.tradeoff.is_empty() {
            let p = &r.tradeoff_parameter;
            let _ = writeln!(s, "\n### Accuracy against diversity, by {p}\n");
            let _ = writeln!(
                s,
                "The same trained model and candidates, re-ranked at each {p} (chart: `tradeoff.svg` below).\n"
            );
            let names: Vec<&String> = r.tradeoff[0].1.metrics.keys().chain(r.tradeoff[0].1.beyond.keys()).collect();
            let _ = write!(s, "| {p} |");
            for n in &names {
                let _ = write!(s, " {n} |");
            }
            let _ = writeln!(s, "\n|---|{}", "---|".repeat(names.len()));
            for (v, shown) in &r.tradeoff {
                let _ = write!(s, "| {v} |");
                for n in &names {
                    let x = shown.metrics.get(*n).or_else(|| shown.beyond.get(*n)).copied().unwrap_or(f64::NAN);
                    let _ = write!(s, " {x:.4} |");
                }
                s.push('\n');
            }
        }
        s
    }
}

/// The report of a run that stopped on an error: what happened, and the
/// epochs its last checkpoint holds. No test metrics: the run did not finish.
pub fn failure(experiment: &str, run_dir: &std::path::Path, error: &str, epochs: &[EpochRecord]) -> String {
    let mut s =
        format!("# {experiment} (failed)\n\nThe run in `{}` stopped:\n\n```\n{error}\n```\n\n", run_dir.display());
    if epochs.is_empty() {
        s.push_str("No epoch completed a checkpoint.\n");
        return s;
    }
    let _ = writeln!(s, "Epochs in the last checkpoint (`checkpoint.bin`; continue with `--resume`):\n");
    let _ = writeln!(s, "| epoch | loss | examples/s | seconds |\n|---|---|---|---|");
    for r in epochs {
        let _ = writeln!(s, "| {} | {:.4} | {:.0} | {:.1} |", r.epoch, r.loss, r.examples_per_second, r.train_seconds);
    }
    s
}

/// Whether a test metric belongs to the per-outcome section rather than the
/// overall table.
fn is_outcome_metric(key: &str) -> bool {
    key.starts_with(&format!("{}/", crate::outcomes::PREFIX)) || key.starts_with("disliked@")
}

/// The test metrics of each outcome (`outcome/<name>/<metric>`), one row
/// each with its cases and the headline metrics, then the mean, and the
/// share of users shown a later-disliked item; empty without them.
fn outcome_section(metrics: &Metrics, headline: &[String]) -> String {
    let mut s = String::new();
    let prefix = format!("{}/", crate::outcomes::PREFIX);
    let mut names: Vec<&str> = Vec::new();
    for key in metrics.keys() {
        if let Some((name, _)) = key.strip_prefix(&prefix).and_then(|r| r.split_once('/')) {
            if name != crate::outcomes::MEAN && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    if !names.is_empty() {
        let _ = writeln!(s, "\n### By outcome\n");
        let _ = writeln!(
            s,
            "Each outcome's test cases are the held-out targets that meet it, ranked with a query asking about that \
             outcome (a model trained on one outcome asks the same query for all).\n"
        );
        let _ = writeln!(s, "| outcome | test cases | {} |", headline.join(" | "));
        let _ = writeln!(s, "|---|---|{}", "---|".repeat(headline.len()));
        let row = |name: &str| -> String {
            let cases = metrics.get(&format!("{prefix}{name}/cases")).map_or(String::new(), |c| format!("{c:.0}"));
            let values: Vec<String> = headline
                .iter()
                .map(|m| metrics.get(&format!("{prefix}{name}/{m}")).map_or(String::new(), |v| format!("{v:.4}")))
                .collect();
            format!("| {name} | {cases} | {} |\n", values.join(" | "))
        };
        for name in &names {
            s.push_str(&row(name));
        }
        if names.len() > 1 {
            s.push_str(&row(crate::outcomes::MEAN));
        }
    }
    for (key, v) in metrics.iter().filter(|(k, _)| k.starts_with("disliked@")) {
        let k = key.trim_start_matches("disliked@");
        let _ = writeln!(
            s,
            "\n{key}: {v:.4}, the share of test users whose top {k} (exact search, seen items excluded) holds an \
             item they gave negative feedback on after their history ends.\n"
        );
    }
    s
}

/// Metrics named `family@K` as one row per K and one column per family;
/// the rest (e.g. `mrr`) as rows of their own below.
fn metric_table(metrics: &Metrics) -> String {
    let mut families: Vec<&str> = Vec::new();
    let mut ks: Vec<u64> = Vec::new();
    let mut plain = Vec::new();
    for (name, v) in metrics {
        match name.split_once('@').and_then(|(f, k)| Some((f, k.parse::<u64>().ok()?))) {
            Some((f, k)) => {
                if !families.contains(&f) {
                    families.push(f);
                }
                if !ks.contains(&k) {
                    ks.push(k);
                }
            }
            None => plain.push((name, v)),
        }
    }
    ks.sort_unstable();
    let mut s = String::new();
    if !ks.is_empty() {
        let _ = writeln!(s, "| K | {} |", families.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(families.len()));
        for k in &ks {
            let _ = write!(s, "| {k} |");
            for f in &families {
                match metrics.get(&format!("{f}@{k}")) {
                    Some(v) => {
                        let _ = write!(s, " {v:.4} |");
                    }
                    None => s.push_str(" |"),
                }
            }
            s.push('\n');
        }
        s.push('\n');
    }
    if !plain.is_empty() {
        let _ = writeln!(s, "| metric | value |\n|---|---|");
        for (name, v) in plain {
            let _ = writeln!(s, "| {name} | {v:.4} |");
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Report {
        let record = |epoch, recall| EpochRecord {
            epoch,
            loss: 5.0,
            train_seconds: 2.0,
            examples_per_second: 1000.0,
            validation_seconds: 0.5,
            validation: Metrics::from([("recall@10".to_string(), recall), ("mrr".to_string(), 0.01)]),
        };
        Report {
            experiment: ExperimentMeta { name: "demo".into(), seed: 7, description: "A demo.".into() },
            started: "2026-11-24 07:00:00 UTC".into(),
            experiment_file: "experiments/demo.toml".into(),
            run_dir: "runs/demo/x".into(),
            resolved: "[experiment]\nname = \"demo\"\n".into(),
            dataset: DatasetStats {
                name: "movielens/ml-100k".into(),
                source: "/data".into(),
                checksum: "abc".into(),
                raw_rows: 100,
                users: 10,
                items: 20,
                positives: 50,
                train_examples: 30,
                validation_cases: 10,
                test_cases: 10,
                load_seconds: 0.1,
                titled_items: 20,
                categorized_items: 0,
                categories: 0,
                common_categories: Vec::new(),
                protocol: "leave last out".into(),
                outcomes: Vec::new(),
                feedback: 0,
            },
            parameters: 1234,
            selection_metric: "recall@10".into(),
            epochs: vec![record(1, 0.1), record(2, 0.2)],
            best_epoch: 2,
            test: Metrics::from([
                ("recall@10".to_string(), 0.25),
                ("recall@100".to_string(), 0.5),
                ("ndcg@10".to_string(), 0.125),
                ("mrr".to_string(), 0.0625),
            ]),
            baselines: Vec::new(),
            wall_seconds: 9.0,
            samples: vec![SampleUser {
                user_id: "42".into(),
                recent: vec!["B".into(), "A".into()],
                target: "C".into(),
                recommended: vec![("C".into(), true), ("D".into(), false)],
            }],
            plots: vec![("loss".into(), "plots/loss.svg".into())],
            serving: None,
            stages: ["load", "epoch 1", "validation 1", "epoch 2", "validation 2", "test"]
                .iter()
                .zip([1.0, 2.0, 0.5, 2.0, 0.5, 4.0])
                .map(|(name, seconds)| StageTime {
                    name: name.to_string(),
                    seconds,
                    peak_rss_bytes: Some((seconds * 1e8) as u64),
                })
                .collect(),
            headline: ["recall@10", "ndcg@10", "recall@100", "mrr"].map(String::from).to_vec(),
            retrieval: None,
        }
    }

    #[test]
    fn a_report_says_how_examples_are_counted_on_every_position() {
        let mut r = demo();
        assert!(!r.render().contains("every position"));
        r.resolved.push_str("\n[train]\ntargets = \"all_positions\"\n");
        assert!(r.render().contains("examples/s counts positions"));
    }

    #[test]
    fn outcomes_get_a_table_of_their_own_and_disliked_a_sentence() {
        let mut r = demo();
        r.headline = vec!["recall@10".into(), "ndcg@10".into()];
        r.dataset.outcomes = vec![("liked".into(), 40), ("loved".into(), 15)];
        r.dataset.feedback = 7;
        for (k, v) in [
            ("outcome/liked/cases", 10.0),
            ("outcome/liked/recall@10", 0.5),
            ("outcome/liked/ndcg@10", 0.25),
            ("outcome/loved/cases", 4.0),
            ("outcome/loved/recall@10", 0.75),
            ("outcome/loved/ndcg@10", 0.5),
            ("outcome/mean/recall@10", 0.625),
            ("outcome/mean/ndcg@10", 0.375),
            ("disliked@10", 0.125),
        ] {
            r.test.insert(k.into(), v);
        }
        let md = r.render();
        assert!(md.contains("| outcome | test cases | recall@10 | ndcg@10 |\n"), "{md}");
        assert!(md.contains(
            "| liked | 10 | 0.5000 | 0.2500 |\n| loved | 4 | 0.7500 | 0.5000 |\n| mean |  | 0.6250 | 0.3750 |\n"
        ));
        assert!(md.contains("\ndisliked@10: 0.1250, the share of test users whose top 10"));
        assert!(md.contains("| positives per outcome | liked 40, loved 15 |"));
        assert!(md.contains("| explicit negative feedback | 7 rows |"));
        // The overall table keeps only the overall metrics.
        assert!(!md.contains("outcome/liked/recall | "), "{md}");
    }

    #[test]
    fn report_names_every_section_and_marks_the_best_epoch() {
        let md = demo().render();
        for needle in [
            "# demo",
            "| K | ndcg | recall |\n|---|---|---|\n| 10 | 0.1250 | 0.2500 |\n| 100 | | 0.5000 |",
            "| mrr | 0.0625 |",
            "| sparsity | 75.0000 % |",
            "| 2 (best) | 5.0000 | 1000 | 2.0 | 0.2000 | 0.0100 |",
            "1000 training examples/s",
            "1. **C**",
            "2. D",
            "```toml\n[experiment]",
            "| training (every epoch), 2 times | 4.00 | 40.0 % | 200 MB |",
            "| validation (every epoch), 2 times | 1.00 | 10.0 % | 50 MB |",
            "| test | 4.00 | 40.0 % | 400 MB |",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in\n{md}");
        }
        assert!(!md.contains("## Baselines"), "no baselines configured, no section:\n{md}");
    }

    #[test]
    fn baselines_sit_in_one_table_with_the_model_at_every_cutoff() {
        let mut r = demo();
        let popular = BaselineResult {
            name: "most_popular".into(),
            kind: "most_popular".into(),
            test: Metrics::from([
                ("recall@10".to_string(), 0.05),
                ("ndcg@10".to_string(), 0.025),
                ("recall@100".to_string(), 0.3),
                ("ndcg@100".to_string(), 0.0625),
                ("mrr".to_string(), 0.01),
            ]),
            validation: Metrics::from([("recall@10".to_string(), 0.0625)]),
            fit_summary: None,
            parameters: 20,
            fit_seconds: 0.001,
            evaluate_seconds: 0.5,
        };
        let second = BaselineResult {
            name: "most_popular#2".into(),
            fit_summary: Some("objective by sweep: 3.0 2.0".into()),
            ..popular.clone()
        };
        r.baselines = vec![popular.clone(), second];
        let md = r.render();
        for needle in [
            "## Baselines\n",
            "same 10 test cases over the full catalog",
            "| ranker | recall@10 | ndcg@10 | recall@100 | mrr | parameters | fit seconds | validation recall@10 |\n\
             |---|---|---|---|---|---|---|---|\n",
            // The model: its own test metrics, size and training time.
            "| this run's model | 0.2500 | 0.1250 | 0.5000 | 0.0625 | 1234 | 4.00 | ",
            "| `most_popular` | 0.0500 | 0.0250 | 0.3000 | 0.0100 | 20 | 0.00 | 0.0625 |\n",
            "| `most_popular#2` | 0.0500 |",
            "\n`most_popular#2`: objective by sweep: 3.0 2.0\n",
        ] {
            assert!(md.contains(needle), "missing {needle:?} in\n{md}");
        }
        assert!(md.find("## Baselines").unwrap() < md.find("## Dataset").unwrap());

        let m = popular.tracker_metrics();
        // The baseline's own run: the model's test keys, beside its size and times.
        assert_eq!(m["test/recall@10"], 0.05);
        assert_eq!(m["parameters"], 20.0);
        assert!(m.contains_key("fit_seconds") && m.contains_key("evaluate_seconds"));
        let json = serde_json::to_value(&popular).unwrap();
        assert_eq!((json["recall@100"].as_f64(), json["parameters"].as_u64()), (Some(0.3), Some(20)));
        assert_eq!(json["type"], "most_popular");
    }
}
