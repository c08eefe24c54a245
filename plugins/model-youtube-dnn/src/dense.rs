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
    layers(x, &[(layer, false)])
}

/// `max(x W + b, 0)`.
pub fn affine_relu<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(x: Mat<D, T>, layer: &LayerTensors<D>) -> Mat<D, T> {
    layers(x, &[(layer, true)])
}

/// ReLU after every layer but the last, which is linear.
pub fn mlp<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(x: Mat<D, T>, tower: &[LayerTensors<D>]) -> Mat<D, T> {
    let stack: Vec<_> = tower.iter().enumerate().map(|(i, layer)| (layer, i + 1 < tower.len())).collect();
    layers(x, &stack)
}

/// Layers `x W + b` one after another, each then ReLU when its flag says.
///
/// On dfdx's `Cpu` this is one operation of our own on the tape: dfdx's
/// broadcast add and ReLU walk their tensors element by element through
/// index arithmetic, forward and backward, on one core, and its product
/// allocates and zeroes a buffer for each result and gradient; in a tower
/// step all that took longer than the products themselves. Activations
/// between layers stay on the host, outside dfdx. The products give the
/// bits of the `gemm` calls dfdx makes ([`product`]); the forward pass adds
/// and clamps as dfdx's operations do (`y + b`, `f32::max(·, 0)`), and the
/// backward pass accumulates as their backward steps would, layer by layer
/// from the last (the ReLU's `0 + [pre > 0] g`, the product's output
/// gradient `0 + that` in a fresh buffer, the bias's gradient plus each row
/// in order, then the layer input's gradient and `W`'s), so the bits are
/// dfdx's. Other devices keep dfdx's operations.
fn layers<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(x: Mat<D, T>, stack: &[(&LayerTensors<D>, bool)]) -> Mat<D, T> {
    let host: Option<Vec<HostLayer<'_>>> = stack
        .iter()
        .map(|&((w, b), relu)| {
            let w = (w as &dyn Any).downcast_ref::<Mat<Cpu>>()?;
            let b = (b as &dyn Any).downcast_ref::<Vector<Cpu>>()?;
            Some((w, b, relu))
        })
        .collect();
    match host {
        Some(host) if !host.is_empty() => {
            let (x, mut tape) = x.split_tape();
            let out = host_layers::<D, T>(on_cpu(x), &host, &mut tape);
            from_cpu::<D>(out).put_tape(tape)
        }
        _ => stack.iter().fold(x, |x, &(layer, relu)| dfdx_affine(x, layer, relu)),
    }
}

/// A layer's weight and bias on the `Cpu`, and whether ReLU follows.
type HostLayer<'a> = (&'a Mat<Cpu>, &'a Vector<Cpu>, bool);

/// A matrix of a device known to be `Cpu` (its parameters are).
fn on_cpu<D: Device<f32>>(x: Mat<D>) -> Mat<Cpu> {
    *(Box::new(x) as Box<dyn Any>).downcast::<Mat<Cpu>>().unwrap_or_else(|_| unreachable!("D is Cpu"))
}

/// [`on_cpu`]'s way back.
fn from_cpu<D: Device<f32>>(x: Mat<Cpu>) -> Mat<D> {
    *(Box::new(x) as Box<dyn Any>).downcast::<Mat<D>>().unwrap_or_else(|_| unreachable!("D is Cpu"))
}

/// One of [`layers`] as dfdx's own operations.
fn dfdx_affine<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(
    x: Mat<D, T>,
    layer: &LayerTensors<D>,
    relu: bool,
) -> Mat<D, T> {
    let y = x.matmul(layer.0.retaped::<T>());
    let shape = *y.shape();
    let out = y + layer.1.retaped::<T>().broadcast_like::<_, Axis<0>>(&shape);
    if relu {
        out.relu()
    } else {
        out
    }
}

/// `c (+)= a b` for `a` `[m, k]` and `b` `[k, n]` read through their (row,
/// column) strides and `c` row-major: the `gemm` call dfdx 0.13's `Cpu`
/// makes for a product (`MatMulImpl<f32>`), accumulating for its backward
/// pass, so the bits are its products' (the threads split it as dfdx's do,
/// see the model's `split_tower_products`).
fn dfdx_product(
    m: usize,
    k: usize,
    n: usize,
    (a, sa): (&[f32], [usize; 2]),
    (b, sb): (&[f32], [usize; 2]),
    c: &mut [f32],
    accumulate: bool,
) {
    let fits = |x: &[f32], rows: usize, cols: usize, [rs, cs]: [usize; 2]| {
        rows == 0 || cols == 0 || (rows - 1) * rs + (cols - 1) * cs < x.len()
    };
    assert!(fits(a, m, k, sa) && fits(b, k, n, sb) && c.len() >= m * n, "product operands out of bounds");
    // SAFETY: every element read through the strides lies inside `a` and
    // `b`, and `c` holds `m` rows of `n` (checked above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            sa[1] as isize,
            sa[0] as isize,
            b.as_ptr(),
            sb[1] as isize,
            sb[0] as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(rayon::current_num_threads()),
        );
    }
}

/// [`dfdx_product`], bit for bit, on AVX-512 where its shape allows.
///
/// The `gemm` crate's AVX-512 kernels need a nightly compiler, so on stable
/// dfdx's products run on AVX2 even where the CPU has AVX-512. For an inner
/// dimension of 3 to 512 terms and outer ones of 2 or more, `gemm` sums
/// each output as one fused multiply-add chain in order, in a single depth
/// block, and so does `chained_gemm`, on AVX-512. Smaller products (a
/// recurrent cell's gates) stay on `gemm`: there the two threads' split cost
/// what the wider kernel saved.
#[allow(clippy::too_many_arguments)]
fn product(
    m: usize,
    k: usize,
    n: usize,
    a: (&[f32], [usize; 2]),
    b: (&[f32], [usize; 2]),
    c: &mut [f32],
    accumulate: bool,
    alone: bool,
) {
    const CHAINED_FROM: usize = 1 << 21;
    // Split over the cores when dfdx's `gemm` would (see the model's
    // `split_tower_products`) and no other product runs beside (`alone`);
    // each output is computed the same way either way.
    let split = alone && m * k * n >= gemm_common::gemm::get_threading_threshold();
    let chained = (3..=512).contains(&k) && m >= 2 && n >= 2 && m * k * n >= CHAINED_FROM;
    if !(chained && funnel_kernels::chained_gemm(m, k, n, a, b, c, accumulate, split)) {
        dfdx_product(m, k, n, a, b, c, accumulate);
    }
}

/// [`layers`] on the host, as one tape operation.
fn host_layers<D: Device<f32>, T: Tape<f32, D>>(x: Mat<Cpu>, stack: &[HostLayer<'_>], tape: &mut T) -> Mat<Cpu> {
    let m = x.shape().0;
    // Each layer's input (the first is `x`), weight, shape, and where its
    // ReLU passed (kept for the backward pass).
    let mut inputs = vec![to_host(&x)];
    let (mut weights, mut shapes, mut active) = (Vec::new(), Vec::new(), Vec::new());
    for &(w, b, relu) in stack {
        let (k, n) = *w.shape();
        let (ws, bias) = (to_host(w), to_host(b));
        let mut out = vec![0.0; m * n];
        product(m, k, n, (inputs.last().expect("x is the first input"), [k, 1]), (&ws, [n, 1]), &mut out, false, true);
        let keep = relu && T::OWNS_TAPE;
        let mut on = Vec::with_capacity(if keep { m * n } else { 0 });
        for row in out.chunks_exact_mut(n) {
            for (o, &c) in row.iter_mut().zip(&bias) {
                let pre = *o + c;
                *o = if relu { pre.max(0.0) } else { pre };
            }
            if keep {
                // `out > 0` exactly where `pre > 0` (NaN included: both false).
                on.extend(row.iter().map(|&o| o > 0.0));
            }
        }
        inputs.push(out);
        weights.push(ws);
        shapes.push((k, n));
        active.push(on);
    }
    let (_, n) = shapes[shapes.len() - 1];
    let result: Mat<Cpu> = x.device().tensor_from_vec(inputs.pop().expect("a layer's output"), (m, n));
    if T::OWNS_TAPE {
        let params: Vec<(Mat<Cpu>, Vector<Cpu>, bool)> =
            stack.iter().map(|&(w, b, relu)| (w.clone(), b.clone(), relu)).collect();
        let result_id = result.clone();
        tape.add_backward_op(move |grads: &mut Gradients<f32, D>| {
            let grads = (grads as &mut dyn Any)
                .downcast_mut::<Gradients<f32, Cpu>>()
                .expect("a Cpu tensor's tape holds Cpu gradients");
            // dfdx's own backward steps allocate as these do and panic when the
            // host is out of memory (`backward` unwraps).
            const ALLOC: &str = "memory for a gradient";
            // A layer's output gradient through its ReLU (`0 + [pre > 0] g`),
            // or without one `0 + g` (in dfdx a fresh buffer plus `g`): both
            // are the product's output gradient (`0 + ·` again changes no
            // bits), and the bias's gradient, which never holds -0, sums them
            // to the same bits.
            let through = |g: &[f32], relu: bool, on: &[bool]| -> Vec<f32> {
                if relu {
                    g.iter().zip(on).map(|(&g, &on)| 0.0 + if on { 1.0 } else { 0.0 } * g).collect()
                } else {
                    g.iter().map(|&g| 0.0 + g).collect()
                }
            };
            let last = params.len() - 1;
            let mut g = through(grads.get_or_alloc_mut(&result_id).expect(ALLOC), params[last].2, &active[last]);
            for (i, (w, b, _)) in params.iter().enumerate().rev() {
                let (k, n) = shapes[i];
                let gb = grads.get_or_alloc_mut(b).expect(ALLOC);
                for row in g.chunks_exact(n) {
                    gb.iter_mut().zip(row).for_each(|(a, &x)| *a += x);
                }
                // The layer input's gradient: `x`'s, or a fresh buffer for an
                // activation between layers, as dfdx would hold.
                // The layer input's gradient (`x`'s, or a fresh buffer for an
                // activation between layers, as dfdx would hold) and `W`'s
                // are independent: one on each thread, whole. `W`'s buffer is
                // taken out of `grads` meanwhile, and put back.
                let (gy, input) = ((&g[..], [n, 1]), (&inputs[i][..], [1, k]));
                let mut gw: Vec<f32> = std::mem::take(&mut **grads.get_or_alloc_mut(w).expect(ALLOC));
                let mut between = Vec::new();
                let gx = if i == 0 {
                    grads.get_or_alloc_mut(&x).expect(ALLOC)
                } else {
                    between.resize(m * k, 0.0);
                    &mut between[..]
                };
                // Only where dfdx's `gemm` would split them too (see the model's
                // `split_tower_products`): a step whose other core is busy
                // already runs them one after the other.
                if m * k * n >= gemm_common::gemm::get_threading_threshold() {
                    funnel_kernels::par::beside(
                        || product(m, n, k, gy, (&weights[i], [1, n]), gx, true, false),
                        || product(k, m, n, input, gy, &mut gw, true, false),
                    );
                } else {
                    product(m, n, k, gy, (&weights[i], [1, n]), gx, true, true);
                    product(k, m, n, input, gy, &mut gw, true, true);
                }
                **grads.get_or_alloc_mut(w).expect(ALLOC) = gw;
                if i > 0 {
                    g = through(&between, params[i - 1].2, &active[i - 1]);
                }
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

    /// Two layers (ReLU, then linear) over a batch of `b`, the first layer
    /// used twice on one input, as a recurrent cell's gates are: the value
    /// and every gradient, through dfdx's operations or the host's.
    fn two_layers(
        host: bool,
        relu: bool,
        (b, n_in, hidden, n_out): (usize, usize, usize, usize),
    ) -> (Vec<f32>, Vec<Vec<f32>>) {
        type Taped = OwnedTape<f32, Cpu>;
        let dev: Cpu = Default::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (first, second) = (Layer::uniform(n_in, hidden, &mut rng), Layer::uniform(hidden, n_out, &mut rng));
        let (t1, t2) = (first.tensors(&dev), second.tensors(&dev));
        // Some pre-activations exactly 0 and below: the ReLU's kink and its dead side.
        let x: Vec<f32> = (0..b * n_in).map(|i| if i % 13 == 0 { 0.0 } else { rng.gen_range(-1.0..1.0) }).collect();
        let x = dev.tensor_from_vec(x, (b, n_in));
        let layer = |x: Mat<Cpu, Taped>, t: &LayerTensors<Cpu>, relu: bool| match (host, relu) {
            (true, true) => affine_relu(x, t),
            (true, false) => affine(x, t),
            (false, relu) => dfdx_affine(x, t, relu),
        };
        let xt = x.retaped::<Taped>();
        let h = layer(xt.retaped::<Taped>(), &t1, relu);
        let again = layer(xt, &t1, false);
        let out = layer(h + again, &t2, false);
        let value = out.as_vec();
        let g: Vec<f32> = (0..value.len()).map(|i| (i as f32 * 0.37).sin()).collect();
        let grads = (out * dev.tensor_from_vec(g, (b, n_out))).sum::<(), _>().backward();
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
    fn the_host_affine_layers_give_dfdxs_bits_forward_and_backward() {
        // Small and odd sizes (`gemm`'s paths for one row or column, and its
        // kernels), the bench's tower and wider odd ones (`chained_gemm`,
        // its products split over two threads as in training, a last panel
        // part full), and an inner dimension past 512 (`gemm` again, beside
        // products of the same layer that are chained).
        let shapes = [(11, 5, 7, 3), (1, 2, 1, 1), (256, 64, 256, 64), (260, 100, 130, 96), (64, 600, 80, 3)];
        for shape in shapes {
            for relu in [true, false] {
                let (host_value, host_grads) = funnel_kernels::par::with_threads(2, || two_layers(true, relu, shape));
                let (dfdx_value, dfdx_grads) = funnel_kernels::par::with_threads(2, || two_layers(false, relu, shape));
                let differ = |a: &[f32], b: &[f32]| {
                    assert_eq!(a.len(), b.len());
                    a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count()
                };
                assert_eq!(differ(&host_value, &dfdx_value), 0, "values differing, {shape:?} relu {relu}");
                for (i, (a, b)) in host_grads.iter().zip(&dfdx_grads).enumerate() {
                    assert_eq!(differ(a, b), 0, "gradient {i}: entries differing, {shape:?} relu {relu}");
                }
                // (One row may leave every ReLU dead.)
                assert!(shape.0 == 1 || host_grads.iter().all(|g| g.iter().any(|&x| x != 0.0)), "{shape:?}");
            }
        }
        // A whole tower as one host operation, its activations between
        // layers never in dfdx: the same bits as layer after layer in dfdx.
        for (b, widths) in [(13, vec![9, 17, 5, 3]), (256, vec![64, 256, 64])] {
            let tower = |host: bool| {
                let dev: Cpu = Default::default();
                let mut rng = rand::rngs::StdRng::seed_from_u64(11);
                let layers: Vec<Layer> = widths.windows(2).map(|w| Layer::uniform(w[0], w[1], &mut rng)).collect();
                let t: Vec<LayerTensors<Cpu>> = layers.iter().map(|l| l.tensors(&dev)).collect();
                let x: Vec<f32> = (0..b * widths[0]).map(|_| rng.gen_range(-1.0..1.0)).collect();
                let x = dev.tensor_from_vec(x, (b, widths[0]));
                let xt = x.retaped::<OwnedTape<f32, Cpu>>();
                let out = if host {
                    mlp(xt, &t)
                } else {
                    let last = t.len() - 1;
                    t.iter().enumerate().fold(xt, |x, (i, l)| dfdx_affine(x, l, i < last))
                };
                let value = out.as_vec();
                let g: Vec<f32> = (0..value.len()).map(|i| (i as f32 * 0.29).cos()).collect();
                let grads = (out * dev.tensor_from_vec(g, (b, widths[widths.len() - 1]))).sum::<(), _>().backward();
                let mut all = vec![value, grads.get(&x).as_vec()];
                t.iter().for_each(|(w, bias)| all.extend([grads.get(w).as_vec(), grads.get(bias).as_vec()]));
                all
            };
            let (host, reference) = funnel_kernels::par::with_threads(2, || (tower(true), tower(false)));
            for (i, (a, b)) in host.iter().zip(&reference).enumerate() {
                let differ = a.iter().zip(b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
                assert_eq!((a.len(), differ), (b.len(), 0), "tower output/gradient {i}, widths {widths:?}");
            }
        }
        // Without a tape (inference) the host path gives the same values.
        let dev: Cpu = Default::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let layer = Layer::uniform(4, 6, &mut rng);
        let t = layer.tensors(&dev);
        let x = dev.tensor_from_vec((0..24).map(|i| i as f32 * 0.1 - 1.0).collect::<Vec<f32>>(), (6usize, 4usize));
        assert_eq!(affine_relu(x.clone(), &t).as_vec(), dfdx_affine(x, &t, true).as_vec());
    }
}
