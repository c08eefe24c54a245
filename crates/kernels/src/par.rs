//! Parallel loops: rayon's work-stealing pool (already in the build through
//! dfdx and hora) instead of hand-rolled `thread::scope` fan-outs.

pub use rayon::prelude::*;
pub use rayon::{ThreadPool, ThreadPoolBuilder};

/// Threads of the global pool: the cores a parallel loop spreads over.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// Runs `f` on a pool of exactly `threads` threads (at least one), so that a
/// measurement or a test can pin the parallelism it reports.
pub fn with_threads<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    match ThreadPoolBuilder::new().num_threads(threads.max(1)).build() {
        Ok(pool) => pool.install(f),
        // A pool that cannot start threads: run on the caller's pool instead.
        Err(_) => f(),
    }
}
