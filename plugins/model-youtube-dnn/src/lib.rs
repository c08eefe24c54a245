//! Retrieval models on dfdx, trained with the sampler's candidates:
//! - `youtube_dnn`: the candidate generator of Covington et al. 2016
//!   (Figure 3): the history's item embeddings averaged (or encoded by a GRU,
//!   as the Paddle variant does), concatenated with the side inputs the
//!   features produce (averaged genre embeddings of the history, user
//!   demographics, example age), a ReLU tower to the user vector, and a
//!   softmax over output item vectors. The history may instead be encoded
//!   by an LSTM or by causal self-attention (SASRec, Kang & McAuley 2018),
//!   which can train on every position of a window at once. Items may be hash-encoded (several
//!   hashed rows summed) when the features say so.
//!   With two or more outcomes to train, a learned embedding of the outcome
//!   a query asks about joins the tower's input (ItemSage, Baltescu et al.
//!   2022), so one model serves each outcome.
//! - `two_tower`: the same user tower and an item tower over item ID + item
//!   features, so item vectors come from features.
//! - `matrix_factorization`: a user-ID embedding, the same loss.
//!
//! Dense math (tower, candidate logits, log-softmax) runs on dfdx. Embedding
//! tables live outside dfdx's graph: only the rows a batch touches are
//! gathered into tensors, and their gradients are scattered back, because
//! dfdx's `Embedding` keeps a dense gradient of the whole table every step.
//! dfdx's `Linear` and optimizers need compile-time widths while the tower's
//! widths come from TOML, so layers are runtime-shaped tensors updated by the
//! small Adam in `adam.rs`.

mod adam;
mod attention;
mod dense;
mod fields;
mod model;
mod objective;
mod recurrent;
mod resident;
mod table;

use anyhow::{bail, Result};
use funnel_api::{BuildCx, Model, ParamDoc, Params, Registry};
use serde::{Deserialize, Serialize};

pub use model::CandidateModel;

pub fn register(reg: &mut Registry) {
    reg.model::<YoutubeDnnParams>(
        "youtube_dnn",
        "YouTube DNN candidate generator: history embeddings (averaged, or a GRU) and the features' side inputs \
         -> ReLU tower -> sampled softmax over item vectors",
        |p, cx| build(Config::from(p), cx),
    );
    reg.model::<TwoTowerParams>(
        "two_tower",
        "Two towers: the youtube_dnn user tower, and an item tower over item ID + item features (genres), \
         so item vectors come from features",
        |p, cx| build(Config::from(p.0), cx),
    );
    reg.model::<MatrixFactorizationParams>(
        "matrix_factorization",
        "Matrix factorization baseline: a user-ID embedding against item embeddings, trained with the same \
         sampled loss",
        |p, cx| build(Config::from(p), cx),
    );
}

/// `youtube_dnn` (and, with an item tower, `two_tower`).
#[funnel_api::params(unused = YoutubeDnnParams::unused_keys)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct YoutubeDnnParams {
    /// Length of item embeddings and of the user vector.
    #[param(default = 64)]
    pub dim: usize,
    /// Widths of the ReLU layers of the user tower.
    #[param(default = vec![256])]
    pub hidden: Vec<usize>,
    /// Use the input (history) table for the candidate items too.
    #[param(default = false)]
    pub share_embeddings: bool,
    /// Standard deviation of the normal embedding init.
    #[param(default = 0.1)]
    pub init_std: f64,
    /// Logits are divided by it.
    #[param(default = 1.0)]
    pub temperature: f32,
    /// L2-normalise user and item vectors, so logits are cosines / temperature.
    #[param(default = false)]
    pub normalize: bool,
    /// "softmax": sampled softmax over the candidates; "bce": a logistic
    /// loss per candidate (word2vec's negative sampling; NCE when the
    /// sampler's logQ correction is on).
    #[param(default = Loss::Softmax)]
    pub loss: Loss,
    /// Items the user has consumed are not negatives for their query: the
    /// query's history, or with `[train] targets = "all_positions"` every
    /// item of its window. Evaluation and serving rank only items the user
    /// has not seen, so the model need not learn to rank seen ones low.
    #[param(default = false)]
    pub exclude_seen: bool,
    /// "lazy_adam": only the rows a batch touches are updated, so a step
    /// costs what the batch reads, not the catalog; "adam": every row's
    /// moments decay each step, like PyTorch's dense Adam.
    #[param(default = EmbeddingOptimizer::LazyAdam)]
    pub embedding_optimizer: EmbeddingOptimizer,
    /// How the history becomes a vector: "mean" of its item embeddings
    /// (Covington et al.), a "gru" or an "lstm" over it in time order, or
    /// causal "self_attention" (SASRec) read at its last item.
    #[param(default = SequenceEncoder::Mean)]
    pub sequence_encoder: SequenceEncoder,
    /// Hidden width of the GRU.
    #[param(default = 64)]
    pub gru_hidden: usize,
    /// "last": the GRU's state after the most recent item; "max": the
    /// element-wise max over its states.
    #[param(default = Pooling::Last)]
    pub gru_pooling: Pooling,
    /// Hidden width of the LSTM.
    #[param(default = 64)]
    pub lstm_hidden: usize,
    /// "last": the LSTM's state after the most recent item; "max": the
    /// element-wise max over its states (seed 003).
    #[param(default = Pooling::Last)]
    pub lstm_pooling: Pooling,
    /// Self-attention blocks (attention, then feed-forward).
    #[param(default = 2)]
    pub layers: usize,
    /// Attention heads per block; `dim` must be a multiple of it.
    #[param(default = 1)]
    pub heads: usize,
    /// Hidden width of each block's position-wise feed-forward network.
    #[param(default = 256)]
    pub feed_forward: usize,
    /// Dropout rate in training, on the embeddings, the attention weights
    /// and each block's outputs.
    #[param(default = 0.2)]
    pub dropout: f32,
    /// Width of the embedding of each categorical side feature the features
    /// produce (genres, gender, age, occupation, zip).
    #[param(default = 16)]
    pub side_dim: usize,
    /// Widths of the ReLU layers of an item tower over item ID + item
    /// features; [] = none, item vectors are the ID table.
    pub item_hidden: Vec<usize>,
}

impl YoutubeDnnParams {
    /// Each encoder's sizes mean nothing to the others.
    fn unused_keys(&self) -> Vec<&'static str> {
        let keys: &[(SequenceEncoder, &[&'static str])] = &[
            (SequenceEncoder::Gru, &["gru_hidden", "gru_pooling"]),
            (SequenceEncoder::Lstm, &["lstm_hidden", "lstm_pooling"]),
            (SequenceEncoder::SelfAttention, &["layers", "heads", "feed_forward", "dropout"]),
        ];
        keys.iter().filter(|(e, _)| *e != self.sequence_encoder).flat_map(|(_, k)| k.iter().copied()).collect()
    }
}

/// `two_tower`: the `youtube_dnn` parameters with an item tower by default.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct TwoTowerParams(pub YoutubeDnnParams);

impl<'de> Deserialize<'de> for TwoTowerParams {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Missing keys take two_tower's defaults, not youtube_dnn's (whose
        // `#[serde(default)]` would give no item tower).
        let mut table = funnel_api::toml::Table::deserialize(d)?;
        if let Ok(funnel_api::toml::Value::Table(defaults)) =
            funnel_api::toml::Value::try_from(TwoTowerParams::default())
        {
            for (k, v) in defaults {
                table.entry(k).or_insert(v);
            }
        }
        funnel_api::parse_params::<YoutubeDnnParams>(table)
            .map(TwoTowerParams)
            .map_err(|e| serde::de::Error::custom(format!("{e:#}")))
    }
}

impl Default for TwoTowerParams {
    fn default() -> Self {
        TwoTowerParams(YoutubeDnnParams { item_hidden: vec![256], ..Default::default() })
    }
}

impl Params for TwoTowerParams {
    const DOCS: &'static [ParamDoc] = YoutubeDnnParams::DOCS;

    fn unused(&self) -> Vec<&'static str> {
        self.0.unused()
    }
}

/// `matrix_factorization`: a user-ID table against an item table.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MatrixFactorizationParams {
    /// Length of the user and item embeddings.
    #[param(default = 64)]
    pub dim: usize,
    /// Standard deviation of the normal embedding init.
    #[param(default = 0.1)]
    pub init_std: f64,
    /// Logits are divided by it.
    #[param(default = 1.0)]
    pub temperature: f32,
    /// L2-normalise user and item vectors, so logits are cosines / temperature.
    #[param(default = false)]
    pub normalize: bool,
    /// "softmax": sampled softmax over the candidates; "bce": a logistic
    /// loss per candidate.
    #[param(default = Loss::Softmax)]
    pub loss: Loss,
    /// "lazy_adam": only the rows a batch touches are updated; "adam":
    /// every row's moments decay each step.
    #[param(default = EmbeddingOptimizer::LazyAdam)]
    pub embedding_optimizer: EmbeddingOptimizer,
}

/// The training objective over a batch's candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    Softmax,
    Bce,
}

/// How embedding rows are optimised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingOptimizer {
    Adam,
    LazyAdam,
}

/// How a history becomes one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SequenceEncoder {
    Mean,
    Gru,
    Lstm,
    SelfAttention,
}

/// How a recurrent encoder's states become one vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    Last,
    Max,
}

/// What the user tower reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserInput {
    /// The history (`sequence_encoder`) and the features' side inputs.
    History,
    /// A learned vector per user ID (matrix factorization).
    UserId,
}

/// One model configuration, whichever plugin name built it: the
/// `youtube_dnn` parameters (matrix factorization's have no towers) and what
/// the user side reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub params: YoutubeDnnParams,
    pub user_input: UserInput,
}

impl From<YoutubeDnnParams> for Config {
    fn from(params: YoutubeDnnParams) -> Config {
        Config { params, user_input: UserInput::History }
    }
}

impl From<MatrixFactorizationParams> for Config {
    fn from(p: MatrixFactorizationParams) -> Config {
        let params = YoutubeDnnParams {
            dim: p.dim,
            hidden: Vec::new(),
            init_std: p.init_std,
            temperature: p.temperature,
            normalize: p.normalize,
            loss: p.loss,
            embedding_optimizer: p.embedding_optimizer,
            ..Default::default()
        };
        Config { params, user_input: UserInput::UserId }
    }
}

/// Parameters plus Adam's two moments, in floats, beyond which a model is
/// refused (64 GiB).
const MAX_TRAINING_FLOATS: u128 = 16 << 30;

fn build(p: Config, cx: &BuildCx) -> Result<Box<dyn Model>> {
    if p.params.dim == 0 {
        bail!("key `dim`: must be at least 1");
    }
    if p.params.hidden.contains(&0) {
        bail!("key `hidden`: every layer width must be at least 1, got {:?}", p.params.hidden);
    }
    if p.params.item_hidden.contains(&0) {
        bail!("key `item_hidden`: every layer width must be at least 1, got {:?}", p.params.item_hidden);
    }
    if p.params.gru_hidden == 0 {
        bail!("key `gru_hidden`: must be at least 1");
    }
    if p.params.lstm_hidden == 0 {
        bail!("key `lstm_hidden`: must be at least 1");
    }
    if p.params.sequence_encoder == SequenceEncoder::SelfAttention {
        let q = &p.params;
        if q.layers == 0 {
            bail!("key `layers`: self-attention needs at least 1 block");
        }
        if q.heads == 0 || !q.dim.is_multiple_of(q.heads) {
            bail!("key `heads`: must divide `dim` ({}) evenly, got {}", q.dim, q.heads);
        }
        if q.feed_forward == 0 {
            bail!("key `feed_forward`: must be at least 1");
        }
        if !(0.0..1.0).contains(&q.dropout) {
            bail!("key `dropout`: must be in [0, 1), got {}", q.dropout);
        }
        if cx.max_history == 0 {
            bail!("self-attention needs a history: [features] max_history is 0");
        }
    }
    if p.params.side_dim == 0 {
        bail!("key `side_dim`: must be at least 1");
    }
    let encoded = cx.inputs.items.items();
    if encoded != 0 && encoded != cx.n_items {
        bail!("the features encode {encoded} items but the catalog has {}", cx.n_items);
    }
    if p.user_input == UserInput::UserId && cx.n_users == 0 {
        bail!("matrix_factorization needs the dataset's users");
    }
    if p.user_input == UserInput::UserId && cx.inputs.outcomes >= 2 {
        bail!(
            "matrix_factorization has no query tower to condition on an outcome: train one outcome (`[train] \
             outcomes`), not {}",
            cx.inputs.outcomes
        );
    }
    if p.params.temperature.is_nan() || p.params.temperature <= 0.0 {
        bail!("key `temperature`: must be positive, got {}", p.params.temperature);
    }
    if p.params.init_std.is_nan() || p.params.init_std <= 0.0 {
        bail!("key `init_std`: must be positive, got {}", p.params.init_std);
    }
    if cx.n_items == 0 {
        bail!("the catalog is empty");
    }
    // Refuse sizes that cannot be allocated with a message rather than an abort.
    if 3 * model::parameter_estimate(&p, cx) > MAX_TRAINING_FLOATS {
        bail!(
            "key `dim`/`hidden`: dim = {} and hidden = {:?} over {} items need more than {} GiB of parameters and \
             optimizer state",
            p.params.dim,
            p.params.hidden,
            cx.n_items,
            (MAX_TRAINING_FLOATS * 4) >> 30
        );
    }
    let on_device = model::steps_on_device(&p, cx)?;
    match cx.train.device.as_str() {
        "cpu" => Ok(Box::new(CandidateModel::new(dfdx::tensor::Cpu::default(), p, cx).with_steps_on_device(on_device))),
        d if d == "cuda" || d.starts_with("cuda:") => cuda(d, p, cx),
        other => bail!("[train] device \"{other}\" is not known; expected \"cpu\", \"cuda\" or \"cuda:N\""),
    }
}

#[cfg(feature = "cuda")]
fn cuda(device: &str, p: Config, cx: &BuildCx) -> Result<Box<dyn Model>> {
    let ordinal: usize = match device.strip_prefix("cuda:") {
        Some(n) => n.parse().map_err(|_| anyhow::anyhow!("device \"{device}\": expected cuda:N"))?,
        None => 0,
    };
    let dev = dfdx::tensor::Cuda::try_build(ordinal, cx.seed)
        .map_err(|e| anyhow::anyhow!("opening CUDA device {ordinal}: {e:?}"))?;
    let on_device = model::steps_on_device(&p, cx)?;
    Ok(Box::new(CandidateModel::new(dev, p, cx).with_steps_on_device(on_device)))
}

#[cfg(not(feature = "cuda"))]
fn cuda(device: &str, _p: Config, _cx: &BuildCx) -> Result<Box<dyn Model>> {
    bail!("[train] device \"{device}\" needs a build with the `cuda` cargo feature (cargo build --features cuda)")
}
