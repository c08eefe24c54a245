//! One run, end to end: dataset -> features -> sampler/model -> training ->
//! test evaluation -> index -> report and tracking.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::checkpoint::{self, Checkpoint};
use crate::experiment::{ComponentSpec, Experiment};
use crate::report::{BaselineResult, DatasetStats, Report, SampleUser, PLOTS};
use crate::training;
use anyhow::{bail, Context, Result};
use funnel_api::{
    Baseline, BuildCx, CaseScorer, ComponentKind, EvalCase, Evaluator, ExampleSet, Metrics, Queries, Registry, RunInfo,
    RunStatus, Tracker,
};

/// Where a run writes.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Run folders go to `<runs_dir>/<experiment>/<timestamp>/`.
    pub runs_dir: PathBuf,
    /// Reports go to `<reports_dir>/<experiment>/<timestamp>.md`.
    pub reports_dir: PathBuf,
    /// Continue the run in this folder from its last checkpoint.
    pub resume: Option<PathBuf>,
    /// The sweep folder this run is a trial of.
    pub parent: Option<PathBuf>,
}

/// What a finished run produced.
#[derive(Debug, Clone)]
pub struct RunSummary {
    pub run_dir: PathBuf,
    pub report: PathBuf,
    pub best_epoch: usize,
    pub test: Metrics,
}

/// The sampler's q(item) as a table: what the logQ correction subtracted.
const CANDIDATE_PROBABILITIES: &str = "candidate_probabilities.tsv";

/// Each test user's 0-based rank of their held-out item.
pub const TEST_RANKS: &str = "test_ranks.tsv";

/// The trained model (best epoch) in the checkpoint format.
pub const MODEL: &str = "model.bin";
/// Folder the built index is saved into.
pub const INDEX: &str = "index";

/// Users shown with their recommendations in the report.
const SAMPLE_USERS: usize = 3;
/// Recommendations shown per sample user.
const SAMPLE_K: usize = 10;

pub fn run(exp: &Experiment, reg: &Registry, opts: &RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let spec = &exp.spec;
    let stamp = Timestamp::now();
    let resolved = resolved_toml(exp);
    let config_hash = config_hash(spec);
    let (run_dir, resume) = match &opts.resume {
        Some(dir) => {
            let c =
                checkpoint::read(&dir.join(checkpoint::FILE)).with_context(|| format!("resuming {}", dir.display()))?;
            if c.config_hash != config_hash {
                bail!(
                    "resuming {}: the resolved configuration differs from the one the run was trained with \
                     (see its resolved.toml)",
                    dir.display()
                );
            }
            (dir.clone(), Some(c))
        }
        None => {
            let dir = create_unique_dir(&opts.runs_dir.join(&spec.experiment.name), &stamp.compact)?;
            write(&dir.join("resolved.toml"), &resolved)?;
            (dir, None)
        }
    };
    eprintln!("run folder: {}", run_dir.display());

    let cx = spec.build_cx();
    let within = |kind: ComponentKind| spec.describe(kind);
    let c = &spec.tracking;
    let mut tracker =
        reg.build_tracker(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Tracking))?;
    let c = &spec.dataset;
    let dataset = reg.build_dataset(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Dataset))?;
    let load_started = Instant::now();
    let data = dataset.load().with_context(|| within(ComponentKind::Dataset))?;
    let load_seconds = load_started.elapsed().as_secs_f64();
    eprintln!(
        "dataset {}: {} users, {} items, {} positives ({load_seconds:.2} s)",
        data.name,
        data.n_users(),
        data.n_items(),
        data.interactions.len()
    );

    let info = RunInfo {
        experiment: spec.experiment.name.clone(),
        run_name: stamp.compact.clone(),
        run_dir: run_dir.clone(),
        params: spec.flatten(),
        tags: vec![
            ("funnel.version".into(), env!("CARGO_PKG_VERSION").into()),
            ("config.hash".into(), config_hash.clone()),
            ("dataset.name".into(), data.name.clone()),
            ("dataset.sha256".into(), data.checksum.clone()),
            ("seed".into(), spec.experiment.seed.to_string()),
            ("host".into(), host_name()),
            ("description".into(), spec.experiment.description.clone()),
        ]
        .into_iter()
        .chain(git_tags(&exp.path))
        .collect(),
        parent_run_dir: opts.parent.clone(),
    };
    tracker.start(&info)?;
    let ctx = RunContext { run_dir: &run_dir, stamp: &stamp, resolved: &resolved, config_hash: &config_hash };
    let outcome = train_and_report(exp, reg, opts, &ctx, resume, &data, load_seconds, started, tracker.as_mut());
    match &outcome {
        Ok(_) => tracker.finish(RunStatus::Finished)?,
        Err(e) => {
            // Keep the original error; the journal already holds what was logged.
            let _ = tracker.finish(RunStatus::Failed);
            let records = checkpoint::read(&run_dir.join(checkpoint::FILE)).map(|c| c.records).unwrap_or_default();
            let text = crate::report::failure(&spec.experiment.name, &run_dir, &format!("{e:#}"), &records);
            let _ = write(&run_dir.join("report.md"), &text);
        }
    }
    outcome
}

/// Where a run writes and what identifies it.
struct RunContext<'a> {
    run_dir: &'a Path,
    stamp: &'a Timestamp,
    resolved: &'a str,
    config_hash: &'a str,
}

#[allow(clippy::too_many_arguments)]
fn train_and_report(
    exp: &Experiment,
    reg: &Registry,
    opts: &RunOptions,
    ctx: &RunContext<'_>,
    resume: Option<Checkpoint>,
    data: &funnel_api::LoadedDataset,
    load_seconds: f64,
    started: Instant,
    tracker: &mut dyn Tracker,
) -> Result<RunSummary> {
    let spec = &exp.spec;
    let (run_dir, stamp, resolved) = (ctx.run_dir, ctx.stamp, ctx.resolved);
    let within = |kind: ComponentKind| spec.describe(kind);
    let mut cx = BuildCx { n_users: data.n_users(), n_items: data.n_items(), ..spec.build_cx() };
    let c = &spec.features;
    let features =
        reg.build_features(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Features))?;
    let examples = features.build(data).with_context(|| within(ComponentKind::Features))?;
    cx.learn_examples(&examples);

    let c = &spec.sampler;
    let mut sampler =
        reg.build_sampler(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Sampler))?;
    let mut counts = vec![0u64; data.n_items()];
    for &ex in &examples.train {
        counts[examples.target(ex) as usize] += 1;
    }
    sampler.fit(&counts).with_context(|| within(ComponentKind::Sampler))?;
    let q = sampler.item_probabilities();
    let mut q_table = String::from("item_id\ttraining_count\texpected_copies_per_batch\n");
    for (i, p) in q.iter().enumerate() {
        q_table.push_str(&format!("{}\t{}\t{p:.6e}\n", data.catalog.raw_ids[i], counts[i]));
    }
    write(&run_dir.join(CANDIDATE_PROBABILITIES), &q_table)?;
    let c = &spec.model;
    let mut model = reg.build_model(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Model))?;
    let c = &spec.evaluation;
    let evaluator =
        reg.build_evaluator(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Evaluation))?;
    let c = &spec.index;
    let mut index = reg.build_index(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Index))?;
    // Built now, so a bad baseline fails before training; fitted after the test.
    let mut baselines = Vec::with_capacity(spec.baselines.len());
    for (i, c) in spec.baselines.iter().enumerate() {
        let b = reg
            .build_baseline(&c.kind, c.params.clone(), &cx)
            .with_context(|| spec.describe_entry(ComponentKind::Baseline, i))?;
        baselines.push(b);
    }

    let stats = DatasetStats::of(data, &examples, load_seconds);
    eprintln!(
        "examples: {} train, {} validation, {} test; model has {} parameters",
        stats.train_examples,
        stats.validation_cases,
        stats.test_cases,
        model.parameter_count()
    );
    let checkpoint_path = run_dir.join(checkpoint::FILE);
    let trained = training::train(
        model.as_mut(),
        sampler.as_mut(),
        evaluator.as_ref(),
        tracker,
        &examples,
        &spec.train,
        spec.experiment.seed,
        resume,
        &training::Checkpointing { path: &checkpoint_path, config_hash: ctx.config_hash },
    )?;
    model.load_state(&trained.best_state)?;
    let tested =
        training::evaluate(model.as_ref(), evaluator.as_ref(), &examples, &examples.test).context("test evaluation")?;
    let test = tested.metrics;
    // Per-user ranks make paired significance tests between runs possible.
    let mut ranks = String::from("user_id\ttarget_item_id\trank\n");
    for (ex, rank) in examples.test.iter().zip(&tested.ranks) {
        let (user, item) = (data.user_raw_ids[ex.user as usize], data.catalog.raw_ids[examples.target(*ex) as usize]);
        ranks.push_str(&format!("{user}\t{item}\t{rank}\n"));
    }
    write(&run_dir.join(TEST_RANKS), &ranks)?;
    let final_metrics: Metrics = test
        .iter()
        .map(|(k, v)| (format!("test/{k}"), *v))
        .chain([("best_epoch".to_string(), trained.best_epoch as f64)])
        .collect();
    tracker.log_metrics(trained.best_epoch as u64, &final_metrics)?;

    let cases: Vec<EvalCase<'_>> =
        examples.test.iter().map(|&ex| EvalCase { seen: examples.seen(ex), target: examples.target(ex) }).collect();
    let baseline_results =
        evaluate_baselines(spec, &mut baselines, evaluator.as_ref(), &examples, data.n_items(), &cases)?;
    for b in &baseline_results {
        tracker.log_metrics(trained.best_epoch as u64, &b.tracker_metrics())?;
    }

    let items = model.item_vectors()?;
    crate::item_vectors::write(&run_dir.join(crate::item_vectors::FILE), &items, &data.catalog)?;
    let final_state = Checkpoint {
        config_hash: ctx.config_hash.to_string(),
        epoch: trained.best_epoch,
        records: Vec::new(),
        best_epoch: trained.best_epoch,
        best_score: trained.epochs[trained.best_epoch - 1]
            .validation
            .get(evaluator.selection_metric())
            .copied()
            .unwrap_or_default(),
        best_state: trained.best_state.clone(),
        model: Default::default(),
        sampler: Default::default(),
    };
    checkpoint::write(&run_dir.join(MODEL), &final_state)?;

    // Serving: every test user's query through the index, against exact search.
    let users = model.user_vectors(&examples.serving_queries(&examples.test))?;
    eprintln!("serving: building the index and answering {} test queries", cases.len());
    let serving = crate::serving::measure(index.as_mut(), &items, &users, &cases, &crate::serving::cutoffs(&test))
        .with_context(|| within(ComponentKind::Index))?;
    tracker.log_metrics(trained.best_epoch as u64, &serving.metrics())?;
    let index_dir = run_dir.join(INDEX);
    let _ = std::fs::remove_dir_all(&index_dir);
    std::fs::create_dir_all(&index_dir).with_context(|| format!("creating {}", index_dir.display()))?;
    let index_files = index.save(&index_dir).with_context(|| within(ComponentKind::Index))?;
    let mut samples = Vec::new();
    let n_test = examples.test.len();
    for s in 0..SAMPLE_USERS.min(n_test) {
        let ex = examples.test[s * n_test / SAMPLE_USERS];
        let user = model.user_vectors(&examples.serving_queries(&[ex]))?;
        let top = index.search(user.row(0), SAMPLE_K, examples.seen(ex))?;
        samples.push(SampleUser {
            user_id: data.user_raw_ids[ex.user as usize],
            recent: examples.history(ex).iter().rev().take(5).map(|&i| data.catalog.display(i)).collect(),
            target: data.catalog.display(examples.target(ex)),
            recommended: top.iter().map(|&(i, _)| (data.catalog.display(i), i == examples.target(ex))).collect(),
        });
    }

    let plots = write_plots(run_dir, &trained.epochs, trained.best_epoch, evaluator.selection_metric())?;
    let report = Report {
        experiment: spec.experiment.clone(),
        started: stamp.readable.clone(),
        experiment_file: exp.path.display().to_string(),
        run_dir: run_dir.display().to_string(),
        resolved: resolved.to_string(),
        dataset: stats,
        parameters: model.parameter_count(),
        selection_metric: evaluator.selection_metric().to_string(),
        epochs: trained.epochs,
        best_epoch: trained.best_epoch,
        test: test.clone(),
        baselines: baseline_results.clone(),
        wall_seconds: started.elapsed().as_secs_f64(),
        samples,
        serving: Some((spec.index.kind.clone(), serving.clone())),
        plots: plots.iter().map(|(caption, file)| (caption.clone(), format!("{PLOTS}/{file}"))).collect(),
    };
    let markdown = report.render();
    let report = &report;
    let report_path = opts.reports_dir.join(&spec.experiment.name).join(format!("{}.md", run_name(run_dir)));
    let charts: Vec<String> = plots.iter().map(|(_, file)| file.clone()).collect();
    crate::report::publish(&markdown, run_dir, &charts, &report_path)?;
    let train_seconds: f64 = report.epochs.iter().map(|r| r.train_seconds).sum();
    let trained_examples: f64 = report.epochs.iter().map(|r| r.examples_per_second * r.train_seconds).sum();
    let metrics_json = serde_json::to_string_pretty(&serde_json::json!({
        "experiment": spec.experiment.name,
        "description": spec.experiment.description,
        "config_hash": ctx.config_hash,
        "sampler": spec.sampler.kind,
        "model": spec.model.kind,
        "parameters": report.parameters,
        "epochs": report.epochs.len(),
        "best_epoch": trained.best_epoch,
        "validation_at_best": report.epochs[trained.best_epoch - 1].validation,
        "test": test,
        "examples_per_second": trained_examples / train_seconds.max(1e-9),
        "train_seconds": train_seconds,
        "wall_seconds": report.wall_seconds,
        "serving": serving,
        "baselines": baseline_results.iter().map(|b| (b.name.clone(), b.json())).collect::<serde_json::Map<_, _>>(),
    }))?;
    write(&run_dir.join("metrics.json"), &metrics_json)?;
    for artifact in
        ["resolved.toml", "report.md", "metrics.json", CANDIDATE_PROBABILITIES, TEST_RANKS, crate::item_vectors::FILE]
    {
        tracker.log_artifact(&run_dir.join(artifact))?;
    }
    for (_, file) in &plots {
        tracker.log_artifact(&run_dir.join(PLOTS).join(file))?;
    }
    tracker.log_artifact(&run_dir.join(MODEL))?;
    for file in &index_files {
        tracker.log_artifact(file)?;
    }
    eprintln!("report: {}", report_path.display());
    Ok(RunSummary { run_dir: run_dir.to_path_buf(), report: report_path, best_epoch: trained.best_epoch, test })
}

/// Every `[[baselines]]` entry fitted on the training examples and ranked by
/// `evaluator` on `cases` (the test cases, in `examples.test` order) over the
/// full catalog, exactly as the model was.
fn evaluate_baselines(
    spec: &crate::experiment::ExperimentSpec,
    baselines: &mut [Box<dyn Baseline>],
    evaluator: &dyn Evaluator,
    examples: &ExampleSet,
    n_items: usize,
    cases: &[EvalCase<'_>],
) -> Result<Vec<BaselineResult>> {
    let queries = examples.serving_queries(&examples.test);
    let mut results = Vec::with_capacity(baselines.len());
    for (i, (baseline, name)) in baselines.iter_mut().zip(spec.baseline_names()).enumerate() {
        let within = || spec.describe_entry(ComponentKind::Baseline, i);
        let fit_started = Instant::now();
        baseline.fit(examples, n_items).with_context(within)?;
        let fit_seconds = fit_started.elapsed().as_secs_f64();
        let evaluate_started = Instant::now();
        let scorer = BaselineScorer { baseline: baseline.as_ref(), queries: &queries };
        let evaluation = evaluator.evaluate_scores(&scorer, n_items, cases).with_context(within)?;
        let result = BaselineResult {
            name,
            kind: spec.baselines[i].kind.clone(),
            test: evaluation.metrics,
            parameters: baseline.parameter_count(),
            fit_seconds,
            evaluate_seconds: evaluate_started.elapsed().as_secs_f64(),
        };
        let headline = result.test.get(evaluator.selection_metric()).copied().unwrap_or(f64::NAN);
        eprintln!(
            "baseline {}: test {} {headline:.4} (fit {:.2} s, ranked in {:.2} s)",
            result.name,
            evaluator.selection_metric(),
            result.fit_seconds,
            result.evaluate_seconds
        );
        results.push(result);
    }
    Ok(results)
}

/// A baseline as the evaluator sees it: case `c` is row `c` of the serving
/// queries.
struct BaselineScorer<'a> {
    baseline: &'a dyn Baseline,
    queries: &'a Queries,
}

impl CaseScorer for BaselineScorer<'_> {
    fn score(&self, case: usize, out: &mut [f32]) {
        self.baseline.score(self.queries, case, out);
    }
}

/// Per-epoch charts into `<run_dir>/plots/`: training loss, and the
/// validation metrics of the selection metric's family (every `recall@K`
/// when selecting by `recall@10`). Returns (caption, file name) pairs.
fn write_plots(
    run_dir: &Path,
    epochs: &[training::EpochRecord],
    best_epoch: usize,
    selection: &str,
) -> Result<Vec<(String, String)>> {
    use crate::plot::{Chart, Series};
    let best = Some((best_epoch as f64, format!("best epoch {best_epoch}")));
    let loss = Chart {
        title: "Training loss".into(),
        x_label: "epoch".into(),
        y_label: "mean batch loss".into(),
        series: vec![Series {
            name: "train".into(),
            points: epochs.iter().map(|r| (r.epoch as f64, r.loss)).collect(),
        }],
        scatter: false,
        marker: best.clone(),
        log_x: false,
    };
    let family = selection.split('@').next().unwrap_or(selection);
    let mut keys: Vec<&String> = epochs
        .first()
        .map(|r| r.validation.keys().filter(|k| k.split('@').next() == Some(family)).collect())
        .unwrap_or_default();
    keys.sort_by_key(|k| k.split('@').nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0));
    let validation = Chart {
        title: format!("Validation {family}"),
        x_label: "epoch".into(),
        y_label: family.into(),
        series: keys
            .iter()
            .map(|k| Series {
                name: k.to_string(),
                points: epochs.iter().filter_map(|r| r.validation.get(*k).map(|v| (r.epoch as f64, *v))).collect(),
            })
            .collect(),
        scatter: false,
        marker: best,
        log_x: false,
    };
    let mut out = Vec::new();
    for (caption, file, chart) in
        [("Training loss", "loss.svg", loss), ("Validation metrics", "validation.svg", validation)]
    {
        write(&run_dir.join(PLOTS).join(file), &chart.svg())?;
        out.push((caption.to_string(), file.to_string()));
    }
    Ok(out)
}

/// The resolved configuration, headed by how it was produced.
pub fn resolved_toml(exp: &Experiment) -> String {
    let mut head = format!("# Resolved from {}", exp.path.display());
    for o in &exp.overrides {
        head.push_str(&format!("\n# --set {o}"));
    }
    format!("{head}\n\n{}", exp.spec.to_toml())
}

fn run_name(run_dir: &Path) -> String {
    run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The machine's name, as tags record where a run ran.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Which code made a run's numbers: `funnel.git.commit`/`funnel.git.dirty`
/// for the funnel build itself, and `git.commit`/`git.dirty` for the
/// repository holding the experiment file, when there is one.
fn git_tags(experiment_file: &Path) -> Vec<(String, String)> {
    let mut tags = vec![
        ("funnel.git.commit".to_string(), env!("BUILT_FROM_GIT_COMMIT").to_string()),
        ("funnel.git.dirty".to_string(), env!("BUILT_FROM_GIT_DIRTY").to_string()),
    ];
    let dir = experiment_file.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    if let Some(commit) = git(&["rev-parse", "HEAD"]) {
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_none_or(|s| !s.is_empty());
        tags.push(("git.commit".into(), commit));
        tags.push(("git.dirty".into(), dirty.to_string()));
    }
    tags
}

/// Creates `<parent>/<name>`, or `<name>-2`, `-3`, ... when a concurrent run
/// took the name, so two runs never share a folder.
pub(crate) fn create_unique_dir(parent: &Path, name: &str) -> Result<PathBuf> {
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    for n in 1.. {
        let dir = if n == 1 { parent.join(name) } else { parent.join(format!("{name}-{n}")) };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
    }
    unreachable!("the loop above returns")
}

/// Writes `text` to `path` through a temporary file and a rename, so a crash
/// never leaves a half-written file.
pub(crate) fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// Fingerprint of a resolved configuration: equal hashes, equal runs.
/// `[sweep]` and `[tracking]` are left out: they say how to vary a run and
/// where to record it, not what ran, so extending a sweep or switching
/// trackers keeps finished runs.
pub fn config_hash(spec: &crate::experiment::ExperimentSpec) -> String {
    let mut spec = spec.clone();
    spec.sweep = None;
    spec.tracking = ComponentSpec { kind: String::new(), params: toml::Table::new() };
    format!("{:016x}", fnv1a(spec.to_toml().as_bytes()))
}

/// 64-bit FNV-1a: a stable fingerprint of the resolved configuration.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// The run's start time in UTC.
pub struct Timestamp {
    /// `20261124-071530`, for folder and file names.
    pub compact: String,
    /// `2026-11-24 07:15:30 UTC`, for reports.
    pub readable: String,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        Timestamp::from_unix(secs)
    }

    fn from_unix(secs: u64) -> Timestamp {
        let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
        let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
        // Howard Hinnant's days-to-civil algorithm.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Timestamp {
            compact: format!("{year:04}{month:02}{day:02}-{h:02}{m:02}{s:02}"),
            readable: format!("{year:04}-{month:02}-{day:02} {h:02}:{m:02}:{s:02} UTC"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        let t = Timestamp::from_unix(1_795_000_000);
        assert_eq!(t.compact, "20261118-110640");
        assert_eq!(t.readable, "2026-11-18 11:06:40 UTC");
        assert_eq!(Timestamp::from_unix(951_782_400).compact, "20000229-000000");
    }

    #[test]
    fn concurrent_runs_get_distinct_folders() {
        let dir = tempfile::tempdir().unwrap();
        let a = create_unique_dir(dir.path(), "r").unwrap();
        let b = create_unique_dir(dir.path(), "r").unwrap();
        assert_ne!(a, b);
        assert!(b.ends_with("r-2"));
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
