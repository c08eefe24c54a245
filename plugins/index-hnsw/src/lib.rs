//! The `hnsw` index: HNSW graphs (Malkov & Yashunin) from usearch, the index
//! to use for large catalogs. Only this crate knows usearch.
//!
//! How a graph answers maximum inner product here:
//! - **Graphs linked by angle, searched by inner product.** Each graph is
//!   built under the cosine metric, which is a proper angular distance: every
//!   item gets neighbours and stays reachable. After the build its metric is
//!   switched to inner product, so searches climb towards the items of largest
//!   inner product. Graphs linked by inner product itself (faiss's
//!   `IndexHNSWFlat` with `METRIC_INNER_PRODUCT`) give every item the same few
//!   large-norm neighbours, and items of middling norm lose their in-links;
//!   Euclidean graphs over SIMPLE-LSH-transformed items (`hora_hnsw`) push
//!   small items into one crowded corner. Both find less at equal effort
//!   (`reports/index.md` measures all three).
//! - **Norm ranges** (`norm_ranges`; Yan et al. 2018's norm-ranging idea):
//!   items are split by norm into ranges of equal size, one graph each. Inside
//!   a range norms are alike and the angle decides, which a graph linked by
//!   angle navigates well. Ranges are searched largest norms first, and a
//!   range is skipped once the best `k` found already score at least its
//!   largest norm times the query's norm (Cauchy-Schwarz: nothing in it can do
//!   better), so most queries search a few ranges.
//! - A search fetches `k` plus the number of excluded items per range, drops
//!   the excluded ones and re-scores the rest by the true inner product with a
//!   copy of the item vectors ([`funnel_mips::search_rescored`]), which also
//!   answers exactly when the graphs return too few.
//!
//! Why usearch: hora's HNSW search skips the descent through the upper layers
//! (see `funnel-index-hora`); hnsw_rs searched about 6x slower than faiss at
//! equal parameters and cannot change its metric after a build;
//! instant-distance neither saves nor filters. usearch is maintained, inserts
//! from many threads (the build runs on rayon's pool), computes distances with
//! SIMD kernels, and saves and loads its graphs. Its C++ core builds with the
//! system's C++ compiler.
//!
//! Saved files are checked (size and FNV-1a checksum) before usearch reads
//! them. Builds are not reproducible: levels are random and inserts parallel.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use funnel_api::{BuildCx, Index, ItemIdx, Matrix, Registry};
use funnel_kernels::dot;
use funnel_kernels::par::*;
use funnel_mips::bytes::{fingerprint, Reader, Writer};
use funnel_mips::{search_rescored, MipsSpace, Similarity};
use serde::{Deserialize, Serialize};
use usearch::{IndexOptions, MetricKind, ScalarKind};

/// Registers `hnsw`.
pub fn register(reg: &mut Registry) {
    reg.index::<HnswParams>(
        "hnsw",
        "Approximate maximum-inner-product search on HNSW graphs (usearch): one graph per range of item norms, \
         linked by angle and searched by inner product, built in parallel, results re-scored by true inner \
         product. The index for large catalogs. Builds are not reproducible (levels are random, inserts parallel).",
        |p, _cx: &BuildCx| Ok(Box::new(HnswIndex::new(p)?)),
    );
}

/// Parameters of `hnsw`.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct HnswParams {
    /// "inner_product" (largest dot product) or "cosine" (items and queries normalised).
    #[param(default = Similarity::InnerProduct)]
    pub metric: Similarity,
    /// M: neighbours a node keeps per layer (twice that on the bottom layer); 2 to 255.
    #[param(default = 16)]
    pub m: usize,
    /// Candidates kept while inserting: higher builds slower and better graphs.
    #[param(default = 128)]
    pub ef_construction: usize,
    /// Candidates kept while searching each range (raised to k plus the
    /// excluded items when lower): higher is slower and more accurate.
    #[param(default = 500)]
    pub ef_search: usize,
    /// Ranges of item norms, one graph each (1 with `metric = "cosine"`,
    /// where every norm is 1); at most one per item.
    #[param(default = 4)]
    pub norm_ranges: usize,
}

/// Our metadata and the stored item vectors.
const ITEMS_FILE: &str = "hnsw_items.bin";
const MAGIC: &[u8] = b"FUNNELHNSW\x03";

/// One graph per range of item norms, largest norms first.
pub struct HnswIndex {
    params: HnswParams,
    built: Option<Built>,
}

struct Built {
    space: MipsSpace,
    /// Items as the space stores them (n x dims): re-scoring and exact answers.
    stored: Matrix,
    ranges: Vec<NormRange>,
}

struct NormRange {
    /// The largest norm of a stored item in the range.
    max_norm: f32,
    graph: usearch::Index,
}

/// usearch reports C++ exceptions; they name what failed.
fn usearch_error<E: std::fmt::Display>(what: String) -> impl FnOnce(E) -> anyhow::Error {
    move |e| anyhow!("{what}: usearch: {e}")
}

impl HnswIndex {
    /// An unbuilt index; refuses parameters usearch cannot honour.
    pub fn new(params: HnswParams) -> Result<HnswIndex> {
        if !(2..=255).contains(&params.m) {
            bail!("`m` = {}: expected 2 to 255", params.m);
        }
        if params.ef_construction == 0 {
            bail!("`ef_construction` = 0: expected at least 1");
        }
        if params.ef_search == 0 {
            bail!("`ef_search` = 0: expected at least 1");
        }
        if params.norm_ranges == 0 {
            bail!("`norm_ranges` = 0: expected at least 1");
        }
        Ok(HnswIndex { params, built: None })
    }

    fn built(&self) -> Result<&Built> {
        self.built.as_ref().ok_or_else(|| anyhow!("hnsw index searched before it was built"))
    }

    /// An empty graph: cosine links while building.
    fn new_graph(&self, dims: usize) -> Result<usearch::Index> {
        let options = IndexOptions {
            dimensions: dims,
            metric: MetricKind::Cos,
            quantization: ScalarKind::F32,
            connectivity: self.params.m,
            expansion_add: self.params.ef_construction,
            expansion_search: self.params.ef_search,
            multi: false,
        };
        usearch::Index::new(&options).map_err(usearch_error("creating an hnsw graph".into()))
    }

    /// Ready for queries: inner product, this index's `ef_search`.
    fn searching(&self, graph: &usearch::Index) -> Result<()> {
        graph.change_metric_kind(MetricKind::IP).map_err(usearch_error("switching hnsw to inner product".into()))?;
        graph.change_expansion_search(self.params.ef_search);
        Ok(())
    }
}

impl Built {
    /// Up to `fetch` items of largest inner product with `q` (any positive
    /// multiple of the query), best first: see the crate doc.
    fn candidates(&self, q: &[f32], fetch: usize) -> Result<Vec<ItemIdx>> {
        let q_norm = dot(q, q).sqrt();
        let mut best: Vec<(ItemIdx, f32)> = Vec::with_capacity(2 * fetch);
        for (r, range) in self.ranges.iter().enumerate() {
            if best.len() >= fetch && best[fetch - 1].1 >= range.max_norm * q_norm {
                break;
            }
            let found = range.graph.search(q, fetch).map_err(usearch_error(format!("searching norm range {r}")))?;
            best.extend(found.keys.iter().map(|&key| (key as ItemIdx, dot(q, self.stored.row(key as usize)))));
            best.sort_unstable_by(funnel_kernels::better);
            best.truncate(fetch);
        }
        Ok(best.into_iter().map(|(i, _)| i).collect())
    }
}

impl Index for HnswIndex {
    fn build(&mut self, items: &Matrix) -> Result<()> {
        self.built = None;
        let space = MipsSpace::fit(self.params.metric, items).context("building hnsw")?;
        let stored = space.stored_items(items);
        let n = stored.rows;
        let norms: Vec<f32> = (0..n).map(|r| dot(stored.row(r), stored.row(r)).sqrt()).collect();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_unstable_by(|&a, &b| norms[b].total_cmp(&norms[a]).then(a.cmp(&b)));
        let n_ranges = match self.params.metric {
            Similarity::Cosine => 1,
            Similarity::InnerProduct => self.params.norm_ranges.min(n),
        };
        let mut ranges = Vec::with_capacity(n_ranges);
        for r in 0..n_ranges {
            let members = &order[r * n / n_ranges..(r + 1) * n / n_ranges];
            let graph = self.new_graph(stored.cols)?;
            graph
                .reserve_capacity_and_threads(members.len(), threads())
                .map_err(usearch_error(format!("reserving {} items", members.len())))?;
            members.par_iter().try_for_each(|&i| {
                graph.add(i as u64, stored.row(i)).map_err(usearch_error(format!("adding item {i}")))
            })?;
            self.searching(&graph)?;
            ranges.push(NormRange { max_norm: norms[members[0]], graph });
        }
        self.built = Some(Built { space, stored, ranges });
        Ok(())
    }

    /// The `k` best items found, by true score (inner product, or cosine with
    /// `metric = "cosine"`), best first, ties to the lower item index; fewer
    /// only when fewer are eligible. Excluded ids outside the catalog are
    /// ignored.
    fn search(&self, query: &[f32], k: usize, exclude: &[ItemIdx]) -> Result<Vec<(ItemIdx, f32)>> {
        let built = self.built()?;
        let dims = built.space.dims();
        // The transformed query is the scoring vector scaled, with a trailing 0.
        search_rescored(&built.space, &built.stored, query, k, exclude, |q, fetch| built.candidates(&q[..dims], fetch))
    }

    fn size_bytes(&self) -> usize {
        let Some(built) = &self.built else { return 0 };
        built.stored.data.len() * 4 + built.ranges.iter().map(|r| r.graph.memory_usage()).sum::<usize>()
    }

    /// One usearch file per norm range (`hnsw_0.usearch`, ...) and
    /// `hnsw_items.bin` with the metric, dimensions, norm bound, each range's
    /// largest norm, each graph file's size and checksum, and the stored item
    /// vectors (little-endian f32, row-major).
    fn save(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let built = self.built().map_err(|_| anyhow!("hnsw index saved before it was built"))?;
        if !dir.is_dir() {
            bail!("cannot save hnsw into {}: not a folder", dir.display());
        }
        let mut w = Writer::default();
        w.bytes.extend_from_slice(MAGIC);
        w.str(self.params.metric.name());
        w.u64(built.stored.rows as u64);
        w.u64(built.stored.cols as u64);
        w.f32(built.space.norm_bound());
        w.u64(built.ranges.len() as u64);
        let mut files = Vec::with_capacity(built.ranges.len() + 1);
        for (r, range) in built.ranges.iter().enumerate() {
            let path = graph_file(dir, r);
            range.graph.save(utf8(&path)?).map_err(usearch_error(format!("writing {}", path.display())))?;
            let (len, checksum) = fingerprint(&path)?;
            w.f32(range.max_norm);
            w.u64(len);
            w.u64(checksum);
            files.push(path);
        }
        w.f32s(&built.stored.data);
        let items_path = dir.join(ITEMS_FILE);
        std::fs::write(&items_path, w.bytes).with_context(|| format!("writing {}", items_path.display()))?;
        files.push(items_path);
        Ok(files)
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        self.built = None;
        let items_path = dir.join(ITEMS_FILE);
        let bytes = std::fs::read(&items_path).with_context(|| format!("reading {}", items_path.display()))?;
        let within = || format!("loading {}", items_path.display());
        let mut r = Reader::new(&bytes);
        r.magic(MAGIC).with_context(within)?;
        let saved_metric = r.str("metric").with_context(within)?;
        if saved_metric != self.params.metric.name() {
            bail!(
                "{}: holds an index with metric {saved_metric:?}, but this one has metric {:?}",
                within(),
                self.params.metric.name()
            );
        }
        let rows = r.usize("item count").with_context(within)?;
        let cols = r.usize("dimensions").with_context(within)?;
        let norm_bound = r.f32("norm bound").with_context(within)?;
        let n_ranges = r.usize("norm ranges").with_context(within)?;
        if n_ranges == 0 || n_ranges > rows.max(1) {
            bail!("{}: {n_ranges} norm ranges for {rows} items", within());
        }
        let mut ranges = Vec::with_capacity(n_ranges);
        let mut members = 0;
        for i in 0..n_ranges {
            let max_norm = r.f32("range norm").with_context(within)?;
            let saved = (r.u64("graph size").with_context(within)?, r.u64("graph checksum").with_context(within)?);
            let path = graph_file(dir, i);
            // usearch trusts its files: check each is byte for byte what save wrote.
            let found = fingerprint(&path).with_context(within)?;
            if found != saved {
                bail!(
                    "{}: {} changed since it was saved ({} bytes, checksum {:016x}; saved {} bytes, {:016x})",
                    within(),
                    path.display(),
                    found.0,
                    found.1,
                    saved.0,
                    saved.1
                );
            }
            let graph = self.new_graph(cols)?;
            graph.load(utf8(&path)?).map_err(usearch_error(format!("{}: reading {}", within(), path.display())))?;
            self.searching(&graph)?;
            members += graph.size();
            ranges.push(NormRange { max_norm, graph });
        }
        if members != rows {
            bail!("{}: the graphs hold {members} items, expected {rows}", within());
        }
        let stored = r.f32s(rows.saturating_mul(cols), "item vectors").with_context(within)?;
        r.end().with_context(within)?;
        let space = MipsSpace::restore(self.params.metric, cols, norm_bound).with_context(within)?;
        self.built = Some(Built { space, stored: Matrix::from_vec(rows, cols, stored), ranges });
        Ok(())
    }
}

/// The graph file of norm range `r`.
fn graph_file(dir: &Path, r: usize) -> PathBuf {
    dir.join(format!("hnsw_{r}.usearch"))
}

/// usearch takes paths as `&str`.
fn utf8(path: &Path) -> Result<&str> {
    path.to_str().ok_or_else(|| anyhow!("{}: usearch needs a UTF-8 path", path.display()))
}

#[cfg(test)]
mod tests {
    use funnel_api::{parse_params, ComponentKind};
    use funnel_kernels::better;
    use funnel_mips::exact_top;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    /// `n` items around 20 cluster centres in `d` dimensions.
    fn clustered(n: usize, d: usize, rng: &mut StdRng) -> Matrix {
        let centres: Vec<Vec<f32>> = (0..20).map(|_| (0..d).map(|_| rng.gen_range(-1.0..1.0)).collect()).collect();
        let mut data = Vec::with_capacity(n * d);
        for _ in 0..n {
            let c = &centres[rng.gen_range(0..20)];
            data.extend(c.iter().map(|x| x + rng.gen_range(-0.3..0.3)));
        }
        Matrix::from_vec(n, d, data)
    }

    fn recall(index: &HnswIndex, items: &Matrix, queries: &Matrix, k: usize, exclude: &[ItemIdx]) -> f64 {
        let mut hits = 0;
        for q in 0..queries.rows {
            let got: Vec<ItemIdx> = index.search(queries.row(q), k, exclude).unwrap().iter().map(|p| p.0).collect();
            assert!(got.iter().all(|i| !exclude.contains(i)));
            let truth = exact_top(items, queries.row(q), k, exclude);
            hits += truth.iter().filter(|p| got.contains(&p.0)).count();
        }
        hits as f64 / (queries.rows * k) as f64
    }

    #[test]
    fn finds_the_exact_inner_product_top_k_with_high_recall() {
        let mut rng = StdRng::seed_from_u64(1);
        let items = clustered(5000, 16, &mut rng);
        let queries = clustered(100, 16, &mut rng);
        // One graph over every norm needs a wider search for the same recall.
        for (metric, norm_ranges, ef_search) in
            [(Similarity::InnerProduct, 4, 100), (Similarity::InnerProduct, 1, 400), (Similarity::Cosine, 4, 100)]
        {
            let mut index =
                HnswIndex::new(HnswParams { metric, norm_ranges, ef_search, ..Default::default() }).unwrap();
            index.build(&items).unwrap();
            if metric == Similarity::InnerProduct {
                let r = recall(&index, &items, &queries, 50, &[]);
                assert!(r >= 0.95, "recall@50 {r} with {norm_ranges} norm ranges");
                let r = recall(&index, &items, &queries, 10, &[1, 2, 3, 4000]);
                assert!(r >= 0.95, "recall@10 {r} with {norm_ranges} norm ranges and exclusions");
            }
            // Scores are the true ones, best first.
            let top = index.search(queries.row(0), 10, &[]).unwrap();
            assert!(top.windows(2).all(|w| better(&w[0], &w[1]).is_lt()));
        }
    }

    /// Items whose norms differ by 15x: what norm ranges are for.
    #[test]
    fn the_inner_product_graph_finds_mixed_norm_items() {
        let mut rng = StdRng::seed_from_u64(4);
        let d = 32;
        let mut items = clustered(10_000, d, &mut rng);
        for r in 0..items.rows {
            let norm = [0.2, 1.0, 3.0][r % 3];
            items.row_mut(r).iter_mut().for_each(|x| *x *= norm);
        }
        let queries = clustered(100, d, &mut rng);
        let mut index = HnswIndex::new(HnswParams::default()).unwrap();
        index.build(&items).unwrap();
        let r = recall(&index, &items, &queries, 10, &[]);
        assert!(r >= 0.95, "recall@10 {r}");
        // Every range's graph holds its share, largest norms first.
        let ranges = &index.built().unwrap().ranges;
        assert_eq!(ranges.iter().map(|r| r.graph.size()).collect::<Vec<_>>(), [2500; 4]);
        assert!(ranges.windows(2).all(|w| w[0].max_norm >= w[1].max_norm));
    }

    #[test]
    fn whole_catalog_and_exclusions_are_exact() {
        let mut rng = StdRng::seed_from_u64(2);
        let items = clustered(300, 8, &mut rng);
        let mut index = HnswIndex::new(HnswParams::default()).unwrap();
        index.build(&items).unwrap();
        let q = items.row(7).to_vec();
        assert_eq!(index.search(&q, 300, &[]).unwrap(), exact_top(&items, &q, 300, &[]));
        let all: Vec<ItemIdx> = (0..300).collect();
        assert!(index.search(&q, 5, &all).unwrap().is_empty());
        assert_eq!(index.search(&q, 0, &[]).unwrap(), vec![]);
    }

    #[test]
    fn save_and_load_round_trip_and_damage_is_an_error() {
        let mut rng = StdRng::seed_from_u64(3);
        let items = clustered(1000, 8, &mut rng);
        let mut index = HnswIndex::new(HnswParams::default()).unwrap();
        index.build(&items).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = index.save(dir.path()).unwrap();
        assert_eq!(files.len(), 5);
        let mut loaded = HnswIndex::new(HnswParams::default()).unwrap();
        loaded.load(dir.path()).unwrap();
        for r in [0, 10, 999] {
            assert_eq!(
                loaded.search(items.row(r), 10, &[r as ItemIdx]).unwrap(),
                index.search(items.row(r), 10, &[r as ItemIdx]).unwrap()
            );
        }
        let mut cosine = HnswIndex::new(HnswParams { metric: Similarity::Cosine, ..Default::default() }).unwrap();
        let e = format!("{:#}", cosine.load(dir.path()).unwrap_err());
        assert!(e.contains("metric"), "{e}");
        let graph = dir.path().join("hnsw_3.usearch");
        let mut bytes = std::fs::read(&graph).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&graph, bytes).unwrap();
        let e = format!("{:#}", loaded.load(dir.path()).unwrap_err());
        assert!(e.contains("changed since it was saved"), "{e}");
        let e = format!("{:#}", loaded.load(&dir.path().join("missing")).unwrap_err());
        assert!(e.contains("reading"), "{e}");
    }

    #[test]
    fn errors_before_hnsw_rs_sees_them() {
        for (p, key) in [
            (HnswParams { m: 256, ..Default::default() }, "`m`"),
            (HnswParams { m: 1, ..Default::default() }, "`m`"),
            (HnswParams { ef_search: 0, ..Default::default() }, "`ef_search`"),
            (HnswParams { ef_construction: 0, ..Default::default() }, "`ef_construction`"),
            (HnswParams { norm_ranges: 0, ..Default::default() }, "`norm_ranges`"),
        ] {
            let e = HnswIndex::new(p).err().unwrap().to_string();
            assert!(e.contains(key), "{e}");
        }
        let index = HnswIndex::new(HnswParams::default()).unwrap();
        assert!(index.search(&[1.0], 1, &[]).unwrap_err().to_string().contains("before it was built"));
        let mut index = HnswIndex::new(HnswParams::default()).unwrap();
        assert!(index.build(&Matrix::from_vec(0, 2, vec![])).is_err());
        assert!(index.build(&Matrix::from_vec(1, 2, vec![f32::NAN, 0.])).is_err());
        index.build(&Matrix::from_vec(2, 2, vec![1., 0., 0., 1.])).unwrap();
        assert!(index.search(&[1., 0., 0.], 1, &[]).is_err());
    }

    #[test]
    fn registered_and_built_from_toml() {
        let mut reg = Registry::new();
        register(&mut reg);
        let info = reg.info(ComponentKind::Index, "hnsw").unwrap();
        let keys: Vec<_> = info.params.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["metric", "m", "ef_construction", "ef_search", "norm_ranges"]);
        let table: toml::Table = "m = 8\nmetric = \"cosine\"".parse().unwrap();
        let mut index = reg.build_index("hnsw", table, &BuildCx::default()).unwrap();
        index.build(&Matrix::from_vec(3, 1, vec![1., 2., 3.])).unwrap();
        assert_eq!(index.search(&[1.], 1, &[]).unwrap().len(), 1);
        let e = parse_params::<HnswParams>("ef = 3".parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("`ef`"), "{e}");
    }
}
