//! The `interactions` dataset on logs written here in every format, with
//! hand-computed filtering, and every bad input named.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use funnel_api::{BuildCx, LoadedDataset, Registry};

/// (user, item, unix seconds, rating): u1 rates i1 twice, u3 has two
/// interactions only, i9 is rated once (by u1, low).
const LOG: &[(&str, &str, i64, f64)] = &[
    ("u1", "i1", 100, 5.0),
    ("u2", "i2", 90, 4.0),
    ("u1", "i2", 110, 4.0),
    ("u1", "i1", 120, 3.0),
    ("u2", "i1", 95, 5.0),
    ("u1", "i3", 130, 4.5),
    ("u3", "i1", 50, 5.0),
    ("u1", "i9", 140, 1.0),
    ("u2", "i3", 80, 4.0),
    ("u3", "i2", 60, 4.0),
];

fn registry() -> Registry {
    let mut reg = Registry::new();
    funnel_dataset_interactions::register(&mut reg);
    reg
}

fn load(toml_text: &str) -> anyhow::Result<LoadedDataset> {
    let table: toml::Table = toml_text.parse().unwrap();
    registry().build_dataset("interactions", table, &BuildCx::default())?.load()
}

fn write_csv(path: &Path, sep: char) {
    let mut s = format!("user{sep}item{sep}time{sep}stars\n");
    for (u, i, t, r) in LOG {
        s.push_str(&format!("{u}{sep}{i}{sep}{t}{sep}{r}\n"));
    }
    std::fs::write(path, s).unwrap();
}

fn write_jsonl(path: &Path) {
    let lines: Vec<String> = LOG
        .iter()
        .map(|(u, i, t, r)| {
            format!("{{\"user\": \"{u}\", \"item\": \"{i}\", \"time\": {t}, \"stars\": {r}, \"text\": \"great\"}}")
        })
        .collect();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

fn batch() -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("item", DataType::Utf8, false),
        Field::new("time", DataType::Int64, false),
        Field::new("stars", DataType::Float64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(LOG.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(LOG.iter().map(|r| r.1))),
        Arc::new(Int64Array::from_iter_values(LOG.iter().map(|r| r.2))),
        Arc::new(Float64Array::from_iter_values(LOG.iter().map(|r| r.3))),
    ];
    RecordBatch::try_new(schema, columns).unwrap()
}

fn write_parquet(path: &Path) {
    let b = batch();
    let mut w = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(path).unwrap(), b.schema(), None).unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
}

fn write_arrow(path: &Path) {
    let b = batch();
    let mut w = arrow::ipc::writer::FileWriter::try_new(std::fs::File::create(path).unwrap(), &b.schema()).unwrap();
    w.write(&b).unwrap();
    w.finish().unwrap();
}

fn spec(path: &Path, extra: &str) -> String {
    let minimum = if extra.contains("min_user_interactions") { "" } else { "min_user_interactions = 1\n" };
    format!(
        "path = {:?}\ncolumns = {{ user = \"user\", item = \"item\", timestamp = \"time\", rating = \"stars\" }}\n\
         {minimum}{extra}",
        path.display().to_string()
    )
}

/// (user id, item id, time) of every positive, in the dataset's order.
fn rows(d: &LoadedDataset) -> Vec<(String, String, i64)> {
    let i = &d.interactions;
    (0..i.len())
        .map(|k| {
            (
                d.user_raw_ids[i.users[k] as usize].clone(),
                d.catalog.raw_ids[i.items[k] as usize].clone(),
                i.timestamps[k],
            )
        })
        .collect()
}

#[test]
fn every_format_gives_the_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_csv(&d.join("log.csv"), ',');
    write_csv(&d.join("log.tsv"), '\t');
    write_jsonl(&d.join("log.jsonl"));
    write_parquet(&d.join("log.parquet"));
    write_arrow(&d.join("log.arrow"));
    let reference = load(&spec(&d.join("log.csv"), "dedup = \"all\"")).unwrap();
    assert_eq!(reference.raw_rows, LOG.len());
    assert_eq!(rows(&reference).len(), LOG.len());
    assert_eq!(reference.user_raw_ids, ["u1", "u2", "u3"]);
    assert_eq!(reference.catalog.raw_ids, ["i1", "i2", "i3", "i9"]);
    for file in ["log.tsv", "log.jsonl", "log.parquet", "log.arrow"] {
        let other = load(&spec(&d.join(file), "dedup = \"all\"")).unwrap();
        assert_eq!(rows(&other), rows(&reference), "{file}");
        assert_eq!(other.user_raw_ids, reference.user_raw_ids, "{file}");
    }
    // A folder of parts is one log, parts in name order.
    std::fs::create_dir(d.join("parts")).unwrap();
    let text = std::fs::read_to_string(d.join("log.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(d.join("parts/part-0.csv"), format!("{}\n{}\n", lines[0], lines[1..6].join("\n"))).unwrap();
    std::fs::write(d.join("parts/part-1.csv"), format!("{}\n{}\n", lines[0], lines[6..].join("\n"))).unwrap();
    std::fs::write(d.join("parts/_SUCCESS"), "").unwrap();
    let parts = load(&spec(&d.join("parts"), "dedup = \"all\"")).unwrap();
    assert_eq!(rows(&parts), rows(&reference));
}

#[test]
fn rating_threshold_repeats_and_the_k_core_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log.csv");
    write_csv(&path, ',');
    // min_rating 4 drops (u1,i1,120,3) and (u1,i9,140,1).
    let d = load(&spec(&path, "min_rating = 4.0\ndedup = \"all\"")).unwrap();
    assert_eq!(rows(&d).len(), 8);
    assert!(!d.catalog.raw_ids.contains(&"i9".to_string()));
    // Without a threshold, "first" keeps (u1,i1,100), "last" keeps (u1,i1,120).
    let first = load(&spec(&path, "dedup = \"first\"")).unwrap();
    let last = load(&spec(&path, "dedup = \"last\"")).unwrap();
    let u1i1 = |d: &LoadedDataset| rows(d).into_iter().filter(|r| r.0 == "u1" && r.1 == "i1").collect::<Vec<_>>();
    assert_eq!(u1i1(&first), [("u1".to_string(), "i1".to_string(), 100)]);
    assert_eq!(u1i1(&last), [("u1".to_string(), "i1".to_string(), 120)]);
    // k-core with users >= 3 and items >= 2 after min_rating 4, first:
    // u1 {i1,i2,i3}, u2 {i2,i1,i3}, u3 {i1,i2}: u3 goes (2 < 3); then
    // i1 {u1,u2}, i2 {u1,u2}, i3 {u1,u2} all stay; fixed point.
    let core = load(&spec(&path, "min_rating = 4.0\nmin_user_interactions = 3\nmin_item_interactions = 2")).unwrap();
    assert_eq!(core.user_raw_ids, ["u1", "u2"]);
    assert_eq!(core.catalog.raw_ids, ["i1", "i2", "i3"]);
    assert_eq!(rows(&core).len(), 6);
    // Items >= 3 as well: every item has 2 users left -> nothing survives,
    // and the error says what each step removed.
    let e = format!(
        "{:#}",
        load(&spec(&path, "min_rating = 4.0\nmin_user_interactions = 3\nmin_item_interactions = 3")).unwrap_err()
    );
    assert!(
        e.contains("no interactions left") && e.contains("10 rows read") && e.contains("2 below min_rating"),
        "{e}"
    );
    assert!(
        e.contains("0 repeated") && e.contains("(dedup = first)") && e.contains("min_item_interactions = 3"),
        "{e}"
    );
}

#[test]
fn timestamps_in_every_declared_format() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("unix_ms", "100000", 100),
        ("rfc3339", "1970-01-01T00:01:40Z", 100),
        ("%Y-%m-%d %H:%M:%S", "1970-01-01 00:01:40", 100),
        ("%d/%m/%Y", "02/01/1970", 86_400),
    ];
    for (format, written, seconds) in cases {
        let path = dir.path().join("t.csv");
        std::fs::write(&path, format!("user,item,when\nu,i,{written}\n")).unwrap();
        let text = format!(
            "path = {:?}\ncolumns = {{ user = \"user\", item = \"item\", timestamp = \"when\" }}\n\
             timestamp_format = {format:?}\nmin_user_interactions = 1",
            path.display().to_string()
        );
        assert_eq!(load(&text).unwrap().interactions.timestamps, [seconds], "{format}");
    }
}

#[test]
fn item_and_user_tables_add_titles_categories_and_features() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_jsonl(&d.join("log.jsonl"));
    std::fs::write(
        d.join("meta.jsonl"),
        "{\"asin\": \"i1\", \"title\": \"One\", \"categories\": [[\"Books\", \"Fiction\"]]}\n\
         {\"asin\": \"i2\", \"title\": \"Two\", \"categories\": []}\n\
         {\"asin\": \"zz\", \"title\": \"Not in the log\"}\n",
    )
    .unwrap();
    std::fs::write(d.join("items.csv"), "id;name;tags\ni3;Three;Jazz|Live\n").unwrap();
    std::fs::write(d.join("users.tsv"), "uid\tcountry\tage\nu1\tSE\t31\nu2\tNO\t25\n").unwrap();
    let with_meta = load(&spec(
        &d.join("log.jsonl"),
        &format!(
            "[items]\npath = {:?}\ncolumns = {{ item = \"asin\", title = \"title\", categories = \"categories\" }}\n\
             [users]\npath = {:?}\ncolumns = {{ user = \"uid\", features = [\"country\"] }}\n",
            d.join("meta.jsonl").display().to_string(),
            d.join("users.tsv").display().to_string()
        ),
    ))
    .unwrap();
    let c = &with_meta.catalog;
    let i1 = c.raw_ids.iter().position(|r| r == "i1").unwrap();
    assert_eq!(c.titles[i1], "One");
    assert_eq!(c.genres[i1], ["Books", "Fiction"]);
    let i3 = c.raw_ids.iter().position(|r| r == "i3").unwrap();
    assert_eq!(c.titles[i3], "");
    assert_eq!(with_meta.user_attributes["country"], ["SE", "NO", ""]);
    let with_csv = load(&spec(
        &d.join("log.jsonl"),
        &format!(
            "[items]\npath = {:?}\ndelimiter = \";\"\ncolumns = {{ item = \"id\", title = \"name\", categories = \"tags\" }}\n",
            d.join("items.csv").display().to_string()
        ),
    ))
    .unwrap();
    let i3 = with_csv.catalog.raw_ids.iter().position(|r| r == "i3").unwrap();
    assert_eq!(with_csv.catalog.titles[i3], "Three");
    assert_eq!(with_csv.catalog.genres[i3], ["Jazz", "Live"]);
}

#[test]
fn bad_input_names_file_row_column_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let error = |file: &str, body: &str, extra: &str| {
        let path = d.join(file);
        std::fs::write(&path, body).unwrap();
        format!("{:#}", load(&spec(&path, extra)).unwrap_err())
    };
    let e = error("a.csv", "user,item,stars\nu,i,5\n", "");
    assert!(e.contains("a.csv") && e.contains("no column `time`") && e.contains("user, item, stars"), "{e}");
    let e = error("b.csv", "user,item,time,stars\nu,i,1,5\nu,j,2,five\n", "");
    assert!(e.contains("b.csv, row 2, column `stars`") && e.contains("\"five\" is not a number"), "{e}");
    let e = error("c.jsonl", "{\"user\": \"u\", \"item\": null, \"time\": 1, \"stars\": 5}\n", "");
    assert!(e.contains("c.jsonl, row 1, column `item`") && e.contains("missing"), "{e}");
    let e = error("d.csv", "user,item,time,stars\nu,i,yesterday,5\n", "");
    assert!(e.contains("d.csv, row 1, column `time`") && e.contains("\"yesterday\"") && e.contains("\"unix\""), "{e}");
    let e = error("e.jsonl", "[1, 2]\n", "");
    assert!(e.contains("e.jsonl, line 1") && e.contains("JSON object"), "{e}");
    let e = error("f.log", "user,item,time,stars\n", "");
    assert!(e.contains("f.log") && e.contains("`format`"), "{e}");
    let meta = d.join("meta.csv");
    std::fs::write(&meta, "item,title\nx,X\ny,Y\n").unwrap();
    let e = error(
        "g.csv",
        "user,item,time,stars\nu,i,1,5\n",
        &format!("[items]\npath = {:?}\ncolumns = {{ item = \"item\" }}\n", meta.display().to_string()),
    );
    assert!(e.contains("none of its 2 item ids") && e.contains("\"x\"") && e.contains("\"i\""), "{e}");
    // What can be checked before reading.
    let bad = |text: &str| {
        let table: toml::Table = text.parse().unwrap();
        format!("{:#}", registry().build_dataset("interactions", table, &BuildCx::default()).err().unwrap())
    };
    assert!(bad("columns = { user = \"u\", item = \"i\" }").contains("key `path`"));
    assert!(bad("path = \"x\"\ntimestamp_format = \"iso\"").contains("key `timestamp_format`"));
    assert!(bad("path = \"x\"\nmin_rating = 4.0").contains("columns.rating"));
    assert!(bad("path = \"x\"\ndelimiter = \"::\"").contains("key `delimiter`"));
    assert!(bad("path = \"x\"\ndedup = \"some\"").contains("dedup"));
    assert!(bad("path = \"x\"\ncolumns = { user = \"u\", itm = \"i\" }").contains("itm"));
}

/// A log with no rating: `columns` user, item, time and whatever `extra` adds.
fn events_spec(path: &Path, extra: &str) -> String {
    format!(
        "path = {:?}\ncolumns = {{ user = \"user\", item = \"item\", timestamp = \"time\" }}\n\
         min_user_interactions = 1\n{extra}",
        path.display().to_string()
    )
}

fn owned(rows: &[(&str, &str, i64)]) -> Vec<(String, String, i64)> {
    rows.iter().map(|(u, i, t)| (u.to_string(), i.to_string(), *t)).collect()
}

#[test]
fn event_types_become_outcomes_and_dislikes_feedback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.csv");
    std::fs::write(
        &path,
        "user,item,time,event\n\
         u1,i1,1,click\n\
         u1,i1,2,add_to_cart\n\
         u1,i1,3,purchase\n\
         u1,i2,4,click\n\
         u1,i3,5,click\n\
         u2,i1,1,purchase\n\
         u2,i2,2,click\n\
         u2,i3,4,dislike\n\
         u2,i3,3,dislike\n\
         u2,i2,7,view\n\
         u1,i2,6,dislike\n\
         u3,i1,1,dislike\n\
         u2,i4,8,dislike\n",
    )
    .unwrap();
    let d = load(&events_spec(
        &path,
        "negative_feedback = \"event == dislike\"\n\
         [outcomes]\nclick = \"event == click\"\nadd_to_cart = \"event == add_to_cart\"\npurchase = \"event == purchase\"\n",
    ))
    .unwrap();
    // Bits in name order: add_to_cart 1, click 2, purchase 4.
    assert_eq!(d.outcomes, ["add_to_cart", "click", "purchase"]);
    assert_eq!(d.raw_rows, 13);
    assert_eq!(rows(&d), owned(&[("u1", "i1", 1), ("u1", "i2", 4), ("u1", "i3", 5), ("u2", "i1", 1), ("u2", "i2", 2)]));
    // dedup first keeps u1's click on i1 with the outcomes of all its rows.
    assert_eq!(d.interactions.outcomes, [0b111, 0b010, 0b010, 0b100, 0b010]);
    // u2's dislikes of i3: the earlier stays. u1 likes i2 (a positive), u3
    // has no positive, i4 is no catalog item: dropped. A view is neither.
    assert_eq!(d.raw_feedback().collect::<Vec<_>>(), [("u2", "i3", 3)]);
    assert!(d.feedback.outcomes.is_empty());
    // "all" keeps every positive row with its own outcome.
    let all = load(&events_spec(
        &path,
        "dedup = \"all\"\n[outcomes]\nclick = \"event == click\"\nadd_to_cart = \"event == add_to_cart\"\n\
         purchase = \"event == purchase\"\n",
    ))
    .unwrap();
    assert_eq!(all.interactions.outcomes, [0b010, 0b001, 0b100, 0b010, 0b010, 0b100, 0b010]);
    assert!(all.feedback.is_empty());
}

#[test]
fn numeric_outcomes_read_native_numbers_in_every_format() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_csv(&d.join("log.csv"), ',');
    write_jsonl(&d.join("log.jsonl"));
    write_parquet(&d.join("log.parquet"));
    write_arrow(&d.join("log.arrow"));
    for file in ["log.csv", "log.jsonl", "log.parquet", "log.arrow"] {
        let data = load(&spec(
            &d.join(file),
            "negative_feedback = \"stars <= 3\"\n[outcomes]\nliked = \"stars >= 4\"\nloved = \"stars >= 5\"\n",
        ))
        .unwrap();
        assert_eq!(data.outcomes, ["liked", "loved"], "{file}");
        // (u1,i1,120,3) meets no outcome; (u1,i9,140,1) neither, and i9 goes.
        assert_eq!(rows(&data).len(), 8, "{file}");
        assert_eq!(data.interactions.outcomes, [3, 1, 1, 3, 1, 3, 1, 1], "{file}");
        // Both stars <= 3 rows are a positive pair or an item without positives.
        assert!(data.feedback.is_empty(), "{file}");
    }
}

#[test]
fn negative_feedback_beside_min_rating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.csv");
    std::fs::write(&path, "user,item,time,stars\na,x,1,5\na,y,2,4\nb,x,3,4\nb,y,4,1\na,z,5,2\nb,x,6,2\n").unwrap();
    let d = load(&spec(&path, "min_rating = 4.0\nnegative_feedback = \"stars <= 2\"")).unwrap();
    assert_eq!(rows(&d), owned(&[("a", "x", 1), ("a", "y", 2), ("b", "x", 3)]));
    assert!(d.outcomes.is_empty() && d.interactions.outcomes.is_empty());
    assert_eq!(d.raw_feedback().collect::<Vec<_>>(), [("b", "y", 4)]);
    // Without the rule nothing changes but the feedback.
    let plain = load(&spec(&path, "min_rating = 4.0")).unwrap();
    assert_eq!(rows(&plain), rows(&d));
    assert!(plain.feedback.is_empty());
}

#[test]
fn outcome_rules_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let error = |file: &str, body: &str, extra: &str| {
        let path = d.join(file);
        std::fs::write(&path, body).unwrap();
        format!("{:#}", load(&events_spec(&path, extra)).unwrap_err())
    };
    // A rule column the log lacks, in each reader.
    let e = error("a.csv", "user,item,time\nu,i,1\n", "[outcomes]\nbuy = \"event == purchase\"");
    assert!(e.contains("a.csv: no column `event`; its columns are: user, item, time"), "{e}");
    let parquet = d.join("log.parquet");
    write_parquet(&parquet);
    let e = format!("{:#}", load(&events_spec(&parquet, "[outcomes]\nbuy = \"event == purchase\"")).unwrap_err());
    assert!(e.contains("log.parquet: no column `event`; its columns are: user, item, time, stars"), "{e}");
    let e = error(
        "b.jsonl",
        "{\"user\": \"u\", \"item\": \"i\", \"time\": 1}\n",
        "[outcomes]\nbuy = \"event == purchase\"",
    );
    assert!(e.contains("b.jsonl: no column `event`"), "{e}");
    // A numeric rule on a cell that is no number.
    let e = error("c.csv", "user,item,time,score\nu,i,1,5\nu,j,2,lots\n", "[outcomes]\ngood = \"score >= 4\"");
    assert!(e.contains("c.csv, row 2, column `score`: \"lots\" is not a number"), "{e}");
    // What is checked before reading.
    let bad = |text: &str| {
        let table: toml::Table = text.parse().unwrap();
        format!("{:#}", registry().build_dataset("interactions", table, &BuildCx::default()).err().unwrap())
    };
    let e =
        bad("path = \"x\"\ncolumns = { rating = \"stars\" }\nmin_rating = 4.0\noutcomes = { liked = \"stars >= 4\" }");
    assert!(
        e.starts_with("key `min_rating`: with `outcomes` declared")
            && e.contains("declare the threshold as an outcome rule"),
        "{e}"
    );
    let e = bad("path = \"x\"\nnegative_feedback = \"stars <= 2\"");
    assert!(e.starts_with("key `negative_feedback`: every row is a positive"), "{e}");
    let e = bad("path = \"x\"\noutcomes = { liked = \"stars ~ 4\" }");
    assert!(e.starts_with("key `outcomes.liked`: rule \"stars ~ 4\""), "{e}");
}
