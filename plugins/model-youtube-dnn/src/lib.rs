//! `[model] type = "youtube_dnn"`: the candidate generator of Covington et al.
//! 2016 (Figure 3) without side features: the history's item embeddings are
//! averaged (padding masked), a ReLU tower maps the average to the user
//! vector, and a softmax over output item vectors is trained with the
//! sampler's candidates.
//!
//! Dense math (tower, candidate logits, log-softmax) runs on dfdx. Embedding
//! tables live outside dfdx's graph: only the rows a batch touches are
//! gathered into tensors, and their gradients are scattered back, because
//! dfdx's `Embedding` keeps a dense gradient of the whole table every step.
//! dfdx's `Linear` and optimizers need compile-time widths while the tower's
//! widths come from TOML, so layers are runtime-shaped tensors updated by the
//! small Adam in `adam.rs`.

mod adam;
mod model;
mod table;

use anyhow::{bail, Result};
use funnel_api::{BuildCx, Model, ParamDoc, Params, Registry};
use serde::{Deserialize, Serialize};

pub use model::YoutubeDnn;

pub fn register(reg: &mut Registry) {
    reg.model::<YoutubeDnnParams>(
        "youtube_dnn",
        "YouTube DNN candidate generator: averaged history embeddings -> ReLU tower -> sampled softmax",
        build,
    );
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct YoutubeDnnParams {
    pub dim: usize,
    pub hidden: Vec<usize>,
    pub share_embeddings: bool,
    pub init_std: f64,
    pub temperature: f32,
    pub normalize: bool,
    pub loss: Loss,
    pub embedding_optimizer: EmbeddingOptimizer,
}

impl Default for YoutubeDnnParams {
    fn default() -> Self {
        YoutubeDnnParams {
            dim: 64,
            hidden: vec![256],
            share_embeddings: false,
            init_std: 0.1,
            temperature: 1.0,
            normalize: false,
            loss: Loss::Softmax,
            embedding_optimizer: EmbeddingOptimizer::Adam,
        }
    }
}

impl Params for YoutubeDnnParams {
    const DOCS: &'static [ParamDoc] = &[
        ParamDoc::new("dim", "Length of item embeddings and of the user vector (default 64)"),
        ParamDoc::new("hidden", "Widths of the ReLU layers of the user tower (default [256])"),
        ParamDoc::new("share_embeddings", "Use the input (history) table as output item vectors too (default false)"),
        ParamDoc::new("init_std", "Standard deviation of the normal embedding init (default 0.1)"),
        ParamDoc::new("temperature", "Logits are divided by it (default 1.0)"),
        ParamDoc::new(
            "normalize",
            "L2-normalise user and item vectors, so logits are cosines / temperature (default false)",
        ),
        ParamDoc::new(
            "loss",
            "\"softmax\": sampled softmax over the candidates; \"bce\": a logistic loss per candidate \
             (word2vec's negative sampling; NCE when the sampler's logQ correction is on) (default \"softmax\")",
        ),
        ParamDoc::new(
            "embedding_optimizer",
            "\"adam\": every row's moments decay each step, like PyTorch's dense Adam; \
             \"lazy_adam\": only rows in the batch are updated (default \"adam\")",
        ),
    ];
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

/// Parameters plus Adam's two moments, in floats, beyond which a model is
/// refused (64 GiB).
const MAX_TRAINING_FLOATS: u128 = 16 << 30;

fn build(p: YoutubeDnnParams, cx: &BuildCx) -> Result<Box<dyn Model>> {
    if p.dim == 0 {
        bail!("key `dim`: must be at least 1");
    }
    if p.hidden.contains(&0) {
        bail!("key `hidden`: every layer width must be at least 1, got {:?}", p.hidden);
    }
    if p.temperature.is_nan() || p.temperature <= 0.0 {
        bail!("key `temperature`: must be positive, got {}", p.temperature);
    }
    if p.init_std.is_nan() || p.init_std <= 0.0 {
        bail!("key `init_std`: must be positive, got {}", p.init_std);
    }
    if cx.n_items == 0 {
        bail!("the catalog is empty");
    }
    // Refuse sizes that cannot be allocated with a message rather than an abort.
    let tables = if p.share_embeddings { 1 } else { 2 };
    let mut widths = vec![p.dim];
    widths.extend(&p.hidden);
    widths.push(p.dim);
    let floats = widths.windows(2).try_fold(tables * 3 * cx.n_items as u128 * p.dim as u128, |acc, w| {
        acc.checked_add(3 * (w[0] as u128 + 1) * w[1] as u128)
    });
    if floats.is_none_or(|f| f > MAX_TRAINING_FLOATS) {
        bail!(
            "key `dim`/`hidden`: dim = {} and hidden = {:?} over {} items need more than {} GiB of parameters and \
             optimizer state",
            p.dim,
            p.hidden,
            cx.n_items,
            (MAX_TRAINING_FLOATS * 4) >> 30
        );
    }
    match cx.device.as_str() {
        "cpu" => Ok(Box::new(YoutubeDnn::new(dfdx::tensor::Cpu::default(), p, cx))),
        d if d == "cuda" || d.starts_with("cuda:") => cuda(d, p, cx),
        other => bail!("device \"{other}\" is not known; expected \"cpu\", \"cuda\" or \"cuda:N\""),
    }
}

#[cfg(feature = "cuda")]
fn cuda(device: &str, p: YoutubeDnnParams, cx: &BuildCx) -> Result<Box<dyn Model>> {
    let ordinal: usize = match device.strip_prefix("cuda:") {
        Some(n) => n.parse().map_err(|_| anyhow::anyhow!("device \"{device}\": expected cuda:N"))?,
        None => 0,
    };
    let dev = dfdx::tensor::Cuda::try_build(ordinal, cx.seed)
        .map_err(|e| anyhow::anyhow!("opening CUDA device {ordinal}: {e:?}"))?;
    Ok(Box::new(YoutubeDnn::new(dev, p, cx)))
}

#[cfg(not(feature = "cuda"))]
fn cuda(device: &str, _p: YoutubeDnnParams, _cx: &BuildCx) -> Result<Box<dyn Model>> {
    bail!("device \"{device}\" needs a build with the `cuda` cargo feature (cargo build --features cuda)")
}
