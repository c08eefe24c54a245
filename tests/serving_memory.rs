//! Serving holds O(queries x k), never O(queries x items): measured with a
//! counting allocator in a process of its own, so no other test's memory is
//! seen. Before the fix, exact search truncated each query's full score list
//! without releasing it, and a 25M-interaction run's serving grew past 20 GB.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use funnel::api::{EvalCase, ItemIdx, Matrix};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only
// counts the bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is passed on unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn lcg(state: &mut u64) -> f32 {
    *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    ((*state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
}

#[test]
fn serving_memory_is_bounded_by_queries_times_k() {
    let (n_items, n_users, d, k) = (50_000, 4_000, 16, 100);
    let mut state = 1u64;
    let items = Matrix::from_vec(n_items, d, (0..n_items * d).map(|_| lcg(&mut state)).collect());
    let users = Matrix::from_vec(n_users, d, (0..n_users * d).map(|_| lcg(&mut state)).collect());
    let seen: Vec<Vec<ItemIdx>> =
        (0..n_users).map(|u| (0..20).map(|j| ((u * 31 + j * 7) % n_items) as ItemIdx).collect()).collect();
    let cases: Vec<EvalCase<'_>> =
        seen.iter().enumerate().map(|(u, s)| EvalCase { seen: s, target: (u * 13 % n_items) as ItemIdx }).collect();
    let mut index = funnel_index_exact::ExactIndex::new();

    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    funnel::api::Index::build(&mut index, &items).unwrap();
    let evaluator = funnel_eval_full_ranking::FullRanking::new(funnel_eval_full_ranking::FullRankingParams {
        ks: vec![10, 100],
        ..Default::default()
    })
    .unwrap();
    let (serving, _lists) = funnel::serving::measure(&index, 0.0, &items, &users, &cases, &evaluator).unwrap();
    let peak = PEAK.load(Ordering::Relaxed) - before;
    assert_eq!(serving.queries, n_users);
    assert!(serving.recall_vs_exact[&100] == 1.0, "the exact index is its own reference");

    // What must be held: the index's copy of the items, two answer lists of k
    // per query, and per-thread scoring scratch; queries x items would be
    // 4,000 x 50,000 x 8 bytes = 1.6 GB.
    let items_bytes = n_items * d * 4;
    let answers = 2 * n_users * k * std::mem::size_of::<(ItemIdx, f32)>();
    let allowed = items_bytes + 2 * answers + 64 * 1024 * 1024;
    assert!(peak < allowed, "serving peaked at {peak} bytes above its inputs; allowed {allowed}");
}
