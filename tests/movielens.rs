//! Real experiments on real MovieLens data through the real binary.

use std::path::Path;

use crate::util::*;

fn metrics(run_dir_parent: &Path) -> serde_json::Value {
    let runs: Vec<_> = std::fs::read_dir(run_dir_parent).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(runs.len(), 1, "one run folder expected in {}", run_dir_parent.display());
    let text = std::fs::read_to_string(runs[0].join("metrics.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn run_ml100k(dir: &Path, runs: &str, extra: &[&str]) -> Finished {
    let data = shared_data().join("ml-100k");
    write(&dir.join("exp.toml"), &experiment_toml(&data, 3));
    let mut args = vec!["run", "exp.toml", "--runs-dir", runs, "--reports-dir", "reports"];
    args.extend_from_slice(extra);
    let out = funnel(dir, &args);
    out.assert_success();
    out
}

#[test]
fn ml100k_trains_evaluates_reports_and_repeats_itself() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_ml100k(dir.path(), "runs-a", &[]);
    let a = metrics(&dir.path().join("runs-a/itest"));
    let recall = a["test"]["recall@10"].as_f64().unwrap();
    // A popularity ranking scores about 0.05 here; a model that learned
    // nothing scores about 10/1450 = 0.007.
    assert!(recall >= 0.06, "test recall@10 = {recall}\n{}", out.stderr);
    assert!(a["test"]["ndcg@10"].as_f64().unwrap() > 0.0);

    let run_dir = std::fs::read_dir(dir.path().join("runs-a/itest")).unwrap().next().unwrap().unwrap().path();
    for f in [
        "resolved.toml",
        "report.md",
        "metrics.json",
        "journal.jsonl",
        "candidate_probabilities.tsv",
        "item_vectors.arrow",
    ] {
        assert!(run_dir.join(f).is_file(), "{f} missing in {}", run_dir.display());
    }
    let reports: Vec<_> =
        std::fs::read_dir(dir.path().join("reports/itest")).unwrap().map(|e| e.unwrap().path()).collect();
    let markdown: Vec<_> = reports.iter().filter(|p| p.extension().is_some_and(|e| e == "md")).collect();
    assert_eq!(markdown.len(), 1, "{reports:?}");
    // The reports/ copy links its charts from a folder named after the run.
    let copy = std::fs::read_to_string(markdown[0]).unwrap();
    let run_name = run_dir.file_name().unwrap().to_str().unwrap();
    for chart in ["loss.svg", "validation.svg"] {
        assert!(copy.contains(&format!("]({run_name}/{chart})")), "{copy}");
        assert!(markdown[0].with_file_name(run_name).join(chart).is_file());
        assert!(run_dir.join("plots").join(chart).is_file());
    }
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    for needle in [
        "## Test metrics",
        "## Dataset",
        "| users | ",
        "sparsity",
        "## Training",
        "examples/s",
        "## Sample recommendations",
        "## Resolved configuration",
        "type = \"youtube_dnn\"",
        "![Training loss](plots/loss.svg)",
    ] {
        assert!(report.contains(needle), "report lacks {needle:?}:\n{report}");
    }
    // ml-100k titles reach the report.
    assert!(report.contains("(199"), "no titles in report:\n{report}");
    let journal = std::fs::read_to_string(run_dir.join("journal.jsonl")).unwrap();
    assert_eq!(journal.lines().filter(|l| l.contains("\"epoch/validation/recall@10\"")).count(), 3);

    // Serving through the (exact) index agrees with the evaluator.
    let serving = &a["serving"];
    assert_eq!(serving["recall_vs_exact"]["10"].as_f64(), Some(1.0), "{serving}");
    let via_index = serving["through_index"]["recall@10"].as_f64().unwrap();
    assert!((via_index - recall).abs() < 0.002, "index {via_index} vs evaluator {recall}");
    assert!(serving["queries_per_second_one_thread"].as_f64().unwrap() > 0.0);
    assert!(report.contains("## Serving through the index"), "{report}");
    assert!(run_dir.join("model.bin").is_file() && run_dir.join("index").is_dir());

    // The saved run answers recommendation queries.
    let user = std::fs::read_to_string(run_dir.join("test_ranks.tsv"))
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .split('\t')
        .next()
        .unwrap()
        .to_string();
    let rec = funnel(dir.path(), &["recommend", "--run", run_dir.to_str().unwrap(), "--user", &user, "--k", "5"]);
    rec.assert_success();
    assert!(rec.stdout.starts_with("history (newest first): "), "{}", rec.stdout);
    assert_eq!(rec.stdout.lines().filter(|l| l.contains("(item ")).count(), 5, "{}", rec.stdout);
    assert!(rec.stdout.contains("(199"), "titles expected:\n{}", rec.stdout);
    let adhoc = funnel(dir.path(), &["recommend", "--run", run_dir.to_str().unwrap(), "--items", "50,172,181"]);
    adhoc.assert_success();
    assert!(adhoc.stdout.contains("Star Wars (1977)") && adhoc.stdout.contains("top 10:"), "{}", adhoc.stdout);
    assert!(!adhoc.stdout.split("top 10:").nth(1).unwrap().contains("Star Wars (1977)"), "history items are excluded");
    funnel(dir.path(), &["recommend", "--run", run_dir.to_str().unwrap(), "--user", "999999"])
        .assert_error(&["user 999999"]);
    funnel(dir.path(), &["recommend", "--run", run_dir.to_str().unwrap(), "--items", "1,x"]).assert_error(&["`x`"]);
    funnel(dir.path(), &["recommend", "--run", "nowhere", "--user", "1"])
        .assert_error(&["nowhere", "not a finished run"]);

    // Same seed, same metrics (throughput aside).
    run_ml100k(dir.path(), "runs-b", &[]);
    let b = metrics(&dir.path().join("runs-b/itest"));
    for key in ["test", "validation_at_best", "best_epoch"] {
        assert_eq!(a[key], b[key], "{key} differs between runs with the same seed");
    }
}

/// The quality bar of issue 2: the peer PyTorch model reaches test
/// Recall@10 = 0.127 on ml-1m with this exact configuration.
#[test]
fn ml1m_youtube_dnn_reaches_the_peer_quality() {
    if !slow_tests_enabled() {
        eprintln!("skipped: set RUN_SLOW_TESTS=1 (cargo xtask test does)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exp = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/youtube_dnn.toml");
    let data = shared_data().join("ml-1m");
    let out = funnel(
        dir.path(),
        &[
            "run",
            exp.to_str().unwrap(),
            "--set",
            &format!("dataset.path={}", data.display()),
            "--runs-dir",
            "runs",
            "--reports-dir",
            "reports",
        ],
    );
    out.assert_success();
    let m = metrics(&dir.path().join("runs/youtube_dnn"));
    let recall = m["test"]["recall@10"].as_f64().unwrap();
    assert!(recall >= 0.125, "test recall@10 = {recall} < 0.125\n{}", out.stderr);
}

/// Serving through approximate indexes: close to exact search on real item
/// vectors, saved with the run, and loaded again to answer queries.
#[test]
fn ann_indexes_serve_close_to_exact_search_and_reload() {
    for index in ["hnsw", "hora_hnsw", "ivf_flat"] {
        let dir = tempfile::tempdir().unwrap();
        let set = format!("index.type={index}");
        let out = run_ml100k(dir.path(), "runs", &["--set", &set]);
        let m = metrics(&dir.path().join("runs/itest"));
        let serving = &m["serving"];
        let overlap = serving["recall_vs_exact"]["50"].as_f64().unwrap();
        assert!(overlap >= 0.95, "{index}: recall@50 vs exact {overlap}\n{}", out.stderr);
        for k in ["recall@10", "recall@50"] {
            let (via, exact) = (serving["through_index"][k].as_f64().unwrap(), serving["exact"][k].as_f64().unwrap());
            assert!((via - exact).abs() <= 0.01, "{index}: {k} via index {via}, exact {exact}");
        }
        let run_dir = std::fs::read_dir(dir.path().join("runs/itest")).unwrap().next().unwrap().unwrap().path();
        assert!(std::fs::read_dir(run_dir.join("index")).unwrap().count() > 0, "{index} saved nothing");
        let rec = funnel(dir.path(), &["recommend", "--run", run_dir.to_str().unwrap(), "--items", "50,172,181"]);
        rec.assert_success();
        assert_eq!(rec.stdout.lines().filter(|l| l.contains("(item ")).count(), 10, "{index}: {}", rec.stdout);
    }
}

/// Every model of the zoo, with the side inputs it reads, trains on real
/// data, ranks far above chance and answers a dataset user from its saved run.
#[test]
fn every_model_variant_trains_on_ml100k_and_recommends_for_a_user() {
    let base = experiment_toml(&shared_data().join("ml-100k"), 2);
    let side = "max_history = 20\nitems = { type = \"hashed\", buckets = 800 }\nitem_features = [\"genres\"]\n\
                user_features = [\"gender\", \"age\", \"occupation\", \"zip\"]\nexample_age = true\n";
    let every_position =
        |toml: String| toml.replace("batch_size = 128\n", "batch_size = 8\ntargets = \"all_positions\"\n");
    let variants = [
        (
            "gru over hashed items with side features",
            base.replace("max_history = 20\n", side)
                .replace("hidden = [64]\n", "hidden = [64]\nsequence_encoder = \"gru\"\ngru_hidden = 16\n"),
        ),
        (
            "self-attention on every position over hashed items with side features, mixed negatives",
            every_position(
                base.replace("max_history = 20\n", side)
                    .replace("type = \"uniform\"\nnum_negatives = 200\n", "type = \"mixed\"\nnum_uniform = 200\n")
                    .replace(
                        "hidden = [64]\n",
                        "hidden = []\nsequence_encoder = \"self_attention\"\nheads = 2\ndropout = 0.1\n",
                    ),
            ),
        ),
        (
            "lstm with max pooling on every position",
            every_position(
                base.replace("hidden = [64]\n", "hidden = [64]\nsequence_encoder = \"lstm\"\nlstm_pooling = \"max\"\n"),
            ),
        ),
        (
            "two_tower over genres",
            base.replace("max_history = 20\n", "max_history = 20\nitem_features = [\"genres\"]\n")
                .replace("type = \"youtube_dnn\"", "type = \"two_tower\""),
        ),
        (
            "matrix_factorization",
            base.replace(
                "type = \"youtube_dnn\"\ndim = 32\nhidden = [64]\n",
                "type = \"matrix_factorization\"\ndim = 32\n",
            )
            .replace("lr = 0.002", "lr = 0.01"),
        ),
    ];
    for (name, toml) in variants {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("exp.toml"), &toml);
        let out = funnel(dir.path(), &["run", "exp.toml", "--runs-dir", "runs", "--reports-dir", "reports"]);
        out.assert_success();
        let m = metrics(&dir.path().join("runs/itest"));
        // Chance is 10 / 1,682 items.
        let recall = m["test"]["recall@10"].as_f64().unwrap();
        assert!(recall > 0.03, "{name}: test recall@10 {recall}\n{}", out.stderr);
        let run_dir = std::fs::read_dir(dir.path().join("runs/itest")).unwrap().next().unwrap().unwrap().path();
        let rec = funnel(dir.path(), &["recommend", "--run", run_dir.to_str().unwrap(), "--user", "1", "--k", "5"]);
        rec.assert_success();
        assert_eq!(rec.stdout.lines().filter(|l| l.contains("(item ")).count(), 5, "{name}: {}", rec.stdout);
        let adhoc = funnel(dir.path(), &["recommend", "--run", run_dir.to_str().unwrap(), "--items", "50,172,181"]);
        if name == "matrix_factorization" {
            adhoc.assert_error(&["trained on"]);
        } else {
            adhoc.assert_success();
        }
    }
}

#[test]
fn self_attention_on_every_position_learns_and_repeats_itself() {
    let toml = experiment_toml(&shared_data().join("ml-100k"), 3)
        .replace("hidden = [64]\n", "hidden = []\nsequence_encoder = \"self_attention\"\nexclude_seen = true\n")
        // As experiments/models/sasrec.toml trains: cuts drawn anew each epoch.
        .replace("batch_size = 128\n", "batch_size = 8\ntargets = \"all_positions\"\nwindow_cuts = \"random\"\n");
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("exp.toml"), &toml);
    let mut tests = Vec::new();
    for runs in ["runs-a", "runs-b"] {
        let out = funnel(dir.path(), &["run", "exp.toml", "--runs-dir", runs, "--reports-dir", "reports"]);
        out.assert_success();
        let m = metrics(&dir.path().join(runs).join("itest"));
        // A popularity ranking scores about 0.05 here.
        let recall = m["test"]["recall@10"].as_f64().unwrap();
        assert!(recall >= 0.06, "test recall@10 = {recall}\n{}", out.stderr);
        let run_dir = std::fs::read_dir(dir.path().join(runs).join("itest")).unwrap().next().unwrap().unwrap().path();
        let resolved = std::fs::read_to_string(run_dir.join("resolved.toml")).unwrap();
        assert!(resolved.contains("targets = \"all_positions\"") && resolved.contains("window_cuts = \"random\""));
        tests.push(m["test"].clone());
    }
    assert_eq!(tests[0], tests[1], "same seed, same metrics (dropout included)");
}
