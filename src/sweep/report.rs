//! The sweep report: configurations ranked by the sweep metric (mean ± std
//! over seeds), the best one as TOML, paired significance tests over test
//! users, and metric-versus-parameter charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;
use funnel_api::{Evaluator, Metrics};

use super::stats::{self, PairedTest};
use super::Job;
use super::{Distribution, Goal, Space, SweepSpec};
use crate::experiment::Experiment;
use crate::plot::{Chart, Series};
use crate::run_folder::{write as write_file, RunMetrics, TEST_RANKS};

/// What became of one job.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub job: Job,
    pub run_dir: Option<PathBuf>,
    /// The run's `metrics.json`.
    pub metrics: Option<RunMetrics>,
    pub error: Option<String>,
}

impl Outcome {
    pub fn read(job: Job, run_dir: &Path) -> Outcome {
        match RunMetrics::read(run_dir) {
            Ok(m) => Outcome { job, run_dir: Some(run_dir.to_path_buf()), metrics: Some(m), error: None },
            Err(e) => Outcome::failed(job, format!("{e:#}")),
        }
    }

    pub fn failed(job: Job, error: String) -> Outcome {
        Outcome { job, run_dir: None, metrics: None, error: Some(error) }
    }

    /// Validation `metric` at the run's best epoch.
    pub fn validation(&self, metric: &str) -> Option<f64> {
        self.metrics.as_ref()?.validation_at_best.get(metric).copied()
    }

    pub fn test(&self, metric: &str) -> Option<f64> {
        self.metrics.as_ref()?.test.get(metric).copied()
    }

    /// Per test user, the sweep metric computed from the user's rank.
    fn per_user(&self, metric: &str, evaluator: &dyn Evaluator) -> Option<BTreeMap<u64, f64>> {
        let text = std::fs::read_to_string(self.run_dir.as_ref()?.join(TEST_RANKS)).ok()?;
        let mut out = BTreeMap::new();
        for line in text.lines().skip(1) {
            let mut f = line.split('\t');
            let user: u64 = f.next()?.parse().ok()?;
            let rank: u64 = f.nth(1)?.parse().ok()?;
            out.insert(user, evaluator.metric_at_rank(metric, rank)?);
        }
        Some(out)
    }
}

/// Runs of one configuration (the base, or configuration `n` of the sweep).
struct Group<'a> {
    config: Option<usize>,
    runs: Vec<&'a Outcome>,
}

impl Group<'_> {
    fn label(&self) -> String {
        self.config.map_or_else(|| "base".into(), |c| c.to_string())
    }

    fn values(&self, f: impl Fn(&Outcome) -> Option<f64>) -> Vec<f64> {
        self.runs.iter().filter_map(|o| f(o)).collect()
    }

    fn mean_validation(&self, metric: &str) -> Option<f64> {
        mean_std(&self.values(|o| o.validation(metric))).map(|m| m.0)
    }

    /// Per-user metric averaged over this configuration's seeds.
    fn per_user(&self, metric: &str, evaluator: &dyn Evaluator) -> Option<BTreeMap<u64, f64>> {
        let maps: Vec<BTreeMap<u64, f64>> = self.runs.iter().filter_map(|o| o.per_user(metric, evaluator)).collect();
        let first = maps.first()?;
        let mut out = BTreeMap::new();
        for user in first.keys() {
            let vals: Vec<f64> = maps.iter().filter_map(|m| m.get(user).copied()).collect();
            if vals.len() == maps.len() {
                out.insert(*user, vals.iter().sum::<f64>() / vals.len() as f64);
            }
        }
        Some(out)
    }
}

fn mean_std(v: &[f64]) -> Option<(f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let var = if v.len() > 1 { v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64 } else { 0.0 };
    Some((mean, var.sqrt()))
}

fn cell(v: &[f64]) -> String {
    match mean_std(v) {
        Some((m, s)) if v.len() > 1 => format!("{m:.4} ± {s:.4}"),
        Some((m, _)) => format!("{m:.4}"),
        None => "–".into(),
    }
}

/// What `write` produced.
pub struct Written {
    /// The best configuration's label and metrics, for the parent run.
    pub best: Option<(String, Metrics)>,
    /// Files for the tracker: the report and its charts.
    pub artifacts: Vec<PathBuf>,
}

/// Writes the report to `report_path` (charts beside it in a folder of the
/// same name) and to `<sweep_dir>/report.md` (charts in `plots/`).
#[allow(clippy::too_many_arguments)]
pub fn write(
    base: &Experiment,
    file: &Path,
    sweep: &SweepSpec,
    outcomes: &[Outcome],
    sweep_dir: &Path,
    report_path: &Path,
    started: &str,
    evaluator: &dyn Evaluator,
) -> Result<Written> {
    let metric = sweep.metric.as_str();
    let mut groups: Vec<Group> = Vec::new();
    for o in outcomes.iter().filter(|o| o.error.is_none()) {
        match groups.iter_mut().find(|g| g.config == o.job.config) {
            Some(g) => g.runs.push(o),
            None => groups.push(Group { config: o.job.config, runs: vec![o] }),
        }
    }
    let direction = if sweep.goal == Goal::Maximize { -1.0 } else { 1.0 };
    groups.sort_by(|a, b| {
        let key = |g: &Group| g.mean_validation(metric).map_or(f64::INFINITY, |v| direction * v);
        key(a).total_cmp(&key(b)).then(a.config.cmp(&b.config))
    });

    let name = &base.spec.experiment.name;
    let mut s = String::new();
    let _ = writeln!(s, "# Sweep: {name}\n");
    let _ = writeln!(
        s,
        "Started {started} from `{}`: {} search over {}, seeds {:?}, ranked by validation `{metric}` ({}).",
        file.display(),
        match sweep.method {
            super::Method::Grid => "grid",
            super::Method::Random => "random",
        },
        sweep.params.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
        outcomes.iter().map(|o| o.job.seed).collect::<std::collections::BTreeSet<_>>(),
        if sweep.goal == Goal::Maximize { "higher is better" } else { "lower is better" },
    );
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_some()).collect();
    let _ = writeln!(
        s,
        "{} runs: {} finished, {} failed. \"base\" is the experiment as written, run with the same seeds. \
         Every number is from the full-catalog evaluation; test metrics were not used to choose anything.\n",
        outcomes.len(),
        outcomes.len() - failed.len(),
        failed.len()
    );

    let _ = writeln!(s, "## Configurations\n");
    let params: Vec<&String> = sweep.params.keys().collect();
    let mut header = String::from("| rank | config |");
    for p in &params {
        let _ = write!(header, " `{p}` |");
    }
    let _ = write!(header, " seeds | valid {metric} | test {metric} | test ndcg@10 | test mrr | examples/s |");
    let _ = writeln!(s, "{header}");
    let _ = writeln!(s, "|{}", "---|".repeat(params.len() + 8));
    for (rank, g) in groups.iter().enumerate() {
        let overrides: BTreeMap<&str, &toml::Value> =
            g.runs[0].job.overrides.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let _ = write!(s, "| {} | {} |", rank + 1, g.label());
        for p in &params {
            match overrides.get(p.as_str()) {
                Some(v) => {
                    let _ = write!(s, " {v} |");
                }
                None => s.push_str(" (file) |"),
            }
        }
        let _ = writeln!(
            s,
            " {} | {} | {} | {} | {} | {} |",
            g.runs.len(),
            cell(&g.values(|o| o.validation(metric))),
            cell(&g.values(|o| o.test(metric))),
            cell(&g.values(|o| o.test("ndcg@10"))),
            cell(&g.values(|o| o.test("mrr"))),
            mean_std(&g.values(|o| Some(o.metrics.as_ref()?.examples_per_second)))
                .map_or("–".into(), |(m, _)| format!("{m:.0}")),
        );
    }

    let mut best_metrics = None;
    if let Some(best) = groups.first() {
        let _ = writeln!(s, "\n## Best configuration: {}\n", best.label());
        let overrides = &best.runs[0].job.overrides;
        if overrides.is_empty() {
            let _ = writeln!(s, "The experiment as written in `{}` is best.\n", file.display());
        } else {
            let _ = writeln!(s, "Apply to `{}` (or pass each as `--set`):\n", file.display());
            let _ = writeln!(s, "```toml\n{}```\n", toml_snippet(overrides));
            let sets: Vec<String> = overrides.iter().map(|(k, v)| format!("--set '{k}={v}'")).collect();
            let _ = writeln!(s, "```sh\ncargo xtask run {} {}\n```\n", file.display(), sets.join(" "));
        }
        let dirs: Vec<String> =
            best.runs.iter().filter_map(|o| o.run_dir.as_ref()).map(|d| format!("`{}`", d.display())).collect();
        let _ = writeln!(s, "Its runs: {}.", dirs.join(", "));
        let mut m = Metrics::new();
        if let Some((v, _)) = mean_std(&best.values(|o| o.validation(metric))) {
            m.insert(format!("best/validation/{metric}"), v);
        }
        if let Some((v, _)) = mean_std(&best.values(|o| o.test(metric))) {
            m.insert(format!("best/test/{metric}"), v);
        }
        let label = best.config.map_or_else(|| "base".to_string(), |c| format!("configuration {c}"));
        best_metrics = Some((label, m));

        let _ = writeln!(s, "\n## Is the best really better?\n");
        let _ = writeln!(
            s,
            "Paired tests over test users of the per-user `{metric}` (averaged over seeds): the paired t test and \
             the Wilcoxon signed-rank test (zeros dropped, tie- and continuity-corrected normal approximation). \
             p < 0.05 means the difference is unlikely to be seed-and-sample noise.\n"
        );
        let _ = writeln!(s, "| comparison | users | mean difference | t | p (t) | Wilcoxon z | p (Wilcoxon) |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        let mut rivals: Vec<(&str, &Group)> = Vec::new();
        if let Some(second) = groups.get(1) {
            rivals.push(("runner-up", second));
        }
        if let Some(base_group) = groups.iter().find(|g| g.config.is_none()) {
            if best.config.is_some() && groups.get(1).is_none_or(|g| g.config.is_some()) {
                rivals.push(("base", base_group));
            }
        }
        let best_users = best.per_user(metric, evaluator);
        for (what, rival) in rivals {
            let test = best_users.as_ref().zip(rival.per_user(metric, evaluator)).and_then(|(a, b)| {
                let (x, y): (Vec<f64>, Vec<f64>) = a.iter().filter_map(|(u, v)| b.get(u).map(|w| (*v, *w))).unzip();
                stats::paired(&x, &y)
            });
            match test {
                Some(PairedTest { n, mean_difference, t, t_p, wilcoxon_z, wilcoxon_p }) => {
                    let _ = writeln!(
                        s,
                        "| {} vs {} ({what}) | {n} | {mean_difference:+.4} | {t:.2} | {} | {wilcoxon_z:.2} | {} |",
                        best.label(),
                        rival.label(),
                        p_value(t_p),
                        p_value(wilcoxon_p)
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "| {} vs {} ({what}) | – | no per-user ranks to pair | | | | |",
                        best.label(),
                        rival.label()
                    );
                }
            }
        }
    }

    // Metric versus each numeric parameter, one point per run.
    let plots_dir = sweep_dir.join(crate::report::PLOTS);
    let mut charts = Vec::new();
    for (path, space) in &sweep.params {
        let points: Vec<(f64, f64)> = outcomes
            .iter()
            .filter_map(|o| {
                let x = o.job.overrides.iter().find(|(k, _)| k == path).and_then(|(_, v)| number(v))?;
                Some((x, o.validation(metric)?))
            })
            .collect();
        if points.len() < 2 {
            continue;
        }
        let positive = points.iter().all(|p| p.0 > 0.0);
        let (lo, hi) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
        if lo == hi {
            continue;
        }
        let lists = outcomes.iter().any(|o| o.job.overrides.iter().any(|(k, v)| k == path && v.is_array()));
        let log_x =
            matches!(space, Space::Distribution(Distribution::Loguniform { .. })) || (positive && hi / lo >= 100.0);
        let chart = Chart {
            title: format!("validation {metric} vs {path}"),
            x_label: if lists { format!("{path} (list length)") } else { path.clone() },
            y_label: metric.to_string(),
            series: vec![Series { name: "runs".into(), points }],
            scatter: true,
            marker: None,
            log_x,
        };
        let file_name = format!("{}.svg", path.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        write_file(&plots_dir.join(&file_name), &chart.svg())?;
        charts.push((path.clone(), file_name));
    }
    if !charts.is_empty() {
        let _ = writeln!(s, "\n## Metric versus parameter\n");
        for (path, file_name) in &charts {
            let _ = writeln!(s, "![validation {metric} vs {path}]({}/{file_name})\n", crate::report::PLOTS);
        }
    }

    if !failed.is_empty() {
        let _ = writeln!(s, "\n## Failed runs\n");
        for o in &failed {
            let _ = writeln!(s, "- {} (seed {}): {}", o.job.label, o.job.seed, o.error.as_deref().unwrap_or(""));
        }
    }

    let _ = writeln!(s, "\n## Runs\n");
    let _ = writeln!(s, "| run | config | seed | valid {metric} | test {metric} | folder |");
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for o in outcomes {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            o.job.label,
            o.job.config.map_or("base".into(), |c| c.to_string()),
            o.job.seed,
            o.validation(metric).map_or("–".into(), |v| format!("{v:.4}")),
            o.test(metric).map_or("–".into(), |v| format!("{v:.4}")),
            o.run_dir.as_ref().map_or("–".into(), |d| format!("`{}`", d.display())),
        );
    }

    let files: Vec<String> = charts.iter().map(|(_, f)| f.clone()).collect();
    crate::report::publish(&s, sweep_dir, &files, report_path)?;
    let mut artifacts = vec![sweep_dir.join("report.md")];
    artifacts.extend(charts.iter().map(|(_, f)| plots_dir.join(f)));
    Ok(Written { best: best_metrics, artifacts })
}

fn p_value(p: f64) -> String {
    if p < 1e-4 {
        "< 0.0001".into()
    } else {
        format!("{p:.4}")
    }
}

fn number(v: &toml::Value) -> Option<f64> {
    match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        toml::Value::Array(a) => Some(a.len() as f64),
        _ => None,
    }
}

/// `model.hidden = [256]` and `train.lr = 0.001` as TOML tables.
fn toml_snippet(overrides: &[(String, toml::Value)]) -> String {
    let mut tables: BTreeMap<&str, Vec<(&str, &toml::Value)>> = BTreeMap::new();
    for (path, value) in overrides {
        let (table, key) = path.rsplit_once('.').unwrap_or(("", path.as_str()));
        tables.entry(table).or_default().push((key, value));
    }
    let mut out = String::new();
    for (table, keys) in tables {
        if !table.is_empty() {
            let _ = writeln!(out, "[{table}]");
        }
        for (key, value) in keys {
            let _ = writeln!(out, "{key} = {value}");
        }
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippet_groups_keys_by_table() {
        let o = vec![
            ("train.lr".to_string(), toml::Value::Float(0.002)),
            ("model.hidden".to_string(), toml::Value::Array(vec![toml::Value::Integer(256)])),
            ("model.temperature".to_string(), toml::Value::Float(0.1)),
        ];
        let snippet = toml_snippet(&o);
        assert_eq!(snippet, "[model]\nhidden = [256]\ntemperature = 0.1\n\n[train]\nlr = 0.002\n");
        let parsed: toml::Table = snippet.parse().unwrap();
        assert_eq!(parsed["train"]["lr"].as_float(), Some(0.002));
    }

    #[test]
    fn mean_and_sample_std() {
        assert_eq!(mean_std(&[]), None);
        assert_eq!(mean_std(&[2.0]), Some((2.0, 0.0)));
        let (m, s) = mean_std(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((m, s), (2.0, 1.0));
        assert_eq!(cell(&[1.0, 2.0, 3.0]), "2.0000 ± 1.0000");
        assert_eq!(cell(&[0.5]), "0.5000");
    }
}
