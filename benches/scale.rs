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

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, WeightedAliasIndex};

const ML25M: Shape = Shape { users: 162_541, items: 59_047, ratings: 25_000_095 };
const GENRES: usize = 20;

mod support;

fn main() -> ExitCode {
    support::main_with(run)
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    users: usize,
    items: usize,
    ratings: usize,
}

impl Shape {
    /// ml-25m's shape at `ratings` interactions: users and items scale with
    /// the square root of the ratio, so ratings per user and per item scale
    /// alike.
    fn at(ratings: usize) -> Shape {
        let f = (ratings as f64 / ML25M.ratings as f64).sqrt();
        let scale = |n: usize| ((n as f64 * f).round() as usize).max(100);
        let users = scale(ML25M.users).min(ratings / 20);
        Shape { users, items: scale(ML25M.items), ratings }
    }
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

/// Writes `ratings.csv` and `movies.csv` of `shape` into `dir`.
fn generate(dir: &Path, shape: Shape, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(seed);
    // Items: a genre each, Zipf-like popularity over a random order.
    let genre_of: Vec<usize> = (0..shape.items).map(|_| rng.gen_range(0..GENRES)).collect();
    let mut rank: Vec<usize> = (0..shape.items).collect();
    for i in (1..rank.len()).rev() {
        rank.swap(i, rng.gen_range(0..=i));
    }
    let popularity: Vec<f64> = rank.iter().map(|&r| 1.0 / (r as f64 + 10.0).powf(0.9)).collect();
    let global = WeightedAliasIndex::new(popularity.clone())?;
    let by_genre: Vec<(Vec<usize>, WeightedAliasIndex<f64>)> = (0..GENRES)
        .map(|g| {
            let members: Vec<usize> = (0..shape.items).filter(|&i| genre_of[i] == g).collect();
            let weights = members.iter().map(|&i| popularity[i]).collect();
            Ok((members, WeightedAliasIndex::new(weights)?))
        })
        .collect::<Result<_>>()?;
    let movie_id = |i: usize| 1 + 3 * i as u64;

    let mut movies = std::io::BufWriter::new(std::fs::File::create(dir.join("movies.csv"))?);
    writeln!(movies, "movieId,title,genres")?;
    for (i, genre) in genre_of.iter().enumerate() {
        writeln!(movies, "{},Movie {i} ({}),Genre{genre}", movie_id(i), 1950 + i % 70)?;
    }
    movies.flush()?;

    // Users: at least 20 ratings each, log-normal activity scaled to the total.
    let activity = LogNormal::new(0.0, 1.1)?;
    let weights: Vec<f64> = (0..shape.users).map(|_| activity.sample(&mut rng)).collect();
    let spare = shape.ratings.saturating_sub(20 * shape.users) as f64;
    let total: f64 = weights.iter().sum();
    let cap = shape.items / 2;
    let counts: Vec<usize> = weights.iter().map(|w| (20 + (spare * w / total).round() as usize).min(cap)).collect();

    let mut ratings = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("ratings.csv"))?);
    writeln!(ratings, "userId,movieId,rating,timestamp")?;
    let mut seen = HashSet::new();
    for (u, &count) in counts.iter().enumerate() {
        let favourites = [rng.gen_range(0..GENRES), rng.gen_range(0..GENRES), rng.gen_range(0..GENRES)];
        let mut t: u64 = rng.gen_range(820_000_000..1_550_000_000);
        seen.clear();
        while seen.len() < count {
            let item = if rng.gen_bool(0.7) {
                let (members, alias) = &by_genre[favourites[rng.gen_range(0..3)]];
                if members.is_empty() {
                    continue;
                }
                members[alias.sample(&mut rng)]
            } else {
                global.sample(&mut rng)
            };
            if !seen.insert(item) {
                continue;
            }
            let rating = if rng.gen_bool(0.48) {
                if rng.gen_bool(0.45) {
                    "5.0"
                } else {
                    "4.0"
                }
            } else {
                ["0.5", "1.0", "1.5", "2.0", "2.5", "3.0", "3.5"][rng.gen_range(0..7)]
            };
            t += rng.gen_range(1..200_000);
            writeln!(ratings, "{},{},{rating},{t}", u + 1, movie_id(item))?;
        }
    }
    ratings.flush()?;
    Ok(())
}
