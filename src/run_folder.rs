//! A run folder and its files: where a run writes, how files are written
//! (atomically), what names them (timestamps, the configuration hash), and
//! the typed records other commands read back (`metrics.json` through
//! [`RunMetrics`], in one place).
//!
//! ```text
//! runs/<experiment>/<timestamp>/
//!   resolved.toml  journal.jsonl  checkpoint.bin  candidate_probabilities.tsv
//!   item_vectors.arrow  model.bin  index/  test_ranks.tsv  plots/*.svg
//!   metrics.json  report.md  (mlflow.json)
//! ```

use std::collections::BTreeMap;
use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use funnel_api::Metrics;
use serde::{Deserialize, Serialize};

use crate::experiment::{ComponentSpec, Experiment, ExperimentSpec};
use crate::serving::Serving;
use crate::stages::StageTime;

/// The configuration as resolved, every default written out.
pub const RESOLVED: &str = "resolved.toml";
/// What the run measured, as [`RunMetrics`].
pub const METRICS: &str = "metrics.json";
/// The run's Markdown report.
pub const REPORT: &str = "report.md";
/// The sampler's q(item) as a table: what the logQ correction subtracted.
pub const CANDIDATE_PROBABILITIES: &str = "candidate_probabilities.tsv";
/// Each test user's 0-based rank of their held-out item.
pub const TEST_RANKS: &str = "test_ranks.tsv";
/// The trained model (best epoch) in the checkpoint format.
pub const MODEL: &str = "model.bin";
/// Folder the built index is saved into.
pub const INDEX: &str = "index";
/// Folder of the baselines' own runs (`baselines/<name>/journal.jsonl`).
pub const BASELINES: &str = "baselines";

/// What one epoch did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub loss: f64,
    pub train_seconds: f64,
    pub examples_per_second: f64,
    /// Seconds the epoch's validation took (0 in checkpoints written before
    /// it was recorded).
    #[serde(default)]
    pub validation_seconds: f64,
    pub validation: Metrics,
}

/// How one `[[baselines]]` entry did on the test cases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BaselineResult {
    /// Its type, or `type#2`, ... for a later entry of the same type: the
    /// key of its entry in `metrics.json`.
    #[serde(skip)]
    pub name: String,
    /// Its `type`.
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub parameters: usize,
    #[serde(default)]
    pub fit_seconds: f64,
    #[serde(default)]
    pub evaluate_seconds: f64,
    /// The evaluator's metrics on the same test cases as the model.
    #[serde(flatten)]
    pub test: Metrics,
    /// The same on the validation cases, where a baseline's parameters are
    /// tuned.
    #[serde(default, skip_serializing_if = "Metrics::is_empty")]
    pub validation: Metrics,
    /// How fitting went, when the baseline says (an objective per iteration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit_summary: Option<String>,
}

impl BaselineResult {
    /// Flat metrics for the baseline's own run: `test/recall@10` (the
    /// model's keys), `validation/recall@10`, `parameters`, `fit_seconds`,
    /// `evaluate_seconds`.
    pub fn tracker_metrics(&self) -> Metrics {
        let mut m: Metrics = self.test.iter().map(|(k, v)| (format!("test/{k}"), *v)).collect();
        m.extend(self.validation.iter().map(|(k, v)| (format!("validation/{k}"), *v)));
        m.insert("parameters".into(), self.parameters as f64);
        m.insert("fit_seconds".into(), self.fit_seconds);
        m.insert("evaluate_seconds".into(), self.evaluate_seconds);
        m
    }
}

/// `metrics.json`: what a finished run measured. Written once at the end of
/// a run; its presence marks the run finished (sweeps reuse such runs by
/// `config_hash`). Fields added later read as their defaults from older runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunMetrics {
    pub experiment: String,
    pub description: String,
    pub config_hash: String,
    pub sampler: String,
    pub model: String,
    pub parameters: usize,
    pub epochs: usize,
    pub best_epoch: usize,
    pub validation_at_best: Metrics,
    pub test: Metrics,
    pub examples_per_second: f64,
    pub train_seconds: f64,
    pub wall_seconds: f64,
    pub serving: Option<Serving>,
    pub baselines: BTreeMap<String, BaselineResult>,
    /// Wall time and peak memory of each stage, in run order.
    pub stages: Vec<StageTime>,
    /// The evaluator's headline metrics, the columns comparisons show.
    pub headline_metrics: Vec<String>,
    /// What `[retrieval]` measured, when the experiment has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retrieval: Option<crate::retrieval::Retrieved>,
}

impl RunMetrics {
    /// Reads `<run_dir>/metrics.json`.
    pub fn read(run_dir: &Path) -> Result<RunMetrics> {
        let path = run_dir.join(METRICS);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut m: RunMetrics = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        for (name, b) in &mut m.baselines {
            b.name.clone_from(name);
        }
        Ok(m)
    }

    pub fn write(&self, run_dir: &Path) -> Result<()> {
        write(&run_dir.join(METRICS), &serde_json::to_string_pretty(self)?)
    }
}

/// Creates `<parent>/<name>`, or `<name>-2`, `-3`, ... when a concurrent run
/// took the name, so two runs never share a folder.
pub fn create_unique_dir(parent: &Path, name: &str) -> Result<PathBuf> {
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

/// Writes `text` to `path` atomically: a crash never leaves a half-written
/// file.
pub fn write(path: &Path, text: &str) -> Result<()> {
    write_with(path, |f| f.write_all(text.as_bytes()).map_err(Into::into))
}

/// Writes `path` atomically through `fill`: into a temporary file beside it,
/// synced, then renamed over `path`.
pub fn write_with(path: &Path, fill: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(parent).with_context(|| format!("writing {}", path.display()))?;
    fill(tmp.as_file_mut()).with_context(|| format!("writing {}", path.display()))?;
    tmp.as_file().sync_all().with_context(|| format!("syncing {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Fingerprint of a resolved configuration: equal hashes, equal runs.
/// `[sweep]` and `[tracking]` are left out: they say how to vary a run and
/// where to record it, not what ran, so extending a sweep or switching
/// trackers keeps finished runs.
pub fn config_hash(spec: &ExperimentSpec) -> String {
    let mut spec = spec.clone();
    spec.sweep = None;
    spec.tracking = ComponentSpec { kind: String::new(), params: toml::Table::new() };
    let mut h = fnv::FnvHasher::default();
    h.write(spec.to_toml().as_bytes());
    format!("{:016x}", h.finish())
}

/// The resolved configuration, headed by how it was produced.
pub fn resolved_toml(exp: &Experiment) -> String {
    let mut head = format!("# Resolved from {}", exp.path.display());
    for o in &exp.overrides {
        head.push_str(&format!("\n# --set {o}"));
    }
    if let Some(t) = &exp.trial {
        head.push_str(&format!("\n# --trial {}: --set {}", t.index, t.sets().join(" --set ")));
    }
    format!("{head}\n\n{}", exp.spec.to_toml())
}

/// The folder's own name (`20261124-071530`).
pub fn run_name(run_dir: &Path) -> String {
    run_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A run's start time in UTC.
pub struct Timestamp {
    /// `20261124-071530`, for folder and file names.
    pub compact: String,
    /// `2026-11-24 07:15:30 UTC`, for reports.
    pub readable: String,
}

impl Timestamp {
    pub fn now() -> Timestamp {
        Timestamp::at(chrono::Utc::now())
    }

    fn at(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
        Timestamp {
            compact: t.format("%Y%m%d-%H%M%S").to_string(),
            readable: t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        }
    }
}

/// The machine's name, as tags record where a run ran.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// Who runs funnel: $USER, else $LOGNAME, else $USERNAME, else what
/// `id -un` says (containers often set none of them), else "unknown".
pub fn user_name() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
        .or_else(|| {
            let out = std::process::Command::new("id").arg("-un").stderr(std::process::Stdio::null()).output().ok()?;
            let name = String::from_utf8(out.stdout).ok()?.trim().to_string();
            (out.status.success() && !name.is_empty()).then_some(name)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Which code made a run's numbers: `funnel.git.commit`/`funnel.git.dirty`
/// for the funnel build itself, and `git.commit`/`git.dirty` for the
/// repository holding the experiment file, when there is one.
pub fn git_tags(experiment_file: &Path) -> Vec<(String, String)> {
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

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        let t = Timestamp::at(chrono::Utc.timestamp_opt(1_795_000_000, 0).unwrap());
        assert_eq!(t.compact, "20261118-110640");
        assert_eq!(t.readable, "2026-11-18 11:06:40 UTC");
        assert_eq!(Timestamp::at(chrono::Utc.timestamp_opt(951_782_400, 0).unwrap()).compact, "20000229-000000");
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
    fn fnv_is_fnv1a_so_config_hashes_of_earlier_runs_still_match() {
        let fnv = |b: &[u8]| {
            let mut h = fnv::FnvHasher::default();
            h.write(b);
            h.finish()
        };
        assert_eq!(fnv(b""), 0xcbf29ce484222325);
        assert_eq!(fnv(b"a"), 0xaf63dc4c8601ec8c);
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/file.txt");
        write(&path, "one").unwrap();
        write(&path, "two").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
        let failed = write_with(&path, |_| anyhow::bail!("disk full"));
        assert!(failed.is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two", "a failed write keeps the old file");
        assert_eq!(std::fs::read_dir(dir.path().join("sub")).unwrap().count(), 1);
    }

    #[test]
    fn metrics_round_trip_and_older_files_read_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = RunMetrics { experiment: "e".into(), best_epoch: 3, ..Default::default() };
        m.test.insert("recall@10".into(), 0.25);
        m.baselines.insert(
            "covisitation#2".into(),
            BaselineResult {
                name: "covisitation#2".into(),
                kind: "covisitation".into(),
                parameters: 7,
                fit_seconds: 0.5,
                evaluate_seconds: 0.25,
                test: Metrics::from([("mrr".to_string(), 0.125)]),
                validation: Metrics::from([("mrr".to_string(), 0.25)]),
                fit_summary: Some("objective by sweep: 2.0 1.0".into()),
            },
        );
        m.write(dir.path()).unwrap();
        assert_eq!(RunMetrics::read(dir.path()).unwrap(), m);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(METRICS)).unwrap()).unwrap();
        assert_eq!(json["baselines"]["covisitation#2"]["mrr"], 0.125, "metrics sit flat beside the fields");
        assert_eq!(json["baselines"]["covisitation#2"]["type"], "covisitation");
        std::fs::write(dir.path().join(METRICS), r#"{"experiment": "old", "test": {"mrr": 0.5}}"#).unwrap();
        let old = RunMetrics::read(dir.path()).unwrap();
        assert_eq!((old.experiment.as_str(), old.test["mrr"], old.stages.len()), ("old", 0.5, 0));
    }
}
