//! The `interactions` dataset end to end: ml-100k rewritten as a CSV log, a
//! Parquet file, an Amazon-style NDJSON review dump with an item metadata
//! file, and read as the raw TSV it ships as; each trains, evaluates and
//! reports; the same log in every format gives the same metrics.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};

use crate::util::*;

struct Rating {
    user: i64,
    item: i64,
    stars: f64,
    time: i64,
}

fn ml100k() -> Vec<Rating> {
    std::fs::read_to_string(shared_data().join("ml-100k/u.data"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<i64> = l.split('\t').map(|x| x.parse().unwrap()).collect();
            Rating { user: f[0], item: f[1], stars: f[2] as f64, time: f[3] }
        })
        .collect()
}

fn experiment(dataset: &str, item_features: &str) -> String {
    format!(
        r#"[experiment]
name = "itest"
seed = 3

[dataset]
type = "interactions"
min_rating = 4.0
{dataset}

[features]
type = "watch_history"
max_history = 10
item_features = {item_features}

[sampler]
type = "mixed"
num_uniform = 200

[model]
type = "youtube_dnn"
dim = 32
hidden = [64]

[train]
epochs = 2
batch_size = 256
lr = 0.003

[evaluation]
type = "full_ranking"
ks = [10, 50]

[[baselines]]
type = "most_popular"

[index]
type = "exact"

[tracking]
type = "local"
"#
    )
}

/// Runs `dataset` (the `[dataset]` keys after `type`) in `dir/<name>`;
/// returns (metrics.json, report text).
fn run(dir: &Path, name: &str, dataset: &str) -> (serde_json::Value, String) {
    run_with(dir, name, dataset, "[]")
}

fn run_with(dir: &Path, name: &str, dataset: &str, item_features: &str) -> (serde_json::Value, String) {
    let exp = dir.join(format!("{name}.toml"));
    std::fs::write(&exp, experiment(dataset, item_features)).unwrap();
    let runs = dir.join(format!("runs-{name}"));
    let out =
        funnel(dir, &["run", exp.to_str().unwrap(), "--runs-dir", runs.to_str().unwrap(), "--reports-dir", "reports"]);
    out.assert_success();
    let run_dir = std::fs::read_dir(runs.join("itest")).unwrap().next().unwrap().unwrap().path();
    let metrics = serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json")).unwrap()).unwrap();
    (metrics, std::fs::read_to_string(run_dir.join("report.md")).unwrap())
}

#[test]
fn logs_in_every_format_train_end_to_end_with_the_same_metrics() {
    if !shared_data().join("ml-100k/u.data").exists() {
        assert!(!slow_tests_enabled(), "ml-100k is missing from {}", shared_data().display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ratings = ml100k();
    let mut csv = String::from("user,item,rating,time\n");
    for r in &ratings {
        csv.push_str(&format!("{},{},{},{}\n", r.user, r.item, r.stars, r.time));
    }
    std::fs::write(d.join("log.csv"), csv).unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Int64, false),
        Field::new("item", DataType::Int64, false),
        Field::new("rating", DataType::Float64, false),
        Field::new("time", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from_iter_values(ratings.iter().map(|r| r.user))),
        Arc::new(Int64Array::from_iter_values(ratings.iter().map(|r| r.item))),
        Arc::new(Float64Array::from_iter_values(ratings.iter().map(|r| r.stars))),
        Arc::new(Int64Array::from_iter_values(ratings.iter().map(|r| r.time))),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(std::fs::File::create(d.join("log.parquet")).unwrap(), schema, None)
            .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();

    let columns = "columns = { user = \"user\", item = \"item\", timestamp = \"time\", rating = \"rating\" }";
    let (from_csv, _) = run(d, "csv", &format!("path = \"log.csv\"\n{columns}"));
    let (from_parquet, _) = run(d, "parquet", &format!("path = \"log.parquet\"\n{columns}"));
    assert_eq!(from_csv["test"], from_parquet["test"], "CSV and Parquet of one log");
    // The TSV ml-100k ships as, without a header: columns by position.
    let raw = shared_data().join("ml-100k/u.data");
    let (from_tsv, _) = run(
        d,
        "tsv",
        &format!(
            "path = {:?}\nformat = \"tsv\"\nheader = false\n\
             columns = {{ user = \"0\", item = \"1\", rating = \"2\", timestamp = \"3\" }}",
            raw.display().to_string()
        ),
    );
    assert_eq!(from_csv["test"], from_tsv["test"], "CSV and the raw TSV");
    let recall = from_csv["test"]["recall@10"].as_f64().unwrap();
    let popular = from_csv["baselines"]["most_popular"]["recall@10"].as_f64().unwrap();
    assert!(recall > popular, "the model ({recall}) beats most-popular ({popular})");

    // An Amazon-style dump: string ids, float stars, metadata with nested category lists.
    let genres: Vec<String> = std::fs::read_to_string(shared_data().join("ml-100k/u.genre"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split('|').next().filter(|g| !g.is_empty()).map(String::from))
        .collect();
    let reviews: Vec<String> = ratings
        .iter()
        .map(|r| {
            serde_json::json!({"reviewerID": format!("A{}", r.user), "asin": format!("B{:05}", r.item),
                "overall": r.stars, "unixReviewTime": r.time, "summary": "fine"})
            .to_string()
        })
        .collect();
    std::fs::write(d.join("reviews.jsonl"), reviews.join("\n")).unwrap();
    let meta: Vec<String> = String::from_utf8_lossy(&std::fs::read(shared_data().join("ml-100k/u.item")).unwrap())
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let cats: Vec<&str> =
                f[5..].iter().zip(&genres).filter(|(flag, _)| **flag == "1").map(|(_, g)| g.as_str()).collect();
            serde_json::json!({"asin": format!("B{:05}", f[0].parse::<u32>().unwrap()), "title": f[1], "categories": [cats]}).to_string()
        })
        .collect();
    std::fs::write(d.join("meta.jsonl"), meta.join("\n")).unwrap();
    let dump = "path = \"reviews.jsonl\"\n\
         columns = { user = \"reviewerID\", item = \"asin\", timestamp = \"unixReviewTime\", rating = \"overall\" }\n\
         [dataset.items]\npath = \"meta.jsonl\"\n\
         columns = { item = \"asin\", title = \"title\", categories = \"categories\" }";
    let (from_json, report) = run(d, "json", dump);
    assert_eq!(from_json["test"], from_csv["test"], "renamed ids, same log");
    assert!(report.contains("| dataset | interactions/reviews |"), "{report}");
    assert!(report.contains("items with a title | 1"), "{report}");
    assert!(report.contains("| item categories | ") && report.contains("most common: Drama"), "{report}");
    assert!(report.contains("(199") || report.contains("(198"), "titles in the sample recommendations:\n{report}");
    // The categories reach the model as an item feature.
    let (with_categories, report) = run_with(d, "categories", dump, "[\"categories\"]");
    assert!(report.contains("item_features = [\"categories\"]"), "{report}");
    assert_ne!(with_categories["test"], from_json["test"], "an item feature changes the model");
}
