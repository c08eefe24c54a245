//! Helpers: run the real binary, write experiment files and fixtures.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `../shared/data` beside the project root (MovieLens, never committed).
pub fn shared_data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data")
}

/// Slow tests train on ml-1m; `cargo xtask test` (and so CI) sets this.
pub fn slow_tests_enabled() -> bool {
    std::env::var_os("RUN_SLOW_TESTS").is_some_and(|v| v == "1")
}

pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    fn from(o: Output) -> Finished {
        Finished {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Asserts a clean failure: non-zero exit, one `error:` message containing
    /// every needle, and no panic or backtrace.
    #[track_caller]
    pub fn assert_error(&self, needles: &[&str]) {
        assert_eq!(self.code, Some(2), "expected exit code 2\nstderr:\n{}", self.stderr);
        assert!(!self.stderr.contains("panicked"), "panic:\n{}", self.stderr);
        assert!(self.stderr.contains("error: "), "no error line:\n{}", self.stderr);
        for n in needles {
            assert!(self.stderr.contains(n), "stderr lacks {n:?}:\n{}", self.stderr);
        }
    }

    #[track_caller]
    pub fn assert_success(&self) {
        assert_eq!(self.code, Some(0), "failed\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
    }
}

/// Runs `funnel ARGS` in `dir` with a clean `FUNNEL_*` environment and no
/// MLflow server from the developer's shell.
pub fn funnel(dir: &Path, args: &[&str]) -> Finished {
    funnel_with_env(dir, args, &[])
}

pub fn funnel_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_funnel"));
    cmd.current_dir(dir).args(args).env_remove("MLFLOW_TRACKING_URI");
    for (k, _) in std::env::vars() {
        if k.starts_with("FUNNEL_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    Finished::from(cmd.output().expect("the funnel binary starts"))
}

/// A complete experiment over ml-100k-layout data in `data_dir`; `extra` is
/// appended (later keys of the same table go in `--set`s instead).
pub fn experiment_toml(data_dir: &Path, epochs: usize) -> String {
    format!(
        r#"[experiment]
name = "itest"
seed = 7
description = "integration test"

[dataset]
type = "movielens"
variant = "ml-100k"
path = "{}"

[features]
type = "watch_history"
max_history = 20

[sampler]
type = "uniform"
num_negatives = 200

[model]
type = "youtube_dnn"
dim = 32
hidden = [64]

[train]
epochs = {epochs}
batch_size = 128
lr = 0.002

[evaluation]
type = "full_ranking"
ks = [10, 50]

[index]
type = "exact"

[tracking]
type = "local"
"#,
        data_dir.display()
    )
}

/// The experiment over a synthetic catalog written to `<dir>/data` (`users`
/// users with 12 positives each among 50 items), with few enough uniform
/// negatives for that catalog.
pub fn synthetic_experiment(dir: &Path, users: u32, epochs: usize) -> String {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    synthetic_ml100k(&data, users, 12);
    experiment_toml(&data, epochs).replace("num_negatives = 200", "num_negatives = 20")
}

/// Writes a synthetic ml-100k `u.data` (tab-separated) into `dir`: `users`
/// users each with `per_user` 5-star ratings of items drawn from a small
/// catalog in a repeating pattern, so a model can learn something.
pub fn synthetic_ml100k(dir: &Path, users: u32, per_user: u32) {
    let mut text = String::new();
    for u in 1..=users {
        for t in 0..per_user {
            let item = (u * 7 + t * 3) % 50 + 1;
            text.push_str(&format!("{u}\t{item}\t5\t{}\n", 1000 + t));
        }
    }
    std::fs::write(dir.join("u.data"), text).unwrap();
}

pub fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

/// Runs `funnel run` on `toml` (written as `dir/exp.toml`) with `--set`s,
/// runs into `runs`; returns the run folder of the `itest` experiment.
pub fn run_itest(dir: &Path, runs: &str, toml: &str, sets: &[&str]) -> std::path::PathBuf {
    write(&dir.join("exp.toml"), toml);
    let mut args = vec!["run", "exp.toml", "--runs-dir", runs, "--reports-dir", "reports"];
    for s in sets {
        args.extend(["--set", s]);
    }
    funnel(dir, &args).assert_success();
    let parent = dir.join(runs).join("itest");
    std::fs::read_dir(&parent).unwrap().next().unwrap().unwrap().path()
}

/// Each epoch's value of `metric` in a run folder's journal, in order.
pub fn journal_metric(run_dir: &Path, metric: &str) -> Vec<f64> {
    let journal = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap();
    journal
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["metrics"][metric].as_f64())
        .collect()
}
