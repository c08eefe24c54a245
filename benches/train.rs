//! `cargo bench --bench train -- [options]` (`cargo xtask bench train`):
//! training throughput of the real binary per loss on ml-1m, the achieved
//! GFLOP/s against a measured GEMM peak, peak memory, and, on synthetic
//! catalogs up to 1,000,000 items, that the cost of a sampled-loss step does
//! not grow with the catalog.
//!
//! Each configuration is a `funnel run` child process (so its peak RSS is its
//! own), d = 64, hidden [256], batch 256, the youtube_dnn model. Examples/s is
//! the median over the run's epochs as its journal records them.
//!
//! GEMM work of one example (what the peer figures count): candidate
//! logits forward and their two backward products, 6·d·C, plus the tower
//! d -> 256 -> d forward and backward, 12·d·256.
//!
//! Options: `--epochs N` (3), `--losses in_batch,mixed,full`, `--catalogs
//! 10000,100000,1000000,1000000/10000` (synthetic; `N/M`: N items, histories
//! and positives drawn from M of them; `--catalogs none` skips them),
//! `--peer-python PATH` with `--peer-script PATH`, `--engines host,device`
//! (`[train] engine`; with both, each loss also prints how far the device
//! step's epoch losses and test Recall@10 are from the host's, and beside
//! them how far the host engine moves from itself when the temperature
//! moves by one unit in the last place: the floor rounding sets; then a
//! run of the host engine with the device's step taken beside each step from
//! the host's state prints, per epoch, how far the two steps land apart,
//! which independent runs cannot show once rounding has added up: see
//! `train/beside.rs`).
//!
//! With a peer (`cargo xtask bench train --peer` finds the venv that
//! `../shared/peer/README.md` describes), each loss's funnel run is followed
//! by the PyTorch peer's run of the same loss on the same data (400 steps of
//! one epoch, 2 threads), `--rounds N` times (3) alternating, and the table
//! gains the peer's examples/s and the ratio, medians over the rounds (each
//! round's ratio compares neighbouring runs): speed is only comparable
//! within one run on one machine, and on a shared machine both sides drift
//! within minutes.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

const DIM: usize = 64;
const HIDDEN: usize = 256;
const BATCH: usize = 256;

#[path = "train/beside.rs"]
mod beside;
mod support;

fn main() -> ExitCode {
    if std::env::var_os(beside::AS_FUNNEL).is_some() {
        return funnel::cli::main(beside::registry());
    }
    support::main_with(run)
}

struct Options {
    epochs: usize,
    losses: Vec<String>,
    catalogs: Vec<Catalog>,
    /// The Python with torch and the peer's script.
    peer: Option<(String, String)>,
    engines: Vec<String>,
    /// With a peer: funnel and peer runs alternated this many times per loss.
    rounds: usize,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A synthetic catalog: `items` rows in the model, histories and positives
/// drawn uniformly from the first `drawn_from` (the sampler's uniform
/// negatives come from all of them).
#[derive(Clone, Copy)]
struct Catalog {
    items: usize,
    drawn_from: usize,
}

impl std::str::FromStr for Catalog {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Catalog> {
        let number = |v: &str| v.parse::<usize>().with_context(|| format!("--catalogs: `{s}` is not N or N/M"));
        let c = match s.split_once('/') {
            Some((n, m)) => Catalog { items: number(n)?, drawn_from: number(m)? },
            None => Catalog { items: number(s)?, drawn_from: number(s)? },
        };
        if c.drawn_from == 0 || c.drawn_from > c.items {
            bail!("--catalogs: `{s}` draws from {} of {} items", c.drawn_from, c.items);
        }
        Ok(c)
    }
}

fn options() -> Result<Options> {
    let mut o = Options {
        epochs: 3,
        losses: vec!["in_batch".into(), "mixed".into(), "full".into()],
        catalogs: ["10000", "100000", "1000000", "1000000/10000"].map(|c| c.parse().expect("valid")).to_vec(),
        peer: None,
        engines: vec!["host".into()],
        rounds: 3,
    };
    let (mut python, mut script) = (None, None);
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--epochs" => o.epochs = value()?.parse().context("--epochs")?,
            "--losses" => o.losses = value()?.split(',').map(str::to_string).collect(),
            "--catalogs" => {
                let v = value()?;
                o.catalogs =
                    if v == "none" { Vec::new() } else { v.split(',').map(str::parse).collect::<Result<_>>()? };
            }
            "--rounds" => o.rounds = value()?.parse::<usize>().context("--rounds")?.max(1),
            "--engines" => o.engines = value()?.split(',').map(str::to_string).collect(),
            "--peer-python" => python = Some(value()?.clone()),
            "--peer-script" => script = Some(value()?.clone()),
            other => bail!("unknown option `{other}` (see the header of benches/train.rs)"),
        }
    }
    o.peer = match (python, script) {
        (Some(p), Some(s)) => Some((p, s)),
        (None, None) => None,
        _ => bail!("--peer-python and --peer-script go together"),
    };
    Ok(o)
}

/// GFLOP/s of single-precision GEMM at the shapes of a step ([B, d] x [d, C]),
/// through matrixmultiply (the kernel of the host-side loss): on one core,
/// or with the rows in two halves side by side on two threads, as the loss
/// splits a large batch.
fn gemm_peak(two_halves: bool) -> f64 {
    let (m, k, n) = (BATCH, DIM, 4096);
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0f32; m * n];
    let rows = |a: &[f32], c: &mut [f32]| {
        let m = c.len() / n;
        // SAFETY: `a` holds m*k values, `b` k*n and `c` m*n, row-major with the strides given.
        unsafe {
            matrixmultiply::sgemm(
                m,
                k,
                n,
                1.0,
                std::hint::black_box(a.as_ptr()),
                k as isize,
                1,
                std::hint::black_box(b.as_ptr()),
                n as isize,
                1,
                0.0,
                c.as_mut_ptr(),
                n as isize,
                1,
            );
        }
    };
    let mut best = 0f64;
    for _ in 0..5 {
        let started = Instant::now();
        let mut reps = 0;
        while started.elapsed() < Duration::from_millis(400) {
            if two_halves {
                let (top, bottom) = c.split_at_mut(m / 2 * n);
                let (a_top, a_bottom) = a.split_at(m / 2 * k);
                funnel_kernels::par::beside(|| rows(a_top, top), || rows(a_bottom, bottom));
            } else {
                rows(&a, &mut c);
            }
            std::hint::black_box(&mut c);
            reps += 1;
        }
        best = best.max(2.0 * (m * k * n) as f64 * reps as f64 / started.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// What one training run measured.
struct Measured {
    examples_per_second: f64,
    peak_rss_mb: f64,
    test_recall_at_10: f64,
    items: usize,
    /// Each epoch's mean training loss, in order.
    losses: Vec<f64>,
}

/// Runs `funnel_binary run exp.toml` on `toml` in `dir` to completion,
/// polling the child's peak RSS.
fn funnel_run(mut funnel_binary: Command, dir: &Path, toml: &str) -> Result<support::Watched> {
    std::fs::write(dir.join("exp.toml"), toml)?;
    let watched = support::run_watched(
        funnel_binary
            .current_dir(dir)
            .args(["run", "exp.toml", "--runs-dir", "runs", "--reports-dir", "reports"])
            .env_remove("MLFLOW_TRACKING_URI"),
        false,
    )?;
    if !watched.success {
        bail!("funnel run failed:\n{}", watched.stderr);
    }
    Ok(watched)
}

/// Runs `funnel run exp.toml` in `dir`.
fn train(dir: &Path, toml: &str) -> Result<Measured> {
    let watched = funnel_run(Command::new(env!("CARGO_BIN_EXE_funnel")), dir, toml)?;
    let peak_kb = watched.peak_bytes / 1024;
    let run_dir = std::fs::read_dir(dir.join("runs/bench"))?.next().context("no run folder")??.path();
    let (mut per_epoch, mut losses) = (Vec::new(), Vec::new());
    for line in std::fs::read_to_string(run_dir.join("journal.jsonl"))?.lines() {
        let e: serde_json::Value = serde_json::from_str(line)?;
        if let Some(v) = e["metrics"]["epoch/examples_per_second"].as_f64() {
            per_epoch.push(v);
        }
        if let Some(v) = e["metrics"]["epoch/loss"].as_f64() {
            losses.push(v);
        }
    }
    per_epoch.sort_by(f64::total_cmp);
    let metrics: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run_dir.join("metrics.json"))?)?;
    let items = std::fs::read_to_string(run_dir.join("candidate_probabilities.tsv"))?.lines().count() - 1;
    Ok(Measured {
        examples_per_second: per_epoch.get(per_epoch.len() / 2).copied().context("no epoch recorded")?,
        peak_rss_mb: peak_kb as f64 / 1024.0,
        test_recall_at_10: metrics["test"]["recall@10"].as_f64().unwrap_or(f64::NAN),
        items,
        losses,
    })
}

fn experiment(dataset: &str, sampler: &str, epochs: usize, extra_model: &str, engine: &str) -> String {
    format!(
        "[experiment]\nname = \"bench\"\nseed = 42\n\n[dataset]\n{dataset}\n\n[features]\ntype = \"watch_history\"\n\
         max_history = 30\n\n[sampler]\n{sampler}\n\n[model]\ntype = \"youtube_dnn\"\ndim = {DIM}\nhidden = [{HIDDEN}]\n\
         {extra_model}\n[train]\nepochs = {epochs}\nbatch_size = {BATCH}\nlr = 0.001\ncheckpoint_every = 0\nengine = \"{engine}\"\n\n\
         [evaluation]\ntype = \"full_ranking\"\nks = [10]\n\n[index]\ntype = \"exact\"\n\n[tracking]\ntype = \"local\"\n"
    )
}

/// Candidate columns per batch for each loss (`items` for the full softmax).
fn candidates(loss: &str, items: usize) -> usize {
    match loss {
        "in_batch" => BATCH,
        "mixed" => BATCH + 1000,
        _ => items,
    }
}

fn sampler(loss: &str) -> Result<&'static str> {
    Ok(match loss {
        "in_batch" => "type = \"in_batch\"\nlog_q_correction = true",
        "mixed" => "type = \"mixed\"\nnum_uniform = 1000\nlog_q_correction = true",
        "full" => "type = \"full\"",
        other => bail!("unknown loss `{other}`: in_batch, mixed or full"),
    })
}

/// The ml-1m runs use dense Adam on the embedding tables, as the PyTorch
/// peer's `torch.optim.Adam` does, so the two do the same work per step.
const PEER_OPTIMIZER: &str = "embedding_optimizer = \"adam\"\n";

const STEPS: usize = 200;
const WARMUP: usize = 20;

/// One synthetic catalog in this process: the model and sampler built through
/// the registry for its items, `STEPS` timed steps with random histories.
fn one_catalog(Catalog { items: n, drawn_from }: Catalog) -> Result<()> {
    use funnel::api::{BuildCx, Candidates, ItemIdx, Queries, TrainBatch};
    use rand::{Rng, SeedableRng};
    let reg = funnel::plugins::builtin();
    let cx = BuildCx {
        seed: 42,
        n_users: 1,
        n_items: n,
        max_history: 30,
        train: funnel::api::TrainConfig { lr: 1e-3, batch_size: BATCH, ..Default::default() },
        ..Default::default()
    };
    let model_table: toml::Table =
        format!("dim = {DIM}\nhidden = [{HIDDEN}]\nshare_embeddings = true\nembedding_optimizer = \"lazy_adam\"")
            .parse()?;
    let mut model = reg.build_model("youtube_dnn", model_table, &cx)?;
    let mut sampler = reg.build_sampler("mixed", "num_uniform = 1000\nlog_q_correction = true".parse()?, &cx)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    // Zipf-like training counts, so logQ has something to correct.
    let counts: Vec<u64> = (0..n).map(|i| 1 + (n as u64 / (i as u64 + 1)).min(1000)).collect();
    sampler.fit(&counts, &funnel::api::ExampleSet::default())?;
    let (mut queries, mut positives, mut candidates) = (Queries::new(30), Vec::new(), Candidates::default());
    let (mut timed, mut distinct_rows) = (Duration::ZERO, 0usize);
    for step in 0..WARMUP + STEPS {
        queries.clear();
        positives.clear();
        for _ in 0..BATCH {
            let h: Vec<ItemIdx> = (0..30).map(|_| rng.gen_range(0..drawn_from as ItemIdx)).collect();
            queries.push(&h, 0, 0.0);
            positives.push(rng.gen_range(0..drawn_from as ItemIdx));
        }
        candidates.clear();
        let started = Instant::now();
        sampler.sample(&positives, &mut rng, &mut candidates);
        model.train_step(&TrainBatch {
            queries: &queries,
            positives: &positives,
            candidates: &candidates,
            windows: None,
            weights: &[],
        })?;
        if step >= WARMUP {
            timed += started.elapsed();
            let mut rows: Vec<ItemIdx> = (0..BATCH).flat_map(|r| queries.histories.row(r).to_vec()).collect();
            rows.extend(positives.iter().chain(&candidates.shared).chain(&candidates.per_row));
            rows.sort_unstable();
            rows.dedup();
            distinct_rows += rows.len();
        }
    }
    let status = std::fs::read_to_string("/proc/self/status")?;
    let peak_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let per_step = timed.as_secs_f64() / STEPS as f64;
    println!(
        "{n:>10} {drawn_from:>11} {:>10.0} {:>10.2} {:>12.0} {:>14.0}",
        distinct_rows as f64 / STEPS as f64,
        per_step * 1e3,
        BATCH as f64 / per_step,
        peak_kb / 1024.0
    );
    Ok(())
}

/// The PyTorch peer's examples/s for `loss` on ml-1m: 400 steps of one
/// epoch, the same model and batch (`../shared/peer/README.md`).
fn peer(python: &str, script: &str, ml1m: &Path, loss: &str) -> Result<f64> {
    let peer_loss = match loss {
        "in_batch" => "inbatch",
        "mixed" => "mixed",
        "full" => "full",
        other => bail!("the peer has no loss `{other}`"),
    };
    let out = Command::new(python)
        .arg(script)
        .arg("--data")
        .arg(ml1m.join("ratings.dat"))
        .args(["--loss", peer_loss, "--negatives", "1000", "--epochs", "1", "--max-steps", "400", "--threads", "2"])
        .args(["--dim", &DIM.to_string(), "--hidden", &HIDDEN.to_string(), "--batch", &BATCH.to_string()])
        .args(["--max-hist", "30"])
        .output()
        .with_context(|| format!("starting the peer ({python} {script})"))?;
    if !out.status.success() {
        bail!("the peer failed on {loss}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|row| row["examples_per_s"].as_f64())
        .with_context(|| format!("the peer printed no examples_per_s for {loss}:\n{stdout}"))
}

/// Prints how far `m`'s epoch losses and test Recall@10 are from the host
/// engine's run `h`, and its speed relative to it.
fn versus_host(label: &str, m: &Measured, h: &Measured) {
    let worst = h.losses.iter().zip(&m.losses).map(|(a, b)| ((a - b) / a).abs()).fold(0.0, f64::max);
    println!(
        "{:<18} epoch losses within {worst:.1e} relative of the host's, test R@10 {:+.4}, {:.2}x its examples/s",
        format!("  {label}:"),
        m.test_recall_at_10 - h.test_recall_at_10,
        m.examples_per_second / h.examples_per_second
    );
}

/// Runs the bench binary as `funnel` with [`beside::NAME`] registered on
/// `toml` in `dir`; returns each epoch's line of agreement.
fn step_beside_step(dir: &Path, toml: &str) -> Result<Vec<String>> {
    let mut as_funnel = Command::new(std::env::current_exe()?);
    as_funnel.env(beside::AS_FUNNEL, "1");
    let watched = funnel_run(as_funnel, dir, toml)?;
    let lines: Vec<String> =
        watched.stderr.lines().filter_map(|l| l.strip_prefix(beside::LINE)).map(|l| l.trim().to_string()).collect();
    if lines.is_empty() {
        bail!("the run with the device beside the host printed no agreement:\n{}", watched.stderr);
    }
    Ok(lines)
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--one-catalog") {
        return one_catalog(args.get(i + 1).context("--one-catalog N[/M]")?.parse()?);
    }
    let o = options()?;
    let data = std::env::var("FUNNEL_DATA_DIR").context("FUNNEL_DATA_DIR must name the MovieLens copies")?;
    let ml1m = std::path::absolute(Path::new(&data).join("ml-1m"))?;
    let (peak, two) = (gemm_peak(false), gemm_peak(true));
    println!(
        "GEMM peak (matrixmultiply sgemm, {BATCH}x{DIM} by {DIM}x4096): {peak:.1} GFLOP/s on one core, \
         {two:.1} as two halves of rows on two threads (as the loss splits a batch); % peak below is of the \
         one-core figure"
    );
    println!("\nml-1m, d = {DIM}, hidden [{HIDDEN}], batch {BATCH}, median of {} epochs", o.epochs);
    println!(
        "{:<10} {:<7} {:>12} {:>10} {:>8} {:>12} {:>14}{}",
        "loss",
        "engine",
        "examples/s",
        "GFLOP/s",
        "% peak",
        "peak RSS MB",
        "test R@10",
        if o.peer.is_some() { format!(" {:>12} {:>8}", "peer ex/s", "ratio") } else { String::new() }
    );
    let dataset = format!("type = \"movielens\"\nvariant = \"ml-1m\"\npath = \"{}\"", ml1m.display());
    for loss in &o.losses {
        let mut host: Option<Measured> = None;
        let mut theirs: Option<f64> = None;
        let mut ratio: Option<f64> = None;
        for (i, engine) in o.engines.iter().enumerate() {
            // The first engine alternates with the peer for `rounds` rounds:
            // both drift by up to half within minutes on a shared machine,
            // so each round's ratio compares neighbours, and the table shows
            // medians.
            let rounds = if i == 0 && o.peer.is_some() { o.rounds } else { 1 };
            let (mut ours, mut peers, mut ratios, mut last) = (Vec::new(), Vec::new(), Vec::new(), None);
            for _ in 0..rounds {
                let dir = tempfile::tempdir()?;
                let m = train(dir.path(), &experiment(&dataset, sampler(loss)?, o.epochs, PEER_OPTIMIZER, engine))?;
                if let (Some((python, script)), 0) = (&o.peer, i) {
                    let p = peer(python, script, &ml1m, loss)?;
                    peers.push(p);
                    ratios.push(m.examples_per_second / p);
                }
                ours.push(m.examples_per_second);
                last = Some(m);
            }
            let mut m = last.context("at least one round")?;
            m.examples_per_second = median(&ours);
            if i == 0 && !peers.is_empty() {
                theirs = Some(median(&peers));
                ratio = Some(median(&ratios));
                let list =
                    |v: &[f64], digits: usize| v.iter().map(|x| format!("{x:.digits$}")).collect::<Vec<_>>().join(", ");
                println!(
                    "{:<18} funnel {}; peer {}; ratios {}",
                    format!("  {loss} rounds:"),
                    list(&ours, 0),
                    list(&peers, 0),
                    list(&ratios, 2)
                );
            } else if let Some(t) = theirs {
                ratio = Some(m.examples_per_second / t);
            }
            let flops = (6 * DIM * candidates(loss, m.items) + 12 * DIM * HIDDEN) as f64;
            let gflops = flops * m.examples_per_second / 1e9;
            let versus = match (theirs, ratio) {
                (Some(theirs), Some(ratio)) => format!(" {theirs:>12.0} {ratio:>7.2}x"),
                _ => String::new(),
            };
            println!(
                "{loss:<10} {engine:<7} {:>12.0} {gflops:>10.1} {:>7.0}% {:>12.0} {:>14.4}{versus}",
                m.examples_per_second,
                100.0 * gflops / peak,
                m.peak_rss_mb,
                m.test_recall_at_10
            );
            match &host {
                Some(h) if engine != "host" => versus_host(&format!("{engine} vs host"), &m, h),
                None if engine == "host" => {
                    if o.engines.len() > 1 {
                        // How far training moves from rounding alone, the floor
                        // for comparing engines: the host engine again with the
                        // logits' temperature one unit in the last place above its
                        // default 1.0 (1.0000001 is read as the next f32).
                        let dir = tempfile::tempdir()?;
                        let nudged = format!("{PEER_OPTIMIZER}temperature = 1.0000001\n");
                        let toml = experiment(&dataset, sampler(loss)?, o.epochs, &nudged, "host");
                        versus_host("host, temperature + 1 ulp", &train(dir.path(), &toml)?, &m);
                    }
                    host = Some(m);
                }
                _ => {}
            }
            if engine == "device" && host.is_some() {
                let dir = tempfile::tempdir()?;
                let toml = experiment(&dataset, sampler(loss)?, o.epochs, PEER_OPTIMIZER, "host")
                    .replace("type = \"youtube_dnn\"", &format!("type = \"{}\"", beside::NAME));
                for line in step_beside_step(dir.path(), &toml)? {
                    println!("  device, each step from the host's state, {line}");
                }
            }
        }
    }
    if !o.catalogs.is_empty() {
        println!(
            "\nsynthetic catalogs, mixed + logQ (1000 uniform), {STEPS} training steps after {WARMUP} warm-up, \
             history 30, shared embeddings, lazy Adam on the table; one process per size"
        );
        // Rows/step: distinct table rows a step reads and updates; a small
        // catalog repeats rows within a batch, so its steps do less.
        println!(
            "{:>10} {:>11} {:>10} {:>10} {:>12} {:>14}",
            "items", "drawn from", "rows/step", "ms/step", "examples/s", "peak RSS MB"
        );
        for c in &o.catalogs {
            let arg = format!("{}/{}", c.items, c.drawn_from);
            let out = Command::new(std::env::current_exe()?).arg("--one-catalog").arg(&arg).output()?;
            if !out.status.success() {
                bail!("catalog {arg}: {}", String::from_utf8_lossy(&out.stderr));
            }
            print!("{}", String::from_utf8_lossy(&out.stdout));
        }
    }
    Ok(())
}
