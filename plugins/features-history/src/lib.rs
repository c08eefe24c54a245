//! `[features] type = "watch_history"`: "predict the next watch" examples
//! (Covington et al. 2016, §3.4) from each user's time-ordered positives.
//!
//! Per user, positives are sorted by timestamp with ties kept in file order.
//! The last positive is the test target, the one before it the validation
//! target, and every earlier position `t >= 1` is a training example whose
//! history is the previous `max_history` items. A user with two positives
//! gets a test case but no validation case; one with a single positive gets
//! neither and contributes nothing.
//!
//! Optional side inputs for the model (all off by default):
//! - `items`: plain ID embeddings, or hash embeddings (each item the sum of
//!   `num_hashes` rows of a `buckets`-row table, picked by fixed salted hashes
//!   of its raw id, so the encoding depends on neither item order nor seed).
//! - `item_features` (`genres`) and `user_features` (`gender`, `age`,
//!   `occupation`, `zip`): categorical features; ml-100k's ages in years are
//!   bucketed as ml-1m's age codes so both datasets agree.
//! - `example_age` (Covington §3.3): the age of each training example,
//!   measured back from the end of the training window, so the model can
//!   learn how popularity moves in time; serving asks at age 0.
//! - `examples_per_user` (Covington §3.4): a fixed number of training
//!   examples per user, drawn with the experiment seed, so heavy users do not
//!   dominate the loss.

#![forbid(unsafe_code)]

mod split;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};
use funnel_api::{
    BuildCx, Categorical, Example, ExampleSet, Features, ItemEncoding, LoadedDataset, Registry, SideInputs,
    UserFeedback,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

pub use split::{Cutoff, Split};

pub fn register(reg: &mut Registry) {
    reg.features::<WatchHistoryParams>(
        "watch_history",
        "Next-watch examples: last positive -> test, second last -> validation, earlier -> train",
        |p, cx: &BuildCx| {
            p.validate()?;
            Ok(Box::new(WatchHistory { params: p, seed: cx.seed }))
        },
    );
}

/// The item features `item_features` may name.
pub const ITEM_FEATURES: [&str; 2] = ["genres", "categories"];

/// Parameters of `watch_history`.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchHistoryParams {
    /// Most recent items that form a history.
    #[param(default = 30)]
    pub max_history: usize,
    /// How item IDs enter the model: { type = "id" }, one embedding row per
    /// item, or { type = "hashed", buckets = N, num_hashes = k } (k default
    /// 2), each item the sum of k rows of an N-row table picked by k fixed
    /// salted hashes of its raw id, the same for every seed and item order;
    /// two hashes of one item may pick the same row, which then counts twice.
    #[param(default = ItemIds::Id {})]
    pub items: ItemIds,
    /// Categorical item features for the model: "genres" or "categories"
    /// (each item's list: MovieLens's genres, an item table's categories;
    /// multi-hot).
    pub item_features: Vec<String>,
    /// Categorical user features: any user attribute of the dataset
    /// (MovieLens: "gender", "age" (ml-1m's age codes; ages in years are
    /// bucketed the same way), "occupation", "zip" (its first zip_prefix
    /// characters); `interactions`: its user table's feature columns); a
    /// user without the attribute has no value.
    pub user_features: Vec<String>,
    /// Leading characters of the zip code the "zip" user feature keeps.
    #[param(default = 2)]
    pub zip_prefix: usize,
    /// Give the model each training example's age: time from its timestamp
    /// to the end of the training window over the window's span, in [0, 1];
    /// serving uses 0 (Covington et al. §3.3).
    #[param(default = false)]
    pub example_age: bool,
    /// How positives become training, validation and test targets:
    /// { type = "leave_last_out" }; { type = "temporal", validation_start =
    /// C, test_start = C } with C a date ("2003-01-01") or a quantile of
    /// all timestamps (0.9), the leakage-free protocol; or { type =
    /// "random_holdout", fraction = 0.2 }, a seeded share of each user's
    /// positives held out (one validation target, the others test
    /// targets). The report names the protocol.
    #[param(default = Split::LeaveLastOut {})]
    pub split: Split,
    /// At most this many training examples per user, drawn uniformly with
    /// the experiment seed, so heavy users do not dominate (Covington et al.
    /// §3.4); 0 keeps all.
    #[param(default = 0)]
    pub examples_per_user: usize,
}

/// How item IDs become embedding rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ItemIds {
    /// One row per item.
    Id {},
    /// `num_hashes` of `buckets` rows per item, chosen by salted hashes of the
    /// item's raw id.
    Hashed {
        buckets: usize,
        #[serde(default = "default_num_hashes")]
        num_hashes: usize,
    },
}

fn default_num_hashes() -> usize {
    2
}

impl WatchHistoryParams {
    /// Checks what can be checked without data.
    pub fn validate(&self) -> Result<()> {
        if self.max_history == 0 {
            bail!("key `max_history`: must be at least 1");
        }
        if let ItemIds::Hashed { buckets, num_hashes } = self.items {
            if buckets == 0 {
                bail!("key `items.buckets`: must be at least 1");
            }
            if buckets as u64 > u64::from(u32::MAX) + 1 {
                bail!("key `items.buckets`: must be at most {}", u64::from(u32::MAX) + 1);
            }
            if num_hashes == 0 {
                bail!("key `items.num_hashes`: must be at least 1");
            }
        }
        check_names("item_features", "item feature", &self.item_features, Some(&ITEM_FEATURES))?;
        // User attributes differ by dataset: checked against the data when it is loaded.
        check_names("user_features", "user feature", &self.user_features, None)?;
        if self.zip_prefix == 0 {
            bail!("key `zip_prefix`: must be at least 1");
        }
        self.split.validate()?;
        Ok(())
    }
}

/// Every name is supported and listed once.
fn check_names(key: &str, what: &str, names: &[String], supported: Option<&[&str]>) -> Result<()> {
    for (i, name) in names.iter().enumerate() {
        if let Some(supported) = supported.filter(|s| !s.contains(&name.as_str())) {
            let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
            bail!("key `{key}`: unknown {what} \"{name}\"; supported: {}", list.join(", "));
        }
        if names[..i].contains(name) {
            bail!("key `{key}`: {what} \"{name}\" is listed twice");
        }
    }
    Ok(())
}

pub struct WatchHistory {
    params: WatchHistoryParams,
    /// `[experiment] seed`, for `examples_per_user`.
    seed: u64,
}

/// Mixed into the seed for the `examples_per_user` draw ("examples" in ASCII),
/// so it is a stream of its own.
const EXAMPLES_STREAM: u64 = 0x6578_616d_706c_6573;
/// Stream of the random holdout's draws.
const SPLIT_STREAM: u64 = 0x7370_6c69_7473_706c;

impl Features for WatchHistory {
    fn build(&self, data: &LoadedDataset) -> Result<ExampleSet> {
        let p = &self.params;
        let (mut sequences, mut times, mut outcomes) = time_ordered_sequences(data)?;
        let mut set = ExampleSet { max_history: p.max_history, ..Default::default() };
        let mut rng = StdRng::seed_from_u64(self.seed ^ EXAMPLES_STREAM);
        let mut split_rng = StdRng::seed_from_u64(self.seed ^ SPLIT_STREAM);
        let assigned = split::assign(&p.split, &mut sequences, &mut times, &mut outcomes, &mut split_rng)?;
        set.validation = assigned.validation;
        set.test = assigned.test;
        set.protocol = assigned.protocol;
        // First and last timestamp of every training position (before
        // `examples_per_user`, so the window does not depend on the seed).
        let mut window: Option<(i64, i64)> = None;
        for (user, train) in assigned.train.iter().enumerate() {
            for &position in train {
                let t = times[user][position as usize];
                window = Some(window.map_or((t, t), |(lo, hi)| (lo.min(t), hi.max(t))));
            }
            let user = user as u32;
            let len = train.len();
            if p.examples_per_user > 0 && len > p.examples_per_user {
                let mut kept = rand::seq::index::sample(&mut rng, len, p.examples_per_user).into_vec();
                kept.sort_unstable();
                set.train.extend(kept.into_iter().map(|i| Example { user, position: train[i], ahead: 0 }));
            } else {
                set.train.extend(train.iter().map(|&position| Example { user, position, ahead: 0 }));
            }
        }
        if set.train.is_empty() {
            bail!(
                "{}: no training examples under the split ({}; with leave_last_out every user needs at least 4 \
                 positives: train, validation and test targets after a first history item)",
                data.name,
                set.protocol
            );
        }
        set.inputs = self.side_inputs(data)?;
        if p.example_age {
            let (start, end) = window.expect("training examples exist");
            set.ages = example_ages(&times, start, end);
        }
        set.sequences = sequences;
        set.timestamps = times;
        set.outcomes.clone_from(&data.outcomes);
        set.target_outcomes = outcomes;
        set.feedback = user_feedback(data);
        Ok(set)
    }
}

impl WatchHistory {
    fn side_inputs(&self, data: &LoadedDataset) -> Result<SideInputs> {
        let p = &self.params;
        let items = match p.items {
            ItemIds::Id {} => ItemEncoding::identity(data.n_items()),
            ItemIds::Hashed { buckets, num_hashes } => hashed_items(&data.catalog.raw_ids, buckets, num_hashes),
        };
        let item_fields = p.item_features.iter().map(|name| item_feature(data, name)).collect::<Result<_>>()?;
        let user_fields =
            p.user_features.iter().map(|name| user_feature(data, name, p.zip_prefix)).collect::<Result<_>>()?;
        Ok(SideInputs { items, item_fields, user_fields, example_age: p.example_age, outcomes: 0 })
    }
}

/// Each user's items, timestamps and outcome masks.
type Sequences = (Vec<Vec<u32>>, Vec<Vec<i64>>, Vec<Vec<u32>>);

/// Each user's items sorted by time, with their timestamps and, when the
/// dataset declares outcomes, their outcome masks (else no masks at all);
/// the sort is stable so ties keep file order.
fn time_ordered_sequences(data: &LoadedDataset) -> Result<Sequences> {
    let it = &data.interactions;
    let with_outcomes = !data.outcomes.is_empty();
    if with_outcomes && it.outcomes.len() != it.len() {
        bail!(
            "dataset {} declares outcomes but gives {} outcome masks for {} positives",
            data.name,
            it.outcomes.len(),
            it.len()
        );
    }
    let mut rows: Vec<Vec<(i64, u32, u32)>> = vec![Vec::new(); data.n_users()];
    for i in 0..it.len() {
        let mask = if with_outcomes { it.outcomes[i] } else { 0 };
        rows[it.users[i] as usize].push((it.timestamps[i], it.items[i], mask));
    }
    let (mut sequences, mut times, mut outcomes) = (Vec::new(), Vec::new(), Vec::new());
    for mut r in rows {
        r.sort_by_key(|&(t, _, _)| t);
        sequences.push(r.iter().map(|&(_, item, _)| item).collect());
        times.push(r.iter().map(|&(t, _, _)| t).collect());
        if with_outcomes {
            outcomes.push(r.iter().map(|&(_, _, mask)| mask).collect());
        }
    }
    Ok((sequences, times, outcomes))
}

/// Each user's explicit negative feedback sorted by time (stable, so ties
/// keep file order); none at all when the dataset has none.
fn user_feedback(data: &LoadedDataset) -> Vec<UserFeedback> {
    let f = &data.feedback;
    if f.is_empty() {
        return Vec::new();
    }
    let mut rows: Vec<Vec<(i64, u32)>> = vec![Vec::new(); data.n_users()];
    for k in 0..f.len() {
        rows[f.users[k] as usize].push((f.timestamps[k], f.items[k]));
    }
    rows.into_iter()
        .map(|mut r| {
            r.sort_by_key(|&(t, _)| t);
            let (times, items) = r.into_iter().unzip();
            UserFeedback { items, times }
        })
        .collect()
}

/// Age of every position: `(end - t) / (end - start)` clamped to `[0, 1]`,
/// so the latest training example is 0 and the earliest 1; all 0 when the
/// window has no span.
fn example_ages(times: &[Vec<i64>], start: i64, end: i64) -> Vec<Vec<f32>> {
    let span = end.saturating_sub(start) as f64;
    times
        .iter()
        .map(|ts| {
            ts.iter()
                .map(|&t| if span > 0.0 { ((end as f64 - t as f64) / span).clamp(0.0, 1.0) as f32 } else { 0.0 })
                .collect()
        })
        .collect()
}

/// SplitMix64's output function: a bijective 64-bit mixer.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bucket of `raw_id` under hash function `j`: a fixed salt per function
/// (never the experiment seed), so the encoding is the same in every run.
fn hash_bucket(raw_id: u64, j: usize, buckets: usize) -> u32 {
    let salt = splitmix64(0x6861_7368_0000_0000 | j as u64);
    (splitmix64(raw_id ^ salt) % buckets as u64) as u32
}

/// An id as the number hashed: its value when it is a decimal number
/// (MovieLens's ids), else FNV-1a of its bytes (an ASIN, a URL).
fn id_key(raw_id: &str) -> u64 {
    match raw_id.parse::<u64>() {
        Ok(v) if v.to_string() == raw_id => v,
        _ => raw_id.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)),
    }
}

/// A hash embedding (simplified from Svenstrup et al. 2017): item `i` is the
/// sum of rows `hash_j(raw_ids[i]) % buckets` for `j < num_hashes`. Two
/// hashes of one item may land in the same row, which is then summed twice.
fn hashed_items(raw_ids: &[String], buckets: usize, num_hashes: usize) -> ItemEncoding {
    let ids =
        raw_ids.iter().flat_map(|raw| (0..num_hashes).map(move |j| hash_bucket(id_key(raw), j, buckets))).collect();
    ItemEncoding::from_ids(buckets, num_hashes, ids)
}

/// Ids of `values` sorted, for stable ids.
fn vocabulary<'a>(values: impl IntoIterator<Item = &'a str>) -> BTreeMap<&'a str, u32> {
    let distinct: BTreeSet<&str> = values.into_iter().collect();
    distinct.into_iter().enumerate().map(|(i, v)| (v, i as u32)).collect()
}

fn item_feature(data: &LoadedDataset, name: &str) -> Result<Categorical> {
    match name {
        // One list per item, whatever the data calls it: MovieLens's genres,
        // an `interactions` item table's categories.
        "genres" | "categories" => {
            let genres = &data.catalog.genres;
            let vocab = vocabulary(genres.iter().flatten().map(String::as_str));
            if vocab.is_empty() {
                bail!("item feature `{name}`: dataset {} has no {name} for any item", data.name);
            }
            let lists = (0..data.n_items()).map(|i| {
                let mut ids: Vec<u32> = genres.get(i).into_iter().flatten().map(|g| vocab[g.as_str()]).collect();
                ids.sort_unstable();
                ids.dedup();
                ids
            });
            Ok(Categorical::from_lists(name, vocab.len(), lists))
        }
        other => bail!("unknown item feature \"{other}\""),
    }
}

fn user_feature(data: &LoadedDataset, name: &str, zip_prefix: usize) -> Result<Categorical> {
    let Some(column) = data.user_attributes.get(name) else {
        let known: Vec<String> = data.user_attributes.keys().map(|k| format!("\"{k}\"")).collect();
        bail!(
            "user feature `{name}`: dataset {} has no user attribute \"{name}\" (it has {})",
            data.name,
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        );
    };
    if column.len() != data.n_users() {
        bail!(
            "user feature `{name}`: dataset {} gives {} values of \"{name}\" for {} users",
            data.name,
            column.len(),
            data.n_users()
        );
    }
    let values: Vec<Option<String>> = column
        .iter()
        .enumerate()
        .map(|(u, raw)| match raw.as_str() {
            "" => Ok(None),
            v => match name {
                "age" => age_bucket(v).map(|b| Some(b.to_string())).ok_or_else(|| {
                    anyhow::anyhow!(
                        "user feature `age`: dataset {} gives user {} the age `{v}`, not a whole number of years",
                        data.name,
                        data.user_raw_ids.get(u).cloned().unwrap_or_else(|| u.to_string())
                    )
                }),
                "zip" => Ok(Some(v.chars().take(zip_prefix).collect())),
                _ => Ok(Some(v.to_string())),
            },
        })
        .collect::<Result<_>>()?;
    let vocab = vocabulary(values.iter().flatten().map(String::as_str));
    let lists = values.iter().map(|v| v.as_deref().map(|v| vec![vocab[v]]).unwrap_or_default());
    Ok(Categorical::from_lists(name, vocab.len(), lists))
}

/// ml-1m's age code of an age in years: under 18 -> 1, 18-24 -> 18, 25-34 ->
/// 25, 35-44 -> 35, 45-49 -> 45, 50-55 -> 50, 56 and over -> 56. Every code
/// is its own bucket, so ml-1m's codes pass through unchanged.
fn age_bucket(age: &str) -> Option<u32> {
    let years: u32 = age.trim().parse().ok()?;
    Some(match years {
        0..=17 => 1,
        18..=24 => 18,
        25..=34 => 25,
        35..=44 => 35,
        45..=49 => 45,
        50..=55 => 50,
        _ => 56,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use funnel_api::{parse_params, toml, ComponentKind, Interactions, ItemCatalog, Queries};

    fn dataset(rows: &[(u32, u32, i64)]) -> LoadedDataset {
        let n_users = rows.iter().map(|r| r.0).max().unwrap() as usize + 1;
        let n_items = rows.iter().map(|r| r.1).max().unwrap() as usize + 1;
        LoadedDataset {
            name: "fixture".into(),
            user_raw_ids: (0..n_users).map(|u| u.to_string()).collect(),
            catalog: ItemCatalog { raw_ids: (0..n_items).map(|i| i.to_string()).collect(), ..Default::default() },
            interactions: Interactions {
                users: rows.iter().map(|r| r.0).collect(),
                items: rows.iter().map(|r| r.1).collect(),
                timestamps: rows.iter().map(|r| r.2).collect(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn with(params: WatchHistoryParams, seed: u64) -> WatchHistory {
        params.validate().unwrap();
        WatchHistory { params, seed }
    }

    fn build(max_history: usize, rows: &[(u32, u32, i64)]) -> ExampleSet {
        with(WatchHistoryParams { max_history, ..Default::default() }, 0).build(&dataset(rows)).unwrap()
    }

    /// Parameters from TOML text, as the registry parses them.
    fn params(text: &str) -> Result<WatchHistoryParams> {
        let p: WatchHistoryParams = parse_params(text.parse::<toml::Table>().unwrap())?;
        p.validate()?;
        Ok(p)
    }

    fn error(text: &str) -> String {
        format!("{:#}", params(text).unwrap_err())
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
        assert_eq!(set.train, vec![Example { user: 2, position: 1, ahead: 0 }]);
    }

    #[test]
    fn no_training_example_is_an_error() {
        let err =
            with(WatchHistoryParams::default(), 0).build(&dataset(&[(0, 1, 1), (0, 2, 2), (0, 3, 3)])).unwrap_err();
        assert!(err.to_string().contains("no training examples"), "{err}");
    }

    /// `rows` with outcomes "click" (bit 0) and "purchase" (bit 1): each
    /// row's mask is its fourth field.
    fn with_outcomes(rows: &[(u32, u32, i64, u32)]) -> LoadedDataset {
        let mut d = dataset(&rows.iter().map(|r| (r.0, r.1, r.2)).collect::<Vec<_>>());
        d.outcomes = vec!["click".into(), "purchase".into()];
        d.interactions.outcomes = rows.iter().map(|r| r.3).collect();
        d
    }

    #[test]
    fn outcomes_and_feedback_follow_their_items_in_time_order() {
        // User 0 at t = 4, 1, 2, 5, 3 (file order); user 1 ties at t = 7.
        let mut d = with_outcomes(&[
            (0, 13, 4, 0b01),
            (0, 10, 1, 0b11),
            (1, 20, 7, 0b10),
            (0, 11, 2, 0b01),
            (0, 14, 5, 0b10),
            (1, 21, 7, 0b01),
            (0, 12, 3, 0b01),
            (1, 22, 9, 0b11),
        ]);
        // User 1 dislikes 14 at t = 8, then 10 and 11 tied at t = 3; user 0 nothing.
        d.feedback = Interactions {
            users: vec![1, 1, 1],
            items: vec![14, 10, 11],
            timestamps: vec![8, 3, 3],
            outcomes: Vec::new(),
        };
        let set = build_from(&d, WatchHistoryParams::default());
        assert_eq!(set.sequences, [vec![10, 11, 12, 13, 14], vec![20, 21, 22]]);
        assert_eq!(set.outcomes, ["click", "purchase"]);
        assert_eq!(set.target_outcomes, [vec![0b11, 0b01, 0b01, 0b01, 0b10], vec![0b10, 0b01, 0b11]]);
        assert_eq!(set.target_outcomes(set.test[0]), 0b10);
        assert_eq!(set.target_outcomes(set.validation[1]), 0b01);
        assert_eq!(
            set.feedback,
            [UserFeedback::default(), UserFeedback { items: vec![10, 11, 14], times: vec![3, 3, 8] }]
        );

        // Without outcomes or feedback there are none, and each target is bit 0.
        let plain = build(30, &[(0, 13, 4), (0, 10, 1), (0, 11, 2), (0, 14, 5)]);
        assert!(plain.outcomes.is_empty() && plain.target_outcomes.is_empty() && plain.feedback.is_empty());
        assert_eq!(plain.target_outcomes(plain.test[0]), 1);
    }

    fn build_from(d: &LoadedDataset, p: WatchHistoryParams) -> ExampleSet {
        with(p, 0).build(d).unwrap()
    }

    #[test]
    fn random_holdout_keeps_each_outcome_with_its_item() {
        // Two users of 12 positives; item i carries mask i % 3 + 1.
        let rows: Vec<_> = (0..2).flat_map(|u| (0..12).map(move |i| (u, i, i as i64, i % 3 + 1))).collect();
        let p = WatchHistoryParams { split: Split::RandomHoldout { fraction: 0.3 }, ..Default::default() };
        let set = build_from(&with_outcomes(&rows), p);
        for (seq, masks) in set.sequences.iter().zip(&set.target_outcomes) {
            assert_ne!(*seq, (0..12).collect::<Vec<_>>(), "held-out items moved last");
            assert_eq!(*masks, seq.iter().map(|i| i % 3 + 1).collect::<Vec<_>>());
        }
        for &ex in set.test.iter().chain(&set.validation) {
            assert_eq!(set.target_outcomes(ex), set.target(ex) % 3 + 1);
        }
    }

    #[test]
    fn outcomes_without_a_mask_per_positive_are_an_error() {
        let mut d = with_outcomes(&[(0, 0, 1, 1), (0, 1, 2, 1), (0, 2, 3, 1), (0, 3, 4, 1)]);
        d.interactions.outcomes.pop();
        let e = with(WatchHistoryParams::default(), 0).build(&d).unwrap_err().to_string();
        assert_eq!(e, "dataset fixture declares outcomes but gives 3 outcome masks for 4 positives");
    }

    #[test]
    fn defaults_are_plain_ids_and_no_side_features() {
        let set = build(30, &[(0, 1, 1), (0, 2, 2), (0, 3, 3), (0, 0, 4)]);
        assert_eq!(set.inputs, SideInputs { items: ItemEncoding::identity(4), ..Default::default() });
        assert!(set.ages.is_empty());

        let mut reg = Registry::new();
        register(&mut reg);
        let info = reg.info(ComponentKind::Features, "watch_history").unwrap();
        let shown: Vec<(&str, &str)> = info.params.iter().map(|(k, d, _)| (k.as_str(), d.as_str())).collect();
        assert_eq!(
            shown,
            [
                ("max_history", "30"),
                ("items", "{ type = \"id\" }"),
                ("item_features", "[]"),
                ("user_features", "[]"),
                ("zip_prefix", "2"),
                ("example_age", "false"),
                ("split", "{ type = \"leave_last_out\" }"),
                ("examples_per_user", "0"),
            ]
        );
        assert!(info.params.iter().all(|(_, _, doc)| !doc.is_empty() && !doc.contains("(default ")));
        assert_eq!(params("").unwrap(), WatchHistoryParams::default());
        // The resolved table round-trips, nested `items` included.
        let resolved = reg.resolve(ComponentKind::Features, "watch_history", toml::Table::new()).unwrap();
        let text = toml::to_string(&resolved).unwrap();
        assert_eq!(parse_params::<WatchHistoryParams>(text.parse().unwrap()).unwrap(), WatchHistoryParams::default());
    }

    #[test]
    fn item_ids_parse_from_toml() {
        assert_eq!(params("items = { type = \"id\" }").unwrap().items, ItemIds::Id {});
        let p = params("items = { type = \"hashed\", buckets = 100, num_hashes = 3 }").unwrap();
        assert_eq!(p.items, ItemIds::Hashed { buckets: 100, num_hashes: 3 });
        let p = params("[items]\ntype = \"hashed\"\nbuckets = 7").unwrap();
        assert_eq!(p.items, ItemIds::Hashed { buckets: 7, num_hashes: 2 });
    }

    #[test]
    fn bad_keys_are_named() {
        assert_eq!(error("max_history = 0"), "key `max_history`: must be at least 1");
        assert_eq!(error("items = { type = \"hashed\", buckets = 0 }"), "key `items.buckets`: must be at least 1");
        assert_eq!(
            error("items = { type = \"hashed\", buckets = 5, num_hashes = 0 }"),
            "key `items.num_hashes`: must be at least 1"
        );
        assert_eq!(error("zip_prefix = 0"), "key `zip_prefix`: must be at least 1");
        let e = error("items = { type = \"hashed\" }");
        assert!(e.contains("items") && e.contains("buckets"), "{e}");
        let e = error("items = { type = \"bloom\" }");
        assert!(e.contains("items") && e.contains("bloom") && e.contains("hashed"), "{e}");
        let e = error("items = { type = \"hashed\", buckets = 5, hashes = 2 }");
        assert!(e.contains("items") && e.contains("hashes"), "{e}");
        let e = error("items = { type = \"id\", buckets = 5 }");
        assert!(e.contains("items") && e.contains("buckets"), "{e}");
        assert_eq!(
            error("item_features = [\"tags\"]"),
            "key `item_features`: unknown item feature \"tags\"; supported: \"genres\", \"categories\""
        );
        assert_eq!(
            error("user_features = [\"age\", \"age\"]"),
            "key `user_features`: user feature \"age\" is listed twice"
        );
        assert!(error("examples_per_user = -1").starts_with("key `examples_per_user`"));
        let e = error("split = { type = \"temporal\", test_start = 1.5, validation_start = 0.5 }");
        assert!(e.contains("split.test_start") && e.contains("(0, 1)"), "{e}");
        let e = error("split = { type = \"temporal\", test_start = \"soon\", validation_start = 0.5 }");
        assert!(e.contains("\"soon\" is not a date"), "{e}");
        assert!(error("split = { type = \"weekly\" }").contains("weekly"));
        assert!(error("split = { type = \"temporal\", test_start = 0.9 }").contains("validation_start"));
        assert!(error("example_ages = true").contains("example_ages"));
    }

    /// 4 items with raw ids 40, 10, 30, 20 and one user watching them all.
    fn catalog_fixture(raw_ids: &[u64]) -> LoadedDataset {
        let mut d = dataset(&[(0, 0, 1), (0, 1, 2), (0, 2, 3), (0, 3, 4)]);
        d.catalog.raw_ids = raw_ids.iter().map(u64::to_string).collect();
        d
    }

    fn hashed(buckets: usize, num_hashes: usize, seed: u64, data: &LoadedDataset) -> ItemEncoding {
        let p = WatchHistoryParams { items: ItemIds::Hashed { buckets, num_hashes }, ..Default::default() };
        with(p, seed).build(data).unwrap().inputs.items
    }

    #[test]
    fn hashed_ids_are_in_range_deterministic_and_follow_the_raw_id() {
        let d = catalog_fixture(&[40, 10, 30, 20]);
        let enc = hashed(50, 3, 1, &d);
        assert_eq!((enc.rows, enc.per_item, enc.items()), (50, 3, 4));
        assert!((0..4).all(|i| enc.ids(i).iter().all(|&r| r < 50)));
        // Neither the seed nor the item order changes an item's rows.
        assert_eq!(hashed(50, 3, 999, &d), enc);
        let shuffled = hashed(50, 3, 1, &catalog_fixture(&[20, 30, 40, 10]));
        for (i, j) in [(0, 2), (1, 3), (2, 1), (3, 0)] {
            assert_eq!(enc.ids(i), shuffled.ids(j));
        }
        // The first hash function does not depend on how many there are.
        let one = hashed(50, 1, 1, &d);
        assert!((0..4).all(|i| one.ids(i)[0] == enc.ids(i)[0]));
        // Pinned, so that saved models keep their meaning across versions.
        assert_eq!(
            (0..4).map(|i| enc.ids(i).to_vec()).collect::<Vec<_>>(),
            (0..4)
                .map(|i| (0..3).map(|j| hash_bucket(id_key(&d.catalog.raw_ids[i]), j, 50)).collect::<Vec<_>>())
                .collect::<Vec<_>>()
        );
        assert_eq!([hash_bucket(1, 0, 1000), hash_bucket(1, 1, 1000), hash_bucket(2, 0, 1000)], PINNED);
        // Decimal ids hash by value (so MovieLens keeps its buckets); others by their bytes.
        assert_eq!(id_key("7"), 7);
        assert_ne!(id_key("007"), 7);
        assert_eq!(id_key("B00X"), id_key("B00X"));
        assert_ne!(id_key("B00X"), id_key("B00Y"));
        // A single bucket takes everything.
        assert!(hashed(1, 2, 0, &d).ids(3) == [0, 0]);
    }

    /// `hash_bucket` of (raw id, function) = (1, 0), (1, 1), (2, 0) into 1000 buckets.
    const PINNED: [u32; 3] = [973, 341, 294];

    #[test]
    fn hashes_spread_items_over_the_buckets() {
        let raw: Vec<String> = (1..=10_000).map(|i: u64| i.to_string()).collect();
        let enc = hashed_items(&raw, 100, 2);
        let mut counts = [0usize; 100];
        (0..10_000).flat_map(|i| enc.ids(i).to_vec()).for_each(|r| counts[r as usize] += 1);
        // 200 expected per bucket; a fair hash stays well within +-30%.
        assert!(counts.iter().all(|&c| (140..=260).contains(&c)), "{counts:?}");
        // Text ids (ASINs) spread as well.
        let asins: Vec<String> = (1..=10_000).map(|i| format!("B{i:09}")).collect();
        let by_text = hashed_items(&asins, 100, 2);
        let mut counts = [0usize; 100];
        (0..10_000).flat_map(|i| by_text.ids(i).to_vec()).for_each(|r| counts[r as usize] += 1);
        assert!(counts.iter().all(|&c| (140..=260).contains(&c)), "{counts:?}");
        // The two functions disagree on most items.
        let same = (0..10_000).filter(|&i| enc.ids(i)[0] == enc.ids(i)[1]).count();
        assert!(same < 300, "{same}");
    }

    #[test]
    fn genres_become_a_sorted_multi_hot_feature() {
        let mut d = catalog_fixture(&[40, 10, 30, 20]);
        d.catalog.genres = vec![
            vec!["Drama".into(), "Comedy".into()],
            vec![],
            vec!["Action".into(), "Drama".into(), "Action".into()],
            vec!["Comedy".into()],
        ];
        let p = WatchHistoryParams { item_features: vec!["genres".into()], ..Default::default() };
        let fields = with(p.clone(), 0).build(&d).unwrap().inputs.item_fields;
        assert_eq!(fields.len(), 1);
        let g = &fields[0];
        assert_eq!((g.name.as_str(), g.cardinality, g.entities()), ("genres", 3, 4));
        // Action 0, Comedy 1, Drama 2.
        assert_eq!([g.values(0), g.values(1), g.values(2), g.values(3)], [&[1, 2][..], &[], &[0, 2], &[1]]);

        // "categories" names the same lists (an `interactions` item table's).
        let c = WatchHistoryParams { item_features: vec!["categories".into()], ..Default::default() };
        let same = &with(c.clone(), 0).build(&d).unwrap().inputs.item_fields[0];
        assert_eq!((same.name.as_str(), same.cardinality), ("categories", 3));
        assert_eq!([same.values(0), same.values(2)], [&[1, 2][..], &[0, 2]]);

        d.catalog.genres = vec![vec![]; 4];
        let e = with(p, 0).build(&d).unwrap_err().to_string();
        assert_eq!(e, "item feature `genres`: dataset fixture has no genres for any item");
        let e = with(c, 0).build(&d).unwrap_err().to_string();
        assert_eq!(e, "item feature `categories`: dataset fixture has no categories for any item");
    }

    fn attributes(columns: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        columns.iter().map(|(k, v)| (k.to_string(), v.iter().map(std::string::ToString::to_string).collect())).collect()
    }

    /// Four users of four positives each; user 3 is unknown to the users file.
    fn users_fixture(columns: &[(&str, &[&str])]) -> LoadedDataset {
        let rows: Vec<_> = (0..4).flat_map(|u| (0..4).map(move |i| (u, i, i as i64))).collect();
        let mut d = dataset(&rows);
        d.user_raw_ids = ["11", "12", "13", "14"].map(String::from).to_vec();
        d.user_attributes = attributes(columns);
        d
    }

    fn user_fields(d: &LoadedDataset, names: &[&str], zip_prefix: usize) -> Result<Vec<Categorical>> {
        let p = WatchHistoryParams {
            user_features: names.iter().map(std::string::ToString::to_string).collect(),
            zip_prefix,
            ..Default::default()
        };
        Ok(with(p, 0).build(d)?.inputs.user_fields)
    }

    fn lists(c: &Categorical) -> Vec<Vec<u32>> {
        (0..c.entities()).map(|e| c.values(e).to_vec()).collect()
    }

    #[test]
    fn user_features_map_sorted_values_and_leave_unknown_users_empty() {
        // ml-1m style: age codes, occupation codes.
        let d = users_fixture(&[
            ("gender", &["M", "F", "M", ""]),
            ("age", &["56", "1", "25", ""]),
            ("occupation", &["16", "10", "4", ""]),
            ("zip", &["55455-1234", "48067", "T8H1N", ""]),
        ]);
        let f = user_fields(&d, &["gender", "age", "occupation", "zip"], 2).unwrap();
        let names: Vec<_> = f.iter().map(|c| (c.name.as_str(), c.cardinality, c.entities())).collect();
        assert_eq!(names, [("gender", 2, 4), ("age", 3, 4), ("occupation", 3, 4), ("zip", 3, 4)]);
        assert_eq!(lists(&f[0]), [vec![1], vec![0], vec![1], vec![]]); // F, M
        assert_eq!(lists(&f[1]), [vec![2], vec![0], vec![1], vec![]]); // "1" < "25" < "56"
        assert_eq!(lists(&f[2]), [vec![1], vec![0], vec![2], vec![]]); // "10" < "16" < "4"
        assert_eq!(lists(&f[3]), [vec![1], vec![0], vec![2], vec![]]); // "48" < "55" < "T8"
                                                                       // Longer prefixes separate more; a prefix past the end keeps it whole.
        let zip = &user_fields(&d, &["zip"], 9).unwrap()[0];
        assert_eq!((zip.cardinality, lists(zip)), (3, vec![vec![1], vec![0], vec![2], vec![]]));
        let zip = &user_fields(&d, &["zip"], 1).unwrap()[0];
        assert_eq!((zip.cardinality, lists(zip)), (3, vec![vec![1], vec![0], vec![2], vec![]]));
        // Only the features asked for, in the order asked.
        let f = user_fields(&d, &["zip", "gender"], 2).unwrap();
        assert_eq!(f.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["zip", "gender"]);
    }

    #[test]
    fn ages_in_years_fall_into_the_ml_1m_buckets() {
        for (years, code) in [
            ("0", 1),
            ("17", 1),
            ("18", 18),
            ("24", 18),
            ("25", 25),
            ("34", 25),
            ("35", 35),
            ("44", 35),
            ("45", 45),
            ("49", 45),
            ("50", 50),
            ("55", 50),
            ("56", 56),
            ("73", 56),
        ] {
            assert_eq!(age_bucket(years), Some(code), "{years}");
        }
        for code in ["1", "18", "25", "35", "45", "50", "56"] {
            assert_eq!(age_bucket(code).unwrap().to_string(), code, "ml-1m codes pass through");
        }
        assert_eq!(age_bucket("old"), None);

        // ml-100k style: 7, 19, 24 and unknown -> "1", "18", "18", none.
        let d = users_fixture(&[("age", &["7", "19", "24", ""])]);
        let age = &user_fields(&d, &["age"], 2).unwrap()[0];
        assert_eq!((age.cardinality, lists(age)), (2, vec![vec![0], vec![1], vec![1], vec![]]));

        let d = users_fixture(&[("age", &["7", "x", "24", ""])]);
        let e = user_fields(&d, &["age"], 2).unwrap_err().to_string();
        assert_eq!(e, "user feature `age`: dataset fixture gives user 12 the age `x`, not a whole number of years");
    }

    #[test]
    fn a_user_feature_the_dataset_lacks_is_an_error() {
        let d = users_fixture(&[("gender", &["M", "F", "M", ""])]);
        let e = user_fields(&d, &["gender", "occupation"], 2).unwrap_err().to_string();
        assert_eq!(
            e,
            "user feature `occupation`: dataset fixture has no user attribute \"occupation\" (it has \"gender\")"
        );
        let e = user_fields(&users_fixture(&[]), &["zip"], 2).unwrap_err().to_string();
        assert_eq!(e, "user feature `zip`: dataset fixture has no user attribute \"zip\" (it has none)");
        let e = user_fields(&users_fixture(&[("gender", &["M"])]), &["gender"], 2).unwrap_err().to_string();
        assert_eq!(e, "user feature `gender`: dataset fixture gives 1 values of \"gender\" for 4 users");
    }

    /// User 0 at t = 10..50, user 1 at t = 5, 15, 25, 35, 45, 60: training
    /// targets at t = 20, 30 and 15, 25, 35, so the window is [15, 35].
    fn ages_fixture() -> LoadedDataset {
        let mut rows: Vec<_> = [10, 20, 30, 40, 50].iter().enumerate().map(|(i, &t)| (0, i as u32, t)).collect();
        rows.extend([5, 15, 25, 35, 45, 60].iter().enumerate().map(|(i, &t)| (1, i as u32, t)));
        dataset(&rows)
    }

    #[test]
    fn example_ages_run_from_one_at_the_earliest_training_example_to_zero_at_the_latest() {
        let p = WatchHistoryParams { example_age: true, ..Default::default() };
        let set = with(p, 0).build(&ages_fixture()).unwrap();
        assert!(set.inputs.example_age);
        // (35 - t) / 20, clamped.
        assert_eq!(set.ages, [vec![1.0, 0.75, 0.25, 0.0, 0.0], vec![1.0, 1.0, 0.5, 0.0, 0.0, 0.0]]);
        let mut q = Queries::new(30);
        set.train.iter().for_each(|&ex| set.push_training_query(&mut q, ex, 0));
        assert_eq!(q.ages, [0.75, 0.25, 1.0, 0.5, 0.0]);
        assert_eq!(set.serving_queries(&set.test).ages, [0.0, 0.0]);

        // A window without span gives every example age 0.
        let rows: Vec<_> = (0..4).map(|i| (0, i, 7)).collect();
        let p = WatchHistoryParams { example_age: true, ..Default::default() };
        assert_eq!(with(p, 0).build(&dataset(&rows)).unwrap().ages, [vec![0.0; 4]]);
    }

    #[test]
    fn examples_per_user_caps_deterministically_in_position_order() {
        // User 0 has 20 training positions, user 1 two.
        let mut rows: Vec<_> = (0..23).map(|i| (0, i, i as i64)).collect();
        rows.extend((0..5).map(|i| (1, i, i as i64)));
        let d = dataset(&rows);
        let capped = |cap, seed| {
            let p = WatchHistoryParams { examples_per_user: cap, ..Default::default() };
            with(p, seed).build(&d).unwrap()
        };
        let all = capped(0, 1);
        assert_eq!(all.train.len(), 22);
        let a = capped(5, 1);
        let user0: Vec<u32> = a.train.iter().filter(|e| e.user == 0).map(|e| e.position).collect();
        assert_eq!(user0.len(), 5);
        assert!(user0.windows(2).all(|w| w[0] < w[1]) && user0.iter().all(|p| (1..=20).contains(p)), "{user0:?}");
        let user1: Vec<u32> = a.train.iter().filter(|e| e.user == 1).map(|e| e.position).collect();
        assert_eq!(user1, [1, 2], "users under the cap keep everything");
        assert_eq!(capped(5, 1).train, a.train, "same seed, same examples");
        let positions = |set: ExampleSet| set.train.iter().map(|e| (e.user, e.position)).collect::<Vec<_>>();
        let draws: BTreeSet<_> = (0..8).map(|seed| positions(capped(5, seed))).collect();
        assert!(draws.len() > 1, "the seed changes the draw");
        // Held-out cases do not change.
        assert_eq!((a.validation.clone(), a.test.clone()), (all.validation.clone(), all.test.clone()));
        assert_eq!(capped(20, 1).train, all.train);
    }

    #[test]
    fn examples_per_user_keeps_the_example_age_window() {
        let p = WatchHistoryParams { example_age: true, examples_per_user: 1, ..Default::default() };
        let set = with(p, 3).build(&ages_fixture()).unwrap();
        assert_eq!(set.train.len(), 2);
        assert_eq!(set.ages, [vec![1.0, 0.75, 0.25, 0.0, 0.0], vec![1.0, 1.0, 0.5, 0.0, 0.0, 0.0]]);
    }
}
