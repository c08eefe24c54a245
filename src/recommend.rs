//! `funnel recommend`: the top items for a user from a finished run, through
//! the run's saved model and index, as a serving system would answer.

use std::path::Path;

use anyhow::{bail, Context, Result};
use funnel_api::{ComponentKind, ItemIdx, Queries, Registry};

use crate::checkpoint;
use crate::experiment;
use crate::item_vectors::{self, ItemVectors};
use crate::run_folder::{INDEX, MODEL};

/// Whose history to recommend for.
#[derive(Debug, Clone)]
pub enum Query {
    /// A dataset user (their raw id): all their positives form the history.
    User(String),
    /// An ad-hoc history of raw item ids, oldest first.
    Items(Vec<String>),
}

/// One recommended item.
#[derive(Debug, Clone, PartialEq)]
pub struct Recommendation {
    pub item_id: String,
    pub title: String,
    pub score: f32,
}

/// What the history was, and the top `k` for it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Titles of the history's most recent items (newest first), as the model saw them.
    pub history: Vec<String>,
    pub items: Vec<Recommendation>,
}

/// The top `k` for `query` through the run's model and index; a model
/// trained on several outcomes is asked about `outcome` (a name of the
/// dataset's), or about the outcome the run served when `None`.
pub fn recommend(
    run_dir: &Path,
    query: &Query,
    outcome: Option<&str>,
    k: usize,
    registry: &Registry,
) -> Result<Answer> {
    for needed in ["resolved.toml", MODEL, item_vectors::FILE] {
        if !run_dir.join(needed).exists() {
            bail!("{} has no {needed}: not a finished run folder", run_dir.display());
        }
    }
    let exp = experiment::load(&run_dir.join("resolved.toml"), &[], registry)?;
    let spec = &exp.spec;
    let within = |kind: ComponentKind| spec.describe(kind);
    let vectors: ItemVectors = item_vectors::read(&run_dir.join(item_vectors::FILE))?;
    let by_raw: std::collections::HashMap<&str, ItemIdx> =
        vectors.raw_ids.iter().enumerate().map(|(i, id)| (id.as_str(), i as ItemIdx)).collect();

    let cx0 = spec.build_cx();
    let c = &spec.dataset;
    let data = registry
        .build_dataset(&c.kind, c.params.clone(), &cx0)
        .with_context(|| within(ComponentKind::Dataset))?
        .load()?;
    if data.catalog.raw_ids != vectors.raw_ids {
        bail!(
            "the dataset no longer matches the run's item catalog ({} items then, {} now)",
            vectors.raw_ids.len(),
            data.n_items()
        );
    }
    let mut cx = funnel_api::BuildCx { n_users: data.n_users(), n_items: data.n_items(), ..cx0 };
    let c = &spec.features;
    let mut examples = registry
        .build_features(&c.kind, c.params.clone(), &cx)?
        .build(&data)
        .with_context(|| within(ComponentKind::Features))?;
    let plan = crate::outcomes::OutcomePlan::new(&spec.train, &examples)?;
    plan.apply(&mut examples);
    cx.learn_examples(&examples);
    let asked = match outcome {
        None => examples.serving_outcome,
        Some(name) => {
            let Some(i) = plan.names.iter().position(|n| n == name) else {
                bail!(
                    "--outcome {name}: the run's dataset declares {}",
                    if plan.names.is_empty() { "no outcomes".to_string() } else { plan.names.join(", ") }
                );
            };
            if plan.conditioned() && plan.weights[i] == 0.0 {
                bail!(
                    "--outcome {name}: the model was not trained on it (it trained {})",
                    plan.evaluated().iter().map(|&o| plan.names[o as usize].as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            if plan.conditioned() {
                i as u32
            } else {
                0
            }
        }
    };

    let (history, user): (Vec<ItemIdx>, _) = match query {
        Query::User(id) => {
            let user = data
                .user_raw_ids
                .iter()
                .position(|u| u == id)
                .with_context(|| format!("user {id} is not in the dataset ({} users)", data.n_users()))?;
            (examples.sequences[user].clone(), user as funnel_api::UserIdx)
        }
        Query::Items(ids) => (
            ids.iter()
                .map(|id| {
                    by_raw.get(id.as_str()).copied().with_context(|| format!("item `{id}` is not in the run's catalog"))
                })
                .collect::<Result<_>>()?,
            Queries::UNKNOWN_USER,
        ),
    };
    if history.is_empty() {
        bail!("the history is empty: nothing to recommend from");
    }
    let c = &spec.model;
    let mut model =
        registry.build_model(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Model))?;
    model.load_state(&checkpoint::read(&run_dir.join(MODEL))?.best_state)?;
    let c = &spec.index;
    let mut index =
        registry.build_index(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Index))?;
    index
        .load(&run_dir.join(INDEX))
        .with_context(|| format!("loading the index from {}", run_dir.join(INDEX).display()))?;

    let recent = &history[history.len().saturating_sub(examples.max_history)..];
    let mut q = Queries::new(examples.max_history);
    q.push_asking(recent, user, 0.0, asked);
    let user = model.user_vectors(&q)?;
    let top = index.search(user.row(0), k, &history)?;
    let title = |i: ItemIdx| {
        let t = &vectors.titles[i as usize];
        if t.is_empty() {
            format!("item {}", vectors.raw_ids[i as usize])
        } else {
            t.clone()
        }
    };
    Ok(Answer {
        history: recent.iter().rev().map(|&i| title(i)).collect(),
        items: top
            .into_iter()
            .map(|(i, score)| Recommendation { item_id: vectors.raw_ids[i as usize].clone(), title: title(i), score })
            .collect(),
    })
}
