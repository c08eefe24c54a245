//! The post-read path every dataset plugin shares: from rows with
//! provisional ids (dense, in whatever order the reader met them) to the
//! kept positives: repeats per `dedup`, users and items under their
//! minimums dropped to a fixed point (a k-core), and final dense indices in
//! order of first appearance among the kept rows, which stay in file order.
//! `interactions` and `movielens` both use it; each maps ids its own way.
//! Explicit negative feedback rows, read into the same provisional ids, are
//! mapped onto the kept users and items by [`feedback`].

use std::collections::{HashMap, HashSet};

use funnel_api::Interactions;

use crate::Dedup;

/// One positive (or feedback row) as read: provisional user and item ids,
/// seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub user: u32,
    pub item: u32,
    pub time: i64,
    /// The outcomes the row meets as bits; 0 when the dataset declares none.
    pub outcomes: u32,
}

/// What is kept.
#[derive(Debug, Clone, Copy)]
pub struct Filters {
    pub dedup: Dedup,
    pub min_user_interactions: usize,
    pub min_item_interactions: usize,
}

/// The kept positives, and the way back to the provisional ids.
#[derive(Debug, Default)]
pub struct Kept {
    pub interactions: Interactions,
    /// Provisional id of each final user, in final order.
    pub users: Vec<u32>,
    /// Provisional id of each final item, in final order.
    pub items: Vec<u32>,
    /// Final index of each provisional user (`u32::MAX` when dropped).
    pub user_index: Vec<u32>,
    /// Final index of each provisional item (`u32::MAX` when dropped).
    pub item_index: Vec<u32>,
    /// Rows dropped as repeats, and by the minimums.
    pub repeated: usize,
    pub by_minimums: usize,
}

/// Applies `filters` to `rows` over `n_users` x `n_items` provisional ids.
/// `interactions.outcomes` holds each kept row's mask, or stays empty when
/// no row has one; under `dedup` first or last the kept row of a pair carries
/// the outcomes of all its rows (a click, then a purchase: one positive, both).
pub fn keep(rows: &[Row], n_users: usize, n_items: usize, filters: Filters) -> Kept {
    let kept = dedup(rows, filters.dedup);
    let repeated = rows.len() - kept.iter().filter(|&&k| k).count();
    let kept = k_core(rows, kept, n_users, n_items, filters);
    let with_outcomes = rows.iter().any(|r| r.outcomes != 0);
    let pair_outcomes = if with_outcomes && filters.dedup != Dedup::All { pair_outcomes(rows) } else { HashMap::new() };
    let mut out =
        Kept { repeated, user_index: vec![u32::MAX; n_users], item_index: vec![u32::MAX; n_items], ..Kept::default() };
    let mut kept_rows = 0;
    for r in rows.iter().zip(&kept).filter(|(_, &k)| k).map(|(r, _)| r) {
        kept_rows += 1;
        if out.user_index[r.user as usize] == u32::MAX {
            out.user_index[r.user as usize] = out.users.len() as u32;
            out.users.push(r.user);
        }
        if out.item_index[r.item as usize] == u32::MAX {
            out.item_index[r.item as usize] = out.items.len() as u32;
            out.items.push(r.item);
        }
        out.interactions.users.push(out.user_index[r.user as usize]);
        out.interactions.items.push(out.item_index[r.item as usize]);
        out.interactions.timestamps.push(r.time);
        if with_outcomes {
            out.interactions.outcomes.push(pair_outcomes.get(&(r.user, r.item)).copied().unwrap_or(r.outcomes));
        }
    }
    out.by_minimums = rows.len() - repeated - kept_rows;
    out
}

/// The outcomes of every (user, item) pair: the union over its rows.
fn pair_outcomes(rows: &[Row]) -> HashMap<(u32, u32), u32> {
    let mut union = HashMap::with_capacity(rows.len());
    for r in rows {
        *union.entry((r.user, r.item)).or_insert(0) |= r.outcomes;
    }
    union
}

/// Explicit negative feedback on the kept users and items: `rows` (in the
/// provisional ids `kept` was built over, file order) mapped to final
/// indices. Rows of dropped users or items go, as does a pair that is also a
/// kept positive (the positive says more); of a repeated pair the earliest
/// row stays (file order among equal times). The result is in file order,
/// `outcomes` empty.
pub fn feedback(rows: &[Row], kept: &Kept) -> Interactions {
    let index = |table: &[u32], id: u32| table.get(id as usize).copied().filter(|&i| i != u32::MAX);
    let mut out = Interactions::default();
    if rows.is_empty() {
        return out;
    }
    let positives: HashSet<(u32, u32)> =
        kept.interactions.users.iter().copied().zip(kept.interactions.items.iter().copied()).collect();
    // Pair -> the row kept for it so far.
    let mut earliest: HashMap<(u32, u32), usize> = HashMap::new();
    let mut mapped = vec![(0, 0); rows.len()];
    for (n, r) in rows.iter().enumerate() {
        let (Some(user), Some(item)) = (index(&kept.user_index, r.user), index(&kept.item_index, r.item)) else {
            continue;
        };
        if positives.contains(&(user, item)) {
            continue;
        }
        mapped[n] = (user, item);
        earliest.entry((user, item)).and_modify(|e| *e = if r.time < rows[*e].time { n } else { *e }).or_insert(n);
    }
    let mut chosen: Vec<usize> = earliest.into_values().collect();
    chosen.sort_unstable();
    for n in chosen {
        out.users.push(mapped[n].0);
        out.items.push(mapped[n].1);
        out.timestamps.push(rows[n].time);
    }
    out
}

/// Which rows survive `dedup`: of each (user, item) pair, the earliest or
/// latest by time (file order among equal times), or all.
fn dedup(rows: &[Row], how: Dedup) -> Vec<bool> {
    if how == Dedup::All {
        return vec![true; rows.len()];
    }
    let mut order: Vec<usize> = (0..rows.len()).collect();
    // Stable: equal times keep file order.
    order.sort_by_key(|&i| rows[i].time);
    if how == Dedup::Last {
        // Reversed, equal times put the later row in the file first.
        order.reverse();
    }
    let mut seen = std::collections::HashSet::with_capacity(rows.len());
    let mut kept = vec![false; rows.len()];
    for i in order {
        kept[i] = seen.insert((rows[i].user, rows[i].item));
    }
    kept
}

/// Drops users and items under their minimum counts until none is.
fn k_core(rows: &[Row], mut kept: Vec<bool>, n_users: usize, n_items: usize, f: Filters) -> Vec<bool> {
    loop {
        let (mut per_user, mut per_item) = (vec![0usize; n_users], vec![0usize; n_items]);
        for (r, _) in rows.iter().zip(&kept).filter(|(_, &k)| k) {
            per_user[r.user as usize] += 1;
            per_item[r.item as usize] += 1;
        }
        let mut changed = false;
        for (r, k) in rows.iter().zip(kept.iter_mut()).filter(|(_, k)| **k) {
            if per_user[r.user as usize] < f.min_user_interactions
                || per_item[r.item as usize] < f.min_item_interactions
            {
                *k = false;
                changed = true;
            }
        }
        if !changed {
            return kept;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: u32, item: u32, time: i64) -> Row {
        Row { user, item, time, outcomes: 0 }
    }

    fn with(outcomes: u32, r: Row) -> Row {
        Row { outcomes, ..r }
    }

    #[test]
    fn kept_rows_are_reindexed_by_first_appearance_in_file_order() {
        // User 2 has one positive and goes; item 9 is then unused.
        let rows = [row(1, 5, 10), row(2, 9, 5), row(0, 5, 7), row(1, 3, 1), row(0, 3, 2)];
        let f = Filters { dedup: Dedup::All, min_user_interactions: 2, min_item_interactions: 1 };
        let k = keep(&rows, 3, 10, f);
        assert_eq!(k.users, [1, 0]);
        assert_eq!(k.items, [5, 3]);
        assert_eq!(k.interactions.users, [0, 1, 0, 1]);
        assert_eq!(k.interactions.items, [0, 0, 1, 1]);
        assert_eq!(k.interactions.timestamps, [10, 7, 1, 2]);
        assert_eq!((k.item_index[9], k.item_index[3]), (u32::MAX, 1));
        assert_eq!((k.user_index[2], k.user_index[0]), (u32::MAX, 1));
        assert_eq!((k.repeated, k.by_minimums), (0, 1));
        assert!(k.interactions.outcomes.is_empty(), "no row has outcomes");
    }

    #[test]
    fn dedup_keeps_one_row_of_a_pair_with_the_outcomes_of_all() {
        // Bits: 1 click, 2 add to cart, 4 purchase. User 0 clicks item 7 at
        // t=1, buys it at t=5 and clicks it again at t=3; user 1 only clicks.
        let rows = [
            with(1, row(0, 7, 1)),
            with(1, row(1, 7, 2)),
            with(4, row(0, 7, 5)),
            with(2, row(0, 8, 4)),
            with(1, row(0, 7, 3)),
        ];
        let keep_by = |dedup| keep(&rows, 2, 9, Filters { dedup, min_user_interactions: 1, min_item_interactions: 1 });
        let first = keep_by(Dedup::First);
        assert_eq!(first.interactions.timestamps, [1, 2, 4]);
        assert_eq!(first.interactions.outcomes, [0b101, 0b001, 0b010]);
        let last = keep_by(Dedup::Last);
        assert_eq!(last.interactions.timestamps, [2, 5, 4]);
        assert_eq!(last.interactions.outcomes, [0b001, 0b101, 0b010]);
        // Every row stays with its own outcomes.
        let all = keep_by(Dedup::All);
        assert_eq!(all.interactions.outcomes, [1, 1, 4, 2, 1]);
    }

    #[test]
    fn feedback_maps_to_kept_users_and_items_and_never_contradicts_a_positive() {
        // Kept: user 0 {items 1, 2}, user 1 {items 2, 3} as final users 0, 1
        // and items 0, 1, 2; user 2 has one positive and goes; item 4 has none.
        let positives = [row(0, 1, 1), row(1, 2, 2), row(0, 2, 3), row(1, 3, 4), row(2, 1, 5)];
        let f = Filters { dedup: Dedup::First, min_user_interactions: 2, min_item_interactions: 1 };
        let k = keep(&positives, 3, 5, f);
        assert_eq!((k.users.as_slice(), k.items.as_slice()), (&[0, 1][..], &[1, 2, 3][..]));
        let rows = [
            row(0, 1, 9), // a positive pair: goes
            row(2, 2, 9), // a dropped user
            row(0, 4, 9), // an item not in the catalog
            row(9, 1, 9), // an id beyond the positives'
            row(1, 1, 8), // later than the next (1, 1) at 6
            row(0, 3, 6),
            row(1, 1, 6), // the earliest (1, 1): stays
            row(1, 1, 6), // as early, later in the file: goes
            row(0, 3, 7),
        ];
        let fb = feedback(&rows, &k);
        assert_eq!((fb.users, fb.items, fb.timestamps), (vec![0, 1], vec![2, 0], vec![6, 6]));
        assert!(fb.outcomes.is_empty());
        assert!(feedback(&[], &k).is_empty());
    }
}
