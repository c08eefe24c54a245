//! Recurrent encoders over the history in time order (PyTorch's
//! formulations): a GRU or an LSTM, pooled to one vector by the last state
//! or an element-wise max over the states (seed 003's LSTM uses max).
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

/// The GRU's gates, in order: input→reset, input→update, input→new,
/// hidden→reset, hidden→update, hidden→new.
const GRU_GATES: [&str; 6] =
    ["input_reset", "input_update", "input_new", "hidden_reset", "hidden_update", "hidden_new"];

/// The LSTM's gates, in order: input→{input, forget, cell, output}, then
/// hidden→ the same four.
const LSTM_GATES: [&str; 8] = [
    "input_input",
    "input_forget",
    "input_cell",
    "input_output",
    "hidden_input",
    "hidden_forget",
    "hidden_cell",
    "hidden_output",
];

/// Which recurrent cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Gru,
    Lstm,
}

impl Cell {
    fn gates(self) -> &'static [&'static str] {
        match self {
            Cell::Gru => &GRU_GATES,
            Cell::Lstm => &LSTM_GATES,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cell::Gru => "gru",
            Cell::Lstm => "lstm",
        }
    }
}

pub struct Recurrent {
    pub hidden: usize,
    cell: Cell,
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

impl Recurrent {
    pub fn new(cell: Cell, input: usize, hidden: usize, pooling: Pooling, rng: &mut impl Rng) -> Recurrent {
        // PyTorch's init: U(-1/sqrt(hidden), 1/sqrt(hidden)) for every weight and bias.
        let bound = 1.0 / (hidden as f32).sqrt();
        let n = cell.gates().len();
        let gates =
            (0..n).map(|g| Layer::uniform_bound(if g < n / 2 { input } else { hidden }, hidden, bound, rng)).collect();
        Recurrent { hidden, cell, pooling, gates }
    }

    pub fn tensors<D: Device<f32>>(&self, dev: &D) -> Vec<LayerTensors<D>> {
        self.gates.iter().map(|g| g.tensors(dev)).collect()
    }

    pub fn take_gradients<D: Device<f32>>(&mut self, grads: &Gradients<f32, D>, t: &[LayerTensors<D>], add: bool) {
        self.gates.iter_mut().zip(t).for_each(|(g, t)| g.take_gradients(grads, t, add));
    }

    pub fn params<'a>(&'a self, out: &mut Vec<(String, ParamRef<'a>)>) {
        let prefix = self.cell.name();
        self.gates.iter().zip(self.cell.gates()).for_each(|(g, name)| g.params(&format!("{prefix}.{name}"), out));
    }

    pub fn params_mut<'a>(&'a mut self, out: &mut Vec<(String, ParamMut<'a>)>) {
        let prefix = self.cell.name();
        let names = self.cell.gates();
        self.gates.iter_mut().zip(names).for_each(|(g, name)| g.params_mut(&format!("{prefix}.{name}"), out));
    }

    /// Parameters of a cell over `input`-wide items with `hidden` state.
    pub fn parameter_count(cell: Cell, input: usize, hidden: usize) -> usize {
        let half = cell.gates().len() / 2;
        half * (input * hidden + hidden) + half * (hidden * hidden + hidden)
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
        // The LSTM's cell state, read untaped: the tape of each step's new
        // cell state joins that step's output, so it reaches the result once.
        let mut c: Mat<D> = steps.zeros.clone();
        let mut pooled: Option<Mat<D, T>> = None;
        for (x, mask) in steps.x.iter().zip(&steps.mask) {
            let keep = mask.clone() * -1.0 + 1.0;
            let candidate: Mat<D, T> = self.candidate(x, &h, &mut c, mask, &keep, gates);
            match self.pooling {
                // The state carries every step's tape forward.
                Pooling::Last => h = h * keep + candidate * mask.clone(),
                // Each step's tape goes into the running max (the previous
                // state's went there a step earlier); the state is read untaped.
                Pooling::Max => {
                    let state = h.retaped::<T>() * keep + candidate * mask.clone();
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

    /// The pooled encoding after every step, `[steps * B, hidden]`: row
    /// `t * B + r` encodes row `r`'s first `t + 1` items (one pass over
    /// windows gives each position's query).
    pub fn forward_every_step<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(
        &self,
        steps: &Steps<D>,
        gates: &[LayerTensors<D>],
    ) -> Mat<D, T> {
        let (b, hidden) = *steps.zeros.shape();
        // States and running maxima are read untaped; each step's tape goes
        // into that step's output, which the result holds once.
        let mut h: Mat<D> = steps.zeros.clone();
        let mut c: Mat<D> = steps.zeros.clone();
        let mut pooled: Option<Mat<D>> = None;
        let mut outs: Vec<Mat<D, T>> = Vec::with_capacity(steps.x.len());
        for (x, mask) in steps.x.iter().zip(&steps.mask) {
            let keep = mask.clone() * -1.0 + 1.0;
            let candidate: Mat<D, T> = self.candidate(x, &h, &mut c, mask, &keep, gates);
            let state = h.retaped::<T>() * keep + candidate * mask.clone();
            h = state.retaped::<NoneTape>();
            let out = match self.pooling {
                Pooling::Last => state,
                Pooling::Max => {
                    let masked = state + (mask.clone() * -PADDED + PADDED);
                    match &pooled {
                        None => masked,
                        Some(p) => p.retaped::<T>().maximum(masked),
                    }
                }
            };
            pooled = Some(out.retaped::<NoneTape>());
            outs.push(out);
        }
        let n = outs.len();
        outs.stack().reshape_like(&(n * b, hidden))
    }

    /// The cell's new state for step input `x` from state `h` (read
    /// untaped); the LSTM's cell state `c` is advanced in place.
    fn candidate<D: Device<f32>, T: Tape<f32, D> + Merge<T>, H: Tape<f32, D>>(
        &self,
        x: &Mat<D>,
        h: &Mat<D, H>,
        c: &mut Mat<D>,
        mask: &Mat<D>,
        keep: &Mat<D>,
        gates: &[LayerTensors<D>],
    ) -> Mat<D, T> {
        let x = x.retaped::<T>();
        match self.cell {
            Cell::Gru => {
                let gate =
                    |i: usize, j: usize| affine(x.retaped::<T>(), &gates[i]) + affine(h.retaped::<T>(), &gates[j]);
                let reset = gate(0, 3).sigmoid();
                let update = gate(1, 4).sigmoid();
                let new = (affine(x.retaped::<T>(), &gates[2]) + reset * affine(h.retaped::<T>(), &gates[5])).tanh();
                // h' = (1 - z) n + z h = n + z (h - n).
                new.retaped::<T>() + update * (h.retaped::<T>() - new)
            }
            Cell::Lstm => {
                let gate = |i: usize| affine(x.retaped::<T>(), &gates[i]) + affine(h.retaped::<T>(), &gates[i + 4]);
                let (input, forget) = (gate(0).sigmoid(), gate(1).sigmoid());
                let (cell, output) = (gate(2).tanh(), gate(3).sigmoid());
                // The cell state is kept where the step is padding.
                let next = (forget * c.retaped::<T>() + input * cell) * mask.clone() + c.retaped::<T>() * keep.clone();
                let (next, next_tape) = next.split_tape();
                let (out, out_tape) = (output * next.retaped::<T>().tanh()).split_tape();
                *c = next;
                out.put_tape(out_tape.merge(next_tape))
            }
        }
    }
}
