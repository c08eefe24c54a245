//! An embedding table kept outside dfdx's graph: rows are gathered for a
//! batch, and gradients of gathered rows are accumulated sparsely.

use std::marker::PhantomData;

use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::adam::{Adam, RowStep};
use crate::EmbeddingOptimizer;
use funnel_kernels::par;

pub struct EmbeddingTable {
    pub dim: usize,
    n_rows: usize,
    /// Each row's weights, then its first and second Adam moments, side by
    /// side: `[w | m | v]`, `3 * dim` floats a row. A lazy Adam step reads
    /// and writes all three for every touched row, and on a catalog beyond
    /// the caches each row is a DRAM miss: one contiguous block costs
    /// less than three blocks in three separate arrays.
    blocks: Vec<f32>,
    /// This step's gradient rows, compactly: `slot_of[r]` is row `r`'s
    /// slot in `grads` (`UNTOUCHED` when it has none), slots in the order
    /// rows were first touched. Dense gradients of a 1M-row table would add
    /// a fourth random memory stream to every touched row.
    grads: Vec<f32>,
    slot_of: Vec<u32>,
    /// Rows with a gradient this step, in slot order.
    touched: Vec<u32>,
    /// A step whose update was deferred ([`EmbeddingTable::defer`]): its
    /// gradient stays in `grads` until [`EmbeddingTable::settle`].
    pending: Option<(RowStep, EmbeddingOptimizer)>,
}

const UNTOUCHED: u32 = u32::MAX;

/// Rows ahead whose memory is requested while the current row is processed.
pub const PREFETCH_AHEAD: usize = 4;

/// Below this many bytes of blocks a table stays in the caches and its rows
/// are visited on one thread; above it each visit waits on memory, and
/// splitting the rows over two threads doubles the misses in flight.
const PARALLEL_BYTES: usize = 32 << 20;
/// Fewer row visits than this are not worth handing half to a second thread.
const PARALLEL_ROWS: usize = 2048;

/// Hints the CPU to load `data`'s cache lines (a no-op off x86-64).
#[inline]
pub fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(16) {
        // SAFETY: prefetching is a hint; the address is inside `data`.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.as_ptr().cast()) };
    }
}

impl EmbeddingTable {
    pub fn normal(rows: usize, dim: usize, std: f32, rng: &mut impl Rng) -> EmbeddingTable {
        let normal = Normal::new(0.0, std).expect("std is checked positive when the model is built");
        let mut blocks = huge_pages(rows * 3 * dim);
        for _ in 0..rows {
            blocks.extend((0..dim).map(|_| normal.sample(rng)));
            blocks.extend(std::iter::repeat_n(0.0, 2 * dim));
        }
        // Row visits look their row's slot up at random too.
        let mut slot_of = huge_pages(rows);
        slot_of.resize(rows, UNTOUCHED);
        EmbeddingTable { dim, n_rows: rows, blocks, grads: Vec::new(), slot_of, touched: Vec::new(), pending: None }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.n_rows
    }

    fn block(&self, r: usize) -> &[f32] {
        &self.blocks[r * 3 * self.dim..(r + 1) * 3 * self.dim]
    }

    pub fn row(&self, r: u32) -> &[f32] {
        debug_assert!(self.pending.is_none(), "a table's rows are read after its deferred step is settled");
        &self.block(r as usize)[..self.dim]
    }

    /// Part `k` (0 weights, 1 first moment, 2 second moment) of every row,
    /// row-major, with a deferred step's update included.
    fn part(&self, k: usize) -> Vec<f32> {
        let d = self.dim;
        let settled;
        let blocks = match &self.pending {
            None => &self.blocks,
            Some((step, how)) => {
                let mut copy = self.blocks.clone();
                self.update_rows(&mut copy, step, *how);
                settled = copy;
                &settled
            }
        };
        blocks.chunks_exact(3 * d).flat_map(|b| &b[k * d..(k + 1) * d]).copied().collect()
    }

    /// Replaces part `k` of every row; a deferred step is dropped with its gradient.
    fn set_part(&mut self, k: usize, values: &[f32]) {
        let d = self.dim;
        assert_eq!(values.len(), self.n_rows * d, "checked by the caller");
        if self.pending.take().is_some() {
            self.clear_gradient();
        }
        for (b, src) in self.blocks.chunks_exact_mut(3 * d).zip(values.chunks_exact(d)) {
            b[k * d..(k + 1) * d].copy_from_slice(src);
        }
    }

    /// Every row's weights, row-major `[rows, dim]`.
    pub fn weights(&self) -> Vec<f32> {
        self.part(0)
    }

    pub fn set_weights(&mut self, w: &[f32]) {
        self.set_part(0, w);
    }

    /// First and second Adam moments, each `[rows, dim]`.
    pub fn moments(&self) -> (Vec<f32>, Vec<f32>) {
        (self.part(1), self.part(2))
    }

    pub fn set_moments(&mut self, m: &[f32], v: &[f32]) {
        self.set_part(1, m);
        self.set_part(2, v);
    }

    /// Appends row `r` to `out`.
    pub fn gather_into(&self, r: u32, out: &mut Vec<f32>) {
        out.extend_from_slice(self.row(r));
    }

    /// Hints the CPU to load where row `r`'s gradient slot is looked up.
    pub fn prefetch_slot(&self, r: u32) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is a hint; the address is inside `slot_of`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                (&self.slot_of[r as usize] as *const u32).cast(),
            );
        };
    }

    /// Adds `scale * g` to the gradient of row `r`.
    pub fn accumulate(&mut self, r: u32, g: &[f32], scale: f32) {
        debug_assert!(self.pending.is_none(), "a deferred step is settled before the next gradient");
        let d = self.dim;
        let slot = &mut self.slot_of[r as usize];
        if *slot == UNTOUCHED {
            *slot = self.touched.len() as u32;
            self.touched.push(r);
            self.grads.resize(self.touched.len() * d, 0.0);
        }
        let at = *slot as usize * d;
        for (acc, &x) in self.grads[at..at + d].iter_mut().zip(g) {
            *acc += scale * x;
        }
    }

    /// This step's gradient of every row, densely.
    #[cfg(test)]
    pub fn gradient(&self) -> Vec<f32> {
        let d = self.dim;
        let mut dense = vec![0.0; self.n_rows * d];
        for (slot, &r) in self.touched.iter().enumerate() {
            dense[r as usize * d..(r as usize + 1) * d].copy_from_slice(&self.grads[slot * d..(slot + 1) * d]);
        }
        dense
    }

    /// Sum of squared gradient entries (only touched rows are non-zero).
    pub fn gradient_sq_norm(&self) -> f64 {
        funnel_kernels::sum_of_squares(&self.grads)
    }

    /// Whether `rows` scattered row visits are worth splitting over two
    /// threads: the table is beyond the caches, so each visit waits on
    /// memory, and there are enough of them to pay for a second thread.
    pub fn worth_two_threads(&self, rows: usize) -> bool {
        self.blocks.len() * std::mem::size_of::<f32>() >= PARALLEL_BYTES && rows >= PARALLEL_ROWS
    }

    /// Applies and clears this step's gradient.
    pub fn apply(&mut self, adam: &Adam, how: EmbeddingOptimizer) {
        let parallel = match how {
            // Every row is computed (a square root and a division per
            // weight), in the caches or not: enough rows pay for a second thread.
            EmbeddingOptimizer::Adam => self.n_rows >= PARALLEL_ROWS,
            EmbeddingOptimizer::LazyAdam => self.worth_two_threads(self.touched.len()),
        };
        self.apply_with(adam, how, parallel);
    }

    /// Keeps this step's update pending instead of applying it: the rows,
    /// moments and gradient stay as they are until [`EmbeddingTable::settle`],
    /// which the caller runs before the table's rows are read or a new
    /// gradient is accumulated. `weights` and `moments` include the pending
    /// update meanwhile.
    pub fn defer(&mut self, adam: &Adam, how: EmbeddingOptimizer) {
        assert!(self.pending.is_none(), "a deferred step is settled before the next one");
        self.pending = Some((adam.row_step(), how));
    }

    /// Whether no deferred step waits.
    pub fn is_settled(&self) -> bool {
        self.pending.is_none()
    }

    /// Applies and clears a deferred step's gradient (nothing without one).
    /// Its rows go in chunks to whichever pool thread is free, so a thread
    /// busy with other work leaves them to the next one; each row sees the
    /// same operations as in [`EmbeddingTable::apply`], so the same bits.
    pub fn settle(&mut self) {
        use funnel_kernels::par::{IndexedParallelIterator, ParallelIterator, ParallelSlice, ParallelSliceMut};
        /// Rows a chunk: enough to pay for a task, few enough to balance.
        const CHUNK: usize = 64;
        let Some((step, how)) = self.pending.take() else { return };
        let d = self.dim;
        match how {
            EmbeddingOptimizer::Adam => {
                let grads = &self.grads[..];
                self.blocks
                    .par_chunks_mut(CHUNK * 3 * d)
                    .zip(self.slot_of.par_chunks(CHUNK))
                    .for_each(|(blocks, slots)| dense_rows(&step, d, grads, blocks, slots));
            }
            EmbeddingOptimizer::LazyAdam => {
                let rows = TouchedRows::new(&mut self.blocks, d);
                let (touched, grads) = (&self.touched[..], &self.grads[..]);
                let n = touched.len();
                funnel_kernels::par::IntoParallelIterator::into_par_iter(0..n.div_ceil(CHUNK))
                    .for_each(|c| rows.update(&step, touched, grads, c * CHUNK..((c + 1) * CHUNK).min(n)));
            }
        }
        self.clear_gradient();
    }

    /// A deferred step's update applied to `blocks` (the table's or a copy), on this thread.
    fn update_rows(&self, blocks: &mut [f32], step: &RowStep, how: EmbeddingOptimizer) {
        match how {
            EmbeddingOptimizer::Adam => dense_rows(step, self.dim, &self.grads, blocks, &self.slot_of),
            EmbeddingOptimizer::LazyAdam => {
                TouchedRows::new(blocks, self.dim).update(step, &self.touched, &self.grads, 0..self.touched.len());
            }
        }
    }

    fn clear_gradient(&mut self) {
        for &r in &self.touched {
            self.slot_of[r as usize] = UNTOUCHED;
        }
        self.touched.clear();
        self.grads.clear();
    }

    fn apply_with(&mut self, adam: &Adam, how: EmbeddingOptimizer, parallel: bool) {
        debug_assert!(self.pending.is_none(), "a deferred step is settled before the next one");
        let (d, step) = (self.dim, adam.row_step());
        match how {
            EmbeddingOptimizer::Adam => {
                let grads = &self.grads[..];
                if parallel {
                    // Two halves of the rows, one on this thread and one on
                    // the pool: the same operations on each row, so the
                    // same bits.
                    let half = self.n_rows / 2;
                    let (first, second) = self.blocks.split_at_mut(half * 3 * d);
                    let (first_slots, second_slots) = self.slot_of.split_at(half);
                    par::beside(
                        || dense_rows(&step, d, grads, first, first_slots),
                        || dense_rows(&step, d, grads, second, second_slots),
                    );
                } else {
                    dense_rows(&step, d, grads, &mut self.blocks, &self.slot_of);
                }
            }
            EmbeddingOptimizer::LazyAdam => {
                let rows = TouchedRows::new(&mut self.blocks, d);
                let (touched, grads) = (&self.touched[..], &self.grads[..]);
                if parallel {
                    let half = touched.len() / 2;
                    let (first, second) = (0..half, half..touched.len());
                    par::beside(
                        || rows.update(&step, touched, grads, first),
                        || rows.update(&step, touched, grads, second),
                    );
                } else {
                    rows.update(&step, touched, grads, 0..touched.len());
                }
            }
        }
        self.clear_gradient();
    }
}

/// A dense Adam step on consecutive rows' blocks, `slots` their gradient
/// slots. Untouched rows have a zero gradient; their moments still decay and
/// their weights still move, as in PyTorch's dense Adam.
fn dense_rows(step: &RowStep, d: usize, grads: &[f32], blocks: &mut [f32], slots: &[u32]) {
    let zero = vec![0.0; d];
    for (block, &slot) in blocks.chunks_exact_mut(3 * d).zip(slots) {
        let g = if slot == UNTOUCHED { &zero[..] } else { &grads[slot as usize * d..][..d] };
        update_block(step, block, g);
    }
}

/// The blocks of this step's touched rows, updated in place, possibly from
/// two threads at once. It holds the table's blocks mutably borrowed for
/// `'a`, so the table cannot be read or moved while rows are updated.
#[derive(Clone, Copy)]
struct TouchedRows<'a> {
    blocks: *mut f32,
    len: usize,
    dim: usize,
    table: PhantomData<&'a mut [f32]>,
}

// SAFETY: the blocks are mutably borrowed for 'a (see `new`), and each thread
// writes the blocks of a disjoint range of slots; `touched` lists every row
// once (`slot_of` gives each row one slot), so no two threads hold one block.
unsafe impl Send for TouchedRows<'_> {}
// SAFETY: as for `Send`: shared across the two threads, each writing its own rows.
unsafe impl Sync for TouchedRows<'_> {}

impl<'a> TouchedRows<'a> {
    fn new(blocks: &'a mut [f32], dim: usize) -> TouchedRows<'a> {
        TouchedRows { blocks: blocks.as_mut_ptr(), len: blocks.len(), dim, table: PhantomData }
    }

    fn update(&self, step: &RowStep, touched: &[u32], grads: &[f32], slots: std::ops::Range<usize>) {
        let w = 3 * self.dim;
        let block = |r: u32| {
            assert!((r as usize + 1) * w <= self.len, "row {r} is outside the table");
            // SAFETY: the block lies inside the borrowed table (asserted
            // above), and no other thread holds it (see `Send`).
            unsafe { std::slice::from_raw_parts_mut(self.blocks.add(r as usize * w), w) }
        };
        let end = slots.end;
        for slot in slots {
            // Touched rows are scattered over the table: ask for a later
            // row's lines while this one is computed.
            if slot + PREFETCH_AHEAD < end {
                prefetch(block(touched[slot + PREFETCH_AHEAD]));
            }
            update_block(step, block(touched[slot]), &grads[slot * self.dim..(slot + 1) * self.dim]);
        }
    }
}

/// One Adam step on a `[w | m | v]` block.
#[inline(always)]
fn update_block(step: &RowStep, block: &mut [f32], g: &[f32]) {
    let d = g.len();
    let (w, mv) = block.split_at_mut(d);
    let (m, v) = mv.split_at_mut(d);
    step.update(w, g, m, v);
}

/// An empty vector with room for `len` floats, backed by transparent huge
/// pages where Linux offers them on request: a large table's rows are read
/// at random, and with 4 KiB pages nearly every row costs a TLB miss.
fn huge_pages<T>(len: usize) -> Vec<T> {
    let v: Vec<T> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let (from, to) = (start.next_multiple_of(HUGE), (start + len * std::mem::size_of::<T>()) / HUGE * HUGE);
        if to > from {
            // SAFETY: [from, to) lies inside the allocation just made; the
            // advice only changes how its pages are backed, and a failure
            // (THP disabled) leaves ordinary pages.
            unsafe {
                libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn table(rows: usize) -> EmbeddingTable {
        EmbeddingTable::normal(rows, 3, 0.5, &mut rand::rngs::StdRng::seed_from_u64(1))
    }

    /// The same gradient on both tables: every row but each third one (which
    /// third turns with `step`).
    fn accumulate_step(tables: [&mut EmbeddingTable; 2], rows: u32, step: u32) {
        for t in tables {
            for r in (0..rows).filter(|r| r % 3 != step) {
                t.accumulate(r, &[r as f32 * 0.001, -1.0, 0.5], 1.0);
            }
        }
    }

    #[test]
    fn weights_and_moments_round_trip_through_the_interleaved_blocks() {
        let mut t = table(4);
        let w: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let (m, v): (Vec<f32>, Vec<f32>) = ((0..12).map(|i| -(i as f32)).collect(), vec![0.25; 12]);
        t.set_weights(&w);
        t.set_moments(&m, &v);
        assert_eq!(t.weights(), w);
        assert_eq!(t.moments(), (m, v));
        assert_eq!(t.row(2), &[6.0, 7.0, 8.0]);
    }

    #[test]
    fn lazy_adam_moves_only_touched_rows_and_two_threads_give_the_same_bits_as_one() {
        let mut adam = Adam::new(0.1);
        let (mut one, mut two) = (table(5000), table(5000));
        for step in 0..3u32 {
            adam.begin_step();
            accumulate_step([&mut one, &mut two], 5000, step);
            let before = one.weights();
            one.apply_with(&adam, EmbeddingOptimizer::LazyAdam, false);
            two.apply_with(&adam, EmbeddingOptimizer::LazyAdam, true);
            let after = one.weights();
            for r in 0..5000 {
                let moved = before[r * 3..r * 3 + 3] != after[r * 3..r * 3 + 3];
                assert_eq!(moved, r as u32 % 3 != step, "row {r} at step {step}");
            }
        }
        assert_eq!(one.weights(), two.weights());
        assert_eq!(one.moments(), two.moments());
    }

    #[test]
    fn dense_adam_moves_every_row_and_two_threads_give_the_same_bits_as_one() {
        let mut adam = Adam::new(0.1);
        let (mut one, mut two) = (table(5001), table(5001));
        for step in 0..3u32 {
            adam.begin_step();
            accumulate_step([&mut one, &mut two], 5001, step);
            let before = one.weights();
            one.apply_with(&adam, EmbeddingOptimizer::Adam, false);
            two.apply_with(&adam, EmbeddingOptimizer::Adam, true);
            let after = one.weights();
            // After the first step every row has momentum, touched or not.
            let moved = (0..5001).filter(|r| before[r * 3..r * 3 + 3] != after[r * 3..r * 3 + 3]).count();
            assert_eq!(moved, if step == 0 { 5001 - 1667 } else { 5001 }, "step {step}");
        }
        assert_eq!(one.weights(), two.weights());
        assert_eq!(one.moments(), two.moments());
    }

    #[test]
    fn a_deferred_step_reads_and_settles_to_the_bits_of_an_applied_one() {
        for how in [EmbeddingOptimizer::Adam, EmbeddingOptimizer::LazyAdam] {
            for threads in [1, 2] {
                let mut adam = Adam::new(0.1);
                // Many chunks of rows, and a last one cut short.
                let (mut applied, mut deferred) = (table(1001), table(1001));
                for step in 0..3u32 {
                    adam.begin_step();
                    accumulate_step([&mut applied, &mut deferred], 1001, step);
                    let before = deferred.weights();
                    applied.apply(&adam, how);
                    deferred.defer(&adam, how);
                    assert!(!deferred.is_settled());
                    // Reading a table with a deferred step includes it, and leaves it deferred.
                    assert_eq!(deferred.weights(), applied.weights(), "{how:?} step {step}");
                    assert_eq!(deferred.moments(), applied.moments(), "{how:?} step {step}");
                    assert_eq!(
                        deferred.blocks.chunks_exact(9).flat_map(|b| &b[..3]).copied().collect::<Vec<_>>(),
                        before
                    );
                    funnel_kernels::par::with_threads(threads, || deferred.settle());
                    assert!(deferred.is_settled() && deferred.gradient_sq_norm() == 0.0);
                    assert_eq!(deferred.blocks, applied.blocks, "{how:?} step {step}, {threads} threads");
                }
            }
        }
    }

    #[test]
    fn loading_weights_drops_a_deferred_step_and_its_gradient() {
        let mut adam = Adam::new(0.1);
        adam.begin_step();
        let mut t = table(4);
        t.accumulate(1, &[1.0, 2.0, 3.0], 1.0);
        t.defer(&adam, EmbeddingOptimizer::Adam);
        let w: Vec<f32> = (0..12).map(|i| i as f32).collect();
        t.set_weights(&w);
        assert!(t.is_settled() && t.gradient_sq_norm() == 0.0);
        t.settle();
        assert_eq!(t.weights(), w);
        assert_eq!(t.row(1), &[3.0, 4.0, 5.0]);
    }
}
