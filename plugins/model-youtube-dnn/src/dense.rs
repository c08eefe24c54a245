//! Dense parameters (tower layers, GRU gates) kept as flat buffers with their
//! gradient and Adam moments, and the tower they form on dfdx.

use std::borrow::Cow;

use dfdx::prelude::*;
use rand::Rng;

use crate::adam::Moments;
use crate::table::EmbeddingTable;

pub type Mat<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;
pub type Vector<D, T = NoneTape> = Tensor<(usize,), f32, D, T>;

/// One dense parameter tensor, flat.
pub struct Dense {
    pub values: Vec<f32>,
    pub grad: Vec<f32>,
    pub moments: Moments,
}

impl Dense {
    /// Keeps `g` as this step's gradient, or adds it to the one kept.
    pub fn keep_gradient(&mut self, g: Vec<f32>, add: bool) {
        if add {
            self.grad.iter_mut().zip(&g).for_each(|(a, b)| *a += b);
        } else {
            self.grad = g;
        }
    }

    /// `n` copies of `value` (a layer norm's gain and bias).
    pub fn filled(n: usize, value: f32) -> Dense {
        Dense { values: vec![value; n], grad: vec![0.0; n], moments: Moments::zeros(n) }
    }

    pub fn tensor<D: Device<f32>>(&self, dev: &D) -> Vector<D> {
        dev.tensor_from_vec(self.values.clone(), (self.values.len(),))
    }

    fn uniform(n: usize, bound: f32, rng: &mut impl Rng) -> Dense {
        Dense {
            values: (0..n).map(|_| rng.gen_range(-bound..bound)).collect(),
            grad: vec![0.0; n],
            moments: Moments::zeros(n),
        }
    }
}

/// A fully connected layer `y = x W + b`, `W` row-major `[fan_in, fan_out]`.
pub struct Layer {
    pub fan_in: usize,
    pub fan_out: usize,
    pub weight: Dense,
    pub bias: Dense,
}

/// A layer's weight and bias as tensors for one step.
pub type LayerTensors<D> = (Mat<D>, Vector<D>);

impl Layer {
    /// PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    pub fn uniform(fan_in: usize, fan_out: usize, rng: &mut impl Rng) -> Layer {
        Layer::uniform_bound(fan_in, fan_out, 1.0 / (fan_in as f32).sqrt(), rng)
    }

    /// U(-bound, bound) for weights and biases (PyTorch's GRU uses 1/sqrt(hidden)).
    pub fn uniform_bound(fan_in: usize, fan_out: usize, bound: f32, rng: &mut impl Rng) -> Layer {
        let weight = Dense::uniform(fan_in * fan_out, bound, rng);
        let bias = Dense::uniform(fan_out, bound, rng);
        Layer { fan_in, fan_out, weight, bias }
    }

    pub fn tensors<D: Device<f32>>(&self, dev: &D) -> LayerTensors<D> {
        (
            dev.tensor_from_vec(self.weight.values.clone(), (self.fan_in, self.fan_out)),
            dev.tensor_from_vec(self.bias.values.clone(), (self.fan_out,)),
        )
    }

    /// Keeps the gradients `grads` holds for this layer's tensors of the
    /// step, or adds them to those kept (`add`: a batch encoded in parts).
    pub fn take_gradients<D: Device<f32>>(&mut self, grads: &Gradients<f32, D>, t: &LayerTensors<D>, add: bool) {
        self.weight.keep_gradient(grads.get(&t.0).as_vec(), add);
        self.bias.keep_gradient(grads.get(&t.1).as_vec(), add);
    }

    pub fn params<'a>(&'a self, name: &str, out: &mut Vec<(String, ParamRef<'a>)>) {
        out.push((format!("{name}.weight"), ParamRef::Dense(&self.weight)));
        out.push((format!("{name}.bias"), ParamRef::Dense(&self.bias)));
    }

    pub fn params_mut<'a>(&'a mut self, name: &str, out: &mut Vec<(String, ParamMut<'a>)>) {
        out.push((format!("{name}.weight"), ParamMut::Dense(&mut self.weight)));
        out.push((format!("{name}.bias"), ParamMut::Dense(&mut self.bias)));
    }
}

/// `x W + b` with the parameters joining `x`'s tape.
pub fn affine<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(x: Mat<D, T>, layer: &LayerTensors<D>) -> Mat<D, T> {
    let shape = (x.shape().0, layer.0.shape().1);
    x.matmul(layer.0.retaped::<T>()) + layer.1.retaped::<T>().broadcast_like::<_, Axis<0>>(&shape)
}

/// ReLU after every layer but the last, which is linear.
pub fn mlp<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(mut x: Mat<D, T>, layers: &[LayerTensors<D>]) -> Mat<D, T> {
    for (i, layer) in layers.iter().enumerate() {
        let y = affine(x, layer);
        x = if i + 1 < layers.len() { y.relu() } else { y };
    }
    x
}

/// A named parameter buffer of a model, for snapshots, optimizer steps and
/// gradient norms.
pub enum ParamRef<'a> {
    Dense(&'a Dense),
    Table(&'a EmbeddingTable),
}

pub enum ParamMut<'a> {
    Dense(&'a mut Dense),
    Table(&'a mut EmbeddingTable),
}

impl ParamRef<'_> {
    pub fn len(&self) -> usize {
        match self {
            ParamRef::Dense(d) => d.values.len(),
            ParamRef::Table(t) => t.rows() * t.dim,
        }
    }

    /// The values, row-major (a table's are copied out of its row blocks).
    pub fn values(&self) -> Cow<'_, [f32]> {
        match self {
            ParamRef::Dense(d) => Cow::Borrowed(&d.values),
            ParamRef::Table(t) => Cow::Owned(t.weights()),
        }
    }

    pub fn moments(&self) -> (Cow<'_, [f32]>, Cow<'_, [f32]>) {
        match self {
            ParamRef::Dense(d) => (Cow::Borrowed(&d.moments.m), Cow::Borrowed(&d.moments.v)),
            ParamRef::Table(t) => {
                let (m, v) = t.moments();
                (Cow::Owned(m), Cow::Owned(v))
            }
        }
    }

    /// Sum of squared gradient entries of this step.
    pub fn gradient_sq_norm(&self) -> f64 {
        match self {
            ParamRef::Dense(d) => funnel_kernels::sum_of_squares(&d.grad),
            ParamRef::Table(t) => t.gradient_sq_norm(),
        }
    }

    /// This step's gradient, densely (gradient checks).
    #[cfg(test)]
    pub fn gradient(&self) -> Vec<f32> {
        match self {
            ParamRef::Dense(d) => d.grad.clone(),
            ParamRef::Table(t) => t.gradient(),
        }
    }
}

impl ParamMut<'_> {
    pub fn len(&self) -> usize {
        match self {
            ParamMut::Dense(d) => d.values.len(),
            ParamMut::Table(t) => t.rows() * t.dim,
        }
    }

    /// Replaces the values (`len()` of them, checked by the caller).
    pub fn set_values(&mut self, values: &[f32]) {
        match self {
            ParamMut::Dense(d) => d.values.copy_from_slice(values),
            ParamMut::Table(t) => t.set_weights(values),
        }
    }

    pub fn set_moments(&mut self, m: &[f32], v: &[f32]) {
        match self {
            ParamMut::Dense(d) => {
                d.moments.m.copy_from_slice(m);
                d.moments.v.copy_from_slice(v);
            }
            ParamMut::Table(t) => t.set_moments(m, v),
        }
    }
}
