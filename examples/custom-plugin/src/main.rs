//! A `funnel` of one's own: every built-in plugin plus two written here,
//! without touching funnel's source. `cargo run -p custom-plugin -- run
//! examples/custom-plugin/experiment.toml` trains, reports and tracks
//! exactly as `funnel run` does; `-- plugins` lists the two below.

#![forbid(unsafe_code)]

mod clustered;
mod neighbour_negatives;

fn main() -> std::process::ExitCode {
    let mut registry = funnel::plugins::builtin();
    clustered::register(&mut registry);
    neighbour_negatives::register(&mut registry);
    funnel::cli::main(registry)
}
