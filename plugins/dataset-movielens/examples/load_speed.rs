//! Load-speed benchmark: reads one release from a folder and prints the
//! counts and the wall time.
//!
//! `cargo run --release -p funnel-dataset-movielens --example load_speed -- DIR VARIANT`

use std::time::Instant;

use anyhow::{bail, Result};
use funnel_api::Dataset;
use funnel_dataset_movielens::{MovieLens, MovieLensParams};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, variant] = args.as_slice() else {
        bail!("usage: load_speed DIR VARIANT (e.g. ../shared/data/ml-1m ml-1m)");
    };
    let params = MovieLensParams { variant: variant.clone(), path: Some(dir.clone()), ..MovieLensParams::default() };
    let start = Instant::now();
    let data = MovieLens::new(params)?.load()?;
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "{}: {} rows read, {} interactions, {} users, {} items in {seconds:.3} s",
        data.name,
        data.raw_rows,
        data.interactions.len(),
        data.n_users(),
        data.n_items()
    );
    Ok(())
}
