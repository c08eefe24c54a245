//! The loss over a batch's candidate logits, forward and backward in one
//! pass on the host.
//!
//! Written by hand rather than with dfdx ops because the logits block is the
//! biggest tensor of a step (`[B, C]`, C up to the whole catalog): dfdx would
//! allocate and sweep it once per elementwise op (scale, offsets, log-softmax,
//! select, their backward), while here one GEMM fills it, one sweep per row
//! turns it into the gradient in place, and two GEMMs give the gradients of
//! the user and candidate vectors. Buffers live in [`Workspace`], so a
//! training step allocates nothing here once warm.

use funnel_api::{Candidates, ItemIdx};
use funnel_kernels::gemm;

use crate::Loss;

/// Added to the logit of a candidate that must not count as a negative
/// (an accidental hit, or another row's positive when in-batch negatives are
/// off): far below any real logit, yet finite so no `inf - inf` appears.
pub const MASKED: f32 = -1.0e9;

/// The candidates each row must not take as negatives because its user has
/// consumed them (`exclude_seen`): rows share sets (a window's rows read one
/// window); set `s`'s shared columns are `columns[starts[s]..starts[s + 1]]`,
/// row `r`'s own negatives `own[own_starts[r]..own_starts[r + 1]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeenColumns {
    pub set_of_row: Vec<u32>,
    pub starts: Vec<usize>,
    pub columns: Vec<u32>,
    pub own_starts: Vec<usize>,
    pub own: Vec<u32>,
}

impl SeenColumns {
    fn shared(&self, row: usize) -> &[u32] {
        let s = self.set_of_row[row] as usize;
        &self.columns[self.starts[s]..self.starts[s + 1]]
    }

    fn own(&self, row: usize) -> &[u32] {
        &self.own[self.own_starts[row]..self.own_starts[row + 1]]
    }
}

/// How logits are formed from vectors.
#[derive(Debug, Clone, Copy)]
pub struct Logits {
    pub temperature: f32,
    pub normalize: bool,
    pub loss: Loss,
}

/// Scratch buffers reused across steps.
#[derive(Debug, Default)]
pub struct Workspace {
    un: Vec<f32>,
    vn: Vec<f32>,
    rn: Vec<f32>,
    u_norm: Vec<f32>,
    v_norm: Vec<f32>,
    r_norm: Vec<f32>,
    logits: Vec<f32>,
    own: Vec<f32>,
    /// Each row's weighted loss, added in row order.
    losses: Vec<f64>,
    /// Per shared column: its item and its `-log q` term.
    column_items: Vec<ItemIdx>,
    column_offsets: Vec<f32>,
    /// Gradients with respect to the (normalised) vectors.
    dun: Vec<f32>,
    dvn: Vec<f32>,
    drn: Vec<f32>,
}

/// Gradients of the loss with respect to the vectors passed in.
#[derive(Debug, Default)]
pub struct VectorGradients {
    pub u: Vec<f32>,
    pub v: Vec<f32>,
    pub r: Vec<f32>,
}

/// The candidates of a batch as the loss sees them: shared columns are the
/// batch's positives (column `i` is row `i`'s positive), then the shared
/// negatives; each row may also have `k` negatives of its own.
pub struct Batch<'a> {
    pub positives: &'a [ItemIdx],
    pub candidates: &'a Candidates,
    /// The sequence window of each row, when the batch trains every position
    /// of windows: a row's in-batch columns from its own window (other than
    /// its own column) hold that user's other positives, known hits rather
    /// than negatives, and are masked.
    pub groups: Option<&'a [u32]>,
    /// Candidates each row's user has consumed, masked for that row (its
    /// own column aside).
    pub seen: Option<&'a SeenColumns>,
    /// Each row's weight in the mean loss; empty means 1 for every row.
    pub weights: &'a [f32],
}

impl Batch<'_> {
    /// Additive term of row `row`'s logit for shared column `col`: `-log q`
    /// where corrected, [`MASKED`] where the candidate must not act as a
    /// negative for that row. The definition `loss` sweeps without branches.
    #[cfg(test)]
    fn shared_offset(&self, row: usize, col: usize) -> f32 {
        let c = self.candidates;
        let b = self.positives.len();
        let pos = self.positives[row];
        if col != row && self.seen.is_some_and(|s| s.shared(row).contains(&(col as u32))) {
            return MASKED;
        }
        let (item, log_q) = if col < b {
            let same_window = self.groups.is_some_and(|g| g[col] == g[row]);
            if col != row && (!c.in_batch || self.positives[col] == pos || same_window) {
                return MASKED;
            }
            if col == row {
                return self.correct(c.positive_log_q[col]);
            }
            (self.positives[col], c.positive_log_q[col])
        } else {
            (c.shared[col - b], c.shared_log_q[col - b])
        };
        if item == pos {
            MASKED
        } else {
            self.correct(log_q)
        }
    }

    /// Additive term of row `row`'s own negative `j`: as for a shared one
    /// (masked when it is the positive or seen), except that the last `explicit` are explicit negatives whose `-ln w`
    /// is always subtracted (their weight is not a sampling correction).
    #[inline]
    fn own_offset(&self, row: usize, j: usize) -> f32 {
        let c = self.candidates;
        let k = c.per_row.len() / self.positives.len();
        let log_q = c.per_row_log_q[row * k + j];
        let seen = || self.seen.is_some_and(|s| s.own(row).contains(&(j as u32)));
        if c.per_row[row * k + j] == self.positives[row] || seen() {
            MASKED
        } else if j + c.explicit >= k {
            -log_q
        } else {
            self.correct(log_q)
        }
    }

    /// Row `row`'s factor in the mean loss.
    #[inline]
    fn weight(&self, row: usize) -> f32 {
        self.weights.get(row).copied().unwrap_or(1.0)
    }

    #[inline]
    fn correct(&self, log_q: f32) -> f32 {
        if self.candidates.log_q_correction {
            -log_q
        } else {
            0.0
        }
    }
}

/// Largest value of `x` (negative infinity when empty; NaNs are passed
/// over, as `f32::max` does). The largest value does not depend on the
/// order it is looked for in, so 32 lanes keep several independent
/// comparisons in flight (eight lanes waited on one comparison's latency),
/// and `if v > m` is one `max` instruction where `f32::max`'s NaN rule
/// took three.
#[inline(always)]
fn max(x: &[f32]) -> f32 {
    const LANES: usize = 32;
    let larger = |m: f32, v: f32| if v > m { v } else { m };
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = larger(*l, v);
        }
    }
    tail.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &v| larger(m, v))
}

/// Replaces each `z` by `exp(z - shift)` and returns their sum; `shift` is
/// the largest `z`, so every exponent is at most 0.
///
/// libm's `expf` is a call per value and took ~15% of a full-softmax step;
/// [`exp_nonpositive`] is adds, multiplies and a bit shift, which vectorize.
/// Inlined into both builds of [`loss`] (AVX2 and baseline x86-64), it does
/// the same IEEE operations in the same order (sums in eight fixed lanes)
/// in each, so both give identical bits.
#[inline(always)]
fn exp_shifted(x: &mut [f32], shift: f32) -> f32 {
    // An element-wise pass (which the compiler vectorizes), then the sum.
    x.iter_mut().for_each(|v| *v = exp_nonpositive(*v - shift));
    let mut lanes = [0.0f32; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += v;
        }
    }
    lanes.iter().chain(tail).sum()
}

/// `exp(x)` for `x <= 0` to within about one unit in the last place (Cephes'
/// `expf`: `x = n ln 2 + r`, a degree-5 polynomial for `e^r`, `2^n` built in
/// the exponent bits). Below -87 the result would leave f32's normal range
/// and is 0, as for masked candidates; NaN stays NaN.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n * LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    const LOWEST: f32 = -87.0;
    let clamped = if x < LOWEST { LOWEST } else { x };
    let t = clamped * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r + 1.666_666_5e-1)
        * r
        + 0.5;
    let e_r = (r * r) * p + r + 1.0;
    // t's low bits hold 0x40_0000 + n, an integer in [-126, 0] here: 2^n is
    // (n + 127) in the exponent bits. (Integer bit work, not `n as i32`,
    // whose NaN and range checks would keep the loop scalar.)
    let two_n = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 127) << 23);
    if x < LOWEST {
        0.0
    } else {
        e_r * two_n
    }
}

/// Row-wise L2 normalisation of `x` (`[n, d]`) into `out`, keeping each
/// row's norm (the epsilon keeps a zero row finite).
fn normalize_rows(x: &[f32], d: usize, out: &mut Vec<f32>, norms: &mut Vec<f32>) {
    out.clear();
    norms.clear();
    for row in x.chunks_exact(d) {
        let norm = (row.iter().map(|a| a * a).sum::<f32>() + 1e-12).sqrt();
        norms.push(norm);
        out.extend(row.iter().map(|a| a / norm));
    }
}

/// Gradient through [`normalize_rows`]: `dx = (dy - y (y . dy)) / |x|`.
fn normalize_backward(y: &[f32], dy: &[f32], norms: &[f32], d: usize, dx: &mut Vec<f32>) {
    dx.clear();
    for ((y, dy), &n) in y.chunks_exact(d).zip(dy.chunks_exact(d)).zip(norms) {
        let proj: f32 = y.iter().zip(dy).map(|(a, b)| a * b).sum();
        dx.extend(y.iter().zip(dy).map(|(a, b)| (b - a * proj) / n));
    }
}

/// The mean loss over the batch of user vectors `u` (`[B, d]`) against the
/// shared candidate vectors `v` (`[S, d]`) and each row's own `r`
/// (`[B * k, d]`, possibly empty); row `i`'s positive is shared column `i`.
/// Rows count by their weights: `sum_r w_r loss_r / B`.
/// With `grads`, also fills the gradients with respect to `u`, `v` and `r`.
///
/// A batch with enough work runs on two threads: each takes half of the
/// rows through their logits, sweep and user-vector gradient, then each
/// takes half of the candidate-vector gradient's rows. Every output element
/// is still one product summed in the same order, and the loss adds its
/// rows in order, so the split gives the bits of one thread.
pub fn loss(
    how: Logits,
    batch: &Batch<'_>,
    d: usize,
    vectors: (&[f32], &[f32], &[f32]),
    ws: &mut Workspace,
    grads: Option<&mut VectorGradients>,
) -> f32 {
    let parts = if batch.positives.len() >= 2
        && batch.positives.len() * (vectors.1.len() + vectors.2.len()) >= TWO_PARTS_FROM
    {
        2
    } else {
        1
    };
    loss_in_parts(how, batch, d, vectors, ws, grads, parts, Sweep::Widest)
}

/// Multiply-adds of a batch's logits (rows x candidate values) from which
/// the loss splits over two threads: below it, waking the second thread
/// costs about what it saves.
const TWO_PARTS_FROM: usize = 1 << 20;

/// Which build of the row sweeps runs.
#[derive(Clone, Copy, PartialEq)]
enum Sweep {
    /// AVX-512 where the CPU has it, else AVX2 where it has that.
    Widest,
    /// The AVX2 build (tests compare the three).
    #[cfg(test)]
    Avx2,
    /// The baseline x86-64 build.
    #[cfg(test)]
    Baseline,
}

/// What every part of the batch reads.
struct Common<'a> {
    how: Logits,
    batch: &'a Batch<'a>,
    d: usize,
    s: usize,
    k: usize,
    un: &'a [f32],
    vn: &'a [f32],
    rn: &'a [f32],
    column_items: &'a [ItemIdx],
    column_offsets: &'a [f32],
    grads: bool,
}

/// One part's rows (`first..first + losses.len()`) and the buffers it
/// fills: logits and own logits (then their gradients), each row's weighted
/// loss, and with gradients the rows of `dUn` and `dRn`.
struct Rows<'a> {
    first: usize,
    logits: &'a mut [f32],
    own: &'a mut [f32],
    losses: &'a mut [f64],
    dun: &'a mut [f32],
    drn: &'a mut [f32],
}

#[allow(clippy::too_many_arguments)]
fn loss_in_parts(
    how: Logits,
    batch: &Batch<'_>,
    d: usize,
    (u, v, r): (&[f32], &[f32], &[f32]),
    ws: &mut Workspace,
    grads: Option<&mut VectorGradients>,
    parts: usize,
    sweep: Sweep,
) -> f32 {
    let b = batch.positives.len();
    let s = v.len() / d;
    let k = r.len() / d / b.max(1);
    let (un, vn, rn) = if how.normalize {
        normalize_rows(u, d, &mut ws.un, &mut ws.u_norm);
        normalize_rows(v, d, &mut ws.vn, &mut ws.v_norm);
        normalize_rows(r, d, &mut ws.rn, &mut ws.r_norm);
        (&ws.un[..], &ws.vn[..], &ws.rn[..])
    } else {
        (u, v, r)
    };
    // Shared columns' items and correction terms, once per batch.
    let c = batch.candidates;
    ws.column_items.clear();
    ws.column_items.extend(batch.positives.iter().chain(&c.shared));
    ws.column_offsets.clear();
    ws.column_offsets.extend(c.positive_log_q.iter().chain(&c.shared_log_q).map(|&q| batch.correct(q)));
    ws.logits.resize(b * s, 0.0);
    ws.own.resize(b * k, 0.0);
    ws.losses.resize(b, 0.0);
    let with_grads = grads.is_some();
    let (dun_len, drn_len) = if with_grads { (b * d, b * k * d) } else { (0, 0) };
    ws.dun.resize(dun_len, 0.0);
    ws.drn.resize(drn_len, 0.0);
    let common = Common {
        how,
        batch,
        d,
        s,
        k,
        un,
        vn,
        rn,
        column_items: &ws.column_items,
        column_offsets: &ws.column_offsets,
        grads: with_grads,
    };
    let whole = Rows {
        first: 0,
        logits: &mut ws.logits,
        own: &mut ws.own,
        losses: &mut ws.losses,
        dun: &mut ws.dun,
        drn: &mut ws.drn,
    };
    if parts == 2 && b >= 2 {
        let (first, second) = whole.split(b / 2, &common);
        funnel_kernels::par::beside(|| rows(&common, first, sweep), || rows(&common, second, sweep));
    } else {
        rows(&common, whole, sweep);
    }
    // In row order, as one thread adds them.
    let total = ws.losses.iter().fold(0.0f64, |sum, &l| sum + l);
    let loss = (total / b as f64) as f32;
    let Some(g) = grads else { return loss };

    // dVn = dL^T Un, by rows of dVn (each part sums over every batch row).
    ws.dvn.resize(s * d, 0.0);
    let logits = &ws.logits;
    if parts == 2 && s >= 2 {
        let half = s / 2;
        let (top, bottom) = ws.dvn.split_at_mut(half * d);
        funnel_kernels::par::beside(
            || gemm(half, b, d, (logits, [1, s]), (un, [d, 1]), top),
            || gemm(s - half, b, d, (&logits[half..], [1, s]), (un, [d, 1]), bottom),
        );
    } else {
        gemm(s, b, d, (logits, [1, s]), (un, [d, 1]), &mut ws.dvn);
    }
    if how.normalize {
        normalize_backward(un, &ws.dun, &ws.u_norm, d, &mut g.u);
        normalize_backward(vn, &ws.dvn, &ws.v_norm, d, &mut g.v);
        normalize_backward(rn, &ws.drn, &ws.r_norm, d, &mut g.r);
    } else {
        g.u.clone_from(&ws.dun);
        g.v.clone_from(&ws.dvn);
        g.r.clone_from(&ws.drn);
    }
    loss
}

impl<'a> Rows<'a> {
    /// The first `m` rows and the rest.
    fn split(self, m: usize, c: &Common<'_>) -> (Rows<'a>, Rows<'a>) {
        let (logits, logits2) = self.logits.split_at_mut(m * c.s);
        let (own, own2) = self.own.split_at_mut(m * c.k);
        let (losses, losses2) = self.losses.split_at_mut(m);
        let (dun, dun2) = self.dun.split_at_mut(if c.grads { m * c.d } else { 0 });
        let (drn, drn2) = self.drn.split_at_mut(if c.grads { m * c.k * c.d } else { 0 });
        (
            Rows { first: self.first, logits, own, losses, dun, drn },
            Rows { first: self.first + m, logits: logits2, own: own2, losses: losses2, dun: dun2, drn: drn2 },
        )
    }
}

fn rows(c: &Common<'_>, part: Rows<'_>, sweep: Sweep) {
    #[cfg(target_arch = "x86_64")]
    {
        let (avx512, avx2) = match sweep {
            Sweep::Widest => (true, true),
            #[cfg(test)]
            Sweep::Avx2 => (false, true),
            #[cfg(test)]
            Sweep::Baseline => (false, false),
        };
        if avx512 && std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has just been found to support AVX-512F.
            unsafe { rows_avx512(c, part) };
            return;
        }
        if avx2 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has just been found to support AVX2.
            unsafe { rows_avx2(c, part) };
            return;
        }
    }
    let _ = sweep;
    rows_lanes(c, part);
}

/// [`rows_lanes`]'s element-wise sweeps sixteen lanes at a time instead of
/// four (its reductions keep eight explicit lanes): the same operations in
/// the same order, so the same bits.
///
/// # Safety
/// The CPU must support AVX-512F (`rows` checks before calling).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_avx512(c: &Common<'_>, part: Rows<'_>) {
    rows_lanes(c, part);
}

/// [`rows_lanes`]'s sweeps eight lanes at a time instead of four: the same
/// operations in the same order, so the same bits.
///
/// # Safety
/// The CPU must support AVX2 (`rows` checks before calling).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn rows_avx2(c: &Common<'_>, part: Rows<'_>) {
    rows_lanes(c, part);
}

/// One part's rows: logits, the per-row sweep that turns them into the loss
/// and (in place) its gradient with respect to each dot product, then with
/// gradients `dUn = dL V + dOwn R` and `dRn = dOwn * U` for these rows.
#[inline(always)]
fn rows_lanes(c: &Common<'_>, part: Rows<'_>) {
    let Common { how, batch, d, s, k, un, vn, rn, column_items, column_offsets, grads } = *c;
    let Rows { first, logits, own, losses, dun, drn } = part;
    let m = losses.len();
    let b = batch.positives.len();
    let un_part = &un[first * d..(first + m) * d];
    gemm(m, d, s, (un_part, [d, 1]), (vn, [1, d]), logits);
    for i in 0..m {
        let ur = &un_part[i * d..(i + 1) * d];
        for j in 0..k {
            let rr = &rn[((first + i) * k + j) * d..((first + i) * k + j + 1) * d];
            own[i * k + j] = ur.iter().zip(rr).map(|(a, b)| a * b).sum();
        }
    }
    let candidates = batch.candidates;
    let inv_t = 1.0 / how.temperature;
    // d loss / d dot = (d loss / d logit) / T, averaged over rows.
    let scale = inv_t / b as f32;
    for i in 0..m {
        let row = first + i;
        // Weight 1 (no weights) leaves every product's bits unchanged.
        let weight = batch.weight(row);
        let scale = scale * weight;
        let pos = batch.positives[row];
        let shared = &mut logits[i * s..(i + 1) * s];
        let own = &mut own[i * k..(i + 1) * k];
        // Every column holding the row's positive is an accidental hit,
        // except the row's own column; without in-batch negatives the other
        // rows' positives are masked too. (A branch-free sweep, so it vectorizes.)
        let own_dot = shared[row];
        for ((z, &item), &offset) in shared.iter_mut().zip(column_items).zip(column_offsets) {
            let logit = *z * inv_t + offset;
            *z = if item == pos { MASKED } else { logit };
        }
        if !candidates.in_batch {
            shared[..b].fill(MASKED);
        } else if let Some(groups) = batch.groups {
            let mine = groups[row];
            for (z, &g) in shared[..b].iter_mut().zip(groups) {
                *z = if g == mine { MASKED } else { *z };
            }
        }
        if let Some(seen) = batch.seen {
            seen.shared(row).iter().for_each(|&col| shared[col as usize] = MASKED);
        }
        shared[row] = own_dot * inv_t + column_offsets[row];
        for (j, z) in own.iter_mut().enumerate() {
            *z = *z * inv_t + batch.own_offset(row, j);
        }

        losses[i] = match how.loss {
            Loss::Softmax => {
                let max = max(shared).max(max(own));
                let positive = shared[row];
                let sum = exp_shifted(shared, max) + exp_shifted(own, max);
                let factor = scale / sum;
                shared.iter_mut().chain(own.iter_mut()).for_each(|z| *z *= factor);
                shared[row] -= scale;
                (sum.ln() + max - positive) as f64 * weight as f64
            }
            Loss::Bce => {
                // Masked candidates sit at -1e9: target 0, loss and gradient 0.
                let mut row_loss = 0.0f32;
                for (col, z) in shared.iter_mut().enumerate().chain(own.iter_mut().enumerate().map(|(j, z)| (s + j, z)))
                {
                    let y = if col == row { 1.0 } else { 0.0 };
                    row_loss += z.max(0.0) - *z * y + (-z.abs()).exp().ln_1p();
                    let sigmoid = 1.0 / (1.0 + (-*z).exp());
                    *z = (sigmoid - y) * scale;
                }
                row_loss as f64 * weight as f64
            }
        };
    }
    if !grads {
        return;
    }
    gemm(m, s, d, (logits, [s, 1]), (vn, [d, 1]), dun);
    for i in 0..m {
        let ur = &un_part[i * d..(i + 1) * d];
        for j in 0..k {
            let w = own[i * k + j];
            let rr = &rn[((first + i) * k + j) * d..((first + i) * k + j + 1) * d];
            let du = &mut dun[i * d..(i + 1) * d];
            du.iter_mut().zip(rr).for_each(|(a, &x)| *a += w * x);
            let dr = &mut drn[(i * k + j) * d..(i * k + j + 1) * d];
            dr.iter_mut().zip(ur).for_each(|(a, &x)| *a = w * x);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_the_exact_value_over_every_exponent_a_softmax_sees() {
        let mut worst = 0.0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let exact = (x as f64).exp();
            let err = ((exp_nonpositive(x) as f64 - exact) / exact).abs();
            worst = worst.max(err);
        }
        // One ulp of f32 is 2^-23 ~ 1.19e-7 relative at most.
        assert!(worst < 2.0 * 1.2e-7, "worst relative error {worst:e}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-88.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(MASKED), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    #[test]
    fn exp_shifted_gives_the_same_bits_with_and_without_avx2() {
        let z: Vec<f32> = (0..1003).map(|i| ((i * 7919) % 1000) as f32 * -0.03).collect();
        // The AVX2 build, as `loss`'s AVX2 build inlines it.
        /// # Safety
        /// The CPU must support AVX2 (checked before the call).
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2")]
        unsafe fn exp_shifted_avx2(x: &mut [f32], shift: f32) -> f32 {
            exp_shifted(x, shift)
        }
        let (mut a, mut b) = (z.clone(), z.clone());
        let sum = exp_shifted(&mut a, 0.0);
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has just been found to support AVX2.
            assert_eq!(unsafe { exp_shifted_avx2(&mut b, 0.0) }.to_bits(), sum.to_bits());
            assert_eq!(a, b);
        }
        let exact: f64 = z.iter().map(|&v| (v as f64).exp()).sum();
        assert!((sum as f64 - exact).abs() / exact < 1e-6);
    }

    /// The sweep's reductions against their definitions: `f32::max` in any
    /// order, and the exponentials summed in eight lanes, element `i` into
    /// lane `i % 8` in index order, the lanes then the last `len % 8`.
    #[test]
    fn the_sweeps_reductions_give_the_bits_of_their_definitions() {
        for len in (0..200).chain([1003, 1256, 3533]) {
            let z: Vec<f32> = (0..len).map(|i| ((i * 7919) % 1000) as f32 * -0.031 + 0.5).collect();
            let expected_max = z.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            assert_eq!(max(&z).to_bits(), expected_max.to_bits(), "max of {len}");
            let mut with_nan = z.clone();
            if len > 3 {
                with_nan[len / 2] = f32::NAN;
                let expected = with_nan.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                assert_eq!(max(&with_nan).to_bits(), expected.to_bits(), "max of {len} with a NaN");
            }
            let shift = expected_max;
            let exps: Vec<f32> = z.iter().map(|&v| exp_nonpositive(v - shift)).collect();
            let mut lanes = [0.0f32; 8];
            let whole = len / 8 * 8;
            exps[..whole].iter().enumerate().for_each(|(i, &v)| lanes[i % 8] += v);
            let expected_sum: f32 = lanes.iter().chain(&exps[whole..]).sum();
            let mut x = z.clone();
            assert_eq!(exp_shifted(&mut x, shift).to_bits(), expected_sum.to_bits(), "sum of {len}");
            assert_eq!(x, exps);
        }
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    /// Every row's additive terms: shared columns, then its own.
    fn offsets(positives: &[ItemIdx], c: &Candidates) -> Vec<f32> {
        let batch = Batch { positives, candidates: c, groups: None, seen: None, weights: &[] };
        let (b, k) = (positives.len(), c.per_row.len() / positives.len());
        let mut out = Vec::new();
        for row in 0..b {
            out.extend((0..b + c.shared.len()).map(|col| batch.shared_offset(row, col)));
            out.extend((0..k).map(|j| batch.own_offset(row, j)));
        }
        out
    }

    fn candidates(shared: &[ItemIdx], shared_log_q: &[f32], positive_log_q: &[f32]) -> Candidates {
        Candidates {
            shared: shared.to_vec(),
            shared_log_q: shared_log_q.to_vec(),
            positive_log_q: positive_log_q.to_vec(),
            log_q_correction: true,
            ..Default::default()
        }
    }

    #[test]
    fn offsets_mask_accidental_hits_and_subtract_log_q() {
        // Two rows with positives 4 and 4 (a duplicate), shared negatives [4, 1].
        let mut c = candidates(&[4, 1], &[-1.0, -3.0], &[-2.0, -2.5]);
        // Without in-batch negatives the other row's positive is masked.
        assert_eq!(offsets(&[4, 4], &c), vec![2.0, MASKED, MASKED, 3.0, MASKED, 2.5, MASKED, 3.0]);
        c.in_batch = true;
        // In-batch, the duplicate positive is still an accidental hit.
        assert_eq!(offsets(&[4, 4], &c), vec![2.0, MASKED, MASKED, 3.0, MASKED, 2.5, MASKED, 3.0]);
        assert_eq!(offsets(&[4, 5], &c), vec![2.0, 2.5, MASKED, 3.0, 2.0, 2.5, 1.0, 3.0]);
    }

    #[test]
    fn per_row_offsets_mask_each_rows_own_accidental_hits() {
        let mut c = candidates(&[], &[], &[-1.0, -1.0]);
        c.log_q_correction = false;
        c.per_row = vec![6, 4, 5, 0];
        c.per_row_log_q = vec![-1.0; 4];
        assert_eq!(offsets(&[4, 5], &c), vec![0.0, MASKED, 0.0, MASKED, MASKED, 0.0, MASKED, 0.0]);
        // The last own negative of each row is explicit (weight e^1 and
        // e^0.5): its -ln w is subtracted though correction is off, and
        // row 1's (its own positive) is padding, masked.
        c.explicit = 1;
        c.per_row = vec![6, 4, 0, 5];
        c.per_row_log_q = vec![-1.0, -1.0, -1.0, -0.5];
        assert_eq!(offsets(&[4, 5], &c), vec![0.0, MASKED, 0.0, MASKED, MASKED, 0.0, 0.0, MASKED]);
        c.per_row = vec![6, 2, 0, 1];
        assert_eq!(offsets(&[4, 5], &c), vec![0.0, MASKED, 0.0, 1.0, MASKED, 0.0, 0.0, 0.5]);
        c.log_q_correction = true;
        assert_eq!(offsets(&[4, 5], &c), vec![1.0, MASKED, 1.0, 1.0, MASKED, 1.0, 1.0, 0.5]);
    }

    #[test]
    fn softmax_loss_and_gradient_match_a_hand_computation() {
        // One row, d = 1: u = 2, candidates v = [1 (positive), -1, 0.5],
        // temperature 0.5, no correction: logits 4, -4, 2.
        let c = candidates(&[8, 9], &[0.0, 0.0], &[0.0]);
        let c = Candidates { log_q_correction: false, ..c };
        let batch = Batch { positives: &[7], candidates: &c, groups: None, seen: None, weights: &[] };
        let how = Logits { temperature: 0.5, normalize: false, loss: Loss::Softmax };
        let mut g = VectorGradients::default();
        let l = loss(how, &batch, 1, (&[2.0], &[1.0, -1.0, 0.5], &[]), &mut Workspace::default(), Some(&mut g));
        let z = [4.0f32, -4.0, 2.0];
        let lse = z.iter().map(|z| z.exp()).sum::<f32>().ln();
        assert!((l - (lse - 4.0)).abs() < 1e-5);
        let p: Vec<f32> = z.iter().map(|z| (z - lse).exp()).collect();
        // dL/dz = p - onehot; dz/du = v / T; dz/dv = u / T.
        let du = ((p[0] - 1.0) * 1.0 - p[1] + p[2] * 0.5) / 0.5;
        assert!((g.u[0] - du).abs() < 1e-5, "{} vs {du}", g.u[0]);
        let dv = [(p[0] - 1.0) * 2.0 / 0.5, p[1] * 2.0 / 0.5, p[2] * 2.0 / 0.5];
        for (a, b) in g.v.iter().zip(dv) {
            assert!((a - b).abs() < 1e-5, "{:?} vs {dv:?}", g.v);
        }
    }

    #[test]
    fn weighted_softmax_with_explicit_negatives_matches_a_hand_computation() {
        // d = 1, T = 1, no log q correction, no in-batch negatives. Row 0:
        // u = 2, positive 7 (v = 1), shared negative 8 (v = -1), own
        // negatives 9 (sampled, r = 0.5), 5 (explicit, weight 2, r = 0.25)
        // and 7 (explicit padding, r = 3). Row 1: u = -1, positive 6
        // (v = 0.5), own 4 (r = 1), 3 (explicit, weight 2, r = -2), 6
        // (padding, r = 1). Row weights 0.5 and 2.
        let ln2 = std::f32::consts::LN_2;
        let c = Candidates {
            shared: vec![8],
            shared_log_q: vec![-3.0],
            per_row: vec![9, 5, 7, 4, 3, 6],
            per_row_log_q: vec![-0.5, -ln2, 0.0, -0.5, -ln2, 0.0],
            positive_log_q: vec![-1.0, -1.0],
            explicit: 2,
            ..Default::default()
        };
        let weights = [0.5f32, 2.0];
        let batch = Batch { positives: &[7, 6], candidates: &c, groups: None, seen: None, weights: &weights };
        let how = Logits { temperature: 1.0, normalize: false, loss: Loss::Softmax };
        let (u, v, r) = ([2.0f32, -1.0], [1.0f32, 0.5, -1.0], [0.5f32, 0.25, 3.0, 1.0, -2.0, 1.0]);
        let mut g = VectorGradients::default();
        let l = loss(how, &batch, 1, (&u, &v, &r), &mut Workspace::default(), Some(&mut g));
        // Logits of [own positive, shared negative, sampled, explicit]: the
        // explicit one gains ln 2, counting twice in the sum.
        let rows = [[2.0f32, -2.0, 1.0, 0.5 + ln2], [-0.5, 1.0, -1.0, 2.0 + ln2]];
        let lse = |z: &[f32; 4]| z.iter().map(|z| z.exp()).sum::<f32>().ln();
        let expected = (0.5 * (lse(&rows[0]) - 2.0) + 2.0 * (lse(&rows[1]) + 0.5)) / 2.0;
        assert!((l - expected).abs() < 1e-5, "{l} vs {expected}");
        // dL/dz = w (p - onehot) / B; dz/du is the candidate's vector, dz/dr is u.
        let p = |row: usize| rows[row].map(|z| (z - lse(&rows[row])).exp());
        let (p0, p1) = (p(0), p(1));
        let du0 = 0.25 * ((p0[0] - 1.0) - p0[1] + p0[2] * 0.5 + p0[3] * 0.25);
        let du1 = (p1[0] - 1.0) * 0.5 - p1[1] + p1[2] - p1[3] * 2.0;
        for (a, b) in g.u.iter().zip([du0, du1]) {
            assert!((a - b).abs() < 1e-5, "{:?} vs {:?}", g.u, [du0, du1]);
        }
        let dr = [0.25 * p0[2] * 2.0, 0.25 * p0[3] * 2.0, 0.0, -p1[2], -p1[3], 0.0];
        for (a, b) in g.r.iter().zip(dr) {
            assert!((a - b).abs() < 1e-5, "{:?} vs {dr:?}", g.r);
        }
        // Row 0's positive 7 in the shared columns: row 1 masks it.
        let dv = [0.25 * (p0[0] - 1.0) * 2.0, 1.0 - p1[0], 0.25 * p0[1] * 2.0 - p1[1]];
        for (a, b) in g.v.iter().zip(dv) {
            assert!((a - b).abs() < 1e-5, "{:?} vs {dv:?}", g.v);
        }
    }

    /// The loss written the slow, obvious way from the offset definitions.
    fn reference_loss(how: Logits, batch: &Batch<'_>, d: usize, u: &[f32], v: &[f32], r: &[f32]) -> f32 {
        let b = batch.positives.len();
        let (s, k) = (v.len() / d, r.len() / d / b);
        let unit = |x: &[f32]| -> Vec<f32> {
            let n = (x.iter().map(|a| a * a).sum::<f32>() + 1e-12).sqrt();
            x.iter().map(|a| if how.normalize { a / n } else { *a }).collect()
        };
        let dot = |a: &[f32], b: &[f32]| unit(a).iter().zip(unit(b)).map(|(x, y)| x * y).sum::<f32>();
        let mut total = 0.0;
        for row in 0..b {
            let ur = &u[row * d..(row + 1) * d];
            let mut z: Vec<f32> = (0..s)
                .map(|c| dot(ur, &v[c * d..(c + 1) * d]) / how.temperature + batch.shared_offset(row, c))
                .collect();
            z.extend((0..k).map(|j| {
                dot(ur, &r[(row * k + j) * d..(row * k + j + 1) * d]) / how.temperature + batch.own_offset(row, j)
            }));
            total += batch.weight(row)
                * match how.loss {
                    Loss::Softmax => z.iter().map(|x| x.exp()).sum::<f32>().ln() - z[row],
                    Loss::Bce => z
                        .iter()
                        .enumerate()
                        .map(|(c, &x)| if c == row { (1.0 + (-x).exp()).ln() } else { (1.0 + x.exp()).ln() })
                        .sum(),
                };
        }
        total / b as f32
    }

    #[test]
    fn two_parts_give_the_bits_of_one_at_training_sizes() {
        // Sizes where the products take several of matrixmultiply's blocks.
        let (b, extra, k, d) = (301, 700, 3, 64);
        let value = |i: usize| ((i.wrapping_mul(2_654_435_761) % 1000) as f32 / 1000.0 - 0.5) * 0.4;
        let positives: Vec<ItemIdx> = (0..b).map(|i| (i * 13 % 997) as ItemIdx).collect();
        let c = Candidates {
            shared: (0..extra).map(|i| (i * 7 % 1001) as ItemIdx).collect(),
            shared_log_q: (0..extra).map(|i| -1.0 - value(i).abs()).collect(),
            per_row: (0..b * k).map(|i| (i * 11 % 1003) as ItemIdx).collect(),
            per_row_log_q: (0..b * k).map(|i| -2.0 - value(i + 5).abs()).collect(),
            in_batch: true,
            positive_log_q: (0..b).map(|i| -1.5 - value(i + 9).abs()).collect(),
            log_q_correction: true,
            explicit: 1,
        };
        let groups: Vec<u32> = (0..b as u32).map(|i| i / 20).collect();
        let weights: Vec<f32> = (0..b).map(|i| 0.5 + (i % 3) as f32 * 0.5).collect();
        let u: Vec<f32> = (0..b * d).map(value).collect();
        let v: Vec<f32> = (0..(b + extra) * d).map(|i| value(i + 3)).collect();
        let r: Vec<f32> = (0..b * k * d).map(|i| value(i + 7)).collect();
        for (loss_kind, normalize) in [(Loss::Softmax, false), (Loss::Softmax, true), (Loss::Bce, false)] {
            let how = Logits { temperature: 0.1, normalize, loss: loss_kind };
            let batch =
                Batch { positives: &positives, candidates: &c, groups: Some(&groups), seen: None, weights: &weights };
            let run = |parts, sweep| {
                let mut g = VectorGradients::default();
                let ws = &mut Workspace::default();
                let l = loss_in_parts(how, &batch, d, (&u, &v, &r), ws, Some(&mut g), parts, sweep);
                (l.to_bits(), g.u, g.v, g.r)
            };
            let (one, two) = (run(1, Sweep::Widest), run(2, Sweep::Widest));
            assert!(one.1.iter().chain(&one.2).chain(&one.3).any(|&x| x != 0.0));
            assert!(one == two, "{how:?}: two parts differ from one");
            assert!(run(1, Sweep::Avx2) == one, "{how:?}: the AVX2 build differs");
            assert!(run(1, Sweep::Baseline) == one, "{how:?}: the baseline build differs");
        }
    }

    #[test]
    fn the_fused_sweep_equals_the_definition_on_every_masking_case() {
        // Positives with a duplicate (rows 0 and 2), a shared negative equal to
        // row 1's positive, per-row negatives hitting their row's positive.
        let positives = [3, 5, 3];
        let d = 2;
        let vector = |i: usize| [((i * 7) % 5) as f32 * 0.3 - 0.6, ((i * 3) % 4) as f32 * 0.25 - 0.4];
        let u: Vec<f32> = (0..3).flat_map(|i| vector(i + 11)).collect();
        let v: Vec<f32> = (0..5).flat_map(vector).collect();
        let r: Vec<f32> = (0..6).flat_map(|i| vector(i + 20)).collect();
        // Rows 1 and 2 from one window, or no windows; unweighted, or
        // weighted with each row's last own negative explicit (row 1's is
        // padding).
        let cases = [(false, None), (true, None), (true, Some(&[0u32, 1, 1][..]))].into_iter().flat_map(
            |(in_batch, groups)| [(in_batch, groups, 0, &[][..]), (in_batch, groups, 1, &[0.5, 2.0, 1.5][..])],
        );
        // Seen candidates: rows 1 and 2 share a set holding item 8 (shared
        // column 4) and row 0's positive (column 0); row 0's set holds item 5
        // (columns 1 and 3) and its own negative 9 (j = 1).
        let seen = SeenColumns {
            set_of_row: vec![0, 1, 1],
            starts: vec![0, 2, 4],
            columns: vec![1, 3, 0, 4],
            own_starts: vec![0, 1, 1, 1],
            own: vec![1],
        };
        let cases = cases.flat_map(|case| [(case, None), (case, Some(&seen))]);
        for ((in_batch, groups, explicit, weights), seen) in cases {
            for correction in [false, true] {
                for (loss_kind, normalize) in [(Loss::Softmax, false), (Loss::Softmax, true), (Loss::Bce, false)] {
                    let c = Candidates {
                        shared: vec![5, 8],
                        shared_log_q: vec![-1.0, -2.0],
                        per_row: vec![3, 9, 1, 5, 2, 4],
                        per_row_log_q: vec![-0.5, -1.5, -2.5, -1.0, -2.0, -3.0],
                        in_batch,
                        positive_log_q: vec![-1.2, -0.7, -1.2],
                        log_q_correction: correction,
                        explicit,
                    };
                    let batch = Batch { positives: &positives, candidates: &c, groups, seen, weights };
                    let how = Logits { temperature: 0.7, normalize, loss: loss_kind };
                    let mut g = VectorGradients::default();
                    let fused = loss(how, &batch, d, (&u, &v, &r), &mut Workspace::default(), Some(&mut g));
                    let expected = reference_loss(how, &batch, d, &u, &v, &r);
                    assert!(
                        (fused - expected).abs() < 1e-5,
                        "{fused} vs {expected} ({in_batch}, {correction}, {explicit}, {}, {how:?})",
                        seen.is_some()
                    );
                    // The baseline build of the sweeps gives the same bits.
                    let mut g4 = VectorGradients::default();
                    let lanes = loss_in_parts(
                        how,
                        &batch,
                        d,
                        (&u, &v, &r),
                        &mut Workspace::default(),
                        Some(&mut g4),
                        1,
                        Sweep::Baseline,
                    );
                    assert_eq!(lanes.to_bits(), fused.to_bits());
                    assert_eq!((&g4.u, &g4.v, &g4.r), (&g.u, &g.v, &g.r));
                    // And the AVX2 one (where the widest is AVX-512).
                    let mut g8 = VectorGradients::default();
                    let ws = &mut Workspace::default();
                    let avx2 = loss_in_parts(how, &batch, d, (&u, &v, &r), ws, Some(&mut g8), 1, Sweep::Avx2);
                    assert_eq!(avx2.to_bits(), fused.to_bits());
                    assert_eq!((&g8.u, &g8.v, &g8.r), (&g.u, &g.v, &g.r));
                    // So do two parts (rows split at row 1, candidate rows at 2).
                    let mut g2 = VectorGradients::default();
                    let ws = &mut Workspace::default();
                    let split = loss_in_parts(how, &batch, d, (&u, &v, &r), ws, Some(&mut g2), 2, Sweep::Widest);
                    assert_eq!(split.to_bits(), fused.to_bits());
                    assert_eq!((&g2.u, &g2.v, &g2.r), (&g.u, &g.v, &g.r));
                }
            }
        }
    }

    #[test]
    fn a_seen_candidate_counts_as_if_it_were_absent() {
        // Row 0 (positive 3) has seen items 5 and 8: shared columns 1 (row 1's
        // positive) and 3 (negative 8) and its own negative 8 leave its
        // softmax, which keeps column 0 (its positive), column 2 (negative 9)
        // and its own negative 1. Row 1 (positive 5) has seen nothing.
        let positives = [3, 5];
        let c = Candidates {
            shared: vec![9, 8],
            shared_log_q: vec![0.0; 2],
            per_row: vec![8, 1, 2, 6],
            per_row_log_q: vec![0.0; 4],
            in_batch: true,
            positive_log_q: vec![0.0; 2],
            ..Default::default()
        };
        let seen = SeenColumns {
            set_of_row: vec![0, 1],
            starts: vec![0, 2, 2],
            columns: vec![1, 3],
            own_starts: vec![0, 1, 1],
            own: vec![0],
        };
        let d = 1;
        let (u, v, r) = ([1.0f32, 0.5], [0.2f32, -0.4, 0.9, 0.3], [0.7f32, -0.1, 0.6, 0.8]);
        let how = Logits { temperature: 1.0, normalize: false, loss: Loss::Softmax };
        let batch = Batch { positives: &positives, candidates: &c, groups: None, seen: Some(&seen), weights: &[] };
        let got = loss(how, &batch, d, (&u, &v, &r), &mut Workspace::default(), None);
        // By hand: logit = u * vector; each row's loss is logsumexp - positive.
        let row =
            |u: f32, kept: &[f32], positive: f32| kept.iter().map(|x| (u * x).exp()).sum::<f32>().ln() - u * positive;
        let row0 = row(1.0, &[0.2, 0.9, -0.1], 0.2);
        let row1 = row(0.5, &[0.2, -0.4, 0.9, 0.3, 0.6, 0.8], -0.4);
        assert!((got - (row0 + row1) / 2.0).abs() < 1e-6, "{got} vs {}", (row0 + row1) / 2.0);
    }
}
