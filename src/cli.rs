//! The `funnel` command line, as a library entry point.
//!
//! `src/main.rs` calls [`main`] with the built-in registry; a crate that adds
//! its own plugins does the same with its registry and gets every command
//! (`run`, `check`, `plan`, `sweep`, `recommend`, `plugins`, `compare`),
//! sweeps included: sweep children are started from the running executable,
//! so they see the same plugins.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use funnel_api::Registry;

use crate::run::RunOptions;
use crate::sweep::runner::SweepOptions;
use crate::{compare, experiment, plugins, preflight, recommend, run, run_folder, sweep};

const CONFIG_LAYERS: &str = "Configuration layers: FILE, then FUNNEL_* environment variables \
(FUNNEL_TRAIN__EPOCHS=3 sets train.epochs), then --set (last wins).";

#[derive(Debug, Parser)]
#[command(
    name = "funnel",
    version,
    about = "Declarative candidate-generation experiments for recommender systems",
    after_help = CONFIG_LAYERS,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train and evaluate the experiment in FILE.
    Run {
        #[command(flatten)]
        experiment: ExperimentArgs,
        #[command(flatten)]
        dirs: OutputDirs,
        /// Resolve and print the configuration; train nothing (same as `check`).
        #[arg(long)]
        dry_run: bool,
        /// Continue the run in RUN_DIR from its last checkpoint (same FILE and overrides).
        #[arg(long, value_name = "RUN_DIR")]
        resume: Option<PathBuf>,
        /// Nest the run's tracking under this sweep (set by `funnel sweep`).
        #[arg(long = "parent-run", value_name = "SWEEP_DIR")]
        parent_run: Option<PathBuf>,
    },
    /// Load and resolve FILE; print the resolved configuration.
    Check {
        #[command(flatten)]
        experiment: ExperimentArgs,
        /// Accepted (and unused) so `check` takes whatever `run` takes.
        #[command(flatten)]
        _dirs: HiddenDirs,
    },
    /// List the trials of FILE's [sweep], each checked against its data; run one with `run --trial N`.
    Plan {
        #[command(flatten)]
        experiment: ExperimentArgs,
    },
    /// Run every trial of FILE's [sweep] and the base configuration per seed.
    ///
    /// Trials run N at a time as separate processes nested under one tracker
    /// run, skipping runs that finished before (same resolved configuration);
    /// then reports/<experiment>/sweep-<timestamp>.md is written.
    Sweep {
        #[command(flatten)]
        experiment: ExperimentArgs,
        #[command(flatten)]
        dirs: OutputDirs,
        /// Trials run at once.
        #[arg(long, value_name = "N", default_value = "1")]
        jobs: NonZeroUsize,
        /// Write a job script for this scheduler instead of running.
        #[arg(long, value_enum)]
        emit: Option<Emit>,
        /// Continue the sweep in this folder.
        #[arg(long, value_name = "DIR")]
        sweep_dir: Option<PathBuf>,
    },
    /// The top titles for a dataset user or an ad-hoc history, from a finished run's model and index.
    Recommend {
        /// The finished run's folder.
        #[arg(long, value_name = "RUN_DIR")]
        run: PathBuf,
        /// A dataset user (raw id): their positives form the history.
        #[arg(long, value_name = "ID", group = "query")]
        user: Option<String>,
        /// An ad-hoc history of raw item ids, oldest first.
        #[arg(long, value_name = "ID,ID,...", value_delimiter = ',', num_args = 1.., group = "query")]
        items: Option<Vec<String>>,
        /// How many to recommend.
        #[arg(long, value_name = "N", default_value = "10")]
        k: NonZeroUsize,
        /// The outcome to ask about (a name the dataset declares) when the
        /// model was trained on several; unset: the one the run served.
        #[arg(long, value_name = "NAME")]
        outcome: Option<String>,
    },
    /// List every registered component with its parameters and defaults.
    Plugins,
    /// Write a Markdown table comparing finished runs (their metrics.json).
    Compare {
        /// The Markdown file to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        #[arg(long)]
        title: String,
        /// A paragraph under the title.
        #[arg(long, default_value = "")]
        intro: String,
        /// Test metrics to show, comma-separated (e.g.
        /// `outcome/loved/recall@10,disliked@10`); unset: the first run's headline metrics.
        #[arg(long, value_delimiter = ',', value_name = "METRIC")]
        columns: Vec<String>,
        /// Finished runs' folders.
        #[arg(required = true, value_name = "RUN_DIR")]
        runs: Vec<PathBuf>,
    },
}

/// The experiment file and what overrides it.
#[derive(Debug, Args)]
struct ExperimentArgs {
    /// The experiment file (TOML).
    file: PathBuf,
    /// Override one key, e.g. `--set train.epochs=3` or `--set 'model.hidden=[128]'`.
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    sets: Vec<String>,
    /// Trial N of the file's [sweep] instead of its base configuration.
    #[arg(long, value_name = "N")]
    trial: Option<usize>,
}

#[derive(Debug, Args)]
struct OutputDirs {
    /// Where run folders go.
    #[arg(long, value_name = "DIR", default_value = "runs")]
    runs_dir: PathBuf,
    /// Where Markdown reports go.
    #[arg(long, value_name = "DIR", default_value = "reports")]
    reports_dir: PathBuf,
}

/// `--runs-dir` and `--reports-dir` where nothing is written.
#[derive(Debug, Args)]
struct HiddenDirs {
    #[arg(long, value_name = "DIR", hide = true)]
    runs_dir: Option<PathBuf>,
    #[arg(long, value_name = "DIR", hide = true)]
    reports_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Emit {
    /// A Slurm array job (array.sbatch and submit.sh).
    Slurm,
}

/// Runs the command line in `std::env::args()` against `registry`: the whole
/// `funnel` binary. Errors print as `error: ...` and exit with 2.
pub fn main(registry: Registry) -> ExitCode {
    // The thread that trains and evaluates works on its parallel loops
    // itself instead of sleeping until the pool's threads finish them.
    funnel_kernels::par::work_on_this_thread();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with 0; usage errors exit with 2.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match execute(cli.command, &registry) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn load(a: &ExperimentArgs, registry: &Registry) -> Result<experiment::Experiment> {
    match a.trial {
        Some(n) => experiment::load_trial(&a.file, &a.sets, n, registry),
        None => experiment::load(&a.file, &a.sets, registry),
    }
}

/// Resolves every trial of the file's `[sweep]` and checks each against its
/// data (each distinct dataset loaded once); one line per trial.
fn checked_trials(a: &ExperimentArgs, registry: &Registry) -> Result<Vec<String>> {
    let trials = experiment::load(&a.file, &a.sets, registry)?.trials()?;
    let mut datasets: Vec<(String, funnel_api::LoadedDataset)> = Vec::new();
    let mut lines = Vec::with_capacity(trials.len());
    for t in &trials {
        let exp = experiment::load_trial(&a.file, &a.sets, t.index, registry)?;
        let key = toml::to_string(&exp.spec.dataset).unwrap_or_default();
        if !datasets.iter().any(|(k, _)| *k == key) {
            let data = preflight::load_dataset(&exp, registry).with_context(|| format!("trial {}", t.index))?;
            datasets.push((key.clone(), data));
        }
        let data = &datasets.iter().find(|(k, _)| *k == key).expect("loaded above").1;
        preflight::check(&exp, registry, data).with_context(|| format!("trial {}", t.index))?;
        let shown: Vec<String> = t.sets().iter().map(|s| format!("--set '{s}'")).collect();
        lines.push(format!("trial {} (configuration {}, seed {}): {}", t.index, t.config, t.seed, shown.join(" ")));
    }
    Ok(lines)
}

fn execute(command: Command, registry: &Registry) -> Result<()> {
    match command {
        Command::Plugins => {
            print!("{}", plugins::catalog(registry));
            Ok(())
        }
        Command::Check { experiment, .. } => {
            print!("{}", run_folder::resolved_toml(&load(&experiment, registry)?));
            Ok(())
        }
        Command::Plan { experiment: a } => {
            for line in checked_trials(&a, registry)? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Run { experiment, dirs, dry_run, resume, parent_run } => {
            let exp = load(&experiment, registry)?;
            if dry_run {
                print!("{}", run_folder::resolved_toml(&exp));
                return Ok(());
            }
            let options =
                RunOptions { runs_dir: dirs.runs_dir, reports_dir: dirs.reports_dir, resume, parent: parent_run };
            let summary = run::run(&exp, registry, &options)
                .with_context(|| format!("experiment {}", experiment.file.display()))?;
            println!("best epoch: {}", summary.best_epoch);
            for (k, v) in &summary.test {
                println!("test {k}: {v:.4}");
            }
            println!("report: {}", summary.report.display());
            Ok(())
        }
        Command::Sweep { experiment: a, dirs, jobs, emit, sweep_dir } => {
            anyhow::ensure!(a.trial.is_none(), "--trial selects one trial of a sweep: use `funnel run FILE --trial N`");
            let opts = SweepOptions {
                runs_dir: dirs.runs_dir,
                reports_dir: dirs.reports_dir,
                jobs: jobs.get(),
                sweep_dir,
                funnel: std::env::current_exe().context("locating the funnel executable")?,
            };
            // Every trial checked against its data first, so none fails
            // after others have started training.
            checked_trials(&a, registry)?;
            match emit {
                None => {
                    let summary = sweep::runner::run(&a.file, &a.sets, registry, &opts)?;
                    println!("sweep report: {}", summary.report.display());
                }
                Some(Emit::Slurm) => {
                    let e = sweep::slurm::emit(&a.file, &a.sets, registry, &opts)?;
                    println!("wrote {} ({} array tasks) and {}", e.array.display(), e.tasks, e.submit.display());
                    println!("on the cluster's login node: bash {}", e.submit.display());
                }
            }
            Ok(())
        }
        Command::Recommend { run, user, items, k, outcome } => {
            let query = match (user, items) {
                (Some(user), None) => recommend::Query::User(user),
                (None, Some(items)) => {
                    recommend::Query::Items(items.into_iter().map(|i| i.trim().to_string()).collect())
                }
                _ => anyhow::bail!("recommend needs --user ID or --items ID,ID,..."),
            };
            let k = k.get();
            let answer = recommend::recommend(&run, &query, outcome.as_deref(), k, registry)?;
            println!("history (newest first): {}", answer.history.join("; "));
            println!("top {k}:");
            for (i, r) in answer.items.iter().enumerate() {
                println!("{:>3}. {} (item {}, score {:.4})", i + 1, r.title, r.item_id, r.score);
            }
            Ok(())
        }
        Command::Compare { out, title, intro, columns, runs } => {
            let records = runs.iter().map(|d| compare::RunRecord::read(d)).collect::<Result<Vec<_>>>()?;
            let previous = std::fs::read_to_string(&out).ok();
            std::fs::write(&out, compare::render(&title, &intro, &records, &columns, previous.as_deref()))
                .with_context(|| format!("writing {}", out.display()))?;
            println!("wrote {}", out.display());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn repeated_sets_and_a_trial_parse() {
        let cli =
            Cli::try_parse_from(["funnel", "run", "x.toml", "--set", "a.b=1", "--set=c.d=[1, 2]", "--trial", "3"])
                .unwrap();
        let Command::Run { experiment, dirs, .. } = cli.command else { panic!("not run") };
        assert_eq!(experiment.sets, ["a.b=1", "c.d=[1, 2]"]);
        assert_eq!(experiment.trial, Some(3));
        assert_eq!(dirs.runs_dir, PathBuf::from("runs"));
    }

    #[test]
    fn recommend_takes_one_query() {
        assert!(Cli::try_parse_from(["funnel", "recommend", "--run", "r", "--user", "1", "--items", "2"]).is_err());
        let cli = Cli::try_parse_from(["funnel", "recommend", "--run", "r", "--items", "3,4"]).unwrap();
        let Command::Recommend { items, .. } = cli.command else { panic!("not recommend") };
        assert_eq!(items, Some(vec!["3".to_string(), "4".to_string()]));
        assert!(Cli::try_parse_from(["funnel", "recommend", "--run", "r", "--k", "0", "--user", "1"]).is_err());
    }
}
