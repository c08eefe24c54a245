//! Dense parameters (tower layers, GRU gates) kept as flat buffers with their
//! gradient and Adam moments, and the tower they form on dfdx.

use std::any::Any;
use std::borrow::Cow;

use dfdx::prelude::*;
use rand::Rng;

use crate::adam::Moments;
use crate::table::EmbeddingTable;

pub type Mat<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;
pub type Vector<D, T = NoneTape> = Tensor<(usize,), f32, D, T>;

/// A tensor's values in row-major order, for a tensor stored row-major in a
/// buffer of its own size: an operation's result other than a permutation
/// or a broadcast, a gradient of such a tensor, a tensor made from a vector
/// (dfdx keeps strides private, so the caller vouches for it; the crate's
/// tests check every use against `as_vec`). dfdx's `as_vec` walks a tensor
/// element by element through its strides; this copies the buffer at once.
pub fn to_host<S: Shape, D: Device<f32>, T>(t: &Tensor<S, f32, D, T>) -> Vec<f32> {
    let mut out = vec![0.0; t.shape().num_elements()];
    t.copy_into(&mut out);
    if cfg!(test) {
        let walked: Vec<u32> = t.as_vec().iter().map(|x| x.to_bits()).collect();
        assert_eq!(out.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), walked, "a tensor not stored row-major");
    }
    out
}

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
        self.weight.keep_gradient(to_host(&grads.get(&t.0)), add);
        self.bias.keep_gradient(to_host(&grads.get(&t.1)), add);
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
    with_bias(x.matmul(layer.0.retaped::<T>()), &layer.1, false)
}

/// `max(x W + b, 0)`.
pub fn affine_relu<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(x: Mat<D, T>, layer: &LayerTensors<D>) -> Mat<D, T> {
    with_bias(x.matmul(layer.0.retaped::<T>()), &layer.1, true)
}

/// ReLU after every layer but the last, which is linear.
pub fn mlp<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(mut x: Mat<D, T>, layers: &[LayerTensors<D>]) -> Mat<D, T> {
    for (i, layer) in layers.iter().enumerate() {
        x = if i + 1 < layers.len() { affine_relu(x, layer) } else { affine(x, layer) };
    }
    x
}

/// `y + b` on every row, then ReLU when `relu`.
///
/// On dfdx's `Cpu` this is one operation of our own on the tape: dfdx's
/// broadcast add and ReLU walk their tensors element by element through
/// index arithmetic, forward and backward, on one core, and in a tower step
/// they took longer than the products around them. The forward pass adds and
/// clamps as they do (`y + b`, `f32::max(·, 0)`), and the backward pass
/// accumulates as their backward steps would (the ReLU's `0 + [pre > 0] g`,
/// then `y`'s gradient plus it and the bias's gradient plus each row in
/// order), so the bits are the same. Other devices keep dfdx's operations.
fn with_bias<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(y: Mat<D, T>, b: &Vector<D>, relu: bool) -> Mat<D, T> {
    let (y, tape) = y.split_tape();
    let host = (b as &dyn Any).downcast_ref::<Vector<Cpu>>();
    match ((Box::new(y) as Box<dyn Any>).downcast::<Mat<Cpu>>(), host) {
        (Ok(y), Some(b)) => {
            let mut tape = tape;
            let out = host_with_bias::<D, T>(*y, b, relu, &mut tape);
            // D is Cpu here, so the cast back always succeeds.
            let out =
                *(Box::new(out) as Box<dyn Any>).downcast::<Mat<D>>().unwrap_or_else(|_| unreachable!("D is Cpu"));
            out.put_tape(tape)
        }
        (y, _) => {
            let y = y
                .map(|y| *(y as Box<dyn Any>).downcast::<Mat<D>>().unwrap_or_else(|_| unreachable!("D is Cpu")))
                .unwrap_or_else(|y| *y.downcast::<Mat<D>>().unwrap_or_else(|_| unreachable!("y is a Mat<D>")));
            dfdx_with_bias(y.put_tape(tape), b, relu)
        }
    }
}

/// [`with_bias`] as dfdx's own operations.
fn dfdx_with_bias<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(y: Mat<D, T>, b: &Vector<D>, relu: bool) -> Mat<D, T> {
    let shape = *y.shape();
    let out = y + b.retaped::<T>().broadcast_like::<_, Axis<0>>(&shape);
    if relu {
        out.relu()
    } else {
        out
    }
}

/// [`with_bias`] on the host, as one tape operation.
fn host_with_bias<D: Device<f32>, T: Tape<f32, D>>(y: Mat<Cpu>, b: &Vector<Cpu>, relu: bool, tape: &mut T) -> Mat<Cpu> {
    let (n, m) = *y.shape();
    let bias = to_host(b);
    let mut out = to_host(&y);
    for row in out.chunks_exact_mut(m) {
        for (o, &c) in row.iter_mut().zip(&bias) {
            let pre = *o + c;
            *o = if relu { pre.max(0.0) } else { pre };
        }
    }
    let kept = if relu && T::OWNS_TAPE { out.clone() } else { Vec::new() };
    let result: Mat<Cpu> = y.device().tensor_from_vec(out, (n, m));
    if T::OWNS_TAPE {
        let (y, b, result) = (y, b.clone(), result.clone());
        tape.add_backward_op(move |grads: &mut Gradients<f32, D>| {
            let grads = (grads as &mut dyn Any)
                .downcast_mut::<Gradients<f32, Cpu>>()
                .expect("a Cpu tensor's tape holds Cpu gradients");
            // dfdx's own backward steps allocate as these do and panic when the
            // host is out of memory (`backward` unwraps).
            const ALLOC: &str = "memory for a gradient";
            let mut g: Vec<f32> = grads.get_or_alloc_mut(&result).expect(ALLOC).to_vec();
            if relu {
                // `out > 0` exactly where `pre > 0` (NaN included: both false).
                for (g, &o) in g.iter_mut().zip(&kept) {
                    *g = 0.0 + if o > 0.0 { 1.0 } else { 0.0 } * *g;
                }
            }
            let gy = grads.get_or_alloc_mut(&y).expect(ALLOC);
            gy.iter_mut().zip(&g).for_each(|(a, &x)| *a += x);
            let gb = grads.get_or_alloc_mut(&b).expect(ALLOC);
            for row in g.chunks_exact(m) {
                gb.iter_mut().zip(row).for_each(|(a, &x)| *a += x);
            }
            Ok(())
        });
    }
    result
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// Two layers (ReLU, then linear) over a batch, the first layer's bias
    /// used twice, as a recurrent cell's gates are: the value and every
    /// gradient, through dfdx's operations or the host's.
    fn two_layers(host: bool, relu: bool) -> (Vec<f32>, Vec<Vec<f32>>) {
        let dev: Cpu = Default::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (first, second) = (Layer::uniform(5, 7, &mut rng), Layer::uniform(7, 3, &mut rng));
        let (t1, t2) = (first.tensors(&dev), second.tensors(&dev));
        // Some pre-activations exactly 0 and below: the ReLU's kink and its dead side.
        let x: Vec<f32> = (0..11 * 5).map(|i| if i % 13 == 0 { 0.0 } else { rng.gen_range(-1.0..1.0) }).collect();
        let x = dev.tensor_from_vec(x, (11usize, 5usize));
        let bias = |y: Mat<Cpu, OwnedTape<f32, Cpu>>, b: &Vector<Cpu>, relu: bool| {
            if host {
                with_bias(y, b, relu)
            } else {
                dfdx_with_bias(y, b, relu)
            }
        };
        let xt = x.retaped::<OwnedTape<f32, Cpu>>();
        let h = bias(xt.retaped::<OwnedTape<f32, Cpu>>().matmul(t1.0.retaped::<OwnedTape<f32, Cpu>>()), &t1.1, relu);
        let again = bias(xt.matmul(t1.0.retaped::<OwnedTape<f32, Cpu>>()), &t1.1, false);
        let out = bias((h + again).matmul(t2.0.retaped::<OwnedTape<f32, Cpu>>()), &t2.1, false);
        let value = out.as_vec();
        let g: Vec<f32> = (0..value.len()).map(|i| (i as f32 * 0.37).sin()).collect();
        let grads = (out * dev.tensor_from_vec(g, (11usize, 3usize))).sum::<(), _>().backward();
        let all = vec![
            grads.get(&x).as_vec(),
            grads.get(&t1.0).as_vec(),
            grads.get(&t1.1).as_vec(),
            grads.get(&t2.0).as_vec(),
            grads.get(&t2.1).as_vec(),
        ];
        (value, all)
    }

    #[test]
    fn the_host_bias_and_relu_give_dfdxs_bits_forward_and_backward() {
        for relu in [true, false] {
            let (host_value, host_grads) = two_layers(true, relu);
            let (dfdx_value, dfdx_grads) = two_layers(false, relu);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&host_value), bits(&dfdx_value), "value, relu {relu}");
            for (i, (a, b)) in host_grads.iter().zip(&dfdx_grads).enumerate() {
                assert_eq!(bits(a), bits(b), "gradient {i}, relu {relu}");
            }
            assert!(host_grads.iter().all(|g| g.iter().any(|&x| x != 0.0)));
        }
        // Without a tape (inference) the host path gives the same values.
        let dev: Cpu = Default::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let layer = Layer::uniform(4, 6, &mut rng);
        let t = layer.tensors(&dev);
        let x = dev.tensor_from_vec((0..24).map(|i| i as f32 * 0.1 - 1.0).collect::<Vec<f32>>(), (6usize, 4usize));
        assert_eq!(affine_relu(x.clone(), &t).as_vec(), dfdx_with_bias(x.matmul(t.0.clone()), &t.1, true).as_vec());
    }
}
