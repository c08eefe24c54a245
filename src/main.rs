//! The `funnel` command line: thin argument parsing over the library.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use funnel::compare;
use funnel::experiment;
use funnel::plugins;
use funnel::run::{self, RunOptions};
use funnel::sweep::{self, runner::SweepOptions};

const USAGE: &str = "\
usage:
  funnel run FILE [--set key.path=value]... [--dry-run] [--runs-dir DIR] [--reports-dir DIR] [--resume RUN_DIR] [--trial N] [--parent-run SWEEP_DIR]
  funnel check FILE [--set key.path=value]...
  funnel plan FILE [--set key.path=value]...
  funnel sweep FILE [--set key.path=value]... [--jobs N] [--emit slurm] [--sweep-dir DIR] [--runs-dir DIR] [--reports-dir DIR]
  funnel recommend --run RUN_DIR (--user ID | --items ID,ID,...) [--k N]
  funnel plugins
  funnel compare --out FILE --title TITLE [--intro TEXT] RUN_DIR...

  run       train and evaluate the experiment in FILE; --resume continues the run in
            RUN_DIR from its last checkpoint (same FILE and overrides)
  check     load and resolve FILE, print the resolved configuration (same as run --dry-run)
  recommend the top N (default 10) titles for a dataset user, or for an ad-hoc history of
            item ids (oldest first), through a finished run's saved model and index
  plugins   list every registered component with its parameters and defaults
  plan      list the trials of FILE's [sweep] (each checked); run one with run --trial N
  sweep     run every trial of FILE's [sweep] and the base configuration per seed, N at a
            time as separate processes nested under one tracker run, skipping runs that
            finished before (same resolved configuration); then write
            reports/<experiment>/sweep-<timestamp>.md. --emit slurm writes a Slurm array
            job (submit.sh) instead of running; --sweep-dir continues a sweep's folder
  compare   write a Markdown table comparing finished runs (their metrics.json)

Configuration layers: FILE, then FUNNEL_* environment variables
(FUNNEL_TRAIN__EPOCHS=3 sets train.epochs), then --set (last wins).";

fn main() -> ExitCode {
    match cli(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

struct Args {
    file: PathBuf,
    sets: Vec<String>,
    dry_run: bool,
    runs_dir: PathBuf,
    reports_dir: PathBuf,
    resume: Option<PathBuf>,
    trial: Option<usize>,
    parent: Option<PathBuf>,
    jobs: usize,
    emit: Option<String>,
    sweep_dir: Option<PathBuf>,
}

fn cli(args: Vec<String>) -> Result<()> {
    let Some((command, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    let registry = plugins::builtin();
    match command.as_str() {
        "plugins" => {
            if !rest.is_empty() {
                bail!("`plugins` takes no arguments\n\n{USAGE}");
            }
            print!("{}", plugins::catalog(&registry));
            Ok(())
        }
        "plan" => {
            let a = parse(rest)?;
            let trials = experiment::load(&a.file, &a.sets, &registry)?.trials()?;
            for t in &trials {
                // Resolve every trial before any runs, so a bad value fails now.
                experiment::load_trial(&a.file, &a.sets, t.index, &registry)?;
                let shown: Vec<String> = t.sets().iter().map(|s| format!("--set '{s}'")).collect();
                println!("trial {} (configuration {}, seed {}): {}", t.index, t.config, t.seed, shown.join(" "));
            }
            Ok(())
        }
        "run" | "check" => {
            let mut a = parse(rest)?;
            a.dry_run |= command == "check";
            let exp = match a.trial {
                Some(n) => experiment::load_trial(&a.file, &a.sets, n, &registry)?,
                None => experiment::load(&a.file, &a.sets, &registry)?,
            };
            if a.dry_run {
                print!("{}", funnel::run_folder::resolved_toml(&exp));
                return Ok(());
            }
            let summary = run::run(
                &exp,
                &registry,
                &RunOptions { runs_dir: a.runs_dir, reports_dir: a.reports_dir, resume: a.resume, parent: a.parent },
            )
            .with_context(|| format!("experiment {}", a.file.display()))?;
            println!("best epoch: {}", summary.best_epoch);
            for (k, v) in &summary.test {
                println!("test {k}: {v:.4}");
            }
            println!("report: {}", summary.report.display());
            Ok(())
        }
        "sweep" => {
            let a = parse(rest)?;
            let opts = SweepOptions {
                runs_dir: a.runs_dir,
                reports_dir: a.reports_dir,
                jobs: a.jobs,
                sweep_dir: a.sweep_dir,
                funnel: std::env::current_exe().context("locating the funnel executable")?,
            };
            match a.emit.as_deref() {
                None => {
                    let summary = sweep::runner::run(&a.file, &a.sets, &registry, &opts)?;
                    println!("sweep report: {}", summary.report.display());
                }
                Some("slurm") => {
                    let e = sweep::slurm::emit(&a.file, &a.sets, &registry, &opts)?;
                    println!("wrote {} ({} array tasks) and {}", e.array.display(), e.tasks, e.submit.display());
                    println!("on the cluster's login node: bash {}", e.submit.display());
                }
                Some(other) => bail!("--emit {other}: the only target is `slurm`"),
            }
            Ok(())
        }
        "recommend" => recommend(rest, &registry),
        "compare" => compare(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command `{other}`\n\n{USAGE}"),
    }
}

fn recommend(rest: &[String], registry: &funnel::api::Registry) -> Result<()> {
    use funnel::recommend::{recommend, Query};
    let (mut run, mut query, mut k) = (None, None, 10usize);
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().cloned().with_context(|| format!("{flag} needs a value\n\n{USAGE}"));
        match arg.as_str() {
            "--run" => run = Some(PathBuf::from(value("--run")?)),
            "--user" => {
                let v = value("--user")?;
                query = Some(Query::User(v.parse().with_context(|| format!("--user {v}: expected a user id"))?));
            }
            "--items" => {
                let v = value("--items")?;
                let ids = v
                    .split(',')
                    .map(|s| s.trim().parse::<u64>().with_context(|| format!("--items {v}: `{s}` is not an item id")))
                    .collect::<Result<Vec<_>>>()?;
                query = Some(Query::Items(ids));
            }
            "--k" => {
                let v = value("--k")?;
                k = v.parse().ok().filter(|k| *k > 0).with_context(|| format!("--k {v}: expected a number >= 1"))?;
            }
            other => bail!("unknown argument `{other}`\n\n{USAGE}"),
        }
    }
    let run = run.with_context(|| format!("recommend needs --run RUN_DIR\n\n{USAGE}"))?;
    let query = query.with_context(|| format!("recommend needs --user ID or --items ID,ID,...\n\n{USAGE}"))?;
    let answer = recommend(&run, &query, k, registry)?;
    println!("history (newest first): {}", answer.history.join("; "));
    println!("top {k}:");
    for (i, r) in answer.items.iter().enumerate() {
        println!("{:>3}. {} (item {}, score {:.4})", i + 1, r.title, r.item_id, r.score);
    }
    Ok(())
}

fn compare(rest: &[String]) -> Result<()> {
    let (mut out, mut title, mut intro, mut dirs) = (None, None, String::new(), Vec::new());
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().cloned().with_context(|| format!("{flag} needs a value\n\n{USAGE}"));
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--title" => title = Some(value("--title")?),
            "--intro" => intro = value("--intro")?,
            s if s.starts_with('-') => bail!("unknown option `{s}`\n\n{USAGE}"),
            s => dirs.push(PathBuf::from(s)),
        }
    }
    let out = out.with_context(|| format!("compare needs --out FILE\n\n{USAGE}"))?;
    let title = title.with_context(|| format!("compare needs --title TITLE\n\n{USAGE}"))?;
    if dirs.is_empty() {
        bail!("compare needs at least one RUN_DIR\n\n{USAGE}");
    }
    let runs = dirs.iter().map(|d| compare::RunRecord::read(d)).collect::<Result<Vec<_>>>()?;
    let previous = std::fs::read_to_string(&out).ok();
    std::fs::write(&out, compare::render(&title, &intro, &runs, previous.as_deref()))
        .with_context(|| format!("writing {}", out.display()))?;
    println!("wrote {}", out.display());
    Ok(())
}

fn parse(rest: &[String]) -> Result<Args> {
    let mut file = None;
    let mut a = Args {
        file: PathBuf::new(),
        sets: Vec::new(),
        dry_run: false,
        runs_dir: PathBuf::from("runs"),
        reports_dir: PathBuf::from("reports"),
        resume: None,
        trial: None,
        parent: None,
        jobs: 1,
        emit: None,
        sweep_dir: None,
    };
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().cloned().with_context(|| format!("{flag} needs a value\n\n{USAGE}"));
        match arg.as_str() {
            "--set" => a.sets.push(value("--set")?),
            "--dry-run" => a.dry_run = true,
            "--runs-dir" => a.runs_dir = value("--runs-dir")?.into(),
            "--reports-dir" => a.reports_dir = value("--reports-dir")?.into(),
            "--resume" => a.resume = Some(value("--resume")?.into()),
            "--parent-run" => a.parent = Some(value("--parent-run")?.into()),
            "--sweep-dir" => a.sweep_dir = Some(value("--sweep-dir")?.into()),
            "--emit" => a.emit = Some(value("--emit")?),
            "--jobs" => {
                let v = value("--jobs")?;
                a.jobs =
                    v.parse().ok().filter(|n| *n > 0).with_context(|| format!("--jobs {v}: expected a number >= 1"))?;
            }
            "--trial" => {
                let v = value("--trial")?;
                a.trial = Some(v.parse().with_context(|| format!("--trial {v}: expected a trial number"))?);
            }
            s if s.starts_with("--set=") => a.sets.push(s["--set=".len()..].to_string()),
            s if s.starts_with('-') => bail!("unknown option `{s}`\n\n{USAGE}"),
            s if file.is_none() => file = Some(PathBuf::from(s)),
            s => bail!("unexpected argument `{s}`\n\n{USAGE}"),
        }
    }
    a.file = file.with_context(|| format!("missing the experiment FILE\n\n{USAGE}"))?;
    Ok(a)
}
