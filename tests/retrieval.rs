//! `[retrieval]`: several candidate generators merged per user, the shown
//! lists measured beside the model's own.

use std::path::Path;

use crate::util::*;

/// The synthetic cycle (the next watch follows the last one), with the
/// model and a co-visitation source that follows the cycle exactly.
fn experiment(dir: &Path, retrieval: &str) {
    write(&dir.join("exp.toml"), &(synthetic_experiment(dir, 30, 1) + retrieval));
}

/// Runs `exp.toml` in `dir`: the run folder and its `metrics.json`.
fn run(dir: &Path) -> (std::path::PathBuf, serde_json::Value) {
    let out = funnel(dir, &["run", "exp.toml", "--runs-dir", "runs", "--reports-dir", "reports"]);
    out.assert_success();
    let runs: Vec<_> = std::fs::read_dir(dir.join("runs/itest")).unwrap().map(|e| e.unwrap().path()).collect();
    let metrics = serde_json::from_str(&std::fs::read_to_string(runs[0].join("metrics.json")).unwrap()).unwrap();
    (runs[0].clone(), metrics)
}

const SOURCES: &str = "
[retrieval]
candidates = 20

[[retrieval.sources]]
type = \"model\"
quota = 15

[[retrieval.sources]]
type = \"covisitation\"
quota = 5
window = 1
seeds = 1
";

#[test]
fn generators_are_merged_and_the_shown_lists_are_measured() {
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), SOURCES);
    let (run_dir, metrics) = run(dir.path());
    let run_dir = &run_dir;
    let r = &metrics["retrieval"];
    assert_eq!(r["candidates"], 20, "{r}");
    assert_eq!(r["shown"], 10, "{r}");
    // Co-visitation puts the held-out item first for everyone, so every
    // candidate set holds it, and it is shown (relevance 1 in its source).
    assert_eq!(r["candidate_recall"].as_f64(), Some(1.0), "{r}");
    assert_eq!(r["merged"]["metrics"]["recall@10"].as_f64(), Some(1.0), "{r}");
    // recall@50 needs more than the 10 shown: not reported.
    assert!(r["merged"]["metrics"].get("recall@50").is_none(), "{r}");
    assert!(r["model_alone"]["metrics"]["recall@10"].as_f64().is_some(), "{r}");
    assert!(r["reranked"].is_null(), "no [rerank], nothing re-ranked: {r}");
    // Quotas first: 15 from the model, 5 from co-visitation (no backfill needed).
    let sources = r["sources"].as_array().unwrap();
    assert_eq!(sources[0][0], "model");
    assert_eq!(sources[0][2].as_f64(), Some(15.0), "{r}");
    assert_eq!(sources[1][2].as_f64(), Some(5.0), "{r}");
    for key in ["ild_embedding@10", "catalog_coverage@10", "novelty@10", "gini@10"] {
        assert!(r["merged"]["beyond"][key].as_f64().is_some_and(f64::is_finite), "{key}: {r}");
    }
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    for needle in [
        "## Retrieval: several generators, merged",
        "| `model` | 15 | 15.0 |",
        "| `covisitation` | 5 | 5.0 |",
        "among the 20 merged candidates for 100.00 % of test users",
        "| top 10 | model alone | merged, by relevance |",
        "| recall@10 | ",
    ] {
        assert!(report.contains(needle), "{needle:?} not in the report:\n{report}");
    }
    // The resolved configuration writes every source's defaults.
    let resolved = std::fs::read_to_string(run_dir.join("resolved.toml")).unwrap();
    assert!(
        resolved.contains("[[retrieval.sources]]\ntype = \"covisitation\"\nquota = 5\nalpha = 0.5\n"),
        "{resolved}"
    );
    // Without [retrieval], nothing of it.
    let plain = tempfile::tempdir().unwrap();
    experiment(plain.path(), "");
    let out = funnel(plain.path(), &["run", "exp.toml", "--runs-dir", "runs", "--reports-dir", "reports"]);
    out.assert_success();
    assert!(!out.stderr.contains("retrieval"), "{}", out.stderr);
}

#[test]
fn a_bad_retrieval_table_is_refused_before_training() {
    for (table, needle) in [
        (SOURCES.replace("candidates = 20", "candidates = 10"), "quotas add up to 20, more than candidates = 10"),
        (SOURCES.replace("type = \"covisitation\"", "type = \"covisitaton\""), "unknown source"),
        (SOURCES.replace("quota = 15", "quota = 15\nwindow = 3"), "the model source takes only `quota`"),
        (SOURCES.replace("window = 1", "window = 0"), "key `window`: must be at least 1"),
        (SOURCES.replace("quota = 5", "quota = 0"), "quota must be at least 1"),
        (SOURCES.replace("candidates = 20", "candidates = 20\nshown = 5"), "key `retrieval.shown`: unknown field"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        experiment(dir.path(), &table);
        let out = funnel(dir.path(), &["check", "exp.toml"]);
        assert_eq!(out.code, Some(2), "{needle}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
        assert!(out.stderr.contains("exp.toml"), "the error names the file: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
}

#[test]
fn mmr_reorders_the_candidates_and_the_report_shows_the_tradeoff() {
    let dir = tempfile::tempdir().unwrap();
    let rerank = format!("{SOURCES}\n[rerank]\ntype = \"mmr\"\nbeta = 0.5\nbetas = [0.0, 0.5, 1.0]\n");
    experiment(dir.path(), &rerank);
    let (run_dir, metrics) = run(dir.path());
    let run_dir = &run_dir;
    let r = &metrics["retrieval"];
    assert_eq!(r["tradeoff_parameter"], "beta");
    let tradeoff = r["tradeoff"].as_array().unwrap();
    assert_eq!(tradeoff.len(), 3, "{r}");
    // beta 0 is the relevance order: the merged lists exactly.
    assert_eq!(tradeoff[0][1], r["merged"], "{r}");
    // The configured beta is the trade-off's 0.5.
    assert_eq!(tradeoff[1][1], r["reranked"], "{r}");
    // Diversity by item vectors grows with beta.
    let ild = |i: usize| tradeoff[i][1]["beyond"]["ild_embedding@10"].as_f64().unwrap();
    assert!(ild(2) > ild(0), "{r}");
    assert!(r["rerank_seconds"].as_f64().is_some_and(|s| s >= 0.0), "{r}");
    assert!(run_dir.join("plots/tradeoff.svg").is_file());
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    for needle in [
        "| top 10 | model alone | merged, by relevance | re-ranked |",
        "### Accuracy against diversity, by beta",
        "| 0.5 | ",
        "tradeoff.svg",
    ] {
        assert!(report.contains(needle), "{needle:?} not in the report:\n{report}");
    }
}

#[test]
fn rerank_k_sets_the_length_of_every_shown_list() {
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), &format!("{SOURCES}\n[rerank]\ntype = \"mmr\"\nk = 20\nbetas = [0.0]\n"));
    let (run_dir, metrics) = run(dir.path());
    let r = &metrics["retrieval"];
    assert_eq!(r["shown"], 20, "{r}");
    for list in ["model_alone", "merged", "reranked"] {
        assert!(r[list]["beyond"]["catalog_coverage@20"].as_f64().is_some(), "{list}: {r}");
        assert!(r[list]["metrics"]["recall@10"].as_f64().is_some(), "{list}: {r}");
        assert!(r[list]["metrics"].get("recall@50").is_none(), "{list}: {r}");
    }
    let report = std::fs::read_to_string(run_dir.join("report.md")).unwrap();
    assert!(report.contains("| top 20 | model alone |"), "{report}");
}

#[test]
fn a_bad_rerank_table_is_refused_before_training() {
    let cases = [
        ("\n[rerank]\ntype = \"mmr\"\n".to_string(), "[rerank] orders the candidates of [retrieval]"),
        (
            format!("{SOURCES}\n[rerank]\ntype = \"mmr\"\nbeta = 1.5\n"),
            "key `beta`: must be between 0 and 1, found 1.5",
        ),
        (format!("{SOURCES}\n[rerank]\ntype = \"mmr\"\nbetas = [0.2, 2.0]\n"), "must be between 0 and 1, found 2"),
        (format!("{SOURCES}\n[rerank]\ntype = \"mrr\"\n"), "unknown re-ranker type \"mrr\""),
    ];
    for (table, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        experiment(dir.path(), &table);
        let out = funnel(dir.path(), &["check", "exp.toml"]);
        assert_eq!(out.code, Some(2), "{needle}: {}", out.stderr);
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
    // Categories on a catalog without any: refused once the data is loaded,
    // before anything trains.
    let dir = tempfile::tempdir().unwrap();
    experiment(dir.path(), &format!("{SOURCES}\n[rerank]\ntype = \"mmr\"\nsimilarity = \"categories\"\n"));
    let out = funnel(dir.path(), &["run", "exp.toml", "--runs-dir", "runs", "--reports-dir", "reports"]);
    assert_ne!(out.code, Some(0));
    assert!(
        out.stderr.contains("[rerank] type = \"mmr\"") && out.stderr.contains("needs item categories"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("epoch 1"), "it trained first:\n{}", out.stderr);
}
