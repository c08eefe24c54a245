//! The candidate models: parameters, one training step on dfdx, inference.
//!
//! A batch becomes leaf tensors built on the host (the query features, GRU
//! steps or user rows, and the candidates' item inputs); dfdx computes the
//! towers, the logits and the loss, and the leaves' gradients are scattered
//! back into the embedding tables row by row.

use std::ops::Range;
use std::sync::mpsc;
use std::thread::{Scope, ScopedJoinHandle};

use anyhow::{anyhow, bail, ensure, Context, Result};
// A glob: dfdx's tensor methods come from dozens of traits. Local imports
// below (`Adam`, `Model`) shadow its names of the same spelling.
use dfdx::prelude::*;
use funnel_api::{
    BuildCx, Engine, Histories, ItemEncoding, ItemIdx, Matrix, Model, ModelState, Queries, StepStats, TrainBatch,
    TrainingState, WindowQuery, Windows,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::adam::Adam;
use crate::attention::{self, AttentionTensors, SelfAttention, Sequences};
use crate::dense::{mlp, to_host, Layer, LayerTensors, Mat, ParamMut, ParamRef};
use crate::fields::{FieldTable, ItemTable};
use crate::objective::{self, Batch, Logits, SeenColumns, VectorGradients, Workspace};
use crate::recurrent::{Cell, Recurrent, Steps};
use crate::resident::{self, HostParams, Objective, Resident};
use crate::table::{EmbeddingTable, PREFETCH_AHEAD};
use crate::{Config, SequenceEncoder, UserInput};

/// Rows scored per forward pass at inference, to bound memory.
const INFERENCE_CHUNK: usize = 4096;

/// Attention scores held per forward pass at inference (rows x heads x
/// width²), to bound memory.
const INFERENCE_SCORES: usize = 1 << 24;

/// Example age enters the user tower as `[age, age²]` (Covington et al. feed
/// powers of continuous features so the tower can form non-linear terms).
const AGE_WIDTH: usize = 2;

/// The host-built inputs of the user tower for some query rows.
struct QueryLeaves<D: Device<f32>> {
    /// Averaged history, side features and example age, `[B, query_width]`
    /// (`None` when that width is 0).
    features: Option<Mat<D>>,
    /// The history as recurrent steps.
    steps: Option<Steps<D>>,
    /// Over windows: the row of the every-step encoding each query reads.
    step_reads: Option<Tensor<(usize,), usize, D>>,
    /// The history (or the batch's windows) for self-attention.
    sequences: Option<Sequences<D>>,
    /// Matrix factorization's gathered user rows, `[B, dim]`.
    users: Option<Mat<D>>,
}

/// One batch's inputs (see [`CandidateModel::prepare`]).
struct Prepared {
    /// Item inputs of the positives, then the shared negatives, row-major.
    v: Vec<f32>,
    /// Item inputs of each row's own negatives, `[B * k, item_width]`.
    r: Vec<f32>,
    shared_ids: Vec<ItemIdx>,
}

/// Candidate vectors of a batch: the host item inputs themselves, or (with
/// an item tower) the tower's output and its leaf.
struct CandidateVectors<D: Device<f32>, T> {
    leaf: Option<Mat<D>>,
    out: Option<Mat<D, T>>,
}

/// The dense parameters as tensors for one step.
struct DenseTensors<D: Device<f32>> {
    tower: Vec<LayerTensors<D>>,
    recurrent: Vec<LayerTensors<D>>,
    attention: Option<AttentionTensors<D>>,
    item_tower: Vec<LayerTensors<D>>,
}

pub struct CandidateModel<D: Device<f32>> {
    dev: D,
    cfg: Config,
    n_items: usize,
    n_users: usize,
    /// History items (`None` for matrix factorization).
    input: Option<ItemTable>,
    /// Candidate items; `None` when they share `input`.
    output: Option<ItemTable>,
    /// Matrix factorization's user vectors.
    users: Option<EmbeddingTable>,
    /// Item features averaged over the history's items (user tower input).
    history_fields: Vec<FieldTable>,
    user_fields: Vec<FieldTable>,
    example_age: bool,
    /// One row per outcome a query may ask about, in the query features
    /// (ItemSage): `None` with fewer than two outcomes.
    outcome: Option<EmbeddingTable>,
    /// The history's encoder when it is not the mean.
    recurrent: Option<Recurrent>,
    attention: Option<SelfAttention>,
    tower: Vec<Layer>,
    /// Item features of the item tower (`two_tower`).
    item_fields: Vec<FieldTable>,
    item_tower: Vec<Layer>,
    adam: Adam,
    /// Scratch of the loss, reused across steps.
    workspace: Workspace,
    vector_grads: VectorGradients,
    /// Seeds dropout's masks, with the step count.
    seed: u64,
    /// Encode a batch of several windows in two parts on two threads (the
    /// same on any machine, whatever its cores; off only to test against).
    encode_in_parts: bool,
    /// Whether steps run on the device ([`Resident`], `[train] engine`).
    on_device: bool,
    /// The parameters on the device, made at the first device step.
    resident: Option<Resident<D>>,
}

/// What `[train] engine` resolves to for `cfg`: whether steps run on the
/// device; an error when "device" is asked of a model it does not cover.
pub fn steps_on_device(cfg: &Config, cx: &BuildCx) -> Result<bool> {
    let encoding = &cx.inputs.items;
    let parts = resident::Parts {
        mean_history: cfg.user_input == UserInput::History && cfg.params.sequence_encoder == SequenceEncoder::Mean,
        side_features: cfg.user_input == UserInput::History
            && (!cx.inputs.item_fields.is_empty() || !cx.inputs.user_fields.is_empty() || cx.inputs.example_age),
        outcomes: conditions_on_outcome(cfg, cx),
        item_tower: !cfg.params.item_hidden.is_empty(),
        hashed_items: encoding.items() != 0 && *encoding != ItemEncoding::identity(cx.n_items),
        exclude_seen: cfg.params.exclude_seen,
    };
    let missing = resident::unsupported(&parts);
    let gpu = cx.train.device != "cpu";
    match cx.train.engine {
        Engine::Host => Ok(false),
        Engine::Auto => Ok(gpu && missing.is_none()),
        Engine::Device => match missing {
            None => {
                // Item IDs are compared as f32 on the device (exact below 2^24).
                ensure!(
                    cx.n_items < 1 << 24,
                    "[train] engine = \"device\": {} items; the device step handles fewer than 2^24",
                    cx.n_items
                );
                Ok(true)
            }
            Some(what) => bail!(
                "[train] engine = \"device\" covers the mean of the history under the tower with plain item IDs; \
                 this model has {what} (use engine = \"host\")"
            ),
        },
    }
}

/// Parameters (not optimizer state) of `cfg` over `cx`'s catalog and side inputs.
pub fn parameter_estimate(cfg: &Config, cx: &BuildCx) -> u128 {
    let (d, s) = (cfg.params.dim as u128, cfg.params.side_dim as u128);
    let rows = if cx.inputs.items.items() == 0 { cx.n_items } else { cx.inputs.items.rows } as u128;
    let cardinality = |fields: &[funnel_api::Categorical]| fields.iter().map(|f| f.cardinality as u128).sum::<u128>();
    let layers = |widths: &[usize]| widths.windows(2).map(|w| (w[0] as u128 + 1) * w[1] as u128).sum::<u128>();
    let (user_width, item_width) = widths(cfg, cx);
    let mut n = 0;
    match cfg.user_input {
        UserInput::UserId => n += rows * d + cx.n_users as u128 * d,
        UserInput::History => {
            n += layers(&tower_widths(user_width, &cfg.params.hidden, cfg.params.dim));
            n += rows * d * if cfg.params.share_embeddings { 1 } else { 2 };
            n += s * (cardinality(&cx.inputs.item_fields) + cardinality(&cx.inputs.user_fields));
            if conditions_on_outcome(cfg, cx) {
                n += s * cx.inputs.outcomes as u128;
            }
            let p = &cfg.params;
            n += match p.sequence_encoder {
                SequenceEncoder::Mean => 0,
                SequenceEncoder::Gru => Recurrent::parameter_count(Cell::Gru, p.dim, p.gru_hidden) as u128,
                SequenceEncoder::Lstm => Recurrent::parameter_count(Cell::Lstm, p.dim, p.lstm_hidden) as u128,
                SequenceEncoder::SelfAttention => {
                    let shape = attention_shape(cfg, cx.max_history);
                    (SelfAttention::dense_parameter_count(&shape) + shape.max_len * shape.dim) as u128
                }
            };
        }
    }
    if !cfg.params.item_hidden.is_empty() {
        n += s * cardinality(&cx.inputs.item_fields)
            + layers(&tower_widths(item_width, &cfg.params.item_hidden, cfg.params.dim));
    }
    n
}

/// Input widths of the user tower and of the item tower.
fn widths(cfg: &Config, cx: &BuildCx) -> (usize, usize) {
    let (d, s) = (cfg.params.dim, cfg.params.side_dim);
    let user = match cfg.user_input {
        UserInput::UserId => d,
        UserInput::History => {
            let history = match cfg.params.sequence_encoder {
                SequenceEncoder::Gru => cfg.params.gru_hidden,
                SequenceEncoder::Lstm => cfg.params.lstm_hidden,
                SequenceEncoder::Mean | SequenceEncoder::SelfAttention => d,
            };
            let fields =
                cx.inputs.item_fields.len() + cx.inputs.user_fields.len() + conditions_on_outcome(cfg, cx) as usize;
            history + s * fields + if cx.inputs.example_age { AGE_WIDTH } else { 0 }
        }
    };
    let item = if cfg.params.item_hidden.is_empty() { d } else { d + s * cx.inputs.item_fields.len() };
    (user, item)
}

/// Whether the query embeds the outcome it asks about: with two outcomes
/// or more, given a tower to feed it to.
fn conditions_on_outcome(cfg: &Config, cx: &BuildCx) -> bool {
    cfg.user_input == UserInput::History && cx.inputs.outcomes >= 2
}

/// The self-attention encoder's shape under `cfg` for histories of `max_history`.
fn attention_shape(cfg: &Config, max_history: usize) -> attention::Shape {
    let p = &cfg.params;
    attention::Shape {
        dim: p.dim,
        layers: p.layers,
        heads: p.heads.max(1),
        feed_forward: p.feed_forward,
        max_len: max_history.max(1),
        dropout: p.dropout,
    }
}

/// `[input, hidden..., output]`.
fn tower_widths(input: usize, hidden: &[usize], output: usize) -> Vec<usize> {
    let mut w = vec![input];
    w.extend(hidden);
    w.push(output);
    w
}

impl<D: Device<f32>> CandidateModel<D> {
    pub fn new(dev: D, cfg: Config, cx: &BuildCx) -> CandidateModel<D> {
        let mut rng = StdRng::seed_from_u64(cx.seed ^ 0x9e37_79b9_7f4a_7c15);
        let (d, s, std) = (cfg.params.dim, cfg.params.side_dim, cfg.params.init_std as f32);
        let encoding =
            if cx.inputs.items.items() == 0 { ItemEncoding::identity(cx.n_items) } else { cx.inputs.items.clone() };
        let (user_width, item_width) = widths(&cfg, cx);
        let layers = |widths: Vec<usize>, rng: &mut StdRng| -> Vec<Layer> {
            widths.windows(2).map(|w| Layer::uniform(w[0], w[1], rng)).collect()
        };
        let fields = |fields: &[funnel_api::Categorical], rng: &mut StdRng| -> Vec<FieldTable> {
            fields.iter().map(|f| FieldTable::normal(f.clone(), s, std, rng)).collect()
        };
        let mut m = CandidateModel {
            input: None,
            output: None,
            users: None,
            history_fields: Vec::new(),
            user_fields: Vec::new(),
            example_age: false,
            outcome: None,
            recurrent: None,
            attention: None,
            tower: Vec::new(),
            item_fields: Vec::new(),
            item_tower: Vec::new(),
            dev,
            cfg: cfg.clone(),
            n_items: cx.n_items,
            n_users: cx.n_users,
            adam: Adam::new(cx.train.lr as f32),
            workspace: Workspace::default(),
            vector_grads: VectorGradients::default(),
            encode_in_parts: true,
            seed: cx.seed,
            on_device: false,
            resident: None,
        };
        // Draw order: the tables and tower of the plain model first, so its
        // initial weights do not depend on which extras exist.
        match cfg.user_input {
            UserInput::UserId => {
                m.output = Some(ItemTable::normal(encoding, d, std, &mut rng));
                m.users = Some(EmbeddingTable::normal(cx.n_users, d, std, &mut rng));
            }
            UserInput::History => {
                m.input = Some(ItemTable::normal(encoding.clone(), d, std, &mut rng));
                m.output = (!cfg.params.share_embeddings).then(|| ItemTable::normal(encoding, d, std, &mut rng));
                m.tower = layers(tower_widths(user_width, &cfg.params.hidden, d), &mut rng);
                let p = &cfg.params;
                m.recurrent = match p.sequence_encoder {
                    SequenceEncoder::Gru => Some(Recurrent::new(Cell::Gru, d, p.gru_hidden, p.gru_pooling, &mut rng)),
                    SequenceEncoder::Lstm => {
                        Some(Recurrent::new(Cell::Lstm, d, p.lstm_hidden, p.lstm_pooling, &mut rng))
                    }
                    SequenceEncoder::Mean | SequenceEncoder::SelfAttention => None,
                };
                m.attention = (p.sequence_encoder == SequenceEncoder::SelfAttention)
                    .then(|| SelfAttention::new(attention_shape(&cfg, cx.max_history), std, &mut rng));
                m.history_fields = fields(&cx.inputs.item_fields, &mut rng);
                m.user_fields = fields(&cx.inputs.user_fields, &mut rng);
                m.example_age = cx.inputs.example_age;
            }
        }
        if !cfg.params.item_hidden.is_empty() {
            m.item_fields = fields(&cx.inputs.item_fields, &mut rng);
            m.item_tower = layers(tower_widths(item_width, &cfg.params.item_hidden, d), &mut rng);
        }
        // Last, so a model without it draws the same weights.
        if conditions_on_outcome(&cfg, cx) {
            m.outcome = Some(EmbeddingTable::normal(cx.inputs.outcomes, s, std, &mut rng));
        }
        m
    }

    /// Runs training steps on the device (see [`steps_on_device`]).
    pub fn with_steps_on_device(mut self, on: bool) -> CandidateModel<D> {
        self.on_device = on;
        self
    }

    fn output_table(&self) -> &ItemTable {
        self.output.as_ref().or(self.input.as_ref()).expect("every model has an item table")
    }

    /// Width of the host-built query features: the averaged history (mean
    /// encoder), each side feature's embedding, the example age, the
    /// outcome's embedding.
    fn query_width(&self) -> usize {
        let mean = match (&self.input, self.averages_history()) {
            (Some(t), true) => t.dim(),
            _ => 0,
        };
        let fields = self.history_fields.len() + self.user_fields.len() + usize::from(self.outcome.is_some());
        mean + self.cfg.params.side_dim * fields + if self.example_age { AGE_WIDTH } else { 0 }
    }

    /// Whether the history enters the tower as the mean of its items.
    fn averages_history(&self) -> bool {
        self.recurrent.is_none() && self.attention.is_none()
    }

    /// Query features of `rows`, row-major `[rows, query_width]`.
    fn query_features(&self, q: &Queries, rows: Range<usize>) -> Vec<f32> {
        let tables = self.query_tables();
        // Each history row sums scattered table rows; on a table beyond the
        // caches two threads keep twice the misses in flight.
        let reads: usize = q.histories.lengths[rows.clone()].iter().map(|&n| n as usize).sum();
        let two = tables.history.is_some_and(|t| t.table.worth_two_threads(reads));
        tables.features(q, rows, two)
    }

    fn query_tables(&self) -> QueryTables<'_> {
        QueryTables {
            history: self.input.as_ref().filter(|_| self.averages_history()),
            history_fields: &self.history_fields,
            user_fields: &self.user_fields,
            side_dim: self.cfg.params.side_dim,
            example_age: self.example_age,
            outcome: self.outcome.as_ref(),
            width: self.query_width(),
        }
    }

    /// Scatters the gradient of [`CandidateModel::query_features`] (rows `0..`).
    fn scatter_query_gradient(&mut self, q: &Queries, g: &[f32]) {
        let (w, s) = (self.query_width(), self.cfg.params.side_dim);
        let mean = self.averages_history();
        for (r, g) in g.chunks_exact(w).enumerate() {
            let items = q.histories.row(r);
            let mut at = 0;
            if let (Some(input), true) = (self.input.as_mut(), mean) {
                let d = input.dim();
                let scale = 1.0 / items.len().max(1) as f32;
                if r + 1 < q.len() {
                    q.histories.row(r + 1).iter().for_each(|&item| input.prefetch_slots(item));
                }
                items.iter().for_each(|&item| input.accumulate(item, &g[..d], scale));
                at = d;
            }
            for f in &mut self.history_fields {
                f.accumulate_mean(items, &g[at..at + s]);
                at += s;
            }
            for f in &mut self.user_fields {
                f.accumulate_mean(&[q.users[r]], &g[at..at + s]);
                at += s;
            }
            if let Some(t) = &mut self.outcome {
                at += if self.example_age { AGE_WIDTH } else { 0 };
                t.accumulate(asked(q, r), &g[at..at + s], 1.0);
            }
        }
    }

    /// The user tower's leaves for `rows` of `q`; a self-attention encoder
    /// reads them from `windows` when given (then `rows` is all of `q`).
    /// `dropout` (training: the part of the batch, 0 for a whole one) draws
    /// dropout, each part its own masks.
    fn query_leaves(
        &self,
        q: &Queries,
        rows: Range<usize>,
        windows: Option<&Windows>,
        dropout: Option<u64>,
    ) -> Result<QueryLeaves<D>> {
        let b = rows.len();
        let users = match &self.users {
            None => None,
            Some(table) => {
                let mut out = Vec::with_capacity(b * table.dim);
                for &u in &q.users[rows.clone()] {
                    if u == Queries::UNKNOWN_USER {
                        bail!("matrix_factorization has a vector only for users it was trained on; ask for a user");
                    }
                    ensure!((u as usize) < self.n_users, "user {u} is outside the {} users trained", self.n_users);
                    table.gather_into(u, &mut out);
                }
                Some(self.dev.tensor_from_vec(out, (b, table.dim)))
            }
        };
        if let Some(t) = &self.outcome {
            if let Some(r) = rows.clone().find(|&r| asked(q, r) as usize >= t.rows()) {
                bail!("query {r} asks about outcome {}, but the model knows {} outcomes", asked(q, r), t.rows());
            }
        }
        if let Some(w) = windows {
            ensure!(
                rows == (0..q.len()) && w.queries.len() == q.len(),
                "{} window queries for {} queries",
                w.queries.len(),
                q.len()
            );
        }
        let (steps, step_reads) = match (&self.recurrent, &self.input) {
            (Some(gru), Some(input)) => {
                // Over windows: each window's steps once, trimmed to the
                // longest (later steps would only be padding).
                let (histories, source, width) = match windows {
                    Some(w) => {
                        let width = w.histories.lengths.iter().copied().max().unwrap_or(0).max(1) as usize;
                        (&w.histories, 0..w.histories.len(), width)
                    }
                    None => (&q.histories, rows.clone(), q.histories.width),
                };
                let (n, d) = (source.len(), input.dim());
                let x = (0..width)
                    .map(|t| {
                        let mut x = vec![0.0f32; n * d];
                        for (r, slot) in source.clone().zip(x.chunks_exact_mut(d)) {
                            if let Some(&item) = histories.row(r).get(t) {
                                input.add_to(item, 1.0, slot);
                            }
                        }
                        self.dev.tensor_from_vec(x, (n, d))
                    })
                    .collect();
                let reads = windows.map(|w| {
                    let reads: Vec<usize> =
                        w.queries.iter().map(|wq| (wq.prefix.max(1) as usize - 1) * n + wq.row as usize).collect();
                    self.dev.tensor_from_vec(reads, (w.queries.len(),))
                });
                (Some(gru.steps(&self.dev, x, &histories.lengths[source])), reads)
            }
            _ => (None, None),
        };
        let sequences = match (&self.attention, &self.input) {
            (Some(attention), Some(input)) => {
                let (histories, reads): (&Histories, Vec<(usize, usize)>) = match windows {
                    Some(w) => {
                        let reads =
                            w.queries.iter().map(|wq| (wq.row as usize, wq.prefix.max(1) as usize - 1)).collect();
                        (&w.histories, reads)
                    }
                    None => {
                        let reads = rows
                            .clone()
                            .enumerate()
                            .map(|(i, r)| (i, (q.histories.lengths[r].max(1) - 1) as usize))
                            .collect();
                        (&q.histories, reads)
                    }
                };
                let source = match windows {
                    Some(w) => 0..w.histories.len(),
                    None => rows.clone(),
                };
                let lengths = &histories.lengths[source.clone()];
                let longest = lengths.iter().copied().max().unwrap_or(0) as usize;
                ensure!(
                    longest <= attention.shape.max_len,
                    "a history of {longest} items is longer than the {} positions self-attention was built for \
                     ([features] max_history)",
                    attention.shape.max_len
                );
                // Trailing padding common to every row changes nothing.
                let width = longest.max(1);
                let d = input.dim();
                let mut x = vec![0.0f32; lengths.len() * width * d];
                for (i, r) in source.enumerate() {
                    for (p, &item) in histories.row(r).iter().enumerate() {
                        input.add_to(item, 1.0, &mut x[(i * width + p) * d..][..d]);
                    }
                }
                let read = reads.into_iter().map(|(row, p)| row * width + p).collect();
                let seed = dropout.map(|part| {
                    self.seed
                        ^ (self.adam.t + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)
                        ^ part.wrapping_mul(0xd1b5_4a32_d192_ed03)
                });
                Some(attention.sequences(&self.dev, x, lengths, width, read, seed))
            }
            _ => None,
        };
        let w = self.query_width();
        let features = (w > 0).then(|| self.dev.tensor_from_vec(self.query_features(q, rows), (b, w)));
        Ok(QueryLeaves { features, steps, step_reads, sequences, users })
    }

    /// Width of one candidate's item input: its ID vector, then (with an
    /// item tower) each item feature's embedding.
    fn item_width(&self) -> usize {
        self.output_table().dim() + self.cfg.params.side_dim * self.item_fields.len()
    }

    /// Item inputs of `items`, row-major `[items, item_width]`; a thousand
    /// candidates or more (mixed negatives, the full softmax) in two halves
    /// on two threads.
    fn item_inputs(&self, items: &[ItemIdx]) -> Vec<f32> {
        let (table, fields, s) = (self.output_table(), &self.item_fields[..], self.cfg.params.side_dim);
        let w = self.item_width();
        let mut out = vec![0.0f32; items.len() * w];
        let fill = |items: &[ItemIdx], out: &mut [f32]| {
            let d = table.dim();
            for (i, (&item, row)) in items.iter().zip(out.chunks_exact_mut(w)).enumerate() {
                if let Some(&ahead) = items.get(i + PREFETCH_AHEAD) {
                    table.prefetch(ahead);
                }
                table.write(item, &mut row[..d]);
                for (k, f) in fields.iter().enumerate() {
                    f.mean_into(&[item], &mut row[d + k * s..d + (k + 1) * s]);
                }
            }
        };
        if items.len() >= ITEM_INPUTS_IN_TWO_FROM {
            let half = items.len() / 2;
            let (first, second) = out.split_at_mut(half * w);
            funnel_kernels::par::beside(|| fill(&items[..half], first), || fill(&items[half..], second));
        } else {
            fill(items, &mut out);
        }
        out
    }

    /// Scatters the gradient of [`CandidateModel::item_inputs`].
    fn scatter_item_gradient<'a>(&mut self, items: impl Iterator<Item = &'a ItemIdx>, g: &[f32]) {
        let s = self.cfg.params.side_dim;
        let Some(table) = self.output.as_mut().or(self.input.as_mut()) else {
            unreachable!("every model has an item table")
        };
        scatter_items(table, &mut self.item_fields, s, items, g);
    }

    /// The batch's inputs: the user tower's leaves, the item inputs of the
    /// shared candidates `v` (positives, then shared negatives) and of the
    /// per-row negatives `r`.
    /// Checks the batch and builds its candidates' item inputs.
    fn prepare(&self, batch: &TrainBatch<'_>) -> Result<Prepared> {
        check_batch(batch)?;
        let cands = batch.candidates;
        let shared_ids: Vec<ItemIdx> = batch.positives.iter().chain(&cands.shared).copied().collect();
        Ok(Prepared { v: self.item_inputs(&shared_ids), r: self.item_inputs(&cands.per_row), shared_ids })
    }

    /// The host parameters the device step holds (see [`steps_on_device`]).
    fn host_params(&mut self) -> HostParams<'_> {
        let name = self.output_name();
        HostParams {
            input: &mut self.input.as_mut().expect("the device step needs a history model").table,
            output: self.output.as_mut().map(|t| (name, &mut t.table)),
            tower: &mut self.tower,
        }
    }

    /// A step on the device ([`Resident`]), which is made from the host
    /// parameters at the first step and after any load.
    fn device_step(&mut self, batch: &TrainBatch<'_>) -> Result<StepStats> {
        check_batch(batch)?;
        if self.resident.is_none() {
            let (dev, how) = (self.dev.clone(), self.cfg.params.embedding_optimizer);
            self.resident = Some(Resident::new(&dev, self.host_params(), how));
        }
        let p = &self.cfg.params;
        let how = Objective { temperature: p.temperature, normalize: p.normalize, loss: p.loss };
        let resident = self.resident.as_mut().expect("made above");
        let (loss, grad_norm) = resident.forward_backward(batch, how)?;
        Ok(StepStats { loss, grad_norm })
    }

    /// Refuses to read host parameters the device has moved past, or whose
    /// last update is still deferred.
    fn ensure_host_current(&self) -> Result<()> {
        ensure!(
            !self.resident.as_ref().is_some_and(|r| r.ahead),
            "the model's parameters on the device are ahead of the host's: Model::finish_steps must run after \
             training steps and before reading the model"
        );
        ensure!(
            self.output.as_ref().is_none_or(|o| o.table.is_settled()),
            "the output embeddings' last update is deferred: Model::finish_steps must run after training steps \
             and before reading the model"
        );
        Ok(())
    }
}

/// Checks a batch's shapes against each other.
fn check_batch(batch: &TrainBatch<'_>) -> Result<()> {
    {
        let b = batch.positives.len();
        let cands = batch.candidates;
        ensure!(b > 0, "empty batch");
        ensure!(batch.queries.len() == b, "batch has {b} positives but {} queries", batch.queries.len());
        ensure!(cands.per_row.len().is_multiple_of(b), "{} per-row negatives for {b} rows", cands.per_row.len());
        ensure!(
            cands.explicit <= cands.per_row.len() / b,
            "{} explicit negatives per row, but only {} own negatives per row",
            cands.explicit,
            cands.per_row.len() / b
        );
        ensure!(
            batch.weights.is_empty() || batch.weights.len() == b,
            "{} row weights for {b} rows",
            batch.weights.len()
        );
        Ok(())
    }
}

impl<D: Device<f32>> CandidateModel<D> {
    /// Candidate vectors from item inputs `x`: through the item tower when
    /// there is one.
    fn candidate_vectors<T: Tape<f32, D> + Merge<T>>(&self, x: &[f32], p: &DenseTensors<D>) -> CandidateVectors<D, T> {
        if self.item_tower.is_empty() || x.is_empty() {
            return CandidateVectors { leaf: None, out: None };
        }
        let w = self.item_width();
        let leaf = self.dev.tensor_from_vec(x.to_vec(), (x.len() / w, w));
        let out = self.item_graph::<T>(&leaf, p);
        CandidateVectors { leaf: Some(leaf), out: Some(out) }
    }

    fn logits(&self) -> Logits {
        Logits {
            temperature: self.cfg.params.temperature,
            normalize: self.cfg.params.normalize,
            loss: self.cfg.params.loss,
        }
    }

    fn dense_tensors(&self) -> DenseTensors<D> {
        DenseTensors {
            tower: self.tower.iter().map(|l| l.tensors(&self.dev)).collect(),
            recurrent: self.recurrent.as_ref().map(|g| g.tensors(&self.dev)).unwrap_or_default(),
            attention: self.attention.as_ref().map(|a| a.tensors(&self.dev)),
            item_tower: self.item_tower.iter().map(|l| l.tensors(&self.dev)).collect(),
        }
    }

    /// User vectors (before normalisation) from the leaves.
    fn user_graph<T: Tape<f32, D> + Merge<T>>(&self, q: &QueryLeaves<D>, p: &DenseTensors<D>) -> Mat<D, T> {
        if let Some(users) = &q.users {
            return users.retaped::<T>();
        }
        let encoded = match (&self.recurrent, &q.steps, &self.attention, &q.sequences, &p.attention) {
            (Some(gru), Some(steps), ..) => Some(match &q.step_reads {
                Some(reads) => gru.forward_every_step::<D, T>(steps, &p.recurrent).gather(reads.clone()),
                None => gru.forward::<D, T>(steps, &p.recurrent),
            }),
            (_, _, Some(attention), Some(sequences), Some(t)) => Some(attention.forward::<D, T>(sequences, t)),
            _ => None,
        };
        let x = match (encoded, &q.features) {
            (Some(h), Some(f)) => (h, f.retaped::<T>()).concat_along(Axis::<1>),
            (Some(h), None) => h,
            (None, Some(f)) => f.retaped::<T>(),
            (None, None) => unreachable!("a history model always has query features or an encoder"),
        };
        mlp(x, &p.tower)
    }

    /// Item vectors (before normalisation) from item inputs.
    fn item_graph<T: Tape<f32, D> + Merge<T>>(&self, x: &Mat<D>, p: &DenseTensors<D>) -> Mat<D, T> {
        let x = x.retaped::<T>();
        if self.item_tower.is_empty() {
            x
        } else {
            mlp(x, &p.item_tower)
        }
    }
}

#[allow(private_bounds)]
impl<D: EncoderThreads> CandidateModel<D> {
    /// The leaves and user vectors of a step's queries (the first part's, with windows).
    fn encode_queries<T: Tape<f32, D> + Merge<T>>(
        &self,
        queries: &Queries,
        windows: Option<&Windows>,
        t: &DenseTensors<D>,
    ) -> Result<(QueryLeaves<D>, Mat<D, T>)> {
        let leaves = self.query_leaves(queries, 0..queries.len(), windows, Some(0))?;
        let u = self.user_graph::<T>(&leaves, t);
        Ok((leaves, u))
    }

    /// Settles the output table's deferred step (see `apply`) on the pool
    /// while `beside` runs on this thread, and returns what `beside` returns.
    /// The table's rows go in chunks to whichever thread is free, so this
    /// thread takes the rest once `beside` is done. `beside` must not read
    /// the output table (it is taken out meanwhile).
    fn settle_output<R>(&mut self, beside: impl FnOnce(&Self) -> R) -> R {
        if self.output.as_ref().is_none_or(|o| o.table.is_settled()) {
            return beside(self);
        }
        let mut output = self.output.take().expect("checked above");
        let mut out = None;
        let this = &*self;
        funnel_kernels::par::beside(|| out = Some(beside(this)), || output.table.settle());
        self.output = Some(output);
        out.expect("beside ran both halves")
    }

    /// Forward and backward pass; leaves gradients in the tables and layers.
    ///
    /// The towers run on dfdx; the loss over the candidates runs on the host
    /// (`objective.rs`), whose gradients with respect to the user and
    /// candidate vectors re-enter dfdx through the surrogate
    /// `sum(u * dL/du) + sum(v * dL/dv)`, whose gradient is exactly theirs.
    /// A batch of several sequence windows is encoded in two parts on two
    /// threads (the encoder's operations run on one core each), joined for
    /// the loss, whose in-batch negatives span the whole batch.
    fn forward_backward(&mut self, batch: &TrainBatch<'_>) -> Result<StepStats> {
        type Taped<D> = OwnedTape<f32, D>;
        let d = self.cfg.params.dim;
        check_batch(batch)?;
        let parts = (D::IN_PARTS && self.encode_in_parts).then(|| split_windows(batch)).flatten();
        let t = self.dense_tensors();
        split_tower_products(parts.is_none() && funnel_kernels::par::on_pool());
        // Without windows the queries are encoded while the pool settles the
        // output table's last step (the query side never reads that table).
        let encoded = self.settle_output(|this| {
            parts.is_none().then(|| this.encode_queries::<Taped<D>>(batch.queries, batch.windows, &t))
        });
        let items = self.prepare(batch)?;
        let how = self.logits();
        let groups = window_groups(batch);
        let seen = self.cfg.params.exclude_seen.then(|| seen_columns(batch, self.n_items));
        let mut g = std::mem::take(&mut self.vector_grads);
        let mut workspace = std::mem::take(&mut self.workspace);
        let this = &*self;
        let step = std::thread::scope(|scope| -> Result<Step<D>> {
            let (u_tx, u_rx) = mpsc::channel::<Vec<f32>>();
            let (g_tx, g_rx) = mpsc::channel::<Vec<f32>>();
            let second = parts
                .as_ref()
                .and_then(|[_, b]| D::spawn_part(scope, PartJob { model: this, part: b, t: &t, u_tx, g_rx }));
            let (queries, windows) = match &parts {
                Some([a, _]) => (&a.queries, Some(&a.windows)),
                None => (batch.queries, batch.windows),
            };
            let (leaves, u) = match encoded {
                Some(encoded) => encoded?,
                None => this.encode_queries::<Taped<D>>(queries, windows, &t)?,
            };
            let v = this.candidate_vectors::<Taped<D>>(&items.v, &t);
            let r = this.candidate_vectors::<Taped<D>>(&items.r, &t);
            let values = |c: &CandidateVectors<D, Taped<D>>| c.out.as_ref().map(to_host);
            let (v_values, r_values) = (values(&v), values(&r));
            let mine = to_host(&u);
            let u_values = match &parts {
                None => mine,
                Some([a, b]) => {
                    let Ok(theirs) = u_rx.recv() else {
                        // The other part stopped before its encoding: its error says why.
                        return Err(match second.map(std::thread::ScopedJoinHandle::join) {
                            Some(Ok(Err(e))) => e,
                            _ => anyhow!("the second encoder thread stopped"),
                        });
                    };
                    let mut all = vec![0.0f32; batch.positives.len() * d];
                    scatter_rows(&mine, &a.rows, d, &mut all);
                    scatter_rows(&theirs, &b.rows, d, &mut all);
                    all
                }
            };
            let loss = objective::loss(
                how,
                &Batch {
                    positives: batch.positives,
                    candidates: batch.candidates,
                    groups: groups.as_deref(),
                    seen: seen.as_ref(),
                    weights: batch.weights,
                },
                d,
                (&u_values, v_values.as_deref().unwrap_or(&items.v), r_values.as_deref().unwrap_or(&items.r)),
                &mut workspace,
                Some(&mut g),
            );
            let g_mine = match &parts {
                None => g.u.clone(),
                Some([a, b]) => {
                    // A send fails only if the other part has stopped; its join says why.
                    let _ = g_tx.send(gather_rows(&g.u, &b.rows, d));
                    gather_rows(&g.u, &a.rows, d)
                }
            };
            let mut surrogate = D::seeded(u, g_mine);
            for (out, grad) in [(v.out, &g.v), (r.out, &g.r)] {
                if let Some(out) = out {
                    surrogate = surrogate + D::seeded(out, grad.clone());
                }
            }
            let grads = surrogate.backward();
            let second = match second {
                Some(h) => Some(h.join().map_err(|_| anyhow!("the second encoder thread panicked"))??),
                None => None,
            };
            Ok(Step { loss, leaves, grads, second, v_leaf: v.leaf, r_leaf: r.leaf })
        });
        self.workspace = workspace;
        let step = match step {
            Ok(step) => step,
            Err(e) => {
                self.vector_grads = g;
                return Err(e);
            }
        };
        let grads = &step.grads;
        self.item_tower.iter_mut().zip(&t.item_tower).for_each(|(l, t)| l.take_gradients(grads, t, false));
        // Item inputs' gradients: the tower's leaf gradient, or the loss's own
        // (read in place: for the full softmax it covers the whole catalog).
        let gv = step.v_leaf.map(|l| to_host(&grads.get(&l)));
        let gr = step.r_leaf.map(|l| to_host(&grads.get(&l)));
        let (gv, gr) = (gv.as_deref().unwrap_or(&g.v), gr.as_deref().unwrap_or(&g.r));
        let query_side = |this: &mut Self| match (&parts, &step.second) {
            (Some([a, b]), Some((leaves, grads))) => {
                this.take_query_gradients(&a.queries, Some(&a.windows), &step.leaves, &step.grads, &t, false);
                this.take_query_gradients(&b.queries, Some(&b.windows), leaves, grads, &t, true);
            }
            _ => this.take_query_gradients(batch.queries, batch.windows, &step.leaves, &step.grads, &t, false),
        };
        match self.output.take() {
            // The candidates' rows are in a table of their own: their gradients
            // are scattered beside the query side's, each table in its order.
            Some(mut output) => {
                let (mut fields, s) = (std::mem::take(&mut self.item_fields), self.cfg.params.side_dim);
                funnel_kernels::par::beside(
                    || query_side(self),
                    || {
                        scatter_items(&mut output, &mut fields, s, items.shared_ids.iter(), gv);
                        scatter_items(&mut output, &mut fields, s, batch.candidates.per_row.iter(), gr);
                    },
                );
                self.output = Some(output);
                self.item_fields = fields;
            }
            None => {
                query_side(self);
                self.scatter_item_gradient(items.shared_ids.iter(), gv);
                self.scatter_item_gradient(batch.candidates.per_row.iter(), gr);
            }
        }
        self.vector_grads = g;
        // Each buffer's sum of squares on either thread, added in order.
        use funnel_kernels::par::{IntoParallelRefIterator, ParallelIterator};
        let norms: Vec<f64> = self.params().par_iter().map(|(_, p)| p.gradient_sq_norm()).collect();
        let norm: f64 = norms.iter().sum();
        Ok(StepStats { loss: step.loss, grad_norm: norm.sqrt() as f32 })
    }
}

impl<D: Device<f32>> CandidateModel<D> {
    /// The second part of a batch split over windows (on its own thread):
    /// encodes it, sends the user vectors, waits for their gradient and runs
    /// the part's backward pass.
    fn encode_part(
        &self,
        part: &QueryPart,
        t: &DenseTensors<D>,
        u_tx: mpsc::Sender<Vec<f32>>,
        g_rx: mpsc::Receiver<Vec<f32>>,
    ) -> Result<(QueryLeaves<D>, Gradients<f32, D>)> {
        let leaves = self.query_leaves(&part.queries, 0..part.queries.len(), Some(&part.windows), Some(1))?;
        let u = self.user_graph::<OwnedTape<f32, D>>(&leaves, t);
        let shape = *u.shape();
        // A failed send means the step stopped; the receive below then fails too.
        let _ = u_tx.send(to_host(&u));
        let g = g_rx.recv().context("the step stopped before its loss")?;
        let grads = (u * self.dev.tensor_from_vec(g, shape)).sum::<(), _>().backward();
        Ok((leaves, grads))
    }

    /// Keeps the query side's gradients of one encoding: the user tower's
    /// and encoder's dense parameters (added to those kept with `add`) and
    /// the embedding rows its leaves read (always accumulated).
    fn take_query_gradients(
        &mut self,
        queries: &Queries,
        windows: Option<&Windows>,
        leaves: &QueryLeaves<D>,
        grads: &Gradients<f32, D>,
        t: &DenseTensors<D>,
        add: bool,
    ) {
        self.tower.iter_mut().zip(&t.tower).for_each(|(l, t)| l.take_gradients(grads, t, add));
        if let Some(gru) = &mut self.recurrent {
            gru.take_gradients(grads, &t.recurrent, add);
        }
        if let (Some(attention), Some(t)) = (&mut self.attention, &t.attention) {
            attention.take_gradients(grads, t, add);
        }
        if let Some(f) = &leaves.features {
            self.scatter_query_gradient(queries, &to_host(&grads.get(f)));
        }
        if let (Some(steps), Some(input)) = (&leaves.steps, self.input.as_mut()) {
            let d = input.dim();
            let histories = windows.map_or(&queries.histories, |w| &w.histories);
            for (t, x) in steps.x.iter().enumerate() {
                let g = to_host(&grads.get(x));
                for (r, g) in g.chunks_exact(d).enumerate() {
                    if let Some(&item) = histories.row(r).get(t) {
                        input.accumulate(item, g, 1.0);
                    }
                }
            }
        }
        if let (Some(s), Some(input), Some(attention)) =
            (&leaves.sequences, self.input.as_mut(), self.attention.as_mut())
        {
            // The leaf is item plus position embedding: its gradient goes to both.
            let histories = windows.map_or(&queries.histories, |w| &w.histories);
            let rows = windows.map_or(0..queries.len(), |w| 0..w.histories.len());
            let (d, g) = (input.dim(), to_host(&grads.get(&s.x)));
            for (i, r) in rows.enumerate() {
                for (p, &item) in histories.row(r).iter().enumerate() {
                    let g = &g[(i * s.width + p) * d..][..d];
                    input.accumulate(item, g, 1.0);
                    attention.positions.accumulate(p as u32, g, 1.0);
                }
            }
        }
        if let (Some(u), Some(table)) = (&leaves.users, self.users.as_mut()) {
            let g = to_host(&grads.get(u));
            for (&user, g) in queries.users.iter().zip(g.chunks_exact(table.dim)) {
                table.accumulate(user, g, 1.0);
            }
        }
    }

    /// Applies the step's gradients, except the output table's: its update
    /// is deferred to the next step, which settles it on the pool while this
    /// thread encodes the queries (`settle_output`), or to `finish_steps`.
    /// Only the candidates read that table, after the queries are encoded.
    fn apply(&mut self) {
        self.adam.begin_step();
        let (adam, how) = (self.adam.clone(), self.cfg.params.embedding_optimizer);
        let mut output = self.output.take();
        for (_, p) in self.params_mut() {
            match p {
                ParamMut::Dense(d) => adam.update(&mut d.values, &d.grad, &mut d.moments),
                ParamMut::Table(t) => t.apply(&adam, how),
            }
        }
        if let Some(o) = output.as_mut() {
            o.table.defer(&adam, how);
        }
        self.output = output;
    }

    /// Every parameter buffer with its name in snapshots and checkpoints.
    fn params(&self) -> Vec<(String, ParamRef<'_>)> {
        let mut out = Vec::new();
        if let Some(t) = &self.input {
            out.push(("input_embeddings".to_string(), ParamRef::Table(&t.table)));
        }
        if let Some(t) = &self.output {
            out.push((self.output_name().to_string(), ParamRef::Table(&t.table)));
        }
        if let Some(t) = &self.users {
            out.push(("user_embeddings".to_string(), ParamRef::Table(t)));
        }
        if let Some(t) = &self.outcome {
            out.push(("outcome_embeddings".to_string(), ParamRef::Table(t)));
        }
        let fields = [
            ("history_field", &self.history_fields),
            ("user_field", &self.user_fields),
            ("item_field", &self.item_fields),
        ];
        for (prefix, fields) in fields {
            fields.iter().for_each(|f| out.push((format!("{prefix}.{}", f.name()), ParamRef::Table(&f.table))));
        }
        self.tower.iter().enumerate().for_each(|(i, l)| l.params(&format!("layer{i}"), &mut out));
        self.item_tower.iter().enumerate().for_each(|(i, l)| l.params(&format!("item_layer{i}"), &mut out));
        if let Some(g) = &self.recurrent {
            g.params(&mut out);
        }
        if let Some(a) = &self.attention {
            a.params(&mut out);
        }
        out
    }

    /// [`CandidateModel::params`], mutably, same names.
    fn params_mut(&mut self) -> Vec<(String, ParamMut<'_>)> {
        let output_name = self.output_name();
        let mut out = Vec::new();
        if let Some(t) = &mut self.input {
            out.push(("input_embeddings".to_string(), ParamMut::Table(&mut t.table)));
        }
        if let Some(t) = &mut self.output {
            out.push((output_name.to_string(), ParamMut::Table(&mut t.table)));
        }
        if let Some(t) = &mut self.users {
            out.push(("user_embeddings".to_string(), ParamMut::Table(t)));
        }
        if let Some(t) = &mut self.outcome {
            out.push(("outcome_embeddings".to_string(), ParamMut::Table(t)));
        }
        let fields = [
            ("history_field", &mut self.history_fields),
            ("user_field", &mut self.user_fields),
            ("item_field", &mut self.item_fields),
        ];
        for (prefix, fields) in fields {
            for f in fields.iter_mut() {
                out.push((format!("{prefix}.{}", f.name()), ParamMut::Table(&mut f.table)));
            }
        }
        self.tower.iter_mut().enumerate().for_each(|(i, l)| l.params_mut(&format!("layer{i}"), &mut out));
        self.item_tower.iter_mut().enumerate().for_each(|(i, l)| l.params_mut(&format!("item_layer{i}"), &mut out));
        if let Some(g) = &mut self.recurrent {
            g.params_mut(&mut out);
        }
        if let Some(a) = &mut self.attention {
            a.params_mut(&mut out);
        }
        out
    }

    fn output_name(&self) -> &'static str {
        if self.cfg.user_input == UserInput::UserId {
            "item_embeddings"
        } else {
            "output_embeddings"
        }
    }
}

#[allow(private_bounds)]
impl<D: EncoderThreads> CandidateModel<D> {
    /// Every query's user vector, `chunk` rows a forward pass; with `halves`
    /// and enough queries, the first half here and the second on another
    /// thread where the device allows. A row's vector does not depend on
    /// the rows encoded with it, so the halves give the bits of one thread.
    fn encode_users(&self, queries: &Queries, chunk: usize, halves: bool) -> Result<Vec<f32>> {
        let t = self.dense_tensors();
        let n = queries.len();
        let halves = halves && n >= ENCODE_IN_HALVES_FROM;
        split_tower_products(!halves && funnel_kernels::par::on_pool());
        if halves {
            if let Some(two) = D::encode_beside(self, queries, [0..n / 2, n / 2..n], chunk, &t) {
                let [mut first, second] = two?;
                first.extend(second);
                return Ok(first);
            }
        }
        self.encode_range(queries, 0..n, chunk, &t)
    }

    fn encode_range(
        &self,
        queries: &Queries,
        rows: Range<usize>,
        chunk: usize,
        t: &DenseTensors<D>,
    ) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(rows.len() * self.cfg.params.dim);
        for start in rows.clone().step_by(chunk.max(1)) {
            let leaves = self.query_leaves(queries, start..(start + chunk).min(rows.end), None, None)?;
            out.extend(to_host(&self.user_graph::<NoneTape>(&leaves, t)));
        }
        Ok(out)
    }
}

/// Queries from which inference encodes two halves at once: below it, the
/// second thread costs about what it saves.
const ENCODE_IN_HALVES_FROM: usize = 256;

#[cfg(test)]
#[allow(private_bounds)]
impl<D: EncoderThreads> CandidateModel<D> {
    /// Loss of a batch without touching any state (gradient checks).
    fn loss(&self, batch: &TrainBatch<'_>) -> f32 {
        self.ensure_host_current().unwrap();
        let p = self.prepare(batch).unwrap();
        let t = self.dense_tensors();
        // Encoded as a step encodes it: in the same parts, with the same dropout.
        let encode = |q: &Queries, w: Option<&Windows>, part: u64| {
            let leaves = self.query_leaves(q, 0..q.len(), w, Some(part)).unwrap();
            to_host(&self.user_graph::<NoneTape>(&leaves, &t))
        };
        let u = match (D::IN_PARTS && self.encode_in_parts).then(|| split_windows(batch)).flatten() {
            None => encode(batch.queries, batch.windows, 0),
            Some(parts) => {
                let mut all = vec![0.0f32; batch.positives.len() * self.cfg.params.dim];
                for (k, part) in parts.iter().enumerate() {
                    let u = encode(&part.queries, Some(&part.windows), k as u64);
                    scatter_rows(&u, &part.rows, self.cfg.params.dim, &mut all);
                }
                all
            }
        };
        let v = self.candidate_vectors::<NoneTape>(&p.v, &t).out.map(|o| to_host(&o));
        let r = self.candidate_vectors::<NoneTape>(&p.r, &t).out.map(|o| to_host(&o));
        let groups = window_groups(batch);
        let seen = self.cfg.params.exclude_seen.then(|| seen_columns(batch, self.n_items));
        let batch = Batch {
            positives: batch.positives,
            candidates: batch.candidates,
            groups: groups.as_deref(),
            seen: seen.as_ref(),
            weights: batch.weights,
        };
        let vectors = (&u[..], v.as_deref().unwrap_or(&p.v), r.as_deref().unwrap_or(&p.r));
        objective::loss(self.logits(), &batch, self.cfg.params.dim, vectors, &mut Workspace::default(), None)
    }
}

/// The outcome query row `r` asks about (0 when `q` names none).
fn asked(q: &Queries, r: usize) -> u32 {
    q.outcomes.get(r).copied().unwrap_or(0)
}

/// The candidates of each row that its user has consumed (`exclude_seen`):
/// a window's items (its history and its rows' targets) for each of its
/// rows, or a query's history without windows. Explicit negatives (items the
/// user disliked) stay negatives.
fn seen_columns(batch: &TrainBatch<'_>, n_items: usize) -> SeenColumns {
    let (q, c) = (batch.queries, batch.candidates);
    let b = batch.positives.len();
    let k = c.per_row.len() / b.max(1);
    // One set of items per window, or per query.
    let (set_of_row, sets): (Vec<u32>, Vec<Vec<ItemIdx>>) = match batch.windows {
        Some(w) => {
            let mut sets: Vec<Vec<ItemIdx>> = (0..w.histories.len()).map(|r| w.histories.row(r).to_vec()).collect();
            for (wq, &p) in w.queries.iter().zip(batch.positives) {
                sets[wq.row as usize].push(p);
            }
            (w.queries.iter().map(|wq| wq.row).collect(), sets)
        }
        None => ((0..b as u32).collect(), (0..b).map(|r| q.histories.row(r).to_vec()).collect()),
    };
    let columns: Vec<ItemIdx> = batch.positives.iter().chain(&c.shared).copied().collect();
    let mut rows_of_set = vec![Vec::new(); sets.len()];
    set_of_row.iter().enumerate().for_each(|(r, &s)| rows_of_set[s as usize].push(r));
    let mut own_of_row = vec![Vec::new(); b];
    let mut mark = vec![false; n_items];
    let mut out =
        SeenColumns { set_of_row, starts: vec![0], columns: Vec::new(), own_starts: vec![0], own: Vec::new() };
    for (items, rows) in sets.iter().zip(&rows_of_set) {
        items.iter().for_each(|&i| mark[i as usize] = true);
        out.columns.extend((0..columns.len() as u32).filter(|&col| mark[columns[col as usize] as usize]));
        out.starts.push(out.columns.len());
        for &r in rows {
            own_of_row[r] =
                (0..(k - c.explicit) as u32).filter(|&j| mark[c.per_row[r * k + j as usize] as usize]).collect();
        }
        items.iter().for_each(|&i| mark[i as usize] = false);
    }
    for own in own_of_row {
        out.own.extend(own);
        out.own_starts.push(out.own.len());
    }
    out
}

/// The window of each row of a batch trained on windows.
fn window_groups(batch: &TrainBatch<'_>) -> Option<Vec<u32>> {
    batch.windows.map(|w| w.queries.iter().map(|q| q.row).collect())
}

/// Rows of `m` scaled to unit length, on the host.
/// Whether a device's step may encode a batch's windows in two parts on two
/// threads: its tensors, tapes' results and the model on it must cross
/// threads. dfdx's `Cpu` can; its `Cuda` holds a raw stream and cannot, so a
/// CUDA step encodes the whole batch at once.
trait EncoderThreads: Device<f32> {
    const IN_PARTS: bool;

    /// Starts `job` on a thread of `scope`; `None` where the device cannot.
    fn spawn_part<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        job: PartJob<'env, Self>,
    ) -> Option<PartHandle<'scope, Self>>;

    /// A scalar whose backward pass gives `out` the gradient `g` (row-major,
    /// `out`'s shape): the surrogate `sum(out * g)`.
    fn seeded(out: Mat<Self, OwnedTape<f32, Self>>, g: Vec<f32>) -> Tensor<(), f32, Self, OwnedTape<f32, Self>> {
        let shape = *out.shape();
        let g = out.device().tensor_from_vec(g, shape);
        (out * g).sum::<(), _>()
    }

    /// The user vectors of two ranges of queries, the first on this thread
    /// and the second on another; `None` where the device cannot.
    fn encode_beside(
        model: &CandidateModel<Self>,
        queries: &Queries,
        halves: [Range<usize>; 2],
        chunk: usize,
        t: &DenseTensors<Self>,
    ) -> Option<Result<[Vec<f32>; 2]>>;
}

/// The second part's encoding ([`CandidateModel::encode_part`]) and what it reads.
struct PartJob<'env, D: Device<f32>> {
    model: &'env CandidateModel<D>,
    part: &'env QueryPart,
    t: &'env DenseTensors<D>,
    u_tx: mpsc::Sender<Vec<f32>>,
    g_rx: mpsc::Receiver<Vec<f32>>,
}

impl<D: Device<f32>> PartJob<'_, D> {
    fn run(self) -> Result<(QueryLeaves<D>, Gradients<f32, D>)> {
        self.model.encode_part(self.part, self.t, self.u_tx, self.g_rx)
    }
}

type PartHandle<'scope, D> = ScopedJoinHandle<'scope, Result<(QueryLeaves<D>, Gradients<f32, D>)>>;

impl EncoderThreads for Cpu {
    const IN_PARTS: bool = true;

    /// A backward step that adds `g` to `out`'s gradient, as the product's
    /// and the sum's backward steps would (`0 + g * 1`, the same bits),
    /// without their element-wise passes and buffers.
    fn seeded(out: Mat<Cpu, OwnedTape<f32, Cpu>>, g: Vec<f32>) -> Tensor<(), f32, Cpu, OwnedTape<f32, Cpu>> {
        let dev = out.device().clone();
        let (out, mut tape) = out.split_tape();
        tape.add_backward_op(move |grads| {
            let grad = grads.get_or_alloc_mut(&out)?;
            grad.iter_mut().zip(&g).for_each(|(a, &b)| *a += b);
            Ok(())
        });
        dev.zeros::<Rank0>().put_tape(tape)
    }

    fn spawn_part<'scope, 'env>(
        scope: &'scope Scope<'scope, 'env>,
        job: PartJob<'env, Cpu>,
    ) -> Option<PartHandle<'scope, Cpu>> {
        Some(scope.spawn(move || job.run()))
    }

    fn encode_beside(
        model: &CandidateModel<Cpu>,
        queries: &Queries,
        [first, second]: [Range<usize>; 2],
        chunk: usize,
        t: &DenseTensors<Cpu>,
    ) -> Option<Result<[Vec<f32>; 2]>> {
        Some(std::thread::scope(|scope| {
            let other = scope.spawn(|| model.encode_range(queries, second, chunk, t));
            let mine = model.encode_range(queries, first, chunk, t)?;
            let theirs = other.join().map_err(|_| anyhow!("an encoder thread panicked"))??;
            Ok([mine, theirs])
        }))
    }
}

#[cfg(feature = "cuda")]
impl EncoderThreads for dfdx::tensor::Cuda {
    const IN_PARTS: bool = false;

    fn spawn_part<'scope, 'env>(
        _: &'scope Scope<'scope, 'env>,
        _: PartJob<'env, Self>,
    ) -> Option<PartHandle<'scope, Self>> {
        None
    }

    fn encode_beside(
        _: &CandidateModel<Self>,
        _: &Queries,
        _: [Range<usize>; 2],
        _: usize,
        _: &DenseTensors<Self>,
    ) -> Option<Result<[Vec<f32>; 2]>> {
        None
    }
}

/// What one training step's forward and backward passes leave.
struct Step<D: Device<f32>> {
    loss: f32,
    /// The (first part's) query leaves and the gradients of the whole step
    /// but the second part's.
    leaves: QueryLeaves<D>,
    grads: Gradients<f32, D>,
    /// The second part's leaves and gradients, when split.
    second: Option<(QueryLeaves<D>, Gradients<f32, D>)>,
    v_leaf: Option<Mat<D>>,
    r_leaf: Option<Mat<D>>,
}

/// Whole windows of a batch and their queries, encoded apart.
struct QueryPart {
    queries: Queries,
    windows: Windows,
    /// Each query's row in the batch, ascending.
    rows: Vec<usize>,
}

/// The batch's windows in two parts of about equal positions, for two
/// threads; `None` without windows or with one. It does not depend on the
/// machine's cores, so a seed trains the same model everywhere.
fn split_windows(batch: &TrainBatch<'_>) -> Option<[QueryPart; 2]> {
    let w = batch.windows?;
    let n = w.histories.len();
    if n < 2 {
        return None;
    }
    let mut per_window = vec![0usize; n];
    w.queries.iter().for_each(|wq| per_window[wq.row as usize] += 1);
    // The first `cut` windows hold at least half the positions; each part keeps one window at least.
    let (mut cut, mut acc) = (1, 0);
    for (r, &c) in per_window[..n - 1].iter().enumerate() {
        acc += c;
        cut = r + 1;
        if 2 * acc >= w.queries.len() {
            break;
        }
    }
    let q = batch.queries;
    let mut parts = [0, 1].map(|_| QueryPart {
        queries: Queries::new(q.histories.width),
        windows: Windows::new(w.histories.width),
        rows: Vec::new(),
    });
    for r in 0..n {
        parts[usize::from(r >= cut)].windows.histories.push(w.histories.row(r));
    }
    for (i, wq) in w.queries.iter().enumerate() {
        let second = wq.row as usize >= cut;
        let part = &mut parts[usize::from(second)];
        part.queries.push_asking(
            q.histories.row(i),
            q.users[i],
            q.ages.get(i).copied().unwrap_or(0.0),
            q.outcomes.get(i).copied().unwrap_or(0),
        );
        let row = if second { wq.row - cut as u32 } else { wq.row };
        part.windows.queries.push(WindowQuery { row, prefix: wq.prefix });
        part.rows.push(i);
    }
    parts.iter().all(|p| !p.rows.is_empty()).then_some(parts)
}

/// Row `i` of `part` (`d` wide) into row `rows[i]` of `all`.
fn scatter_rows(part: &[f32], rows: &[usize], d: usize, all: &mut [f32]) {
    for (&r, x) in rows.iter().zip(part.chunks_exact(d)) {
        all[r * d..][..d].copy_from_slice(x);
    }
}

/// Rows `rows` of `all` (`d` wide), in that order.
fn gather_rows(all: &[f32], rows: &[usize], d: usize) -> Vec<f32> {
    rows.iter().flat_map(|&r| &all[r * d..][..d]).copied().collect()
}

fn normalize_rows(m: &mut Matrix) {
    for r in 0..m.rows {
        let row = m.row_mut(r);
        let norm = (row.iter().map(|x| x * x).sum::<f32>() + 1e-12).sqrt();
        row.iter_mut().for_each(|x| *x /= norm);
    }
}

// The bound is private: which devices encode in parts is this module's affair.
#[allow(private_bounds)]
impl<D: EncoderThreads> Model for CandidateModel<D> {
    fn dim(&self) -> usize {
        self.cfg.params.dim
    }

    fn parameter_count(&self) -> usize {
        self.params().iter().map(|(_, p)| p.len()).sum()
    }

    fn compute_gradients(&mut self, batch: &TrainBatch<'_>) -> Result<StepStats> {
        if self.on_device {
            self.settle_output(|_| ());
            return self.device_step(batch);
        }
        self.forward_backward(batch)
    }

    fn apply_gradients(&mut self) {
        match &mut self.resident {
            Some(r) if self.on_device => {
                self.adam.begin_step();
                r.apply(&self.adam);
            }
            _ => self.apply(),
        }
    }

    fn finish_steps(&mut self) -> Result<()> {
        self.settle_output(|_| ());
        if let Some(mut r) = self.resident.take() {
            if r.ahead {
                r.download_into(self.host_params());
            }
            self.resident = Some(r);
        }
        Ok(())
    }

    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        self.adam.lr = lr as f32;
        Ok(())
    }

    fn user_vectors(&self, queries: &Queries) -> Result<Matrix> {
        self.ensure_host_current()?;
        let chunk = match &self.attention {
            Some(a) => {
                (INFERENCE_SCORES / (a.shape.heads * queries.histories.width.max(1).pow(2))).clamp(1, INFERENCE_CHUNK)
            }
            None => INFERENCE_CHUNK,
        };
        let mut m = Matrix::from_vec(queries.len(), self.cfg.params.dim, self.encode_users(queries, chunk, true)?);
        if self.cfg.params.normalize {
            normalize_rows(&mut m);
        }
        Ok(m)
    }

    fn item_vectors(&self) -> Result<Matrix> {
        self.ensure_host_current()?;
        let d = self.cfg.params.dim;
        let mut m = if self.item_tower.is_empty() {
            Matrix::from_vec(self.n_items, d, self.output_table().vectors(self.n_items))
        } else {
            let t = self.dense_tensors();
            let (w, ids) = (self.item_width(), (0..self.n_items as ItemIdx).collect::<Vec<_>>());
            let mut out = Vec::with_capacity(self.n_items * d);
            for chunk in ids.chunks(INFERENCE_CHUNK) {
                let x = self.dev.tensor_from_vec(self.item_inputs(chunk), (chunk.len(), w));
                out.extend(to_host(&self.item_graph::<NoneTape>(&x, &t)));
            }
            Matrix::from_vec(self.n_items, d, out)
        };
        if self.cfg.params.normalize {
            normalize_rows(&mut m);
        }
        Ok(m)
    }

    fn state(&self) -> ModelState {
        if let Some(r) = self.resident.as_ref().filter(|r| r.ahead) {
            return r.snapshot().into_iter().map(|(name, [values, ..])| (name, values)).collect();
        }
        self.params().into_iter().map(|(name, p)| (name, p.values().to_vec())).collect()
    }

    fn load_state(&mut self, state: &ModelState) -> Result<()> {
        self.resident = None;
        for (name, mut p) in self.params_mut() {
            let src = state.get(&name).with_context(|| format!("model state lacks `{name}`"))?;
            ensure!(src.len() == p.len(), "model state `{name}` has {} values, expected {}", src.len(), p.len());
            p.set_values(src);
        }
        Ok(())
    }

    fn training_state(&self) -> TrainingState {
        let mut s = TrainingState { f32s: self.state(), ..Default::default() };
        let moments: Vec<(String, [Vec<f32>; 2])> = match self.resident.as_ref().filter(|r| r.ahead) {
            Some(r) => r.snapshot().into_iter().map(|(name, [_, m, v])| (name, [m, v])).collect(),
            None => self
                .params()
                .into_iter()
                .map(|(name, p)| {
                    let (m, v) = p.moments();
                    (name, [m.into_owned(), v.into_owned()])
                })
                .collect(),
        };
        for (name, [m, v]) in moments {
            s.f32s.insert(format!("{name}.adam_m"), m);
            s.f32s.insert(format!("{name}.adam_v"), v);
        }
        s.u64s.insert("adam.t".into(), vec![self.adam.t]);
        s
    }

    fn load_training_state(&mut self, state: &TrainingState) -> Result<()> {
        self.load_state(&state.f32s)?;
        for (name, mut p) in self.params_mut() {
            let len = p.len();
            let m = TrainingState::take(&state.f32s, &format!("{name}.adam_m"), len)?;
            let v = TrainingState::take(&state.f32s, &format!("{name}.adam_v"), len)?;
            p.set_moments(m, v);
        }
        self.adam.t = TrainingState::take(&state.u64s, "adam.t", 1)?[0];
        Ok(())
    }
}

/// dfdx multiplies on the CPU through the `gemm` crate with rayon
/// parallelism, splitting a product above 48·48·256 multiply-adds (a tower
/// layer of a training batch, 256 x 64 by 64 x 256) over the cores. That pays
/// when the step runs on a pool thread (the `funnel` binary's main thread is
/// one, `par::work_on_this_thread`): the caller computes a share itself.
/// From any other thread rayon puts the caller to sleep until the pool's
/// threads are done, and the wake-ups cost more than the split saves; and a
/// step whose windows are encoded in two parts already keeps both cores
/// busy. Then only products of 2^25 multiply-adds and more (larger batches,
/// wide layers) are split. Each output element is summed in the same order
/// either way, so the bits do not depend on it.
fn split_tower_products(on_both_cores: bool) {
    const ONE_THREAD_BELOW: usize = 1 << 25;
    const GEMM_DEFAULT: usize = 48 * 48 * 256;
    let threshold = if on_both_cores { GEMM_DEFAULT } else { ONE_THREAD_BELOW };
    if gemm_common::gemm::get_threading_threshold() != threshold {
        gemm_common::gemm::set_threading_threshold(threshold);
    }
}

/// Scatters the gradient of item inputs (see [`CandidateModel::item_inputs`])
/// into the candidates' table and item fields.
fn scatter_items<'a>(
    table: &mut ItemTable,
    fields: &mut [FieldTable],
    s: usize,
    items: impl Iterator<Item = &'a ItemIdx>,
    g: &[f32],
) {
    let d = table.dim();
    let w = d + s * fields.len();
    for (&item, g) in items.zip(g.chunks_exact(w)) {
        table.accumulate(item, &g[..d], 1.0);
        for (f, g) in fields.iter_mut().zip(g[d..].chunks_exact(s)) {
            f.accumulate_mean(&[item], g);
        }
    }
}

/// Candidates from which their item inputs are copied on two threads.
const ITEM_INPUTS_IN_TWO_FROM: usize = 1024;

/// What the host-built query features read, borrowed apart from the model
/// (whose device need not be shareable between threads).
struct QueryTables<'a> {
    /// The item table whose rows are averaged over the history (mean encoder).
    history: Option<&'a ItemTable>,
    history_fields: &'a [FieldTable],
    user_fields: &'a [FieldTable],
    side_dim: usize,
    example_age: bool,
    outcome: Option<&'a EmbeddingTable>,
    width: usize,
}

impl QueryTables<'_> {
    /// Features of `rows`, row-major `[rows, width]`, the two halves on two
    /// threads when asked.
    fn features(&self, q: &Queries, rows: Range<usize>, two_threads: bool) -> Vec<f32> {
        let w = self.width;
        let mut out = vec![0.0f32; rows.len() * w];
        if two_threads {
            let half = rows.start + rows.len() / 2;
            let (first, second) = out.split_at_mut((half - rows.start) * w);
            funnel_kernels::par::beside(
                || self.fill(q, rows.start..half, first),
                || self.fill(q, half..rows.end, second),
            );
        } else {
            self.fill(q, rows, &mut out);
        }
        out
    }

    /// Fills `out` (`rows.len()` rows of `width`) with the features of `rows`.
    fn fill(&self, q: &Queries, rows: Range<usize>, out: &mut [f32]) {
        let s = self.side_dim;
        let end = rows.end;
        for (r, row) in rows.zip(out.chunks_exact_mut(self.width)) {
            let items = q.histories.row(r);
            let mut at = 0;
            if let Some(input) = self.history {
                // The next row's items, scattered over the table, load while this row sums.
                if r + 1 < end {
                    q.histories.row(r + 1).iter().for_each(|&item| input.prefetch(item));
                }
                let acc = &mut row[..input.dim()];
                items.iter().for_each(|&item| input.add_to(item, 1.0, acc));
                if !items.is_empty() {
                    let inv = 1.0 / items.len() as f32;
                    acc.iter_mut().for_each(|a| *a *= inv);
                }
                at = input.dim();
            }
            for f in self.history_fields {
                f.mean_into(items, &mut row[at..at + s]);
                at += s;
            }
            for f in self.user_fields {
                f.mean_into(&[q.users[r]], &mut row[at..at + s]);
                at += s;
            }
            if self.example_age {
                row[at] = q.ages[r];
                row[at + 1] = q.ages[r] * q.ages[r];
                at += AGE_WIDTH;
            }
            if let Some(t) = self.outcome {
                row[at..at + s].copy_from_slice(t.row(asked(q, r)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EmbeddingOptimizer, Loss, Pooling, YoutubeDnnParams};
    use dfdx::tensor::Cpu;
    use funnel_api::Candidates;
    use funnel_api::SideInputs;

    type Tiny = CandidateModel<Cpu>;

    fn tiny(share_embeddings: bool, temperature: f32) -> Tiny {
        tiny_with(share_embeddings, temperature, Loss::Softmax, false)
    }

    fn tiny_params(share_embeddings: bool, temperature: f32, loss: Loss, normalize: bool) -> YoutubeDnnParams {
        YoutubeDnnParams {
            dim: 3,
            hidden: vec![4],
            share_embeddings,
            init_std: 0.5,
            temperature,
            normalize,
            loss,
            embedding_optimizer: EmbeddingOptimizer::Adam,
            gru_hidden: 2,
            side_dim: 2,
            ..Default::default()
        }
    }

    fn tiny_with(share_embeddings: bool, temperature: f32, loss: Loss, normalize: bool) -> Tiny {
        tiny_model(tiny_params(share_embeddings, temperature, loss, normalize).into(), SideInputs::default())
    }

    /// A model over 7 items and 3 users with the given side inputs.
    fn tiny_model(cfg: Config, inputs: SideInputs) -> Tiny {
        let cx = BuildCx {
            seed: 3,
            n_items: 7,
            n_users: 3,
            max_history: 3,
            train: funnel_api::TrainConfig { lr: 0.01, ..Default::default() },
            inputs: std::sync::Arc::new(inputs),
            ..Default::default()
        };
        CandidateModel::new(Cpu::default(), cfg, &cx)
    }

    fn histories(rows: &[&[ItemIdx]]) -> Queries {
        let mut q = Queries::new(3);
        rows.iter().enumerate().for_each(|(u, r)| q.push(r, u as u32, 0.0));
        q
    }

    fn candidates(shared: &[ItemIdx], in_batch: bool, b: usize) -> Candidates {
        Candidates {
            shared: shared.to_vec(),
            shared_log_q: shared.iter().enumerate().map(|(i, _)| -1.0 - i as f32 * 0.5).collect(),
            in_batch,
            positive_log_q: (0..b).map(|i| -2.0 + i as f32 * 0.25).collect(),
            log_q_correction: true,
            ..Default::default()
        }
    }

    /// Every parameter of `m`, addressed as (tensor name, flat index).
    fn coordinates(m: &Tiny) -> Vec<(String, usize)> {
        m.state().into_iter().flat_map(|(k, v)| (0..v.len()).map(move |i| (k.clone(), i))).collect()
    }

    fn check_gradients(m: Tiny, in_batch: bool) {
        check_gradients_of(m, candidates(&[6, 4, 1], in_batch, 2));
    }

    fn check_gradients_of(m: Tiny, cands: Candidates) {
        // Row 1's history is empty; negative 4 is row 0's positive (an
        // accidental hit, masked); positives 4 and 5 differ.
        check_gradients_on(m, &histories(&[&[0, 1, 2], &[]]), cands);
    }

    fn check_gradients_on(m: Tiny, h: &Queries, cands: Candidates) {
        check_batch_gradients(m, h, &[4, 5], cands, None);
    }

    fn check_batch_gradients(
        m: Tiny,
        h: &Queries,
        positives: &[ItemIdx],
        cands: Candidates,
        windows: Option<&Windows>,
    ) {
        check_weighted_gradients(m, h, positives, cands, windows, &[]);
    }

    fn check_weighted_gradients(
        mut m: Tiny,
        h: &Queries,
        positives: &[ItemIdx],
        cands: Candidates,
        windows: Option<&Windows>,
        weights: &[f32],
    ) {
        let in_batch = cands.in_batch;
        let batch = TrainBatch { queries: h, positives, candidates: &cands, windows, weights };
        m.forward_backward(&batch).unwrap();
        let grads: Vec<(String, Vec<f32>)> = m.params().into_iter().map(|(n, p)| (n, p.gradient())).collect();
        assert_finite_differences(&mut m, &grads, |m| m.loss(&batch), &format!("in_batch = {in_batch}"));
    }

    /// Each coordinate of `grads` (by parameter name) against the central
    /// difference of `loss` around `m`'s state.
    fn assert_finite_differences(
        m: &mut Tiny,
        grads: &[(String, Vec<f32>)],
        loss: impl Fn(&mut Tiny) -> f32,
        what: &str,
    ) {
        // Small enough that no ReLU crosses its kink between the two probes.
        let eps = 1e-3f32;
        for (name, i) in coordinates(m) {
            let base = m.state();
            let loss_at = |delta: f32, m: &mut Tiny| {
                let mut s = base.clone();
                s.get_mut(&name).unwrap()[i] += delta;
                m.load_state(&s).unwrap();
                loss(m)
            };
            let numeric = (loss_at(eps, m) - loss_at(-eps, m)) / (2.0 * eps);
            m.load_state(&base).unwrap();
            let a = grads.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no gradient of {name}")).1[i];
            assert!(
                (a - numeric).abs() <= 2e-3 + 2e-2 * numeric.abs(),
                "{name}[{i}]: analytic {a} vs numeric {numeric} ({what})"
            );
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        check_gradients(tiny(false, 1.0), false);
        check_gradients(tiny(false, 0.5), true);
    }

    #[test]
    fn gradients_match_finite_differences_with_per_row_negatives() {
        // Row 0's own negatives 6 and 4 (4 is its positive: masked), row 1's 1 and 0.
        let mut c = candidates(&[], false, 2);
        c.per_row = vec![6, 4, 1, 0];
        c.per_row_log_q = vec![-1.0, -1.5, -2.0, -0.5];
        check_gradients_of(tiny(false, 1.0), c.clone());
        check_gradients_of(tiny_with(false, 0.3, Loss::Softmax, true), c.clone());
        check_gradients_of(tiny_with(true, 1.0, Loss::Bce, false), c.clone());
        // Shared and per-row negatives together, in-batch too.
        c.shared = vec![2, 3];
        c.shared_log_q = vec![-1.0, -1.0];
        c.in_batch = true;
        check_gradients_of(tiny(false, 1.0), c);
    }

    #[test]
    fn gradients_match_finite_differences_for_bce_and_normalised_vectors() {
        check_gradients(tiny_with(false, 1.0, Loss::Bce, false), false);
        check_gradients(tiny_with(false, 1.0, Loss::Bce, false), true);
        check_gradients(tiny_with(false, 0.2, Loss::Softmax, true), true);
        check_gradients(tiny_with(true, 0.5, Loss::Bce, true), false);
    }

    #[test]
    fn bce_equals_the_hand_computed_logistic_loss() {
        // One row, positive 6, negatives 2 and 3 (no correction): the loss is
        // softplus(-s6) + softplus(s2) + softplus(s3).
        let m = tiny_with(false, 1.0, Loss::Bce, false);
        let h = histories(&[&[0, 1]]);
        let mut cands = candidates(&[2, 3], false, 1);
        cands.log_q_correction = false;
        let batch = TrainBatch { queries: &h, positives: &[6], candidates: &cands, windows: None, weights: &[] };
        let u = m.user_vectors(&h).unwrap();
        let items = m.item_vectors().unwrap();
        let s: Vec<f32> = [6, 2, 3].iter().map(|&i| funnel_kernels::dot(u.row(0), items.row(i))).collect();
        let softplus = |x: f32| (1.0 + x.exp()).ln();
        let expected = softplus(-s[0]) + softplus(s[1]) + softplus(s[2]);
        assert!((m.loss(&batch) - expected).abs() < 1e-5, "{} vs {expected}", m.loss(&batch));
    }

    #[test]
    fn normalised_vectors_have_unit_length() {
        let m = tiny_with(false, 0.1, Loss::Softmax, true);
        let u = m.user_vectors(&histories(&[&[0, 1], &[]])).unwrap();
        let items = m.item_vectors().unwrap();
        for r in (0..u.rows).map(|r| u.row(r)).chain((0..items.rows).map(|r| items.row(r))) {
            assert!((funnel_kernels::dot(r, r) - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn gradients_match_finite_differences_with_shared_tables() {
        check_gradients(tiny(true, 1.0), false);
        check_gradients(tiny(true, 1.0), true);
    }

    #[test]
    fn loss_equals_the_hand_computed_sampled_softmax() {
        // With every logit offset equal (no correction), the loss of a row is
        // logsumexp(logits) - logit(positive); recompute it on the host.
        let m = tiny(false, 1.0);
        let h = histories(&[&[0, 1]]);
        let mut cands = candidates(&[2, 3], false, 1);
        cands.log_q_correction = false;
        let batch = TrainBatch { queries: &h, positives: &[6], candidates: &cands, windows: None, weights: &[] };
        let u = m.user_vectors(&h).unwrap();
        let items = m.item_vectors().unwrap();
        let logits: Vec<f32> = [6, 2, 3].iter().map(|&i| funnel_kernels::dot(u.row(0), items.row(i))).collect();
        let lse = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
        assert!((m.loss(&batch) - (lse - logits[0])).abs() < 1e-5);
    }

    #[test]
    fn training_lowers_the_loss_of_a_repeated_batch() {
        let mut m = tiny(false, 1.0);
        let h = histories(&[&[0, 1], &[2]]);
        let cands = candidates(&[3, 6], false, 2);
        let batch = TrainBatch { queries: &h, positives: &[4, 5], candidates: &cands, windows: None, weights: &[] };
        let first = m.loss(&batch);
        for _ in 0..200 {
            m.train_step(&batch).unwrap();
        }
        m.finish_steps().unwrap();
        assert!(m.loss(&batch) < first * 0.2, "{} -> {}", first, m.loss(&batch));
    }

    #[test]
    fn training_state_restores_identical_training() {
        // Train a, snapshot, train both a and a restored copy: same weights.
        let h = histories(&[&[0, 1], &[2]]);
        let cands = candidates(&[3, 6], false, 2);
        let batch = TrainBatch { queries: &h, positives: &[4, 5], candidates: &cands, windows: None, weights: &[] };
        let mut a = tiny(false, 1.0);
        for _ in 0..5 {
            a.train_step(&batch).unwrap();
        }
        let mut b = tiny(false, 1.0);
        b.load_training_state(&a.training_state()).unwrap();
        for _ in 0..5 {
            a.train_step(&batch).unwrap();
            b.train_step(&batch).unwrap();
        }
        assert_eq!(a.training_state(), b.training_state());
    }

    #[test]
    fn state_round_trips() {
        let m = tiny(false, 1.0);
        let mut other = tiny(false, 1.0);
        other.tower[0].weight.values[0] += 1.0;
        other.load_state(&m.state()).unwrap();
        assert_eq!(other.state(), m.state());
        let mut missing = m.state();
        missing.remove("layer1.bias");
        assert!(other.load_state(&missing).unwrap_err().to_string().contains("layer1.bias"));
    }

    /// Genres of the 7 items, gender of the 3 users, hashed item rows.
    fn side_inputs(hashed: bool, example_age: bool) -> SideInputs {
        use funnel_api::{Categorical, ItemEncoding};
        let genres: [&[u32]; 7] = [&[0], &[1, 2], &[], &[2], &[0, 1], &[1], &[3]];
        SideInputs {
            items: if hashed {
                // 7 items into 5 rows, 2 rows each, with collisions.
                ItemEncoding::from_ids(5, 2, vec![0, 1, 1, 2, 2, 3, 3, 4, 4, 0, 0, 2, 1, 1])
            } else {
                ItemEncoding::default()
            },
            item_fields: vec![Categorical::from_lists("genres", 4, genres)],
            user_fields: vec![Categorical::from_lists("gender", 2, [vec![0], vec![1], vec![]])],
            example_age,
            outcomes: 0,
        }
    }

    fn with_ages(mut q: Queries, ages: &[f32]) -> Queries {
        q.ages = ages.to_vec();
        q
    }

    fn mixed_candidates() -> Candidates {
        let mut c = candidates(&[2, 3], true, 2);
        c.per_row = vec![6, 4, 1, 0];
        c.per_row_log_q = vec![-1.0, -1.5, -2.0, -0.5];
        c
    }

    #[test]
    fn side_features_and_hashed_items_get_exact_gradients() {
        let cfg: Config = tiny_params(false, 0.5, Loss::Softmax, false).into();
        let m = tiny_model(cfg.clone(), side_inputs(true, true));
        let names: Vec<_> = m.state().into_keys().collect();
        for expected in ["history_field.genres", "user_field.gender", "input_embeddings", "output_embeddings"] {
            assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
        }
        assert_eq!(m.state()["input_embeddings"].len(), 5 * 3, "hashed table has 5 rows");
        // Tower input: history mean 3 + genres 2 + gender 2 + [age, age²] 2.
        assert_eq!(m.tower[0].fan_in, 9);
        let q = with_ages(histories(&[&[0, 1, 2], &[]]), &[0.25, 0.75]);
        check_gradients_on(m, &q, mixed_candidates());
        let shared = tiny_model(tiny_params(true, 1.0, Loss::Bce, true).into(), side_inputs(true, false));
        check_gradients_on(shared, &histories(&[&[3, 4], &[6]]), candidates(&[6, 4, 1], true, 2));
    }

    fn recurrent_params(encoder: SequenceEncoder, pooling: Pooling) -> YoutubeDnnParams {
        YoutubeDnnParams { gru_pooling: pooling, lstm_pooling: pooling, ..encoder_params(encoder, 3, 1, 0.0) }
    }

    #[test]
    fn recurrent_encoders_get_exact_gradients_with_last_and_max_pooling() {
        for (encoder, gate) in
            [(SequenceEncoder::Gru, "gru.hidden_new.weight"), (SequenceEncoder::Lstm, "lstm.hidden_forget.weight")]
        {
            for pooling in [Pooling::Last, Pooling::Max] {
                let p = recurrent_params(encoder, pooling);
                let m = tiny_model(p.clone().into(), SideInputs::default());
                assert_eq!(m.tower[0].fan_in, 2, "hidden width 2 feeds the tower");
                assert!(m.state().contains_key(gate));
                // Rows of length 3 and 0 (padded throughout).
                check_gradients_on(m, &histories(&[&[0, 1, 2], &[]]), mixed_candidates());
                let with_sides = tiny_model(p.into(), side_inputs(false, true));
                let q = with_ages(histories(&[&[5], &[2, 6]]), &[0.5, 0.0]);
                check_gradients_on(with_sides, &q, candidates(&[6, 4, 1], false, 2));
            }
        }
        let lstm = tiny_model(encoder_params(SequenceEncoder::Lstm, 3, 1, 0.0).into(), SideInputs::default());
        assert_eq!(lstm.parameter_count(), 7 * 3 * 2 + (3 * 2 + 2) * 4 + (2 * 2 + 2) * 4 + (2 * 4 + 4) + (4 * 3 + 3));
    }

    #[test]
    fn recurrent_last_state_ignores_padding_and_order_matters() {
        for encoder in [SequenceEncoder::Gru, SequenceEncoder::Lstm] {
            let m = tiny_model(encoder_params(encoder, 3, 1, 0.0).into(), SideInputs::default());
            let u = m.user_vectors(&histories(&[&[0, 1], &[1, 0], &[0, 1]])).unwrap();
            assert_eq!(u.row(0), u.row(2));
            assert_ne!(u.row(0), u.row(1), "a sequence encoder sees order, unlike the mean");
        }
    }

    #[test]
    fn two_tower_item_vectors_come_from_the_item_tower_and_get_exact_gradients() {
        let p = YoutubeDnnParams { item_hidden: vec![4], ..tiny_params(false, 1.0, Loss::Softmax, false) };
        let m = tiny_model(p.clone().into(), side_inputs(false, false));
        assert_eq!(m.item_tower[0].fan_in, 3 + 2, "item ID 3 + genres 2");
        let items = m.item_vectors().unwrap();
        assert_eq!((items.rows, items.cols), (7, 3));
        check_gradients_on(m, &histories(&[&[0, 1, 2], &[]]), mixed_candidates());
        let normalised =
            tiny_model(YoutubeDnnParams { normalize: true, temperature: 0.2, ..p }.into(), side_inputs(true, false));
        check_gradients_on(normalised, &histories(&[&[0], &[3]]), candidates(&[6, 4, 1], true, 2));
    }

    #[test]
    fn a_catalogs_item_inputs_copied_in_two_halves_equal_each_items_own() {
        for hashed in [false, true] {
            let p = YoutubeDnnParams { item_hidden: vec![4], ..tiny_params(false, 1.0, Loss::Softmax, false) };
            let m = tiny_model(p.into(), side_inputs(hashed, false));
            let items: Vec<ItemIdx> = (0..ITEM_INPUTS_IN_TWO_FROM as u32 + 5).map(|i| (i * 3) % 7).collect();
            let one_by_one: Vec<f32> = items.iter().flat_map(|&i| m.item_inputs(&[i])).collect();
            let whole = funnel_kernels::par::with_threads(2, || m.item_inputs(&items));
            assert_eq!(whole, one_by_one, "hashed {hashed}");
            assert!(whole.iter().any(|&x| x != 0.0));
        }
    }

    #[test]
    fn matrix_factorization_scores_known_users_and_gets_exact_gradients() {
        let p = crate::MatrixFactorizationParams { dim: 3, init_std: 0.5, ..Default::default() };
        let m = tiny_model(p.into(), side_inputs(false, true));
        let names: Vec<_> = m.state().into_keys().collect();
        assert_eq!(names, vec!["item_embeddings", "user_embeddings"]);
        assert_eq!(m.parameter_count(), 7 * 3 + 3 * 3);
        let u = m.user_vectors(&histories(&[&[], &[1], &[2]])).unwrap();
        assert_eq!(u.row(1), m.users.as_ref().unwrap().row(1));
        let mut unknown = Queries::new(3);
        unknown.push(&[1], Queries::UNKNOWN_USER, 0.0);
        assert!(m.user_vectors(&unknown).unwrap_err().to_string().contains("trained on"));
        check_gradients_on(m, &histories(&[&[0, 1, 2], &[]]), mixed_candidates());
    }

    #[test]
    fn query_features_are_the_same_from_one_thread_or_two() {
        let m = tiny_model(tiny_params(false, 1.0, Loss::Softmax, false).into(), side_inputs(true, true));
        let q = with_ages(histories(&[&[0, 1, 2], &[], &[6], &[3, 3]]), &[0.5, 0.0, 1.0, 0.25]);
        for rows in [0..4, 1..4, 2..3] {
            let one = m.query_tables().features(&q, rows.clone(), false);
            assert_eq!(one.len(), rows.len() * m.query_width());
            assert_eq!(m.query_tables().features(&q, rows, true), one);
        }
    }

    /// A model at training sizes over `n_items` items and histories of `width`.
    fn sized_model(p: YoutubeDnnParams, n_items: usize, width: usize) -> Tiny {
        let cx = BuildCx {
            seed: 5,
            n_items,
            n_users: 1,
            max_history: width,
            train: funnel_api::TrainConfig { lr: 0.01, ..Default::default() },
            ..Default::default()
        };
        CandidateModel::new(Cpu::default(), p.into(), &cx)
    }

    #[test]
    fn user_vectors_do_not_depend_on_the_rows_encoded_with_them() {
        // Training sizes, so the products take the same paths as in a run.
        let (n_items, width, n) = (500, 50, 601);
        let mut q = Queries::new(width);
        for r in 0..n {
            let len = if r % 7 == 0 { 0 } else { 1 + r * 13 % width };
            let h: Vec<ItemIdx> = (0..len).map(|i| ((r * 31 + i * 17) % n_items) as ItemIdx).collect();
            q.push(&h, 0, 0.0);
        }
        let base = YoutubeDnnParams { dim: 64, init_std: 0.1, ..tiny_params(false, 1.0, Loss::Softmax, false) };
        let variants: Vec<YoutubeDnnParams> = vec![
            YoutubeDnnParams { hidden: vec![256], ..base.clone() },
            YoutubeDnnParams { sequence_encoder: SequenceEncoder::Gru, hidden: vec![], ..base.clone() },
            YoutubeDnnParams {
                sequence_encoder: SequenceEncoder::SelfAttention,
                hidden: vec![],
                layers: 2,
                heads: 2,
                feed_forward: 64,
                ..base.clone()
            },
        ];
        for p in variants {
            let m = sized_model(p.clone(), n_items, width);
            let whole = m.encode_users(&q, n, false).unwrap();
            assert_eq!(whole.len(), n * 64);
            assert!(whole.iter().all(|x| x.is_finite()) && whole.iter().any(|&x| x != 0.0));
            for (chunk, halves) in [(n, true), (97, false), (97, true)] {
                let other = m.encode_users(&q, chunk, halves).unwrap();
                assert!(other == whole, "{:?}: chunks of {chunk}, halves {halves}", p.sequence_encoder);
            }
        }
    }

    #[test]
    fn training_on_a_pool_thread_splits_tower_products_and_keeps_the_bits() {
        // The bench's sizes: each tower product (256 x 64 by 64 x 256) is
        // above gemm's threshold, so on a pool thread of two it is split.
        let (n_items, width, b) = (3000, 30, 256);
        let mut q = Queries::new(width);
        for r in 0..b {
            let h: Vec<ItemIdx> = (0..1 + r % width).map(|i| ((r * 31 + i * 17) % n_items) as ItemIdx).collect();
            q.push(&h, 0, 0.0);
        }
        let positives: Vec<ItemIdx> = (0..b).map(|r| ((r * 7 + 3) % n_items) as ItemIdx).collect();
        let cands = Candidates {
            shared: (0..100).map(|i| (i * 29 % n_items) as ItemIdx).collect(),
            shared_log_q: vec![-8.0; 100],
            in_batch: true,
            positive_log_q: vec![-7.5; b],
            log_q_correction: true,
            ..Default::default()
        };
        let batch = TrainBatch { queries: &q, positives: &positives, candidates: &cands, windows: None, weights: &[] };
        let params = YoutubeDnnParams {
            dim: 64,
            init_std: 0.1,
            hidden: vec![256],
            ..tiny_params(false, 1.0, Loss::Softmax, false)
        };
        let train = || {
            assert!(funnel_kernels::par::on_pool());
            let mut m = sized_model(params.clone(), n_items, width);
            let losses: Vec<f32> = (0..3).map(|_| m.train_step(&batch).unwrap().loss).collect();
            // The output table's last update is still deferred: the state
            // includes it, and reading methods wait for `finish_steps`.
            let state = m.training_state();
            assert!(m.user_vectors(&q).unwrap_err().to_string().contains("finish_steps"));
            m.finish_steps().unwrap();
            assert!(state == m.training_state(), "the state read before finish_steps differs");
            let vectors = m.user_vectors(&q).unwrap();
            (losses, state, vectors)
        };
        let one = funnel_kernels::par::with_threads(1, train);
        let two = funnel_kernels::par::with_threads(2, train);
        // As the trainer steps: the pool's other thread polling for work.
        let awake = funnel_kernels::par::with_threads(2, || funnel_kernels::par::awake(train));
        assert!(one.0.iter().all(|l| l.is_finite()));
        for other in [&two, &awake] {
            assert_eq!(one.0, other.0);
            assert!(one.1 == other.1, "weights or moments differ");
            assert!(one.2 == other.2, "user vectors differ");
        }
    }

    #[test]
    fn every_variant_gives_one_vector_per_query_and_per_item() {
        let variants: Vec<Config> = vec![
            tiny_params(false, 1.0, Loss::Softmax, false).into(),
            YoutubeDnnParams { sequence_encoder: SequenceEncoder::Gru, ..tiny_params(true, 1.0, Loss::Softmax, true) }
                .into(),
            YoutubeDnnParams { item_hidden: vec![4, 2], ..tiny_params(false, 1.0, Loss::Bce, false) }.into(),
            crate::MatrixFactorizationParams { dim: 3, ..Default::default() }.into(),
        ];
        for cfg in variants {
            let m = tiny_model(cfg.clone(), side_inputs(true, true));
            let u = m.user_vectors(&histories(&[&[0, 1, 2], &[], &[6]])).unwrap();
            let items = m.item_vectors().unwrap();
            assert_eq!((u.rows, u.cols, items.rows, items.cols), (3, 3, 7, 3), "{cfg:?}");
            assert!(u.data.iter().chain(&items.data).all(|x| x.is_finite()));
        }
    }

    fn encoder_params(encoder: SequenceEncoder, dim: usize, heads: usize, dropout: f32) -> YoutubeDnnParams {
        YoutubeDnnParams {
            dim,
            sequence_encoder: encoder,
            lstm_hidden: 2,
            layers: 2,
            heads,
            feed_forward: 5,
            dropout,
            ..tiny_params(false, 1.0, Loss::Softmax, false)
        }
    }

    #[test]
    fn self_attention_gets_exact_gradients_with_masks_heads_and_dropout() {
        // One head over 3 wide vectors, two heads over 4; dropout off, then
        // on (the masks are drawn from the step count, the same for the
        // loss and its gradient).
        for (dim, heads, dropout) in [(3, 1, 0.0), (4, 2, 0.0), (4, 2, 0.3)] {
            let p = encoder_params(SequenceEncoder::SelfAttention, dim, heads, dropout);
            let m = tiny_model(p.clone().into(), SideInputs::default());
            let names: Vec<_> = m.state().into_keys().collect();
            for expected in ["attention.positions", "attention.block1.key.weight", "attention.final_norm.gain"] {
                assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
            }
            // Rows of length 3 and 0, then 1 and 2: padding masked.
            check_gradients_on(m, &histories(&[&[0, 1, 2], &[]]), mixed_candidates());
            let with_sides = tiny_model(p.clone().into(), side_inputs(true, true));
            let q = with_ages(histories(&[&[5], &[2, 6]]), &[0.5, 0.0]);
            check_gradients_on(with_sides, &q, candidates(&[6, 4, 1], true, 2));
            // The logistic loss over normalised vectors, shared tables.
            let bce =
                YoutubeDnnParams { loss: Loss::Bce, normalize: true, temperature: 0.5, share_embeddings: true, ..p };
            check_gradients_on(tiny_model(bce.into(), SideInputs::default()), &q, mixed_candidates());
        }
    }

    /// Two windows, [0, 1, 2] and [3, 5], and their queries: every prefix
    /// but the second of the first window.
    fn windows() -> (Windows, Queries, Vec<ItemIdx>) {
        let mut w = Windows::new(3);
        w.histories.push(&[0, 1, 2]);
        w.histories.push(&[3, 5]);
        let mut q = Queries::new(3);
        let mut positives = Vec::new();
        for (row, prefix, target) in [(0, 1, 1), (0, 3, 6), (1, 1, 5), (1, 2, 4)] {
            let items = w.histories.row(row as usize)[..prefix as usize].to_vec();
            q.push(&items, row, 0.0);
            positives.push(target);
            w.queries.push(funnel_api::WindowQuery { row, prefix });
        }
        (w, q, positives)
    }

    #[test]
    fn one_pass_over_a_window_equals_each_prefix_on_its_own() {
        let (w, q, _) = windows();
        let p = encoder_params(SequenceEncoder::SelfAttention, 4, 2, 0.2);
        let m = tiny_model(p.into(), side_inputs(false, false));
        let leaves = m.query_leaves(&q, 0..q.len(), Some(&w), None).unwrap();
        let t = m.dense_tensors();
        let one_pass = m.user_graph::<NoneTape>(&leaves, &t).as_vec();
        let separate = m.user_vectors(&q).unwrap();
        for (a, b) in one_pass.iter().zip(&separate.data) {
            assert!((a - b).abs() < 1e-5, "{one_pass:?} vs {:?}", separate.data);
        }
        // Padding after a history changes nothing: the same query in a wider batch.
        let mut wide = Queries::new(3);
        wide.push(&[3], 1, 0.0);
        wide.push(&[0, 1, 2], 0, 0.0);
        let u = m.user_vectors(&wide).unwrap();
        assert!(u.row(0).iter().zip(separate.row(2)).all(|(a, b)| (a - b).abs() < 1e-5));
    }

    #[test]
    fn self_attention_trained_on_windows_gets_exact_gradients() {
        let (w, q, positives) = windows();
        for dropout in [0.0, 0.25] {
            let p = encoder_params(SequenceEncoder::SelfAttention, 4, 2, dropout);
            let mut c = candidates(&[2, 3], true, positives.len());
            c.per_row = vec![6, 4, 1, 0, 2, 2, 5, 3];
            c.per_row_log_q = vec![-1.0, -1.5, -2.0, -0.5, -1.0, -1.0, -3.0, -2.5];
            check_batch_gradients(tiny_model(p.into(), side_inputs(false, false)), &q, &positives, c, Some(&w));
        }
    }

    #[test]
    fn the_same_seed_trains_the_same_self_attention_model() {
        let (w, q, positives) = windows();
        let c = candidates(&[2, 3], true, positives.len());
        let batch = TrainBatch { queries: &q, positives: &positives, candidates: &c, windows: Some(&w), weights: &[] };
        let train = || {
            let mut m =
                tiny_model(encoder_params(SequenceEncoder::SelfAttention, 4, 2, 0.3).into(), SideInputs::default());
            let losses: Vec<f32> = (0..5).map(|_| m.train_step(&batch).unwrap().loss).collect();
            (losses, m.training_state())
        };
        let (a, b) = (train(), train());
        assert_eq!(a, b);
        assert!(a.0[4] < a.0[0], "{:?}", a.0);
    }

    #[test]
    fn windows_encoded_in_two_parts_get_the_gradients_of_one() {
        let (w, q, positives) = windows();
        let c = candidates(&[2, 3], true, positives.len());
        let batch = TrainBatch { queries: &q, positives: &positives, candidates: &c, windows: Some(&w), weights: &[] };
        for encoder in [SequenceEncoder::SelfAttention, SequenceEncoder::Gru, SequenceEncoder::Lstm] {
            // One step's loss and every parameter's gradient (after a first
            // step, so that the second starts from trained values).
            let step = |in_parts: bool| {
                let mut m = tiny_model(encoder_params(encoder, 4, 2, 0.0).into(), side_inputs(false, false));
                m.encode_in_parts = in_parts;
                m.train_step(&batch).unwrap();
                let loss = m.compute_gradients(&batch).unwrap().loss;
                let grads: Vec<(String, Vec<f32>)> =
                    m.params().into_iter().map(|(name, p)| (name, p.gradient())).collect();
                (loss, grads)
            };
            let ((split_loss, split), (one_loss, one)) = (step(true), step(false));
            assert!((split_loss - one_loss).abs() < 1e-5, "{encoder:?}: {split_loss} vs {one_loss}");
            for ((name, a), (_, b)) in split.iter().zip(&one) {
                assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5), "{encoder:?}: {name}: {a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn the_second_part_of_a_split_batch_keeps_its_row_order() {
        let (w, q, positives) = windows();
        let c = candidates(&[2, 3], true, positives.len());
        let batch = TrainBatch { queries: &q, positives: &positives, candidates: &c, windows: Some(&w), weights: &[] };
        let [a, b] = split_windows(&batch).expect("two windows, two parts");
        assert_eq!((a.rows.clone(), b.rows.clone()), (vec![0, 1], vec![2, 3]));
        assert_eq!((a.windows.histories.len(), b.windows.histories.len()), (1, 1));
        assert_eq!(b.windows.histories.row(0), &[3, 5]);
        // Rows renumbered within the part, prefixes kept.
        let rows: Vec<(u32, u32)> = b.windows.queries.iter().map(|wq| (wq.row, wq.prefix)).collect();
        assert_eq!(rows, vec![(0, 1), (0, 2)]);
        assert_eq!(b.queries.histories.row(1), &[3, 5]);
        let mut all = vec![0.0; 4];
        scatter_rows(&[1.0, 2.0], &b.rows, 1, &mut all);
        scatter_rows(&[3.0, 4.0], &a.rows, 1, &mut all);
        assert_eq!(all, vec![3.0, 4.0, 1.0, 2.0]);
        assert_eq!(gather_rows(&all, &b.rows, 1), vec![1.0, 2.0]);
    }

    #[test]
    fn self_attention_refuses_histories_longer_than_its_positions() {
        let m = tiny_model(encoder_params(SequenceEncoder::SelfAttention, 3, 1, 0.0).into(), SideInputs::default());
        let mut long = Queries::new(4);
        long.push(&[0, 1, 2, 3], 0, 0.0);
        let err = m.user_vectors(&long).unwrap_err().to_string();
        assert!(err.contains("max_history"), "{err}");
    }

    #[test]
    fn recurrent_encoders_over_windows_equal_each_prefix_and_get_exact_gradients() {
        let (w, q, positives) = windows();
        for encoder in [SequenceEncoder::Gru, SequenceEncoder::Lstm] {
            for pooling in [Pooling::Last, Pooling::Max] {
                let p = recurrent_params(encoder, pooling);
                let m = tiny_model(p.clone().into(), SideInputs::default());
                let leaves = m.query_leaves(&q, 0..q.len(), Some(&w), None).unwrap();
                let one_pass = m.user_graph::<NoneTape>(&leaves, &m.dense_tensors()).as_vec();
                let separate = m.user_vectors(&q).unwrap();
                for (a, b) in one_pass.iter().zip(&separate.data) {
                    assert!((a - b).abs() < 1e-5, "{encoder:?} {pooling:?}: {one_pass:?} vs {:?}", separate.data);
                }
                let c = candidates(&[2, 3], true, positives.len());
                check_batch_gradients(m, &q, &positives, c, Some(&w));
            }
        }
    }

    fn asking(mut q: Queries, outcomes: &[u32]) -> Queries {
        q.outcomes = outcomes.to_vec();
        q
    }

    fn with_outcomes(mut inputs: SideInputs, outcomes: usize) -> SideInputs {
        inputs.outcomes = outcomes;
        inputs
    }

    /// Candidates for positives [4, 5] whose last two own negatives per
    /// row are explicit: row 0's 2 (weight 2) and 4 (its positive:
    /// padding), row 1's 3 (weight 0.5) and 0 (weight 1).
    fn explicit_candidates(correction: bool) -> Candidates {
        let ln2 = std::f32::consts::LN_2;
        let mut c = candidates(&[2, 3], true, 2);
        c.per_row = vec![6, 2, 4, 1, 3, 0];
        c.per_row_log_q = vec![-1.0, -ln2, 0.0, -2.0, ln2, 0.0];
        c.explicit = 2;
        c.log_q_correction = correction;
        c
    }

    #[test]
    fn outcome_conditioned_queries_get_exact_gradients_with_weights_and_explicit_negatives() {
        let cfg: Config = tiny_params(false, 0.5, Loss::Softmax, false).into();
        let m = tiny_model(cfg.clone(), with_outcomes(side_inputs(true, true), 3));
        assert_eq!(m.state()["outcome_embeddings"].len(), 3 * 2, "3 outcomes of side_dim 2");
        // Tower input: history mean 3 + genres 2 + gender 2 + [age, age²] 2 + outcome 2.
        assert_eq!(m.tower[0].fan_in, 11);
        let q = asking(with_ages(histories(&[&[0, 1, 2], &[]]), &[0.25, 0.75]), &[2, 0]);
        for correction in [true, false] {
            let m = tiny_model(cfg.clone(), with_outcomes(side_inputs(true, true), 3));
            check_weighted_gradients(m, &q, &[4, 5], explicit_candidates(correction), None, &[0.5, 2.0]);
        }
        // The logistic loss, and outcomes alone in the query features of a GRU.
        let bce =
            tiny_model(tiny_params(false, 1.0, Loss::Bce, false).into(), with_outcomes(side_inputs(false, false), 2));
        check_weighted_gradients(
            bce,
            &asking(histories(&[&[3], &[6]]), &[1, 1]),
            &[4, 5],
            explicit_candidates(true),
            None,
            &[1.5, 0.25],
        );
        let gru = recurrent_params(SequenceEncoder::Gru, Pooling::Last);
        let m = tiny_model(gru.into(), with_outcomes(SideInputs::default(), 2));
        assert_eq!(m.tower[0].fan_in, 2 + 2, "hidden 2 + outcome 2");
        check_weighted_gradients(
            m,
            &asking(histories(&[&[0, 1], &[2]]), &[1, 0]),
            &[4, 5],
            explicit_candidates(false),
            None,
            &[2.0, 0.5],
        );
    }

    #[test]
    fn outcome_conditioned_encoders_over_windows_get_exact_gradients_with_weights_and_explicit_negatives() {
        let (w, q, positives) = windows();
        // Positives [1, 6, 5, 4]; each row's last own negative is explicit,
        // row 0's being its positive (padding).
        let ln2 = std::f32::consts::LN_2;
        let mut c = candidates(&[2, 3], true, positives.len());
        c.per_row = vec![6, 1, 4, 2, 0, 3, 2, 6];
        c.per_row_log_q = vec![-1.0, 0.0, -1.5, -ln2, -2.0, -ln2, -0.5, 0.0];
        c.explicit = 1;
        let q = asking(q, &[1, 0, 2, 1]);
        let weights = [0.5, 2.0, 1.0, 1.5];
        let encoders = [
            encoder_params(SequenceEncoder::SelfAttention, 4, 2, 0.0),
            encoder_params(SequenceEncoder::SelfAttention, 4, 2, 0.25),
            recurrent_params(SequenceEncoder::Gru, Pooling::Last),
            recurrent_params(SequenceEncoder::Lstm, Pooling::Max),
        ];
        for p in encoders {
            let m = tiny_model(p.into(), with_outcomes(side_inputs(false, false), 3));
            assert!(m.state().contains_key("outcome_embeddings"));
            // One pass over the windows reads each query's own outcome.
            let leaves = m.query_leaves(&q, 0..q.len(), Some(&w), None).unwrap();
            let one_pass = m.user_graph::<NoneTape>(&leaves, &m.dense_tensors()).as_vec();
            let separate = m.user_vectors(&q).unwrap();
            for (a, b) in one_pass.iter().zip(&separate.data) {
                assert!((a - b).abs() < 1e-5, "{one_pass:?} vs {:?}", separate.data);
            }
            check_weighted_gradients(m, &q, &positives, c.clone(), Some(&w), &weights);
        }
    }

    #[test]
    fn one_outcome_is_the_model_without_outcomes() {
        let variants: Vec<Config> = vec![
            tiny_params(false, 1.0, Loss::Softmax, false).into(),
            recurrent_params(SequenceEncoder::Gru, Pooling::Max).into(),
            encoder_params(SequenceEncoder::SelfAttention, 4, 2, 0.2).into(),
            YoutubeDnnParams { item_hidden: vec![4], ..tiny_params(false, 1.0, Loss::Bce, true) }.into(),
            crate::MatrixFactorizationParams { dim: 3, ..Default::default() }.into(),
        ];
        let q = histories(&[&[0, 1, 2], &[], &[6]]);
        let c = mixed_candidates();
        for cfg in variants {
            let none = tiny_model(cfg.clone(), side_inputs(false, true));
            let one = tiny_model(cfg.clone(), with_outcomes(side_inputs(false, true), 1));
            assert_eq!(one.state(), none.state(), "{cfg:?}");
            assert_eq!(one.parameter_count(), none.parameter_count());
            assert_eq!(one.user_vectors(&q).unwrap().data, none.user_vectors(&q).unwrap().data);
            let h = histories(&[&[0, 1, 2], &[]]);
            let batch = TrainBatch { queries: &h, positives: &[4, 5], candidates: &c, windows: None, weights: &[] };
            assert_eq!(one.loss(&batch).to_bits(), none.loss(&batch).to_bits());
            // Weights of 1 are no weights, to the bit.
            let ones = TrainBatch { weights: &[1.0, 1.0], ..batch };
            assert_eq!(one.loss(&ones).to_bits(), none.loss(&batch).to_bits());
            // Two outcomes keep every draw before the outcome table's.
            if cfg.user_input == UserInput::History {
                let two = tiny_model(cfg.clone(), with_outcomes(side_inputs(false, true), 2));
                assert_eq!(two.state()["input_embeddings"], none.state()["input_embeddings"]);
                assert_eq!(
                    two.parameter_count(),
                    none.parameter_count() + 2 * 2 + 2 * 4,
                    "table 2x2, layer0 2 inputs more"
                );
                let cx = BuildCx {
                    n_items: 7,
                    n_users: 3,
                    max_history: 3,
                    inputs: std::sync::Arc::new(with_outcomes(side_inputs(false, true), 2)),
                    ..Default::default()
                };
                assert_eq!(parameter_estimate(&cfg, &cx), two.parameter_count() as u128);
            }
        }
    }

    #[test]
    fn two_outcomes_give_different_user_vectors_for_the_same_history() {
        let encoders = [
            tiny_params(false, 1.0, Loss::Softmax, false),
            recurrent_params(SequenceEncoder::Gru, Pooling::Last),
            encoder_params(SequenceEncoder::SelfAttention, 4, 2, 0.2),
        ];
        for p in encoders {
            let m = tiny_model(p.into(), with_outcomes(side_inputs(false, true), 2));
            let q = asking(histories(&[&[0, 1], &[0, 1], &[0, 1]]), &[0, 1, 0]);
            let u = m.user_vectors(&q).unwrap();
            assert_ne!(u.row(0), u.row(1));
            // Users 0 and 2 differ in gender: ask for user 0 three times.
            let mut same = Queries::new(3);
            for outcome in [0, 1, 0] {
                same.push_asking(&[0, 1], 0, 0.0, outcome);
            }
            let u = m.user_vectors(&same).unwrap();
            assert_ne!(u.row(0), u.row(1));
            assert_eq!(u.row(0), u.row(2));
            // A query naming no outcome asks about outcome 0.
            let unnamed = asking(same.clone(), &[]);
            assert_eq!(m.user_vectors(&unnamed).unwrap().row(1), u.row(0));
            let beyond = asking(same, &[0, 2, 0]);
            let err = m.user_vectors(&beyond).unwrap_err().to_string();
            assert!(err.contains("outcome 2") && err.contains("2 outcomes"), "{err}");
        }
    }

    #[test]
    fn matrix_factorization_refuses_to_condition_on_an_outcome() {
        let mf = || crate::MatrixFactorizationParams { dim: 3, ..Default::default() }.into();
        let cx = |outcomes: usize| BuildCx {
            n_items: 7,
            n_users: 3,
            inputs: std::sync::Arc::new(with_outcomes(SideInputs::default(), outcomes)),
            ..Default::default()
        };
        let err = crate::build(mf(), &cx(2)).err().expect("two outcomes are refused").to_string();
        assert_eq!(
            err,
            "matrix_factorization has no query tower to condition on an outcome: train one outcome (`[train] \
             outcomes`), not 2"
        );
        assert!(crate::build(mf(), &cx(1)).is_ok());
        assert!(crate::build(tiny_params(false, 1.0, Loss::Softmax, false).into(), &cx(2)).is_ok());
    }

    /// Two identical models, one stepping on the device.
    fn host_and_device(params: YoutubeDnnParams) -> (Tiny, Tiny) {
        let host = tiny_model(params.clone().into(), SideInputs::default());
        let device = tiny_model(params.into(), SideInputs::default()).with_steps_on_device(true);
        (host, device)
    }

    fn gradients_by_name(m: &Tiny) -> Vec<(String, Vec<f32>)> {
        m.params().into_iter().map(|(n, p)| (n, p.gradient())).collect()
    }

    fn assert_close(what: &str, a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + x.abs().max(y.abs())), "{what}[{i}]: host {x} vs device {y}");
        }
    }

    /// Three steps of the same batch on both engines: the same loss,
    /// gradient norm, every gradient and, after each Adam step, every
    /// weight and moment.
    fn check_device_step(
        params: YoutubeDnnParams,
        h: &Queries,
        positives: &[ItemIdx],
        cands: Candidates,
        windows: Option<&Windows>,
        weights: &[f32],
    ) {
        let (mut host, mut device) = host_and_device(params);
        let batch = TrainBatch { queries: h, positives, candidates: &cands, windows, weights };
        for step in 0..3 {
            let a = host.compute_gradients(&batch).unwrap();
            let b = device.compute_gradients(&batch).unwrap();
            assert_close(&format!("step {step} loss"), &[a.loss], &[b.loss], 1e-5);
            assert_close(&format!("step {step} gradient norm"), &[a.grad_norm], &[b.grad_norm], 1e-5);
            let on_device = device.resident.as_ref().unwrap().gradients();
            for (name, g) in gradients_by_name(&host) {
                let (_, d) = on_device.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("no {name}"));
                assert_close(&format!("step {step} gradient of {name}"), &g, d, 1e-5);
            }
            host.apply_gradients();
            device.apply_gradients();
            let (hs, ds) = (host.training_state(), device.training_state());
            assert_eq!(hs.f32s.keys().collect::<Vec<_>>(), ds.f32s.keys().collect::<Vec<_>>());
            for (name, v) in &hs.f32s {
                assert_close(&format!("step {step} {name}"), v, &ds.f32s[name], 1e-5);
            }
            assert_eq!(hs.u64s, ds.u64s);
        }
    }

    fn device_params(share: bool, loss: Loss, normalize: bool, optimizer: EmbeddingOptimizer) -> YoutubeDnnParams {
        YoutubeDnnParams { embedding_optimizer: optimizer, ..tiny_params(share, 0.5, loss, normalize) }
    }

    #[test]
    fn the_device_step_equals_the_host_step_for_every_sampler_and_loss() {
        let h = histories(&[&[0, 1, 2], &[]]);
        let lazy = EmbeddingOptimizer::LazyAdam;
        for (share, loss, normalize, optimizer) in [
            (false, Loss::Softmax, true, lazy),
            (false, Loss::Softmax, false, EmbeddingOptimizer::Adam),
            (true, Loss::Softmax, true, lazy),
            (false, Loss::Bce, true, lazy),
            (true, Loss::Bce, false, EmbeddingOptimizer::Adam),
        ] {
            let p = || device_params(share, loss, normalize, optimizer);
            // In-batch with shared negatives (one an accidental hit), shared
            // negatives alone, per-row ones beside them, without logQ.
            check_device_step(p(), &h, &[4, 5], candidates(&[6, 4, 1], true, 2), None, &[]);
            check_device_step(p(), &h, &[4, 5], candidates(&[6, 4, 1], false, 2), None, &[]);
            check_device_step(p(), &h, &[4, 5], mixed_candidates(), None, &[]);
            let mut uncorrected = candidates(&[6, 4, 1], true, 2);
            uncorrected.log_q_correction = false;
            check_device_step(p(), &h, &[4, 5], uncorrected, None, &[]);
            // Two rows with the same positive: each other's accidental hit.
            check_device_step(p(), &h, &[4, 4], candidates(&[6, 3], true, 2), None, &[]);
            // The full catalog as shared negatives.
            check_device_step(p(), &h, &[4, 5], candidates(&[0, 1, 2, 3, 4, 5, 6], false, 2), None, &[]);
            // Explicit negatives (one padding), row weights.
            check_device_step(p(), &h, &[4, 5], explicit_candidates(false), None, &[2.0, 0.5]);
            check_device_step(p(), &h, &[4, 5], explicit_candidates(true), None, &[1.5, 1.0]);
            // Windows: in-batch columns of the same window are masked.
            let (w, q, positives) = windows();
            check_device_step(p(), &q, &positives, candidates(&[2, 3], true, 4), Some(&w), &[]);
        }
    }

    #[test]
    fn the_device_step_gets_exact_gradients() {
        let h = histories(&[&[0, 1, 2], &[]]);
        let batch_cands = explicit_candidates(true);
        let batch = TrainBatch {
            queries: &h,
            positives: &[4, 5],
            candidates: &batch_cands,
            windows: None,
            weights: &[1.5, 1.0],
        };
        let (_, mut m) = host_and_device(device_params(false, Loss::Softmax, true, EmbeddingOptimizer::LazyAdam));
        m.compute_gradients(&batch).unwrap();
        let analytic = m.resident.as_ref().unwrap().gradients();
        assert_finite_differences(&mut m, &analytic, |m| m.compute_gradients(&batch).unwrap().loss, "device");
    }

    #[test]
    fn device_steps_reach_the_host_copy_when_finished_and_resume_exactly() {
        let h = histories(&[&[0, 1, 2], &[3]]);
        let cands = mixed_candidates();
        let batch = TrainBatch { queries: &h, positives: &[4, 5], candidates: &cands, windows: None, weights: &[] };
        let params = device_params(false, Loss::Softmax, true, EmbeddingOptimizer::LazyAdam);
        let (_, mut m) = host_and_device(params.clone());
        m.train_step(&batch).unwrap();
        // The host copy is behind: reading it is refused, snapshots come from the device.
        let err = m.user_vectors(&h).unwrap_err().to_string();
        assert!(err.contains("finish_steps"), "{err}");
        let (state, training) = (m.state(), m.training_state());
        m.finish_steps().unwrap();
        assert_eq!(m.state(), state);
        assert_eq!(m.training_state().f32s, training.f32s);
        assert!(m.user_vectors(&h).is_ok() && m.item_vectors().is_ok());
        // A model restored from the snapshot continues as the original does.
        let (_, mut resumed) = host_and_device(params);
        resumed.load_training_state(&training).unwrap();
        for _ in 0..2 {
            let a = m.train_step(&batch).unwrap();
            let b = resumed.train_step(&batch).unwrap();
            assert_eq!(a.loss, b.loss);
        }
        assert_eq!(m.state(), resumed.state());
    }

    #[test]
    fn the_device_engine_names_what_it_does_not_cover() {
        let cx = |engine: Engine, device: &str| BuildCx {
            n_items: 7,
            n_users: 3,
            max_history: 3,
            train: funnel_api::TrainConfig { engine, device: device.into(), ..Default::default() },
            ..Default::default()
        };
        let mean: Config = tiny_params(false, 0.5, Loss::Softmax, true).into();
        let gru: Config = recurrent_params(SequenceEncoder::Gru, Pooling::Last).into();
        assert!(steps_on_device(&mean, &cx(Engine::Device, "cpu")).unwrap());
        assert!(!steps_on_device(&mean, &cx(Engine::Auto, "cpu")).unwrap());
        assert!(steps_on_device(&mean, &cx(Engine::Auto, "cuda")).unwrap());
        assert!(!steps_on_device(&gru, &cx(Engine::Auto, "cuda")).unwrap());
        assert!(!steps_on_device(&mean, &cx(Engine::Host, "cuda")).unwrap());
        let err = steps_on_device(&gru, &cx(Engine::Device, "cpu")).unwrap_err().to_string();
        assert!(err.contains("engine = \"device\"") && err.contains("sequence encoder"), "{err}");
        let seen: Config =
            YoutubeDnnParams { exclude_seen: true, ..tiny_params(false, 0.5, Loss::Softmax, true) }.into();
        assert!(!steps_on_device(&seen, &cx(Engine::Auto, "cuda")).unwrap());
        let err = steps_on_device(&seen, &cx(Engine::Device, "cpu")).unwrap_err().to_string();
        assert!(err.contains("exclude_seen"), "{err}");
    }

    #[test]
    fn seen_columns_hold_a_windows_items_or_a_querys_history() {
        // Two windows: [1, 2] read by rows 0 (target 2) and 1 (target 4),
        // and [5] read by row 2 (target 6). Shared columns: the positives
        // 2, 4, 6, then the negatives 1, 5, 3. Each row has two own
        // negatives, the last one explicit.
        let mut w = Windows::new(2);
        w.histories.push(&[1, 2]);
        w.histories.push(&[5]);
        w.queries = vec![
            WindowQuery { row: 0, prefix: 1 },
            WindowQuery { row: 0, prefix: 2 },
            WindowQuery { row: 1, prefix: 1 },
        ];
        let mut q = Queries::new(2);
        q.push(&[1], 0, 0.0);
        q.push(&[1, 2], 0, 0.0);
        q.push(&[5], 1, 0.0);
        let positives = [2, 4, 6];
        let c = Candidates {
            shared: vec![1, 5, 3],
            shared_log_q: vec![-1.0; 3],
            per_row: vec![4, 1, 3, 2, 5, 6],
            per_row_log_q: vec![-1.0; 6],
            in_batch: true,
            positive_log_q: vec![-1.0; 3],
            explicit: 1,
            ..Default::default()
        };
        let batch = TrainBatch { queries: &q, positives: &positives, candidates: &c, windows: Some(&w), weights: &[] };
        let seen = seen_columns(&batch, 8);
        // Window 0 holds 1, 2, 4: columns 0 (2), 1 (4), 3 (1); window 1 holds 5, 6: columns 2 (6), 4 (5).
        assert_eq!(seen.set_of_row, vec![0, 0, 1]);
        assert_eq!((seen.starts.clone(), seen.columns.clone()), (vec![0, 3, 5], vec![0, 1, 3, 2, 4]));
        // Own negatives: row 0's 4 (j = 0), row 1's 3 unseen, row 2's 5 (j = 0); explicit ones never.
        assert_eq!((seen.own_starts.clone(), seen.own.clone()), (vec![0, 1, 1, 2], vec![0, 0]));
        // Without windows, each query's history: row 0 has seen 1, row 1 items 1 and 2, row 2 item 5.
        let seen = seen_columns(&TrainBatch { windows: None, ..batch }, 8);
        assert_eq!(seen.set_of_row, vec![0, 1, 2]);
        assert_eq!((seen.starts, seen.columns), (vec![0, 1, 3, 4], vec![3, 0, 3, 4]));
        assert_eq!((seen.own_starts, seen.own), (vec![0, 0, 0, 1], vec![0]));
    }

    #[test]
    fn excluding_seen_items_passes_the_gradient_check() {
        let (w, q, positives) = windows();
        let c = candidates(&[2, 3], true, positives.len());
        let batch = TrainBatch { queries: &q, positives: &positives, candidates: &c, windows: Some(&w), weights: &[] };
        let params =
            YoutubeDnnParams { exclude_seen: true, ..encoder_params(SequenceEncoder::SelfAttention, 4, 2, 0.0) };
        let mut m = tiny_model(params.into(), SideInputs::default());
        let with = m.loss(&batch);
        m.cfg.params.exclude_seen = false;
        assert!(m.loss(&batch) != with, "the windows' items are among the candidates, so masking them moves the loss");
        m.cfg.params.exclude_seen = true;
        check_batch_gradients(m, &q, &positives, c, Some(&w));
        // Without windows: each query's history.
        let mean = YoutubeDnnParams { exclude_seen: true, ..tiny_params(false, 1.0, Loss::Softmax, false) };
        check_gradients_of(tiny_model(mean.into(), SideInputs::default()), candidates(&[0, 2, 1], true, 2));
    }
}
