//! A GRU over the history in time order (PyTorch's formulation), pooled to
//! one vector by its last state or an element-wise max over its states.
//!
//! Histories are left-aligned with padding after the real items, so a row's
//! state stops changing after its last item (masked updates) and its last
//! state is the state after its most recent item.

use dfdx::prelude::*;
use rand::Rng;

use crate::dense::{affine, Layer, LayerTensors, Mat, ParamMut, ParamRef};
use crate::Pooling;

/// Added to padded steps before max pooling: below any real state.
const PADDED: f32 = -1.0e9;

/// The gates, in order: input→reset, input→update, input→new,
/// hidden→reset, hidden→update, hidden→new.
const GATES: [&str; 6] = ["input_reset", "input_update", "input_new", "hidden_reset", "hidden_update", "hidden_new"];

pub struct Gru {
    pub hidden: usize,
    pooling: Pooling,
    gates: Vec<Layer>,
}

/// One batch's steps: `x[t]` is `[B, d]` (zeros where padded), `mask[t]` is
/// `[B, hidden]` with 1 where step `t` is a real item, `any` 1 for rows
/// with at least one item.
pub struct Steps<D: Device<f32>> {
    pub x: Vec<Mat<D>>,
    pub mask: Vec<Mat<D>>,
    pub any: Mat<D>,
    /// The initial state.
    pub zeros: Mat<D>,
}

impl Gru {
    pub fn new(input: usize, hidden: usize, pooling: Pooling, rng: &mut impl Rng) -> Gru {
        let bound = 1.0 / (hidden as f32).sqrt();
        let gates =
            (0..6).map(|g| Layer::uniform_bound(if g < 3 { input } else { hidden }, hidden, bound, rng)).collect();
        Gru { hidden, pooling, gates }
    }

    pub fn tensors<D: Device<f32>>(&self, dev: &D) -> Vec<LayerTensors<D>> {
        self.gates.iter().map(|g| g.tensors(dev)).collect()
    }

    pub fn take_gradients<D: Device<f32>>(&mut self, grads: &Gradients<f32, D>, t: &[LayerTensors<D>]) {
        self.gates.iter_mut().zip(t).for_each(|(g, t)| g.take_gradients(grads, t));
    }

    pub fn params<'a>(&'a self, out: &mut Vec<(String, ParamRef<'a>)>) {
        self.gates.iter().zip(GATES).for_each(|(g, name)| g.params(&format!("gru.{name}"), out));
    }

    pub fn params_mut<'a>(&'a mut self, out: &mut Vec<(String, ParamMut<'a>)>) {
        self.gates.iter_mut().zip(GATES).for_each(|(g, name)| g.params_mut(&format!("gru.{name}"), out));
    }

    /// Masks for rows of the given lengths over `width` steps.
    pub fn steps<D: Device<f32>>(&self, dev: &D, x: Vec<Mat<D>>, lengths: &[u32]) -> Steps<D> {
        let (b, h) = (lengths.len(), self.hidden);
        let mask = (0..x.len())
            .map(|t| {
                let m = lengths.iter().flat_map(|&l| std::iter::repeat_n(f32::from(t < l as usize), h)).collect();
                dev.tensor_from_vec(m, (b, h))
            })
            .collect();
        let any = lengths.iter().flat_map(|&l| std::iter::repeat_n(f32::from(l > 0), h)).collect();
        Steps { x, mask, any: dev.tensor_from_vec(any, (b, h)), zeros: dev.zeros_like(&(b, h)) }
    }

    /// The pooled `[B, hidden]` encoding of the steps.
    pub fn forward<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(
        &self,
        steps: &Steps<D>,
        gates: &[LayerTensors<D>],
    ) -> Mat<D, T> {
        let mut h: Mat<D, T> = steps.zeros.retaped::<T>();
        let mut pooled: Option<Mat<D, T>> = None;
        for (x, mask) in steps.x.iter().zip(&steps.mask) {
            let x = x.retaped::<T>();
            let reset = (affine(x.retaped::<T>(), &gates[0]) + affine(h.retaped::<T>(), &gates[3])).sigmoid();
            let update = (affine(x.retaped::<T>(), &gates[1]) + affine(h.retaped::<T>(), &gates[4])).sigmoid();
            let new = (affine(x, &gates[2]) + reset * affine(h.retaped::<T>(), &gates[5])).tanh();
            // h' = (1 - z) n + z h = n + z (h - n); kept at h on padded steps.
            let candidate = new.retaped::<T>() + update * (h.retaped::<T>() - new);
            match self.pooling {
                // The state carries every step's tape forward.
                Pooling::Last => h = h * (mask.clone() * -1.0 + 1.0) + candidate * mask.clone(),
                // Each step's tape goes into the running max (the previous
                // state's went there a step earlier); the state is read untaped.
                Pooling::Max => {
                    let state = h.retaped::<T>() * (mask.clone() * -1.0 + 1.0) + candidate * mask.clone();
                    h = state.retaped::<T>();
                    let masked = state + (mask.clone() * -PADDED + PADDED);
                    pooled = Some(match pooled {
                        None => masked,
                        Some(p) => p.maximum(masked),
                    });
                }
            }
        }
        match (self.pooling, pooled) {
            (Pooling::Max, Some(p)) => p * steps.any.clone(),
            _ => h,
        }
    }
}
