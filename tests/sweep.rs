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
fn a_malformed_sweep_is_explained() {
    let dir = setup("\n[sweep]\nmethod = \"random\"\n[sweep.params]\n\"train.lr\" = [0.1]\n");
    funnel(dir.path(), &["check", "exp.toml"]).assert_error(&["exp.toml", "trials"]);
}
