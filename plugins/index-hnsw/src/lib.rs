//! The `hnsw` index: hnsw_rs's HNSW graph (Malkov & Yashunin), the index to
//! use for large catalogs. Only this crate knows hnsw_rs.
//!
//! Why hnsw_rs beside hora: hora's HNSW search never descends the graph's
//! upper layers (`reports/index.md`: recall@100 0.47 at a million items),
//! and hora inserts one item at a time under a lock. hnsw_rs searches the
//! layers as the paper does, inserts in parallel on rayon's pool, is
//! maintained, and is pure Rust (usearch would bring a C++ build;
//! instant-distance builds in parallel too but neither saves nor filters).
//!
//! As for hora, maximum inner product becomes a nearest-neighbour search by
//! the SIMPLE-LSH transform ([`funnel_mips::MipsSpace`]): the graph holds
//! transformed items under hnsw_rs's `DistL2`, a search fetches `k` plus the
//! number of excluded items, and the survivors are re-scored by the true
//! inner product with a copy of the item vectors, which also answers exactly
//! when the graph returns too few.
//!
//! Inputs hnsw_rs would exit or panic on are refused first: more than 255
//! neighbours (it calls `process::exit`), and saved files that differ from
//! what was written (its loader asserts; checked by size and FNV-1a checksum
//! first). Builds are not reproducible: levels are drawn from hnsw_rs's own
//! generator and items are inserted in parallel.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use funnel_api::{BuildCx, Index, ItemIdx, Matrix, Registry};
use funnel_mips::bytes::{fingerprint, Reader, Writer};
use funnel_mips::{search_rescored, MipsSpace, Similarity};
use hnsw_rs::api::AnnT;
use hnsw_rs::hnswio::HnswIo;
use hnsw_rs::prelude::{DistL2, Hnsw};
use serde::{Deserialize, Serialize};

/// Registers `hnsw`.
pub fn register(reg: &mut Registry) {
    reg.index::<HnswParams>(
        "hnsw",
        "Approximate maximum-inner-product search on an HNSW graph (hnsw_rs) over SIMPLE-LSH-transformed items, \
         built in parallel, results re-scored by true inner product. The index for large catalogs. Builds are \
         not reproducible (levels are random, inserts parallel).",
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
    #[param(default = 32)]
    pub m: usize,
    /// Candidates kept while inserting: higher builds slower and better graphs.
    #[param(default = 200)]
    pub ef_construction: usize,
    /// Candidates kept while searching (raised to k plus the excluded items
    /// when lower): higher is slower and more accurate.
    #[param(default = 200)]
    pub ef_search: usize,
}

/// Layers of the graph: hnsw_rs's own ceiling.
const MAX_LAYERS: usize = 16;
/// Base name of hnsw_rs's two dump files (`hnsw.hnsw.graph`, `hnsw.hnsw.data`).
const DUMP: &str = "hnsw";
/// Our metadata and the stored item vectors.
const ITEMS_FILE: &str = "hnsw_items.bin";
const MAGIC: &[u8] = b"FUNNELHNSW\x01";

/// An HNSW graph over SIMPLE-LSH-transformed items.
pub struct HnswIndex {
    params: HnswParams,
    built: Option<Built>,
}

struct Built {
    space: MipsSpace,
    /// Items as the space stores them (n x dims): re-scoring and exact answers.
    stored: Matrix,
    graph: Hnsw<'static, f32, DistL2>,
}

impl HnswIndex {
    /// An unbuilt index; refuses parameters hnsw_rs exits or loops on.
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
        Ok(HnswIndex { params, built: None })
    }

    fn built(&self) -> Result<&Built> {
        self.built.as_ref().ok_or_else(|| anyhow!("hnsw index searched before it was built"))
    }
}

impl Index for HnswIndex {
    fn build(&mut self, items: &Matrix) -> Result<()> {
        self.built = None;
        let space = MipsSpace::fit(self.params.metric, items).context("building hnsw")?;
        let transformed = space.transformed_items(items);
        let graph =
            Hnsw::<f32, DistL2>::new(self.params.m, items.rows, MAX_LAYERS, self.params.ef_construction, DistL2);
        let rows: Vec<(&[f32], usize)> = (0..transformed.rows).map(|r| (transformed.row(r), r)).collect();
        graph.parallel_insert_slice(&rows);
        let mut graph = graph;
        graph.set_searching_mode(true);
        self.built = Some(Built { stored: space.stored_items(items), space, graph });
        Ok(())
    }

    /// The `k` best items found, by true score (inner product, or cosine with
    /// `metric = "cosine"`), best first, ties to the lower item index; fewer
    /// only when fewer are eligible. Excluded ids outside the catalog are
    /// ignored.
    fn search(&self, query: &[f32], k: usize, exclude: &[ItemIdx]) -> Result<Vec<(ItemIdx, f32)>> {
        let built = self.built()?;
        search_rescored(&built.space, &built.stored, query, k, exclude, |q, fetch| {
            let found = built.graph.search(q, fetch, self.params.ef_search.max(fetch));
            Ok(found.into_iter().map(|nb| nb.d_id as ItemIdx).collect())
        })
    }

    fn size_bytes(&self) -> usize {
        let Some(built) = &self.built else { return 0 };
        let (n, dims) = (built.stored.rows, built.stored.cols);
        // hnsw_rs's internals are private: estimated from what it allocates
        // per point (its own copy of the transformed vector, and neighbour
        // lists of 2M on the bottom layer and M above, each an Arc and a
        // distance, with about 1/(M-1) of points on the layers above).
        let per_point = (dims + 1) * 4 + 64 + (2 * self.params.m + self.params.m / 2) * 24;
        built.stored.data.len() * 4 + n * per_point
    }

    /// Three files: hnsw_rs's dump (`hnsw.hnsw.graph`, `hnsw.hnsw.data`) and
    /// `hnsw_items.bin` with the metric, dimensions, norm bound, each dump
    /// file's size and checksum, and the stored item vectors (little-endian
    /// f32, row-major).
    fn save(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let built = self.built().map_err(|_| anyhow!("hnsw index saved before it was built"))?;
        if !dir.is_dir() {
            bail!("cannot save hnsw into {}: not a folder", dir.display());
        }
        let base = built.graph.file_dump(dir, DUMP).map_err(|e| anyhow!("writing hnsw into {}: {e}", dir.display()))?;
        if base != DUMP {
            bail!("hnsw_rs wrote its dump as {base:?} instead of {DUMP:?} in {}", dir.display());
        }
        let mut w = Writer::default();
        w.bytes.extend_from_slice(MAGIC);
        w.str(self.params.metric.name());
        w.u64(built.stored.rows as u64);
        w.u64(built.stored.cols as u64);
        w.f32(built.space.norm_bound());
        let dumps = dump_files(dir);
        for path in &dumps {
            let (len, checksum) = fingerprint(path)?;
            w.u64(len);
            w.u64(checksum);
        }
        w.f32s(&built.stored.data);
        let items_path = dir.join(ITEMS_FILE);
        std::fs::write(&items_path, w.bytes).with_context(|| format!("writing {}", items_path.display()))?;
        Ok(dumps.into_iter().chain([items_path]).collect())
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
        for path in dump_files(dir) {
            let saved = (r.u64("dump size").with_context(within)?, r.u64("dump checksum").with_context(within)?);
            // hnsw_rs's loader asserts on a damaged file: check it is byte
            // for byte what save wrote.
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
        }
        let stored = r.f32s(rows.saturating_mul(cols), "item vectors").with_context(within)?;
        r.end().with_context(within)?;
        let space = MipsSpace::restore(self.params.metric, cols, norm_bound).with_context(within)?;
        // The graph borrows from its loader (hnsw_rs can map the data file),
        // so the loader lives as long as the process: one small struct per
        // load, in processes (`funnel recommend`) that load once.
        let io: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, DUMP)));
        let mut graph: Hnsw<'static, f32, DistL2> =
            io.load_hnsw().map_err(|e| anyhow!("{}: hnsw_rs could not load its dump: {e}", within()))?;
        if graph.get_nb_point() != rows {
            bail!("{}: the graph holds {} items, expected {rows}", within(), graph.get_nb_point());
        }
        graph.set_searching_mode(true);
        self.built = Some(Built { space, stored: Matrix::from_vec(rows, cols, stored), graph });
        Ok(())
    }
}

/// hnsw_rs's two dump files in `dir`.
fn dump_files(dir: &Path) -> [PathBuf; 2] {
    [dir.join(format!("{DUMP}.hnsw.graph")), dir.join(format!("{DUMP}.hnsw.data"))]
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
        for metric in [Similarity::InnerProduct, Similarity::Cosine] {
            let mut index = HnswIndex::new(HnswParams { metric, ..Default::default() }).unwrap();
            index.build(&items).unwrap();
            if metric == Similarity::InnerProduct {
                let r = recall(&index, &items, &queries, 50, &[]);
                assert!(r >= 0.95, "recall@50 {r}");
                assert!(recall(&index, &items, &queries, 10, &[1, 2, 3, 4000]) >= 0.95);
            }
            // Scores are the true ones, best first.
            let top = index.search(queries.row(0), 10, &[]).unwrap();
            assert!(top.windows(2).all(|w| better(&w[0], &w[1]).is_lt()));
        }
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
        assert_eq!(files.len(), 3);
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
        let graph = dir.path().join("hnsw.hnsw.graph");
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
        assert_eq!(keys, ["metric", "m", "ef_construction", "ef_search"]);
        let table: toml::Table = "m = 8\nmetric = \"cosine\"".parse().unwrap();
        let mut index = reg.build_index("hnsw", table, &BuildCx::default()).unwrap();
        index.build(&Matrix::from_vec(3, 1, vec![1., 2., 3.])).unwrap();
        assert_eq!(index.search(&[1.], 1, &[]).unwrap().len(), 1);
        let e = parse_params::<HnswParams>("ef = 3".parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("`ef`"), "{e}");
    }
}
