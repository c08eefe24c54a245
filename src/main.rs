//! The `funnel` binary: the command line over the built-in plugins.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    funnel::cli::main(funnel::plugins::builtin())
}
