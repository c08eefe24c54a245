//! Integration tests of the `movielens` plugin through its public API:
//! synthetic releases in each layout, error messages, and the real data.

mod errors;
mod layouts;
mod outcomes;
mod real_data;

use std::path::Path;

use funnel_dataset_movielens::{MovieLens, MovieLensParams};

/// Loads the release `variant` from `dir` with the given thresholds.
pub fn load(
    dir: &Path,
    variant: &str,
    min_rating: f32,
    min_user_interactions: usize,
) -> anyhow::Result<funnel_api::LoadedDataset> {
    use funnel_api::Dataset;
    let params = MovieLensParams {
        variant: variant.to_string(),
        path: Some(dir.to_str().expect("temporary paths are UTF-8").to_string()),
        min_rating,
        min_user_interactions,
        ..MovieLensParams::default()
    };
    MovieLens::new(params)?.load()
}

/// Writes `files` (name, bytes) into a fresh temporary folder.
pub fn release(files: &[(&str, &[u8])]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary folder");
    for (name, bytes) in files {
        std::fs::write(dir.path().join(name), bytes).expect("writing a fixture");
    }
    dir
}
