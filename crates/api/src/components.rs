//! The component traits: one per table of an experiment file.

use std::path::{Path, PathBuf};

use anyhow::Result;
use rand::rngs::StdRng;

use crate::{Candidates, ExampleSet, ItemIdx, LoadedDataset, Matrix, Metrics, Queries, TrainBatch, UserIdx};

/// `[dataset]`: reads interactions and the item catalog.
pub trait Dataset {
    fn load(&self) -> Result<LoadedDataset>;
}

/// `[features]`: turns interactions into training examples and held-out cases.
pub trait Features {
    fn build(&self, data: &LoadedDataset) -> Result<ExampleSet>;
}

/// `[sampler]`: chooses the candidates each training batch is scored against.
pub trait Sampler: Send {
    /// Called once before training with how often each item is a training
    /// positive (indexed by item) and the examples themselves, for samplers
    /// that learn more than counts (neighbours, sequences). Only the
    /// positions in `examples.train` are training data: `sequences` also
    /// hold the validation and test targets.
    fn fit(&mut self, item_counts: &[u64], examples: &crate::ExampleSet) -> Result<()>;

    /// Fills `out` (cleared by the caller) with candidates for a batch whose
    /// positives are `positives`.
    fn sample(&mut self, positives: &[ItemIdx], rng: &mut StdRng, out: &mut Candidates);

    /// q(item) for every item as the sampler sees it (written out with the run).
    fn item_probabilities(&self) -> Vec<f64>;

    /// What the sampler has learnt while sampling (none for most), so a
    /// resumed run samples exactly as an uninterrupted one.
    fn training_state(&self) -> TrainingState {
        TrainingState::default()
    }

    fn load_training_state(&mut self, _state: &TrainingState) -> Result<()> {
        Ok(())
    }
}

/// Everything needed to continue training bit for bit: named arrays of each
/// element type. Checkpoints store it exactly.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingState {
    pub f32s: std::collections::BTreeMap<String, Vec<f32>>,
    pub f64s: std::collections::BTreeMap<String, Vec<f64>>,
    pub u64s: std::collections::BTreeMap<String, Vec<u64>>,
}

impl TrainingState {
    /// The array `name` of `map`, which must hold `len` values.
    pub fn take<'a, T>(map: &'a std::collections::BTreeMap<String, Vec<T>>, name: &str, len: usize) -> Result<&'a [T]> {
        let v = map.get(name).ok_or_else(|| anyhow::anyhow!("training state lacks `{name}`"))?;
        if v.len() != len {
            anyhow::bail!("training state `{name}` has {} values, expected {len}", v.len());
        }
        Ok(v)
    }
}

/// Named parameter tensors of a model, flat `f32`, for best-epoch snapshots
/// and checkpoints.
pub type ModelState = std::collections::BTreeMap<String, Vec<f32>>;

/// `[model]`: a user tower and item vectors trained with a sampled loss.
pub trait Model {
    /// Length of user and item vectors.
    fn dim(&self) -> usize;

    fn parameter_count(&self) -> usize;

    /// Computes (and keeps) the gradients of one batch without applying them,
    /// so the caller can refuse a diverging step.
    fn compute_gradients(&mut self, batch: &TrainBatch<'_>) -> Result<StepStats>;

    /// Applies the gradients of the last `compute_gradients`. A model may
    /// leave part of the update pending until its next `compute_gradients`
    /// or `finish_steps` (the built-in model does, to overlap it with the
    /// next step's work).
    fn apply_gradients(&mut self);

    /// Sets the optimizer's step size for the steps that follow. The trainer
    /// calls it before each step when `[train] lr_schedule` or
    /// `lr_warmup_steps` make the step size vary, and once before training
    /// to find out early whether the model can follow a schedule.
    fn set_learning_rate(&mut self, lr: f64) -> Result<()> {
        let _ = lr;
        anyhow::bail!(
            "[train] lr_schedule / lr_warmup_steps: this model keeps the step size it was built with; \
             use lr_schedule = \"constant\" and lr_warmup_steps = 0"
        )
    }

    /// One optimisation step: gradients computed and applied.
    fn train_step(&mut self, batch: &TrainBatch<'_>) -> Result<StepStats> {
        let stats = self.compute_gradients(batch)?;
        self.apply_gradients();
        Ok(stats)
    }

    /// Brings parameters that training steps keep elsewhere (a device
    /// holding the whole step, say) or leave pending back to where the
    /// reading methods see them. The core calls it after each epoch's
    /// steps, before it evaluates or saves; a model whose steps leave
    /// nothing elsewhere keeps the default.
    fn finish_steps(&mut self) -> Result<()> {
        Ok(())
    }

    /// One user vector per query row.
    fn user_vectors(&self, queries: &Queries) -> Result<Matrix>;

    /// One vector per catalog item (the softmax's output embeddings).
    fn item_vectors(&self) -> Result<Matrix>;

    fn state(&self) -> ModelState;

    fn load_state(&mut self, state: &ModelState) -> Result<()>;

    /// Parameters and optimizer state, for checkpoints.
    fn training_state(&self) -> TrainingState;

    fn load_training_state(&mut self, state: &TrainingState) -> Result<()>;
}

/// What one batch's gradients look like.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// The batch's mean loss.
    pub loss: f32,
    /// Euclidean norm of the gradient over every parameter.
    pub grad_norm: f32,
}

/// One held-out case: the user's vector is the row of the same index in the
/// user matrix passed alongside.
#[derive(Debug, Clone, Copy)]
pub struct EvalCase<'a> {
    /// Items the user has already seen: never ranked.
    pub seen: &'a [ItemIdx],
    pub target: ItemIdx,
}

/// Result of evaluating a set of cases.
#[derive(Debug, Clone, Default)]
pub struct Evaluation {
    pub metrics: Metrics,
    /// 0-based rank of each case's target among the ranked items.
    pub ranks: Vec<u32>,
}

/// `[evaluation]`: ranks held-out targets against the catalog.
pub trait Evaluator {
    /// The metric that picks the best epoch (higher is better), e.g. `recall@10`.
    fn selection_metric(&self) -> &str;

    /// Every metric `evaluate` reports, in display order. Metrics cut off at
    /// a rank are named `name@K`.
    fn metric_names(&self) -> Vec<String>;

    /// One case's value of `metric` when its held-out item ranks `rank`
    /// (0-based; `u64::MAX` when it was not retrieved at all): what
    /// `evaluate` averages over cases. `None` for a metric it does not
    /// report. Serving and paired tests between runs compute per-user
    /// metrics through it.
    fn metric_at_rank(&self, metric: &str, rank: u64) -> Option<f64>;

    /// The cutoffs K of its `name@K` metrics, ascending: serving fetches the
    /// largest.
    fn cutoffs(&self) -> Vec<usize> {
        let mut ks: Vec<usize> = self.metric_names().iter().filter_map(|m| m.split_once('@')?.1.parse().ok()).collect();
        ks.sort_unstable();
        ks.dedup();
        ks
    }

    /// The few metrics reports show per epoch and in comparison tables, in
    /// order; the first four it reports unless it says otherwise.
    fn headline_metrics(&self) -> Vec<String> {
        self.metric_names().into_iter().take(4).collect()
    }

    /// How many validation cases each epoch's validation ranks: `None` for
    /// all of them, `Some(n)` for a seeded sample of `n` (the same cases
    /// every epoch, so epochs stay comparable). The test always ranks all.
    fn validation_cases(&self) -> Option<usize> {
        None
    }

    fn evaluate(&self, users: &Matrix, items: &Matrix, cases: &[EvalCase<'_>]) -> Result<Evaluation>;

    /// Ranks each case's target by the scores `scorer` writes for the
    /// `n_items` catalog items (rankers that are not vector models, such as
    /// baselines), with the same exclusions, ties and metrics as `evaluate`.
    fn evaluate_scores(&self, scorer: &dyn CaseScorer, n_items: usize, cases: &[EvalCase<'_>]) -> Result<Evaluation>;
}

/// Scores of every catalog item for one evaluation case at a time.
///
/// `Sync` because evaluators score cases from many threads at once.
pub trait CaseScorer: Sync {
    /// Writes the score of every catalog item for case `case` into `out`.
    fn score(&self, case: usize, out: &mut [f32]);

    /// A per-item base every case's [`SparseScores`] build on, when the
    /// scorer has a sparse form: then an evaluator can rank a target from a
    /// case's few own scores and a sorted copy of the base, instead of a
    /// score per catalog item per case.
    fn shared_base(&self) -> Option<&[f32]> {
        None
    }

    /// Case `case`'s scores in sparse form over [`CaseScorer::shared_base`];
    /// called only when that is `Some`.
    fn sparse(&self, case: usize, out: &mut SparseScores) {
        let _ = (case, out);
    }
}

/// One case's scores, sparsely: each item in `own` scores its own value,
/// every other item `base[item] * scale` with the scorer's shared base
/// (finite values, `scale` finite and at least 0, so the order of the base
/// is the order of those scores). The same numbers as the dense scores,
/// bit for bit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SparseScores {
    /// Items this case scores itself, each once, in any order.
    pub own: Vec<(ItemIdx, f32)>,
    pub scale: f32,
}

/// `[[baselines]]`: a ranker without learned vectors (most popular,
/// co-visitation) that reports show next to the model for context.
pub trait Baseline: Send + Sync {
    /// Learns from the training examples only (never validation or test targets).
    fn fit(&mut self, examples: &ExampleSet, n_items: usize) -> Result<()>;

    /// Writes the score of every catalog item into `out` for `user`, whose
    /// whole history before the case (oldest first, never capped by the
    /// features' `max_history`) is `history`.
    fn score(&self, user: UserIdx, history: &[ItemIdx], out: &mut [f32]);

    /// The per-item base of its sparse form, when it has one (see
    /// [`SparseScores`]): evaluators then rank only what a case scores
    /// itself, not the whole catalog.
    fn shared_base(&self) -> Option<&[f32]> {
        None
    }

    /// `score`'s numbers in sparse form over `shared_base`; called only when
    /// that is `Some`.
    fn sparse_score(&self, user: UserIdx, history: &[ItemIdx], out: &mut SparseScores) {
        let _ = (user, history, out);
    }

    /// Numbers the fitted baseline stores, for the models table.
    fn parameter_count(&self) -> usize;

    /// One line on how fitting went worth a place in the report (an
    /// iterative fit's objective per iteration); none by default.
    fn fit_summary(&self) -> Option<String> {
        None
    }
}

/// What a re-ranker may read about the catalog.
#[derive(Debug, Clone, Copy)]
pub struct ItemSpace<'a> {
    /// The trained model's item vectors, one row per item.
    pub vectors: &'a Matrix,
    /// Each item's categories as small ids (all empty when the dataset has
    /// none).
    pub categories: &'a [Vec<u32>],
}

/// `[rerank]`: orders a user's merged `[retrieval]` candidates into the
/// list shown, e.g. for diversity.
pub trait Reranker: Send + Sync {
    /// Reads what it needs of the catalog, once, before any list.
    fn prepare(&mut self, items: &ItemSpace<'_>) -> Result<()>;

    /// The (at most) `k` items to show from `candidates` (item, relevance in
    /// [0, 1]), in order.
    fn rerank(&self, candidates: &[(ItemIdx, f32)], k: usize) -> Vec<ItemIdx>;

    /// How many items a user is shown, when the re-ranker's configuration
    /// says (`[rerank] k`); otherwise the evaluator's first cutoff.
    fn shown(&self) -> Option<usize> {
        None
    }

    /// Settings of its trade-off the report compares on one trained model
    /// (MMR: each `beta`), each a prepared re-ranker; none by default.
    fn tradeoff(&self) -> Option<Tradeoff> {
        None
    }
}

/// A re-ranker's trade-off: `parameter`'s values, each with its re-ranker.
pub struct Tradeoff {
    pub parameter: &'static str,
    pub settings: Vec<(f64, Box<dyn Reranker>)>,
}

/// `[index]`: serves the top items for a user vector by inner product.
///
/// `Sync` because queries are answered from many threads at once.
pub trait Index: Send + Sync {
    fn build(&mut self, items: &Matrix) -> Result<()>;

    /// The `k` best items for `query`, best first, never one in `exclude`.
    /// Scores are the inner products of `query` with the original item
    /// vectors, whatever space the index searches in.
    fn search(&self, query: &[f32], k: usize, exclude: &[ItemIdx]) -> Result<Vec<(ItemIdx, f32)>>;

    /// `search` for every row of `queries`, in row order; `excludes` holds
    /// one list per query, or is empty to exclude nothing. The default asks
    /// `search` once per query on the calling thread (callers spread chunks
    /// of queries over threads); an index with a faster batched path (one
    /// GEMM per block of queries) overrides it. Errors name the query.
    fn search_batch(&self, queries: &Matrix, k: usize, excludes: &[&[ItemIdx]]) -> Result<Vec<Vec<(ItemIdx, f32)>>> {
        if !excludes.is_empty() && excludes.len() != queries.rows {
            anyhow::bail!(
                "{} exclusion lists for {} queries; pass one per query or none",
                excludes.len(),
                queries.rows
            );
        }
        (0..queries.rows)
            .map(|q| {
                let exclude = excludes.get(q).copied().unwrap_or(&[]);
                self.search(queries.row(q), k, exclude).map_err(|e| e.context(format!("query {q}")))
            })
            .collect()
    }

    /// Whether `search` returns the exact maximum-inner-product top k.
    /// Exact indexes are the reference approximate ones are measured against.
    fn is_exact(&self) -> bool {
        false
    }

    /// Approximate bytes the built index holds in memory.
    fn size_bytes(&self) -> usize;

    /// Writes the built index into the (existing, empty) folder `dir`, so
    /// `load` on an index built from the same parameters restores it without
    /// the item vectors. Returns the files written.
    fn save(&self, dir: &Path) -> Result<Vec<PathBuf>>;

    /// Restores what `save` wrote into `dir`.
    fn load(&mut self, dir: &Path) -> Result<()>;
}

/// What a tracker is told when a run starts.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    pub experiment: String,
    /// What tells this run from the experiment's others, e.g. `mns`,
    /// `mns · sampler.num_negatives=200`, `mns · trial 3 · seed 2`.
    pub run_name: String,
    /// Folder that holds everything this run writes.
    pub run_dir: PathBuf,
    /// The resolved parameters that shape this run, flattened to dotted
    /// keys (those a component ignores in its configuration left out).
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    /// Folder of the run this one belongs to (a sweep's trials name the
    /// sweep, a run's baselines the run), so trackers can nest them.
    pub parent_run_dir: Option<PathBuf>,
    /// What the run is, in Markdown: the file's description, then what this
    /// run changes (its overrides, its trial).
    pub description: String,
    /// The experiment's description, for trackers that describe experiments.
    pub experiment_description: String,
    /// The experiment file the run came from.
    pub source: String,
    /// Who ran it.
    pub user: String,
    /// The data the run trained on; none for runs that train nothing (a
    /// sweep's parent).
    pub dataset: Option<DatasetInput>,
}

/// The dataset a run used, as a tracker records it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DatasetInput {
    /// e.g. `movielens/ml-1m`.
    pub name: String,
    /// sha256 of the data read.
    pub sha256: String,
    /// Where it was read from.
    pub source: String,
    /// What each row holds.
    pub schema: Vec<(String, String)>,
    /// Sizes after filtering: users, items, positives, rows read.
    pub profile: Vec<(String, u64)>,
}

/// A trained model as a tracker records it: its files (model weights, item
/// vectors, index, resolved configuration, a description of how to load it).
#[derive(Debug, Clone, Default)]
pub struct ModelArtifacts {
    /// e.g. `youtube_dnn`.
    pub name: String,
    /// Files to store with the model, with their paths inside it.
    pub files: Vec<(PathBuf, String)>,
    /// Parameters that shape the model.
    pub params: Vec<(String, String)>,
    /// The epoch the model comes from.
    pub step: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Finished,
    Failed,
}

/// `[tracking]`: records parameters, metrics and artifacts of a run.
pub trait Tracker {
    fn start(&mut self, run: &RunInfo) -> Result<()>;

    /// Metrics at `step` (the epoch for per-epoch values).
    fn log_metrics(&mut self, step: u64, metrics: &Metrics) -> Result<()>;

    fn log_artifact(&mut self, path: &Path) -> Result<()>;

    /// Tags learnt while the run goes (a failed run's error). A tracker
    /// that keeps only what `start` gave ignores them.
    fn set_tags(&mut self, tags: &[(String, String)]) -> Result<()> {
        let _ = tags;
        Ok(())
    }

    /// The trained model. A tracker without a notion of models stores its
    /// files as artifacts.
    fn log_model(&mut self, model: &ModelArtifacts) -> Result<()> {
        for (file, _) in &model.files {
            self.log_artifact(file)?;
        }
        Ok(())
    }

    fn finish(&mut self, status: RunStatus) -> Result<()>;
}
