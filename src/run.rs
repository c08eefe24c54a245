//! One run, end to end, as named stages:
//!
//! ```text
//! load -> examples -> sampler -> train (epochs, validation) -> test -> baselines
//!      -> model files -> index build -> serving -> publish (report, tracking)
//! ```
//!
//! [`run`] opens the run folder and the tracker and drives the stages; each
//! stage is a function of the [`RunContext`] (what the run is and where it
//! writes) and of what earlier stages produced, and is timed by the
//! [`StageClock`] into `metrics.json` and the report.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use funnel_api::{
    Baseline, BuildCx, CaseScorer, ComponentKind, DatasetInput, EvalCase, Evaluator, ExampleSet, Features, Index,
    ItemIdx, ItemSpace, LoadedDataset, Matrix, Metrics, Model, ModelArtifacts, Registry, Reranker, RunInfo, RunStatus,
    Sampler, Tracker,
};
use funnel_kernels::par::{IntoParallelRefIterator, ParallelIterator};

use crate::checkpoint::{self, Checkpoint};
use crate::experiment::{Experiment, ExperimentSpec};
use crate::outcomes::{self, OutcomePlan};
use crate::report::{DatasetStats, Report, SampleUser, PLOTS};
use crate::retrieval::{self, RetrievalSpec, Retrieved};
use crate::run_folder::{
    self, BaselineResult, EpochRecord, RunMetrics, Timestamp, BASELINES, CANDIDATE_PROBABILITIES, INDEX, MODEL,
    RESOLVED, TEST_RANKS,
};
use crate::serving::Serving;
use crate::stages::StageClock;
use crate::training::{self, Trained, Trainer};

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

/// Users shown with their recommendations in the report.
const SAMPLE_USERS: usize = 3;
/// Recommendations shown per sample user.
const SAMPLE_K: usize = 10;

/// What a run is and where it writes: read by every stage.
pub struct RunContext<'a> {
    pub exp: &'a Experiment,
    pub reg: &'a Registry,
    pub opts: &'a RunOptions,
    pub run_dir: PathBuf,
    pub stamp: Timestamp,
    pub resolved: String,
    pub config_hash: String,
    pub started: Instant,
}

impl RunContext<'_> {
    fn spec(&self) -> &ExperimentSpec {
        &self.exp.spec
    }

    fn within(&self, kind: ComponentKind) -> String {
        self.spec().describe(kind)
    }
}

pub fn run(exp: &Experiment, reg: &Registry, opts: &RunOptions) -> Result<RunSummary> {
    let started = Instant::now();
    let spec = &exp.spec;
    let stamp = Timestamp::now();
    let resolved = run_folder::resolved_toml(exp);
    let config_hash = run_folder::config_hash(spec);
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
            let dir = run_folder::create_unique_dir(&opts.runs_dir.join(&spec.experiment.name), &stamp.compact)?;
            run_folder::write(&dir.join(RESOLVED), &resolved)?;
            (dir, None)
        }
    };
    eprintln!("run folder: {}", run_dir.display());
    let ctx = RunContext { exp, reg, opts, run_dir, stamp, resolved, config_hash, started };

    let cx = spec.build_cx();
    let c = &spec.tracking;
    let mut tracker =
        reg.build_tracker(&c.kind, c.params.clone(), &cx).with_context(|| ctx.within(ComponentKind::Tracking))?;
    let mut clock = StageClock::default();
    let data = match clock.time("load", || load(&ctx, &cx)) {
        Ok(data) => data,
        Err(e) => {
            // The tracker still shows the run, failed, with why.
            tracker.start(&run_info(&ctx, None))?;
            record_failure(&ctx, tracker.as_mut(), &format!("{e:#}"));
            return Err(e);
        }
    };
    tracker.start(&run_info(&ctx, Some(&data)))?;
    let outcome = stages(&ctx, &data, resume, tracker.as_mut(), &mut clock);
    match &outcome {
        Ok(_) => tracker.finish(RunStatus::Finished)?,
        Err(e) => record_failure(&ctx, tracker.as_mut(), &format!("{e:#}")),
    }
    outcome
}

/// A failed run's report, written to the run folder and given to the
/// tracker with the error and what the run had written; the original error
/// is what the caller sees, so failures here are only warned about.
fn record_failure(ctx: &RunContext<'_>, tracker: &mut dyn Tracker, error: &str) {
    let records = checkpoint::read(&ctx.run_dir.join(checkpoint::FILE)).map(|c| c.records).unwrap_or_default();
    let text = crate::report::failure(&ctx.spec().experiment.name, &ctx.run_dir, error, &records);
    let report = ctx.run_dir.join(run_folder::REPORT);
    let written = run_folder::write(&report, &text);
    let mut note = ctx.exp.description();
    if !note.is_empty() {
        note.push_str("\n\n");
    }
    note.push_str(&format!("**Failed:** {}", error.lines().next().unwrap_or(error)));
    let tags = [("funnel.error".to_string(), clip(error, ERROR_TAG_CHARS)), ("description".to_string(), note)];
    let logged = tracker.set_tags(&tags).and_then(|()| {
        for file in [RESOLVED, run_folder::REPORT, CANDIDATE_PROBABILITIES] {
            let path = ctx.run_dir.join(file);
            if path.is_file() {
                tracker.log_artifact(&path)?;
            }
        }
        Ok(())
    });
    for r in [written, logged, tracker.finish(RunStatus::Failed)] {
        if let Err(e) = r {
            eprintln!("warning: recording the failure: {e:#}");
        }
    }
}

/// Longest error kept in a tag; the whole text is in the failure report.
const ERROR_TAG_CHARS: usize = 4000;

fn clip(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}...", &text[..at]),
        None => text.to_string(),
    }
}

/// Stage `load`: the dataset.
fn load(ctx: &RunContext<'_>, cx: &BuildCx) -> Result<LoadedDataset> {
    let c = &ctx.spec().dataset;
    let within = || ctx.within(ComponentKind::Dataset);
    let dataset = ctx.reg.build_dataset(&c.kind, c.params.clone(), cx).with_context(within)?;
    let started = Instant::now();
    let data = dataset.load().with_context(within)?;
    eprintln!(
        "dataset {}: {} users, {} items, {} positives ({:.2} s)",
        data.name,
        data.n_users(),
        data.n_items(),
        data.interactions.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(data)
}

/// What the tracker is told when the run starts.
fn run_info(ctx: &RunContext<'_>, data: Option<&LoadedDataset>) -> RunInfo {
    let (exp, spec) = (ctx.exp, ctx.spec());
    let mut tags = vec![
        ("funnel.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        ("config.hash".into(), ctx.config_hash.clone()),
        ("funnel.seed".into(), spec.experiment.seed.to_string()),
        ("host".into(), run_folder::host_name()),
    ];
    if let Some(data) = data {
        tags.push(("dataset.name".into(), data.name.clone()));
        tags.push(("dataset.sha256".into(), data.checksum.clone()));
    }
    if !exp.overrides.is_empty() {
        tags.push(("funnel.overrides".into(), exp.overrides.join("; ")));
    }
    if let Some(t) = &exp.trial {
        tags.push(("funnel.trial".into(), t.index.to_string()));
        tags.push(("funnel.configuration".into(), t.config.to_string()));
    }
    tags.extend(run_folder::git_tags(&exp.path));
    RunInfo {
        experiment: spec.experiment.name.clone(),
        run_name: exp.run_name(ctx.opts.parent.is_some()),
        run_dir: ctx.run_dir.clone(),
        params: spec.tracked_params(ctx.reg),
        tags,
        parent_run_dir: ctx.opts.parent.clone(),
        description: exp.description(),
        experiment_description: spec.experiment.description.clone(),
        source: exp.path.display().to_string(),
        user: run_folder::user_name(),
        dataset: data.map(dataset_input),
    }
}

/// The dataset as trackers record it: what funnel holds of it after
/// filtering.
fn dataset_input(data: &LoadedDataset) -> DatasetInput {
    let mut schema = vec![
        ("user".to_string(), "string".to_string()),
        ("item".into(), "string".into()),
        ("timestamp".into(), "long".into()),
    ];
    schema.extend(data.user_attributes.keys().map(|k| (format!("user.{k}"), "string".to_string())));
    if data.catalog.titles.iter().any(|t| !t.is_empty()) {
        schema.push(("item.title".into(), "string".into()));
    }
    if data.catalog.genres.iter().any(|g| !g.is_empty()) {
        schema.push(("item.categories".into(), "array<string>".into()));
    }
    DatasetInput {
        name: data.name.clone(),
        sha256: data.checksum.clone(),
        source: data.source.clone(),
        schema,
        profile: vec![
            ("users".into(), data.n_users() as u64),
            ("items".into(), data.n_items() as u64),
            ("positives".into(), data.interactions.len() as u64),
            ("rows_read".into(), data.raw_rows as u64),
        ],
    }
}

/// Every component but the dataset and tracker, built from the file before
/// training starts so that a bad entry fails early.
struct Components {
    sampler: Box<dyn Sampler>,
    model: Box<dyn Model>,
    evaluator: Box<dyn Evaluator>,
    index: Box<dyn Index>,
    /// `[[baselines]]` in file order, with their names.
    baselines: Vec<(String, Box<dyn Baseline>)>,
    /// `[rerank]`, when declared.
    reranker: Option<Box<dyn Reranker>>,
}

fn build_components(ctx: &RunContext<'_>, cx: &BuildCx) -> Result<Components> {
    let (spec, reg) = (ctx.spec(), ctx.reg);
    let c = &spec.sampler;
    let sampler =
        reg.build_sampler(&c.kind, c.params.clone(), cx).with_context(|| ctx.within(ComponentKind::Sampler))?;
    let c = &spec.model;
    let model = reg.build_model(&c.kind, c.params.clone(), cx).with_context(|| ctx.within(ComponentKind::Model))?;
    let c = &spec.evaluation;
    let evaluator =
        reg.build_evaluator(&c.kind, c.params.clone(), cx).with_context(|| ctx.within(ComponentKind::Evaluation))?;
    let c = &spec.index;
    let index = reg.build_index(&c.kind, c.params.clone(), cx).with_context(|| ctx.within(ComponentKind::Index))?;
    let mut baselines = Vec::with_capacity(spec.baselines.len());
    for ((i, c), name) in spec.baselines.iter().enumerate().zip(spec.baseline_names()) {
        let b = reg
            .build_baseline(&c.kind, c.params.clone(), cx)
            .with_context(|| spec.describe_entry(ComponentKind::Baseline, i))?;
        baselines.push((name, b));
    }
    let reranker = match &spec.rerank {
        Some(c) => {
            Some(reg.build_reranker(&c.kind, c.params.clone(), cx).with_context(|| ctx.within(ComponentKind::Rerank))?)
        }
        None => None,
    };
    Ok(Components { sampler, model, evaluator, index, baselines, reranker })
}

/// The stages after `load`.
fn stages(
    ctx: &RunContext<'_>,
    data: &LoadedDataset,
    resume: Option<Checkpoint>,
    tracker: &mut dyn Tracker,
    clock: &mut StageClock,
) -> Result<RunSummary> {
    let mut cx = BuildCx {
        n_users: data.n_users(),
        n_items: data.n_items(),
        n_categories: data.catalog.category_names().len(),
        ..ctx.spec().build_cx()
    };
    let mut examples = clock.time("examples", || build_examples(ctx, &cx, data))?;
    let plan = OutcomePlan::new(&ctx.spec().train, &examples)?;
    plan.apply(&mut examples);
    if plan.declared() {
        eprintln!("outcomes trained: {}", plan.describe());
    }
    let examples = examples;
    cx.learn_examples(&examples);
    let mut parts = build_components(ctx, &cx)?;
    let stats = DatasetStats::of(data, &examples, clock.seconds("load"));
    eprintln!(
        "examples: {} train, {} validation, {} test; model has {} parameters",
        stats.train_examples,
        stats.validation_cases,
        stats.test_cases,
        parts.model.parameter_count()
    );
    clock.time("sampler", || fit_sampler(ctx, data, &examples, &plan, parts.sampler.as_mut()))?;
    let trained = Trainer {
        model: parts.model.as_mut(),
        sampler: parts.sampler.as_mut(),
        evaluator: parts.evaluator.as_ref(),
        examples: &examples,
        cfg: &ctx.spec().train,
        seed: ctx.spec().experiment.seed,
        checkpoint: &ctx.run_dir.join(checkpoint::FILE),
        config_hash: &ctx.config_hash,
        n_items: data.n_items(),
        plan: &plan,
    }
    .train(resume, tracker, clock)?;
    parts.model.load_state(&trained.best_state)?;
    let test = clock.time("test", || test(ctx, data, &examples, &parts, &trained, &plan, tracker))?;
    let cases: Vec<EvalCase<'_>> =
        examples.test.iter().map(|&ex| EvalCase { seen: examples.seen(ex), target: examples.target(ex) }).collect();
    let baselines = evaluate_baselines(ctx, data.n_items(), &examples, &mut parts, &cases, clock)?;
    track_baselines(ctx, data, &baselines)?;
    let items = clock.time("model files", || save_model(ctx, data, &parts, &trained))?;
    let index_started = Instant::now();
    clock.time("index build", || parts.index.build(&items)).with_context(|| ctx.within(ComponentKind::Index))?;
    let build_seconds = index_started.elapsed().as_secs_f64();
    let catalog = CatalogFacts::of(data, &examples);
    let (serving, samples, served) = clock.time("serving", || {
        serve(ctx, data, &examples, &parts, &items, &cases, build_seconds, trained.best_epoch, &catalog, tracker)
    })?;
    let retrieved = match &ctx.spec().retrieval {
        Some(spec) => Some(clock.time("retrieval", || {
            let catalog = catalog.with_items(&items);
            retrieve(ctx, spec, &cx, data, &examples, &mut parts, &catalog, &served, tracker, trained.best_epoch)
        })?),
        None => None,
    };
    let selection = plan.selection_key(parts.evaluator.selection_metric());
    let published = Published { stats, trained, test, baselines, serving, samples, retrieved, selection };
    publish(ctx, &parts, published, tracker, clock)
}

/// Stage `examples`: the features turn the dataset into training examples
/// and validation and test cases.
fn build_examples(ctx: &RunContext<'_>, cx: &BuildCx, data: &LoadedDataset) -> Result<ExampleSet> {
    let c = &ctx.spec().features;
    let within = || ctx.within(ComponentKind::Features);
    let features: Box<dyn Features> = ctx.reg.build_features(&c.kind, c.params.clone(), cx).with_context(within)?;
    features.build(data).with_context(within)
}

/// Stage `sampler`: fitted on the training targets' counts; its q(item) is
/// written beside the run.
fn fit_sampler(
    ctx: &RunContext<'_>,
    data: &LoadedDataset,
    examples: &ExampleSet,
    plan: &OutcomePlan,
    sampler: &mut dyn Sampler,
) -> Result<()> {
    // Each training query's positive: an example once per trained outcome.
    let mut counts = vec![0u64; data.n_items()];
    for &ex in &examples.train {
        counts[examples.target(ex) as usize] += plan.trained(examples, ex).count() as u64;
    }
    sampler.fit(&counts, examples).with_context(|| ctx.within(ComponentKind::Sampler))?;
    let q = sampler.item_probabilities();
    let mut q_table = String::from("item_id\ttraining_count\texpected_copies_per_batch\n");
    for (i, p) in q.iter().enumerate() {
        q_table.push_str(&format!("{}\t{}\t{p:.6e}\n", data.catalog.raw_ids[i], counts[i]));
    }
    run_folder::write(&ctx.run_dir.join(CANDIDATE_PROBABILITIES), &q_table)
}

/// Stage `test`: the best epoch's model ranks every test user's held-out
/// item against the full catalog; per-user ranks are kept for paired tests
/// between runs.
fn test(
    ctx: &RunContext<'_>,
    data: &LoadedDataset,
    examples: &ExampleSet,
    parts: &Components,
    trained: &Trained,
    plan: &OutcomePlan,
    tracker: &mut dyn Tracker,
) -> Result<Metrics> {
    let (model, evaluator) = (parts.model.as_ref(), parts.evaluator.as_ref());
    let mut tested = training::evaluate(model, evaluator, examples, &examples.test).context("test evaluation")?;
    tested.metrics.extend(plan.evaluate(model, evaluator, examples, &examples.test).context("test evaluation")?);
    if !examples.feedback.is_empty() {
        let users = model.user_vectors(&examples.serving_queries(&examples.test))?;
        let items = model.item_vectors()?;
        if let Some(share) = outcomes::disliked_at(examples, &examples.test, &users, &items)? {
            tested.metrics.insert(format!("disliked@{}", outcomes::DISLIKED_AT), share);
        }
    }
    let mut ranks = String::from("user_id\ttarget_item_id\trank\n");
    for (ex, rank) in examples.test.iter().zip(&tested.ranks) {
        let (user, item) = (&data.user_raw_ids[ex.user as usize], &data.catalog.raw_ids[examples.target(*ex) as usize]);
        ranks.push_str(&format!("{user}\t{item}\t{rank}\n"));
    }
    run_folder::write(&ctx.run_dir.join(TEST_RANKS), &ranks)?;
    // The selected epoch's validation metrics under their own keys: the
    // runs table sorts by them as the sweep report does, where the last
    // `epoch/validation/*` value is only the last epoch's.
    let at_best = &trained.epochs[trained.best_epoch - 1].validation;
    let final_metrics: Metrics = tested
        .metrics
        .iter()
        .map(|(k, v)| (format!("test/{k}"), *v))
        .chain(at_best.iter().map(|(k, v)| (format!("validation_at_best/{k}"), *v)))
        .chain([("best_epoch".to_string(), trained.best_epoch as f64)])
        .collect();
    tracker.log_metrics(trained.best_epoch as u64, &final_metrics)?;
    Ok(tested.metrics)
}

/// Stages `baseline <name>`: every `[[baselines]]` entry fitted on the
/// training examples and ranked by the evaluator on the test `cases` over
/// the full catalog, exactly as the model was.
fn evaluate_baselines(
    ctx: &RunContext<'_>,
    n_items: usize,
    examples: &ExampleSet,
    parts: &mut Components,
    cases: &[EvalCase<'_>],
    clock: &mut StageClock,
) -> Result<Vec<BaselineResult>> {
    let spec = ctx.spec();
    let evaluator = parts.evaluator.as_ref();
    let mut results = Vec::with_capacity(parts.baselines.len());
    for (i, (name, baseline)) in parts.baselines.iter_mut().enumerate() {
        let within = || spec.describe_entry(ComponentKind::Baseline, i);
        let result = clock.time(&format!("baseline {name}"), || -> Result<BaselineResult> {
            let fit_started = Instant::now();
            baseline.fit(examples, n_items).with_context(within)?;
            let fit_seconds = fit_started.elapsed().as_secs_f64();
            let evaluate_started = Instant::now();
            let scorer = BaselineScorer { baseline: baseline.as_ref(), examples, cases: &examples.test };
            let evaluation = evaluator.evaluate_scores(&scorer, n_items, cases).with_context(within)?;
            let evaluate_seconds = evaluate_started.elapsed().as_secs_f64();
            // Validation too, where a baseline's own parameters are tuned.
            let validation_cases: Vec<EvalCase<'_>> = examples
                .validation
                .iter()
                .map(|&ex| EvalCase { seen: examples.seen(ex), target: examples.target(ex) })
                .collect();
            let scorer = BaselineScorer { baseline: baseline.as_ref(), examples, cases: &examples.validation };
            let validation = evaluator.evaluate_scores(&scorer, n_items, &validation_cases).with_context(within)?;
            Ok(BaselineResult {
                name: name.clone(),
                kind: spec.baselines[i].kind.clone(),
                test: evaluation.metrics,
                validation: validation.metrics,
                fit_summary: baseline.fit_summary(),
                parameters: baseline.parameter_count(),
                fit_seconds,
                evaluate_seconds,
            })
        })?;
        let headline = result.test.get(evaluator.selection_metric()).copied().unwrap_or(f64::NAN);
        let validation = result.validation.get(evaluator.selection_metric()).copied().unwrap_or(f64::NAN);
        eprintln!(
            "baseline {}: validation {} {validation:.4}, test {headline:.4} (fit {:.2} s, ranked in {:.2} s)",
            result.name,
            evaluator.selection_metric(),
            result.fit_seconds,
            result.evaluate_seconds
        );
        if let Some(summary) = &result.fit_summary {
            eprintln!("baseline {}: {summary}", result.name);
        }
        results.push(result);
    }
    Ok(results)
}

/// Each baseline as a run of its own nested under this one, with its
/// parameters and its `test/*` metrics under the same keys as the model's,
/// so trackers compare them side by side (and the model run's charts stay
/// its own). Folders: `<run>/baselines/<name>/`.
fn track_baselines(ctx: &RunContext<'_>, data: &LoadedDataset, baselines: &[BaselineResult]) -> Result<()> {
    let spec = ctx.spec();
    let c = &spec.tracking;
    let shared: Vec<(String, String)> = spec
        .tracked_params(ctx.reg)
        .into_iter()
        .filter(|(k, _)| ["dataset.", "features.", "evaluation.", "experiment."].iter().any(|p| k.starts_with(p)))
        .collect();
    for (i, b) in baselines.iter().enumerate() {
        let dir =
            ctx.run_dir.join(BASELINES).join(b.name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "-"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let within = || spec.describe_entry(ComponentKind::Baseline, i);
        let mut tracker = ctx.reg.build_tracker(&c.kind, c.params.clone(), &spec.build_cx()).with_context(within)?;
        let mut params = vec![("baseline.type".to_string(), b.kind.clone())];
        crate::experiment::flatten_into("baseline", &toml::Value::Table(spec.baselines[i].params.clone()), &mut params);
        params.extend(shared.iter().cloned());
        tracker.start(&RunInfo {
            experiment: spec.experiment.name.clone(),
            // Nested under the run, so its own name need only say which.
            run_name: format!("{} · baseline {}", spec.experiment.name, b.name),
            run_dir: dir.clone(),
            params,
            tags: vec![
                ("funnel.version".into(), env!("CARGO_PKG_VERSION").into()),
                ("funnel.baseline".into(), b.name.clone()),
                ("config.hash".into(), ctx.config_hash.clone()),
                ("dataset.name".into(), data.name.clone()),
                ("dataset.sha256".into(), data.checksum.clone()),
            ],
            parent_run_dir: Some(ctx.run_dir.clone()),
            description: format!(
                "Baseline `{}` ({}) of this run, ranked on the same test cases over the full catalog.",
                b.name, b.kind
            ),
            experiment_description: spec.experiment.description.clone(),
            source: ctx.exp.path.display().to_string(),
            user: run_folder::user_name(),
            dataset: Some(dataset_input(data)),
        })?;
        tracker.log_metrics(0, &b.tracker_metrics())?;
        tracker.finish(RunStatus::Finished)?;
    }
    Ok(())
}

/// A baseline as the evaluator sees it: case `c` is example `cases[c]`,
/// with the user's whole history before it.
struct BaselineScorer<'a> {
    baseline: &'a dyn Baseline,
    examples: &'a ExampleSet,
    cases: &'a [funnel_api::Example],
}

impl CaseScorer for BaselineScorer<'_> {
    fn score(&self, case: usize, out: &mut [f32]) {
        let ex = self.cases[case];
        self.baseline.score(ex.user, self.examples.seen(ex), out);
    }

    fn shared_base(&self) -> Option<&[f32]> {
        self.baseline.shared_base()
    }

    fn sparse(&self, case: usize, out: &mut funnel_api::SparseScores) {
        let ex = self.cases[case];
        self.baseline.sparse_score(ex.user, self.examples.seen(ex), out);
    }
}

/// Stage `model files`: the item vectors (Arrow) and the best model, which
/// `funnel recommend` loads.
fn save_model(ctx: &RunContext<'_>, data: &LoadedDataset, parts: &Components, trained: &Trained) -> Result<Matrix> {
    let items = parts.model.item_vectors()?;
    crate::item_vectors::write(&ctx.run_dir.join(crate::item_vectors::FILE), &items, &data.catalog)?;
    let final_state = Checkpoint {
        config_hash: ctx.config_hash.clone(),
        epoch: trained.best_epoch,
        records: Vec::new(),
        best_epoch: trained.best_epoch,
        best_score: trained.epochs[trained.best_epoch - 1]
            .validation
            .get(parts.evaluator.selection_metric())
            .copied()
            .unwrap_or_default(),
        best_state: trained.best_state.clone(),
        model: Default::default(),
        sampler: Default::default(),
    };
    checkpoint::write(&ctx.run_dir.join(MODEL), &final_state)?;
    Ok(items)
}

/// Stage `serving`: every test user's query through the built index,
/// measured against exact search; the index saved for `funnel recommend`;
/// a few users' recommendations for the report.
#[allow(clippy::too_many_arguments)]
fn serve(
    ctx: &RunContext<'_>,
    data: &LoadedDataset,
    examples: &ExampleSet,
    parts: &Components,
    items: &Matrix,
    cases: &[EvalCase<'_>],
    build_seconds: f64,
    best_epoch: usize,
    catalog: &CatalogFacts,
    tracker: &mut dyn Tracker,
) -> Result<(Serving, Vec<SampleUser>, Vec<Vec<ItemIdx>>)> {
    let within = || ctx.within(ComponentKind::Index);
    let (model, index) = (parts.model.as_ref(), parts.index.as_ref());
    let users = model.user_vectors(&examples.serving_queries(&examples.test))?;
    eprintln!("serving: answering {} test queries through the index", cases.len());
    let (mut serving, lists) =
        crate::serving::measure(index, build_seconds, items, &users, cases, parts.evaluator.as_ref())
            .with_context(within)?;
    // What users are shown, beyond accuracy: diversity, coverage, novelty,
    // concentration of exposure.
    let cut = parts.evaluator.cutoffs().first().copied().unwrap_or(serving.k);
    let shown: Vec<Vec<ItemIdx>> = lists.iter().map(|l| l.iter().take(cut).copied().collect()).collect();
    serving.beyond = crate::serving::beyond_accuracy(&shown, cut, &catalog.with_items(items));
    tracker.log_metrics(best_epoch as u64, &serving.metrics())?;
    let index_dir = ctx.run_dir.join(INDEX);
    let _ = std::fs::remove_dir_all(&index_dir);
    std::fs::create_dir_all(&index_dir).with_context(|| format!("creating {}", index_dir.display()))?;
    index.save(&index_dir).with_context(within)?;
    let mut samples = Vec::new();
    let n_test = examples.test.len();
    for s in 0..SAMPLE_USERS.min(n_test) {
        let ex = examples.test[s * n_test / SAMPLE_USERS];
        let user = model.user_vectors(&examples.serving_queries(&[ex]))?;
        let top = index.search(user.row(0), SAMPLE_K, examples.seen(ex))?;
        samples.push(SampleUser {
            user_id: data.user_raw_ids[ex.user as usize].clone(),
            recent: examples.history(ex).iter().rev().take(5).map(|&i| data.catalog.display(i)).collect(),
            target: data.catalog.display(examples.target(ex)),
            recommended: top.iter().map(|&(i, _)| (data.catalog.display(i), i == examples.target(ex))).collect(),
        });
    }
    Ok((serving, samples, lists))
}

/// What the beyond-accuracy measures read about the catalog besides the
/// item vectors: categories as small ids, training positives per item.
struct CatalogFacts {
    categories: Vec<Vec<u32>>,
    n_categories: usize,
    counts: Vec<u64>,
}

impl CatalogFacts {
    fn of(data: &LoadedDataset, examples: &ExampleSet) -> CatalogFacts {
        let mut counts = vec![0u64; data.n_items()];
        for &ex in &examples.train {
            counts[examples.target(ex) as usize] += 1;
        }
        CatalogFacts {
            categories: data.catalog.category_ids(),
            n_categories: data.catalog.category_names().len(),
            counts,
        }
    }

    fn with_items<'a>(&'a self, items: &'a Matrix) -> crate::serving::Catalog<'a> {
        crate::serving::Catalog {
            items,
            categories: &self.categories,
            n_categories: self.n_categories,
            counts: &self.counts,
        }
    }
}

/// Stage `retrieval` (with `[retrieval]`): every source proposes its best
/// items for each test user, merged into one candidate set per user; the
/// shown lists (the candidates by relevance, and as `[rerank]` orders them,
/// at each setting of its trade-off) are measured for accuracy and beyond
/// beside the model's own top K (`model_lists`: what serving fetched per
/// test user). K is `[rerank]`'s `shown()`, else the evaluator's first
/// cutoff. Baseline sources are fitted here on the training examples.
#[allow(clippy::too_many_arguments)]
fn retrieve(
    ctx: &RunContext<'_>,
    spec: &RetrievalSpec,
    cx: &BuildCx,
    data: &LoadedDataset,
    examples: &ExampleSet,
    parts: &mut Components,
    catalog: &crate::serving::Catalog<'_>,
    model_lists: &[Vec<ItemIdx>],
    tracker: &mut dyn Tracker,
    best_epoch: usize,
) -> Result<Retrieved> {
    let started = Instant::now();
    let fetch = spec.candidates;
    let cases = &examples.test;
    let mut per_source: Vec<Vec<Vec<(ItemIdx, f32)>>> = Vec::with_capacity(spec.sources.len());
    for (i, source) in spec.sources.iter().enumerate() {
        let within = || format!("[[retrieval.sources]] #{} type = \"{}\"", i + 1, source.kind);
        let lists = if source.kind == retrieval::MODEL_SOURCE {
            let users = parts.model.user_vectors(&examples.serving_queries(cases))?;
            let excludes: Vec<&[ItemIdx]> = cases.iter().map(|&ex| examples.seen(ex)).collect();
            parts.index.search_batch(&users, fetch, &excludes).with_context(within)?
        } else {
            let mut b = ctx.reg.build_baseline(&source.kind, source.params.clone(), cx).with_context(within)?;
            b.fit(examples, data.n_items()).with_context(within)?;
            let b = b.as_ref();
            cases
                .par_iter()
                .map_init(
                    || vec![0f32; data.n_items()],
                    |scores, &ex| {
                        let seen = examples.seen(ex);
                        b.score(ex.user, seen, scores);
                        let mut top = funnel_kernels::TopK::new(fetch);
                        for (item, &s) in scores.iter().enumerate() {
                            if !seen.contains(&(item as ItemIdx)) {
                                top.push(item as ItemIdx, s);
                            }
                        }
                        top.into_sorted()
                    },
                )
                .collect()
        };
        per_source.push(lists);
    }
    let quotas: Vec<usize> = spec.sources.iter().map(|s| s.quota).collect();
    let evaluator = parts.evaluator.as_ref();
    let shown =
        parts.reranker.as_ref().and_then(|r| r.shown()).or_else(|| evaluator.cutoffs().first().copied()).unwrap_or(10);
    let targets: Vec<ItemIdx> = cases.iter().map(|&ex| examples.target(ex)).collect();
    let measure = |lists: &[Vec<ItemIdx>]| retrieval::Shown {
        metrics: retrieval::list_metrics(lists, &targets, shown, evaluator),
        beyond: crate::serving::beyond_accuracy(lists, shown, catalog),
    };
    let mut given = vec![0usize; spec.sources.len()];
    let mut found = 0usize;
    let mut merged = Vec::with_capacity(cases.len());
    for (u, target) in targets.iter().enumerate() {
        let user_lists: Vec<Vec<(ItemIdx, f32)>> = per_source.iter().map(|s| s[u].clone()).collect();
        let candidates = retrieval::merge(&user_lists, &quotas, spec.candidates);
        for c in &candidates {
            given[c.source] += 1;
        }
        found += usize::from(candidates.iter().any(|c| c.item == *target));
        merged.push(candidates);
    }
    let by_relevance: Vec<Vec<ItemIdx>> = merged.iter().map(|c| retrieval::by_relevance(c, shown)).collect();
    let n = cases.len().max(1) as f64;
    let mut retrieved = Retrieved {
        candidates: spec.candidates,
        sources: spec.sources.iter().zip(&given).map(|(s, &g)| (s.kind.clone(), s.quota, g as f64 / n)).collect(),
        candidate_recall: found as f64 / n,
        shown,
        merged: measure(&by_relevance),
        model_alone: measure(
            &model_lists.iter().map(|l| l.iter().take(shown).copied().collect::<Vec<_>>()).collect::<Vec<_>>(),
        ),
        seconds: 0.0,
        ..Retrieved::default()
    };
    if let Some(reranker) = parts.reranker.as_mut() {
        let within = || ctx.within(ComponentKind::Rerank);
        reranker.prepare(&ItemSpace { vectors: catalog.items, categories: catalog.categories }).with_context(within)?;
        let scored: Vec<Vec<(ItemIdx, f32)>> =
            merged.iter().map(|c| c.iter().map(|c| (c.item, c.relevance)).collect()).collect();
        let rerank_all =
            |r: &dyn Reranker| -> Vec<Vec<ItemIdx>> { scored.par_iter().map(|c| r.rerank(c, shown)).collect() };
        let rerank_started = Instant::now();
        let lists = rerank_all(reranker.as_ref());
        retrieved.rerank_seconds = rerank_started.elapsed().as_secs_f64();
        retrieved.reranked = Some(measure(&lists));
        if let Some(t) = reranker.tradeoff() {
            retrieved.tradeoff_parameter = t.parameter.to_string();
            retrieved.tradeoff = t.settings.iter().map(|(v, r)| (*v, measure(&rerank_all(r.as_ref())))).collect();
        }
    }
    retrieved.seconds = started.elapsed().as_secs_f64();
    tracker.log_metrics(best_epoch as u64, &retrieved.tracker_metrics())?;
    Ok(retrieved)
}

/// What the publish stage writes up.
struct Published {
    stats: DatasetStats,
    trained: Trained,
    test: Metrics,
    baselines: Vec<BaselineResult>,
    serving: Serving,
    samples: Vec<SampleUser>,
    retrieved: Option<Retrieved>,
    /// The validation metric that picked the best epoch.
    selection: String,
}

/// Stages `report` and `tracking`: charts, the Markdown report (in the run
/// folder and under `reports/`), `metrics.json`, then every artifact to the
/// tracker.
fn publish(
    ctx: &RunContext<'_>,
    parts: &Components,
    p: Published,
    tracker: &mut dyn Tracker,
    clock: &mut StageClock,
) -> Result<RunSummary> {
    let spec = ctx.spec();
    let run_dir = &ctx.run_dir;
    let selection = p.selection.clone();
    let best_epoch = p.trained.best_epoch;
    let report_path =
        ctx.opts.reports_dir.join(&spec.experiment.name).join(format!("{}.md", run_folder::run_name(run_dir)));
    let measured = clock.stages.clone();
    let (plots, mut metrics) = clock.time("report", || -> Result<(Vec<(String, String)>, RunMetrics)> {
        let mut plots = write_plots(run_dir, &p.trained.epochs, best_epoch, &selection)?;
        if let Some(r) = p.retrieved.as_ref().filter(|r| !r.tradeoff.is_empty()) {
            plots.push(write_tradeoff_plot(run_dir, r)?);
        }
        let train_seconds: f64 = p.trained.epochs.iter().map(|r| r.train_seconds).sum();
        let trained_examples: f64 = p.trained.epochs.iter().map(|r| r.examples_per_second * r.train_seconds).sum();
        let metrics = RunMetrics {
            experiment: spec.experiment.name.clone(),
            description: spec.experiment.description.clone(),
            config_hash: ctx.config_hash.clone(),
            sampler: spec.sampler.kind.clone(),
            model: spec.model.kind.clone(),
            parameters: parts.model.parameter_count(),
            epochs: p.trained.epochs.len(),
            best_epoch,
            validation_at_best: p.trained.epochs[best_epoch - 1].validation.clone(),
            test: p.test.clone(),
            examples_per_second: trained_examples / train_seconds.max(1e-9),
            train_seconds,
            wall_seconds: ctx.started.elapsed().as_secs_f64(),
            serving: Some(p.serving.clone()),
            baselines: p.baselines.iter().map(|b| (b.name.clone(), b.clone())).collect(),
            stages: measured,
            headline_metrics: parts.evaluator.headline_metrics(),
            retrieval: p.retrieved.clone(),
        };
        let report = Report {
            experiment: spec.experiment.clone(),
            started: ctx.stamp.readable.clone(),
            experiment_file: ctx.exp.path.display().to_string(),
            run_dir: run_dir.display().to_string(),
            resolved: ctx.resolved.clone(),
            dataset: p.stats,
            parameters: metrics.parameters,
            selection_metric: selection.clone(),
            epochs: p.trained.epochs.clone(),
            best_epoch,
            test: p.test.clone(),
            baselines: p.baselines.clone(),
            wall_seconds: metrics.wall_seconds,
            samples: p.samples,
            serving: Some((spec.index.kind.clone(), p.serving)),
            plots: plots.iter().map(|(caption, file)| (caption.clone(), format!("{PLOTS}/{file}"))).collect(),
            stages: metrics.stages.clone(),
            headline: metrics.headline_metrics.clone(),
            retrieval: p.retrieved.clone(),
        };
        let charts: Vec<String> = plots.iter().map(|(_, file)| file.clone()).collect();
        crate::report::publish(&report.render(), run_dir, &charts, &report_path)?;
        metrics.write(run_dir)?;
        Ok((plots, metrics))
    })?;
    clock.time("tracking", || -> Result<()> {
        for artifact in [RESOLVED, run_folder::REPORT, run_folder::METRICS, CANDIDATE_PROBABILITIES, TEST_RANKS] {
            tracker.log_artifact(&run_dir.join(artifact))?;
        }
        for (_, file) in &plots {
            tracker.log_artifact(&run_dir.join(PLOTS).join(file))?;
        }
        tracker.log_model(&model_artifacts(ctx, best_epoch)?)
    })?;
    // The tracker has the file as it stood; the folder's copy gains the
    // report and tracking stages themselves.
    metrics.stages.clone_from(&clock.stages);
    metrics.write(run_dir)?;
    eprintln!("report: {}", report_path.display());
    Ok(RunSummary { run_dir: run_dir.clone(), report: report_path, best_epoch, test: p.test })
}

/// The trained model as trackers store it: what `funnel recommend` loads
/// (weights, item vectors, the built index) and the configuration that
/// made it.
fn model_artifacts(ctx: &RunContext<'_>, best_epoch: usize) -> Result<ModelArtifacts> {
    let run_dir = &ctx.run_dir;
    let mut files: Vec<(PathBuf, String)> =
        [MODEL, crate::item_vectors::FILE, RESOLVED].iter().map(|f| (run_dir.join(f), f.to_string())).collect();
    let mut index: Vec<PathBuf> =
        std::fs::read_dir(run_dir.join(INDEX))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>()?;
    index.sort();
    for path in index {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        files.push((path, format!("{INDEX}/{name}")));
    }
    let spec = ctx.spec();
    let params = spec
        .tracked_params(ctx.reg)
        .into_iter()
        .filter(|(k, _)| k.starts_with("model.") || k.starts_with("index."))
        .collect();
    Ok(ModelArtifacts { name: spec.model.kind.clone(), files, params, step: best_epoch as u64 })
}

/// The re-ranker's trade-off: accuracy and diversity of the shown lists
/// at each setting, into `<run_dir>/plots/tradeoff.svg`.
fn write_tradeoff_plot(run_dir: &std::path::Path, r: &Retrieved) -> Result<(String, String)> {
    use crate::plot::{Chart, Series};
    let k = r.shown;
    let measures = [
        format!("recall@{k}"),
        format!("ndcg@{k}"),
        format!("ild_embedding@{k}"),
        format!("ild_categories@{k}"),
        format!("catalog_coverage@{k}"),
    ];
    let series = measures
        .iter()
        .filter_map(|m| {
            let points: Vec<(f64, f64)> = r
                .tradeoff
                .iter()
                .filter_map(|(v, shown)| shown.metrics.get(m).or_else(|| shown.beyond.get(m)).map(|y| (*v, *y)))
                .collect();
            (!points.is_empty()).then(|| Series { name: m.clone(), points })
        })
        .collect();
    let chart = Chart {
        title: format!("Accuracy against diversity by {}", r.tradeoff_parameter),
        x_label: r.tradeoff_parameter.clone(),
        y_label: format!("top {k} measure"),
        series,
        scatter: false,
        marker: None,
        log_x: false,
    };
    run_folder::write(&run_dir.join(PLOTS).join("tradeoff.svg"), &chart.svg())?;
    Ok(("Accuracy against diversity".to_string(), "tradeoff.svg".to_string()))
}

/// Per-epoch charts into `<run_dir>/plots/`: training loss, and the
/// validation metrics of the selection metric's family (every `recall@K`
/// when selecting by `recall@10`). Returns (caption, file name) pairs.
fn write_plots(
    run_dir: &std::path::Path,
    epochs: &[EpochRecord],
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
        run_folder::write(&run_dir.join(PLOTS).join(file), &chart.svg())?;
        out.push((caption.to_string(), file.to_string()));
    }
    Ok(out)
}
