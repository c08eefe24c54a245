//! The training loop: shuffled mini-batches, the sampler's candidates, one
//! model step each, validation after every epoch, best epoch kept.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use funnel_api::{
    Candidates, EvalCase, Evaluation, Evaluator, Example, ExampleSet, ItemIdx, Metrics, Model, ModelState, Queries,
    Sampler, Targets, Tracker, TrainBatch, WindowCuts, WindowQuery, Windows,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::checkpoint::{self, Checkpoint};
use crate::experiment::TrainConfig;
use crate::outcomes::{ExplicitNegatives, OutcomePlan};
use crate::run_folder::EpochRecord;
use crate::stages::StageClock;

/// The outcome of training: the per-epoch history and the best epoch's state.
pub struct Trained {
    pub epochs: Vec<EpochRecord>,
    /// 1-based epoch whose validation selection metric was highest.
    pub best_epoch: usize,
    pub best_state: ModelState,
}

/// What training needs: the components it drives, the data, and where
/// checkpoints go.
pub struct Trainer<'a> {
    pub model: &'a mut dyn Model,
    pub sampler: &'a mut dyn Sampler,
    pub evaluator: &'a dyn Evaluator,
    pub examples: &'a ExampleSet,
    pub cfg: &'a TrainConfig,
    pub seed: u64,
    /// Written after every `cfg.checkpoint_every` epochs.
    pub checkpoint: &'a Path,
    /// Fingerprint of the resolved configuration, stored in checkpoints.
    pub config_hash: &'a str,
    /// Items in the catalog: every sampled candidate must be one.
    pub n_items: usize,
    /// The outcomes trained, with their weights, and the one selecting.
    pub plan: &'a OutcomePlan,
}

impl Trainer<'_> {
    /// Trains for `cfg.epochs`, logging each epoch to `tracker` and timing
    /// each epoch's training and validation as stages; continues after
    /// `resume`'s epoch when given.
    pub fn train(
        self,
        resume: Option<Checkpoint>,
        tracker: &mut dyn Tracker,
        clock: &mut StageClock,
    ) -> Result<Trained> {
        let Trainer { model, sampler, evaluator, examples, cfg, seed, checkpoint: path, config_hash, n_items, plan } =
            self;
        let ctx = Run { examples, cfg, seed, checkpoint_path: path, config_hash, n_items, plan };
        train(model, sampler, evaluator, tracker, &ctx, resume, clock)
    }
}

/// What a training run reads besides the components it drives.
struct Run<'a> {
    examples: &'a ExampleSet,
    cfg: &'a TrainConfig,
    seed: u64,
    checkpoint_path: &'a Path,
    config_hash: &'a str,
    n_items: usize,
    plan: &'a OutcomePlan,
}

fn train(
    model: &mut dyn Model,
    sampler: &mut dyn Sampler,
    evaluator: &dyn Evaluator,
    tracker: &mut dyn Tracker,
    ctx: &Run<'_>,
    resume: Option<Checkpoint>,
    clock: &mut StageClock,
) -> Result<Trained> {
    let Run { examples, cfg, seed, checkpoint_path, config_hash, n_items, plan } = *ctx;
    let selection = plan.selection_key(evaluator.selection_metric());
    let mut records = Vec::new();
    let mut best: Option<(usize, f64, ModelState)> = None;
    let mut first_epoch = 1;
    if let Some(c) = resume {
        model.load_training_state(&c.model).context("restoring the model from the checkpoint")?;
        sampler.load_training_state(&c.sampler).context("restoring the sampler from the checkpoint")?;
        first_epoch = c.epoch + 1;
        records = c.records;
        best = Some((c.best_epoch, c.best_score, c.best_state));
        eprintln!("resuming after epoch {}", c.epoch);
    }
    check_windows(cfg, examples.max_history)?;
    let units = TrainingUnits::new(examples, cfg, seed, plan);
    let mut explicit = ExplicitNegatives::new(cfg, examples);
    if let Some(e) = &explicit {
        eprintln!(
            "negative feedback: {} disliked items known by the users' last training targets, up to {} per query",
            e.total(),
            cfg.negative_feedback_per_query
        );
    }
    if units.targets == 0 {
        bail!(
            "[train] targets = \"{}\": no training example has a history to predict it from",
            match cfg.targets {
                Targets::Last => "last",
                Targets::AllPositions => "all_positions",
            }
        );
    }
    // Random cuts change an epoch's windows, and so its steps; the schedule
    // counts every epoch's, known up front from the seed.
    let batches: Vec<usize> =
        (1..=cfg.epochs).map(|epoch| units.for_epoch(epoch).len().div_ceil(cfg.batch_size)).collect();
    let total_steps: usize = batches.iter().sum();
    if cfg.lr_varies() {
        model.set_learning_rate(cfg.lr_at(0, total_steps))?;
    }
    let validation = validation_sample(&examples.validation, evaluator.validation_cases(), seed);
    if validation.len() < examples.validation.len() {
        eprintln!(
            "validation: a seeded sample of {} of {} users each epoch",
            validation.len(),
            examples.validation.len()
        );
    }

    for epoch in first_epoch..=cfg.epochs {
        // Each epoch's randomness derives from the seed and the epoch alone,
        // so a run resumed from a checkpoint draws exactly what it would have.
        let mut rng = StdRng::seed_from_u64(seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut order: Vec<(Example, u32)> = units.for_epoch(epoch).into_owned();
        order.shuffle(&mut rng);
        let (n_batches, steps_before) = (batches[epoch - 1], batches[..epoch - 1].iter().sum::<usize>());
        let (epoch_sampler, rng) = (&mut *sampler, &mut rng);
        let started = Instant::now();
        let mut bar = progress(n_batches, &format!("epoch {epoch}/{}", cfg.epochs));
        let loss_sum = {
            // Batches are built (histories copied, candidates sampled) one
            // step ahead of the model, as a job on the thread pool beside the
            // step: a pool thread takes it while the step's own work keeps this
            // thread busy (a builder thread of its own, woken each step, took
            // the core from the step). Two buffers take turns, so the steady
            // state allocates nothing. The sampler draws from the epoch's RNG
            // in batch order, as it would inline.
            let mut bufs = [(); 2].map(|_| BatchBuffers::new(examples.max_history, cfg.batch_size));
            let (mut chunks, explicit, units) = (order.chunks(cfg.batch_size), &mut explicit, &units);
            let mut build = move |buf: &mut BatchBuffers, chunk: &[(Example, u32)]| {
                buf.fill(examples, units, chunk, epoch_sampler, rng);
                if let Some(e) = explicit.as_mut() {
                    e.append(&mut buf.candidates, &buf.positives, &buf.queries.users, rng);
                }
            };
            if let Some(chunk) = chunks.next() {
                build(&mut bufs[0], chunk);
            }
            let mut steps = || -> Result<f64> {
                let mut loss_sum = 0.0f64;
                for step in 0..n_batches {
                    let [a, b] = &mut bufs;
                    let (buf, next) = if step % 2 == 0 { (a, b) } else { (b, a) };
                    let next_chunk = chunks.next();
                    let build = &mut build;
                    let mut step_result = None;
                    let mut one_step = || -> Result<_> {
                        buf.candidates
                            .check(buf.positives.len(), n_items)
                            .with_context(|| format!("[sampler] at epoch {epoch}, step {}", step + 1))?;
                        let stats = model
                            .compute_gradients(&buf.batch())
                            .with_context(|| format!("epoch {epoch}, step {}", step + 1))?;
                        if !stats.loss.is_finite()
                            || !stats.grad_norm.is_finite()
                            || stats.grad_norm as f64 > cfg.max_grad_norm
                        {
                            bail!(
                                "training diverged at epoch {epoch}, step {}: loss {}, gradient norm {} \
                             (train.max_grad_norm = {}); the step was not applied and the last checkpoint is kept",
                                step + 1,
                                stats.loss,
                                stats.grad_norm,
                                cfg.max_grad_norm
                            );
                        }
                        if cfg.lr_varies() {
                            // The step size follows from the global step alone, so resumes repeat it.
                            model.set_learning_rate(cfg.lr_at(steps_before + step, total_steps))?;
                        }
                        model.apply_gradients();
                        Ok(stats)
                    };
                    funnel_kernels::par::beside(
                        || step_result = Some(one_step()),
                        || {
                            if let Some(chunk) = next_chunk {
                                build(next, chunk);
                            }
                        },
                    );
                    let stats = step_result.expect("beside ran the step")?;
                    loss_sum += stats.loss as f64 * buf.positives.len() as f64;
                    if let Some(bar) = bar.as_mut() {
                        kdam::BarExt::update(bar, 1).ok();
                    }
                }
                Ok(loss_sum)
            };
            // A step forks and joins on the pool several times, so the pool's
            // other threads poll through the steps instead of sleeping between
            // forks (kernels' `par::awake`). Not for windows: a model may encode
            // them on threads of its own (the built-in one does, in two parts),
            // and a polling thread would take a core from those.
            if cfg.targets == Targets::Last {
                funnel_kernels::par::awake(steps)
            } else {
                steps()
            }
        }?;
        model.finish_steps().with_context(|| format!("after the steps of epoch {epoch}"))?;
        if let Some(bar) = bar.as_mut() {
            kdam::BarExt::refresh(bar).ok();
            eprintln!();
        }
        let train_seconds = started.elapsed().as_secs_f64();
        clock.record(&format!("epoch {epoch}"), train_seconds);
        let validated = Instant::now();
        let validation = clock
            .time(&format!("validation {epoch}"), || -> Result<Metrics> {
                let mut m = evaluate(model, evaluator, examples, &validation)?.metrics;
                m.extend(plan.evaluate(model, evaluator, examples, &validation)?);
                Ok(m)
            })
            .with_context(|| format!("validation after epoch {epoch}"))?;
        let record = EpochRecord {
            epoch,
            loss: loss_sum / units.targets as f64,
            train_seconds,
            examples_per_second: units.targets as f64 / train_seconds.max(1e-9),
            validation_seconds: validated.elapsed().as_secs_f64(),
            validation,
        };
        let score =
            *record.validation.get(&selection).with_context(|| format!("the evaluation produced no `{selection}`"))?;
        eprintln!(
            "epoch {epoch}/{}: loss {:.4}, {:.0} examples/s, validation {selection} {score:.4}",
            cfg.epochs, record.loss, record.examples_per_second
        );
        let mut logged = epoch_metrics(&record);
        if cfg.lr_varies() {
            logged.insert("epoch/lr".into(), cfg.lr_at(steps_before + n_batches - 1, total_steps));
        }
        tracker.log_metrics(epoch as u64, &logged)?;
        if best.as_ref().is_none_or(|(_, s, _)| score > *s) {
            best = Some((epoch, score, model.state()));
        }
        records.push(record);
        if cfg.checkpoint_every > 0 && (epoch % cfg.checkpoint_every == 0 || epoch == cfg.epochs) {
            let (best_epoch, best_score, best_state) = best.clone().expect("set above");
            let c = Checkpoint {
                config_hash: config_hash.to_string(),
                epoch,
                records: records.clone(),
                best_epoch,
                best_score,
                best_state,
                model: model.training_state(),
                sampler: sampler.training_state(),
            };
            checkpoint::write(checkpoint_path, &c).with_context(|| format!("checkpoint after epoch {epoch}"))?;
        }
    }
    let (best_epoch, _, best_state) = best.expect("at least one epoch runs");
    Ok(Trained { epochs: records, best_epoch, best_state })
}

/// What an epoch shuffles and batches: the training examples themselves
/// (`targets = "last"`), or the ends of sequence windows whose every position
/// is a target (`"all_positions"`).
struct TrainingUnits<'p> {
    mode: Targets,
    /// With `targets = "last"`, each example once per trained outcome its
    /// target meets (the outcome beside it); otherwise windows' ends, each
    /// beside the last position that is context only (its targets after it
    /// are trained).
    units: Vec<(Example, u32)>,
    plan: &'p OutcomePlan,
    /// Training positions of each user, ascending (all positions only).
    trained: Vec<Vec<u32>>,
    /// Targets an epoch trains: the examples/s and loss of an epoch count these.
    targets: usize,
    cuts: Cuts,
}

impl<'p> TrainingUnits<'p> {
    fn new(examples: &ExampleSet, cfg: &TrainConfig, seed: u64, plan: &'p OutcomePlan) -> TrainingUnits<'p> {
        let mode = cfg.targets;
        match mode {
            Targets::Last => {
                let units: Vec<(Example, u32)> = examples
                    .train
                    .iter()
                    .flat_map(|&ex| plan.trained(examples, ex).map(move |(o, _)| (ex, o)))
                    .collect();
                let cuts = Cuts { max_history: 0, overlap: 0, random: None };
                TrainingUnits { mode, targets: units.len(), units, plan, trained: Vec::new(), cuts }
            }
            Targets::AllPositions => {
                let mut trained = vec![Vec::new(); examples.sequences.len()];
                for &ex in &examples.train {
                    if plan.trained(examples, ex).next().is_some() {
                        trained[ex.user as usize].push(ex.position + ex.ahead);
                    }
                }
                let mut targets = 0;
                for (user, positions) in trained.iter_mut().enumerate() {
                    positions.sort_unstable();
                    positions.dedup();
                    targets += positions
                        .iter()
                        .filter(|&&p| p > 0)
                        .map(|&p| plan.trained(examples, Example { user: user as u32, position: p, ahead: 0 }).count())
                        .sum::<usize>();
                }
                let random = (cfg.window_cuts == WindowCuts::Random).then_some(seed);
                let cuts = Cuts { max_history: examples.max_history, overlap: cfg.window_overlap, random };
                let units = cuts.windows(&trained, None);
                TrainingUnits { mode, units, plan, trained, targets, cuts }
            }
        }
    }

    /// What epoch `epoch` (1-based) shuffles: the same units every epoch,
    /// or with `window_cuts = "random"` that epoch's windows.
    fn for_epoch(&self, epoch: usize) -> Cow<'_, [(Example, u32)]> {
        match self.cuts.random {
            Some(seed) if self.mode == Targets::AllPositions => {
                Cow::Owned(self.cuts.windows(&self.trained, Some((seed, epoch))))
            }
            _ => Cow::Borrowed(&self.units),
        }
    }
}

/// How a user's training positions are cut into windows.
struct Cuts {
    max_history: usize,
    overlap: usize,
    /// With random cuts: the run's seed, from which each epoch's shifts derive.
    random: Option<u64>,
}

impl Cuts {
    /// Windows' ends, each beside the last position that is context only,
    /// sorted by user and end. With `shifted`'s seed and epoch, each user's
    /// most recent window trains only its last `max_history - s` positions
    /// (`s` drawn from 0 to `max_history - 1`), moving every cut before it.
    fn windows(&self, trained: &[Vec<u32>], shifted: Option<(u64, usize)>) -> Vec<(Example, u32)> {
        let mut rng = shifted.map(|(seed, epoch)| {
            StdRng::seed_from_u64(seed ^ 0x6375_7473 ^ (epoch as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9))
        });
        let mut units = Vec::new();
        for (user, positions) in trained.iter().enumerate() {
            let shift = rng.as_mut().map_or(0, |r| r.gen_range(0..self.max_history.max(1)));
            // From the most recent back: a window ending at `end` covers the
            // targets after its first item (after its first `overlap + 1`
            // items unless it starts the sequence), so the next window ends
            // at that item or before it.
            let mut next = positions.len();
            let mut first = true;
            while next > 0 {
                let end = positions[next - 1];
                let start = window_start(end, self.max_history);
                let mut context = if start > 0 { (start + self.overlap as u32).min(end - 1) } else { 0 };
                if std::mem::take(&mut first) && shift > 0 {
                    context = context.max(end.saturating_sub((self.max_history - shift) as u32));
                }
                let covered = positions[..next].partition_point(|&p| p <= context);
                if end > start {
                    units.push((Example { user: user as u32, position: end, ahead: 0 }, context));
                }
                next = covered.min(next - 1);
            }
        }
        units.sort_unstable_by_key(|(e, _)| (e.user, e.position));
        units
    }
}

/// `[train] window_overlap` against the history length (known once the
/// features are built): a window must train at least one target.
pub fn check_windows(cfg: &TrainConfig, max_history: usize) -> Result<()> {
    if cfg.window_overlap > 0 && cfg.window_overlap >= max_history {
        bail!(
            "[train] window_overlap = {}: must be below [features] max_history ({max_history}), the items a \
             window holds, so that each window trains at least one target",
            cfg.window_overlap
        );
    }
    Ok(())
}

/// First position of the window that ends with the target at `end`.
fn window_start(end: u32, max_history: usize) -> u32 {
    end.saturating_sub(max_history.min(u32::MAX as usize) as u32)
}

/// One batch's inputs, refilled in place batch after batch.
struct BatchBuffers {
    queries: Queries,
    positives: Vec<ItemIdx>,
    candidates: Candidates,
    windows: Option<Windows>,
    /// Each row's outcome weight; empty when every weight is 1.
    weights: Vec<f32>,
}

impl BatchBuffers {
    fn new(max_history: usize, batch_size: usize) -> BatchBuffers {
        BatchBuffers {
            queries: Queries::new(max_history),
            positives: Vec::with_capacity(batch_size),
            candidates: Candidates::default(),
            windows: None,
            weights: Vec::new(),
        }
    }

    fn fill(
        &mut self,
        examples: &ExampleSet,
        units: &TrainingUnits<'_>,
        chunk: &[(Example, u32)],
        sampler: &mut dyn Sampler,
        rng: &mut StdRng,
    ) {
        self.queries.clear();
        self.positives.clear();
        self.weights.clear();
        let plan = units.plan;
        let weighted = !plan.unweighted();
        match units.mode {
            Targets::Last => {
                self.windows = None;
                for &(ex, outcome) in chunk {
                    examples.push_training_query(&mut self.queries, ex, outcome);
                    self.positives.push(examples.target(ex));
                    if weighted {
                        self.weights.push(plan.weights[outcome as usize]);
                    }
                }
            }
            Targets::AllPositions => {
                let windows = self.windows.get_or_insert_with(|| Windows::new(examples.max_history));
                windows.clear();
                for (row, &(ex, context)) in chunk.iter().enumerate() {
                    let seq = &examples.sequences[ex.user as usize];
                    let (start, end) = (window_start(ex.position, examples.max_history) as usize, ex.position as usize);
                    windows.histories.push(&seq[start..end]);
                    let trained = &units.trained[ex.user as usize];
                    for t in (start.max(context as usize)) + 1..=end {
                        if trained.binary_search(&(t as u32)).is_err() {
                            continue;
                        }
                        let age = examples.ages.get(ex.user as usize).map_or(0.0, |a| a[t]);
                        let at = Example { user: ex.user, position: t as u32, ahead: 0 };
                        for (outcome, weight) in plan.trained(examples, at) {
                            self.queries.push_asking(&seq[start..t], ex.user, age, outcome);
                            self.positives.push(seq[t]);
                            windows.queries.push(WindowQuery { row: row as u32, prefix: (t - start) as u32 });
                            if weighted {
                                self.weights.push(weight);
                            }
                        }
                    }
                }
            }
        }
        self.candidates.clear();
        sampler.sample(&self.positives, rng, &mut self.candidates);
    }

    fn batch(&self) -> TrainBatch<'_> {
        TrainBatch {
            queries: &self.queries,
            positives: &self.positives,
            candidates: &self.candidates,
            windows: self.windows.as_ref(),
            weights: &self.weights,
        }
    }
}

/// The validation cases each epoch ranks: all of them, or `n` drawn without
/// replacement with a generator seeded by the run's seed alone (the same
/// cases every epoch and after a resume), kept in their original order.
pub fn validation_sample(cases: &[Example], n: Option<usize>, seed: u64) -> Vec<Example> {
    match n {
        Some(n) if n < cases.len() => {
            let mut rng = StdRng::seed_from_u64(seed ^ 0x7661_6c69_6461_7465);
            let mut picked = rand::seq::index::sample(&mut rng, cases.len(), n).into_vec();
            picked.sort_unstable();
            picked.into_iter().map(|i| cases[i]).collect()
        }
        _ => cases.to_vec(),
    }
}

/// Ranks each case's target against the full catalog.
pub fn evaluate(
    model: &dyn Model,
    evaluator: &dyn Evaluator,
    examples: &ExampleSet,
    cases: &[Example],
) -> Result<Evaluation> {
    let users = model.user_vectors(&examples.serving_queries(cases))?;
    let items = model.item_vectors()?;
    let eval_cases: Vec<EvalCase<'_>> =
        cases.iter().map(|&ex| EvalCase { seen: examples.seen(ex), target: examples.target(ex) }).collect();
    evaluator.evaluate(&users, &items, &eval_cases)
}

/// Per-epoch values under `epoch/`: MLflow's chart view orders its sections
/// by the key's path, so the curves open it ahead of the one-point results
/// (`serving/`, `test/`, `validation_at_best/`).
fn epoch_metrics(r: &EpochRecord) -> Metrics {
    let mut m = Metrics::new();
    m.insert("epoch/loss".into(), r.loss);
    m.insert("epoch/examples_per_second".into(), r.examples_per_second);
    m.insert("epoch/seconds".into(), r.train_seconds);
    for (k, v) in &r.validation {
        m.insert(format!("epoch/validation/{k}"), *v);
    }
    m
}

/// A progress bar on a terminal; `None` elsewhere (CI logs get one line per
/// epoch instead of redraws).
fn progress(total: usize, desc: &str) -> Option<kdam::Bar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    kdam::Bar::builder().total(total).desc(desc).unit(" steps").build().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_sample_is_seeded_ordered_and_fixed() {
        let cases: Vec<Example> = (0..100).map(|u| Example { user: u, position: 3, ahead: 0 }).collect();
        assert_eq!(validation_sample(&cases, None, 1), cases);
        assert_eq!(validation_sample(&cases, Some(500), 1), cases);
        let a = validation_sample(&cases, Some(10), 1);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0].user < w[1].user), "kept in the original order");
        assert_eq!(a, validation_sample(&cases, Some(10), 1), "same seed, same users");
        assert_ne!(a, validation_sample(&cases, Some(10), 2), "another seed, other users");
    }

    /// Covered targets of the windows of `units`: (user, position), with
    /// each query's history as its window's prefix.
    struct Nothing;
    impl Sampler for Nothing {
        fn fit(&mut self, _: &[u64], _: &ExampleSet) -> Result<()> {
            Ok(())
        }
        fn sample(&mut self, _: &[ItemIdx], _: &mut StdRng, _: &mut Candidates) {}
        fn item_probabilities(&self) -> Vec<f64> {
            Vec::new()
        }
    }

    #[test]
    fn each_trained_outcome_of_a_target_is_a_query_with_its_weight() {
        // Targets at positions 1 (liked and loved), 2 (liked), 3 (loved).
        let set = ExampleSet {
            sequences: vec![vec![0, 1, 2, 3]],
            max_history: 3,
            train: (1..4).map(|position| Example { user: 0, position, ahead: 0 }).collect(),
            outcomes: vec!["liked".into(), "loved".into()],
            target_outcomes: vec![vec![1, 3, 1, 2]],
            ..Default::default()
        };
        let cfg = TrainConfig {
            outcomes: [("liked".to_string(), 1.0), ("loved".to_string(), 2.0)].into(),
            ..TrainConfig::default()
        };
        let plan = OutcomePlan::new(&cfg, &set).unwrap();
        let mut rng = StdRng::seed_from_u64(0);
        for mode in [Targets::Last, Targets::AllPositions] {
            let units = units_of(&set, mode, 0, &plan);
            assert_eq!(units.targets, 4, "{mode:?}");
            let mut buf = BatchBuffers::new(3, 8);
            buf.fill(&set, &units, &units.units, &mut Nothing, &mut rng);
            let mut got: Vec<(ItemIdx, u32, f32, usize)> = (0..buf.positives.len())
                .map(|k| {
                    (
                        buf.positives[k],
                        buf.queries.outcomes[k],
                        buf.weights[k],
                        buf.queries.histories.lengths[k] as usize,
                    )
                })
                .collect();
            got.sort_by(|a, b| a.partial_cmp(b).unwrap());
            assert_eq!(got, [(1, 0, 1.0, 1), (1, 1, 2.0, 1), (2, 0, 1.0, 2), (3, 1, 2.0, 3)], "{mode:?}");
        }
        // Only loved trained: one query, no weights needed.
        let loved = TrainConfig { outcomes: [("loved".to_string(), 1.0)].into(), ..TrainConfig::default() };
        let plan = OutcomePlan::new(&loved, &set).unwrap();
        let units = units_of(&set, Targets::Last, 0, &plan);
        let mut buf = BatchBuffers::new(3, 8);
        buf.fill(&set, &units, &units.units, &mut Nothing, &mut rng);
        assert_eq!((buf.positives.clone(), buf.weights.is_empty()), (vec![1, 3], true));
    }

    fn units_of<'p>(set: &ExampleSet, targets: Targets, overlap: usize, plan: &'p OutcomePlan) -> TrainingUnits<'p> {
        let cfg = TrainConfig { targets, window_overlap: overlap, ..TrainConfig::default() };
        TrainingUnits::new(set, &cfg, 0, plan)
    }

    fn window_targets(set: &ExampleSet, units: &TrainingUnits<'_>) -> Vec<(u32, u32, Vec<ItemIdx>)> {
        cut_targets(set, units, &units.units)
    }

    /// Each (user, target position, history) the windows `list` train.
    fn cut_targets(
        set: &ExampleSet,
        units: &TrainingUnits<'_>,
        list: &[(Example, u32)],
    ) -> Vec<(u32, u32, Vec<ItemIdx>)> {
        let mut buf = BatchBuffers::new(set.max_history, 2);
        let mut out = Vec::new();
        let mut rng = StdRng::seed_from_u64(0);
        for chunk in list.chunks(2) {
            buf.fill(set, units, chunk, &mut Nothing, &mut rng);
            let w = buf.windows.as_ref().expect("all positions fill windows");
            assert_eq!(w.queries.len(), buf.positives.len());
            for (k, wq) in w.queries.iter().enumerate() {
                let ex = chunk[wq.row as usize].0;
                let window = w.histories.row(wq.row as usize);
                let history = buf.queries.histories.row(k).to_vec();
                assert_eq!(history, window[..wq.prefix as usize], "a query reads its window's prefix");
                let start = ex.position as usize - window.len();
                let position = (start + wq.prefix as usize) as u32;
                assert_eq!(buf.positives[k], set.sequences[ex.user as usize][position as usize]);
                out.push((ex.user, position, history));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn windows_cover_every_training_target_once() {
        // User 0: positions 1..=9 trained (10 and 11 held out); user 1: 1..=2,
        // with position 3 trained but 2 not (a hole a window steps over).
        let set = ExampleSet {
            sequences: vec![(0..12).collect(), vec![20, 21, 22, 23, 24]],
            max_history: 4,
            train: (1..10)
                .map(|position| Example { user: 0, position, ahead: 0 })
                .chain([1, 3].map(|position| Example { user: 1, position, ahead: 0 }))
                .collect(),
            ..Default::default()
        };
        let plan = OutcomePlan::new(&TrainConfig::default(), &set).unwrap();
        let units = units_of(&set, Targets::AllPositions, 0, &plan);
        // Windows of user 0 end at 9 (items 5..=9), 5 (1..=5), 1 (0..=1).
        assert_eq!(
            units.units.iter().map(|(e, _)| (e.user, e.position)).collect::<Vec<_>>(),
            [(0, 1), (0, 5), (0, 9), (1, 3)]
        );
        assert_eq!(units.targets, 11);
        let covered = window_targets(&set, &units);
        let positions: Vec<(u32, u32)> = covered.iter().map(|(u, p, _)| (*u, *p)).collect();
        let expected: Vec<(u32, u32)> = set.train.iter().map(|e| (e.user, e.position)).collect();
        assert_eq!(positions, expected, "every training target once, nothing held out");
        // A history is the window's items before the target, at most max_history.
        assert!(covered.iter().all(|(_, _, h)| !h.is_empty() && h.len() <= 4));
        assert!(covered.contains(&(0, 9, vec![5, 6, 7, 8])));
        assert!(covered.contains(&(0, 2, vec![1])), "the window 1..=5 starts at item 1");

        let last = units_of(&set, Targets::Last, 0, &plan);
        assert_eq!((last.units.len(), last.targets), (11, 11));
    }

    #[test]
    fn overlapping_windows_give_every_later_target_the_overlap_as_context() {
        // User 0: positions 1..=11 trained; windows of 4 items sharing 2.
        let set = ExampleSet {
            sequences: vec![(0..12).collect()],
            max_history: 4,
            train: (1..12).map(|position| Example { user: 0, position, ahead: 0 }).collect(),
            ..Default::default()
        };
        let plan = OutcomePlan::new(&TrainConfig::default(), &set).unwrap();
        let units = units_of(&set, Targets::AllPositions, 2, &plan);
        // Windows end at 11 (items 7..=11, targets 10, 11), 9 (5..=9: 8, 9),
        // 7 (3..=7: 6, 7), 5 (1..=5: 4, 5) and 3 (0..=3, the first: 1..=3).
        assert_eq!(
            units.units.iter().map(|(e, c)| (e.position, *c)).collect::<Vec<_>>(),
            [(3, 0), (5, 3), (7, 5), (9, 7), (11, 9)]
        );
        assert_eq!(units.targets, 11);
        let covered = window_targets(&set, &units);
        let positions: Vec<u32> = covered.iter().map(|(_, p, _)| *p).collect();
        assert_eq!(positions, (1..12).collect::<Vec<u32>>(), "every training target once");
        // Past the first window a target sees at least 2 items, at most 4.
        for (_, p, h) in &covered {
            assert!(h.len() <= 4 && h.len() >= (*p as usize).min(3), "target {p}: {h:?}");
            assert_eq!(h.last(), Some(&(*p - 1)));
        }
        assert!(covered.contains(&(0, 10, vec![7, 8, 9])) && covered.contains(&(0, 4, vec![1, 2, 3])));
        // Without overlap the target 8 (window 5..=9's first) sees one item.
        let tiled = window_targets(&set, &units_of(&set, Targets::AllPositions, 0, &plan));
        assert!(tiled.contains(&(0, 8, vec![7])));
        assert_eq!(tiled.len(), 11);
    }

    #[test]
    fn random_cuts_move_each_epoch_and_still_train_every_target_once() {
        // User 0: positions 1..=29 trained (30, 31 held out); user 1: 1..=3.
        let set = ExampleSet {
            sequences: vec![(0..32).collect(), vec![40, 41, 42, 43]],
            max_history: 4,
            train: (1..30)
                .map(|position| Example { user: 0, position, ahead: 0 })
                .chain((1..4).map(|position| Example { user: 1, position, ahead: 0 }))
                .collect(),
            ..Default::default()
        };
        let plan = OutcomePlan::new(&TrainConfig::default(), &set).unwrap();
        let cfg =
            TrainConfig { targets: Targets::AllPositions, window_cuts: WindowCuts::Random, ..TrainConfig::default() };
        let units = TrainingUnits::new(&set, &cfg, 7, &plan);
        assert_eq!(units.targets, 32);
        let expected: Vec<(u32, u32)> = set.train.iter().map(|e| (e.user, e.position)).collect();
        let mut cut_sets = std::collections::BTreeSet::new();
        let mut last_window_trains = std::collections::BTreeSet::new();
        for epoch in 1..=60 {
            let list = units.for_epoch(epoch).into_owned();
            assert_eq!(list, units.for_epoch(epoch).into_owned(), "an epoch's cuts follow from the seed");
            let covered = cut_targets(&set, &units, &list);
            let positions: Vec<(u32, u32)> = covered.iter().map(|(u, p, _)| (*u, *p)).collect();
            assert_eq!(positions, expected, "epoch {epoch}: every training target once");
            // A query reads the items right before its target, at most 4.
            for (user, p, h) in &covered {
                let seq = &set.sequences[*user as usize];
                assert!(!h.is_empty() && h.len() <= 4, "{h:?}");
                assert_eq!(h[..], seq[*p as usize - h.len()..*p as usize]);
            }
            let (end, context) = list.iter().rfind(|(e, _)| e.user == 0).map(|(e, c)| (e.position, *c)).unwrap();
            assert_eq!(end, 29);
            last_window_trains.insert(end - context);
            cut_sets.insert(list.iter().map(|(e, c)| (e.user, e.position, *c)).collect::<Vec<_>>());
        }
        // The most recent window trains 4 - s positions, s uniform on 0..4.
        assert_eq!(last_window_trains, [1, 2, 3, 4].into());
        assert!(cut_sets.len() >= 8, "cuts move from epoch to epoch: {} distinct", cut_sets.len());
        // Another seed draws other cuts; fixed cuts are the same every epoch.
        let other = TrainingUnits::new(&set, &cfg, 8, &plan);
        assert!((1..=10).any(|e| other.for_epoch(e) != units.for_epoch(e)));
        let fixed = TrainingUnits::new(&set, &TrainConfig { window_cuts: WindowCuts::Fixed, ..cfg }, 7, &plan);
        assert!((1..=10).all(|e| fixed.for_epoch(e)[..] == fixed.units[..]));
    }

    #[test]
    fn an_overlap_as_long_as_the_history_is_refused() {
        let cfg = TrainConfig { window_overlap: 4, ..TrainConfig::default() };
        let e = check_windows(&cfg, 4).unwrap_err().to_string();
        assert!(e.contains("window_overlap = 4") && e.contains("max_history (4)"), "{e}");
        check_windows(&TrainConfig { window_overlap: 3, ..cfg }, 4).unwrap();
    }
}
