//! THE list of built-in plugins. Adding a plugin crate is one line here (and
//! one dependency in Cargo.toml); built-ins register exactly as a user's
//! plugin would.

use funnel_api::Registry;

/// A registry holding every built-in component.
pub fn builtin() -> Registry {
    let mut reg = Registry::new();
    funnel_dataset_movielens::register(&mut reg);
    funnel_dataset_interactions::register(&mut reg);
    funnel_features_history::register(&mut reg);
    funnel_samplers::register(&mut reg);
    funnel_model_youtube_dnn::register(&mut reg);
    funnel_eval_full_ranking::register(&mut reg);
    funnel_index_exact::register(&mut reg);
    funnel_index_hora::register(&mut reg);
    funnel_index_ivf::register(&mut reg);
    funnel_index_hnsw::register(&mut reg);
    funnel_tracker_local::register(&mut reg);
    funnel_tracker_mlflow::register(&mut reg);
    funnel_baselines::register(&mut reg);
    funnel_rerank_mmr::register(&mut reg);
    reg
}

/// `funnel plugins`: `[train]`, then every component with its parameters
/// and defaults.
pub fn catalog(reg: &Registry) -> String {
    let mut out = String::new();
    let (train, _) = funnel_api::documented::<funnel_api::TrainConfig>().expect("[train] is documented");
    out.push_str("[train]\n      the training loop; lr, batch_size and device are also the model's to honour\n");
    for (key, default, doc) in &train {
        out.push_str(&format!("      {key} = {default}\n          {doc}\n"));
    }
    let mut last_kind = None;
    for p in reg.plugins() {
        if last_kind != Some(p.kind) {
            out.push_str(&format!("\n{}\n", p.kind.header()));
            last_kind = Some(p.kind);
        }
        out.push_str(&format!("  type = \"{}\"\n      {}\n", p.name, p.doc));
        for (key, default, doc) in &p.params {
            out.push_str(&format!("      {key} = {default}\n          {doc}\n"));
        }
    }
    out
}
