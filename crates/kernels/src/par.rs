//! Parallel loops: rayon's work-stealing pool (already in the build through
//! dfdx and hora) instead of hand-rolled `thread::scope` fan-outs.

pub use rayon::prelude::*;
pub use rayon::{ThreadPool, ThreadPoolBuilder};

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

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
/// works: only `b` waits for a pool thread to wake. `a` never leaves the
/// calling thread, so it need not be `Send`.
pub fn beside<A: FnOnce(), B: FnOnce() + Send>(a: A, b: B) {
    rayon::in_place_scope(|scope| {
        scope.spawn(|_| b());
        a();
    });
}

/// Runs `f` while every other thread of the global pool looks for work
/// without going to sleep, and returns what `f` returns.
///
/// A pool thread that finds no work yields a few dozen times and then sleeps
/// on a futex; the next `beside` or split product must wake it, a system call
/// on the caller's critical path and a scheduler round trip before the other
/// half starts. A training step forks and joins several times, with gaps of
/// single-threaded work between that outlast rayon's yielding, so nearly
/// every fork pays the wake. Here each other pool thread runs a job that
/// executes the pool's work as it appears (`rayon::yield_now`) and yields the
/// core between looks, until `f` returns. The work and how it is split are
/// unchanged, so results are bit for bit those without it.
pub fn awake<R>(f: impl FnOnce() -> R) -> R {
    let caller = rayon::current_thread_index();
    let others = threads().saturating_sub(usize::from(caller.is_some()));
    if others == 0 {
        return f();
    }
    let stop = AtomicBool::new(false);
    let started = AtomicUsize::new(0);
    rayon::in_place_scope(|scope| {
        for _ in 0..others {
            scope.spawn(|_| {
                // The caller may pop one of these while it waits inside `f`;
                // it must not spin there, for `f` could never return.
                if rayon::current_thread_index() == caller {
                    return;
                }
                started.fetch_add(1, Ordering::AcqRel);
                while !stop.load(Ordering::Acquire) {
                    if rayon::yield_now() != Some(rayon::Yield::Executed) {
                        std::thread::yield_now();
                    }
                }
            });
        }
        // Give the sleeping threads a moment to take their jobs, so the
        // caller does not pick one up itself; past that, run anyway.
        let asked = std::time::Instant::now();
        while started.load(Ordering::Acquire) < others && asked.elapsed() < std::time::Duration::from_millis(20) {
            std::thread::yield_now();
        }
        // Set on the way out however `f` leaves, a panic included: the scope
        // waits for the pollers before it returns or unwinds.
        let _stop = StopOnDrop(&stop);
        f()
    })
}

struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
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
    fn work_started_while_awake_runs_and_the_pool_is_left_idle() {
        // From a pool thread (as training runs) and from outside any pool.
        for threads in [1, 2, 4] {
            let sums = with_threads(threads, || {
                awake(|| {
                    (0..50)
                        .map(|round| {
                            let (mut a, mut b) = (0u64, 0u64);
                            beside(|| a = (0..1000u64).sum(), || b = (0..1000u64).map(|x| x * round).sum());
                            let c: u64 = (0..10_000u64).into_par_iter().sum();
                            a + b + c
                        })
                        .sum::<u64>()
                })
            });
            let want: u64 = (0..50u64).map(|r| 499_500 + 499_500 * r + 49_995_000).sum();
            assert_eq!(sums, want, "{threads} threads");
        }
        assert_eq!(awake(|| 7), 7);
        // Nested: an inner `awake` on a pool thread while the outer one holds the others.
        assert_eq!(with_threads(2, || awake(|| awake(|| 3))), 3);
    }

    #[test]
    fn a_panic_inside_awake_unwinds_instead_of_leaving_the_pool_polling() {
        let caught = with_threads(2, || std::panic::catch_unwind(|| awake(|| panic!("inside"))));
        assert!(caught.is_err());
        // The pool is usable afterwards.
        assert_eq!(with_threads(2, || awake(|| 5)), 5);
    }

    #[test]
    fn a_pool_thread_knows_it_is_one() {
        assert!(with_threads(2, on_pool));
        assert!(!std::thread::spawn(on_pool).join().unwrap());
    }
}
