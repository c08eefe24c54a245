//! `cargo bench --bench scale -- [options]` (`cargo xtask bench scale`): the
//! headline experiment end to end on a generated MovieLens-shaped log, with
//! the wall time and peak memory of every stage, so growth with the data is
//! measured rather than guessed.
//!
//! The log is seeded and written in the ml-25m CSV layout (`ratings.csv`,
//! `movies.csv`), read by the `movielens` dataset unchanged. Its shape is
//! ml-25m's: 162,541 users and 59,047 items for 25,000,095 ratings, scaled
//! down in users and items by the square root of the interaction ratio for
//! smaller sizes. Users rate at least 20 items, activity is log-normal, item
//! popularity is Zipf-like, each user favours a few of 20 genres, and about
//! 48 % of ratings are 4 or 5 (the positives).
//!
//! Options: `--interactions 1000000,10000000,25000000` (default 25000000;
//! several sizes print one table with a column per size), `--epochs N` (10),
//! `--index TYPE` (hnsw), `--validation-users N` (10000), `--data DIR` (where
//! generated logs are cached; target/scale-data), `--set k=v` (passed on).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};

mod support;

use support::log::{generate, Shape, ML25M};

fn main() -> ExitCode {
    support::main_with(run)
}

struct Options {
    sizes: Vec<usize>,
    epochs: usize,
    index: String,
    validation_users: usize,
    data: PathBuf,
    sets: Vec<String>,
}

fn options() -> Result<Options> {
    let mut o = Options {
        sizes: vec![ML25M.ratings],
        epochs: 10,
        index: "hnsw".into(),
        validation_users: 10_000,
        data: PathBuf::from("target/scale-data"),
        sets: Vec::new(),
    };
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--interactions" => {
                o.sizes = value()?
                    .split(',')
                    .map(|s| s.trim().replace('_', "").parse().with_context(|| format!("--interactions: `{s}`")))
                    .collect::<Result<_>>()?;
            }
            "--epochs" => o.epochs = value()?.parse().context("--epochs")?,
            "--index" => o.index = value()?,
            "--validation-users" => o.validation_users = value()?.parse().context("--validation-users")?,
            "--data" => o.data = PathBuf::from(value()?),
            "--set" => o.sets.push(value()?),
            other => bail!("unknown option `{other}`; see the top of benches/scale.rs"),
        }
    }
    if o.sizes.iter().any(|&s| s < 2_000) {
        bail!("--interactions: at least 2000 per size");
    }
    Ok(o)
}

fn run() -> Result<()> {
    let o = options()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut columns = Vec::new();
    for &size in &o.sizes {
        let shape = Shape::at(size);
        let dir = root.join(&o.data).join(format!("ml-25m-shaped-{size}"));
        if !dir.join("ratings.csv").is_file() {
            let started = Instant::now();
            eprintln!(
                "generating {size} ratings ({} users, {} items) into {}",
                shape.users,
                shape.items,
                dir.display()
            );
            generate(&dir, shape, 42)?;
            eprintln!("generated in {:.1} s", started.elapsed().as_secs_f64());
        }
        columns.push((size, shape, measure(root, &dir, &o)?));
        print_table(&columns);
    }
    Ok(())
}

/// One size's run: stages from its `metrics.json`, the process's peak RSS
/// and wall time.
struct Measured {
    stages: Vec<(String, f64, Option<u64>)>,
    wall: f64,
    peak: u64,
    positives: String,
    test_recall: f64,
}

fn measure(root: &Path, data: &Path, o: &Options) -> Result<Measured> {
    let work = tempfile::tempdir()?;
    let mut args: Vec<String> = vec![
        "run".into(),
        root.join("experiments/mns.toml").display().to_string(),
        "--runs-dir".into(),
        "runs".into(),
        "--reports-dir".into(),
        "reports".into(),
    ];
    for set in [
        "dataset.variant=ml-25m".to_string(),
        format!("dataset.path={}", data.display()),
        format!("train.epochs={}", o.epochs),
        format!("evaluation.validation_users={}", o.validation_users),
        format!("index.type={}", o.index),
        "tracking.type=local".to_string(),
    ]
    .into_iter()
    .chain(o.sets.iter().cloned())
    {
        args.extend(["--set".into(), set]);
    }
    eprintln!("funnel {}", args.join(" "));
    let watched = support::run_watched(
        Command::new(env!("CARGO_BIN_EXE_funnel"))
            .current_dir(work.path())
            .args(&args)
            .env_remove("MLFLOW_TRACKING_URI"),
        true,
    )?;
    if !watched.success {
        bail!("funnel run failed");
    }
    let (wall, log) = (watched.seconds, watched.stderr);
    let run_dir = std::fs::read_dir(work.path().join("runs/mns"))?.next().context("no run folder")??.path();
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json"))?)?;
    let stages = metrics["stages"]
        .as_array()
        .context("metrics.json has no stages")?
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap_or("?").to_string(),
                s["seconds"].as_f64().unwrap_or(0.0),
                s["peak_rss_bytes"].as_u64(),
            )
        })
        .collect();
    let positives = log
        .lines()
        .find_map(|l| {
            l.split_once(" items, ").and_then(|(_, rest)| rest.split_once(" positives")).map(|(n, _)| n.to_string())
        })
        .unwrap_or_default();
    Ok(Measured {
        stages,
        wall,
        peak: watched.peak_bytes,
        positives,
        test_recall: metrics["test"]["recall@10"].as_f64().unwrap_or(f64::NAN),
    })
}

/// Stages grouped as the report groups them (every epoch, every validation),
/// one column per size: seconds, share of the run, peak memory.
fn print_table(columns: &[(usize, Shape, Measured)]) {
    let group = |name: &str| {
        if name.starts_with("epoch ") {
            "training (every epoch)".to_string()
        } else if name.starts_with("validation ") {
            "validation (every epoch)".to_string()
        } else {
            name.to_string()
        }
    };
    let mut names: Vec<String> = Vec::new();
    for (_, _, m) in columns {
        for (n, _, _) in &m.stages {
            let g = group(n);
            if !names.contains(&g) {
                names.push(g);
            }
        }
    }
    let mut out = String::from("\n| stage |");
    let mut rule = String::from("|---|");
    for (size, shape, m) in columns {
        out.push_str(&format!(
            " {size} ratings ({} users, {} items, {} positives) |",
            shape.users, shape.items, m.positives
        ));
        rule.push_str("---|");
    }
    out.push_str(&format!("\n{rule}\n"));
    for name in &names {
        out.push_str(&format!("| {name} |"));
        for (_, _, m) in columns {
            let rows: Vec<_> = m.stages.iter().filter(|(n, _, _)| &group(n) == name).collect();
            let secs: f64 = rows.iter().map(|r| r.1).sum();
            let peak = rows.iter().filter_map(|r| r.2).max();
            let total: f64 = m.stages.iter().map(|r| r.1).sum();
            out.push_str(&format!(
                " {secs:.1} s ({:.1} %), {} |",
                100.0 * secs / total.max(1e-9),
                peak.map_or("n/a".into(), |b| format!("{:.0} MB", b as f64 / 1e6))
            ));
        }
        out.push('\n');
    }
    out.push_str("| **whole run** |");
    for (_, _, m) in columns {
        out.push_str(&format!(" **{:.1} min, peak {:.2} GB** |", m.wall / 60.0, m.peak as f64 / 1e9));
    }
    out.push_str("\n| test recall@10 |");
    for (_, _, m) in columns {
        out.push_str(&format!(" {:.4} |", m.test_recall));
    }
    println!("{out}");
}
