//! `[features] type = "watch_history"`: "predict the next watch" examples
//! (Covington et al. 2016, §3.4) from each user's time-ordered positives.
//!
//! Per user, positives are sorted by timestamp with ties kept in file order.
//! The last positive is the test target, the one before it the validation
//! target, and every earlier position `t >= 1` is a training example whose
//! history is the previous `max_history` items. A user with two positives
//! gets a test case but no validation case; one with a single positive gets
//! neither and contributes nothing.

use anyhow::{bail, Result};
use funnel_api::{BuildCx, Example, ExampleSet, Features, LoadedDataset, ParamDoc, Params, Registry};
use serde::{Deserialize, Serialize};

pub fn register(reg: &mut Registry) {
    reg.features::<WatchHistoryParams>(
        "watch_history",
        "Next-watch examples: last positive -> test, second last -> validation, earlier -> train",
        |p, _cx: &BuildCx| {
            if p.max_history == 0 {
                bail!("key `max_history`: must be at least 1");
            }
            Ok(Box::new(WatchHistory { params: p }))
        },
    );
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchHistoryParams {
    pub max_history: usize,
}

impl Default for WatchHistoryParams {
    fn default() -> Self {
        WatchHistoryParams { max_history: 30 }
    }
}

impl Params for WatchHistoryParams {
    const DOCS: &'static [ParamDoc] =
        &[ParamDoc::new("max_history", "Most recent items that form a history (default 30)")];
}

pub struct WatchHistory {
    params: WatchHistoryParams,
}

impl Features for WatchHistory {
    fn build(&self, data: &LoadedDataset) -> Result<ExampleSet> {
        let sequences = time_ordered_sequences(data);
        let mut set = ExampleSet { max_history: self.params.max_history, ..Default::default() };
        for (user, seq) in sequences.iter().enumerate() {
            let user = user as u32;
            let n = seq.len() as u32;
            if n >= 2 {
                set.test.push(Example { user, position: n - 1 });
            }
            if n >= 3 {
                set.validation.push(Example { user, position: n - 2 });
            }
            set.train.extend((1..n.saturating_sub(2)).map(|position| Example { user, position }));
        }
        set.sequences = sequences;
        if set.train.is_empty() {
            bail!(
                "{}: no training examples (every user needs at least 4 positives: \
                 train, validation and test targets after a first history item)",
                data.name
            );
        }
        Ok(set)
    }
}

/// Each user's items sorted by time; the sort is stable so ties keep file order.
fn time_ordered_sequences(data: &LoadedDataset) -> Vec<Vec<u32>> {
    let it = &data.interactions;
    let mut rows: Vec<Vec<(i64, u32)>> = vec![Vec::new(); data.n_users()];
    for i in 0..it.len() {
        rows[it.users[i] as usize].push((it.timestamps[i], it.items[i]));
    }
    rows.into_iter()
        .map(|mut r| {
            r.sort_by_key(|&(t, _)| t);
            r.into_iter().map(|(_, item)| item).collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use funnel_api::{Interactions, ItemCatalog};

    fn dataset(rows: &[(u32, u32, i64)]) -> LoadedDataset {
        let n_users = rows.iter().map(|r| r.0).max().unwrap() as usize + 1;
        let n_items = rows.iter().map(|r| r.1).max().unwrap() as usize + 1;
        LoadedDataset {
            name: "fixture".into(),
            user_raw_ids: (0..n_users as u64).collect(),
            catalog: ItemCatalog { raw_ids: (0..n_items as u64).collect(), ..Default::default() },
            interactions: Interactions {
                users: rows.iter().map(|r| r.0).collect(),
                items: rows.iter().map(|r| r.1).collect(),
                timestamps: rows.iter().map(|r| r.2).collect(),
            },
            ..Default::default()
        }
    }

    fn build(max_history: usize, rows: &[(u32, u32, i64)]) -> ExampleSet {
        WatchHistory { params: WatchHistoryParams { max_history } }.build(&dataset(rows)).unwrap()
    }

    #[test]
    fn last_is_test_second_last_is_validation_rest_is_train() {
        // User 0 watched 10, 11, 12, 13, 14 at t = 1..5 (given out of order).
        let set = build(30, &[(0, 13, 4), (0, 10, 1), (0, 11, 2), (0, 14, 5), (0, 12, 3)]);
        assert_eq!(set.sequences[0], vec![10, 11, 12, 13, 14]);
        let train: Vec<_> = set.train.iter().map(|e| (set.history(*e).to_vec(), set.target(*e))).collect();
        assert_eq!(train, vec![(vec![10], 11), (vec![10, 11], 12)]);
        assert_eq!(set.target(set.validation[0]), 13);
        assert_eq!(set.history(set.validation[0]), &[10, 11, 12]);
        assert_eq!(set.target(set.test[0]), 14);
        assert_eq!(set.seen(set.test[0]), &[10, 11, 12, 13]);
    }

    #[test]
    fn ties_keep_file_order() {
        let set = build(30, &[(0, 5, 7), (0, 3, 7), (0, 4, 7), (0, 9, 1)]);
        assert_eq!(set.sequences[0], vec![9, 5, 3, 4]);
    }

    #[test]
    fn history_is_truncated_to_the_most_recent_items() {
        let rows: Vec<_> = (0..8).map(|i| (0, i, i as i64)).collect();
        let set = build(3, &rows);
        let last_train = *set.train.last().unwrap();
        assert_eq!(set.target(last_train), 5);
        assert_eq!(set.history(last_train), &[2, 3, 4]);
        assert_eq!(set.seen(set.test[0]), &[0, 1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn short_users_get_only_the_cases_they_can_fill() {
        // User 0 has two positives, user 1 three, user 2 four.
        let set = build(
            30,
            &[(0, 1, 1), (0, 2, 2), (1, 1, 1), (1, 2, 2), (1, 3, 3), (2, 1, 1), (2, 2, 2), (2, 3, 3), (2, 4, 4)],
        );
        assert_eq!(set.test.iter().map(|e| e.user).collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(set.validation.iter().map(|e| e.user).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(set.train, vec![Example { user: 2, position: 1 }]);
    }

    #[test]
    fn no_training_example_is_an_error() {
        let err = WatchHistory { params: WatchHistoryParams::default() }
            .build(&dataset(&[(0, 1, 1), (0, 2, 2), (0, 3, 3)]))
            .unwrap_err();
        assert!(err.to_string().contains("no training examples"), "{err}");
    }
}
