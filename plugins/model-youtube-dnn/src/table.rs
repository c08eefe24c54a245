//! An embedding table kept outside dfdx's graph: rows are gathered for a
//! batch, and gradients of gathered rows are accumulated sparsely.

use rand::Rng;
use rand_distr::{Distribution, Normal};

use crate::adam::{Adam, Moments};
use crate::EmbeddingOptimizer;

pub struct EmbeddingTable {
    pub dim: usize,
    pub weights: Vec<f32>,
    grad: Vec<f32>,
    /// Rows with a non-zero gradient this step, each listed once.
    touched: Vec<u32>,
    is_touched: Vec<bool>,
    moments: Moments,
}

impl EmbeddingTable {
    pub fn normal(rows: usize, dim: usize, std: f32, rng: &mut impl Rng) -> EmbeddingTable {
        let normal = Normal::new(0.0, std).expect("std is checked positive when the model is built");
        EmbeddingTable {
            dim,
            weights: (0..rows * dim).map(|_| normal.sample(rng)).collect(),
            grad: vec![0.0; rows * dim],
            touched: Vec::new(),
            is_touched: vec![false; rows],
            moments: Moments::zeros(rows * dim),
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
        let ru = r as usize;
        if !self.is_touched[ru] {
            self.is_touched[ru] = true;
            self.touched.push(r);
        }
        for (acc, &x) in self.grad[ru * self.dim..(ru + 1) * self.dim].iter_mut().zip(g) {
            *acc += scale * x;
        }
    }

    #[cfg(test)]
    pub fn gradient(&self) -> &[f32] {
        &self.grad
    }

    /// Sum of squared gradient entries (only touched rows are non-zero).
    pub fn gradient_sq_norm(&self) -> f64 {
        let d = self.dim;
        self.touched
            .iter()
            .flat_map(|&r| &self.grad[r as usize * d..(r as usize + 1) * d])
            .map(|&g| g as f64 * g as f64)
            .sum()
    }

    /// Applies and clears this step's gradient.
    pub fn apply(&mut self, adam: &Adam, how: EmbeddingOptimizer) {
        match how {
            // Untouched rows have a zero gradient; their moments still decay
            // and their weights still move, as in a dense Adam step.
            EmbeddingOptimizer::Adam => adam.update(&mut self.weights, &self.grad, &mut self.moments),
            EmbeddingOptimizer::LazyAdam => {
                let d = self.dim;
                for &r in &self.touched {
                    let span = r as usize * d..(r as usize + 1) * d;
                    adam.update_slices(
                        &mut self.weights[span.clone()],
                        &self.grad[span.clone()],
                        &mut self.moments.m[span.clone()],
                        &mut self.moments.v[span],
                    );
                }
            }
        }
        self.clear_gradient();
    }

    fn clear_gradient(&mut self) {
        let d = self.dim;
        for &r in &self.touched {
            self.grad[r as usize * d..(r as usize + 1) * d].fill(0.0);
            self.is_touched[r as usize] = false;
        }
        self.touched.clear();
    }
}
