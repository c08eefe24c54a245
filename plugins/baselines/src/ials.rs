//! `[[baselines]] type = "ials"`: implicit-feedback matrix factorisation by
//! weighted alternating least squares (Hu, Koren & Volinsky, "Collaborative
//! Filtering for Implicit Feedback Datasets", ICDM 2008).
//!
//! Every (user, item) cell has a preference `p` (1 when the user consumed the
//! item in their training sequence, else 0) and a confidence `c = 1 + alpha *
//! count` (1 for an empty cell). The factors minimise
//!
//! ```text
//! sum over all cells  c_ui (p_ui - x_u . y_i)^2  +  lambda (|X|^2 + |Y|^2)
//! ```
//!
//! by alternating exact solves: with `Y` fixed, user `u`'s factor solves the
//! d x d system `(YtY + sum_{i in I_u} (c_ui - 1) y_i y_i^t + lambda I) x_u =
//! sum_{i in I_u} c_ui y_i` (Cholesky), where the Gramian `YtY` is computed
//! once per sweep; then the same for items with `X` fixed. A sweep costs
//! O(nnz d^2 + (users + items) d^3).
//!
//! A case is scored by folding its whole history in: the user factor is
//! solved from the history's items against the fitted `Y` (the same solve as
//! in training), so the test case also uses the validation item that follows
//! the training sequence, as `covisitation` does, and a user the fit never saw
//! still gets recommendations.

use std::fmt::Write as _;

use funnel_api::anyhow::{bail, Result};
use funnel_api::{Baseline, ExampleSet, ItemIdx, UserIdx};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::covisitation::training_ends;

/// Parameters of `ials`.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IalsParams {
    /// Length of the user and item factors; at least 1.
    #[serde(deserialize_with = "crate::bounds::at_least_one")]
    #[param(default = 64)]
    pub factors: usize,
    /// Confidence of a consumed item: 1 + alpha * times consumed; at least 0.
    #[serde(deserialize_with = "crate::bounds::non_negative")]
    #[param(default = 1.0)]
    pub alpha: f64,
    /// L2 penalty lambda on every factor; above 0.
    #[serde(deserialize_with = "crate::bounds::positive")]
    #[param(default = 30.0)]
    pub regularization: f64,
    /// Alternating sweeps (users, then items); at least 1.
    #[serde(deserialize_with = "crate::bounds::at_least_one")]
    #[param(default = 15)]
    pub iterations: usize,
    /// Standard deviation of the normal-ish initial item factors, divided by
    /// sqrt(factors).
    #[param(default = 0.1)]
    pub init_std: f64,
}

/// The fitted factors.
#[derive(Debug, Clone, Default)]
pub struct Ials {
    params: IalsParams,
    seed: u64,
    n_items: usize,
    /// Item factors, row-major `n_items x factors`.
    items: Vec<f64>,
    /// `Y^t Y`, row-major `factors x factors`.
    gramian: Vec<f64>,
    /// The objective after each sweep.
    losses: Vec<f64>,
}

/// Observed cells of one side: row `r`'s columns are
/// `cols[offsets[r]..offsets[r + 1]]`, each with its count.
#[derive(Debug, Clone, Default)]
struct Sparse {
    offsets: Vec<usize>,
    cols: Vec<u32>,
    counts: Vec<f64>,
}

impl Sparse {
    /// From (row, col) pairs, repeated pairs counted.
    fn from_pairs(rows: usize, mut pairs: Vec<(u32, u32)>) -> Sparse {
        pairs.sort_unstable();
        let mut s = Sparse { offsets: vec![0; rows + 1], ..Default::default() };
        let mut last = None;
        for (r, c) in pairs {
            if last == Some((r, c)) {
                *s.counts.last_mut().expect("a pair was pushed") += 1.0;
                continue;
            }
            last = Some((r, c));
            s.offsets[r as usize + 1] += 1;
            s.cols.push(c);
            s.counts.push(1.0);
        }
        for r in 0..rows {
            s.offsets[r + 1] += s.offsets[r];
        }
        s
    }

    fn row(&self, r: usize) -> (&[u32], &[f64]) {
        let range = self.offsets[r]..self.offsets[r + 1];
        (&self.cols[range.clone()], &self.counts[range])
    }
}

impl Ials {
    pub fn new(params: IalsParams, seed: u64) -> Ials {
        Ials { params, seed, ..Default::default() }
    }

    /// The objective after each sweep, first to last.
    pub fn losses(&self) -> &[f64] {
        &self.losses
    }

    /// Item `i`'s factor.
    pub fn item_factor(&self, i: usize) -> &[f64] {
        let d = self.params.factors;
        &self.items[i * d..(i + 1) * d]
    }

    /// The factor of a user who consumed `cols` `counts` times, against the
    /// fitted item factors.
    pub fn fold_in(&self, cols: &[u32], counts: &[f64]) -> Vec<f64> {
        let mut scratch = Solver::new(self.params.factors);
        let mut x = vec![0.0; self.params.factors];
        scratch.solve(&self.gramian, &self.items, cols, counts, &self.params, &mut x);
        x
    }

    /// Fits the factors to the cells `(user, item)` (a repeated pair counts
    /// twice).
    pub fn fit_pairs(&mut self, users: usize, n_items: usize, pairs: &[(u32, u32)]) -> Result<()> {
        let d = self.params.factors;
        if let Some(&(u, i)) = pairs.iter().find(|&&(u, i)| u as usize >= users || i as usize >= n_items) {
            bail!("cell ({u}, {i}) is outside {users} users x {n_items} items");
        }
        let by_user = Sparse::from_pairs(users, pairs.to_vec());
        let by_item = Sparse::from_pairs(n_items, pairs.iter().map(|&(u, i)| (i, u)).collect());
        self.n_items = n_items;
        let scale = self.params.init_std / (d as f64).sqrt();
        self.items = (0..n_items * d).map(|k| scale * centred_noise(self.seed, k as u64)).collect();
        let mut user_factors = vec![0.0; users * d];
        self.losses.clear();
        for _ in 0..self.params.iterations {
            let gy = gramian(&self.items, d);
            solve_side(&by_user, &gy, &self.items, &self.params, &mut user_factors);
            let gx = gramian(&user_factors, d);
            solve_side(&by_item, &gx, &user_factors, &self.params, &mut self.items);
            self.losses.push(self.objective(&by_user, &user_factors));
        }
        self.gramian = gramian(&self.items, d);
        Ok(())
    }

    /// `sum c (p - x.y)^2 + lambda (|X|^2 + |Y|^2)`, with the sum over empty
    /// cells taken through the Gramian: `sum_u x_u^t (Y^t Y) x_u` over all
    /// cells, corrected on the observed ones.
    fn objective(&self, by_user: &Sparse, user_factors: &[f64]) -> f64 {
        let d = self.params.factors;
        let gy = gramian(&self.items, d);
        let mut total = 0.0;
        for (u, x) in user_factors.chunks_exact(d).enumerate() {
            for a in 0..d {
                for b in 0..d {
                    total += x[a] * gy[a * d + b] * x[b];
                }
            }
            let (cols, counts) = by_user.row(u);
            for (&i, &n) in cols.iter().zip(counts) {
                let s = dot(x, self.item_factor(i as usize));
                let c = 1.0 + self.params.alpha * n;
                total += c * (1.0 - s) * (1.0 - s) - s * s;
            }
        }
        let norms: f64 = user_factors.iter().chain(&self.items).map(|v| v * v).sum();
        total + self.params.regularization * norms
    }
}

/// Solves every row of `side` against the fixed `other` factors.
fn solve_side(side: &Sparse, gramian: &[f64], other: &[f64], params: &IalsParams, out: &mut [f64]) {
    let d = params.factors;
    out.par_chunks_mut(d).enumerate().for_each_init(
        || Solver::new(d),
        |solver, (r, x)| {
            let (cols, counts) = side.row(r);
            solver.solve(gramian, other, cols, counts, params, x);
        },
    );
}

/// One row's d x d system, reused across rows of a thread.
struct Solver {
    a: Vec<f64>,
    b: Vec<f64>,
}

impl Solver {
    fn new(d: usize) -> Solver {
        Solver { a: vec![0.0; d * d], b: vec![0.0; d] }
    }

    /// `x = (G + sum (c - 1) y y^t + lambda I)^-1 sum c y` over the row's
    /// observed columns; a row without any gets x = 0 (the exact solution).
    fn solve(&mut self, gramian: &[f64], other: &[f64], cols: &[u32], counts: &[f64], p: &IalsParams, x: &mut [f64]) {
        let d = p.factors;
        self.a.copy_from_slice(gramian);
        self.b.iter_mut().for_each(|v| *v = 0.0);
        for k in 0..d {
            self.a[k * d + k] += p.regularization;
        }
        for (&j, &n) in cols.iter().zip(counts) {
            let y = &other[j as usize * d..(j as usize + 1) * d];
            let c = 1.0 + p.alpha * n;
            for a in 0..d {
                let w = (c - 1.0) * y[a];
                let row = &mut self.a[a * d..(a + 1) * d];
                for (r, &yb) in row.iter_mut().zip(y) {
                    *r += w * yb;
                }
                self.b[a] += c * y[a];
            }
        }
        cholesky_solve(&mut self.a, &mut self.b, d);
        x.copy_from_slice(&self.b);
    }
}

/// Solves `a x = b` in place for a symmetric positive definite `a`
/// (row-major d x d, overwritten by its Cholesky factor); `b` becomes `x`.
fn cholesky_solve(a: &mut [f64], b: &mut [f64], d: usize) {
    for j in 0..d {
        let mut diag = a[j * d + j];
        for k in 0..j {
            diag -= a[j * d + k] * a[j * d + k];
        }
        let l = diag.max(f64::MIN_POSITIVE).sqrt();
        a[j * d + j] = l;
        for i in j + 1..d {
            let mut v = a[i * d + j];
            for k in 0..j {
                v -= a[i * d + k] * a[j * d + k];
            }
            a[i * d + j] = v / l;
        }
    }
    for i in 0..d {
        let mut v = b[i];
        for k in 0..i {
            v -= a[i * d + k] * b[k];
        }
        b[i] = v / a[i * d + i];
    }
    for i in (0..d).rev() {
        let mut v = b[i];
        for k in i + 1..d {
            v -= a[k * d + i] * b[k];
        }
        b[i] = v / a[i * d + i];
    }
}

/// `F^t F` of row-major `rows x d` factors.
fn gramian(factors: &[f64], d: usize) -> Vec<f64> {
    let mut g = vec![0.0; d * d];
    for f in factors.chunks_exact(d) {
        for a in 0..d {
            let fa = f[a];
            for b in a..d {
                g[a * d + b] += fa * f[b];
            }
        }
    }
    for a in 0..d {
        for b in 0..a {
            g[a * d + b] = g[b * d + a];
        }
    }
    g
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A deterministic value in [-sqrt(3), sqrt(3)] (unit variance) from the
/// seed and position: splitmix64, so the fit needs no RNG crate.
fn centred_noise(seed: u64, k: u64) -> f64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(k.wrapping_add(1)));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    (unit * 2.0 - 1.0) * 3f64.sqrt()
}

impl Baseline for Ials {
    fn fit(&mut self, examples: &ExampleSet, n_items: usize) -> Result<()> {
        let ends = training_ends(examples)?;
        let mut pairs = Vec::new();
        for (u, seq) in examples.sequences.iter().enumerate() {
            pairs.extend(seq[..ends[u]].iter().map(|&i| (u as u32, i)));
        }
        self.fit_pairs(examples.sequences.len(), n_items, &pairs)
    }

    fn score(&self, _user: UserIdx, history: &[ItemIdx], out: &mut [f32]) {
        let mut items: Vec<u32> = history.to_vec();
        items.sort_unstable();
        let mut cols = Vec::with_capacity(items.len());
        let mut counts: Vec<f64> = Vec::with_capacity(items.len());
        for i in items {
            if cols.last() == Some(&i) {
                *counts.last_mut().expect("pushed with its column") += 1.0;
            } else if (i as usize) < self.n_items {
                cols.push(i);
                counts.push(1.0);
            }
        }
        let x = self.fold_in(&cols, &counts);
        for (i, o) in out.iter_mut().enumerate().take(self.n_items) {
            *o = dot(&x, self.item_factor(i)) as f32;
        }
    }

    fn parameter_count(&self) -> usize {
        self.items.len()
    }

    fn fit_summary(&self) -> Option<String> {
        let mut s = String::from("training objective by sweep:");
        for l in &self.losses {
            let _ = write!(s, " {l:.1}");
        }
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(factors: usize, iterations: usize) -> IalsParams {
        IalsParams { factors, alpha: 3.0, regularization: 0.5, iterations, init_std: 0.1 }
    }

    /// Gaussian elimination with partial pivoting on a dense copy: an
    /// independent check of the Cholesky path.
    fn dense_solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
        let n = b.len();
        for col in 0..n {
            let pivot = (col..n).max_by(|&x, &y| a[x][col].abs().total_cmp(&a[y][col].abs())).unwrap();
            a.swap(col, pivot);
            b.swap(col, pivot);
            let pivot_row = a[col].clone();
            for row in col + 1..n {
                let f = a[row][col] / pivot_row[col];
                for (v, p) in a[row].iter_mut().zip(&pivot_row).skip(col) {
                    *v -= f * p;
                }
                b[row] -= f * b[col];
            }
        }
        let mut x = vec![0.0; n];
        for row in (0..n).rev() {
            let s: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
            x[row] = (b[row] - s) / a[row][row];
        }
        x
    }

    /// The user factor the paper's formula gives, with the confidence of
    /// every cell written out: `(Y^t C_u Y + lambda I)^-1 Y^t C_u p_u`.
    fn direct_user_factor(m: &Ials, n_items: usize, observed: &[(usize, f64)]) -> Vec<f64> {
        let d = m.params.factors;
        let mut a = vec![vec![0.0; d]; d];
        let mut b = vec![0.0; d];
        for i in 0..n_items {
            let n = observed.iter().find(|o| o.0 == i).map_or(0.0, |o| o.1);
            let (c, p) = (1.0 + m.params.alpha * n, if n > 0.0 { 1.0 } else { 0.0 });
            let y = m.item_factor(i);
            for r in 0..d {
                for s in 0..d {
                    a[r][s] += c * y[r] * y[s];
                }
                b[r] += c * p * y[r];
            }
        }
        for (r, row) in a.iter_mut().enumerate() {
            row[r] += m.params.regularization;
        }
        dense_solve(a, b)
    }

    const CELLS: [(u32, u32); 9] = [(0, 0), (0, 1), (0, 1), (1, 1), (1, 2), (2, 0), (2, 3), (3, 2), (3, 3)];

    #[test]
    fn a_fold_in_is_the_direct_dense_solve_of_the_papers_formula() {
        let mut m = Ials::new(params(2, 4), 7);
        m.fit_pairs(4, 4, &CELLS).unwrap();
        // User 0 consumed item 0 once and item 1 twice.
        let x = m.fold_in(&[0, 1], &[1.0, 2.0]);
        let direct = direct_user_factor(&m, 4, &[(0, 1.0), (1, 2.0)]);
        for (a, b) in x.iter().zip(&direct) {
            assert!((a - b).abs() < 1e-10, "{x:?} vs {direct:?}");
        }
        // Nothing consumed: the exact solution is the zero vector.
        assert_eq!(m.fold_in(&[], &[]), vec![0.0, 0.0]);
    }

    #[test]
    fn the_objective_never_rises_and_matches_the_cell_by_cell_sum() {
        let mut m = Ials::new(params(3, 8), 11);
        m.fit_pairs(4, 4, &CELLS).unwrap();
        let l = m.losses();
        assert_eq!(l.len(), 8);
        for w in l.windows(2) {
            assert!(w[1] <= w[0] + 1e-9, "the objective rose: {l:?}");
        }
        assert!(l[7] < l[0], "{l:?}");
        // The Gramian shortcut against every cell written out.
        let by_user = Sparse::from_pairs(4, CELLS.to_vec());
        let users: Vec<f64> = (0..4)
            .flat_map(|u| {
                let (cols, counts) = by_user.row(u);
                m.fold_in(cols, counts)
            })
            .collect();
        let mut brute = 0.0;
        for u in 0..4 {
            let (cols, counts) = by_user.row(u);
            for i in 0..4 {
                let n = cols.iter().position(|&c| c as usize == i).map_or(0.0, |k| counts[k]);
                let s = dot(&users[u * 3..(u + 1) * 3], m.item_factor(i));
                let p = if n > 0.0 { 1.0 } else { 0.0 };
                brute += (1.0 + m.params.alpha * n) * (p - s) * (p - s);
            }
        }
        brute += m.params.regularization * users.iter().chain(&m.items).map(|v| v * v).sum::<f64>();
        let shortcut = m.objective(&by_user, &users);
        assert!((brute - shortcut).abs() < 1e-9 * brute.abs().max(1.0), "{brute} vs {shortcut}");
    }

    #[test]
    fn consumed_items_score_above_the_rest_and_the_fit_is_deterministic() {
        // Two groups of users with disjoint tastes.
        let mut cells = Vec::new();
        for u in 0..20u32 {
            let base = if u < 10 { 0 } else { 5 };
            for k in 0..4 {
                cells.push((u, base + (u + k) % 5));
            }
        }
        let fit = || {
            let mut m = Ials::new(IalsParams { factors: 4, ..params(4, 10) }, 3);
            m.fit_pairs(20, 10, &cells).unwrap();
            m
        };
        let m = fit();
        let mut out = vec![0f32; 10];
        m.score(0, &[0, 1], &mut out);
        let best_other_group = out[5..].iter().copied().fold(f32::MIN, f32::max);
        assert!(out[2] > best_other_group && out[3] > best_other_group, "{out:?}");
        let mut again = vec![0f32; 10];
        fit().score(0, &[0, 1], &mut again);
        assert_eq!(out, again);
        assert!(m.fit_summary().unwrap().starts_with("training objective by sweep: "));
    }

    #[test]
    fn cells_outside_the_matrix_are_an_error() {
        let e = Ials::new(params(2, 1), 0).fit_pairs(2, 2, &[(0, 5)]).unwrap_err().to_string();
        assert!(e.contains("(0, 5) is outside 2 users x 2 items"), "{e}");
    }
}
