//! `[sweep]`: trials are listed, checked and runnable one by one.

use crate::util::*;

fn setup(sweep: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = experiment_toml(&shared_data().join("ml-100k"), 1) + sweep;
    write(&dir.path().join("exp.toml"), &text);
    dir
}

const GRID: &str = r#"
[sweep]
method = "grid"
seeds = [1, 2]
[sweep.params]
"model.dim" = [16, 32]
"#;

#[test]
fn plan_lists_every_trial_and_run_takes_one() {
    let dir = setup(GRID);
    let out = funnel(dir.path(), &["plan", "exp.toml"]);
    out.assert_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", out.stdout);
    assert_eq!(lines[3], "trial 3 (configuration 1, seed 2): --set 'model.dim=32' --set 'experiment.seed=2'");
    let out = funnel(dir.path(), &["run", "exp.toml", "--trial", "3", "--dry-run"]);
    out.assert_success();
    assert!(out.stdout.contains("dim = 32") && out.stdout.contains("seed = 2"), "{}", out.stdout);
    funnel(dir.path(), &["run", "exp.toml", "--trial", "4", "--dry-run"]).assert_error(&["--trial 4", "4 trials"]);
}

#[test]
fn a_trial_that_does_not_resolve_fails_the_plan() {
    let dir = setup("\n[sweep]\nmethod = \"grid\"\n[sweep.params]\n\"model.dim\" = [16, \"wide\"]\n");
    funnel(dir.path(), &["plan", "exp.toml"]).assert_error(&["trial 1", "key `dim`"]);
}

#[test]
fn a_trial_beyond_the_datas_limits_fails_the_plan_before_anything_trains() {
    let dir = setup("\n[sweep]\nmethod = \"grid\"\n[sweep.params]\n\"sampler.num_negatives\" = [5, 100000]\n");
    let out = funnel(dir.path(), &["plan", "exp.toml"]);
    out.assert_error(&["trial 1", "[sampler]", "num_negatives", "catalog"]);
    assert!(!dir.path().join("runs").exists(), "plan trains nothing");
    // `sweep` checks the same before starting any trial.
    let out = funnel(dir.path(), &["sweep", "exp.toml"]);
    out.assert_error(&["trial 1", "num_negatives", "catalog"]);
    assert!(!dir.path().join("runs").exists(), "no trial started");
}

#[test]
fn a_malformed_sweep_is_explained() {
    let dir = setup("\n[sweep]\nmethod = \"random\"\n[sweep.params]\n\"train.lr\" = [0.1]\n");
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&["exp.toml", "trials"]);
}

/// A sweep over a small synthetic catalog: 2 seeds x (base + 2 configurations).
fn synthetic_sweep(sweep_params: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let text = synthetic_experiment(dir.path(), 40, 2).replace("ks = [10, 50]", "ks = [5, 10]")
        + "\n[sweep]\nmethod = \"grid\"\nseeds = [1, 2]\nmetric = \"recall@10\"\n[sweep.params]\n"
        + sweep_params;
    write(&dir.path().join("exp.toml"), &text);
    dir
}

fn run_folders(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("runs/itest"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with("sweep-"))
        .collect();
    v.sort();
    v
}

fn sweep_report(dir: &std::path::Path) -> String {
    let reports: Vec<_> = std::fs::read_dir(dir.join("reports/itest"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name().unwrap().to_str().unwrap().starts_with("sweep-") && p.extension().is_some_and(|e| e == "md")
        })
        .collect();
    assert!(!reports.is_empty());
    std::fs::read_to_string(reports.iter().max().unwrap()).unwrap()
}

#[test]
fn a_sweep_runs_every_trial_reports_and_resumes_without_rerunning() {
    let dir = synthetic_sweep("\"model.dim\" = [8, 16]\n\"train.lr\" = [0.01]\n");
    let out = funnel(dir.path(), &["sweep", "exp.toml", "--jobs", "2"]);
    out.assert_success();
    let runs = run_folders(dir.path());
    assert_eq!(runs.len(), 6, "2 seeds x (base + 2 configurations): {runs:?}\n{}", out.stderr);
    for r in &runs {
        let journal = std::fs::read_to_string(r.join("journal.jsonl")).unwrap();
        assert!(journal.lines().next().unwrap().contains("\"parent\":"), "trials name their sweep: {journal}");
        assert!(r.join("test_ranks.tsv").is_file());
    }
    let report = sweep_report(dir.path());
    for needle in [
        "# Sweep: itest",
        "| rank | config | `model.dim` | `train.lr` | seeds | valid recall@10 |",
        "| base |",
        "## Best configuration",
        "## Is the best really better?",
        "(runner-up)",
        "## Metric versus parameter",
        "6 runs: 6 finished, 0 failed",
    ] {
        assert!(report.contains(needle), "report lacks {needle:?}:\n{report}");
    }
    assert!(report.contains(" ± "), "mean ± std over the two seeds:\n{report}");
    assert!(out.stderr.contains("[6/6]"), "{}", out.stderr);

    // Again: nothing reruns.
    let again = funnel(dir.path(), &["sweep", "exp.toml"]);
    again.assert_success();
    assert_eq!(again.stderr.matches("finished before, reusing").count(), 6, "{}", again.stderr);
    assert_eq!(run_folders(dir.path()).len(), 6);

    // A wider sweep runs only what is new.
    let text = std::fs::read_to_string(dir.path().join("exp.toml")).unwrap().replace("[8, 16]", "[8, 16, 24]");
    write(&dir.path().join("exp.toml"), &text);
    let wider = funnel(dir.path(), &["sweep", "exp.toml"]);
    wider.assert_success();
    assert_eq!(wider.stderr.matches("finished before, reusing").count(), 6, "{}", wider.stderr);
    assert_eq!(run_folders(dir.path()).len(), 8);
}

#[test]
fn failed_trials_are_reported_and_retried_on_the_next_sweep() {
    // A max_grad_norm of 1e-12 makes the divergence guard stop that configuration.
    let dir = synthetic_sweep("\"train.max_grad_norm\" = [1e-12, 10000.0]\n");
    let out = funnel(dir.path(), &["sweep", "exp.toml"]);
    out.assert_error(&["2 of 6 runs failed", "logs"]);
    let report = sweep_report(dir.path());
    assert!(report.contains("## Failed runs") && report.contains("6 runs: 4 finished, 2 failed"), "{report}");
    let again = funnel(dir.path(), &["sweep", "exp.toml"]);
    assert_eq!(again.stderr.matches("finished before, reusing").count(), 4, "{}", again.stderr);
}

#[test]
fn the_slurm_array_job_runs_each_trial_and_the_report_step_collects_them() {
    let dir = synthetic_sweep("\"model.dim\" = [8, 16]\n");
    let out = funnel(dir.path(), &["sweep", "exp.toml", "--emit", "slurm", "--jobs", "3"]);
    out.assert_success();
    let sweep_dir = std::fs::read_dir(dir.path().join("runs/itest")).unwrap().next().unwrap().unwrap().path();
    let (array, submit) = (sweep_dir.join("trials.sbatch"), sweep_dir.join("submit.sh"));
    let array_text = std::fs::read_to_string(&array).unwrap();
    assert!(array_text.contains("#SBATCH --array=0-5%3"), "{array_text}");
    for script in [&array, &submit] {
        let check = std::process::Command::new("bash").arg("-n").arg(script).status().unwrap();
        assert!(check.success(), "{} is not valid bash", script.display());
    }
    // Submitting with a stand-in `sbatch` that records its arguments.
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.path().join("sbatch.log");
    write(&bin.join("sbatch"), &format!("#!/bin/bash\necho \"$@\" >> {}\necho 41\n", log.display()));
    std::process::Command::new("chmod").arg("+x").arg(bin.join("sbatch")).status().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let submitted = std::process::Command::new("bash").arg(&submit).env("PATH", &path).output().unwrap();
    assert!(submitted.status.success(), "{}", String::from_utf8_lossy(&submitted.stderr));
    let calls = std::fs::read_to_string(&log).unwrap();
    assert!(calls.lines().next().unwrap().ends_with("trials.sbatch"), "{calls}");
    assert!(calls.contains("--dependency=afterany:41") && calls.contains(" sweep "), "{calls}");

    // Each array task, as Slurm would start it (the #SBATCH lines are comments to bash).
    for task in 0..6 {
        let run = std::process::Command::new("bash")
            .arg(&array)
            .env("SLURM_ARRAY_TASK_ID", task.to_string())
            .env_remove("MLFLOW_TRACKING_URI")
            .output()
            .unwrap();
        assert!(run.status.success(), "task {task}: {}", String::from_utf8_lossy(&run.stderr));
    }
    assert_eq!(run_folders(dir.path()).len(), 6);
    // The report step: every run is found finished.
    let report_step = funnel(dir.path(), &["sweep", "exp.toml", "--sweep-dir", sweep_dir.to_str().unwrap()]);
    report_step.assert_success();
    assert_eq!(report_step.stderr.matches("finished before, reusing").count(), 6, "{}", report_step.stderr);
    assert!(sweep_report(dir.path()).contains("## Best configuration"));
}

#[test]
fn ctrl_c_keeps_finished_runs_and_the_sweep_completes_when_run_again() {
    use std::os::unix::process::CommandExt;
    let dir = synthetic_sweep("\"model.dim\" = [8, 16]\n");
    // Its own process group, so the interrupt reaches the sweep and its runs
    // together, as Ctrl-C in a terminal does.
    let mut sweep = std::process::Command::new(env!("CARGO_BIN_EXE_funnel"))
        .current_dir(dir.path())
        .args(["sweep", "exp.toml"])
        .env_remove("MLFLOW_TRACKING_URI")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let finished = |dir: &std::path::Path| {
        std::fs::read_dir(dir.join("runs/itest"))
            .map(|rd| rd.flatten().filter(|e| e.path().join("metrics.json").is_file()).count())
            .unwrap_or(0)
    };
    let started = std::time::Instant::now();
    while finished(dir.path()) < 1 {
        assert!(started.elapsed() < std::time::Duration::from_secs(120), "no run finished");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SIGTERM rather than SIGINT: a suite started in the background inherits
    // an ignored SIGINT (POSIX shells do that to `&` jobs); both end the
    // group the same way.
    std::process::Command::new("kill").args(["-TERM", "--", &format!("-{}", sweep.id())]).status().unwrap();
    assert!(!sweep.wait().unwrap().success());
    let kept = finished(dir.path());
    assert!((1..6).contains(&kept), "interrupted after {kept} of 6 runs");

    let again = funnel(dir.path(), &["sweep", "exp.toml"]);
    again.assert_success();
    assert_eq!(again.stderr.matches("finished before, reusing").count(), kept, "{}", again.stderr);
    assert_eq!(finished(dir.path()), 6);
}
