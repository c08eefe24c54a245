//! The post-read path every dataset plugin shares: from rows with
//! provisional ids (dense, in whatever order the reader met them) to the
//! kept positives: repeats per `dedup`, users and items under their
//! minimums dropped to a fixed point (a k-core), and final dense indices in
//! order of first appearance among the kept rows, which stay in file order.
//! `interactions` and `movielens` both use it; each maps ids its own way.

use funnel_api::Interactions;

use crate::Dedup;

/// One positive as read: provisional user and item ids, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub user: u32,
    pub item: u32,
    pub time: i64,
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
    /// Final index of each provisional item (`u32::MAX` when dropped).
    pub item_index: Vec<u32>,
    /// Rows dropped as repeats, and by the minimums.
    pub repeated: usize,
    pub by_minimums: usize,
}

/// Applies `filters` to `rows` over `n_users` x `n_items` provisional ids.
pub fn keep(rows: &[Row], n_users: usize, n_items: usize, filters: Filters) -> Kept {
    let kept = dedup(rows, filters.dedup);
    let repeated = rows.len() - kept.iter().filter(|&&k| k).count();
    let kept = k_core(rows, kept, n_users, n_items, filters);
    let mut out = Kept { repeated, item_index: vec![u32::MAX; n_items], ..Kept::default() };
    let mut user_index = vec![u32::MAX; n_users];
    let mut kept_rows = 0;
    for r in rows.iter().zip(&kept).filter(|(_, &k)| k).map(|(r, _)| r) {
        kept_rows += 1;
        if user_index[r.user as usize] == u32::MAX {
            user_index[r.user as usize] = out.users.len() as u32;
            out.users.push(r.user);
        }
        if out.item_index[r.item as usize] == u32::MAX {
            out.item_index[r.item as usize] = out.items.len() as u32;
            out.items.push(r.item);
        }
        out.interactions.users.push(user_index[r.user as usize]);
        out.interactions.items.push(out.item_index[r.item as usize]);
        out.interactions.timestamps.push(r.time);
    }
    out.by_minimums = rows.len() - repeated - kept_rows;
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
        Row { user, item, time }
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
        assert_eq!((k.repeated, k.by_minimums), (0, 1));
    }
}
