//! Integration tests: the real `funnel` binary on real files.
//! One test binary (ripgrep's layout), one module per area.

mod bad_input;
mod baselines;
mod engine;
mod interactions;
mod loader_fuzz;
mod mlflow;
mod mlflow_server;
mod movielens;
mod outcomes;
mod resume;
mod retrieval;
mod schedule;
mod slurm;
mod sweep;
mod util;
