//! Running a sweep: every trial (and the base configuration, per seed) as its
//! own `funnel run` process, `jobs` at a time, each nested under the sweep's
//! parent run in the tracker. Trials whose resolved configuration already
//! finished (same config hash) are reused, so an interrupted sweep re-run
//! completes instead of starting over.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use funnel_api::{Metrics, Registry, RunInfo, RunStatus};

use super::report::{self, Outcome};
use super::Job;
use crate::experiment::{self, Experiment};
use crate::run_folder::{config_hash, RunMetrics, Timestamp, METRICS};

/// How to run a sweep.
#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub runs_dir: PathBuf,
    pub reports_dir: PathBuf,
    /// Trials run at once, each its own process.
    pub jobs: usize,
    /// Continue this sweep folder (its parent run) instead of starting one.
    pub sweep_dir: Option<PathBuf>,
    /// The `funnel` executable that runs each trial.
    pub funnel: PathBuf,
}

/// The base experiment and every job of its sweep, each resolved (so a bad
/// value fails before anything runs).
pub fn plan(file: &Path, sets: &[String], registry: &Registry) -> Result<(Experiment, Vec<Job>)> {
    let base = experiment::load(file, sets, registry)?;
    let sweep = base.spec.sweep.clone().with_context(|| format!("{}: no [sweep] table", file.display()))?;
    let user_sets: Vec<String> = sets.iter().flat_map(|s| ["--set".to_string(), s.clone()]).collect();
    let seeds = if sweep.seeds.is_empty() { vec![base.spec.experiment.seed] } else { sweep.seeds.clone() };
    let mut jobs = Vec::new();
    for seed in seeds {
        let seed_set = format!("experiment.seed={seed}");
        let all: Vec<String> = sets.iter().cloned().chain([seed_set.clone()]).collect();
        let exp = experiment::load(file, &all, registry)?;
        let mut args = user_sets.clone();
        args.extend(["--set".to_string(), seed_set]);
        jobs.push(Job {
            label: "base".into(),
            config: None,
            seed,
            overrides: Vec::new(),
            args,
            config_hash: config_hash(&exp.spec),
        });
    }
    for t in base.trials()? {
        let exp = experiment::load_trial(file, sets, t.index, registry)?;
        let mut args = user_sets.clone();
        args.extend(["--trial".to_string(), t.index.to_string()]);
        jobs.push(Job {
            label: format!("trial {}", t.index),
            config: Some(t.config),
            seed: t.seed,
            overrides: t.overrides.clone(),
            args,
            config_hash: config_hash(&exp.spec),
        });
    }
    Ok((base, jobs))
}

/// Finished runs under `<runs_dir>/<experiment>/`, by config hash (the
/// newest when several match).
pub fn finished_runs(runs_dir: &Path, experiment: &str) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(runs_dir.join(experiment))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(METRICS).is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        if let Ok(m) = RunMetrics::read(&dir) {
            found.insert(m.config_hash, dir);
        }
    }
    found
}

/// Starts (or, for an existing sweep folder, continues) the sweep's own run
/// in the tracker: its trials nest under it.
pub fn start_parent(
    base: &Experiment,
    file: &Path,
    registry: &Registry,
    sweep_dir: &Path,
    runs: usize,
) -> Result<Box<dyn funnel_api::Tracker>> {
    let c = &base.spec.tracking;
    let mut tracker = registry
        .build_tracker(&c.kind, c.params.clone(), &base.spec.build_cx())
        .with_context(|| base.spec.describe(funnel_api::ComponentKind::Tracking))?;
    let mut params: Vec<(String, String)> =
        base.spec.flatten().into_iter().filter(|(k, _)| k.starts_with("sweep.")).collect();
    params.push(("experiment.name".into(), base.spec.experiment.name.clone()));
    params.push(("sweep.runs".into(), runs.to_string()));
    let mut tags = vec![("funnel.version".to_string(), env!("CARGO_PKG_VERSION").to_string())];
    if !base.overrides.is_empty() {
        tags.push(("funnel.overrides".into(), base.overrides.join("; ")));
    }
    tags.extend(crate::run_folder::git_tags(file));
    let mut description = format!(
        "Sweep of `{}` ({runs} runs, nested below): {}",
        file.display(),
        base.spec.experiment.description.trim()
    );
    if !base.overrides.is_empty() {
        let sets: Vec<String> = base.overrides.iter().map(|s| format!("`--set {s}`")).collect();
        description.push_str(&format!("\n\nEvery run has the overrides {}.", sets.join(", ")));
    }
    tracker.start(&RunInfo {
        experiment: base.spec.experiment.name.clone(),
        run_name: format!("{} · sweep", base.spec.experiment.name),
        run_dir: sweep_dir.to_path_buf(),
        params,
        tags,
        parent_run_dir: None,
        description,
        experiment_description: base.spec.experiment.description.clone(),
        source: file.display().to_string(),
        user: crate::run_folder::user_name(),
        dataset: None,
    })?;
    Ok(tracker)
}

/// What a finished sweep produced.
#[derive(Debug)]
pub struct SweepSummary {
    pub sweep_dir: PathBuf,
    pub report: PathBuf,
    pub failed: usize,
}

pub fn run(file: &Path, sets: &[String], registry: &Registry, opts: &SweepOptions) -> Result<SweepSummary> {
    let (base, jobs) = plan(file, sets, registry)?;
    let sweep = base.spec.sweep.clone().expect("plan checked the [sweep] table");
    let name = base.spec.experiment.name.clone();
    let stamp = Timestamp::now();
    let sweep_dir = match &opts.sweep_dir {
        Some(d) => d.clone(),
        None => crate::run_folder::create_unique_dir(&opts.runs_dir.join(&name), &format!("sweep-{}", stamp.compact))?,
    };
    let sweep_name = sweep_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    eprintln!("sweep folder: {} ({} runs)", sweep_dir.display(), jobs.len());

    let mut tracker = start_parent(&base, file, registry, &sweep_dir, jobs.len())?;

    let finished = finished_runs(&opts.runs_dir, &name);
    let mut outcomes: Vec<Option<Outcome>> = vec![None; jobs.len()];
    let mut pending: Vec<usize> = Vec::new();
    for (i, job) in jobs.iter().enumerate() {
        match finished.get(&job.config_hash) {
            Some(dir) => {
                eprintln!("{}: finished before, reusing {}", job.label, dir.display());
                outcomes[i] = Some(Outcome::read(job.clone(), dir));
            }
            None => pending.push(i),
        }
    }
    let logs = sweep_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let log_of = |job: &Job| logs.join(format!("{}-seed{}.log", job.label.replace(' ', "-"), job.seed));
    let mut active: Vec<(usize, Child, Instant)> = Vec::new();
    let mut queue = pending.into_iter();
    let total = jobs.len();
    let mut done = outcomes.iter().filter(|o| o.is_some()).count();
    loop {
        while active.len() < opts.jobs.max(1) {
            let Some(i) = queue.next() else { break };
            let job = &jobs[i];
            let log_path = log_of(job);
            let log = std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
            let child = Command::new(&opts.funnel)
                .arg("run")
                .arg(file)
                .args(&job.args)
                .arg("--parent-run")
                .arg(&sweep_dir)
                .arg("--runs-dir")
                .arg(&opts.runs_dir)
                .arg("--reports-dir")
                .arg(&opts.reports_dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {}", opts.funnel.display()))?;
            active.push((i, child, Instant::now()));
        }
        if active.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut still = Vec::new();
        for (i, mut child, started) in active {
            let Some(status) = child.try_wait()? else {
                still.push((i, child, started));
                continue;
            };
            let job = &jobs[i];
            let log_path = log_of(job);
            let outcome = if status.success() {
                match finished_runs(&opts.runs_dir, &name).get(&job.config_hash) {
                    Some(dir) => Outcome::read(job.clone(), dir),
                    None => Outcome::failed(
                        job.clone(),
                        format!("finished but left no run folder; see {}", log_path.display()),
                    ),
                }
            } else {
                Outcome::failed(job.clone(), format!("exited with {status}; see {}", log_path.display()))
            };
            done += 1;
            match (&outcome.error, outcome.validation(&sweep.metric)) {
                (None, Some(v)) => eprintln!(
                    "[{done}/{total}] {} (seed {}): validation {} {v:.4} in {:.0} s",
                    job.label,
                    job.seed,
                    sweep.metric,
                    started.elapsed().as_secs_f64()
                ),
                (None, None) => eprintln!("[{done}/{total}] {} (seed {}): done", job.label, job.seed),
                (Some(e), _) => eprintln!("[{done}/{total}] {} (seed {}): FAILED: {e}", job.label, job.seed),
            }
            if let Some(v) = outcome.validation(&sweep.metric) {
                tracker.log_metrics(i as u64, &Metrics::from([(format!("trial/validation/{}", sweep.metric), v)]))?;
            }
            outcomes[i] = Some(outcome);
        }
        active = still;
    }

    let outcomes: Vec<Outcome> = outcomes.into_iter().map(|o| o.expect("every job ran or was reused")).collect();
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    let report_path = opts.reports_dir.join(&name).join(format!("{sweep_name}.md"));
    // The base's evaluator turns the runs' per-user ranks into the metric.
    let c = &base.spec.evaluation;
    let evaluator = registry
        .build_evaluator(&c.kind, c.params.clone(), &base.spec.build_cx())
        .with_context(|| base.spec.describe(funnel_api::ComponentKind::Evaluation))?;
    let written =
        report::write(&base, file, &sweep, &outcomes, &sweep_dir, &report_path, &stamp.readable, evaluator.as_ref())?;
    if let Some((label, best)) = &written.best {
        tracker.log_metrics(total as u64, best)?;
        tracker.set_tags(&[("funnel.best".to_string(), label.clone())])?;
    }
    for artifact in &written.artifacts {
        tracker.log_artifact(artifact)?;
    }
    tracker.finish(if failed == 0 { RunStatus::Finished } else { RunStatus::Failed })?;
    if failed > 0 {
        bail!(
            "{failed} of {total} runs failed (their logs are in {}); the report covers the rest, and running the \
             sweep again retries only what did not finish",
            logs.display()
        );
    }
    Ok(SweepSummary { sweep_dir, report: report_path, failed })
}
