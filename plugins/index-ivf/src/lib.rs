//! The `ivf_flat` index: an inverted file for maximum-inner-product search.
//!
//! Build: items go through SIMPLE-LSH's transform ([`funnel_mips::MipsSpace`];
//! normalised first for `metric = "cosine"`), k-means (Lloyd's iterations from
//! `n_lists` distinct sampled items, over a seeded sample of `train_sample`
//! items, spread over every core) splits the transformed space into `n_lists`
//! cells, and every item is stored, contiguously per cell, in the list of its
//! nearest centroid. Search: the `n_probe` cells whose centroids are nearest
//! the transformed query are scanned exactly by inner product (more cells when
//! those hold fewer than `k` eligible items), so a result is always the exact
//! top `k` of the items scanned, and probing every cell is exact search.
//!
//! The same seed and items give the same index on any machine: the sample,
//! the initial centroids and empty-cell splits come from the seeded RNG, each
//! item's assignment does not depend on how rows are split over threads, and
//! centroids are summed in item order.

#![forbid(unsafe_code)]

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use funnel_api::{BuildCx, Index, ItemIdx, Matrix, Registry};
use funnel_kernels::par::{IndexedParallelIterator, IntoParallelRefIterator, ParallelIterator};
use funnel_kernels::{dot, TopK};
use funnel_mips::bytes::{Reader, Writer};
use funnel_mips::{Exclusion, MipsSpace, Similarity};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Registers `ivf_flat`.
pub fn register(reg: &mut Registry) {
    reg.index::<IvfFlatParams>(
        "ivf_flat",
        "Inverted file for maximum inner product: k-means cells over SIMPLE-LSH-transformed items, the n_probe \
         nearest cells scanned exactly. Deterministic for a seed; n_probe >= n_lists is exact search.",
        build,
    );
}

fn build(params: IvfFlatParams, cx: &BuildCx) -> Result<Box<dyn Index>> {
    Ok(Box::new(IvfFlatIndex::new(params, cx.seed)?))
}

/// Parameters of `ivf_flat`.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct IvfFlatParams {
    /// "inner_product" (largest dot product) or "cosine" (items and queries normalised).
    #[param(default = Similarity::InnerProduct)]
    pub metric: Similarity,
    /// k-means cells; 0 picks sqrt(items), rounded.
    #[param(default = 0)]
    pub n_lists: usize,
    /// Cells scanned per query, nearest first: higher is slower and more
    /// accurate, n_lists is exact.
    #[param(default = 32)]
    pub n_probe: usize,
    /// Items k-means trains on (all when the catalog is smaller).
    #[param(default = 65_536)]
    pub train_sample: usize,
    /// Lloyd iterations of k-means.
    #[param(default = 10)]
    pub iterations: usize,
    /// Seed of the sample and initial centroids. Unset: `[experiment] seed`.
    pub seed: Option<u64>,
}

/// File `save` writes.
const SAVED: &str = "ivf_flat.bin";
const MAGIC: &[u8] = b"FUNNELIVF\x01";

/// Rows per unit of parallel work; fixed so results never depend on the
/// number of threads.
const CHUNK_ROWS: usize = 1024;

/// An inverted file over an item catalog.
#[derive(Debug, Clone)]
pub struct IvfFlatIndex {
    params: IvfFlatParams,
    seed: u64,
    lists: Option<Lists>,
}

/// Centroids in the transformed space: `dims` head values and one tail
/// (the SIMPLE-LSH coordinate) each.
#[derive(Debug, Clone, PartialEq)]
struct Centroids {
    dims: usize,
    heads: Vec<f32>,
    tails: Vec<f32>,
    /// `|c|²`, head and tail.
    sq_norms: Vec<f32>,
}

#[derive(Debug, Clone)]
struct Lists {
    space: MipsSpace,
    centroids: Centroids,
    /// List `l` holds positions `offsets[l]..offsets[l + 1]`.
    offsets: Vec<u32>,
    /// Item at each position.
    ids: Vec<ItemIdx>,
    /// Stored vector at each position, row-major (`dims` each).
    vectors: Vec<f32>,
}

impl IvfFlatIndex {
    /// An unbuilt index; `seed` is used unless the parameters set one.
    pub fn new(params: IvfFlatParams, seed: u64) -> Result<IvfFlatIndex> {
        for (key, value) in [("n_probe", params.n_probe), ("train_sample", params.train_sample)] {
            if value == 0 {
                bail!("`{key}` = 0: expected at least 1");
            }
        }
        if params.n_lists > ItemIdx::MAX as usize {
            bail!("`n_lists` = {}: expected at most {}", params.n_lists, ItemIdx::MAX);
        }
        Ok(IvfFlatIndex { seed: params.seed.unwrap_or(seed), params, lists: None })
    }

    /// Number of cells, or `None` before `build`.
    pub fn n_lists(&self) -> Option<usize> {
        self.lists.as_ref().map(|l| l.centroids.len())
    }

    fn lists(&self) -> Result<&Lists> {
        self.lists.as_ref().ok_or_else(|| anyhow!("ivf_flat index searched before it was built"))
    }
}

impl Centroids {
    fn new(dims: usize, heads: Vec<f32>, tails: Vec<f32>) -> Centroids {
        let sq_norms = heads.chunks_exact(dims).zip(&tails).map(|(h, t)| dot(h, h) + t * t).collect();
        Centroids { dims, heads, tails, sq_norms }
    }

    fn len(&self) -> usize {
        self.tails.len()
    }

    fn head(&self, c: usize) -> &[f32] {
        &self.heads[c * self.dims..(c + 1) * self.dims]
    }

    /// `|x - c|² - |x|²` for the transformed point `x = [head, tail]`: the
    /// part of the squared distance that orders centroids.
    fn distance(&self, c: usize, head: &[f32], tail: f32) -> f32 {
        self.sq_norms[c] - 2.0 * (dot(head, self.head(c)) + tail * self.tails[c])
    }

    /// The nearest centroid, ties to the lower index.
    fn nearest(&self, head: &[f32], tail: f32) -> u32 {
        let mut best = (f32::INFINITY, 0);
        for c in 0..self.len() {
            let d = self.distance(c, head, tail);
            if d < best.0 {
                best = (d, c);
            }
        }
        best.1 as u32
    }

    /// The nearest centroid of each of `rows`, computed on every core.
    fn assign(&self, stored: &Matrix, tails: &[f32], rows: &[usize]) -> Vec<u32> {
        rows.par_iter().with_min_len(CHUNK_ROWS).map(|&r| self.nearest(stored.row(r), tails[r])).collect()
    }
}

/// The cells an index with `n_lists` builds over `n_items`. `n_lists = 0`:
/// about sqrt(n) cells of about sqrt(n) items each, which balances scanning
/// centroids against scanning lists.
pub fn resolve_n_lists(n_lists: usize, n_items: usize) -> usize {
    let n = if n_lists == 0 { (n_items as f64).sqrt().round() as usize } else { n_lists };
    n.clamp(1, n_items)
}

/// Lloyd's k-means over the transformed `rows` of `(stored, tails)`.
fn kmeans(stored: &Matrix, tails: &[f32], rows: &[usize], k: usize, iterations: usize, rng: &mut StdRng) -> Centroids {
    let dims = stored.cols;
    let first: Vec<usize> = rand::seq::index::sample(rng, rows.len(), k).into_iter().map(|i| rows[i]).collect();
    let mut centroids = Centroids::new(
        dims,
        first.iter().flat_map(|&r| stored.row(r).iter().copied()).collect(),
        first.iter().map(|&r| tails[r]).collect(),
    );
    for _ in 0..iterations {
        let assigned = centroids.assign(stored, tails, rows);
        let mut head_sums = vec![0f64; k * dims];
        let mut tail_sums = vec![0f64; k];
        let mut counts = vec![0usize; k];
        for (&r, &c) in rows.iter().zip(&assigned) {
            let c = c as usize;
            counts[c] += 1;
            tail_sums[c] += f64::from(tails[r]);
            for (sum, &x) in head_sums[c * dims..(c + 1) * dims].iter_mut().zip(stored.row(r)) {
                *sum += f64::from(x);
            }
        }
        let mut heads = centroids.heads.clone();
        let mut new_tails = centroids.tails.clone();
        for c in (0..k).filter(|&c| counts[c] > 0) {
            let n = counts[c] as f64;
            for (h, sum) in heads[c * dims..(c + 1) * dims].iter_mut().zip(&head_sums[c * dims..]) {
                *h = (sum / n) as f32;
            }
            new_tails[c] = (tail_sums[c] / n) as f32;
        }
        split_empty(&mut heads, &mut new_tails, &mut counts, dims, rng);
        centroids = Centroids::new(dims, heads, new_tails);
    }
    centroids
}

/// Gives every empty cell half of a populated one (picked with probability
/// proportional to its size): the two centroids become the populated one
/// nudged apart, as Faiss does.
fn split_empty(heads: &mut [f32], tails: &mut [f32], counts: &mut [usize], dims: usize, rng: &mut StdRng) {
    const NUDGE: f32 = 1.0 / 1024.0;
    let total: usize = counts.iter().sum();
    for empty in 0..counts.len() {
        if counts[empty] > 0 || total == 0 {
            continue;
        }
        let mut pick = rng.gen_range(0..total);
        let mut donor = 0;
        while pick >= counts[donor] {
            pick -= counts[donor];
            donor += 1;
        }
        for j in 0..dims {
            let sign = if j % 2 == 0 { 1.0 } else { -1.0 };
            let x = heads[donor * dims + j];
            heads[empty * dims + j] = x * (1.0 + sign * NUDGE);
            heads[donor * dims + j] = x * (1.0 - sign * NUDGE);
        }
        tails[empty] = tails[donor] * (1.0 + NUDGE);
        tails[donor] *= 1.0 - NUDGE;
        counts[empty] = counts[donor] / 2;
        counts[donor] -= counts[empty];
    }
}

/// Probe order: nearest centroid first, ties to the lower cell.
fn nearer(a: &(f32, u32), b: &(f32, u32)) -> Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

impl Lists {
    fn n_items(&self) -> usize {
        self.ids.len()
    }

    fn dims(&self) -> usize {
        self.centroids.dims
    }

    /// Scans cell `l`, skipping excluded items; returns how many it scored.
    fn scan(&self, l: usize, scoring: &[f32], exclusion: &Exclusion, top: &mut TopK) -> usize {
        let dims = self.dims();
        let (start, end) = (self.offsets[l] as usize, self.offsets[l + 1] as usize);
        let mut scored = 0;
        for pos in start..end {
            let id = self.ids[pos];
            if !exclusion.is_empty() && exclusion.contains(id) {
                continue;
            }
            top.push(id, dot(scoring, &self.vectors[pos * dims..(pos + 1) * dims]));
            scored += 1;
        }
        scored
    }
}

impl Index for IvfFlatIndex {
    fn build(&mut self, items: &Matrix) -> Result<()> {
        self.lists = None;
        let space = MipsSpace::fit(self.params.metric, items).context("building ivf_flat")?;
        let n = items.rows;
        let stored = space.stored_items(items);
        let tails: Vec<f32> = (0..n).map(|r| space.extra(stored.row(r))).collect();
        let k = resolve_n_lists(self.params.n_lists, n);
        let mut rng = StdRng::seed_from_u64(self.seed);
        let mut sample: Vec<usize> = if n > self.params.train_sample {
            rand::seq::index::sample(&mut rng, n, self.params.train_sample).into_vec()
        } else {
            (0..n).collect()
        };
        // Item order: memory-friendly, and the centroid sums' order is fixed.
        sample.sort_unstable();
        let centroids = kmeans(&stored, &tails, &sample, k, self.params.iterations, &mut rng);
        let all: Vec<usize> = (0..n).collect();
        let cell = centroids.assign(&stored, &tails, &all);

        // Counting sort by cell, items in index order within each.
        let mut offsets = vec![0u32; k + 1];
        for &c in &cell {
            offsets[c as usize + 1] += 1;
        }
        for l in 0..k {
            offsets[l + 1] += offsets[l];
        }
        let mut next: Vec<u32> = offsets[..k].to_vec();
        let mut ids = vec![0; n];
        let mut vectors = vec![0f32; n * items.cols];
        for (item, &c) in cell.iter().enumerate() {
            let pos = next[c as usize] as usize;
            next[c as usize] += 1;
            ids[pos] = item as ItemIdx;
            vectors[pos * items.cols..(pos + 1) * items.cols].copy_from_slice(stored.row(item));
        }
        self.lists = Some(Lists { space, centroids, offsets, ids, vectors });
        Ok(())
    }

    /// The `k` best items of the probed cells by true score (inner product,
    /// or cosine with `metric = "cosine"`), best first, ties to the lower item
    /// index; fewer only when fewer are eligible. Excluded ids outside the
    /// catalog are ignored.
    fn search(&self, query: &[f32], k: usize, exclude: &[ItemIdx]) -> Result<Vec<(ItemIdx, f32)>> {
        let lists = self.lists()?;
        let q = lists.space.query(query)?;
        let exclusion = Exclusion::new(exclude, lists.n_items());
        let want = k.min(lists.n_items() - exclusion.len());
        if want == 0 {
            return Ok(Vec::new());
        }
        // The query's tail is 0: its distance to a centroid needs only heads.
        let head = &q.search[..lists.dims()];
        let centroids = &lists.centroids;
        let mut order: Vec<(f32, u32)> =
            (0..centroids.len()).map(|c| (centroids.distance(c, head, 0.0), c as u32)).collect();
        let probe = self.params.n_probe.min(order.len());
        if probe < order.len() {
            order.select_nth_unstable_by(probe - 1, nearer);
        }
        order[..probe].sort_unstable_by(nearer);
        let mut top = TopK::new(want);
        let mut scored = 0;
        for &(_, l) in &order[..probe] {
            scored += lists.scan(l as usize, &q.scoring, &exclusion, &mut top);
        }
        if scored < want {
            // Too many of the probed items excluded: go on, nearest first.
            order[probe..].sort_unstable_by(nearer);
            for &(_, l) in &order[probe..] {
                scored += lists.scan(l as usize, &q.scoring, &exclusion, &mut top);
                if scored >= want {
                    break;
                }
            }
        }
        Ok(top.into_sorted())
    }

    /// True when every cell is probed.
    fn is_exact(&self) -> bool {
        self.n_lists().is_some_and(|n| self.params.n_probe >= n)
    }

    fn size_bytes(&self) -> usize {
        self.lists.as_ref().map_or(0, |l| {
            4 * (l.centroids.heads.len()
                + l.centroids.tails.len()
                + l.centroids.sq_norms.len()
                + l.offsets.len()
                + l.ids.len()
                + l.vectors.len())
        })
    }

    /// One file, little-endian: the metric, item count, dimensions, cell
    /// count and norm bound, then centroid heads and tails (f32), list
    /// offsets and item ids (u32), and the stored vectors in list order (f32).
    fn save(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let lists = self.lists.as_ref().ok_or_else(|| anyhow!("ivf_flat index saved before it was built"))?;
        let mut w = Writer::default();
        w.bytes.extend_from_slice(MAGIC);
        w.str(lists.space.similarity().name());
        w.u64(lists.n_items() as u64);
        w.u64(lists.dims() as u64);
        w.u64(lists.centroids.len() as u64);
        w.f32(lists.space.norm_bound());
        w.f32s(&lists.centroids.heads);
        w.f32s(&lists.centroids.tails);
        w.u32s(&lists.offsets);
        w.u32s(&lists.ids);
        w.f32s(&lists.vectors);
        let path = dir.join(SAVED);
        std::fs::write(&path, w.bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(vec![path])
    }

    /// Restores what `save` wrote; `n_probe` is this index's own, so a saved
    /// index can be searched at any depth.
    fn load(&mut self, dir: &Path) -> Result<()> {
        self.lists = None;
        let path = dir.join(SAVED);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let lists = parse(&bytes, self.params.metric).with_context(|| format!("loading {}", path.display()))?;
        self.lists = Some(lists);
        Ok(())
    }
}

fn parse(bytes: &[u8], metric: Similarity) -> Result<Lists> {
    let mut r = Reader::new(bytes);
    r.magic(MAGIC)?;
    let saved_metric = Similarity::from_name(&r.str("metric")?)?;
    if saved_metric != metric {
        bail!("saved with metric {:?}, but this index has metric {:?}", saved_metric.name(), metric.name());
    }
    let n = r.usize("item count")?;
    let dims = r.usize("dimensions")?;
    let k = r.usize("cell count")?;
    let norm_bound = r.f32("norm bound")?;
    let space = MipsSpace::restore(metric, dims, norm_bound)?;
    let heads = r.f32s(k.saturating_mul(dims), "centroid heads")?;
    let tails = r.f32s(k, "centroid tails")?;
    let offsets = r.u32s(k.saturating_add(1), "list offsets")?;
    let ids = r.u32s(n, "item ids")?;
    let vectors = r.f32s(n.saturating_mul(dims), "item vectors")?;
    r.end()?;
    if offsets.first() != Some(&0) || offsets.last() != Some(&(n as u32)) || offsets.windows(2).any(|w| w[0] > w[1]) {
        bail!("list offsets do not partition {n} items");
    }
    let mut seen = vec![false; n];
    for &id in &ids {
        match seen.get_mut(id as usize) {
            Some(s) if !*s => *s = true,
            _ => bail!("item id {id} is out of range or listed twice"),
        }
    }
    if heads.iter().chain(&tails).chain(&vectors).any(|x| !x.is_finite()) {
        bail!("non-finite values in centroids or vectors");
    }
    Ok(Lists { space, centroids: Centroids::new(dims, heads, tails), offsets, ids, vectors })
}

#[cfg(test)]
mod tests {
    use funnel_api::{parse_params, ComponentKind};
    use funnel_kernels::better;
    use funnel_mips::exact_top;

    use super::*;

    fn params(n_lists: usize, n_probe: usize) -> IvfFlatParams {
        IvfFlatParams { n_lists, n_probe, ..IvfFlatParams::default() }
    }

    fn built(p: IvfFlatParams, items: &Matrix) -> IvfFlatIndex {
        let mut index = IvfFlatIndex::new(p, 1).unwrap();
        index.build(items).unwrap();
        index
    }

    /// items: 0 = (1, 0), 1 = (0, 1), 2 = (1, 1), 3 = (2, 0), 4 = (-1, 0), 5 = (1, 1)
    /// query (1, 2) scores: 0 -> 1, 1 -> 2, 2 -> 3, 3 -> 2, 4 -> -1, 5 -> 3
    /// so the full order is 2, 5 (tied at 3), 1, 3 (tied at 2), 0, 4.
    fn hand_items() -> Matrix {
        Matrix::from_vec(6, 2, vec![1., 0., 0., 1., 1., 1., 2., 0., -1., 0., 1., 1.])
    }

    const QUERY: [f32; 2] = [1., 2.];

    #[test]
    fn hand_computed_top_k_at_any_probe_depth() {
        // One probe at a time still fills k from the next cells.
        for (n_lists, n_probe) in [(1, 1), (3, 1), (3, 3), (6, 1), (6, 6)] {
            let index = built(params(n_lists, n_probe), &hand_items());
            let at = format!("{n_lists} lists, {n_probe} probes");
            assert_eq!(index.n_lists(), Some(n_lists));
            assert_eq!(
                index.search(&QUERY, 6, &[]).unwrap(),
                [(2, 3.), (5, 3.), (1, 2.), (3, 2.), (0, 1.), (4, -1.)],
                "{at}"
            );
            assert_eq!(index.search(&QUERY, 10, &[5, 0, 99]).unwrap(), [(2, 3.), (1, 2.), (3, 2.), (4, -1.)], "{at}");
            assert_eq!(index.search(&QUERY, 3, &[0, 1, 2, 3, 4, 5]).unwrap(), [], "{at}");
            assert_eq!(index.search(&QUERY, 0, &[]).unwrap(), [], "{at}");
        }
        // Every probe: exact, ties to the lower index like the exact index.
        let index = built(params(3, 3), &hand_items());
        assert!(index.is_exact());
        assert_eq!(index.search(&QUERY, 3, &[]).unwrap(), [(2, 3.), (5, 3.), (1, 2.)]);
        assert_eq!(index.search(&QUERY, 3, &[2]).unwrap(), [(5, 3.), (1, 2.), (3, 2.)]);
        assert!(!built(params(3, 2), &hand_items()).is_exact());
    }

    #[test]
    fn cosine_ranks_by_angle() {
        let p = IvfFlatParams { metric: Similarity::Cosine, ..params(2, 2) };
        let got = built(p, &hand_items()).search(&QUERY, 6, &[]).unwrap();
        let order: Vec<ItemIdx> = got.iter().map(|p| p.0).collect();
        // Cosines with (1, 2)/sqrt 5: items 0 and 3 tie at 1/sqrt 5.
        assert_eq!(order, [2, 5, 1, 0, 3, 4]);
        assert!((got[0].1 - 3.0 / 10f32.sqrt()).abs() < 1e-6);
    }

    /// Gaussian-like clusters of varied size and norm, and queries near
    /// cluster centres: the shape the index is tuned for.
    fn clustered(seed: u64, n: usize, d: usize, n_clusters: usize) -> (Matrix, Matrix) {
        let mut rng = StdRng::seed_from_u64(seed);
        let centres: Vec<Vec<f32>> =
            (0..n_clusters).map(|_| (0..d).map(|_| rng.gen_range(-1.0..1.0)).collect()).collect();
        let mut data = Vec::with_capacity(n * d);
        for i in 0..n {
            // Cluster c holds a share proportional to c + 1; norms vary 0.3x to 3x.
            let t = (i * 7919) % (n_clusters * (n_clusters + 1) / 2);
            let c = (0..n_clusters).find(|&j| (j + 1) * (j + 2) / 2 > t).unwrap();
            let scale = 0.3 + 2.7 * (c as f32 / n_clusters as f32);
            data.extend(centres[c].iter().map(|x| (x + rng.gen_range(-0.25..0.25)) * scale));
        }
        let queries = (0..50 * d).map(|j| centres[j / d % n_clusters][j % d] + rng.gen_range(-0.5..0.5)).collect();
        (Matrix::from_vec(n, d, data), Matrix::from_vec(50, d, queries))
    }

    #[test]
    fn every_probe_equals_exact_on_random_data() {
        let (items, queries) = clustered(5, 2000, 8, 12);
        let index = built(params(40, 40), &items);
        for r in 0..queries.rows {
            let exclude: Vec<ItemIdx> = (0..r as ItemIdx * 3).map(|j| j * 17 % 2000).collect();
            for k in [1, 10, 100] {
                assert_eq!(
                    index.search(queries.row(r), k, &exclude).unwrap(),
                    exact_top(&items, queries.row(r), k, &exclude)
                );
            }
        }
    }

    #[test]
    fn high_recall_on_clustered_data() {
        let (items, queries) = clustered(6, 5000, 16, 20);
        let k = 50;
        let index = built(params(70, 12), &items);
        let mut hits = 0;
        for r in 0..queries.rows {
            let got = index.search(queries.row(r), k, &[]).unwrap();
            let exact = exact_top(&items, queries.row(r), k, &[]);
            assert!(got.windows(2).all(|w| better(&w[0], &w[1]).is_lt()), "best first");
            hits += got.iter().filter(|p| exact.contains(p)).count();
        }
        let recall = hits as f64 / (queries.rows * k) as f64;
        assert!(recall >= 0.95, "recall@{k} {recall}");
    }

    #[test]
    fn deterministic_for_a_seed() {
        let (items, queries) = clustered(8, 3000, 8, 10);
        let p = IvfFlatParams { train_sample: 1000, ..params(30, 3) };
        let a = built(p.clone(), &items);
        let b = built(p.clone(), &items);
        assert_eq!(a.lists.as_ref().unwrap().centroids, b.lists.as_ref().unwrap().centroids);
        assert_eq!(a.lists.as_ref().unwrap().ids, b.lists.as_ref().unwrap().ids);
        let mut other = IvfFlatIndex::new(IvfFlatParams { seed: Some(99), ..p }, 1).unwrap();
        other.build(&items).unwrap();
        assert_ne!(a.lists.as_ref().unwrap().centroids, other.lists.as_ref().unwrap().centroids);
        for r in 0..queries.rows {
            assert_eq!(a.search(queries.row(r), 20, &[]).unwrap(), b.search(queries.row(r), 20, &[]).unwrap());
        }
    }

    #[test]
    fn duplicate_items_leave_empty_cells_harmless() {
        // Fewer distinct vectors than cells: k-means splits keep cells apart,
        // some stay empty, and search still fills k.
        let items = Matrix::from_vec(40, 2, (0..80).map(|j| [1., 0., 0., 1.][j % 4]).collect());
        let index = built(params(8, 1), &items);
        let got = index.search(&[1., 0.], 30, &[]).unwrap();
        assert_eq!(got.len(), 30);
        assert_eq!(got[..20], (0..20).map(|i| (2 * i, 1.)).collect::<Vec<_>>()[..]);
    }

    #[test]
    fn save_and_load_round_trip() {
        let (items, queries) = clustered(9, 500, 4, 5);
        let index = built(params(10, 2), &items);
        let dir = tempfile::tempdir().unwrap();
        let files = index.save(dir.path()).unwrap();
        assert_eq!(files, [dir.path().join(SAVED)]);
        // Loaded with a deeper probe: the same cells, searched further.
        let mut loaded = IvfFlatIndex::new(params(0, 10), 7).unwrap();
        loaded.load(dir.path()).unwrap();
        assert_eq!(loaded.size_bytes(), index.size_bytes());
        assert!(loaded.is_exact());
        let mut same_depth = IvfFlatIndex::new(params(0, 2), 7).unwrap();
        same_depth.load(dir.path()).unwrap();
        for r in 0..queries.rows {
            assert_eq!(
                same_depth.search(queries.row(r), 10, &[3]).unwrap(),
                index.search(queries.row(r), 10, &[3]).unwrap()
            );
            assert_eq!(loaded.search(queries.row(r), 10, &[]).unwrap(), exact_top(&items, queries.row(r), 10, &[]));
        }

        let path = dir.path().join(SAVED);
        let bytes = std::fs::read(&path).unwrap();
        let mut cosine = IvfFlatIndex::new(IvfFlatParams { metric: Similarity::Cosine, ..params(0, 2) }, 1).unwrap();
        let e = format!("{:#}", cosine.load(dir.path()).unwrap_err());
        assert!(e.contains("metric \"inner_product\"") && e.contains("metric \"cosine\""), "{e}");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let e = format!("{:#}", loaded.load(dir.path()).unwrap_err());
        assert!(e.contains("item vectors needs"), "{e}");
        assert!(loaded.search(queries.row(0), 1, &[]).is_err(), "a failed load leaves no index");
        let mut bad_ids = bytes.clone();
        let ids_at = bytes.len() - 500 * 4 * 4 - 500 * 4;
        bad_ids[ids_at..ids_at + 4].copy_from_slice(&7u32.to_le_bytes());
        bad_ids[ids_at + 4..ids_at + 8].copy_from_slice(&7u32.to_le_bytes());
        std::fs::write(&path, &bad_ids).unwrap();
        let e = format!("{:#}", loaded.load(dir.path()).unwrap_err());
        assert!(e.contains("listed twice"), "{e}");
        std::fs::write(&path, b"something else").unwrap();
        let e = format!("{:#}", loaded.load(dir.path()).unwrap_err());
        assert!(e.contains("not a FUNNELIVF file"), "{e}");
        let e = format!("{:#}", loaded.load(&dir.path().join("missing")).unwrap_err());
        assert!(e.contains("reading") && e.contains("missing"), "{e}");
    }

    #[test]
    fn errors() {
        let mut index = IvfFlatIndex::new(params(4, 2), 1).unwrap();
        let e = index.search(&QUERY, 1, &[]).unwrap_err().to_string();
        assert_eq!(e, "ivf_flat index searched before it was built");
        assert!(index.save(Path::new(".")).unwrap_err().to_string().contains("saved before it was built"));
        let e = format!("{:#}", index.build(&Matrix::zeros(0, 2)).unwrap_err());
        assert!(e.contains("ivf_flat") && e.contains("no items"), "{e}");
        let e = format!("{:#}", index.build(&Matrix::from_vec(2, 2, vec![0., 1., f32::NAN, 0.])).unwrap_err());
        assert!(e.contains("item 1 has a non-finite"), "{e}");
        index.build(&hand_items()).unwrap();
        assert_eq!(index.n_lists(), Some(4));
        let e = index.search(&[1., 2., 3.], 1, &[]).unwrap_err().to_string();
        assert!(e.contains("3 dimensions") && e.contains("have 2"), "{e}");
        assert!(index.search(&[f32::NAN, 0.], 1, &[]).unwrap_err().to_string().contains("component 0 is NaN"));
        assert!(index.build(&Matrix::zeros(1, 0)).is_err());
        assert_eq!(index.n_lists(), None, "a failed build leaves no index");
        // More lists than items: one item per list.
        let index = built(params(100, 1), &hand_items());
        assert_eq!(index.n_lists(), Some(6));
        assert_eq!(resolve_n_lists(0, 1_000_000), 1000);
        assert_eq!(resolve_n_lists(0, 1), 1);
    }

    #[test]
    fn registered_and_built_from_toml() {
        let mut reg = Registry::new();
        register(&mut reg);
        let info = reg.info(ComponentKind::Index, "ivf_flat").unwrap();
        let keys: Vec<&str> = info.params.iter().map(|p| p.0.as_str()).collect();
        assert_eq!(keys, ["metric", "n_lists", "n_probe", "train_sample", "iterations", "seed"]);
        let cx = BuildCx { seed: 3, ..BuildCx::default() };
        let table: toml::Table = "n_lists = 2\nn_probe = 2".parse().unwrap();
        let mut index = reg.build_index("ivf_flat", table, &cx).unwrap();
        index.build(&hand_items()).unwrap();
        assert!(index.is_exact());
        assert_eq!(index.search(&QUERY, 2, &[]).unwrap(), [(2, 3.), (5, 3.)]);
        assert_eq!(index.size_bytes(), 4 * (2 * 2 + 2 + 2 + 3 + 6 + 12));
        let e = reg.build_index("ivf_flat", "n_probe = 0".parse().unwrap(), &cx).err().unwrap().to_string();
        assert_eq!(e, "`n_probe` = 0: expected at least 1");
        let e = parse_params::<IvfFlatParams>("nprobe = 3".parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("`nprobe`"), "{e}");
        let p: IvfFlatParams = parse_params("seed = 5".parse().unwrap()).unwrap();
        assert_eq!(IvfFlatIndex::new(p, 3).unwrap().seed, 5);
        assert_eq!(IvfFlatIndex::new(IvfFlatParams::default(), 3).unwrap().seed, 3);
    }
}
