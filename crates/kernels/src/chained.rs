//! A matrix product whose every output is one fused multiply-add chain over
//! the inner dimension, first term first, starting from zero.
//!
//! That is how the `gemm` crate's micro-kernels sum when the inner dimension
//! fits one of its depth blocks (3 to 512 terms), so for those shapes this
//! gives dfdx's CPU products bit for bit. dfdx 0.13 pins `gemm` 0.15, whose
//! AVX-512 kernels need a nightly compiler, so on stable its products run on
//! AVX2; this kernel uses AVX-512 where the CPU has it and reports that it
//! does not run elsewhere (the caller keeps dfdx's product there).

use std::ops::Range;

use crate::linalg::Strides;
use crate::par;

/// Columns of `b` in one packed panel: two AVX-512 registers.
const PANEL: usize = 32;
/// Rows of `c` one micro-kernel call computes (16 accumulators of 32 held).
const ROWS: usize = 8;

/// Whether [`chained_gemm`] runs on this CPU (x86-64 with AVX-512).
pub fn chained_gemm_runs() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `c = a b` (or `c += a b` with `accumulate`) for `a` `[m, k]` and `b`
/// `[k, n]` read through their (row, column) strides and `c` row-major,
/// each output `fma(a[i, k-1], b[k-1, j], ... fma(a[i, 0], b[0, j], 0))`,
/// then added to `c`'s value when accumulating. `split` computes the two
/// halves of `c`'s rows on this thread and the pool at once (each output is
/// computed the same way either way). Returns false, leaving `c` untouched,
/// where it does not run ([`chained_gemm_runs`]). Panics when a stride
/// reaches outside its slice: a caller's bug, never user input.
#[allow(clippy::too_many_arguments)]
pub fn chained_gemm(
    m: usize,
    k: usize,
    n: usize,
    (a, sa): (&[f32], Strides),
    (b, sb): (&[f32], Strides),
    c: &mut [f32],
    accumulate: bool,
    split: bool,
) -> bool {
    let fits = |x: &[f32], rows: usize, cols: usize, [rs, cs]: Strides| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < x.len()
    };
    assert!(fits(a, m, k, sa) && fits(b, k, n, sb) && c.len() >= m * n, "chained_gemm operands out of bounds");
    if !chained_gemm_runs() {
        return false;
    }
    if m == 0 || n == 0 || (k == 0 && accumulate) {
        return true;
    }
    let c = Block(c.as_mut_ptr());
    // `b`'s rows are read in place when contiguous, else packed.
    let in_place = sb[1] == 1;
    // Rows `rows` of `c` by panels `panels` of its columns, from `b`'s
    // panels packed once for both threads (`shared`) or here.
    let block = |rows: Range<usize>, panels: Range<usize>, shared: Option<&[f32]>| {
        let own;
        let from = match (in_place, shared) {
            (true, _) => Panels::InPlace(&b[panels.start * PANEL..], sb[0]),
            (false, Some(all)) => Panels::Packed(&all[panels.start * k * PANEL..]),
            (false, None) => {
                own = pack(k, n, b, sb, panels.clone());
                Panels::Packed(&own)
            }
        };
        let (a, c) = (&a[rows.start * sa[0]..], &c);
        // SAFETY: AVX-512 is present (checked above); `a` holds `m` rows of
        // `k` and `b` `k` rows of `n` (checked above), `from` has `k` rows
        // of panels `panels` from its start; `c` holds `m` rows of `n`, and
        // the block `rows` x `panels` of it is written by this call alone.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx512::rows(rows.len(), k, n, a, sa, from, panels, c.0.add(rows.start * n), accumulate);
        };
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (a, c, from);
    };
    let all = n.div_ceil(PANEL);
    // Each thread packs and computes its own columns; a single panel is
    // split by rows instead, packed once for both.
    if split && all >= 2 {
        let half = all / 2;
        par::beside(|| block(0..m, 0..half, None), || block(0..m, half..all, None));
    } else if split && m >= 2 * ROWS {
        let shared = (!in_place).then(|| pack(k, n, b, sb, 0..all));
        let half = (m / 2).div_ceil(ROWS) * ROWS;
        par::beside(|| block(0..half, 0..all, shared.as_deref()), || block(half..m, 0..all, shared.as_deref()));
    } else {
        block(0..m, 0..all, None);
    }
    true
}

/// `c`'s buffer, whose disjoint blocks two threads write.
struct Block(*mut f32);

// SAFETY: `chained_gemm` hands each thread a block of `c` no other thread
// touches, and `c`'s borrow outlives both.
unsafe impl Sync for Block {}

/// Where the micro-kernel reads `b`'s panels from, first panel first.
#[derive(Clone, Copy)]
enum Panels<'a> {
    /// `b` itself, its rows this far apart.
    InPlace(&'a [f32], usize),
    /// Packed by [`pack`].
    Packed(&'a [f32]),
}

/// Panels `which` of `b`, [`PANEL`] columns each, each `k` rows of them
/// contiguous, the last panel's missing columns zero.
fn pack(k: usize, n: usize, b: &[f32], [rs, cs]: Strides, which: Range<usize>) -> Vec<f32> {
    let mut out = vec![0.0; which.len() * k * PANEL];
    for (j, panel) in which.zip(out.chunks_exact_mut(k * PANEL)) {
        let cols = (n - j * PANEL).min(PANEL);
        for (p, row) in panel.chunks_exact_mut(PANEL).enumerate() {
            for (col, x) in row[..cols].iter_mut().enumerate() {
                *x = b[p * rs + (j * PANEL + col) * cs];
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use std::ops::Range;

    use super::{Panels, Strides, PANEL, ROWS};

    /// `m` rows of `c` (row-major, `n` columns, from where it points) by
    /// panels `which` of its columns, `a` from its first row.
    ///
    /// # Safety
    /// AVX-512 is present, `a` holds `m` rows of `k` through `sa`, `from`
    /// holds `k` rows of each panel's columns that are inside `n`, and `c`
    /// `m` rows of `n`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn rows(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        sa: Strides,
        from: Panels<'_>,
        which: Range<usize>,
        c: *mut f32,
        accumulate: bool,
    ) {
        let a = a.as_ptr();
        for (i, j) in which.enumerate() {
            let cols = (n - j * PANEL).min(PANEL);
            let mask = if cols == PANEL { u32::MAX } else { (1u32 << cols) - 1 };
            let masks = [mask as u16, (mask >> 16) as u16];
            let (panel, stride) = match from {
                Panels::InPlace(b, rs) => (b.as_ptr().wrapping_add(i * PANEL), rs),
                Panels::Packed(p) => (p.as_ptr().wrapping_add(i * k * PANEL), PANEL),
            };
            let tile = Tile { k, n, sa, panel, stride, masks, accumulate };
            // SAFETY: rows `r..r + R` of `a` and `c` exist (the loop bounds),
            // and panel `j`'s columns start inside every row of `c`.
            unsafe {
                let c = c.add(j * PANEL);
                let mut r = 0;
                while r + ROWS <= m {
                    tile.run::<ROWS>(a.add(r * sa[0]), c.add(r * n));
                    r += ROWS;
                }
                let (a, c) = (a.add(r * sa[0]), c.add(r * n));
                match m - r {
                    1 => tile.run::<1>(a, c),
                    2 => tile.run::<2>(a, c),
                    3 => tile.run::<3>(a, c),
                    4 => tile.run::<4>(a, c),
                    5 => tile.run::<5>(a, c),
                    6 => tile.run::<6>(a, c),
                    7 => tile.run::<7>(a, c),
                    _ => {}
                }
            }
        }
    }

    struct Tile {
        k: usize,
        n: usize,
        sa: Strides,
        panel: *const f32,
        stride: usize,
        masks: [u16; 2],
        accumulate: bool,
    }

    impl Tile {
        /// `R` rows of `c` by one panel's columns; `a` and `c` at the first row.
        ///
        /// # Safety
        /// As [`rows`], for `R` rows from `a` and `c`.
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const R: usize>(&self, a: *const f32, c: *mut f32) {
            let [rs, cs] = self.sa;
            let [lo, hi] = self.masks;
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            for p in 0..self.k {
                // SAFETY: the panel has `k` rows of its columns and `a` `R`
                // rows of `k` (the caller's bounds); lanes past the panel's
                // columns are masked off, neither read nor faulting.
                let (b0, b1, row) = unsafe {
                    let b = self.panel.wrapping_add(p * self.stride);
                    (_mm512_maskz_loadu_ps(lo, b), _mm512_maskz_loadu_ps(hi, b.wrapping_add(16)), a.add(p * cs))
                };
                for (r, acc) in acc.iter_mut().enumerate() {
                    // SAFETY: as above.
                    let x = _mm512_set1_ps(unsafe { *row.add(r * rs) });
                    acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
                    acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
                }
            }
            for (r, acc) in acc.iter().enumerate() {
                // Masked-off lanes are neither read nor written, so the
                // second half of a narrow last panel may point past `c`.
                let row = c.wrapping_add(r * self.n);
                let (c0, c1) = (row, row.wrapping_add(16));
                let (mut v0, mut v1) = (acc[0], acc[1]);
                // SAFETY: the mask's lanes are the panel's columns of row
                // `r`, inside `c` (the caller's bounds).
                unsafe {
                    if self.accumulate {
                        v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(lo, c0), v0);
                        v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(hi, c1), v1);
                    }
                    _mm512_mask_storeu_ps(c0, lo, v0);
                    _mm512_mask_storeu_ps(c1, hi, v1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linalg::ROW_MAJOR;
    use rand::{Rng, SeedableRng};

    /// The definition, one `mul_add` chain per output.
    fn chained(m: usize, k: usize, n: usize, (a, sa): (&[f32], Strides), (b, sb): (&[f32], Strides)) -> Vec<f32> {
        let mut out = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] =
                    (0..k).fold(0.0f32, |acc, p| a[i * sa[0] + p * sa[1]].mul_add(b[p * sb[0] + j * sb[1]], acc));
            }
        }
        out
    }

    #[test]
    fn every_output_is_its_fused_chain_for_every_shape_layout_and_split() {
        // Splits by columns (two panels or more) and by rows (one panel).
        if !chained_gemm_runs() {
            // Nothing is computed, and `c` is left as it was.
            let mut c = [1.0f32; 4];
            assert!(!chained_gemm(2, 2, 2, (&[1.0; 4], ROW_MAJOR(2)), (&[1.0; 4], ROW_MAJOR(2)), &mut c, false, false));
            assert_eq!(c, [1.0; 4]);
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let shapes =
            [(1, 1, 1), (3, 5, 7), (8, 3, 32), (9, 17, 33), (17, 64, 16), (40, 30, 20), (31, 100, 65), (64, 256, 96)];
        for (m, k, n) in shapes {
            let a: Vec<f32> = (0..m * k).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let start: Vec<f32> = (0..m * n).map(|_| rng.gen_range(-1.0..1.0)).collect();
            // Row-major, and each operand read as the transpose of its buffer.
            for (sa, sb) in [(ROW_MAJOR(k), ROW_MAJOR(n)), ([1, m], [1, k]), (ROW_MAJOR(k), [1, k])] {
                let want = chained(m, k, n, (&a, sa), (&b, sb));
                for split in [false, true] {
                    let mut c = start.clone();
                    assert!(chained_gemm(m, k, n, (&a, sa), (&b, sb), &mut c, false, split));
                    assert_eq!(bits(&c), bits(&want), "{m}x{k}x{n} {sa:?} {sb:?} split {split}");
                    let mut c = start.clone();
                    assert!(chained_gemm(m, k, n, (&a, sa), (&b, sb), &mut c, true, split));
                    let added: Vec<f32> = start.iter().zip(&want).map(|(s, w)| s + w).collect();
                    assert_eq!(bits(&c), bits(&added), "accumulating {m}x{k}x{n} {sa:?} {sb:?} split {split}");
                }
            }
        }
    }

    #[test]
    fn a_wider_c_keeps_the_values_past_its_rows() {
        if !chained_gemm_runs() {
            return;
        }
        // 2 x 2 = [[1, 2], [3, 4]] [[5, 6], [7, 8]], hand-computed, in a longer buffer.
        let mut c = [0.0, 0.0, 0.0, 0.0, 9.0];
        assert!(chained_gemm(
            2,
            2,
            2,
            (&[1., 2., 3., 4.], ROW_MAJOR(2)),
            (&[5., 6., 7., 8.], ROW_MAJOR(2)),
            &mut c,
            false,
            false
        ));
        assert_eq!(c, [19., 22., 43., 50., 9.0]);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn short_operands_are_refused() {
        let mut c = [0f32; 4];
        chained_gemm(2, 2, 2, (&[1., 2., 3.], ROW_MAJOR(2)), (&[1., 2., 3., 4.], ROW_MAJOR(2)), &mut c, false, false);
    }

    fn bits(x: &[f32]) -> Vec<u32> {
        x.iter().map(|v| v.to_bits()).collect()
    }
}
