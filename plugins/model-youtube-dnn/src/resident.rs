//! The device-resident training step (`[train] engine = "device"`).
//!
//! The host engine (model.rs) gathers each batch's rows on the host, runs the
//! towers on dfdx, the loss in objective.rs and Adam in adam.rs. On a GPU
//! that copies the gathered rows, the vectors and every gradient across the
//! bus at each step. Here the parameters and Adam's moments stay on the
//! model's device as dfdx tensors and a step is dfdx operations end to end:
//! embedding gathers, history pooling, the tower, logits with logQ, masks and
//! temperature, the loss, backward, the gradient norm and Adam. Only the
//! batch goes up (its indices, the sampler's `log q` and row weights) and only
//! the loss and the gradient norm come down. It is generic over dfdx's
//! `Device`, so it runs, and is tested against the host engine, on `Cpu`.
//!
//! It covers the model whose query is the mean of its history's item rows
//! under the tower, with plain item IDs (the headline's and the bench's);
//! [`unsupported`] names what else a model has.

use anyhow::{ensure, Result};
use dfdx::prelude::*;
use funnel_api::{Histories, ItemIdx, TrainBatch};

use crate::adam::{Adam, Moments, RowStep};
use crate::dense::{mlp, Dense, Layer, LayerTensors, Mat, Vector};
use crate::objective::MASKED;
use crate::table::EmbeddingTable;
use crate::{EmbeddingOptimizer, Loss};

/// One parameter on the device with its Adam moments.
struct Slot<S: Shape, D: Device<f32>> {
    name: String,
    value: Tensor<S, f32, D>,
    m: Tensor<S, f32, D>,
    v: Tensor<S, f32, D>,
}

impl<S: Shape, D: Device<f32>> Slot<S, D> {
    fn new(dev: &D, name: String, shape: S, value: &[f32], m: &[f32], v: &[f32]) -> Slot<S, D> {
        let up = |x: &[f32]| dev.tensor_from_vec(x.to_vec(), shape);
        Slot { name, value: up(value), m: up(m), v: up(v) }
    }

    /// One Adam step from gradient `g`; with `rows`, only where it is true
    /// (lazy Adam: untouched rows keep their weights and moments).
    fn step(&mut self, g: Tensor<S, f32, D>, c: &RowStep, rows: Option<Tensor<S, bool, D>>) {
        let m = self.m.clone() * c.beta1 + g.clone() * (1.0 - c.beta1);
        let v = self.v.clone() * c.beta2 + g.square() * (1.0 - c.beta2);
        let value = self.value.clone() - m.clone() * c.step / (v.clone().sqrt() + c.eps);
        match rows {
            Some(rows) => {
                self.value = rows.clone().choose(value, self.value.clone());
                self.m = rows.clone().choose(m, self.m.clone());
                self.v = rows.choose(v, self.v.clone());
            }
            None => (self.value, self.m, self.v) = (value, m, v),
        }
    }

    fn download(&self) -> [Vec<f32>; 3] {
        [self.value.as_vec(), self.m.as_vec(), self.v.as_vec()]
    }
}

/// A tower layer's weight and bias.
type LayerSlots<D> = (Slot<(usize, usize), D>, Slot<(usize,), D>);

/// An embedding table on the device, with what finds the rows a step read.
struct TableSlot<D: Device<f32>> {
    slot: Slot<(usize, usize), D>,
    lazy: bool,
    /// Zeros, one per row, gathered with every row the step reads and added
    /// to the loss (which it leaves unchanged): its gradient counts each
    /// row's reads, so the device learns which rows were touched from the
    /// indices alone.
    probe: Vector<D>,
}

impl<D: Device<f32>> TableSlot<D> {
    fn new(dev: &D, name: &str, t: &EmbeddingTable, how: EmbeddingOptimizer) -> TableSlot<D> {
        let (m, v) = t.moments();
        TableSlot {
            slot: Slot::new(dev, name.to_string(), (t.rows(), t.dim), &t.weights(), &m, &v),
            lazy: how == EmbeddingOptimizer::LazyAdam,
            probe: dev.zeros_like(&(t.rows(),)),
        }
    }
}

/// The model's parameters on the device (see the module's doc).
pub struct Resident<D: Device<f32>> {
    dev: D,
    /// History rows, and the candidates' when the tables are shared.
    input: TableSlot<D>,
    /// Candidate rows; `None` when they share `input`.
    output: Option<TableSlot<D>>,
    tower: Vec<LayerSlots<D>>,
    /// The last step's gradients, until they are applied.
    pending: Option<Gradients<f32, D>>,
    /// Whether the device holds steps the host copy has not seen.
    pub ahead: bool,
}

/// How the loss forms logits (the model's `[model]` keys).
#[derive(Debug, Clone, Copy)]
pub struct Objective {
    pub temperature: f32,
    pub normalize: bool,
    pub loss: Loss,
}

/// What a model has that the device step does not cover, if anything.
pub fn unsupported(p: &Parts) -> Option<&'static str> {
    [
        (!p.mean_history, "a sequence encoder other than the mean, or user IDs as input"),
        (p.side_features, "side features or the example age"),
        (p.outcomes, "outcome-conditioned queries"),
        (p.item_tower, "an item tower"),
        (p.hashed_items, "hashed item IDs"),
        (p.exclude_seen, "seen items excluded from the negatives (exclude_seen)"),
    ]
    .into_iter()
    .find(|(has, _)| *has)
    .map(|(_, what)| what)
}

/// What [`unsupported`] looks at.
pub struct Parts {
    pub mean_history: bool,
    pub side_features: bool,
    pub outcomes: bool,
    pub item_tower: bool,
    pub hashed_items: bool,
    pub exclude_seen: bool,
}

/// The host parameters a [`Resident`] is made from and synced back to.
pub struct HostParams<'a> {
    pub input: &'a mut EmbeddingTable,
    pub output: Option<(&'a str, &'a mut EmbeddingTable)>,
    pub tower: &'a mut [Layer],
}

impl<D: Device<f32>> Resident<D> {
    /// Uploads the host parameters and moments.
    pub fn new(dev: &D, host: HostParams<'_>, how: EmbeddingOptimizer) -> Resident<D> {
        Resident {
            dev: dev.clone(),
            input: TableSlot::new(dev, "input_embeddings", host.input, how),
            output: host.output.map(|(name, t)| TableSlot::new(dev, name, t, how)),
            tower: host
                .tower
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    (
                        dense_slot(dev, format!("layer{i}.weight"), (l.fan_in, l.fan_out), &l.weight),
                        dense_slot(dev, format!("layer{i}.bias"), (l.fan_out,), &l.bias),
                    )
                })
                .collect(),
            pending: None,
            ahead: false,
        }
    }

    /// Copies the parameters and moments back into the host's buffers.
    pub fn download_into(&mut self, host: HostParams<'_>) {
        let table = |s: &TableSlot<D>, t: &mut EmbeddingTable| {
            let [value, m, v] = s.slot.download();
            t.set_weights(&value);
            t.set_moments(&m, &v);
        };
        table(&self.input, host.input);
        if let (Some(s), Some((_, t))) = (&self.output, host.output) {
            table(s, t);
        }
        let dense = |s: &[Vec<f32>; 3], d: &mut Dense| {
            d.values.clone_from(&s[0]);
            d.moments = Moments { m: s[1].clone(), v: s[2].clone() };
        };
        for ((w, b), l) in self.tower.iter().zip(host.tower.iter_mut()) {
            dense(&w.download(), &mut l.weight);
            dense(&b.download(), &mut l.bias);
        }
        self.ahead = false;
    }

    /// Every parameter's values and moments by its name in the model's
    /// snapshots.
    pub fn snapshot(&self) -> Vec<(String, [Vec<f32>; 3])> {
        let mut out = vec![(self.input.slot.name.clone(), self.input.slot.download())];
        if let Some(o) = &self.output {
            out.push((o.slot.name.clone(), o.slot.download()));
        }
        for (w, b) in &self.tower {
            out.push((w.name.clone(), w.download()));
            out.push((b.name.clone(), b.download()));
        }
        out
    }

    fn candidates(&self) -> &TableSlot<D> {
        self.output.as_ref().unwrap_or(&self.input)
    }

    /// Forward and backward over `batch`; keeps the gradients for
    /// [`Resident::apply`] and returns the loss and the gradient norm.
    pub fn forward_backward(&mut self, batch: &TrainBatch<'_>, how: Objective) -> Result<(f32, f32)> {
        type T<D> = OwnedTape<f32, D>;
        let dev = &self.dev;
        let (b, c) = (batch.positives.len(), batch.candidates);
        let h = &batch.queries.histories;
        ensure!(h.width > 0, "the device step needs histories at least one item wide ([features] max_history)");
        let d = self.input.slot.value.shape().1;
        let index = |ids: &[ItemIdx]| dev.tensor_from_vec(ids.iter().map(|&i| i as usize).collect(), (ids.len(),));
        let floats = |x: Vec<f32>| {
            let n = x.len();
            dev.tensor_from_vec(x, (n,))
        };

        // The query: the mean of the history's rows (padding reads row 0 at
        // weight 0), then the tower.
        let (slots, weights) = history_reads(h);
        let rows = self.input.slot.value.retaped::<T<D>>().gather(index(&slots)).reshape_like(&(b, h.width, d));
        let w = dev.tensor_from_vec(weights, (b, h.width)).broadcast_like::<_, Axis<2>>(&(b, h.width, d));
        let pooled = (rows * w).sum::<(usize, usize), Axis<1>>();
        let tower: Vec<LayerTensors<D>> = self.tower.iter().map(|(w, b)| (w.value.clone(), b.value.clone())).collect();
        let u = normalized(mlp(pooled, &tower), how.normalize);

        // Shared columns: the batch's positives, then the shared negatives.
        let shared: Vec<ItemIdx> = batch.positives.iter().chain(&c.shared).copied().collect();
        let s = shared.len();
        let table = &self.candidates().slot.value;
        let v = normalized(table.retaped::<T<D>>().gather(index(&shared)), how.normalize);
        let correct = |log_q: f32| if c.log_q_correction { -log_q } else { 0.0 };
        let offsets = floats(c.positive_log_q.iter().chain(&c.shared_log_q).map(|&q| correct(q)).collect());
        let inv_t = 1.0 / how.temperature;
        // `u` carries the query side's tape, so it joins the loss once, here;
        // the own negatives read a copy whose tape the concatenation merges.
        let k = c.per_row.len() / b;
        let u_own = (k > 0).then(|| u.retaped::<T<D>>());
        let logits = u.matmul(v.permute::<_, Axes2<1, 0>>()) * inv_t + offsets.broadcast_like::<_, Axis<0>>(&(b, s));
        // Masked: a column holding the row's positive (an accidental hit),
        // and in-batch columns that are no negatives for the row (in-batch
        // negatives off, or the same sequence window); never the row's own.
        let as_f32 = |ids: &[ItemIdx]| floats(ids.iter().map(|&i| i as f32).collect());
        let positive = as_f32(batch.positives);
        let hit = as_f32(&shared)
            .broadcast_like::<_, Axis<0>>(&(b, s))
            .eq(&positive.clone().broadcast_like::<_, Axis<1>>(&(b, s)));
        let (row_group, column_group) = groups(batch, s);
        let same_group = floats(column_group)
            .broadcast_like::<_, Axis<0>>(&(b, s))
            .eq(&floats(row_group).broadcast_like::<_, Axis<1>>(&(b, s)));
        let row_index = floats((0..b).map(|r| r as f32).collect());
        let own_column = floats((0..s).map(|c| c as f32).collect())
            .broadcast_like::<_, Axis<0>>(&(b, s))
            .eq(&row_index.broadcast_like::<_, Axis<1>>(&(b, s)));
        let keep = !(hit | same_group) | own_column;
        let logits = keep.choose(logits, dev.ones_like(&(b, s)) * MASKED);

        // Each row's own negatives; the last `explicit` are the user's
        // dislikes, whose `-log q` (their weight) always applies.
        let (logits, columns) = match u_own {
            None => (logits, s),
            Some(u_own) => {
                let r = normalized(table.retaped::<T<D>>().gather(index(&c.per_row)), how.normalize)
                    .reshape_like(&(b, k, d));
                let dots = (u_own.broadcast_like::<_, Axis<1>>(&(b, k, d)) * r).sum::<(usize, usize), Axis<2>>();
                let own_offsets: Vec<f32> = c
                    .per_row_log_q
                    .iter()
                    .enumerate()
                    .map(|(i, &q)| if i % k + c.explicit >= k { -q } else { correct(q) })
                    .collect();
                let own = dots * inv_t + dev.tensor_from_vec(own_offsets, (b, k));
                let own_hit = dev
                    .tensor_from_vec(c.per_row.iter().map(|&i| i as f32).collect(), (b, k))
                    .eq(&positive.broadcast_like::<_, Axis<1>>(&(b, k)));
                let own = (!own_hit).choose(own, dev.ones_like(&(b, k)) * MASKED);
                ((logits, own).concat_along(Axis::<1>), s + k)
            }
        };

        let row_weights = floats(if batch.weights.is_empty() { vec![1.0; b] } else { batch.weights.to_vec() });
        let per_row = match how.loss {
            Loss::Softmax => -logits.log_softmax::<Axis<1>>().select(dev.tensor_from_vec((0..b).collect(), (b,))),
            Loss::Bce => {
                let targets =
                    own_column_of(dev, b, columns).choose(dev.ones_like(&(b, columns)), dev.zeros_like(&(b, columns)));
                logits.bce_with_logits(targets).sum::<(usize,), Axis<1>>()
            }
        };
        let loss = (per_row * row_weights).sum::<(), _>() / b as f32;
        let value = loss.as_vec()[0];

        // The probes: zero added to the loss, their gradients count reads.
        let mut total = loss;
        let history_items: Vec<ItemIdx> = h.items.iter().copied().filter(|&i| i != Histories::PAD).collect();
        let candidate_items: Vec<ItemIdx> = shared.iter().chain(&c.per_row).copied().collect();
        let reads = match &self.output {
            Some(o) => vec![(&self.input, history_items), (o, candidate_items)],
            None => vec![(&self.input, history_items.into_iter().chain(candidate_items).collect())],
        };
        for (t, items) in reads {
            if t.lazy && !items.is_empty() {
                total = total + t.probe.retaped::<T<D>>().gather(index(&items)).sum::<(), _>();
            }
        }
        let grads = total.backward();

        // The norm's squares summed on the device: one number comes down.
        let mut squares: Tensor<(), f32, D> = dev.zeros();
        for t in std::iter::once(&self.input).chain(&self.output) {
            squares = squares + grads.get(&t.slot.value).square().sum::<(), _>();
        }
        for (w, b) in &self.tower {
            squares =
                squares + grads.get(&w.value).square().sum::<(), _>() + grads.get(&b.value).square().sum::<(), _>();
        }
        let norm = squares.as_vec()[0].sqrt();
        self.pending = Some(grads);
        Ok((value, norm))
    }

    /// The kept gradients by parameter name (tests compare them with the
    /// host engine's).
    #[cfg(test)]
    pub fn gradients(&self) -> Vec<(String, Vec<f32>)> {
        let grads = self.pending.as_ref().expect("a step has run");
        let mut out = vec![(self.input.slot.name.clone(), grads.get(&self.input.slot.value).as_vec())];
        if let Some(o) = &self.output {
            out.push((o.slot.name.clone(), grads.get(&o.slot.value).as_vec()));
        }
        for (w, b) in &self.tower {
            out.push((w.name.clone(), grads.get(&w.value).as_vec()));
            out.push((b.name.clone(), grads.get(&b.value).as_vec()));
        }
        out
    }

    /// One Adam step (`adam` has begun it) from the kept gradients.
    pub fn apply(&mut self, adam: &Adam) {
        let Some(grads) = self.pending.take() else { return };
        let c = adam.row_step();
        let (input, output) = (&mut self.input, &mut self.output);
        for t in std::iter::once(input).chain(output.as_mut()) {
            let g = grads.get(&t.slot.value);
            let rows = t.lazy.then(|| {
                let shape = *t.slot.value.shape();
                grads.get(&t.probe).broadcast_like::<_, Axis<1>>(&shape).gt(0.0)
            });
            t.slot.step(g, &c, rows);
        }
        for (w, b) in &mut self.tower {
            w.step(grads.get(&w.value), &c, None);
            b.step(grads.get(&b.value), &c, None);
        }
        self.ahead = true;
    }
}

fn dense_slot<S: Shape, D: Device<f32>>(dev: &D, name: String, shape: S, d: &Dense) -> Slot<S, D> {
    Slot::new(dev, name, shape, &d.values, &d.moments.m, &d.moments.v)
}

/// Each history slot's table row (padding reads row 0) and weight (`1 / len`
/// for real items, 0 for padding), row-major `[B, width]`.
fn history_reads(h: &Histories) -> (Vec<ItemIdx>, Vec<f32>) {
    let mut slots = Vec::with_capacity(h.items.len());
    let mut weights = Vec::with_capacity(h.items.len());
    for (r, &len) in h.lengths.iter().enumerate() {
        let w = 1.0 / len.max(1) as f32;
        for (p, &item) in h.items[r * h.width..(r + 1) * h.width].iter().enumerate() {
            let real = (p as u32) < len && item != Histories::PAD;
            slots.push(if real { item } else { 0 });
            weights.push(if real { w } else { 0.0 });
        }
    }
    (slots, weights)
}

/// Group labels of rows and shared columns: a shared column is masked for a
/// row of the same label. In-batch columns carry the row's sequence window
/// (masked within it), all 0 when in-batch negatives are off (masked for
/// every row); shared negatives carry -1, which no row has.
fn groups(batch: &TrainBatch<'_>, s: usize) -> (Vec<f32>, Vec<f32>) {
    let b = batch.positives.len();
    let labels: Option<Vec<f32>> = match (batch.candidates.in_batch, &batch.windows) {
        (false, _) => Some(vec![0.0; b]),
        (true, Some(w)) => Some(w.queries.iter().map(|q| q.row as f32).collect()),
        (true, None) => None,
    };
    match labels {
        Some(rows) => {
            let mut columns = vec![-1.0; s];
            columns[..b].copy_from_slice(&rows);
            (rows, columns)
        }
        // Nothing masked by group: labels no column has.
        None => (vec![-2.0; b], vec![-1.0; s]),
    }
}

/// True at `(r, r)` of a `[b, columns]` block: each row's positive column.
fn own_column_of<D: Device<f32>>(dev: &D, b: usize, columns: usize) -> Tensor<(usize, usize), bool, D> {
    let rows = dev.tensor_from_vec((0..b).map(|r| r as f32).collect(), (b,));
    dev.tensor_from_vec((0..columns).map(|c| c as f32).collect(), (columns,))
        .broadcast_like::<_, Axis<0>>(&(b, columns))
        .eq(&rows.broadcast_like::<_, Axis<1>>(&(b, columns)))
}

/// Rows scaled to unit length when `normalize` (the epsilon as the host's).
fn normalized<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(x: Mat<D, T>, normalize: bool) -> Mat<D, T> {
    if !normalize {
        return x;
    }
    let shape = *x.shape();
    let norm = (x.retaped::<T>().square().sum::<(usize,), Axis<1>>() + 1e-12).sqrt();
    x / norm.broadcast_like::<_, Axis<1>>(&shape)
}
