//! A causal self-attention encoder over the history (SASRec, Kang & McAuley
//! 2018): item embeddings plus learned position embeddings, `layers` blocks
//! of multi-head self-attention and a position-wise feed-forward network,
//! each behind a layer norm and inside a residual (the pre-norm order, which
//! trains without warm-up), and a final layer norm. Position `i` attends to
//! the real items at positions `<= i`; the query of a history is the output
//! at its last real item.
//!
//! Histories are left-aligned (padding after the real items) and positions
//! count from the history's first item, so the output at position `i` of a
//! long window equals the encoding of the window's first `i + 1` items on
//! their own: one pass over a window yields the query of every position
//! (`[train] targets = "all_positions"`).
//!
//! The shapes come from TOML and the batch, so every tensor is runtime-shaped
//! and the parameters are flat buffers stepped by the model's Adam.

use dfdx::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::dense::{affine, affine_relu, Dense, Layer, LayerTensors, Mat, ParamMut, ParamRef, Vector};
use crate::table::EmbeddingTable;

/// Added to the scores of keys a query may not see: exp() of it is 0.
const HIDDEN: f32 = -1.0e9;

/// Layer norm's variance epsilon (PyTorch's default).
const NORM_EPSILON: f32 = 1e-5;

/// Widths and rates of the encoder.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub dim: usize,
    pub layers: usize,
    pub heads: usize,
    /// Width of the feed-forward network's hidden layer.
    pub feed_forward: usize,
    /// Positions it has embeddings for: the longest history.
    pub max_len: usize,
    pub dropout: f32,
}

/// A layer norm's gain and bias.
struct Norm {
    gain: Dense,
    bias: Dense,
}

impl Norm {
    fn new(dim: usize) -> Norm {
        Norm { gain: Dense::filled(dim, 1.0), bias: Dense::filled(dim, 0.0) }
    }
}

struct Block {
    attention_norm: Norm,
    query: Layer,
    key: Layer,
    value: Layer,
    output: Layer,
    feed_forward_norm: Norm,
    feed_forward_in: Layer,
    feed_forward_out: Layer,
}

pub struct SelfAttention {
    pub shape: Shape,
    /// One row per position.
    pub positions: EmbeddingTable,
    blocks: Vec<Block>,
    final_norm: Norm,
}

/// The parameters as tensors for one step.
pub struct AttentionTensors<D: Device<f32>> {
    blocks: Vec<BlockTensors<D>>,
    final_norm: (Vector<D>, Vector<D>),
}

struct BlockTensors<D: Device<f32>> {
    attention_norm: (Vector<D>, Vector<D>),
    layers: [LayerTensors<D>; 6],
    feed_forward_norm: (Vector<D>, Vector<D>),
}

/// One batch of sequences, built on the host.
pub struct Sequences<D: Device<f32>> {
    /// Item plus position embedding of every slot, `[rows * width, dim]`
    /// (zeros at padding): the leaf whose gradient goes back to both tables.
    pub x: Mat<D>,
    pub rows: usize,
    pub width: usize,
    /// `[rows * heads, width, width]`: 0 where a query may attend to a key,
    /// [`HIDDEN`] elsewhere.
    mask: Tensor<(usize, usize, usize), f32, D>,
    /// The slot (`row * width + position`) each output row is read from.
    read: Tensor<(usize,), usize, D>,
    /// Dropout's keep masks (already scaled by `1 / (1 - p)`); `None` when
    /// not training.
    dropout: Option<Dropout<D>>,
}

/// Dropout drawn on the host from a seed, so a run (and a resumed run)
/// draws the same masks whatever the device.
struct Dropout<D: Device<f32>> {
    /// Over `[slots, dim]`: the embeddings, then per block the attention's
    /// and the feed-forward network's outputs.
    slots: Vec<Mat<D>>,
    /// Over the attention weights, one per block.
    weights: Vec<Tensor<(usize, usize, usize), f32, D>>,
}

impl SelfAttention {
    pub fn new(shape: Shape, init_std: f32, rng: &mut impl Rng) -> SelfAttention {
        let d = shape.dim;
        let positions = EmbeddingTable::normal(shape.max_len.max(1), d, init_std, rng);
        let blocks = (0..shape.layers)
            .map(|_| Block {
                attention_norm: Norm::new(d),
                query: Layer::uniform(d, d, rng),
                key: Layer::uniform(d, d, rng),
                value: Layer::uniform(d, d, rng),
                output: Layer::uniform(d, d, rng),
                feed_forward_norm: Norm::new(d),
                feed_forward_in: Layer::uniform(d, shape.feed_forward, rng),
                feed_forward_out: Layer::uniform(shape.feed_forward, d, rng),
            })
            .collect();
        SelfAttention { shape, positions, blocks, final_norm: Norm::new(d) }
    }

    /// Dense parameters of an encoder of `shape` (the position table aside).
    pub fn dense_parameter_count(shape: &Shape) -> usize {
        let (d, f) = (shape.dim, shape.feed_forward);
        shape.layers * (4 * d + 4 * (d * d + d) + (d * f + f) + (f * d + d)) + 2 * d
    }

    pub fn tensors<D: Device<f32>>(&self, dev: &D) -> AttentionTensors<D> {
        let norm = |n: &Norm| (n.gain.tensor(dev), n.bias.tensor(dev));
        AttentionTensors {
            blocks: self
                .blocks
                .iter()
                .map(|b| BlockTensors {
                    attention_norm: norm(&b.attention_norm),
                    layers: [&b.query, &b.key, &b.value, &b.output, &b.feed_forward_in, &b.feed_forward_out]
                        .map(|l| l.tensors(dev)),
                    feed_forward_norm: norm(&b.feed_forward_norm),
                })
                .collect(),
            final_norm: norm(&self.final_norm),
        }
    }

    /// Keeps (or with `add`, adds) the step's gradients of the dense parameters.
    pub fn take_gradients<D: Device<f32>>(&mut self, grads: &Gradients<f32, D>, t: &AttentionTensors<D>, add: bool) {
        let norm = |n: &mut Norm, t: &(Vector<D>, Vector<D>)| {
            n.gain.keep_gradient(crate::dense::to_host(&grads.get(&t.0)), add);
            n.bias.keep_gradient(crate::dense::to_host(&grads.get(&t.1)), add);
        };
        for (b, t) in self.blocks.iter_mut().zip(&t.blocks) {
            norm(&mut b.attention_norm, &t.attention_norm);
            norm(&mut b.feed_forward_norm, &t.feed_forward_norm);
            let layers = [
                &mut b.query,
                &mut b.key,
                &mut b.value,
                &mut b.output,
                &mut b.feed_forward_in,
                &mut b.feed_forward_out,
            ];
            layers.into_iter().zip(&t.layers).for_each(|(l, t)| l.take_gradients(grads, t, add));
        }
        norm(&mut self.final_norm, &t.final_norm);
    }

    pub fn params<'a>(&'a self, out: &mut Vec<(String, ParamRef<'a>)>) {
        out.push(("attention.positions".into(), ParamRef::Table(&self.positions)));
        for (i, b) in self.blocks.iter().enumerate() {
            let p = format!("attention.block{i}");
            out.push((format!("{p}.attention_norm.gain"), ParamRef::Dense(&b.attention_norm.gain)));
            out.push((format!("{p}.attention_norm.bias"), ParamRef::Dense(&b.attention_norm.bias)));
            b.query.params(&format!("{p}.query"), out);
            b.key.params(&format!("{p}.key"), out);
            b.value.params(&format!("{p}.value"), out);
            b.output.params(&format!("{p}.output"), out);
            out.push((format!("{p}.feed_forward_norm.gain"), ParamRef::Dense(&b.feed_forward_norm.gain)));
            out.push((format!("{p}.feed_forward_norm.bias"), ParamRef::Dense(&b.feed_forward_norm.bias)));
            b.feed_forward_in.params(&format!("{p}.feed_forward_in"), out);
            b.feed_forward_out.params(&format!("{p}.feed_forward_out"), out);
        }
        out.push(("attention.final_norm.gain".into(), ParamRef::Dense(&self.final_norm.gain)));
        out.push(("attention.final_norm.bias".into(), ParamRef::Dense(&self.final_norm.bias)));
    }

    /// [`SelfAttention::params`], mutably, same names.
    pub fn params_mut<'a>(&'a mut self, out: &mut Vec<(String, ParamMut<'a>)>) {
        out.push(("attention.positions".into(), ParamMut::Table(&mut self.positions)));
        for (i, b) in self.blocks.iter_mut().enumerate() {
            let p = format!("attention.block{i}");
            out.push((format!("{p}.attention_norm.gain"), ParamMut::Dense(&mut b.attention_norm.gain)));
            out.push((format!("{p}.attention_norm.bias"), ParamMut::Dense(&mut b.attention_norm.bias)));
            b.query.params_mut(&format!("{p}.query"), out);
            b.key.params_mut(&format!("{p}.key"), out);
            b.value.params_mut(&format!("{p}.value"), out);
            b.output.params_mut(&format!("{p}.output"), out);
            out.push((format!("{p}.feed_forward_norm.gain"), ParamMut::Dense(&mut b.feed_forward_norm.gain)));
            out.push((format!("{p}.feed_forward_norm.bias"), ParamMut::Dense(&mut b.feed_forward_norm.bias)));
            b.feed_forward_in.params_mut(&format!("{p}.feed_forward_in"), out);
            b.feed_forward_out.params_mut(&format!("{p}.feed_forward_out"), out);
        }
        out.push(("attention.final_norm.gain".into(), ParamMut::Dense(&mut self.final_norm.gain)));
        out.push(("attention.final_norm.bias".into(), ParamMut::Dense(&mut self.final_norm.bias)));
    }

    /// The batch's leaves: `x` the summed item and position embeddings of
    /// `rows` sequences of `lengths` over `width` slots (`x` filled by the
    /// caller with item embeddings; positions are added here), and the slot
    /// each output is read from. `dropout_seed` draws dropout's masks when
    /// training.
    pub fn sequences<D: Device<f32>>(
        &self,
        dev: &D,
        mut x: Vec<f32>,
        lengths: &[u32],
        width: usize,
        read: Vec<usize>,
        dropout_seed: Option<u64>,
    ) -> Sequences<D> {
        let (rows, d, h) = (lengths.len(), self.shape.dim, self.shape.heads);
        for (r, &len) in lengths.iter().enumerate() {
            for p in 0..len as usize {
                let at = (r * width + p) * d;
                self.positions.row(p as u32).iter().zip(&mut x[at..at + d]).for_each(|(w, x)| *x += w);
            }
        }
        let mut mask = vec![HIDDEN; rows * h * width * width];
        for (r, &len) in lengths.iter().enumerate() {
            for head in 0..h {
                let block = &mut mask[(r * h + head) * width * width..][..width * width];
                for (i, scores) in block.chunks_exact_mut(width).enumerate() {
                    // A query at a padded slot sees the real items (its
                    // output is never read); a row without items sees slot 0.
                    let visible = (i + 1).min(len as usize).max(1);
                    scores[..visible].iter_mut().for_each(|s| *s = 0.0);
                }
            }
        }
        let p = self.shape.dropout;
        let dropout = dropout_seed.filter(|_| p > 0.0).map(|seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            let keep = 1.0 / (1.0 - p);
            let mut draw =
                |n: usize| -> Vec<f32> { (0..n).map(|_| if rng.gen::<f32>() < p { 0.0 } else { keep }).collect() };
            let slots = (0..1 + 2 * self.shape.layers)
                .map(|_| dev.tensor_from_vec(draw(rows * width * d), (rows * width, d)))
                .collect();
            let weights = (0..self.shape.layers)
                .map(|_| dev.tensor_from_vec(draw(rows * h * width * width), (rows * h, width, width)))
                .collect();
            Dropout { slots, weights }
        });
        Sequences {
            x: dev.tensor_from_vec(x, (rows * width, d)),
            rows,
            width,
            mask: dev.tensor_from_vec(mask, (rows * h, width, width)),
            read: dev.tensor_from_vec(read.clone(), (read.len(),)),
            dropout,
        }
    }

    /// The encodings read at the requested slots, `[reads, dim]`.
    pub fn forward<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(
        &self,
        s: &Sequences<D>,
        p: &AttentionTensors<D>,
    ) -> Mat<D, T> {
        let (b, l, d, h) = (s.rows, s.width, self.shape.dim, self.shape.heads);
        let dh = d / h;
        let mut slot_masks = s.dropout.iter().flat_map(|m| &m.slots);
        let mut drop_slots = |x: Mat<D, T>| match slot_masks.next() {
            Some(m) => x * m.clone(),
            None => x,
        };
        let mut x = drop_slots(s.x.retaped::<T>());
        let mut weight_masks = s.dropout.iter().flat_map(|m| &m.weights);
        for t in &p.blocks {
            // Multi-head attention over the normalised input.
            let y = layer_norm(x.retaped::<T>(), &t.attention_norm);
            let heads = |m: Mat<D, T>| -> Tensor<(usize, usize, usize), f32, D, T> {
                m.reshape_like(&(b, l, h, dh)).permute::<_, Axes4<0, 2, 1, 3>>().reshape_like(&(b * h, l, dh))
            };
            let q = heads(affine(y.retaped::<T>(), &t.layers[0]));
            let k = heads(affine(y.retaped::<T>(), &t.layers[1]));
            let v = heads(affine(y, &t.layers[2]));
            let scores = q.matmul(k.permute::<_, Axes3<0, 2, 1>>()) * (1.0 / (dh as f32).sqrt()) + s.mask.clone();
            let mut weights = scores.softmax::<Axis<2>>();
            if let Some(m) = weight_masks.next() {
                weights = weights * m.clone();
            }
            let context = weights
                .matmul(v)
                .reshape_like(&(b, h, l, dh))
                .permute::<_, Axes4<0, 2, 1, 3>>()
                .reshape_like(&(b * l, d));
            x = x + drop_slots(affine(context, &t.layers[3]));
            // The position-wise feed-forward network.
            let y = layer_norm(x.retaped::<T>(), &t.feed_forward_norm);
            let f = affine(affine_relu(y, &t.layers[4]), &t.layers[5]);
            x = x + drop_slots(f);
        }
        layer_norm(x, &p.final_norm).gather(s.read.clone())
    }
}

/// `(x - mean) / sqrt(var + eps) * gain + bias` over each row.
fn layer_norm<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(x: Mat<D, T>, norm: &(Vector<D>, Vector<D>)) -> Mat<D, T> {
    let shape = *x.shape();
    x.normalize::<Axis<1>>(NORM_EPSILON) * norm.0.retaped::<T>().broadcast_like::<_, Axis<0>>(&shape)
        + norm.1.retaped::<T>().broadcast_like::<_, Axis<0>>(&shape)
}
