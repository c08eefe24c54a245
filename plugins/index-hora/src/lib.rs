//! The `hora_hnsw`, `hora_ssg` and `hora_bruteforce` indexes: hora 0.1.1's
//! graphs and scan, made sound for maximum-inner-product search. Only this
//! crate knows hora.
//!
//! hora's own inner-product metrics are broken (`DotProduct` and `Angular`
//! return the least similar items, `CosineSimilarity` yields NaN), so every
//! index here searches hora's `Euclidean` space over SIMPLE-LSH-transformed
//! items ([`funnel_mips::MipsSpace`]), fetches `k` plus the number of excluded
//! items, drops the excluded ones and re-scores the rest by the true inner
//! product with a copy of the item vectors kept beside hora's. That copy also
//! answers exactly when the graph cannot: when a search asks for the whole
//! catalog, or the graph returns fewer than `k` eligible items (an HNSW graph
//! can leave an item unreachable; SSG returns at most `root_size` items).
//!
//! Every input hora would panic on is refused first: empty catalogs,
//! non-finite values, wrong dimensions (in [`funnel_mips`]), parameters that
//! break its builders, SSG over fewer than `root_size` items, and saved files
//! that are missing or differ from what was written (checked by size and
//! FNV-1a checksum before hora's loader, which unwraps every error, reads
//! them). No `catch_unwind` is needed.
//!
//! Left out: hora's `IVFPQIndex`. Its k-means leaves a list empty whenever the
//! catalog has fewer distinct vectors than lists (and can at random otherwise),
//! and then panics in `split_center` ("None to assigned impossible split
//! center"); it refuses more than 100,001 items with no parameter to raise the
//! limit, and its sub-quantiser ranges skip trailing dimensions unless
//! `n_sub` divides the dimension. The `ivf_flat` index (crate
//! `funnel-index-ivf`) covers the inverted-file case instead.
//!
//! Other properties of hora that users see:
//! - Builds are not reproducible: HNSW levels and SSG roots come from
//!   `thread_rng`, and HNSW inserts in parallel on rayon's pool.
//! - hora's HNSW search skips the descent through the upper layers (it
//!   compares the entry point with itself), so every query starts at the
//!   root, the first item inserted, on the bottom layer
//!   (`tests/hora_hnsw.rs` shows it through hora's own API: recall 0.97 for
//!   queries near the first item, about 0.4 elsewhere). Nothing in hora's
//!   public API picks a search's entry point, so it cannot be fixed from
//!   outside. This crate inserts the item nearest the mean first; still,
//!   `ef_search` is what buys recall, and recall falls with the catalog
//!   (`reports/index.md`). For large catalogs use `hnsw`.
//! - SSG builds an exact k-nearest-neighbour graph first: quadratic in the
//!   catalog (reports/index.md has the build times).
//! - `save` makes hora keep a serialized copy of its nodes in memory until the
//!   index is dropped, about doubling its footprint.

#![forbid(unsafe_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use anyhow::{anyhow, bail, Context, Result};
use funnel_api::{BuildCx, Index, ItemIdx, Matrix, Registry};
use funnel_mips::bytes::{fingerprint, Reader, Writer};
use funnel_mips::{search_rescored, MipsSpace, Similarity};
use hora::core::ann_index::SerializableIndex;
use hora::core::metrics::Metric;
use hora::index::bruteforce_idx::BruteForceIndex;
use hora::index::bruteforce_params::BruteForceParams;
use hora::index::hnsw_idx::HNSWIndex;
use hora::index::hnsw_params::HNSWParams;
use hora::index::ssg_idx::SSGIndex;
use hora::index::ssg_params::SSGParams;
use serde::{Deserialize, Serialize};

/// Registers `hora_hnsw`, `hora_ssg` and `hora_bruteforce`.
pub fn register(reg: &mut Registry) {
    reg.index::<HoraHnswParams>(
        "hora_hnsw",
        "Approximate maximum-inner-product search on hora's HNSW graph over SIMPLE-LSH-transformed items, \
         results re-scored by true inner product. Limitation: hora's search never descends the graph's layers \
         (every query starts at the first item inserted), so recall falls as the catalog grows: fine for \
         catalogs of thousands of items, use `hnsw` for large ones. Build is not reproducible (hora draws \
         levels from thread_rng).",
        |p, _cx: &BuildCx| Ok(Box::new(HoraIndex::hnsw(p)?)),
    );
    reg.index::<HoraSsgParams>(
        "hora_ssg",
        "Approximate maximum-inner-product search on hora's SSG graph over SIMPLE-LSH-transformed items. \
         Build time is quadratic in the catalog (exact k-NN graph): for catalogs up to some 10,000 items.",
        |p, _cx: &BuildCx| Ok(Box::new(HoraIndex::ssg(p)?)),
    );
    reg.index::<HoraBruteForceParams>(
        "hora_bruteforce",
        "hora's brute-force scan over SIMPLE-LSH-transformed items, re-scored by true inner product: exact \
         up to float rounding of the transformed distances. A reference for the hora indexes.",
        |p, _cx: &BuildCx| Ok(Box::new(HoraIndex::brute_force(p))),
    );
}

/// Parameters of `hora_hnsw`.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct HoraHnswParams {
    /// "inner_product" (largest dot product) or "cosine" (items and queries normalised).
    #[param(default = Similarity::InnerProduct)]
    pub metric: Similarity,
    /// M: most neighbours a node keeps on the upper layers.
    #[param(default = 32)]
    pub n_neighbor: usize,
    /// Most neighbours a node keeps on the bottom layer (usually 2 M).
    #[param(default = 64)]
    pub n_neighbor0: usize,
    /// Most layers above the bottom one (0 to 64).
    #[param(default = 20)]
    pub max_level: usize,
    /// Candidates kept while inserting: higher builds slower and better graphs.
    #[param(default = 200)]
    pub ef_build: usize,
    /// Candidates kept while searching (at least k plus the excluded items):
    /// higher is slower and more accurate.
    #[param(default = 500)]
    pub ef_search: usize,
}

/// Parameters of `hora_ssg`.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct HoraSsgParams {
    /// "inner_product" (largest dot product) or "cosine" (items and queries normalised).
    #[param(default = Similarity::InnerProduct)]
    pub metric: Similarity,
    /// Smallest angle in degrees between two edges of a node (0 to 180, exclusive).
    #[param(default = 60.0)]
    pub angle: f32,
    /// Neighbours per item in the exact k-NN graph the build starts from.
    #[param(default = 100)]
    pub init_k: usize,
    /// Most neighbours a node keeps.
    #[param(default = 100)]
    pub index_size: usize,
    /// Neighbours of neighbours considered when pruning a node.
    #[param(default = 100)]
    pub neighbor_neighbor_size: usize,
    /// Entry points per search, and the most items one search returns (k
    /// plus excluded items beyond it fall back to an exact scan); the
    /// catalog needs at least this many items.
    #[param(default = 100)]
    pub root_size: usize,
}

/// Parameters of `hora_bruteforce`.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct HoraBruteForceParams {
    /// "inner_product" (largest dot product) or "cosine" (items and queries normalised).
    #[param(default = Similarity::InnerProduct)]
    pub metric: Similarity,
}

/// hora's dump of the graph or scan.
const GRAPH_FILE: &str = "hora_index.bin";
/// Our metadata and the stored item vectors.
const ITEMS_FILE: &str = "hora_items.bin";
const MAGIC: &[u8] = b"FUNNELHORA\x01";

/// One of hora's indexes over SIMPLE-LSH-transformed items.
pub struct HoraIndex {
    algorithm: Algorithm,
    similarity: Similarity,
    built: Option<Built>,
}

#[derive(Debug, Clone, PartialEq)]
enum Algorithm {
    BruteForce,
    Hnsw(HoraHnswParams),
    Ssg(HoraSsgParams),
}

type Graph = Box<dyn SerializableIndex<f32, ItemIdx>>;

struct Built {
    space: MipsSpace,
    /// Items as the space stores them (n x dims): re-scoring and exact answers.
    stored: Matrix,
    /// Written only by `save`: hora's dump takes `&mut self`.
    graph: RwLock<Graph>,
}

impl HoraIndex {
    /// An unbuilt `hora_hnsw`; refuses parameters hora's builder panics on.
    pub fn hnsw(params: HoraHnswParams) -> Result<HoraIndex> {
        for (key, value) in [("n_neighbor", params.n_neighbor), ("n_neighbor0", params.n_neighbor0)] {
            at_least(key, value, 1)?;
        }
        at_least("ef_build", params.ef_build, 1)?;
        at_least("ef_search", params.ef_search, 1)?;
        if params.max_level > 64 {
            bail!("`max_level` = {}: expected at most 64 (the root node gets every level)", params.max_level);
        }
        Ok(HoraIndex { similarity: params.metric, algorithm: Algorithm::Hnsw(params), built: None })
    }

    /// An unbuilt `hora_ssg`; refuses parameters hora's builder panics on.
    pub fn ssg(params: HoraSsgParams) -> Result<HoraIndex> {
        if !(params.angle > 0.0 && params.angle < 180.0) {
            bail!("`angle` = {}: expected degrees strictly between 0 and 180", params.angle);
        }
        at_least("init_k", params.init_k, 1)?;
        at_least("index_size", params.index_size, 1)?;
        at_least("neighbor_neighbor_size", params.neighbor_neighbor_size, 1)?;
        at_least("root_size", params.root_size, 1)?;
        Ok(HoraIndex { similarity: params.metric, algorithm: Algorithm::Ssg(params), built: None })
    }

    /// An unbuilt `hora_bruteforce`.
    pub fn brute_force(params: HoraBruteForceParams) -> HoraIndex {
        HoraIndex { similarity: params.metric, algorithm: Algorithm::BruteForce, built: None }
    }

    /// The registered name, e.g. `hora_hnsw`.
    pub fn type_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::BruteForce => "hora_bruteforce",
            Algorithm::Hnsw(_) => "hora_hnsw",
            Algorithm::Ssg(_) => "hora_ssg",
        }
    }

    fn built(&self) -> Result<&Built> {
        self.built.as_ref().ok_or_else(|| anyhow!("{} index searched before it was built", self.type_name()))
    }

    /// The smallest catalog hora can build this index over.
    fn min_items(&self) -> usize {
        match &self.algorithm {
            // SSG indexes its roots without a bound check, and prunes each
            // node's neighbour list assuming it has one.
            Algorithm::Ssg(p) => p.root_size.max(2),
            _ => 1,
        }
    }

    fn new_graph(&self, dims: usize, n_items: usize) -> Graph {
        match &self.algorithm {
            Algorithm::BruteForce => Box::new(BruteForceIndex::<f32, ItemIdx>::new(dims, &BruteForceParams::default())),
            Algorithm::Hnsw(p) => Box::new(HNSWIndex::<f32, ItemIdx>::new(
                dims,
                &HNSWParams {
                    max_item: n_items,
                    n_neighbor: p.n_neighbor,
                    n_neighbor0: p.n_neighbor0,
                    max_level: p.max_level,
                    ef_build: p.ef_build,
                    ef_search: p.ef_search,
                    ..HNSWParams::default()
                },
            )),
            Algorithm::Ssg(p) => Box::new(SSGIndex::<f32, ItemIdx>::new(
                dims,
                &SSGParams::default()
                    .angle(p.angle)
                    .init_k(p.init_k)
                    .index_size(p.index_size)
                    .neighbor_neighbor_size(p.neighbor_neighbor_size)
                    .root_size(p.root_size),
            )),
        }
    }

    fn load_graph(&self, path: &str) -> Result<Graph> {
        let graph: Graph = match self.algorithm {
            Algorithm::BruteForce => Box::new(BruteForceIndex::<f32, ItemIdx>::load(path).map_err(|e| anyhow!(e))?),
            Algorithm::Hnsw(_) => Box::new(HNSWIndex::<f32, ItemIdx>::load(path).map_err(|e| anyhow!(e))?),
            Algorithm::Ssg(_) => Box::new(SSGIndex::<f32, ItemIdx>::load(path).map_err(|e| anyhow!(e))?),
        };
        Ok(graph)
    }
}

fn at_least(key: &str, value: usize, min: usize) -> Result<()> {
    if value < min {
        bail!("`{key}` = {value}: expected at least {min}");
    }
    Ok(())
}

impl Index for HoraIndex {
    fn build(&mut self, items: &Matrix) -> Result<()> {
        self.built = None;
        let name = self.type_name();
        let space = MipsSpace::fit(self.similarity, items).with_context(|| format!("building {name}"))?;
        if items.rows < self.min_items() {
            bail!(
                "building {name}: {} items, but hora needs at least {} (root_size) or it panics; lower root_size or \
                 use hora_hnsw",
                items.rows,
                self.min_items()
            );
        }
        let transformed = space.transformed_items(items);
        let mut graph = self.new_graph(transformed.cols, items.rows);
        for r in insertion_order(&transformed) {
            graph
                .add(transformed.row(r), r as ItemIdx)
                .map_err(|e| anyhow!("building {name}: hora refused item {r}: {e}"))?;
        }
        graph.build(Metric::Euclidean).map_err(|e| anyhow!("building {name}: hora failed: {e}"))?;
        self.built = Some(Built { stored: space.stored_items(items), space, graph: RwLock::new(graph) });
        Ok(())
    }

    /// The `k` best items found, by true score (inner product, or cosine with
    /// `metric = "cosine"`), best first, ties to the lower item index; fewer
    /// only when fewer are eligible. Items tied at the `k`-th place may be
    /// cut either way. Excluded ids outside the catalog are ignored.
    fn search(&self, query: &[f32], k: usize, exclude: &[ItemIdx]) -> Result<Vec<(ItemIdx, f32)>> {
        let built = self.built()?;
        search_rescored(&built.space, &built.stored, query, k, exclude, |q, fetch| {
            let graph = built.graph.read().map_err(|_| anyhow!("{} index poisoned by a panic", self.type_name()))?;
            Ok(graph.search(q, fetch))
        })
    }

    fn size_bytes(&self) -> usize {
        let Some(built) = &self.built else { return 0 };
        let (n, dims) = (built.stored.rows, built.stored.cols);
        // hora's internals are private: estimated from what it allocates per
        // node (a boxed node with its own vector, and neighbour lists of usize).
        let node = (dims + 1) * 4 + 64;
        let edges = match &self.algorithm {
            Algorithm::BruteForce => 0,
            // One upper layer per node on average: hora promotes with p = 1/2.
            Algorithm::Hnsw(p) => (p.n_neighbor0 + p.n_neighbor) * 8 + 2 * 48,
            Algorithm::Ssg(p) => (p.index_size + p.init_k) * 8 + 2 * 24,
        };
        built.stored.data.len() * 4 + n * (node + edges)
    }

    /// Two files: hora's dump (`hora_index.bin`), and `hora_items.bin` with
    /// the index type, metric, dimensions, norm bound, the dump's size and
    /// checksum, and the stored item vectors (little-endian f32, row-major).
    fn save(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let built = self.built().map_err(|_| anyhow!("{} index saved before it was built", self.type_name()))?;
        if !dir.is_dir() {
            bail!("cannot save {} into {}: not a folder", self.type_name(), dir.display());
        }
        let graph_path = dir.join(GRAPH_FILE);
        let graph_str = utf8(&graph_path)?;
        // hora unwraps its own File::create: fail here instead.
        File::create(&graph_path).with_context(|| format!("writing {}", graph_path.display()))?;
        built
            .graph
            .write()
            .map_err(|_| anyhow!("{} index poisoned by a panic", self.type_name()))?
            .dump(graph_str)
            .map_err(|e| anyhow!("writing {}: hora: {e}", graph_path.display()))?;
        let (graph_len, checksum) = fingerprint(&graph_path)?;
        let mut w = Writer::default();
        w.bytes.extend_from_slice(MAGIC);
        w.str(self.type_name());
        w.str(self.similarity.name());
        w.u64(built.stored.rows as u64);
        w.u64(built.stored.cols as u64);
        w.f32(built.space.norm_bound());
        w.u64(graph_len);
        w.u64(checksum);
        w.f32s(&built.stored.data);
        let items_path = dir.join(ITEMS_FILE);
        std::fs::write(&items_path, w.bytes).with_context(|| format!("writing {}", items_path.display()))?;
        Ok(vec![graph_path, items_path])
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        self.built = None;
        let items_path = dir.join(ITEMS_FILE);
        let bytes = std::fs::read(&items_path).with_context(|| format!("reading {}", items_path.display()))?;
        let within = || format!("loading {}", items_path.display());
        let mut r = Reader::new(&bytes);
        r.magic(MAGIC).with_context(within)?;
        let saved_type = r.str("index type").with_context(within)?;
        let saved_metric = r.str("metric").with_context(within)?;
        if saved_type != self.type_name() || saved_metric != self.similarity.name() {
            bail!(
                "{}: holds a {saved_type} index with metric {saved_metric:?}, but this is {} with metric {:?}",
                within(),
                self.type_name(),
                self.similarity.name()
            );
        }
        let rows = r.usize("item count").with_context(within)?;
        let cols = r.usize("dimensions").with_context(within)?;
        let norm_bound = r.f32("norm bound").with_context(within)?;
        let graph_len = r.u64("graph size").with_context(within)?;
        let checksum = r.u64("graph checksum").with_context(within)?;
        let stored = r.f32s(rows.saturating_mul(cols), "item vectors").with_context(within)?;
        r.end().with_context(within)?;
        let space = MipsSpace::restore(self.similarity, cols, norm_bound).with_context(within)?;

        let graph_path = dir.join(GRAPH_FILE);
        // hora's loader panics on a missing or damaged file: check it is
        // byte for byte what save wrote.
        let found = fingerprint(&graph_path).with_context(within)?;
        if found != (graph_len, checksum) {
            bail!(
                "{}: {} changed since it was saved ({} bytes, checksum {:016x}; saved {graph_len} bytes, \
                 {checksum:016x})",
                within(),
                graph_path.display(),
                found.0,
                found.1
            );
        }
        let graph = self.load_graph(utf8(&graph_path)?).with_context(|| format!("loading {}", graph_path.display()))?;
        if graph.dimension() != cols + 1 {
            bail!("{}: hora's graph has {} dimensions, expected {}", graph_path.display(), graph.dimension(), cols + 1);
        }
        self.built = Some(Built { space, stored: Matrix::from_vec(rows, cols, stored), graph: RwLock::new(graph) });
        Ok(())
    }
}

/// Every row, the one nearest the mean first: hora's HNSW search starts
/// every query at the first item inserted (it never descends the upper
/// layers), so a central entry point shortens every search.
fn insertion_order(transformed: &Matrix) -> Vec<usize> {
    let mut mean = vec![0f64; transformed.cols];
    for r in 0..transformed.rows {
        mean.iter_mut().zip(transformed.row(r)).for_each(|(m, &x)| *m += f64::from(x));
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / transformed.rows as f64) as f32).collect();
    let distance = |r: usize| transformed.row(r).iter().zip(&mean).map(|(x, m)| (x - m) * (x - m)).sum::<f32>();
    let root = (0..transformed.rows).min_by(|&a, &b| distance(a).total_cmp(&distance(b))).unwrap_or(0);
    std::iter::once(root).chain((0..transformed.rows).filter(|&r| r != root)).collect()
}

/// hora takes paths as `&str`.
fn utf8(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| anyhow!("{}: hora needs a UTF-8 path", path.display()))
}

#[cfg(test)]
mod tests {
    use funnel_api::{parse_params, ComponentKind};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use funnel_kernels::{better, dot};

    use super::*;
    use funnel_mips::exact_top;

    /// items: 0 = (1, 0), 1 = (0, 1), 2 = (1, 1), 3 = (2, 0), 4 = (-1, 0), 5 = (1, 1)
    /// query (1, 2) scores: 0 -> 1, 1 -> 2, 2 -> 3, 3 -> 2, 4 -> -1, 5 -> 3
    /// so the full order is 2, 5 (tied at 3), 1, 3 (tied at 2), 0, 4.
    fn hand_items() -> Matrix {
        Matrix::from_vec(6, 2, vec![1., 0., 0., 1., 1., 1., 2., 0., -1., 0., 1., 1.])
    }

    const QUERY: [f32; 2] = [1., 2.];

    fn every_kind(metric: Similarity) -> Vec<HoraIndex> {
        vec![
            HoraIndex::brute_force(HoraBruteForceParams { metric }),
            HoraIndex::hnsw(HoraHnswParams { metric, ..HoraHnswParams::default() }).unwrap(),
            HoraIndex::ssg(HoraSsgParams {
                metric,
                init_k: 4,
                index_size: 4,
                neighbor_neighbor_size: 4,
                root_size: 3,
                ..HoraSsgParams::default()
            })
            .unwrap(),
        ]
    }

    fn built(mut index: HoraIndex, items: &Matrix) -> HoraIndex {
        index.build(items).unwrap();
        index
    }

    #[test]
    fn hand_computed_top_k_with_exclusions() {
        for index in every_kind(Similarity::InnerProduct) {
            let index = built(index, &hand_items());
            let name = index.type_name();
            // hora breaks ties at the k-th place either way: these k cut none.
            assert_eq!(index.search(&QUERY, 4, &[]).unwrap(), [(2, 3.), (5, 3.), (1, 2.), (3, 2.)], "{name}");
            assert_eq!(index.search(&QUERY, 2, &[]).unwrap(), [(2, 3.), (5, 3.)], "{name}");
            assert_eq!(index.search(&QUERY, 0, &[]).unwrap(), [], "{name}");
            assert_eq!(index.search(&QUERY, 3, &[2]).unwrap(), [(5, 3.), (1, 2.), (3, 2.)], "{name}");
            assert_eq!(index.search(&QUERY, 2, &[5, 1, 5, 99]).unwrap(), [(2, 3.), (3, 2.)], "{name}");
            assert_eq!(index.search(&QUERY, 3, &[0, 1, 2, 3, 4, 5]).unwrap(), [], "{name}");
            // k beyond the catalog: every eligible item, in order.
            assert_eq!(index.search(&QUERY, 10, &[5, 0]).unwrap(), [(2, 3.), (1, 2.), (3, 2.), (4, -1.)], "{name}");
            assert_eq!(index.search(&QUERY, 6, &[]).unwrap().len(), 6, "{name}");
        }
    }

    #[test]
    fn cosine_ranks_by_angle() {
        // Cosines with (1, 2)/sqrt 5: item 3 = (2, 0) scores 1/sqrt 5 like item 0.
        for index in every_kind(Similarity::Cosine) {
            let index = built(index, &hand_items());
            let got = index.search(&QUERY, 6, &[]).unwrap();
            let order: Vec<ItemIdx> = got.iter().map(|p| p.0).collect();
            assert_eq!(order, [2, 5, 1, 0, 3, 4], "{}", index.type_name());
            assert!((got[0].1 - 3.0 / 10f32.sqrt()).abs() < 1e-6);
            assert!((got[2].1 - 2.0 / 5f32.sqrt()).abs() < 1e-6);
        }
    }

    /// Items of widely varied norms in clusters: the case the transform must
    /// get right.
    fn clustered(rng: &mut StdRng, n: usize, d: usize) -> Matrix {
        let centres: Vec<Vec<f32>> = (0..10).map(|_| (0..d).map(|_| rng.gen_range(-1.0..1.0)).collect()).collect();
        let data = (0..n)
            .flat_map(|i| {
                let (c, scale) = (&centres[i % 10], [0.2, 1.0, 3.0][i % 3]);
                c.iter().map(|x| (x + rng.gen_range(-0.3..0.3)) * scale).collect::<Vec<f32>>()
            })
            .collect();
        Matrix::from_vec(n, d, data)
    }

    #[test]
    fn recall_on_random_clustered_items() {
        let mut rng = StdRng::seed_from_u64(7);
        let (n, d, k) = (1500, 8, 20);
        let items = clustered(&mut rng, n, d);
        let queries: Vec<Vec<f32>> = (0..30).map(|_| (0..d).map(|_| rng.gen_range(-1.0..1.0)).collect()).collect();
        let brute = built(HoraIndex::brute_force(HoraBruteForceParams::default()), &items);
        let hnsw = built(HoraIndex::hnsw(HoraHnswParams::default()).unwrap(), &items);
        let mut hits = 0;
        for q in &queries {
            let exclude: Vec<ItemIdx> = (0..5).map(|_| rng.gen_range(0..n as ItemIdx)).collect();
            let exact = exact_top(&items, q, k, &exclude);
            let from_brute = brute.search(q, k, &exclude).unwrap();
            assert_eq!(
                from_brute.iter().map(|p| p.0).collect::<Vec<_>>(),
                exact.iter().map(|p| p.0).collect::<Vec<_>>()
            );
            let from_hnsw = hnsw.search(q, k, &exclude).unwrap();
            assert!(from_hnsw.windows(2).all(|w| better(&w[0], &w[1]).is_lt()), "best first");
            assert!(from_hnsw.iter().all(|(i, s)| !exclude.contains(i) && *s == dot(q, items.row(*i as usize))));
            hits += from_hnsw.iter().filter(|p| exact.iter().any(|e| e.0 == p.0)).count();
        }
        let recall = hits as f64 / (queries.len() * k) as f64;
        assert!(recall >= 0.95, "hora_hnsw recall@{k} {recall}");
    }

    #[test]
    fn save_and_load_round_trip() {
        let mut rng = StdRng::seed_from_u64(3);
        let items = clustered(&mut rng, 200, 4);
        for index in every_kind(Similarity::InnerProduct) {
            let index = built(index, &items);
            let name = index.type_name();
            let dir = tempfile::tempdir().unwrap();
            let files = index.save(dir.path()).unwrap();
            assert_eq!(files, [dir.path().join(GRAPH_FILE), dir.path().join(ITEMS_FILE)]);
            let mut loaded = every_kind(Similarity::InnerProduct).into_iter().find(|i| i.type_name() == name).unwrap();
            loaded.load(dir.path()).unwrap();
            for q in [[1., 0., 0., 0.], [0.3, -1., 2., 0.5]] {
                assert_eq!(loaded.search(&q, 10, &[1]).unwrap(), index.search(&q, 10, &[1]).unwrap(), "{name}");
            }
            assert_eq!(loaded.size_bytes(), index.size_bytes());

            // A cosine index refuses an inner-product file, and another type's file.
            let mut cosine = every_kind(Similarity::Cosine).into_iter().find(|i| i.type_name() == name).unwrap();
            let e = format!("{:#}", cosine.load(dir.path()).unwrap_err());
            assert!(e.contains("metric \"inner_product\"") && e.contains("metric \"cosine\""), "{e}");
            let mut other = if name == "hora_hnsw" {
                HoraIndex::brute_force(HoraBruteForceParams::default())
            } else {
                HoraIndex::hnsw(HoraHnswParams::default()).unwrap()
            };
            let e = format!("{:#}", other.load(dir.path()).unwrap_err());
            assert!(e.contains(&format!("holds a {name} index")), "{e}");

            // A damaged or missing graph is an error before hora reads it.
            let graph = dir.path().join(GRAPH_FILE);
            let mut bytes = std::fs::read(&graph).unwrap();
            bytes[10] ^= 1;
            std::fs::write(&graph, &bytes).unwrap();
            let e = format!("{:#}", loaded.load(dir.path()).unwrap_err());
            assert!(e.contains("changed since it was saved"), "{e}");
            assert!(loaded.search(&[1., 0., 0., 0.], 1, &[]).is_err(), "a failed load leaves no index");
            std::fs::remove_file(&graph).unwrap();
            let e = format!("{:#}", loaded.load(dir.path()).unwrap_err());
            assert!(e.contains("reading") && e.contains(GRAPH_FILE), "{e}");
            let items_file = dir.path().join(ITEMS_FILE);
            let bytes = std::fs::read(&items_file).unwrap();
            std::fs::write(&items_file, &bytes[..bytes.len() - 2]).unwrap();
            let e = format!("{:#}", loaded.load(dir.path()).unwrap_err());
            assert!(e.contains("item vectors needs"), "{e}");
            let e = format!("{:#}", loaded.load(&dir.path().join("missing")).unwrap_err());
            assert!(e.contains("reading") && e.contains("missing"), "{e}");
        }
    }

    #[test]
    fn errors_instead_of_hora_panics() {
        for mut index in every_kind(Similarity::InnerProduct) {
            let name = index.type_name();
            let e = index.search(&QUERY, 1, &[]).unwrap_err().to_string();
            assert_eq!(e, format!("{name} index searched before it was built"));
            let e = index.save(Path::new(".")).unwrap_err().to_string();
            assert!(e.contains("saved before it was built"), "{e}");
            let e = format!("{:#}", index.build(&Matrix::zeros(0, 2)).unwrap_err());
            assert!(e.contains(name) && e.contains("no items"), "{e}");
            let e = format!("{:#}", index.build(&Matrix::from_vec(2, 2, vec![0., 1., f32::NAN, 0.])).unwrap_err());
            assert!(e.contains("item 1 has a non-finite"), "{e}");
            index.build(&hand_items()).unwrap();
            let e = index.search(&[1., 2., 3.], 1, &[]).unwrap_err().to_string();
            assert!(e.contains("3 dimensions") && e.contains("have 2"), "{e}");
            let e = index.search(&[f32::INFINITY, 0.], 1, &[]).unwrap_err().to_string();
            assert!(e.contains("component 0 is inf"), "{e}");
            let e = index.save(Path::new("/nonexistent/folder")).unwrap_err().to_string();
            assert!(e.contains("not a folder"), "{e}");
            let e = index.build(&Matrix::zeros(1, 0)).unwrap_err();
            assert!(index.search(&QUERY, 1, &[]).is_err(), "a failed build ({e}) leaves no index");
        }
        // SSG needs root_size items; with that many it builds and answers.
        let mut ssg = HoraIndex::ssg(HoraSsgParams::default()).unwrap();
        let e = ssg.build(&hand_items()).unwrap_err().to_string();
        assert!(e.contains("6 items") && e.contains("at least 100 (root_size)"), "{e}");
        let tiny =
            HoraSsgParams { root_size: 1, init_k: 1, index_size: 1, neighbor_neighbor_size: 1, ..Default::default() };
        let mut ssg = HoraIndex::ssg(tiny).unwrap();
        assert!(ssg.build(&Matrix::from_vec(1, 2, vec![1., 0.])).unwrap_err().to_string().contains("at least 2"));
        ssg.build(&Matrix::from_vec(2, 2, vec![1., 0., 0., 1.])).unwrap();
        assert_eq!(ssg.search(&[1., 0.5], 5, &[]).unwrap(), [(0, 1.), (1, 0.5)]);
        // One item is enough for HNSW and the scan.
        let mut hnsw = HoraIndex::hnsw(HoraHnswParams::default()).unwrap();
        hnsw.build(&Matrix::from_vec(1, 2, vec![1., 0.])).unwrap();
        assert_eq!(hnsw.search(&[2., 0.], 3, &[]).unwrap(), [(0, 2.)]);
    }

    #[test]
    fn ssg_beyond_root_size_answers_exactly() {
        let mut rng = StdRng::seed_from_u64(9);
        let items = clustered(&mut rng, 150, 4);
        let params = HoraSsgParams {
            root_size: 10,
            init_k: 10,
            index_size: 10,
            neighbor_neighbor_size: 10,
            ..Default::default()
        };
        let ssg = built(HoraIndex::ssg(params).unwrap(), &items);
        let q = [0.5, -0.2, 1.0, 0.3];
        let got = ssg.search(&q, 40, &[3, 4]).unwrap();
        assert_eq!(got, exact_top(&items, &q, 40, &[3, 4]));
    }

    #[test]
    fn registered_and_built_from_toml() {
        let mut reg = Registry::new();
        register(&mut reg);
        let cx = BuildCx::default();
        for name in ["hora_hnsw", "hora_ssg", "hora_bruteforce"] {
            let info = reg.info(ComponentKind::Index, name).unwrap();
            assert_eq!(info.params[0].0, "metric");
            assert_eq!(info.defaults["metric"].as_str(), Some("inner_product"));
        }
        let table: toml::Table = "metric = \"cosine\"\nef_search = 50".parse().unwrap();
        let mut index = reg.build_index("hora_hnsw", table, &cx).unwrap();
        index.build(&hand_items()).unwrap();
        assert_eq!(index.search(&[0., 3.], 1, &[]).unwrap(), [(1, 1.)]);
        assert!(!index.is_exact());
        assert!(index.size_bytes() > 6 * 2 * 4);

        let e = reg.build_index("hora_hnsw", "metric = \"dot\"".parse().unwrap(), &cx).err().unwrap().to_string();
        assert!(e.contains("metric") && e.contains("inner_product"), "{e}");
        let e = reg.build_index("hora_hnsw", "n_neighbor = 0".parse().unwrap(), &cx).err().unwrap().to_string();
        assert_eq!(e, "`n_neighbor` = 0: expected at least 1");
        let e = reg.build_index("hora_ssg", "angle = 180.0".parse().unwrap(), &cx).err().unwrap().to_string();
        assert!(e.contains("`angle` = 180"), "{e}");
        let e = reg.build_index("hora_hnsw", "max_level = 1000".parse().unwrap(), &cx).err().unwrap().to_string();
        assert!(e.contains("at most 64"), "{e}");
        let e = parse_params::<HoraBruteForceParams>("ef_search = 3".parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("`ef_search`"), "{e}");
    }
}
