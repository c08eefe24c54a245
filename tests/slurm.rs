//! `funnel sweep FILE --emit slurm` on a real one-node Slurm cluster
//! (`scripts/slurm-local.sh`): the array job trains every trial, the report
//! job collects them and, with MLflow (`TEST_MLFLOW_BIN`), the trials nest
//! under the sweep's parent run. Slow: installs Slurm when absent.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::mlflow_server::MlflowServer;
use crate::util::*;

/// How long the sweep may take once submitted.
const SWEEP_LIMIT: Duration = Duration::from_secs(600);

fn slurm_local(args: &[&str], limit: Duration) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-local.sh");
    Command::new("timeout")
        .arg(limit.as_secs().to_string())
        .arg("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("timeout and bash start")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The cluster `slurm-local.sh up` starts in a temp folder; `down` when
/// dropped, whether the test passed or not.
struct Cluster {
    conf: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn up() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        // The guard exists before `up`, so a half-started cluster is stopped too.
        let cluster = Cluster { conf: dir.path().join("slurm.conf"), dir };
        let out = slurm_local(&["up", cluster.dir.path().to_str().unwrap()], Duration::from_secs(150));
        assert!(out.status.success(), "slurm-local.sh up failed ({}):\n{}", out.status, text(&out.stderr));
        let export = format!("export SLURM_CONF={}", cluster.conf.display());
        assert_eq!(text(&out.stdout).trim(), export, "{}", text(&out.stderr));
        cluster
    }

    /// A Slurm client command against this cluster.
    fn client(&self, program: &str, args: &[&str]) -> String {
        let out = Command::new("timeout")
            .args(["30", program])
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .output()
            .unwrap_or_else(|e| panic!("{program} starts: {e}"));
        assert!(out.status.success(), "{program} {args:?}: {}\n{}", out.status, text(&out.stderr));
        text(&out.stdout)
    }

    /// The daemons' logs, for failure messages.
    fn logs(&self) -> String {
        let mut out = String::new();
        for name in ["log/slurmctld.log", "log/slurmd.log", "munge/munged.log"] {
            let log = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            out += &format!("----- {name}\n{}\n", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = slurm_local(&["down", self.dir.path().to_str().unwrap()], Duration::from_secs(120));
        if !out.status.success() {
            eprintln!("slurm-local.sh down failed ({}):\n{}", out.status, text(&out.stderr));
        }
    }
}

fn tag<'a>(run: &'a Value, key: &str) -> Option<&'a str> {
    run["data"]["tags"].as_array()?.iter().find(|t| t["key"] == key)?["value"].as_str()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|rd| rd.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn is_sweep(p: &Path) -> bool {
    p.file_name().unwrap().to_str().unwrap().starts_with("sweep-")
}

#[test]
fn a_sweep_emitted_for_slurm_runs_on_a_real_one_node_cluster() {
    if !slow_tests_enabled() {
        eprintln!("skipped: set RUN_SLOW_TESTS=1 (cargo xtask test does)");
        return;
    }
    let install = slurm_local(&["install"], Duration::from_secs(1200));
    if install.status.code() == Some(3) {
        eprintln!("skipped: Slurm cannot be installed here:\n{}", text(&install.stderr));
        return;
    }
    assert!(install.status.success(), "slurm-local.sh install failed ({}):\n{}", install.status, text(&install.stderr));
    let mlflow = MlflowServer::start();
    let cluster = Cluster::up();

    // base + 2 configurations, one seed: 3 runs.
    let dir = tempfile::tempdir().unwrap();
    let exp = synthetic_experiment(dir.path(), 30, 1).replace("ks = [10, 50]", "ks = [5, 10]")
        + "\n[sweep]\nmethod = \"grid\"\nmetric = \"recall@10\"\n[sweep.params]\n\"model.dim\" = [8, 16]\n";
    write(&dir.path().join("exp.toml"), &exp);
    let mut args = vec!["sweep", "exp.toml", "--emit", "slurm", "--jobs", "2"];
    let uri = mlflow.as_ref().map(|m| format!("tracking.tracking_uri={}", m.url));
    if let Some(uri) = &uri {
        args.extend(["--set", "tracking.type=mlflow", "--set", uri]);
    }
    funnel(dir.path(), &args).assert_success();
    let sweep_dir = files_under(&dir.path().join("runs/itest")).into_iter().find(|p| is_sweep(p)).unwrap();

    // Submitted as a user would, from the login node's shell; the jobs
    // inherit this environment (sbatch --export=ALL).
    let mut submit = Command::new("timeout");
    submit
        .arg("60")
        .arg("bash")
        .arg(sweep_dir.join("submit.sh"))
        .current_dir(dir.path())
        .env("SLURM_CONF", &cluster.conf)
        .env_remove("MLFLOW_TRACKING_URI");
    for (k, _) in std::env::vars() {
        if k.starts_with("FUNNEL_") {
            submit.env_remove(k);
        }
    }
    let submitted = submit.output().unwrap();
    assert!(submitted.status.success(), "submit.sh: {}\n{}", text(&submitted.stderr), cluster.logs());
    // "runs: job A (3 tasks); report: job R"
    let said = text(&submitted.stdout);
    let ids: Vec<&str> = said.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).collect();
    assert!(said.contains("(3 tasks)") && ids.len() == 3, "{said}");
    let (array_job, report_job) = (ids[0], ids[2]);

    let report_log = sweep_dir.join("logs/slurm-report.log");
    let job_logs = || -> String {
        files_under(&sweep_dir.join("logs"))
            .iter()
            .map(|p| format!("----- {}\n{}\n", p.display(), std::fs::read_to_string(p).unwrap_or_default()))
            .collect()
    };
    let started = Instant::now();
    let mut last = String::new();
    loop {
        let queue = cluster.client("squeue", &["--me", "-h", "-o", "%i %T %r"]);
        if queue.trim().is_empty() && report_log.is_file() {
            break;
        }
        if queue != last {
            eprintln!("[{:>3} s] squeue:\n{}", started.elapsed().as_secs(), queue.trim_end());
            last = queue.clone();
        }
        assert!(
            started.elapsed() < SWEEP_LIMIT,
            "the sweep did not finish within {SWEEP_LIMIT:?}; squeue:\n{queue}\n{}{}",
            job_logs(),
            cluster.logs()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    eprintln!("the sweep ran on Slurm in {:.0} s", started.elapsed().as_secs_f64());

    // Slurm's own word on each job (kept for MinJobAge = 300 s after it ends).
    let array_tasks = cluster.client("scontrol", &["-o", "show", "job", array_job]);
    assert_eq!(array_tasks.lines().count(), 3, "{array_tasks}");
    for job in array_tasks.lines().chain(cluster.client("scontrol", &["-o", "show", "job", report_job]).lines()) {
        assert!(
            job.contains("JobState=COMPLETED") && job.contains("ExitCode=0:0"),
            "{job}\n{}{}",
            job_logs(),
            cluster.logs()
        );
    }
    // Every trial finished; the report step found them all.
    let runs: Vec<PathBuf> = files_under(&dir.path().join("runs/itest")).into_iter().filter(|p| !is_sweep(p)).collect();
    assert_eq!(runs.len(), 3, "{runs:?}\n{}", job_logs());
    for run in &runs {
        assert!(run.join("metrics.json").is_file(), "{} did not finish\n{}", run.display(), job_logs());
    }
    let report_said = std::fs::read_to_string(&report_log).unwrap();
    assert_eq!(report_said.matches("finished before, reusing").count(), 3, "{report_said}");
    let reports: Vec<PathBuf> = files_under(&dir.path().join("reports/itest"))
        .into_iter()
        .filter(|p| is_sweep(p) && p.extension().is_some_and(|e| e == "md"))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}\n{report_said}");
    let report = std::fs::read_to_string(&reports[0]).unwrap();
    assert!(report.contains("## Best configuration"), "{report}");

    if let Some(mlflow) = &mlflow {
        let runs = mlflow.runs("itest");
        assert_eq!(runs.len(), 4, "parent + base + 2 trials: {runs:?}");
        let (parents, children): (Vec<&Value>, Vec<&Value>) =
            runs.iter().partition(|r| r["info"]["run_name"] == "itest · sweep");
        assert_eq!(parents.len(), 1, "{runs:?}");
        assert_eq!(parents[0]["info"]["status"], "FINISHED", "{}", parents[0]);
        let parent_id = parents[0]["info"]["run_id"].as_str().unwrap();
        for child in children {
            assert_eq!(tag(child, "mlflow.parentRunId"), Some(parent_id), "{child}");
            assert_eq!(child["info"]["status"], "FINISHED", "{child}");
        }
    } else {
        eprintln!("tracked locally: set TEST_MLFLOW_BIN to track the sweep into MLflow");
    }
}
