//! `cargo bench --bench index -- [options]`: builds indexes through the plugin
//! registry and measures them against the exact index on one catalog.
//!
//! Per index: build seconds, `size_bytes`, recall@k against `exact` (the share
//! of the exact top k found, averaged over queries), queries per second on one
//! thread and on every core, and single-thread p50/p99 latency. With `--run`,
//! also end-to-end Recall@10 (the held-out target among a user's 10 results).
//!
//! Catalogs (queries are never items themselves):
//! - default: a seeded Gaussian mixture, `--items` x `--dim`, about one
//!   cluster per 1,000 items with Zipf-like sizes (largest ~30x the smallest),
//!   log-normal cluster norms (~0.5x to 2x), spreads and item norms; queries are
//!   cluster directions (picked by size) plus noise, like user vectors.
//! - `--vectors PATH`: a run's `item_vectors.arrow`; each query is the mean of
//!   5 items drawn from the 20 nearest (by cosine) to a random item: a user
//!   with a short history in one neighbourhood.
//! - `--run DIR`: a finished run folder (`resolved.toml`, `checkpoint.bin`):
//!   the dataset, features and model are rebuilt, the best epoch's weights
//!   loaded, and every test user is a query (their user vector, excluding the
//!   items they have seen, as the pipeline serves them).
//!
//! Options: `--items N` (1000000), `--dim D` (64), `--queries Q` (1000; all test
//! users with `--run`), `--k K` (100), `--seed S` (42), `--index TYPE` (repeat
//! for several; default `ivf_flat`), `--set key=value` (a parameter of the
//! `--index` before it, value parsed as TOML), `--vectors PATH`, `--run DIR`,
//! `--sweep key=v1,v2,...` (a search parameter of the `--index` before it:
//! the index is built once with the first value and saved, and every other
//! value loads those files into an index with that value; the build column
//! shows "-" for them), `--peer faiss` with `--peer-python PATH`.
//!
//! The exact index is measured twice: batched on one thread (`search_batch`,
//! one sgemm per block of queries) and on every thread, which is the
//! reference the others are scored against.
//!
//! `--peer faiss` runs faiss (`benches/peer/faiss_index.py`, in the Python
//! given by `--peer-python`; `cargo xtask bench index --peer faiss` installs
//! one) on the same vectors, queries, exclusions and exact answers, written
//! as .npy files: `IndexHNSWFlat` with the M/ef of every `hnsw` index measured
//! and `IndexIVFFlat` with the lists/probes of every `ivf_flat`, both by inner
//! product, with the same sweeps of `ef_search` and `n_probe`. Its rows join
//! the table.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use funnel::api::{BuildCx, Index, ItemIdx, Matrix};
use funnel_index_exact::ExactIndex;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

#[derive(Debug)]
struct Options {
    items: usize,
    dim: usize,
    queries: Option<usize>,
    k: usize,
    seed: u64,
    /// Indexes, in the order given.
    indexes: Vec<Measured>,
    vectors: Option<PathBuf>,
    run: Option<PathBuf>,
    /// The Python with faiss, for `--peer faiss`.
    peer: Option<PathBuf>,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options> {
    let mut o = Options {
        items: 1_000_000,
        dim: 64,
        queries: None,
        k: 100,
        seed: 42,
        indexes: Vec::new(),
        vectors: None,
        run: None,
        peer: None,
    };
    let mut peer_python = None;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| anyhow!("{flag} needs a value"));
        let number = |v: String| v.parse::<usize>().map_err(|_| anyhow!("{flag}: expected a number, found {v:?}"));
        match flag.as_str() {
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            "--items" => o.items = number(value()?)?,
            "--dim" => o.dim = number(value()?)?,
            "--queries" => o.queries = Some(number(value()?)?),
            "--k" => o.k = number(value()?)?,
            "--seed" => o.seed = number(value()?)? as u64,
            "--index" => o.indexes.push(Measured { name: value()?, params: toml::Table::new(), sweep: None }),
            "--set" => {
                let kv = value()?;
                let (key, raw) = kv.split_once('=').ok_or_else(|| anyhow!("--set {kv:?}: expected key=value"))?;
                let m = o.indexes.last_mut().ok_or_else(|| anyhow!("--set {kv:?} before any --index"))?;
                m.params.insert(key.trim().to_string(), toml_value(raw));
            }
            "--sweep" => {
                let kv = value()?;
                let (key, raw) = kv.split_once('=').ok_or_else(|| anyhow!("--sweep {kv:?}: expected key=v1,v2,..."))?;
                let m = o.indexes.last_mut().ok_or_else(|| anyhow!("--sweep {kv:?} before any --index"))?;
                m.sweep = Some((key.trim().to_string(), raw.split(',').map(toml_value).collect()));
            }
            "--vectors" => o.vectors = Some(PathBuf::from(value()?)),
            "--run" => o.run = Some(PathBuf::from(value()?)),
            "--peer" => match value()?.as_str() {
                "faiss" => o.peer = Some(PathBuf::new()),
                other => bail!("--peer {other:?}: the one peer is \"faiss\""),
            },
            "--peer-python" => peer_python = Some(PathBuf::from(value()?)),
            other => bail!("unknown option {other:?}; see the doc at the top of benches/index.rs"),
        }
    }
    if o.indexes.is_empty() {
        o.indexes.push(Measured { name: "ivf_flat".to_string(), params: toml::Table::new(), sweep: None });
    }
    if o.k == 0 || o.items == 0 || o.dim == 0 {
        bail!("--k, --items and --dim must be at least 1");
    }
    if o.peer.is_some() {
        let python = peer_python
            .ok_or_else(|| anyhow!("--peer faiss needs --peer-python PATH (cargo xtask bench index --peer faiss)"))?;
        o.peer = Some(python);
    }
    if o.vectors.is_some() && o.run.is_some() {
        bail!("--vectors and --run each name a catalog: give one");
    }
    Ok(o)
}

/// One `--index` with its `--set`s and `--sweep`.
#[derive(Debug)]
struct Measured {
    name: String,
    params: toml::Table,
    /// A search parameter and its values.
    sweep: Option<(String, Vec<toml::Value>)>,
}

impl Measured {
    /// The parameters of every configuration, the first the one to build.
    fn configurations(&self) -> Vec<toml::Table> {
        match &self.sweep {
            None => vec![self.params.clone()],
            Some((key, values)) => values
                .iter()
                .map(|v| {
                    let mut t = self.params.clone();
                    t.insert(key.clone(), v.clone());
                    t
                })
                .collect(),
        }
    }
}

/// `raw` as a TOML value, or as a string when it is not one.
fn toml_value(raw: &str) -> toml::Value {
    let parsed = format!("v = {raw}").parse::<toml::Table>().ok().and_then(|mut t| t.remove("v"));
    parsed.unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// What the indexes are measured on.
struct Workload {
    description: String,
    items: Matrix,
    queries: Matrix,
    /// Items each query must not return (empty lists outside `--run`).
    excludes: Vec<Vec<ItemIdx>>,
    /// Each query's held-out item, with `--run`.
    targets: Option<Vec<ItemIdx>>,
}

fn run() -> Result<()> {
    let o = parse_args(std::env::args().skip(1))?;
    let started = Instant::now();
    let workload = if let Some(dir) = &o.run {
        from_run(dir, o.queries)?
    } else if let Some(path) = &o.vectors {
        from_vectors(path, o.queries.unwrap_or(1000), o.seed)?
    } else {
        synthetic(o.items, o.dim, o.queries.unwrap_or(1000), o.seed)
    };
    let threads = funnel_kernels::par::threads();
    println!(
        "{}; {} queries; k = {}; {threads} threads ({:.1} s to prepare)",
        workload.description,
        workload.queries.rows,
        o.k,
        started.elapsed().as_secs_f64()
    );
    let excludes: Vec<&[ItemIdx]> = workload.excludes.iter().map(Vec::as_slice).collect();

    note("exact reference");
    let mut exact = ExactIndex::new();
    exact.build(&workload.items)?;
    let t = Instant::now();
    let reference = exact.search_batch(&workload.queries, o.k, &excludes)?;
    let exact_qps = workload.queries.rows as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let one_thread = funnel_kernels::par::with_threads(1, || exact.search_batch(&workload.queries, o.k, &excludes))?;
    let exact_qps_1 = workload.queries.rows as f64 / t.elapsed().as_secs_f64();
    if one_thread != reference {
        bail!("the exact index answered differently on one thread and on {threads}");
    }

    let e2e = workload.targets.is_some();
    println!(
        "\n{:<44} {:>8} {:>9} {:>10} {:>9} {:>9} {:>8} {:>8}{}",
        "index",
        "build s",
        "size MB",
        format!("recall@{}", o.k),
        "q/s 1T",
        format!("q/s {threads}T"),
        "p50 ms",
        "p99 ms",
        if e2e { "  R@10 e2e" } else { "" }
    );
    let exact_e2e = workload.targets.as_ref().map(|t| hit_rate(t, reference.iter().map(|r| &r[..r.len().min(10)])));
    println!(
        "{:<44} {:>8} {:>9.1} {:>10.4} {:>9.0} {:>9.0} {:>8} {:>8}{}",
        "exact (reference, search_batch)",
        "-",
        mb(exact.size_bytes()),
        1.0,
        exact_qps_1,
        exact_qps,
        "-",
        "-",
        exact_e2e.map_or(String::new(), |r| format!("  {r:>9.4}"))
    );

    let reg = funnel::plugins::builtin();
    let cx = BuildCx { seed: o.seed, n_items: workload.items.rows, ..BuildCx::default() };
    for measured in &o.indexes {
        let configurations = measured.configurations();
        let built = label(&measured.name, &configurations[0]);
        note(&format!("building {built}"));
        let new_index = |params: &toml::Table| {
            reg.build_index(&measured.name, params.clone(), &cx).with_context(|| format!("[index] {built}"))
        };
        let mut index = new_index(&configurations[0])?;
        let t = Instant::now();
        index.build(&workload.items).with_context(|| format!("building {built}"))?;
        let build_s = t.elapsed().as_secs_f64();
        note(&format!("searching {built} ({build_s:.1} s to build)"));
        let saved = tempfile::tempdir()?;
        if configurations.len() > 1 {
            index.save(saved.path()).with_context(|| format!("saving {built}"))?;
        }
        for (c, params) in configurations.iter().enumerate() {
            if c > 0 {
                index = new_index(params)?;
                index.load(saved.path()).with_context(|| format!("loading {built} with {params}"))?;
            }
            let label = label(&measured.name, params);
            let build = if c == 0 { format!("{build_s:.1}") } else { "-".into() };
            measure(&label, &build, index.as_ref(), &workload, &reference, &excludes, o.k)?;
        }
    }
    if let Some(python) = &o.peer {
        faiss_peer(python, &o, &workload, &reference)?;
    }
    Ok(())
}

/// One row of the table: `index` searched on one thread and on all.
fn measure(
    label: &str,
    build: &str,
    index: &dyn Index,
    workload: &Workload,
    reference: &Answers,
    excludes: &[&[ItemIdx]],
    k: usize,
) -> Result<()> {
    let threads = funnel_kernels::par::threads();
    let (results, latencies) = single_thread(index, &workload.queries, k, excludes)?;
    let qps_1 = workload.queries.rows as f64 / latencies.iter().sum::<Duration>().as_secs_f64();
    let qps_n = all_threads(index, &workload.queries, k, excludes, threads)?;
    let recall = mean_recall(&results, reference);
    let e2e = match &workload.targets {
        Some(targets) => {
            let (top10, _) = single_thread(index, &workload.queries, 10, excludes)?;
            format!("  {:>9.4}", hit_rate(targets, top10.iter().map(Vec::as_slice)))
        }
        None => String::new(),
    };
    let mut sorted = latencies.clone();
    sorted.sort_unstable();
    println!(
        "{label:<44} {build:>8} {:>9.1} {recall:>10.4} {qps_1:>9.0} {qps_n:>9.0} {:>8.3} {:>8.3}{e2e}",
        mb(index.size_bytes()),
        millis(percentile(&sorted, 0.50)),
        millis(percentile(&sorted, 0.99)),
    );
    Ok(())
}

/// The faiss rows: see the module doc.
fn faiss_peer(python: &std::path::Path, o: &Options, workload: &Workload, reference: &Answers) -> Result<()> {
    use funnel_index_hnsw::HnswParams;
    use funnel_index_ivf::IvfFlatParams;
    let mut runs: Vec<[String; 2]> = Vec::new();
    // Search parameters of one build, in faiss's argument form: "a/b/c".
    let joined = |values: Vec<usize>| values.iter().map(usize::to_string).collect::<Vec<_>>().join("/");
    for measured in &o.indexes {
        let configurations = measured.configurations();
        match measured.name.as_str() {
            "hnsw" => {
                let all: Vec<HnswParams> =
                    configurations.into_iter().map(funnel::api::parse_params).collect::<Result<_, _>>()?;
                let p = &all[0];
                let ef = joined(all.iter().map(|p| p.ef_search).collect());
                runs.push(["--hnsw".into(), format!("{},{},{ef}", p.m, p.ef_construction)]);
            }
            "ivf_flat" => {
                let all: Vec<IvfFlatParams> =
                    configurations.into_iter().map(funnel::api::parse_params).collect::<Result<_, _>>()?;
                let lists = funnel_index_ivf::resolve_n_lists(all[0].n_lists, workload.items.rows);
                let probes = joined(all.iter().map(|p| p.n_probe).collect());
                runs.push(["--ivf".into(), format!("{lists},{probes}")]);
            }
            _ => {}
        }
    }
    let mut args: Vec<String> = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        // The same configuration twice (e.g. two `hnsw` that differ only in
        // `norm_ranges`) is one faiss run.
        if !runs[..i].contains(run) {
            args.extend(run.iter().cloned());
        }
    }
    if args.is_empty() {
        println!("(faiss: no hnsw or ivf_flat index measured, nothing to compare)");
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (q, k) = (workload.queries.rows, o.k);
    npy::write_f32(&dir.path().join("items.npy"), &workload.items)?;
    npy::write_f32(&dir.path().join("queries.npy"), &workload.queries)?;
    let truth: Vec<i64> =
        reference.iter().flat_map(|r| (0..k).map(move |j| r.get(j).map_or(-1, |p| i64::from(p.0)))).collect();
    npy::write_i64(&dir.path().join("truth.npy"), q, k, &truth)?;
    let width = workload.excludes.iter().map(Vec::len).max().unwrap_or(0).max(1);
    let excludes: Vec<i64> = workload
        .excludes
        .iter()
        .flat_map(|e| (0..width).map(move |j| e.get(j).map_or(-1, |&i| i64::from(i))))
        .collect();
    npy::write_i64(&dir.path().join("excludes.npy"), q, width, &excludes)?;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer/faiss_index.py");
    note(&format!("faiss ({})", python.display()));
    let out = std::process::Command::new(python)
        .arg(&script)
        .arg(dir.path())
        .args(&args)
        .arg("--threads")
        .arg(funnel_kernels::par::threads().to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("starting {}", python.display()))?;
    if !out.status.success() {
        bail!("faiss peer failed ({}); is faiss installed in {}?", out.status, python.display());
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let row: serde_json::Value = serde_json::from_str(line).with_context(|| format!("faiss printed {line:?}"))?;
        let num = |key: &str| row[key].as_f64().unwrap_or(f64::NAN);
        let build = row["build_s"].as_f64().map_or("-".to_string(), |s| format!("{s:.1}"));
        println!(
            "{:<44} {build:>8} {:>9} {:>10.4} {:>9.0} {:>9.0} {:>8.3} {:>8.3}",
            row["index"].as_str().unwrap_or("faiss"),
            "-",
            num("recall"),
            num("qps_1"),
            num("qps_n"),
            num("p50_ms"),
            num("p99_ms"),
        );
    }
    Ok(())
}

/// NumPy's .npy format (version 1.0): what the faiss peer reads.
mod npy {
    use std::path::Path;

    use anyhow::{Context, Result};
    use funnel::api::Matrix;

    fn write(path: &Path, descr: &str, rows: usize, cols: usize, body: &[u8]) -> Result<()> {
        let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
        // Magic (6) + version (2) + length (2) + header, padded to 64 bytes, ending in a newline.
        let pad = 64 - (10 + header.len() + 1) % 64;
        header.push_str(&" ".repeat(pad % 64));
        header.push('\n');
        let mut bytes = Vec::with_capacity(10 + header.len() + body.len());
        bytes.extend_from_slice(b"\x93NUMPY\x01\x00");
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(body);
        std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
    }

    pub fn write_f32(path: &Path, m: &Matrix) -> Result<()> {
        let body: Vec<u8> = m.data.iter().flat_map(|x| x.to_le_bytes()).collect();
        write(path, "<f4", m.rows, m.cols, &body)
    }

    pub fn write_i64(path: &Path, rows: usize, cols: usize, values: &[i64]) -> Result<()> {
        let body: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        write(path, "<i8", rows, cols, &body)
    }
}

/// A progress line on stderr: a handful per run, also in logs.
fn note(what: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("... {what}");
    } else {
        eprintln!("{what}");
    }
}

/// `ivf_flat n_probe=32`: the type and the parameters given.
fn label(name: &str, params: &toml::Table) -> String {
    let mut s = name.to_string();
    for (k, v) in params {
        s.push_str(&format!(" {k}={}", v.to_string().trim_matches('"')));
    }
    s
}

fn mb(bytes: usize) -> f64 {
    bytes as f64 / 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted.get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or_default()
}

/// One result list per query.
type Answers = Vec<Vec<(ItemIdx, f32)>>;

/// Every query in order on this thread, timing each.
fn single_thread(
    index: &dyn Index,
    queries: &Matrix,
    k: usize,
    excludes: &[&[ItemIdx]],
) -> Result<(Answers, Vec<Duration>)> {
    let mut results = Vec::with_capacity(queries.rows);
    let mut latencies = Vec::with_capacity(queries.rows);
    for (q, exclude) in excludes.iter().enumerate() {
        let t = Instant::now();
        let r = index.search(queries.row(q), k, exclude).with_context(|| format!("query {q}"))?;
        latencies.push(t.elapsed());
        results.push(r);
    }
    Ok((results, latencies))
}

/// Queries per second with the queries split over `threads`.
fn all_threads(index: &dyn Index, queries: &Matrix, k: usize, excludes: &[&[ItemIdx]], threads: usize) -> Result<f64> {
    let chunk = queries.rows.div_ceil(threads).max(1);
    let t = Instant::now();
    let outcomes: Vec<Result<()>> = thread::scope(|s| {
        let handles: Vec<_> = (0..queries.rows)
            .step_by(chunk)
            .map(|start| {
                s.spawn(move || -> Result<()> {
                    for (q, exclude) in excludes.iter().enumerate().skip(start).take(chunk) {
                        index.search(queries.row(q), k, exclude)?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow!("a search thread panicked")))).collect()
    });
    outcomes.into_iter().collect::<Result<()>>()?;
    Ok(queries.rows as f64 / t.elapsed().as_secs_f64())
}

/// Mean over queries of the share of the exact answer found.
fn mean_recall(results: &Answers, reference: &Answers) -> f64 {
    let per_query = results.iter().zip(reference).map(|(got, exact)| {
        if exact.is_empty() {
            return 1.0;
        }
        let mut found: Vec<ItemIdx> = got.iter().map(|p| p.0).collect();
        found.sort_unstable();
        exact.iter().filter(|(i, _)| found.binary_search(i).is_ok()).count() as f64 / exact.len() as f64
    });
    per_query.sum::<f64>() / results.len().max(1) as f64
}

/// Share of queries whose target is among their results.
fn hit_rate<'a>(targets: &[ItemIdx], results: impl Iterator<Item = &'a [(ItemIdx, f32)]>) -> f64 {
    let hits = results.zip(targets).filter(|(r, t)| r.iter().any(|(i, _)| i == *t)).count();
    hits as f64 / targets.len().max(1) as f64
}

fn normal(rng: &mut StdRng) -> f32 {
    StandardNormal.sample(rng)
}

fn unit(v: &mut [f32]) {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm.max(f32::MIN_POSITIVE));
}

/// The default catalog: see the module doc.
fn synthetic(n: usize, d: usize, n_queries: usize, seed: u64) -> Workload {
    let mut rng = StdRng::seed_from_u64(seed);
    let n_clusters = (n / 1000).max(1);
    // Zipf-like sizes: weight 1/sqrt(rank).
    let weights: Vec<f64> = (0..n_clusters).map(|c| 1.0 / ((c + 1) as f64).sqrt()).collect();
    let mut cumulative: Vec<f64> = weights
        .iter()
        .scan(0.0, |s, w| {
            *s += w;
            Some(*s)
        })
        .collect();
    let total = *cumulative.last().expect("at least one cluster");
    cumulative.iter_mut().for_each(|c| *c /= total);
    let directions: Vec<Vec<f32>> = (0..n_clusters)
        .map(|_| {
            let mut v: Vec<f32> = (0..d).map(|_| normal(&mut rng)).collect();
            unit(&mut v);
            v
        })
        .collect();
    let norms: Vec<f32> = (0..n_clusters).map(|_| (0.35 * normal(&mut rng)).exp()).collect();
    let spreads: Vec<f32> = (0..n_clusters).map(|_| rng.gen_range(0.3..0.8)).collect();
    let pick = |rng: &mut StdRng| cumulative.partition_point(|&c| c < rng.gen::<f64>()).min(n_clusters - 1);
    let noise = |rng: &mut StdRng, scale: f32| normal(rng) * scale / (d as f32).sqrt();

    let mut items = Vec::with_capacity(n * d);
    for _ in 0..n {
        let c = pick(&mut rng);
        let item_norm = norms[c] * (0.2 * normal(&mut rng)).exp();
        items.extend(directions[c].iter().map(|x| (x + noise(&mut rng, spreads[c])) * item_norm));
    }
    let mut queries = Vec::with_capacity(n_queries * d);
    for _ in 0..n_queries {
        let c = pick(&mut rng);
        queries.extend(directions[c].iter().map(|x| x + noise(&mut rng, 0.6)));
    }
    Workload {
        description: format!("synthetic clustered catalog {n} x {d} ({n_clusters} clusters, seed {seed})"),
        items: Matrix::from_vec(n, d, items),
        queries: Matrix::from_vec(n_queries, d, queries),
        excludes: vec![Vec::new(); n_queries],
        targets: None,
    }
}

/// A run's item vectors with neighbourhood queries: see the module doc.
fn from_vectors(path: &std::path::Path, n_queries: usize, seed: u64) -> Result<Workload> {
    let items = funnel::item_vectors::read(path)?.vectors;
    if items.rows < 20 {
        bail!("{}: {} items; neighbourhood queries need at least 20", path.display(), items.rows);
    }
    let mut rng = StdRng::seed_from_u64(seed);
    let mut units = items.clone();
    (0..units.rows).for_each(|r| unit(units.row_mut(r)));
    let mut queries = Vec::with_capacity(n_queries * items.cols);
    for _ in 0..n_queries {
        let anchor = units.row(rng.gen_range(0..items.rows)).to_vec();
        let mut by_cosine: Vec<(usize, f32)> =
            (0..items.rows).map(|j| (j, funnel_kernels::dot(&anchor, units.row(j)))).collect();
        by_cosine.select_nth_unstable_by(19, |a, b| b.1.total_cmp(&a.1));
        let chosen: Vec<usize> = by_cosine[..20].choose_multiple(&mut rng, 5).map(|p| p.0).collect();
        queries.extend((0..items.cols).map(|c| chosen.iter().map(|&j| items.row(j)[c]).sum::<f32>() / 5.0));
    }
    Ok(Workload {
        description: format!("item vectors {} ({} x {})", path.display(), items.rows, items.cols),
        queries: Matrix::from_vec(n_queries, items.cols, queries),
        excludes: vec![Vec::new(); n_queries],
        targets: None,
        items,
    })
}

/// A finished run's model and test users: see the module doc.
fn from_run(dir: &std::path::Path, limit: Option<usize>) -> Result<Workload> {
    let reg = funnel::plugins::builtin();
    let exp = funnel::experiment::load(&dir.join("resolved.toml"), &[], &reg)?;
    let spec = &exp.spec;
    let cx = spec.build_cx();
    let data = reg.build_dataset(&spec.dataset.kind, spec.dataset.params.clone(), &cx)?.load()?;
    let mut cx = BuildCx { n_users: data.n_users(), n_items: data.n_items(), ..cx };
    let examples = reg.build_features(&spec.features.kind, spec.features.params.clone(), &cx)?.build(&data)?;
    cx.learn_examples(&examples);
    let mut model = reg.build_model(&spec.model.kind, spec.model.params.clone(), &cx)?;
    let checkpoint = funnel::checkpoint::read(&dir.join(funnel::checkpoint::FILE))?;
    model.load_state(&checkpoint.best_state).context("loading the best epoch's weights")?;
    let cases = &examples.test[..limit.unwrap_or(usize::MAX).min(examples.test.len())];
    Ok(Workload {
        description: format!(
            "run {} ({}, {} items x {}, best epoch {}): test users",
            dir.display(),
            data.name,
            data.n_items(),
            model.dim(),
            checkpoint.best_epoch
        ),
        items: model.item_vectors()?,
        queries: model.user_vectors(&examples.serving_queries(cases))?,
        excludes: cases.iter().map(|&ex| examples.seen(ex).to_vec()).collect(),
        targets: Some(cases.iter().map(|&ex| examples.target(ex)).collect()),
    })
}
