//! The inner product and the one sgemm wrapper.

/// `[row stride, column stride]` of a matrix read in place.
pub type Strides = [usize; 2];

/// Strides of a row-major matrix with `cols` columns.
#[allow(non_snake_case)]
pub const fn ROW_MAJOR(cols: usize) -> Strides {
    [cols, 1]
}

/// Inner product of two equally long slices, summed in eight lanes so the
/// compiler vectorises it (a plain running sum is one long dependency chain).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut lanes = [0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8.remainder().iter().zip(b8.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a8.zip(b8) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `sum(x²)` in f64, over eight independent lanes so that it vectorizes
/// (a single running sum is one dependent add per value: with hundreds of
/// thousands of gradient entries a step, a visible share of it).
pub fn sum_of_squares(x: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 8];
    let chunks = x.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&g| g as f64 * g as f64).sum();
    for c in chunks {
        for (l, &g) in lanes.iter_mut().zip(c) {
            *l += g as f64 * g as f64;
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// `c[m, n] = a[m, k] * b[k, n]`, with `a` and `b` read through their
/// (row, column) strides (`[cols, 1]` row-major, `[1, rows]` a transposed
/// row-major matrix) and `c` row-major. Panics when a stride reaches outside
/// its slice: that is a caller's bug, never user input.
pub fn gemm(m: usize, k: usize, n: usize, (a, sa): (&[f32], Strides), (b, sb): (&[f32], Strides), c: &mut [f32]) {
    let fits = |x: &[f32], rows: usize, cols: usize, [rs, cs]: Strides| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < x.len()
    };
    assert!(fits(a, m, k, sa) && fits(b, k, n, sb) && c.len() >= m * n, "gemm operands out of bounds");
    // SAFETY: every element read through the strides lies inside `a` and
    // `b` (checked above), and `c` holds m x n row-major values; beta = 0
    // means `c` is only written.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            sa[0] as isize,
            sa[1] as isize,
            b.as_ptr(),
            sb[0] as isize,
            sb[1] as isize,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_matches_the_plain_sum() {
        for len in 0..40 {
            let a: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 3.0).collect();
            let b: Vec<f32> = (0..len).map(|i| 1.0 - i as f32 * 0.25).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-3, "len {len}");
        }
        assert_eq!(dot(&[1., 2., 3.], &[4., 5., 6.]), 32.0);
    }

    #[test]
    fn sum_of_squares_counts_every_lane_and_the_tail() {
        // 1² + 2² + ... + 11² = 506: one full group of eight and a tail of three.
        let x: Vec<f32> = (1..=11).map(|i| i as f32).collect();
        assert_eq!(sum_of_squares(&x), 506.0);
        assert_eq!(sum_of_squares(&x[..3]), 14.0);
        assert_eq!(sum_of_squares(&[]), 0.0);
    }

    #[test]
    fn gemm_known_answer_with_a_transposed_operand() {
        // a = [[1, 2], [3, 4]], b read as the transpose of [[5, 6], [7, 8]].
        let a = [1., 2., 3., 4.];
        let b = [5., 6., 7., 8.];
        let mut c = [0f32; 4];
        gemm(2, 2, 2, (&a, ROW_MAJOR(2)), (&b, [1, 2]), &mut c);
        assert_eq!(c, [17., 23., 39., 53.]);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn gemm_refuses_short_operands() {
        let mut c = [0f32; 4];
        gemm(2, 2, 2, (&[1., 2., 3.], ROW_MAJOR(2)), (&[1., 2., 3., 4.], ROW_MAJOR(2)), &mut c);
    }
}
