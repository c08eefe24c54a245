//! What `plan` checks against the data before any trial trains: the
//! dataset loads, the features build, and every component accepts the
//! data's size (a sampler's negatives within the catalog, cutoffs, a model's
//! memory), so a sweep does not fail after others have started training.

use anyhow::{Context, Result};
use funnel_api::{BuildCx, ComponentKind, LoadedDataset, Registry};

use crate::experiment::Experiment;

/// Loads `exp`'s dataset.
pub fn load_dataset(exp: &Experiment, reg: &Registry) -> Result<LoadedDataset> {
    let spec = &exp.spec;
    let c = &spec.dataset;
    reg.build_dataset(&c.kind, c.params.clone(), &spec.build_cx())
        .and_then(|d| d.load())
        .with_context(|| spec.describe(ComponentKind::Dataset))
}

/// Builds `exp`'s features over `data`, then each component with the data's
/// sizes, and drops them.
pub fn check(exp: &Experiment, reg: &Registry, data: &LoadedDataset) -> Result<()> {
    let spec = &exp.spec;
    let within = |kind: ComponentKind| spec.describe(kind);
    let mut cx = BuildCx {
        n_users: data.n_users(),
        n_items: data.n_items(),
        n_categories: data.catalog.category_names().len(),
        ..spec.build_cx()
    };
    let c = &spec.features;
    let mut examples = reg
        .build_features(&c.kind, c.params.clone(), &cx)
        .and_then(|f| f.build(data))
        .with_context(|| within(ComponentKind::Features))?;
    crate::outcomes::OutcomePlan::new(&spec.train, &examples)?.apply(&mut examples);
    crate::training::check_windows(&spec.train, examples.max_history)?;
    cx.learn_examples(&examples);
    let c = &spec.sampler;
    reg.build_sampler(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Sampler))?;
    let c = &spec.evaluation;
    reg.build_evaluator(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Evaluation))?;
    let c = &spec.index;
    reg.build_index(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Index))?;
    for (i, c) in spec.baselines.iter().enumerate() {
        reg.build_baseline(&c.kind, c.params.clone(), &cx)
            .with_context(|| spec.describe_entry(ComponentKind::Baseline, i))?;
    }
    if let Some(c) = &spec.rerank {
        reg.build_reranker(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Rerank))?;
    }
    for (i, s) in spec.retrieval.iter().flat_map(|r| &r.sources).enumerate() {
        if s.kind != crate::retrieval::MODEL_SOURCE {
            reg.build_baseline(&s.kind, s.params.clone(), &cx)
                .with_context(|| format!("[[retrieval.sources]] #{} type = \"{}\"", i + 1, s.kind))?;
        }
    }
    // Last: the model allocates its parameters (after checking their size).
    let c = &spec.model;
    reg.build_model(&c.kind, c.params.clone(), &cx).with_context(|| within(ComponentKind::Model))?;
    Ok(())
}
