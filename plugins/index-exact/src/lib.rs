//! The `exact` index: maximum-inner-product search by scoring every item, the
//! reference that approximate indexes are measured against.
//!
//! Results are fully determined by the inputs: best score first, ties broken
//! by the lower item index, so recall of an approximate index against this one
//! is well defined even on tied scores.

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use funnel_api::{BuildCx, Index, ItemIdx, Matrix, Registry};
use funnel_kernels::exact_top_k;
use serde::{Deserialize, Serialize};

/// Registers the `exact` index.
pub fn register(reg: &mut Registry) {
    reg.index::<ExactIndexParams>(
        "exact",
        "Exact maximum-inner-product search by brute force: scores every item, returns the k \
         best (ties to the lower item index). The reference for approximate indexes.",
        build,
    );
}

fn build(_params: ExactIndexParams, _cx: &BuildCx) -> Result<Box<dyn Index>> {
    Ok(Box::new(ExactIndex::new()))
}

/// Parameters of `exact`: none, but a misspelt key is still an error.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct ExactIndexParams {}

/// File `save` writes.
const SAVED: &str = "exact_items.bin";

/// Brute-force inner-product index over a copy of the item vectors.
#[derive(Debug, Clone, Default)]
pub struct ExactIndex {
    items: Option<Matrix>,
}

impl ExactIndex {
    /// An empty index; `build` must be called before searching.
    pub fn new() -> ExactIndex {
        ExactIndex { items: None }
    }

    /// Number of indexed items, or `None` before `build`.
    pub fn n_items(&self) -> Option<usize> {
        self.items.as_ref().map(|m| m.rows)
    }

    fn items(&self) -> Result<&Matrix> {
        self.items.as_ref().ok_or_else(|| anyhow!("exact index searched before it was built"))
    }
}

impl Index for ExactIndex {
    fn build(&mut self, items: &Matrix) -> Result<()> {
        if items.data.len() != items.rows * items.cols {
            bail!("item matrix holds {} values but claims {}x{}", items.data.len(), items.rows, items.cols);
        }
        if let Some(pos) = items.data.iter().position(|x| x.is_nan()) {
            bail!("item {} has a NaN component", pos / items.cols);
        }
        if items.rows > ItemIdx::MAX as usize {
            bail!("{} items do not fit in an item index", items.rows);
        }
        self.items = Some(items.clone());
        Ok(())
    }

    fn is_exact(&self) -> bool {
        true
    }

    fn size_bytes(&self) -> usize {
        self.items.as_ref().map_or(0, |m| m.data.len() * std::mem::size_of::<f32>())
    }

    /// One file: rows and cols as little-endian u64, then the vectors as
    /// little-endian f32, row-major.
    fn save(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let items = self.items()?;
        let mut bytes = Vec::with_capacity(16 + items.data.len() * 4);
        bytes.extend_from_slice(&(items.rows as u64).to_le_bytes());
        bytes.extend_from_slice(&(items.cols as u64).to_le_bytes());
        for x in &items.data {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
        let path = dir.join(SAVED);
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(vec![path])
    }

    fn load(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join(SAVED);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let header = |i: usize| bytes.get(i * 8..i * 8 + 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize);
        let (rows, cols) = header(0).zip(header(1)).ok_or_else(|| anyhow!("{}: truncated header", path.display()))?;
        if rows.checked_mul(cols).and_then(|n| n.checked_mul(4)).and_then(|n| n.checked_add(16)) != Some(bytes.len()) {
            bail!("{}: {} bytes do not hold {rows}x{cols} vectors", path.display(), bytes.len());
        }
        let data = bytes[16..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        self.build(&Matrix::from_vec(rows, cols, data)).with_context(|| format!("loading {}", path.display()))
    }

    /// The `k` best items by inner product, best first, ties to the lower item
    /// index; fewer when fewer are eligible. Excluded ids outside the catalog
    /// are ignored: they could never be returned anyway.
    fn search(&self, query: &[f32], k: usize, exclude: &[ItemIdx]) -> Result<Vec<(ItemIdx, f32)>> {
        let queries = Matrix::from_vec(1, query.len(), query.to_vec());
        Ok(self.search_batch(&queries, k, &[exclude])?.pop().unwrap_or_default())
    }

    /// Every row of `queries` at once: one sgemm per block of queries and
    /// tile of items, spread over the cores (the same kernel serving's exact
    /// reference uses, so a single search and a batch agree bit for bit).
    fn search_batch(&self, queries: &Matrix, k: usize, excludes: &[&[ItemIdx]]) -> Result<Vec<Vec<(ItemIdx, f32)>>> {
        let items = self.items()?;
        if queries.data.len() != queries.rows * queries.cols {
            bail!("query matrix holds {} values but claims {}x{}", queries.data.len(), queries.rows, queries.cols);
        }
        if queries.cols != items.cols {
            let what = if queries.rows == 1 { "query has" } else { "queries have" };
            bail!("{what} {} dimensions but the indexed items have {}", queries.cols, items.cols);
        }
        if !excludes.is_empty() && excludes.len() != queries.rows {
            bail!("{} exclusion lists for {} queries; pass one per query or none", excludes.len(), queries.rows);
        }
        if let Some(pos) = queries.data.iter().position(|x| x.is_nan()) {
            let (q, c) = (pos / queries.cols, pos % queries.cols);
            if queries.rows == 1 {
                bail!("query component {c} is NaN");
            }
            bail!("query {q}: query component {c} is NaN");
        }
        exact_top_k(items, queries, k, |q| excludes.get(q).copied().unwrap_or(&[])).map_err(|e| {
            if queries.rows == 1 {
                anyhow!("score of item {} is NaN; the query and item vectors overflow", e.item)
            } else {
                anyhow!("{e}")
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use funnel_api::{parse_params, ComponentKind};
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use funnel_kernels::{better, dot};

    use super::*;

    /// items: 0 = (1, 0), 1 = (0, 1), 2 = (1, 1), 3 = (2, 0), 4 = (-1, 0), 5 = (1, 1)
    /// query (1, 2) scores: 0 -> 1, 1 -> 2, 2 -> 3, 3 -> 2, 4 -> -1, 5 -> 3
    /// so the full order is 2, 5 (tied at 3), 1, 3 (tied at 2), 0, 4.
    fn hand_index() -> ExactIndex {
        let items = Matrix::from_vec(6, 2, vec![1., 0., 0., 1., 1., 1., 2., 0., -1., 0., 1., 1.]);
        let mut index = ExactIndex::new();
        index.build(&items).unwrap();
        index
    }

    const QUERY: [f32; 2] = [1., 2.];

    #[test]
    fn hand_computed_top_k() {
        let index = hand_index();
        assert_eq!(index.search(&QUERY, 3, &[]).unwrap(), vec![(2, 3.), (5, 3.), (1, 2.)]);
        assert_eq!(index.search(&QUERY, 1, &[]).unwrap(), vec![(2, 3.)]);
        assert_eq!(index.search(&QUERY, 0, &[]).unwrap(), vec![]);
    }

    #[test]
    fn exclusion() {
        let index = hand_index();
        // Excluding 2 lets its tie partner 5 lead, and 3 enters the top 3.
        assert_eq!(index.search(&QUERY, 3, &[2]).unwrap(), vec![(5, 3.), (1, 2.), (3, 2.)]);
        // Repeats and ids outside the catalog are harmless.
        assert_eq!(index.search(&QUERY, 2, &[5, 1, 5, 99]).unwrap(), vec![(2, 3.), (3, 2.)]);
        assert_eq!(index.search(&QUERY, 3, &[0, 1, 2, 3, 4, 5]).unwrap(), vec![]);
    }

    #[test]
    fn k_beyond_eligible_returns_all_eligible() {
        let index = hand_index();
        assert_eq!(index.search(&QUERY, 10, &[5, 0]).unwrap(), vec![(2, 3.), (1, 2.), (3, 2.), (4, -1.)]);
        assert_eq!(index.search(&QUERY, 6, &[]).unwrap().len(), 6);
    }

    #[test]
    fn errors() {
        let unbuilt = ExactIndex::new();
        let e = unbuilt.search(&QUERY, 1, &[]).unwrap_err().to_string();
        assert!(e.contains("before it was built"), "{e}");
        let index = hand_index();
        let e = index.search(&[1., 2., 3.], 1, &[]).unwrap_err().to_string();
        assert!(e.contains("3 dimensions") && e.contains("have 2"), "{e}");
        let e = index.search(&[1., f32::NAN], 1, &[]).unwrap_err().to_string();
        assert!(e.contains("component 1 is NaN"), "{e}");
        // inf x 0 makes item 1's score NaN.
        let e = index.search(&[f32::INFINITY, 0.], 1, &[]).unwrap_err().to_string();
        assert!(e.contains("item 1") && e.contains("NaN"), "{e}");

        let mut index = ExactIndex::new();
        let e = index.build(&Matrix::from_vec(2, 2, vec![0., 1., f32::NAN, 0.])).unwrap_err();
        assert!(e.to_string().contains("item 1 has a NaN"), "{e}");
        let e = index.build(&Matrix { rows: 2, cols: 2, data: vec![0.; 3] }).unwrap_err();
        assert!(e.to_string().contains("holds 3 values"), "{e}");
        assert_eq!(index.n_items(), None);
    }

    #[test]
    fn matches_full_sort_on_random_data() {
        let mut rng = StdRng::seed_from_u64(3);
        let (n, d) = (300, 4);
        // Small integers: exact scores with many ties.
        let items = Matrix::from_vec(n, d, (0..n * d).map(|_| rng.gen_range(-2..=2) as f32).collect());
        let mut index = ExactIndex::new();
        index.build(&items).unwrap();
        assert_eq!(index.n_items(), Some(n));
        for _ in 0..50 {
            let query: Vec<f32> = (0..d).map(|_| rng.gen_range(-2..=2) as f32).collect();
            let exclude: Vec<ItemIdx> = (0..rng.gen_range(0..40)).map(|_| rng.gen_range(0..n as ItemIdx)).collect();
            let mut all: Vec<(ItemIdx, f32)> = (0..n as ItemIdx)
                .filter(|j| !exclude.contains(j))
                .map(|j| (j, dot(&query, items.row(j as usize))))
                .collect();
            all.sort_by(better);
            for k in [1, 5, 17, 100, n] {
                let got = index.search(&query, k, &exclude).unwrap();
                assert_eq!(got, all[..k.min(all.len())], "k {k}");
            }
        }
    }

    #[test]
    fn batch_matches_single_searches() {
        let mut rng = StdRng::seed_from_u64(5);
        let (n, d, q) = (120, 8, 37);
        let items = Matrix::from_vec(n, d, (0..n * d).map(|_| rng.gen_range(-1.0..1.0)).collect());
        let queries = Matrix::from_vec(q, d, (0..q * d).map(|_| rng.gen_range(-1.0..1.0)).collect());
        let excludes: Vec<Vec<ItemIdx>> =
            (0..q).map(|_| (0..rng.gen_range(0..20)).map(|_| rng.gen_range(0..n as ItemIdx)).collect()).collect();
        let refs: Vec<&[ItemIdx]> = excludes.iter().map(Vec::as_slice).collect();
        let mut index = ExactIndex::new();
        index.build(&items).unwrap();
        let batch = index.search_batch(&queries, 10, &refs).unwrap();
        let plain = index.search_batch(&queries, 10, &[]).unwrap();
        for r in 0..q {
            assert_eq!(batch[r], index.search(queries.row(r), 10, &excludes[r]).unwrap());
            assert_eq!(plain[r], index.search(queries.row(r), 10, &[]).unwrap());
        }
        let e = index.search_batch(&queries, 10, &refs[..3]).unwrap_err().to_string();
        assert!(e.contains("3 exclusion lists for 37 queries"), "{e}");
        let mut bad = queries.clone();
        bad.row_mut(4)[2] = f32::NAN;
        let e = index.search_batch(&bad, 10, &[]).unwrap_err().to_string();
        assert!(e.starts_with("query 4:"), "{e}");
        let wide = Matrix::zeros(2, d + 1);
        assert!(index.search_batch(&wide, 1, &[]).is_err());
        assert!(index.search_batch(&Matrix::zeros(0, d), 1, &[]).unwrap().is_empty());
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let index = hand_index();
        let files = index.save(dir.path()).unwrap();
        assert_eq!(files, vec![dir.path().join(SAVED)]);
        let mut loaded = ExactIndex::new();
        loaded.load(dir.path()).unwrap();
        assert_eq!(loaded.search(&QUERY, 6, &[]).unwrap(), index.search(&QUERY, 6, &[]).unwrap());
        assert_eq!(loaded.size_bytes(), 6 * 2 * 4);
        std::fs::write(dir.path().join(SAVED), [0u8; 20]).unwrap();
        let e = format!("{:#}", loaded.load(dir.path()).unwrap_err());
        assert!(e.contains("do not hold"), "{e}");
        let e = format!("{:#}", ExactIndex::new().load(&dir.path().join("missing")).unwrap_err());
        assert!(e.contains("reading"), "{e}");
    }

    #[test]
    fn registered_and_built_from_toml() {
        let mut reg = Registry::new();
        register(&mut reg);
        let info = reg.info(ComponentKind::Index, "exact").unwrap();
        assert!(info.params.is_empty());
        let cx = BuildCx::default();
        let mut index = reg.build_index("exact", toml::Table::new(), &cx).unwrap();
        index.build(&Matrix::from_vec(2, 1, vec![1., 2.])).unwrap();
        assert_eq!(index.search(&[1.], 5, &[]).unwrap(), vec![(1, 2.), (0, 1.)]);
        let table: toml::Table = "k = 3".parse().unwrap();
        let e = parse_params::<ExactIndexParams>(table.clone()).unwrap_err().to_string();
        assert!(e.contains("`k`"), "{e}");
        let e = reg.build_index("exact", table, &cx).err().unwrap().to_string();
        assert!(e.contains("`k`"), "{e}");
    }
}
