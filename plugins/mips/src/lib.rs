//! Maximum-inner-product search (MIPS) helpers shared by funnel's approximate
//! indexes; no plugin lives here.
//!
//! Nearest-neighbour structures (graphs, k-means lists) are built for the
//! Euclidean distance, and a recommender ranks by inner product. SIMPLE-LSH's
//! transform (Neyshabur & Srebro 2015) turns one into the other: with `M` the
//! largest item norm, item `v` becomes `[v, sqrt(M² - |v|²)]` and query `u`
//! becomes `[u, 0]`. Every transformed item has norm `M`, so
//! `|[u, 0] - [v, e]|² = |u|² + M² - 2 u·v`: the nearest transformed item is the
//! item of largest inner product. [`MipsSpace`] holds that transform (and the
//! cosine variant: normalise first, so `M = 1`) and [`Exclusion`] the
//! bookkeeping every index repeats; the `k` best by true score ([`TopK`],
//! ties to the lower item index) come from `funnel-kernels`.

#![forbid(unsafe_code)]

use anyhow::{bail, Result};
use funnel_api::{ItemIdx, Matrix};
use funnel_kernels::{better, dot, TopK};
use serde::{Deserialize, Serialize};

/// What "best" means for an index: the `metric` parameter of every index
/// plugin built on this crate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Similarity {
    /// Largest inner product with the item vectors as given.
    #[default]
    InnerProduct,
    /// Largest cosine: items and queries are normalised (a zero vector stays
    /// zero and scores 0). For models whose vectors are normalised anyway.
    Cosine,
}

impl Similarity {
    /// The name as written in an experiment file.
    pub fn name(self) -> &'static str {
        match self {
            Similarity::InnerProduct => "inner_product",
            Similarity::Cosine => "cosine",
        }
    }

    /// The inverse of [`Similarity::name`].
    pub fn from_name(name: &str) -> Result<Similarity> {
        match name {
            "inner_product" => Ok(Similarity::InnerProduct),
            "cosine" => Ok(Similarity::Cosine),
            other => bail!("unknown metric {other:?}; expected \"inner_product\" or \"cosine\""),
        }
    }
}

/// The transform from inner-product search to Euclidean nearest neighbours,
/// fitted to one catalog.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MipsSpace {
    similarity: Similarity,
    dims: usize,
    /// `M²`, the largest squared norm of a stored vector.
    max_sq_norm: f32,
}

/// One query, ready for an index built in a [`MipsSpace`].
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// What stored vectors are scored against: the query itself, or
    /// normalised for cosine. Scores are `dot(scoring, stored)`.
    pub scoring: Vec<f32>,
    /// `[s · scoring, 0]` in the transformed space (`dims + 1` values), `s`
    /// scaling it to norm `M` like the transformed items: the Euclidean order
    /// does not depend on `s`, and a query as long as the items is one that
    /// graph searches and k-means probes handle like an item.
    pub search: Vec<f32>,
}

impl MipsSpace {
    /// Checks `items` (shape, at least one item and one dimension, finite
    /// values and squared norms, item indexes that fit an [`ItemIdx`]) and
    /// fits the transform to them.
    pub fn fit(similarity: Similarity, items: &Matrix) -> Result<MipsSpace> {
        if items.data.len() != items.rows * items.cols {
            bail!("item matrix holds {} values but claims {}x{}", items.data.len(), items.rows, items.cols);
        }
        if items.rows == 0 {
            bail!("no items to index; expected at least one item vector");
        }
        if items.cols == 0 {
            bail!("item vectors have 0 dimensions; expected at least one");
        }
        if items.rows > ItemIdx::MAX as usize {
            bail!("{} items do not fit in an item index (at most {})", items.rows, ItemIdx::MAX);
        }
        let mut max_sq_norm = 0f32;
        for r in 0..items.rows {
            let v = items.row(r);
            if let Some(c) = v.iter().position(|x| !x.is_finite()) {
                bail!("item {r} has a non-finite component {c} ({}); expected finite values", v[c]);
            }
            let sq = dot(v, v);
            if !sq.is_finite() {
                bail!("item {r}'s squared norm overflows f32; expected vectors of norm below 1e19");
            }
            max_sq_norm = max_sq_norm.max(sq);
        }
        if similarity == Similarity::Cosine {
            max_sq_norm = 1.0;
        }
        Ok(MipsSpace { similarity, dims: items.cols, max_sq_norm })
    }

    /// The space a saved index was built in, from what [`MipsSpace::norm_bound`]
    /// and friends reported.
    pub fn restore(similarity: Similarity, dims: usize, norm_bound: f32) -> Result<MipsSpace> {
        if dims == 0 || !norm_bound.is_finite() || norm_bound < 0.0 {
            bail!("invalid saved transform: {dims} dimensions, norm bound {norm_bound}");
        }
        Ok(MipsSpace { similarity, dims, max_sq_norm: norm_bound * norm_bound })
    }

    pub fn similarity(&self) -> Similarity {
        self.similarity
    }

    /// Length of item and query vectors (before the transform).
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// `M`: the largest norm of a stored vector (1 for cosine).
    pub fn norm_bound(&self) -> f32 {
        self.max_sq_norm.sqrt()
    }

    /// What an index keeps of item `v`: `v` itself, or `v / |v|` for cosine.
    pub fn stored(&self, v: &[f32]) -> Vec<f32> {
        match self.similarity {
            Similarity::InnerProduct => v.to_vec(),
            Similarity::Cosine => normalized(v),
        }
    }

    /// Every item as [`MipsSpace::stored`] keeps it.
    pub fn stored_items(&self, items: &Matrix) -> Matrix {
        let data = (0..items.rows).flat_map(|r| self.stored(items.row(r))).collect();
        Matrix::from_vec(items.rows, items.cols, data)
    }

    /// The coordinate SIMPLE-LSH appends to a stored vector:
    /// `sqrt(M² - |stored|²)`, clamped at 0 against rounding.
    pub fn extra(&self, stored: &[f32]) -> f32 {
        (self.max_sq_norm - dot(stored, stored)).max(0.0).sqrt()
    }

    /// Every item transformed: `[stored, extra]`, `dims + 1` columns.
    pub fn transformed_items(&self, items: &Matrix) -> Matrix {
        let mut data = Vec::with_capacity(items.rows * (self.dims + 1));
        for r in 0..items.rows {
            let stored = self.stored(items.row(r));
            let extra = self.extra(&stored);
            data.extend_from_slice(&stored);
            data.push(extra);
        }
        Matrix::from_vec(items.rows, self.dims + 1, data)
    }

    /// Checks `query` (length, finite values) and prepares it.
    pub fn query(&self, query: &[f32]) -> Result<Query> {
        if query.len() != self.dims {
            bail!("query has {} dimensions but the indexed items have {}", query.len(), self.dims);
        }
        if let Some(i) = query.iter().position(|x| !x.is_finite()) {
            bail!("query component {i} is {}; expected finite values", query[i]);
        }
        let scoring = match self.similarity {
            Similarity::InnerProduct => query.to_vec(),
            Similarity::Cosine => normalized(query),
        };
        let norm = norm_f64(&scoring);
        // A zero query scores every item 0: any order is right.
        let scale = if norm > 0.0 && self.max_sq_norm > 0.0 { f64::from(self.norm_bound()) / norm } else { 1.0 };
        let mut search: Vec<f32> = scoring.iter().map(|&x| (f64::from(x) * scale) as f32).collect();
        if search.iter().any(|x| !x.is_finite()) {
            bail!("query of norm {norm} cannot be scaled to the items' norm {}", self.norm_bound());
        }
        search.push(0.0);
        Ok(Query { scoring, search })
    }
}

/// `v / |v|`, or `v` itself when it is zero.
fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = norm_f64(v);
    if norm > 0.0 {
        v.iter().map(|&x| (f64::from(x) / norm) as f32).collect()
    } else {
        v.to_vec()
    }
}

/// `|v|` in f64, which neither overflows nor underflows for finite f32 values.
fn norm_f64(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>().sqrt()
}

/// The `k` best items for `query` by true score, best first (ties to the
/// lower item index), none in `exclude`, from an approximate structure over
/// the transformed items: `candidates(search, fetch)` returns up to `fetch`
/// item ids near the transformed query `search`. Fetching `k` plus the
/// excluded count, dropping the excluded and re-scoring the rest against
/// `stored` (the items as [`MipsSpace::stored_items`] keeps them) is what
/// every index here does; when the structure would have to return the whole
/// catalog, or returns fewer than `k` eligible items, an exact scan answers.
pub fn search_rescored(
    space: &MipsSpace,
    stored: &Matrix,
    query: &[f32],
    k: usize,
    exclude: &[ItemIdx],
    candidates: impl FnOnce(&[f32], usize) -> Result<Vec<ItemIdx>>,
) -> Result<Vec<(ItemIdx, f32)>> {
    let q = space.query(query)?;
    let n = stored.rows;
    let exclusion = Exclusion::new(exclude, n);
    let want = k.min(n - exclusion.len());
    if want == 0 {
        return Ok(Vec::new());
    }
    let fetch = exclusion.fetch(k, n);
    if fetch == n {
        return Ok(exact_scan(stored, &q.scoring, want, &exclusion));
    }
    let mut scored: Vec<(ItemIdx, f32)> = candidates(&q.search, fetch)?
        .into_iter()
        .filter(|&i| (i as usize) < n && !exclusion.contains(i))
        .map(|i| (i, dot(&q.scoring, stored.row(i as usize))))
        .collect();
    scored.sort_unstable_by(better);
    // A structure may return an item twice; repeats are adjacent after the sort.
    scored.dedup_by_key(|(i, _)| *i);
    if scored.len() < want {
        return Ok(exact_scan(stored, &q.scoring, want, &exclusion));
    }
    scored.truncate(want);
    Ok(scored)
}

/// The exact top `want` by scanning every stored item.
pub fn exact_scan(stored: &Matrix, scoring: &[f32], want: usize, exclusion: &Exclusion) -> Vec<(ItemIdx, f32)> {
    let mut top = TopK::new(want);
    for j in 0..stored.rows {
        let j = j as ItemIdx;
        if !exclusion.contains(j) {
            top.push(j, dot(scoring, stored.row(j as usize)));
        }
    }
    top.into_sorted()
}

/// The `k` best items for `q` by brute force, in [`better`] order, none in
/// `exclude`: the plain reference answer approximate indexes are tested
/// against (a full scan and sort per query: for tests and benchmarks).
pub fn exact_top(items: &Matrix, q: &[f32], k: usize, exclude: &[ItemIdx]) -> Vec<(ItemIdx, f32)> {
    let mut all: Vec<(ItemIdx, f32)> = (0..items.rows as ItemIdx)
        .filter(|j| !exclude.contains(j))
        .map(|j| (j, dot(q, items.row(j as usize))))
        .collect();
    all.sort_by(better);
    all.truncate(k);
    all
}

/// The items a search must not return, restricted to the catalog: ids beyond
/// it could never be returned, and repeats count once.
#[derive(Debug, Clone, Default)]
pub struct Exclusion {
    sorted: Vec<ItemIdx>,
}

impl Exclusion {
    pub fn new(exclude: &[ItemIdx], n_items: usize) -> Exclusion {
        let mut sorted: Vec<ItemIdx> = exclude.iter().copied().filter(|&i| (i as usize) < n_items).collect();
        sorted.sort_unstable();
        sorted.dedup();
        Exclusion { sorted }
    }

    /// Distinct catalog items excluded.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    pub fn contains(&self, item: ItemIdx) -> bool {
        self.sorted.binary_search(&item).is_ok()
    }

    /// How many candidates an index must fetch so that `k` remain after the
    /// exclusions, at most the whole catalog.
    pub fn fetch(&self, k: usize, n_items: usize) -> usize {
        k.saturating_add(self.len()).min(n_items)
    }
}

/// Little-endian building blocks of the files indexes save: a writer, a
/// reader that names what is missing, and a checksum for files a third-party
/// loader would otherwise panic on.
pub mod bytes {
    use anyhow::{bail, Result};

    /// Appends values to a byte buffer.
    #[derive(Debug, Default)]
    pub struct Writer {
        pub bytes: Vec<u8>,
    }

    impl Writer {
        pub fn u64(&mut self, x: u64) {
            self.bytes.extend_from_slice(&x.to_le_bytes());
        }

        pub fn f32(&mut self, x: f32) {
            self.bytes.extend_from_slice(&x.to_le_bytes());
        }

        /// A length, then the UTF-8 bytes.
        pub fn str(&mut self, s: &str) {
            self.u64(s.len() as u64);
            self.bytes.extend_from_slice(s.as_bytes());
        }

        pub fn f32s(&mut self, xs: &[f32]) {
            self.bytes.reserve(xs.len() * 4);
            xs.iter().for_each(|x| self.f32(*x));
        }

        pub fn u32s(&mut self, xs: &[u32]) {
            self.bytes.reserve(xs.len() * 4);
            xs.iter().for_each(|x| self.bytes.extend_from_slice(&x.to_le_bytes()));
        }
    }

    /// Reads values back in the order they were written.
    #[derive(Debug)]
    pub struct Reader<'a> {
        bytes: &'a [u8],
        at: usize,
    }

    impl<'a> Reader<'a> {
        pub fn new(bytes: &'a [u8]) -> Reader<'a> {
            Reader { bytes, at: 0 }
        }

        fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
            match self.at.checked_add(n).filter(|&end| end <= self.bytes.len()) {
                Some(end) => {
                    let b = &self.bytes[self.at..end];
                    self.at = end;
                    Ok(b)
                }
                None => bail!(
                    "truncated at byte {}: {what} needs {n} more bytes, {} left",
                    self.at,
                    self.bytes.len() - self.at
                ),
            }
        }

        /// Checks the file starts with `magic`.
        pub fn magic(&mut self, magic: &[u8]) -> Result<()> {
            if self.bytes.get(..magic.len()) != Some(magic) {
                bail!("not a {} file", String::from_utf8_lossy(magic).trim_end_matches(|c: char| !c.is_alphabetic()));
            }
            self.at = magic.len();
            Ok(())
        }

        pub fn u64(&mut self, what: &str) -> Result<u64> {
            Ok(u64::from_le_bytes(self.take(8, what)?.try_into().expect("8 bytes")))
        }

        /// A `u64` that must fit a `usize`.
        pub fn usize(&mut self, what: &str) -> Result<usize> {
            let x = self.u64(what)?;
            usize::try_from(x).map_err(|_| anyhow::anyhow!("{what} = {x} does not fit this machine"))
        }

        pub fn f32(&mut self, what: &str) -> Result<f32> {
            Ok(f32::from_le_bytes(self.take(4, what)?.try_into().expect("4 bytes")))
        }

        pub fn str(&mut self, what: &str) -> Result<String> {
            let n = self.usize(what)?;
            String::from_utf8(self.take(n, what)?.to_vec()).map_err(|_| anyhow::anyhow!("{what} is not UTF-8"))
        }

        pub fn f32s(&mut self, n: usize, what: &str) -> Result<Vec<f32>> {
            let b = self.take(n.saturating_mul(4), what)?;
            Ok(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
        }

        pub fn u32s(&mut self, n: usize, what: &str) -> Result<Vec<u32>> {
            let b = self.take(n.saturating_mul(4), what)?;
            Ok(b.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect())
        }

        /// Fails unless every byte was read.
        pub fn end(&self) -> Result<()> {
            if self.at != self.bytes.len() {
                bail!("{} unexpected bytes after the end at byte {}", self.bytes.len() - self.at, self.at);
            }
            Ok(())
        }
    }

    /// Size and FNV-1a checksum of a file: what an index records of a
    /// third-party dump so that a loader that panics on damage never sees
    /// one.
    pub fn fingerprint(path: &std::path::Path) -> Result<(u64, u64)> {
        use anyhow::Context;
        let file = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
        let len = file.metadata().with_context(|| format!("reading {}", path.display()))?.len();
        let checksum = fnv1a(std::io::BufReader::new(file)).with_context(|| format!("reading {}", path.display()))?;
        Ok((len, checksum))
    }

    /// 64-bit FNV-1a (the `fnv` crate) of a stream, read in 1 MiB blocks.
    pub fn fnv1a(mut reader: impl std::io::Read) -> std::io::Result<u64> {
        use std::hash::Hasher;
        let mut hash = fnv::FnvHasher::default();
        let mut block = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut block)?;
            if n == 0 {
                return Ok(hash.finish());
            }
            hash.write(&block[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
    }

    /// items 0 = (3, 0), 1 = (0, 1), 2 = (1, 1), 3 = (-2, 0): M = 3, so
    /// transformed 0 = (3, 0, 0), 1 = (0, 1, sqrt 8), 2 = (1, 1, sqrt 7), 3 = (-2, 0, sqrt 5).
    fn hand_items() -> Matrix {
        Matrix::from_vec(4, 2, vec![3., 0., 0., 1., 1., 1., -2., 0.])
    }

    #[test]
    fn hand_computed_transform() {
        let space = MipsSpace::fit(Similarity::InnerProduct, &hand_items()).unwrap();
        assert_eq!(space.norm_bound(), 3.0);
        let t = space.transformed_items(&hand_items());
        assert_eq!(t.cols, 3);
        assert_eq!(t.row(0), [3., 0., 0.]);
        assert_eq!(t.row(1), [0., 1., 8f32.sqrt()]);
        assert_eq!(t.row(2), [1., 1., 7f32.sqrt()]);
        assert_eq!(t.row(3), [-2., 0., 5f32.sqrt()]);
        for r in 0..4 {
            assert!((dot(t.row(r), t.row(r)) - 9.0).abs() < 1e-5, "every transformed item has norm M");
        }
        // Query (1, 2): inner products 3, 2, 3, -2; scaled to norm 3 for search.
        let q = space.query(&[1., 2.]).unwrap();
        assert_eq!(q.scoring, [1., 2.]);
        let s = 3.0 / 5f32.sqrt();
        assert!(q.search.iter().zip([s, 2. * s, 0.]).all(|(a, b)| (a - b).abs() < 1e-6), "{:?}", q.search);
        let d: Vec<f32> = (0..4).map(|r| squared_distance(&q.search, t.row(r))).collect();
        // |q|² + M² - 2 s u·v = 18 - 2 s u·v: items 0 and 2 tie, then 1, then 3.
        for (r, ip) in [3., 2., 3., -2.].into_iter().enumerate() {
            assert!((d[r] - (18.0 - 2.0 * s * ip)).abs() < 1e-4, "item {r}: {}", d[r]);
        }
    }

    #[test]
    fn cosine_normalises_items_and_queries() {
        let space = MipsSpace::fit(Similarity::Cosine, &hand_items()).unwrap();
        assert_eq!(space.norm_bound(), 1.0);
        let stored = space.stored_items(&hand_items());
        let h = 0.5f32.sqrt();
        assert_eq!(stored.data, [1., 0., 0., 1., h, h, -1., 0.]);
        let t = space.transformed_items(&hand_items());
        assert!((0..4).all(|r| t.row(r)[2] < 1e-3), "unit vectors need no extra coordinate");
        let q = space.query(&[0., 5.]).unwrap();
        assert_eq!(q.scoring, [0., 1.]);
        // A zero item stays zero (cosine 0) and a zero query stays zero.
        let zeros = Matrix::from_vec(2, 2, vec![0., 0., 2., 0.]);
        let space = MipsSpace::fit(Similarity::Cosine, &zeros).unwrap();
        assert_eq!(space.transformed_items(&zeros).data, [0., 0., 1., 1., 0., 0.]);
        assert_eq!(space.query(&[0., 0.]).unwrap().search, [0., 0., 0.]);
    }

    /// Nearest transformed item order equals inner-product order, on random
    /// items of widely varied norms and random queries of any norm.
    #[test]
    fn euclidean_order_is_inner_product_order_on_random_data() {
        let mut rng = StdRng::seed_from_u64(11);
        let (n, d) = (200, 6);
        let data = (0..n * d).map(|i| rng.gen_range(-1.0..1.0) * (1 + i / d % 7) as f32).collect();
        let items = Matrix::from_vec(n, d, data);
        for similarity in [Similarity::InnerProduct, Similarity::Cosine] {
            let space = MipsSpace::fit(similarity, &items).unwrap();
            let t = space.transformed_items(&items);
            let stored = space.stored_items(&items);
            for _ in 0..20 {
                let scale = rng.gen_range(0.01..100.0);
                let u: Vec<f32> = (0..d).map(|_| rng.gen_range(-1.0..1.0) * scale).collect();
                let q = space.query(&u).unwrap();
                let mut by_score: Vec<usize> = (0..n).collect();
                by_score.sort_by(|&a, &b| dot(&q.scoring, stored.row(b)).total_cmp(&dot(&q.scoring, stored.row(a))));
                let mut by_distance: Vec<usize> = (0..n).collect();
                by_distance.sort_by(|&a, &b| {
                    squared_distance(&q.search, t.row(a)).total_cmp(&squared_distance(&q.search, t.row(b)))
                });
                // Equal up to float rounding: compare the scores in both orders.
                for (a, b) in by_score.iter().zip(&by_distance) {
                    let (sa, sb) = (dot(&q.scoring, stored.row(*a)), dot(&q.scoring, stored.row(*b)));
                    assert!((sa - sb).abs() <= 1e-4 * sa.abs().max(1.0), "{similarity:?}: {sa} vs {sb}");
                }
            }
        }
    }

    #[test]
    fn exclusion_counts_catalog_items_once() {
        let e = Exclusion::new(&[5, 1, 5, 99, 0], 6);
        assert_eq!(e.len(), 3);
        assert!(e.contains(0) && e.contains(1) && e.contains(5) && !e.contains(2) && !e.contains(99));
        assert_eq!(e.fetch(2, 6), 5);
        assert_eq!(e.fetch(10, 6), 6);
        assert_eq!(e.fetch(usize::MAX, 6), 6);
        assert!(Exclusion::new(&[], 6).is_empty());
    }

    #[test]
    fn bytes_round_trip_and_name_what_is_missing() {
        let mut w = bytes::Writer::default();
        w.bytes.extend_from_slice(b"MAGIC");
        w.u64(7);
        w.str("cosine");
        w.f32s(&[1.5, -2.0]);
        w.u32s(&[3, 4]);
        let mut r = bytes::Reader::new(&w.bytes);
        r.magic(b"MAGIC").unwrap();
        assert_eq!(r.usize("count").unwrap(), 7);
        assert_eq!(r.str("metric").unwrap(), "cosine");
        assert_eq!(r.f32s(2, "vectors").unwrap(), [1.5, -2.0]);
        assert_eq!(r.u32s(2, "ids").unwrap(), [3, 4]);
        r.end().unwrap();
        let mut r = bytes::Reader::new(&w.bytes[..w.bytes.len() - 1]);
        r.magic(b"MAGIC").unwrap();
        r.u64("count").unwrap();
        r.str("metric").unwrap();
        r.f32s(2, "vectors").unwrap();
        let e = r.u32s(2, "ids").unwrap_err().to_string();
        assert!(e.contains("ids needs 8 more bytes, 7 left"), "{e}");
        let e = bytes::Reader::new(b"OTHER").magic(b"MAGIC\x01").unwrap_err().to_string();
        assert_eq!(e, "not a MAGIC file");
        let mut r = bytes::Reader::new(&w.bytes);
        r.magic(b"MAGIC").unwrap();
        assert!(r.end().unwrap_err().to_string().contains("unexpected bytes"));
        // Reference values of 64-bit FNV-1a.
        assert_eq!(bytes::fnv1a(&b""[..]).unwrap(), 0xcbf2_9ce4_8422_2325);
        assert_eq!(bytes::fnv1a(&b"a"[..]).unwrap(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let fit = |m: &Matrix| MipsSpace::fit(Similarity::InnerProduct, m).unwrap_err().to_string();
        assert!(fit(&Matrix::zeros(0, 3)).contains("no items"));
        assert!(fit(&Matrix::zeros(2, 0)).contains("0 dimensions"));
        assert!(fit(&Matrix { rows: 2, cols: 2, data: vec![0.; 3] }).contains("holds 3 values"));
        let e = fit(&Matrix::from_vec(2, 2, vec![0., 1., f32::NAN, 0.]));
        assert!(e.contains("item 1 has a non-finite component 0"), "{e}");
        let e = fit(&Matrix::from_vec(1, 2, vec![f32::INFINITY, 0.]));
        assert!(e.contains("item 0 has a non-finite"), "{e}");
        let e = fit(&Matrix::from_vec(1, 2, vec![1e30, 0.]));
        assert!(e.contains("overflows"), "{e}");
        let space = MipsSpace::fit(Similarity::InnerProduct, &hand_items()).unwrap();
        let e = space.query(&[1., 2., 3.]).unwrap_err().to_string();
        assert!(e.contains("3 dimensions") && e.contains("have 2"), "{e}");
        let e = space.query(&[1., f32::NAN]).unwrap_err().to_string();
        assert!(e.contains("component 1 is NaN"), "{e}");
        for tiny_or_huge in [1e-40, 1e-30, 1e30] {
            let q = space.query(&[tiny_or_huge, 0.]).unwrap();
            assert!((q.search[0] - 3.0).abs() < 1e-5, "{tiny_or_huge} scales to the norm bound: {:?}", q.search);
        }
        assert!(MipsSpace::restore(Similarity::Cosine, 0, 1.0).is_err());
        assert!(MipsSpace::restore(Similarity::Cosine, 2, f32::NAN).is_err());
        let e = Similarity::from_name("dot").unwrap_err().to_string();
        assert!(e.contains("\"dot\"") && e.contains("\"inner_product\" or \"cosine\""), "{e}");
        assert_eq!(Similarity::from_name(Similarity::Cosine.name()).unwrap(), Similarity::Cosine);
    }
}
