//! The YouTube DNN model: parameters, one training step on dfdx, inference.

use anyhow::{ensure, Context, Result};
// A glob: dfdx's tensor methods come from dozens of traits. Local imports
// below (`Adam`, `Model`) shadow its names of the same spelling.
use dfdx::prelude::*;
use funnel_api::{
    BuildCx, Candidates, Histories, ItemIdx, Matrix, Model, ModelState, Queries, StepStats, TrainBatch, TrainingState,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::adam::{Adam, Moments};
use crate::table::EmbeddingTable;
use crate::{Loss, YoutubeDnnParams};

type Mat<D, T = NoneTape> = Tensor<(usize, usize), f32, D, T>;
type Vector<D, T = NoneTape> = Tensor<(usize,), f32, D, T>;

/// Added to the logit of a candidate that must not count as a negative
/// (an accidental hit, or another row's positive when in-batch negatives are
/// off): far below any real logit, yet finite so no `inf - inf` appears.
const MASKED: f32 = -1.0e9;

/// Rows scored per forward pass at inference, to bound memory.
const INFERENCE_CHUNK: usize = 4096;

/// One batch as tensors (see [`YoutubeDnn::prepare`]).
struct Prepared<D: Device<f32>> {
    x: Mat<D>,
    v: Mat<D>,
    r: Option<Mat<D>>,
    offsets: Mat<D>,
    labels: Tensor<(usize,), usize, D>,
    shared_ids: Vec<ItemIdx>,
}

/// A fully connected layer `y = x W + b`, `W` row-major `[fan_in, fan_out]`.
struct Layer {
    fan_in: usize,
    fan_out: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
    weight_grad: Vec<f32>,
    bias_grad: Vec<f32>,
    weight_moments: Moments,
    bias_moments: Moments,
}

impl Layer {
    /// PyTorch's default init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
    fn uniform(fan_in: usize, fan_out: usize, rng: &mut impl Rng) -> Layer {
        let bound = 1.0 / (fan_in as f32).sqrt();
        let mut draw = |n: usize| (0..n).map(|_| rng.gen_range(-bound..bound)).collect::<Vec<f32>>();
        Layer {
            fan_in,
            fan_out,
            weight: draw(fan_in * fan_out),
            bias: draw(fan_out),
            weight_grad: vec![0.0; fan_in * fan_out],
            bias_grad: vec![0.0; fan_out],
            weight_moments: Moments::zeros(fan_in * fan_out),
            bias_moments: Moments::zeros(fan_out),
        }
    }

    fn tensors<D: Device<f32>>(&self, dev: &D) -> (Mat<D>, Vector<D>) {
        (
            dev.tensor_from_vec(self.weight.clone(), (self.fan_in, self.fan_out)),
            dev.tensor_from_vec(self.bias.clone(), (self.fan_out,)),
        )
    }
}

pub struct YoutubeDnn<D: Device<f32>> {
    dev: D,
    params: YoutubeDnnParams,
    input: EmbeddingTable,
    /// `None` when the output vectors share the input table.
    output: Option<EmbeddingTable>,
    layers: Vec<Layer>,
    adam: Adam,
}

impl<D: Device<f32>> YoutubeDnn<D> {
    pub fn new(dev: D, params: YoutubeDnnParams, cx: &BuildCx) -> YoutubeDnn<D> {
        let mut rng = StdRng::seed_from_u64(cx.seed ^ 0x9e37_79b9_7f4a_7c15);
        let d = params.dim;
        let input = EmbeddingTable::normal(cx.n_items, d, params.init_std as f32, &mut rng);
        let output =
            (!params.share_embeddings).then(|| EmbeddingTable::normal(cx.n_items, d, params.init_std as f32, &mut rng));
        let mut widths = vec![d];
        widths.extend(&params.hidden);
        widths.push(d);
        let layers = widths.windows(2).map(|w| Layer::uniform(w[0], w[1], &mut rng)).collect();
        YoutubeDnn { dev, params, input, output, layers, adam: Adam::new(cx.learning_rate as f32) }
    }

    fn output_table(&self) -> &EmbeddingTable {
        self.output.as_ref().unwrap_or(&self.input)
    }

    /// Mean input embedding of each history row (zeros for an empty history).
    fn history_means(&self, h: &Histories) -> Vec<f32> {
        let d = self.params.dim;
        let mut out = vec![0.0f32; h.len() * d];
        for (r, acc) in out.chunks_exact_mut(d).enumerate() {
            let items = h.row(r);
            for &item in items {
                for (a, &x) in acc.iter_mut().zip(self.input.row(item)) {
                    *a += x;
                }
            }
            if !items.is_empty() {
                let inv = 1.0 / items.len() as f32;
                acc.iter_mut().for_each(|a| *a *= inv);
            }
        }
        out
    }

    /// Per-logit additive term: `-log q` where corrected, [`MASKED`] where the
    /// candidate must not act as a negative for that row. Columns: the
    /// batch's positives (column `i` is row `i`'s positive), the shared
    /// negatives, then the row's own negatives.
    fn logit_offsets(positives: &[ItemIdx], cands: &Candidates) -> Vec<f32> {
        let b = positives.len();
        let k = cands.per_row.len() / b;
        let c = b + cands.shared.len() + k;
        let correct = |log_q: f32| if cands.log_q_correction { -log_q } else { 0.0 };
        let mut out = Vec::with_capacity(b * c);
        for (row, &pos) in positives.iter().enumerate() {
            for (col, &other) in positives.iter().enumerate() {
                out.push(if col == row {
                    correct(cands.positive_log_q[col])
                } else if !cands.in_batch || other == pos {
                    MASKED
                } else {
                    correct(cands.positive_log_q[col])
                });
            }
            let own = row * k..(row + 1) * k;
            let negatives = cands.shared.iter().zip(&cands.shared_log_q);
            let own_negatives = cands.per_row[own.clone()].iter().zip(&cands.per_row_log_q[own]);
            for (&neg, &log_q) in negatives.chain(own_negatives) {
                out.push(if neg == pos { MASKED } else { correct(log_q) });
            }
        }
        out
    }

    /// The batch as tensors: history means `x`, shared candidate vectors `v`
    /// (positives, then shared negatives), per-row negatives `r` (`[B * k, d]`),
    /// logit offsets and labels, with the item of every `v` and `r` row.
    fn prepare(&self, batch: &TrainBatch<'_>) -> Result<Prepared<D>> {
        let b = batch.positives.len();
        let d = self.params.dim;
        let cands = batch.candidates;
        ensure!(b > 0, "empty batch");
        ensure!(
            batch.queries.histories.len() == b,
            "batch has {b} positives but {} histories",
            batch.queries.histories.len()
        );
        ensure!(cands.per_row.len().is_multiple_of(b), "{} per-row negatives for {b} rows", cands.per_row.len());
        let shared_ids: Vec<ItemIdx> = batch.positives.iter().chain(&cands.shared).copied().collect();
        let gather = |ids: &[ItemIdx]| {
            let mut out = Vec::with_capacity(ids.len() * d);
            ids.iter().for_each(|&i| self.output_table().gather_into(i, &mut out));
            self.dev.tensor_from_vec(out, (ids.len(), d))
        };
        let c = shared_ids.len() + cands.per_row.len() / b;
        Ok(Prepared {
            x: self.dev.tensor_from_vec(self.history_means(&batch.queries.histories), (b, d)),
            v: gather(&shared_ids),
            r: (!cands.per_row.is_empty()).then(|| gather(&cands.per_row)),
            offsets: self.dev.tensor_from_vec(Self::logit_offsets(batch.positives, cands), (b, c)),
            labels: self.dev.tensor_from_vec((0..b).collect::<Vec<usize>>(), (b,)),
            shared_ids,
        })
    }

    /// Forward and backward pass; leaves gradients in the tables and layers.
    fn forward_backward(&mut self, batch: &TrainBatch<'_>) -> Result<StepStats> {
        let d = self.params.dim;
        let p = self.prepare(batch)?;
        let layers: Vec<_> = self.layers.iter().map(|l| l.tensors(&self.dev)).collect();
        let traced = layers.iter().map(|(w, bias)| (w.leaky_trace(), bias.leaky_trace())).collect();
        let u = tower(p.x.leaky_trace(), traced);
        let r = p.r.as_ref().map(|r| r.leaky_trace());
        let loss = self.objective(u, p.v.leaky_trace(), r, p.offsets.clone(), p.labels.clone());
        let loss_value = loss.as_vec()[0];
        let grads = loss.backward();

        for (layer, (w, bias)) in self.layers.iter_mut().zip(&layers) {
            layer.weight_grad = grads.get(w).as_vec();
            layer.bias_grad = grads.get(bias).as_vec();
        }
        let gx = grads.get(&p.x).as_vec();
        for (r, g) in gx.chunks_exact(d).enumerate() {
            let items = batch.queries.histories.row(r);
            let scale = 1.0 / items.len().max(1) as f32;
            for &item in items {
                self.input.accumulate(item, g, scale);
            }
        }
        let gv = grads.get(&p.v).as_vec();
        let gr = p.r.as_ref().map(|r| grads.get(r).as_vec()).unwrap_or_default();
        let out = self.output.as_mut().unwrap_or(&mut self.input);
        let ids = p.shared_ids.iter().chain(&batch.candidates.per_row);
        for (&item, g) in ids.zip(gv.chunks_exact(d).chain(gr.chunks_exact(d))) {
            out.accumulate(item, g, 1.0);
        }
        let sq = |v: &[f32]| v.iter().map(|&g| g as f64 * g as f64).sum::<f64>();
        let layers: f64 = self.layers.iter().map(|l| sq(&l.weight_grad) + sq(&l.bias_grad)).sum();
        let tables = self.input.gradient_sq_norm() + self.output.as_ref().map_or(0.0, |t| t.gradient_sq_norm());
        Ok(StepStats { loss: loss_value, grad_norm: (layers + tables).sqrt() as f32 })
    }

    fn apply(&mut self) {
        self.adam.begin_step();
        for l in &mut self.layers {
            self.adam.update(&mut l.weight, &l.weight_grad, &mut l.weight_moments);
            self.adam.update(&mut l.bias, &l.bias_grad, &mut l.bias_moments);
        }
        self.input.apply(&self.adam, self.params.embedding_optimizer);
        if let Some(out) = &mut self.output {
            out.apply(&self.adam, self.params.embedding_optimizer);
        }
    }

    /// Loss of a batch without touching any state (gradient checks).
    #[cfg(test)]
    fn loss(&self, batch: &TrainBatch<'_>) -> f32 {
        let p = self.prepare(batch).unwrap();
        let layers = self.layers.iter().map(|l| l.tensors(&self.dev)).collect();
        self.objective(tower(p.x, layers), p.v, p.r, p.offsets, p.labels).as_vec()[0]
    }

    /// The configured loss of user vectors `u` against candidate vectors `v`;
    /// row `i`'s positive is column `labels[i]`.
    fn objective<T: Tape<f32, D> + Merge<T>>(
        &self,
        u: Mat<D, T>,
        v: Mat<D, T>,
        r: Option<Mat<D, T>>,
        offsets: Mat<D>,
        labels: Tensor<(usize,), usize, D>,
    ) -> Tensor<(), f32, D, T> {
        let normalize = |m: Mat<D, T>| if self.params.normalize { l2_normalize(m) } else { m };
        let (u, v) = (normalize(u), normalize(v));
        let (b, d) = *u.shape();
        let logits = match r {
            None => u.matmul(v.permute::<_, Axes2<1, 0>>()),
            Some(r) => {
                // Row i's own negatives: <u_i, r_ij> for j < k, as a [B, k] block.
                let k = r.shape().0 / b;
                let r = normalize(r).reshape_like(&(b, k, d));
                let own =
                    (u.retaped::<T>().broadcast_like::<_, Axis<1>>(&(b, k, d)) * r).sum::<(usize, usize), Axis<2>>();
                (u.matmul(v.permute::<_, Axes2<1, 0>>()), own).concat_along(Axis::<1>)
            }
        };
        let logits = logits * (1.0 / self.params.temperature) + offsets;
        match self.params.loss {
            Loss::Softmax => logits.log_softmax::<Axis<1>>().select(labels).mean().negate(),
            Loss::Bce => {
                // Masked candidates carry a -1e9 offset: target 0, loss and gradient 0.
                let (b, c) = *logits.shape();
                let mut targets = vec![0.0f32; b * c];
                for (row, &col) in labels.as_vec().iter().enumerate() {
                    targets[row * c + col] = 1.0;
                }
                let targets = self.dev.tensor_from_vec(targets, (b, c));
                logits.bce_with_logits(targets).sum::<(usize,), Axis<1>>().mean()
            }
        }
    }
}

/// Rows scaled to unit length (the epsilon keeps a zero row finite).
fn l2_normalize<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(x: Mat<D, T>) -> Mat<D, T> {
    let shape = *x.shape();
    let norms = (x.retaped::<T>().square().sum::<(usize,), Axis<1>>() + 1e-12).sqrt();
    x / norms.broadcast_like::<_, Axis<1>>(&shape)
}

/// The user tower: ReLU after every layer but the last, which projects to `dim`.
fn tower<D: Device<f32>, T: Tape<f32, D> + Merge<T>>(
    mut x: Mat<D, T>,
    layers: Vec<(Mat<D, T>, Vector<D, T>)>,
) -> Mat<D, T> {
    let n = layers.len();
    for (i, (w, bias)) in layers.into_iter().enumerate() {
        let shape = (x.shape().0, w.shape().1);
        let y = x.matmul(w) + bias.broadcast_like::<_, Axis<0>>(&shape);
        x = if i + 1 < n { y.relu() } else { y };
    }
    x
}

impl<D: Device<f32>> Model for YoutubeDnn<D> {
    fn dim(&self) -> usize {
        self.params.dim
    }

    fn parameter_count(&self) -> usize {
        let tables = self.input.weights.len() + self.output.as_ref().map_or(0, |t| t.weights.len());
        tables + self.layers.iter().map(|l| l.weight.len() + l.bias.len()).sum::<usize>()
    }

    fn compute_gradients(&mut self, batch: &TrainBatch<'_>) -> Result<StepStats> {
        self.forward_backward(batch)
    }

    fn apply_gradients(&mut self) {
        self.apply();
    }

    fn user_vectors(&self, queries: &Queries) -> Result<Matrix> {
        let histories = &queries.histories;
        let d = self.params.dim;
        let means = self.history_means(histories);
        let mut out = Vec::with_capacity(histories.len() * d);
        for chunk in means.chunks(INFERENCE_CHUNK * d) {
            let x = self.dev.tensor_from_vec(chunk.to_vec(), (chunk.len() / d, d));
            let layers = self.layers.iter().map(|l| l.tensors(&self.dev)).collect();
            let u = tower(x, layers);
            out.extend(if self.params.normalize { l2_normalize(u) } else { u }.as_vec());
        }
        Ok(Matrix::from_vec(histories.len(), d, out))
    }

    fn item_vectors(&self) -> Result<Matrix> {
        let t = self.output_table();
        let mut m = Matrix::from_vec(t.rows, t.dim, t.weights.clone());
        if self.params.normalize {
            for r in 0..m.rows {
                let row = m.row_mut(r);
                let norm = (row.iter().map(|x| x * x).sum::<f32>() + 1e-12).sqrt();
                row.iter_mut().for_each(|x| *x /= norm);
            }
        }
        Ok(m)
    }

    fn state(&self) -> ModelState {
        let mut s = ModelState::new();
        s.insert("input_embeddings".into(), self.input.weights.clone());
        if let Some(out) = &self.output {
            s.insert("output_embeddings".into(), out.weights.clone());
        }
        for (i, l) in self.layers.iter().enumerate() {
            s.insert(format!("layer{i}.weight"), l.weight.clone());
            s.insert(format!("layer{i}.bias"), l.bias.clone());
        }
        s
    }

    fn load_state(&mut self, state: &ModelState) -> Result<()> {
        fn put(dst: &mut [f32], state: &ModelState, name: &str) -> Result<()> {
            let src = state.get(name).with_context(|| format!("model state lacks `{name}`"))?;
            ensure!(src.len() == dst.len(), "model state `{name}` has {} values, expected {}", src.len(), dst.len());
            dst.copy_from_slice(src);
            Ok(())
        }
        put(&mut self.input.weights, state, "input_embeddings")?;
        if let Some(out) = &mut self.output {
            put(&mut out.weights, state, "output_embeddings")?;
        }
        for (i, l) in self.layers.iter_mut().enumerate() {
            put(&mut l.weight, state, &format!("layer{i}.weight"))?;
            put(&mut l.bias, state, &format!("layer{i}.bias"))?;
        }
        Ok(())
    }

    fn training_state(&self) -> TrainingState {
        let mut s = TrainingState { f32s: self.state(), ..Default::default() };
        let mut moments = |name: &str, m: &[f32], v: &[f32]| {
            s.f32s.insert(format!("{name}.adam_m"), m.to_vec());
            s.f32s.insert(format!("{name}.adam_v"), v.to_vec());
        };
        let (m, v) = self.input.moments();
        moments("input_embeddings", m, v);
        if let Some(out) = &self.output {
            let (m, v) = out.moments();
            moments("output_embeddings", m, v);
        }
        for (i, l) in self.layers.iter().enumerate() {
            moments(&format!("layer{i}.weight"), &l.weight_moments.m, &l.weight_moments.v);
            moments(&format!("layer{i}.bias"), &l.bias_moments.m, &l.bias_moments.v);
        }
        s.u64s.insert("adam.t".into(), vec![self.adam.t]);
        s
    }

    fn load_training_state(&mut self, state: &TrainingState) -> Result<()> {
        self.load_state(&state.f32s)?;
        let put = |dst: &mut Vec<f32>, name: String| -> Result<()> {
            let len = dst.len();
            dst.copy_from_slice(TrainingState::take(&state.f32s, &name, len)?);
            Ok(())
        };
        let (m, v) = self.input.moments_mut();
        put(m, "input_embeddings.adam_m".into())?;
        put(v, "input_embeddings.adam_v".into())?;
        if let Some(out) = &mut self.output {
            let (m, v) = out.moments_mut();
            put(m, "output_embeddings.adam_m".into())?;
            put(v, "output_embeddings.adam_v".into())?;
        }
        for (i, l) in self.layers.iter_mut().enumerate() {
            put(&mut l.weight_moments.m, format!("layer{i}.weight.adam_m"))?;
            put(&mut l.weight_moments.v, format!("layer{i}.weight.adam_v"))?;
            put(&mut l.bias_moments.m, format!("layer{i}.bias.adam_m"))?;
            put(&mut l.bias_moments.v, format!("layer{i}.bias.adam_v"))?;
        }
        self.adam.t = TrainingState::take(&state.u64s, "adam.t", 1)?[0];
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EmbeddingOptimizer;
    use dfdx::tensor::Cpu;

    fn tiny(share_embeddings: bool, temperature: f32) -> YoutubeDnn<Cpu> {
        tiny_with(share_embeddings, temperature, Loss::Softmax, false)
    }

    fn tiny_with(share_embeddings: bool, temperature: f32, loss: Loss, normalize: bool) -> YoutubeDnn<Cpu> {
        let params = YoutubeDnnParams {
            dim: 3,
            hidden: vec![4],
            share_embeddings,
            init_std: 0.5,
            temperature,
            normalize,
            loss,
            embedding_optimizer: EmbeddingOptimizer::Adam,
        };
        let cx = BuildCx { seed: 3, n_items: 7, learning_rate: 0.01, device: "cpu".into(), ..Default::default() };
        YoutubeDnn::new(Cpu::default(), params, &cx)
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
    fn coordinates(m: &YoutubeDnn<Cpu>) -> Vec<(String, usize)> {
        m.state().into_iter().flat_map(|(k, v)| (0..v.len()).map(move |i| (k.clone(), i))).collect()
    }

    fn analytic(m: &YoutubeDnn<Cpu>, name: &str, i: usize) -> f32 {
        match name {
            "input_embeddings" => m.input.gradient()[i],
            "output_embeddings" => m.output.as_ref().unwrap().gradient()[i],
            _ => {
                let (layer, what) = name.trim_start_matches("layer").split_once('.').unwrap();
                let l = &m.layers[layer.parse::<usize>().unwrap()];
                if what == "weight" {
                    l.weight_grad[i]
                } else {
                    l.bias_grad[i]
                }
            }
        }
    }

    fn check_gradients(m: YoutubeDnn<Cpu>, in_batch: bool) {
        check_gradients_of(m, candidates(&[6, 4, 1], in_batch, 2));
    }

    fn check_gradients_of(mut m: YoutubeDnn<Cpu>, cands: Candidates) {
        // Row 1's history is empty; negative 4 is row 0's positive (an
        // accidental hit, masked); positives 4 and 5 differ.
        let in_batch = cands.in_batch;
        let h = histories(&[&[0, 1, 2], &[]]);
        let positives = [4, 5];
        let batch = TrainBatch { queries: &h, positives: &positives, candidates: &cands };
        m.forward_backward(&batch).unwrap();
        let eps = 1e-2f32;
        for (name, i) in coordinates(&m) {
            let base = m.state();
            let loss_at = |delta: f32, m: &mut YoutubeDnn<Cpu>| {
                let mut s = base.clone();
                s.get_mut(&name).unwrap()[i] += delta;
                m.load_state(&s).unwrap();
                m.loss(&batch)
            };
            let numeric = (loss_at(eps, &mut m) - loss_at(-eps, &mut m)) / (2.0 * eps);
            m.load_state(&base).unwrap();
            let a = analytic(&m, &name, i);
            assert!(
                (a - numeric).abs() <= 2e-3 + 2e-2 * numeric.abs(),
                "{name}[{i}]: analytic {a} vs numeric {numeric} (in_batch = {in_batch})"
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
    fn per_row_offsets_mask_each_rows_own_accidental_hits() {
        let mut c = candidates(&[], false, 2);
        c.log_q_correction = false;
        c.per_row = vec![6, 4, 5, 0];
        c.per_row_log_q = vec![-1.0; 4];
        let off = YoutubeDnn::<Cpu>::logit_offsets(&[4, 5], &c);
        assert_eq!(off, vec![0.0, MASKED, 0.0, MASKED, MASKED, 0.0, MASKED, 0.0]);
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
        let batch = TrainBatch { queries: &h, positives: &[6], candidates: &cands };
        let u = m.user_vectors(&h).unwrap();
        let items = m.item_vectors().unwrap();
        let s: Vec<f32> = [6, 2, 3].iter().map(|&i| funnel_api::dot(u.row(0), items.row(i))).collect();
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
            assert!((funnel_api::dot(r, r) - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn gradients_match_finite_differences_with_shared_tables() {
        check_gradients(tiny(true, 1.0), false);
        check_gradients(tiny(true, 1.0), true);
    }

    #[test]
    fn logit_offsets_mask_accidental_hits_and_subtract_log_q() {
        // Two rows with positives 4 and 4 (a duplicate), shared negatives [4, 1].
        let mut c = candidates(&[4, 1], false, 2);
        c.shared_log_q = vec![-1.0, -3.0];
        c.positive_log_q = vec![-2.0, -2.5];
        let off = YoutubeDnn::<Cpu>::logit_offsets(&[4, 4], &c);
        // Without in-batch negatives the other row's positive is masked.
        assert_eq!(off, vec![2.0, MASKED, MASKED, 3.0, MASKED, 2.5, MASKED, 3.0]);
        c.in_batch = true;
        let off = YoutubeDnn::<Cpu>::logit_offsets(&[4, 4], &c);
        // In-batch, the duplicate positive is still an accidental hit.
        assert_eq!(off, vec![2.0, MASKED, MASKED, 3.0, MASKED, 2.5, MASKED, 3.0]);
        let off = YoutubeDnn::<Cpu>::logit_offsets(&[4, 5], &c);
        assert_eq!(off, vec![2.0, 2.5, MASKED, 3.0, 2.0, 2.5, 1.0, 3.0]);
    }

    #[test]
    fn loss_equals_the_hand_computed_sampled_softmax() {
        // With every logit offset equal (no correction), the loss of a row is
        // logsumexp(logits) - logit(positive); recompute it on the host.
        let m = tiny(false, 1.0);
        let h = histories(&[&[0, 1]]);
        let mut cands = candidates(&[2, 3], false, 1);
        cands.log_q_correction = false;
        let batch = TrainBatch { queries: &h, positives: &[6], candidates: &cands };
        let u = m.user_vectors(&h).unwrap();
        let items = m.item_vectors().unwrap();
        let logits: Vec<f32> = [6, 2, 3].iter().map(|&i| funnel_api::dot(u.row(0), items.row(i))).collect();
        let lse = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
        assert!((m.loss(&batch) - (lse - logits[0])).abs() < 1e-5);
    }

    #[test]
    fn training_lowers_the_loss_of_a_repeated_batch() {
        let mut m = tiny(false, 1.0);
        let h = histories(&[&[0, 1], &[2]]);
        let cands = candidates(&[3, 6], false, 2);
        let batch = TrainBatch { queries: &h, positives: &[4, 5], candidates: &cands };
        let first = m.loss(&batch);
        for _ in 0..200 {
            m.train_step(&batch).unwrap();
        }
        assert!(m.loss(&batch) < first * 0.2, "{} -> {}", first, m.loss(&batch));
    }

    #[test]
    fn training_state_restores_identical_training() {
        // Train a, snapshot, train both a and a restored copy: same weights.
        let h = histories(&[&[0, 1], &[2]]);
        let cands = candidates(&[3, 6], false, 2);
        let batch = TrainBatch { queries: &h, positives: &[4, 5], candidates: &cands };
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
        other.layers[0].weight[0] += 1.0;
        other.load_state(&m.state()).unwrap();
        assert_eq!(other.state(), m.state());
        let mut missing = m.state();
        missing.remove("layer1.bias");
        assert!(other.load_state(&missing).unwrap_err().to_string().contains("layer1.bias"));
    }
}
