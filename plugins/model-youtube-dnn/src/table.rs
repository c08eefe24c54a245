//! An embedding table kept outside dfdx's graph: rows are gathered for a
//! batch, and gradients of gathered rows are accumulated sparsely.

use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::adam::{Adam, Moments};
use crate::EmbeddingOptimizer;

pub struct EmbeddingTable {
    pub dim: usize,
    pub weights: Vec<f32>,
    /// This step's gradient rows, compactly: `slot_of[r]` is row `r`'s
    /// slot in `grads` (`UNTOUCHED` when it has none), slots in the order
    /// rows were first touched. Dense gradients of a 1M-row table would add
    /// a fourth random memory stream to every touched row.
    grads: Vec<f32>,
    slot_of: Vec<u32>,
    /// Rows with a gradient this step, in slot order.
    touched: Vec<u32>,
    moments: Moments,
}

const UNTOUCHED: u32 = u32::MAX;

/// Rows ahead whose memory is requested while the current row is processed.
pub const PREFETCH_AHEAD: usize = 4;

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
        let mut weights = huge_pages(rows * dim);
        weights.extend((0..rows * dim).map(|_| normal.sample(rng)));
        let zeros = || {
            let mut v = huge_pages(rows * dim);
            v.resize(rows * dim, 0.0);
            v
        };
        EmbeddingTable {
            dim,
            weights,
            grads: Vec::new(),
            slot_of: vec![UNTOUCHED; rows],
            touched: Vec::new(),
            moments: Moments { m: zeros(), v: zeros() },
        }
    }

    /// First and second Adam moments.
    pub fn moments(&self) -> (&[f32], &[f32]) {
        (&self.moments.m, &self.moments.v)
    }

    pub fn moments_mut(&mut self) -> (&mut Vec<f32>, &mut Vec<f32>) {
        (&mut self.moments.m, &mut self.moments.v)
    }

    pub fn row(&self, r: u32) -> &[f32] {
        &self.weights[r as usize * self.dim..(r as usize + 1) * self.dim]
    }

    /// Appends row `r` to `out`.
    pub fn gather_into(&self, r: u32, out: &mut Vec<f32>) {
        out.extend_from_slice(self.row(r));
    }

    /// Adds `scale * g` to the gradient of row `r`.
    pub fn accumulate(&mut self, r: u32, g: &[f32], scale: f32) {
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
        let mut dense = vec![0.0; self.weights.len()];
        for (slot, &r) in self.touched.iter().enumerate() {
            let d = self.dim;
            dense[r as usize * d..(r as usize + 1) * d].copy_from_slice(&self.grads[slot * d..(slot + 1) * d]);
        }
        dense
    }

    /// Sum of squared gradient entries (only touched rows are non-zero).
    pub fn gradient_sq_norm(&self) -> f64 {
        self.grads.iter().map(|&g| g as f64 * g as f64).sum()
    }

    /// Applies and clears this step's gradient.
    pub fn apply(&mut self, adam: &Adam, how: EmbeddingOptimizer) {
        let d = self.dim;
        match how {
            // Untouched rows have a zero gradient; their moments still decay
            // and their weights still move, as in a dense Adam step.
            EmbeddingOptimizer::Adam => {
                let zero = vec![0.0; d];
                for (r, &slot) in self.slot_of.iter().enumerate() {
                    let g = if slot == UNTOUCHED { &zero[..] } else { &self.grads[slot as usize * d..][..d] };
                    let (span, m) = (r * d..(r + 1) * d, &mut self.moments);
                    adam.update_slices(&mut self.weights[span.clone()], g, &mut m.m[span.clone()], &mut m.v[span]);
                }
            }
            EmbeddingOptimizer::LazyAdam => {
                for (slot, &r) in self.touched.iter().enumerate() {
                    // Touched rows are scattered over the table: ask for a
                    // later row's lines while this one is computed.
                    if let Some(&ahead) = self.touched.get(slot + PREFETCH_AHEAD) {
                        let span = ahead as usize * d..(ahead as usize + 1) * d;
                        prefetch(&self.weights[span.clone()]);
                        prefetch(&self.moments.m[span.clone()]);
                        prefetch(&self.moments.v[span]);
                    }
                    let g = &self.grads[slot * d..(slot + 1) * d];
                    let span = r as usize * d..(r as usize + 1) * d;
                    let m = &mut self.moments;
                    adam.update_slices(&mut self.weights[span.clone()], g, &mut m.m[span.clone()], &mut m.v[span]);
                }
            }
        }
        for &r in &self.touched {
            self.slot_of[r as usize] = UNTOUCHED;
        }
        self.touched.clear();
        self.grads.clear();
    }
}

/// An empty vector with room for `len` floats, backed by transparent huge
/// pages where Linux offers them on request: a large table's rows are read
/// at random, and with 4 KiB pages nearly every row costs a TLB miss.
fn huge_pages(len: usize) -> Vec<f32> {
    let v: Vec<f32> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let (from, to) = (start.next_multiple_of(HUGE), (start + len * 4) / HUGE * HUGE);
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
