//! `cargo bench --bench load -- [options]` (`cargo xtask bench load`): how
//! fast the `interactions` dataset reads a large log, as CSV and as Parquet,
//! and its peak memory, each load in a process of its own.
//!
//! The log is the scale bench's seeded MovieLens-shaped one (25,000,095
//! ratings by default, cached in target/scale-data), converted once to
//! Parquet beside it. Options: `--interactions N`, `--data DIR`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arrow::datatypes::{DataType, Field, Schema};

mod support;

use support::log::{generate, Shape};

fn main() -> ExitCode {
    // The child: load one file and report.
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--load-child") {
        return support::main_with_args(load_child, &args[i + 1..]);
    }
    support::main_with(run)
}

/// `--load-child PATH`: loads PATH with the `interactions` dataset and
/// prints `rows positives seconds`.
fn load_child(args: &[String]) -> Result<()> {
    let path = args.first().context("--load-child needs a path")?;
    let table: toml::Table = format!(
        "path = {path:?}\ncolumns = {{ user = \"userId\", item = \"movieId\", timestamp = \"timestamp\", rating = \"rating\" }}\n\
         min_rating = 4.0"
    )
    .parse()?;
    let reg = funnel::plugins::builtin();
    let started = Instant::now();
    let data = reg.build_dataset("interactions", table, &funnel::api::BuildCx::default())?.load()?;
    println!("{} {} {}", data.raw_rows, data.interactions.len(), started.elapsed().as_secs_f64());
    Ok(())
}

fn run() -> Result<()> {
    let mut size = 25_000_095usize;
    let mut data = PathBuf::from("target/scale-data");
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--interactions" => size = value()?.replace('_', "").parse().context("--interactions")?,
            "--data" => data = PathBuf::from(value()?),
            other => bail!("unknown option `{other}`; see the top of benches/load.rs"),
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = root.join(&data).join(format!("ml-25m-shaped-{size}"));
    let csv = dir.join("ratings.csv");
    if !csv.is_file() {
        eprintln!("generating {size} ratings into {}", dir.display());
        generate(&dir, Shape::at(size), 42)?;
    }
    let parquet = dir.join("ratings.parquet");
    if !parquet.is_file() {
        let started = Instant::now();
        to_parquet(&csv, &parquet)?;
        eprintln!("wrote {} in {:.1} s", parquet.display(), started.elapsed().as_secs_f64());
    }
    println!("| format | file size | rows | positives | load seconds | rows/s | peak memory |");
    println!("|---|---|---|---|---|---|---|");
    let mut rates = Vec::new();
    for (name, file) in [("CSV", &csv), ("Parquet", &parquet)] {
        let exe = std::env::current_exe()?;
        let watched = support::run_watched(Command::new(exe).arg("--load-child").arg(file), false)?;
        if !watched.success {
            bail!("loading {} failed:\n{}", file.display(), watched.stderr);
        }
        // The child printed to stdout, which run_watched discards: its
        // stderr carries the dataset's own summary line; time it here.
        let seconds = watched.seconds;
        let rows = size as f64;
        let positives = watched
            .stderr
            .lines()
            .find_map(|l| l.split_once("dropped; ").map(|(_, r)| r.split(' ').next().unwrap_or("?").to_string()))
            .unwrap_or_default();
        rates.push(rows / seconds);
        println!(
            "| {name} | {:.0} MB | {size} | {positives} | {seconds:.1} | {:.0} | {:.2} GB |",
            std::fs::metadata(file)?.len() as f64 / 1e6,
            rows / seconds,
            watched.peak_bytes as f64 / 1e9
        );
    }
    println!("\nParquet / CSV rows/s: {:.2}x", rates[1] / rates[0]);
    Ok(())
}

/// Streams the CSV log into a Parquet file (snappy), one batch at a time.
fn to_parquet(csv: &Path, out: &Path) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("userId", DataType::Int64, false),
        Field::new("movieId", DataType::Int64, false),
        Field::new("rating", DataType::Float64, false),
        Field::new("timestamp", DataType::Int64, false),
    ]));
    let reader = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(true)
        .with_batch_size(1 << 16)
        .build(std::io::BufReader::new(std::fs::File::open(csv)?))?;
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let tmp = out.with_extension("parquet.tmp");
    let mut writer = parquet::arrow::ArrowWriter::try_new(std::fs::File::create(&tmp)?, schema, Some(props))?;
    for batch in reader {
        writer.write(&batch?)?;
    }
    writer.close()?;
    std::fs::rename(tmp, out)?;
    Ok(())
}
