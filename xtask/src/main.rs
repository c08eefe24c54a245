//! `cargo xtask`: the project's commands. Orchestration only; the logic lives
//! in the `funnel` crate.
//!
//! The `cargo xtask` alias builds this crate in debug mode, so every command
//! that trains builds and runs an optimized `funnel` binary instead.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

mod cuda;
mod mlflow;
mod venv;

/// The project's commands: experiments, sweeps, MLflow, benches, tests,
/// reports.
#[derive(Parser, Debug)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    after_help = "Commands that build funnel take --features (e.g. cargo xtask run --features cuda \
                  experiments/mns.toml --set train.device=cuda); put it before the experiment file."
)]
struct Xtask {
    #[command(subcommand)]
    task: Task,
}

/// Cargo features for the release `funnel` build.
#[derive(Args, Debug, Clone, Default)]
struct Build {
    /// Cargo features of the funnel build (`cuda` trains on dfdx's CUDA device).
    #[arg(long, value_name = "FEATURES")]
    features: Option<String>,
}

impl Build {
    fn cargo_args(&self) -> Vec<String> {
        self.features.iter().flat_map(|f| ["--features".to_string(), f.clone()]).collect()
    }
}

/// What follows is handed on unchanged.
#[derive(Args, Debug, Clone, Default)]
struct Forwarded {
    /// Arguments for the command it runs (see its own --help, e.g. `cargo xtask run -- --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, value_name = "ARGS")]
    args: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Train and evaluate an experiment (release build): `cargo xtask run FILE [--set k=v]... [--dry-run]`;
    /// with [tracking] type = "mlflow" and no server named, the local MLflow server starts first.
    Run {
        #[command(flatten)]
        build: Build,
        #[command(flatten)]
        args: Forwarded,
    },
    /// Run FILE's [sweep] (`FILE [--jobs N] [--set k=v]...`, or `--emit slurm` for a Slurm array job):
    /// every trial and the base per seed, nested under one MLflow run; finished runs are reused.
    Sweep {
        #[command(flatten)]
        build: Build,
        #[command(flatten)]
        args: Forwarded,
    },
    /// The local MLflow server and uploading journaled runs.
    Mlflow {
        #[command(subcommand)]
        command: MlflowTask,
    },
    /// List registered components, their parameters and defaults.
    Plugins {
        #[command(flatten)]
        build: Build,
        #[command(flatten)]
        args: Forwarded,
    },
    /// Top items through a run's saved model and index: `--run DIR --user ID [--k N]` or `--items 1,2,3`.
    Recommend {
        #[command(flatten)]
        build: Build,
        #[command(flatten)]
        args: Forwarded,
    },
    /// Benchmarks, always optimized.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
    /// The whole test suite as CI runs it (release build); ARGS go to `cargo test`.
    Test {
        #[command(flatten)]
        args: Forwarded,
    },
    /// Rerun experiments/mns.toml and experiments/ablations/*.toml; regenerate reports/negative-sampling.md.
    Ablations {
        #[command(flatten)]
        build: Build,
        #[command(flatten)]
        sets: Sets,
    },
    /// Rerun experiments/mns.toml and experiments/models/*.toml; regenerate reports/models.md.
    Models {
        #[command(flatten)]
        build: Build,
        #[command(flatten)]
        sets: Sets,
    },
    /// Rerun experiments/mns.toml and experiments/splits/*.toml; regenerate reports/splits.md.
    Splits {
        #[command(flatten)]
        build: Build,
        #[command(flatten)]
        sets: Sets,
    },
    /// Run experiments/outcomes.toml's arms (multi-outcome against one model per outcome, on ml-100k and
    /// ml-1m; with and without negative feedback) for each seed; regenerate reports/outcomes.md.
    Outcomes {
        #[command(flatten)]
        build: Build,
        /// Seeds of every arm.
        #[arg(long, value_delimiter = ',', default_value = "42,1,2")]
        seeds: Vec<u64>,
        #[command(flatten)]
        sets: Sets,
    },
    /// Install NVIDIA's nvcc wheels from PyPI into .cuda/ and check that the `cuda` feature compiles
    /// (no GPU needed).
    CheckCuda,
    /// Print the environment that builds with --features cuda.
    CudaEnv,
}

/// `--set key.path=value` overrides applied to every experiment.
#[derive(Args, Debug, Clone, Default)]
struct Sets {
    /// Override a configuration value in every experiment (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
}

impl Sets {
    fn args(&self) -> Vec<String> {
        self.sets.iter().flat_map(|s| ["--set".to_string(), s.clone()]).collect()
    }
}

#[derive(Subcommand, Debug)]
enum MlflowTask {
    /// Install MLflow (pinned) into .venv when absent and start a server on 127.0.0.1 (SQLite and
    /// artifacts under .mlflow/).
    Up {
        #[arg(long, default_value_t = mlflow::DEFAULT_PORT)]
        port: u16,
    },
    /// Stop the local server.
    Down,
    /// Tell whether the local server runs, and where.
    Status,
    /// Install MLflow into .venv and print the executable's path.
    Install,
    /// Upload what runs journaled while MLflow was away (every run under runs/ by default); ARGS go
    /// to `funnel-mlflow sync`.
    Sync {
        #[command(flatten)]
        args: Forwarded,
    },
}

#[derive(Subcommand, Debug)]
enum BenchTarget {
    /// ANN indexes on a 1M x 64 clustered catalog (`--run RUN_DIR` for a run's vectors; `--peer faiss`: faiss beside them).
    Index(Forwarded),
    /// Training examples/s, GFLOP/s against the measured GEMM peak, peak RSS per loss on ml-1m (`--peer`: beside the PyTorch peer, with the ratio).
    Train(Forwarded),
    /// The headline on generated ml-25m-shaped logs: wall time and peak memory of every stage.
    Scale(Forwarded),
    /// Reading a 25M-row log as CSV and as Parquet.
    Load(Forwarded),
}

fn main() -> ExitCode {
    let cli = Xtask::parse();
    match dispatch(cli.task) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(task: Task) -> Result<ExitCode> {
    let root = project_root();
    std::env::set_current_dir(&root).with_context(|| format!("entering {}", root.display()))?;
    match task {
        Task::Run { build, args } => run(&build.cargo_args(), "run", &args.args),
        Task::Sweep { build, args } => run(&build.cargo_args(), "sweep", &args.args),
        Task::Mlflow { command } => mlflow_command(command),
        Task::Plugins { build, args } => funnel(&build.cargo_args(), "plugins", &args.args),
        Task::Recommend { build, args } => funnel(&build.cargo_args(), "recommend", &args.args),
        Task::Bench { target } => bench(target),
        Task::Test { args } => test(&args.args),
        Task::Ablations { build, sets } => compare_experiments(&NEGATIVE_SAMPLING, &build.cargo_args(), &sets.args()),
        Task::Models { build, sets } => compare_experiments(&MODELS, &build.cargo_args(), &sets.args()),
        Task::Splits { build, sets } => compare_experiments(&SPLITS, &build.cargo_args(), &sets.args()),
        Task::Outcomes { build, seeds, sets } => outcomes(&build.cargo_args(), &seeds, &sets.args()),
        Task::CheckCuda => check_cuda(),
        Task::CudaEnv => {
            let toolkit = cuda::install(&root)?;
            for (k, v) in cuda::env(&root, &toolkit)? {
                println!("export {k}={v:?}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Builds the release `funnel` binary and runs one of its commands.
fn funnel(features: &[String], command: &str, args: &[String]) -> Result<ExitCode> {
    let ok = status(Command::new(funnel_binary(features)?).arg(command).args(args))?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn funnel_binary(features: &[String]) -> Result<PathBuf> {
    release_binary("funnel", &["--bin", "funnel"], features)
}

/// Builds `name` in release mode (`selector` picks it for cargo) and returns its path.
fn release_binary(name: &str, selector: &[&str], features: &[String]) -> Result<PathBuf> {
    let mut build = cargo();
    build.args(["build", "--release", "--quiet"]).args(selector).args(features);
    status(&mut build)?.then_some(()).with_context(|| format!("building {name} failed"))?;
    Ok(Path::new("target").join("release").join(format!("{name}{}", std::env::consts::EXE_SUFFIX)))
}

/// `funnel run` or `funnel sweep`, with the local MLflow server started when
/// the experiment tracks to MLflow and names no server.
fn run(features: &[String], command: &str, args: &[String]) -> Result<ExitCode> {
    let bin = funnel_binary(features)?;
    let mut cmd = Command::new(&bin);
    cmd.arg(command).args(args);
    if std::env::var_os("MLFLOW_TRACKING_URI").is_none() && !args.iter().any(|a| a == "--dry-run") {
        // `check` resolves the same file and overrides (sweep flags aside).
        let check_args = without_sweep_flags(args);
        let check =
            Command::new(&bin).arg("check").args(&check_args).stderr(std::process::Stdio::inherit()).output()?;
        if !check.status.success() {
            return Ok(ExitCode::from(2));
        }
        if mlflow::wants_local_server(&String::from_utf8_lossy(&check.stdout)) {
            match mlflow::up(&project_root(), mlflow::DEFAULT_PORT) {
                Ok(url) => {
                    eprintln!("MLflow UI: {url}");
                    cmd.env("MLFLOW_TRACKING_URI", url);
                }
                // The run still journals everything; tracking is no reason not to train.
                Err(e) => eprintln!(
                    "warning: could not start the local MLflow server: {e:#}\n  training anyway; the run is \
                     journaled and `cargo xtask mlflow sync` uploads it later (or use --set tracking.type=local)"
                ),
            }
        }
    }
    Ok(if status(&mut cmd)? { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `args` without `--jobs N`, `--emit X` and `--sweep-dir D`, which only `sweep` takes.
fn without_sweep_flags(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if ["--jobs", "--emit", "--sweep-dir"].contains(&a.as_str()) {
            it.next();
        } else {
            out.push(a.clone());
        }
    }
    out
}

fn mlflow_command(command: MlflowTask) -> Result<ExitCode> {
    let root = project_root();
    match command {
        MlflowTask::Up { port } => {
            let url = mlflow::up(&root, port)?;
            println!("MLflow UI: {url}  (runs: export MLFLOW_TRACKING_URI={url}; stop: cargo xtask mlflow down)");
        }
        MlflowTask::Down => {
            if mlflow::down(&root)? {
                println!("stopped the local MLflow server");
            } else {
                println!("no local MLflow server was running");
            }
        }
        MlflowTask::Status => match mlflow::running(&root) {
            Some(url) => println!("running: MLflow UI at {url}"),
            None => println!("not running (start it: cargo xtask mlflow up)"),
        },
        MlflowTask::Install => println!("{}", mlflow::install(&root)?.display()),
        MlflowTask::Sync { args } => {
            let rest = &args.args;
            let bin = release_binary("funnel-mlflow", &["-p", "funnel-tracker-mlflow", "--bin", "funnel-mlflow"], &[])?;
            let mut cmd = Command::new(bin);
            cmd.arg("sync").args(rest);
            let named = rest.iter().any(|a| a.starts_with("--tracking-uri"))
                || std::env::var_os("MLFLOW_TRACKING_URI").is_some();
            if !named {
                // Runs journaled without any server go to the local one.
                cmd.arg("--default-uri").arg(mlflow::up(&root, mlflow::DEFAULT_PORT)?);
            }
            return Ok(if status(&mut cmd)? { ExitCode::SUCCESS } else { ExitCode::from(1) });
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Benchmarks, always optimized (`cargo bench`).
fn bench(target: BenchTarget) -> Result<ExitCode> {
    let (name, args) = match target {
        BenchTarget::Index(a) => ("index", a.args),
        BenchTarget::Train(a) => ("train", a.args),
        BenchTarget::Scale(a) => ("scale", a.args),
        BenchTarget::Load(a) => ("load", a.args),
    };
    let mut cmd = cargo();
    cmd.args(["bench", "--bench", name, "--"]).args(&args);
    if name == "index" && args.windows(2).any(|w| w[0] == "--peer" && w[1] == "faiss") {
        cmd.arg("--peer-python").arg(faiss_python(&project_root())?);
    }
    if name == "train" && args.iter().any(|a| a == "--peer") {
        cmd = cargo();
        cmd.args(["bench", "--bench", name, "--"]).args(args.iter().filter(|a| *a != "--peer"));
        match torch_peer(&project_root()) {
            Ok((python, script)) => {
                cmd.arg("--peer-python").arg(python).arg("--peer-script").arg(script);
            }
            Err(why) => eprintln!("no PyTorch peer, funnel's numbers only: {why:#}"),
        }
    }
    let ok = status(&mut cmd)?;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The PyTorch peer of `../shared/peer/` and the venv its README makes
/// (`FUNNEL_PEER_PYTHON` and `FUNNEL_PEER_DIR` point elsewhere).
fn torch_peer(root: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = std::env::var_os("FUNNEL_PEER_DIR").map_or_else(|| root.join("../shared/peer"), PathBuf::from);
    let script = dir.join("torch_youtube_dnn.py");
    if !script.is_file() {
        bail!("{} is missing (set FUNNEL_PEER_DIR to the peer's folder)", script.display());
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default();
    let python = std::env::var_os("FUNNEL_PEER_PYTHON")
        .map_or_else(|| home.join(".cache/funnel-peer-venv/bin/python"), PathBuf::from);
    let probe = Command::new(&python).args(["-c", "import torch, numpy"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        bail!(
            "{} cannot import torch; make the venv once with `python3 -m venv ~/.cache/funnel-peer-venv && \
             ~/.cache/funnel-peer-venv/bin/pip install torch numpy` (see {})",
            python.display(),
            dir.join("README.md").display()
        );
    }
    Ok((python, script))
}

/// faiss-cpu from PyPI, pinned, in `.venv-faiss` (installed once): the peer
/// `bench index --peer faiss` measures against.
fn faiss_python(root: &Path) -> Result<PathBuf> {
    const FAISS: &str = "1.15.1";
    let venv = root.join(".venv-faiss");
    let python = venv.join("bin").join("python");
    let probe = Command::new(&python).args(["-c", "import faiss, numpy; print(faiss.__version__)"]).output();
    if probe.is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == FAISS) {
        return Ok(python);
    }
    venv::pip_install(&venv, &format!("faiss-cpu {FAISS}"), &[&format!("faiss-cpu=={FAISS}"), "numpy"])?;
    Ok(python)
}

/// Compiles the CUDA path of dfdx and funnel against a project-local toolkit.
fn check_cuda() -> Result<ExitCode> {
    let root = project_root();
    let toolkit = cuda::install(&root)?;
    let mut cmd = cargo();
    cmd.args(["check", "--features", "cuda", "-p", "funnel", "--target-dir", "target/cuda-check"]);
    for (k, v) in cuda::env(&root, &toolkit)? {
        cmd.env(k, v);
    }
    let ok = status(&mut cmd)?;
    if ok {
        println!("the cuda feature compiles (CUDA toolkit {})", cuda::VERSION);
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// One table over the headline and every experiment of a folder, each run
/// again from scratch.
struct Comparison {
    folder: &'static str,
    out: &'static str,
    title: &'static str,
    intro: &'static str,
}

const NEGATIVE_SAMPLING: Comparison = Comparison {
    folder: "experiments/ablations",
    out: "reports/negative-sampling.md",
    title: "Negative sampling on MovieLens-1M",
    intro: NEGATIVE_SAMPLING_INTRO,
};

const MODELS: Comparison = Comparison {
    folder: "experiments/models",
    out: "reports/models.md",
    title: "Features and models on MovieLens-1M",
    intro: MODELS_INTRO,
};

/// Runs `experiments/mns.toml` and every `*.toml` of `c.folder` (sorted),
/// then writes their table to `c.out`.
fn compare_experiments(c: &Comparison, features: &[String], args: &[String]) -> Result<ExitCode> {
    let mut files = vec![PathBuf::from("experiments/mns.toml")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(c.folder)
        .with_context(|| format!("reading {}", c.folder))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    more.retain(|p| p.extension().is_some_and(|e| e == "toml"));
    more.sort();
    files.extend(more);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let runs_root = Path::new("runs").join(Path::new(c.folder).file_name().unwrap_or_default()).join(stamp.to_string());
    let mut run_dirs = Vec::new();
    for (i, file) in files.iter().enumerate() {
        eprintln!("== {} of {}: {}", i + 1, files.len(), file.display());
        let runs_dir = runs_root.join(i.to_string());
        let mut run_args = vec![file.display().to_string(), "--runs-dir".into(), runs_dir.display().to_string()];
        run_args.extend(args.iter().cloned());
        if run(features, "run", &run_args)? != ExitCode::SUCCESS {
            bail!("{} failed", file.display());
        }
        run_dirs.push(only_run_dir(&runs_dir)?);
    }
    let mut compare =
        vec!["--out".to_string(), c.out.into(), "--title".into(), c.title.into(), "--intro".into(), c.intro.into()];
    compare.extend(run_dirs.iter().map(|d| d.display().to_string()));
    funnel(features, "compare", &compare)
}

/// The arms of `cargo xtask outcomes`: name, what differs, and the `--set`s
/// over experiments/outcomes.toml (ml-100k, liked and loved trained together,
/// negative feedback on). A `--set` table merges into the file's, so a
/// single-outcome arm sets the other outcome's weight to 0.
const OUTCOME_ARMS: [(&str, &str, &[&str]); 8] = [
    ("ml100k-both", "ml-100k: one model trained on liked and loved, conditioned on the outcome", &[]),
    ("ml100k-liked", "ml-100k: liked alone", &["train.outcomes={liked=1.0, loved=0.0}", "train.select_outcome=liked"]),
    ("ml100k-loved", "ml-100k: loved alone", &["train.outcomes={liked=0.0, loved=1.0}", "train.select_outcome=loved"]),
    (
        "ml100k-both-no-feedback",
        "ml-100k: liked and loved, negative feedback off",
        &["train.negative_feedback_weight=0.0"],
    ),
    (
        "ml100k-both-feedback-x4",
        "ml-100k: liked and loved, each dislike counted 4 times",
        &["train.negative_feedback_weight=4.0"],
    ),
    ("ml1m-both", "ml-1m: liked and loved", &["dataset.variant=ml-1m"]),
    (
        "ml1m-liked",
        "ml-1m: liked alone",
        &["dataset.variant=ml-1m", "train.outcomes={liked=1.0, loved=0.0}", "train.select_outcome=liked"],
    ),
    (
        "ml1m-loved",
        "ml-1m: loved alone",
        &["dataset.variant=ml-1m", "train.outcomes={liked=0.0, loved=1.0}", "train.select_outcome=loved"],
    ),
];

/// Runs every arm of [`OUTCOME_ARMS`] for each seed, then tables them into
/// reports/outcomes.md with the per-outcome columns.
fn outcomes(features: &[String], seeds: &[u64], args: &[String]) -> Result<ExitCode> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let runs_root = Path::new("runs").join("outcomes").join(stamp.to_string());
    let mut run_dirs = Vec::new();
    let total = OUTCOME_ARMS.len() * seeds.len();
    for (a, (name, description, sets)) in OUTCOME_ARMS.iter().enumerate() {
        for (s, seed) in seeds.iter().enumerate() {
            eprintln!("== {} of {total}: {name}, seed {seed}", a * seeds.len() + s + 1);
            let runs_dir = runs_root.join(format!("{name}-{seed}"));
            let mut run_args = vec![
                "experiments/outcomes.toml".to_string(),
                "--runs-dir".into(),
                runs_dir.display().to_string(),
                "--reports-dir".into(),
                "reports/outcomes".into(),
            ];
            let arm = [
                format!("experiment.name=outcomes-{name}"),
                format!("experiment.description={description} (seed {seed})"),
                format!("experiment.seed={seed}"),
            ];
            for set in arm.iter().map(String::as_str).chain(sets.iter().copied()) {
                run_args.extend(["--set".to_string(), set.to_string()]);
            }
            run_args.extend(args.iter().cloned());
            if run(features, "run", &run_args)? != ExitCode::SUCCESS {
                bail!("arm {name} (seed {seed}) failed");
            }
            run_dirs.push(only_run_dir(&runs_dir)?);
        }
    }
    let columns = [
        "outcome/liked/recall@10",
        "outcome/liked/ndcg@10",
        "outcome/loved/recall@10",
        "outcome/loved/ndcg@10",
        "disliked@10",
    ];
    let mut compare = vec![
        "--out".to_string(),
        "reports/outcomes.md".into(),
        "--title".into(),
        "Several outcomes in one model, and explicit negative feedback".into(),
        "--intro".into(),
        OUTCOMES_INTRO.into(),
        "--columns".into(),
        columns.join(","),
    ];
    compare.extend(run_dirs.iter().map(|d| d.display().to_string()));
    funnel(features, "compare", &compare)
}

const OUTCOMES_INTRO: &str = "\
`experiments/outcomes.toml`: YouTube DNN candidate generation (the headline's 5-item mean history, mixed \
negatives with logQ correction, cosine logits at temperature 0.1, 10 epochs) on MovieLens with two outcomes \
declared by the dataset, liked (rating >= 4) and loved (rating >= 5), and ratings <= 2 as explicit negative \
feedback. A multi-outcome row trains one model on both outcomes, its query conditioned on a learned embedding \
of the outcome (ItemSage-style), positives of both in every batch; a single-outcome row trains on one outcome \
alone, with the same epochs, batch size and everything else. Leave-last-out: each outcome's test cases are the \
users whose last positive meets it, ranked over the full catalog (seen items excluded) with a query asking about \
that outcome; the best epoch is picked on validation (the mean over outcomes, or the one outcome trained). \
disliked@10 is the share of test users whose top 10 holds an item they rated <= 2 after their history ends \
(ml-100k only: the ml-1m copy here holds only ratings >= 4). Regenerate with `cargo xtask outcomes` (every arm, \
seeds 42, 1 and 2).";

const SPLITS: Comparison = Comparison {
    folder: "experiments/splits",
    out: "reports/splits.md",
    title: "Evaluation protocols on MovieLens-1M",
    intro: SPLITS_INTRO,
};

const SPLITS_INTRO: &str = "\
The headline `experiments/mns.toml` (ml-1m, rating >= 4 positives, users with >= 5; in-batch + 1000 uniform \
negatives with logQ correction; the epoch with the best validation Recall@10 tested once, full catalog, seen \
items excluded) under three ways of choosing the held-out targets. Leave-last-out (the first row): each \
user's last positive is the test target. `temporal`: one global cutoff, nothing at or after the validation \
cutoff trained on, each user's first positive after the cutoff is the target, users without one left out. \
`random_holdout`: a seeded 20 % of each user's positives held out, one for validation, the others test \
targets asked from the rest. Regenerate with `cargo xtask splits`.";

const NEGATIVE_SAMPLING_INTRO: &str = "\
YouTube DNN candidate generation on ml-1m (rating >= 4 positives, users with >= 5), next-watch protocol: \
the last positive of each user is the test target, the one before it the validation target. \
Metrics rank the target against the full catalog with seen items excluded; the epoch with the best \
validation Recall@10 is tested once. Regenerate with `cargo xtask ablations` (runs every row again). \
The first row is the headline `experiments/mns.toml`; the others are `experiments/ablations/*.toml`, \
identical to `experiments/youtube_dnn.toml` except for `[sampler]`.";

const MODELS_INTRO: &str = "\
Every feature and model plugin on ml-1m (rating >= 4 positives, users with >= 5), next-watch protocol: \
the last positive of each user is the test target, the one before it the validation target; the epoch \
with the best validation Recall@10 is tested once, ranking the full catalog with seen items excluded. \
The first row is the id-only headline `experiments/mns.toml`; each other row is a file in \
`experiments/models/` that changes only what its description says (same sampler: in-batch + 1000 \
uniform negatives with logQ correction, same training budget unless it says otherwise). examples/s counts \
training targets, so a row trained on every position of windows (`targets = \"all_positions\"`) counts \
each position once, as a row trained on the last item counts each example; minutes to best is the wall \
time of training and validation up to the best epoch. Baselines are fitted on the same training \
examples. Regenerate with `cargo xtask models` (runs every row again).";

/// The single `<experiment>/<timestamp>` folder a run created under `runs_dir`.
fn only_run_dir(runs_dir: &Path) -> Result<PathBuf> {
    let mut found = Vec::new();
    for exp in std::fs::read_dir(runs_dir).with_context(|| format!("reading {}", runs_dir.display()))? {
        for run in std::fs::read_dir(exp?.path())? {
            found.push(run?.path());
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one run folder under {}, found {}", runs_dir.display(), found.len()),
    }
}

/// The whole suite: every crate's unit tests and the integration tests, slow
/// ones included (they train on real MovieLens data from ../shared/data).
/// Ends with one `N passed, N failed` line summed over every test binary.
fn test(args: &[String]) -> Result<ExitCode> {
    use std::io::{BufRead, BufReader};
    // The MLflow integration tests start their own servers from this install.
    let mlflow = mlflow::install(&project_root())?;
    let mut cmd = cargo();
    cmd.args(["test", "--workspace", "--release", "--no-fail-fast", "--lib", "--bins", "--tests"])
        .args(args)
        .env("RUN_SLOW_TESTS", "1")
        .env("TEST_MLFLOW_BIN", mlflow)
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().context("starting cargo test")?;
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("stdout is piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            passed += count_before(rest, " passed");
            failed += count_before(rest, " failed");
        }
    }
    let ok = child.wait()?.success();
    println!("tests: {passed} passed, {failed} failed");
    Ok(if ok && failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The number just before `label` in cargo's `ok. 5 passed; 0 failed; ...`.
fn count_before(summary: &str, label: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| part.trim().trim_start_matches("ok. ").trim_start_matches("FAILED. ").strip_suffix(label))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn status(cmd: &mut Command) -> Result<bool> {
    let shown = format!("{cmd:?}");
    Ok(cmd.status().with_context(|| format!("starting {shown}"))?.success())
}

fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask sits in the project root").to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_after_the_file_go_to_funnel_unchanged() {
        let cli = Xtask::try_parse_from([
            "cargo xtask",
            "run",
            "--features",
            "cuda",
            "experiments/mns.toml",
            "--set",
            "train.device=cuda",
            "--dry-run",
        ])
        .unwrap();
        let Task::Run { build, args } = cli.task else { panic!("not run") };
        assert_eq!(build.cargo_args(), ["--features", "cuda"]);
        assert_eq!(args.args, ["experiments/mns.toml", "--set", "train.device=cuda", "--dry-run"]);
    }

    #[test]
    fn typos_are_answered_with_the_closest_command() {
        let e = Xtask::try_parse_from(["cargo xtask", "mlflow", "upp"]).unwrap_err().to_string();
        assert!(e.contains("similar subcommand exists: 'up'"), "{e}");
        let e = Xtask::try_parse_from(["cargo xtask", "mlflow", "up", "--prot", "5001"]).unwrap_err().to_string();
        assert!(e.contains("--port"), "{e}");
        let cli = Xtask::try_parse_from(["cargo xtask", "models", "--set", "train.epochs=1"]).unwrap();
        let Task::Models { sets, .. } = cli.task else { panic!("not models") };
        assert_eq!(sets.args(), ["--set", "train.epochs=1"]);
    }
}
