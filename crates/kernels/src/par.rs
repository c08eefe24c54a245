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

/// Makes the calling thread the global pool's first worker, beside one pool
/// thread per other core. Parallel work this thread starts (a `join`, a
/// parallel loop, the split products of the `gemm` crate inside dfdx) then
/// runs partly on it: from outside the pool, rayon queues all of it for the
/// pool's threads and puts the caller to sleep until they are done. Call it
/// first thing in `main`, before anything uses the pool; it returns false
/// (and changes nothing) once the pool exists.
pub fn work_on_this_thread() -> bool {
    ThreadPoolBuilder::new().use_current_thread().build_global().is_ok()
}

/// Whether the calling thread is a worker of a pool (the one
/// [`work_on_this_thread`] made, or any other).
pub fn on_pool() -> bool {
    rayon::current_thread_index().is_some()
}

/// Runs `a` on the calling thread and `b` on the pool at the same time, and
/// returns when both are done. Unlike `join` called from outside the pool
/// (which sends both to the pool and puts the caller to sleep), the caller
/// works: only `b` waits for a pool thread to wake.
pub fn beside<A: FnOnce() + Send, B: FnOnce() + Send>(a: A, b: B) {
    rayon::in_place_scope(|scope| {
        scope.spawn(|_| b());
        a();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beside_runs_both_halves_before_returning() {
        let (mut left, mut right) = (vec![0u32; 1000], vec![0u32; 1000]);
        beside(|| left.iter_mut().enumerate().for_each(|(i, x)| *x = i as u32), || right.fill(7));
        assert!(left.iter().enumerate().all(|(i, &x)| x == i as u32));
        assert!(right.iter().all(|&x| x == 7));
        // On a pool of one thread too (the spawned half runs there).
        let (mut a, mut b) = (0, 0);
        with_threads(1, || beside(|| a = 1, || b = 2));
        assert_eq!((a, b), (1, 2));
    }

    #[test]
    fn a_pool_thread_knows_it_is_one() {
        assert!(with_threads(2, on_pool));
        assert!(!std::thread::spawn(on_pool).join().unwrap());
    }
}
