//! The `interactions` dataset plugin: any interaction log, declared by its
//! columns, in CSV, TSV, JSON lines, Parquet or Arrow IPC; one file or a
//! folder of parts. Optional item and user tables add titles, categories
//! and user features.
//!
//! A row is a positive when it has no rating column, or when its rating is
//! at least `min_rating`; or, with `outcomes` declared, when it meets at
//! least one outcome rule (its outcomes are the rules it meets). Rows that
//! are no positive but meet `negative_feedback` are explicit negative
//! feedback. Repeated (user, item) pairs are kept per `dedup`;
//! then users and items below their minimum counts are dropped, again and
//! again until none is (a k-core). Users and items get dense indices in
//! order of first appearance among the kept rows, which stay in file order.

#![forbid(unsafe_code)]

mod assemble;
mod cells;
pub mod log;
mod read;
mod time;

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use funnel_api::{BuildCx, Dataset, LoadedDataset, OutcomeRules, Registry};
use serde::{Deserialize, Serialize};

pub use read::Format;

/// Registers the `interactions` dataset.
pub fn register(reg: &mut Registry) {
    reg.dataset::<InteractionsParams>(
        "interactions",
        "Any interaction log declared by its columns: CSV, TSV, JSON lines, Parquet or Arrow IPC (a file or a \
         folder of parts), with optional item (titles, categories) and user (features) tables",
        |params, _cx: &BuildCx| {
            params.check()?;
            Ok(Box::new(Interactions { params }))
        },
    );
}

/// Parameters of `interactions`.
#[funnel_api::params]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InteractionsParams {
    /// The log: a file, or a folder whose files (by name, hidden and `_`
    /// files skipped) are parts of one log. Relative to the working directory.
    pub path: String,
    /// "auto" (from each file's extension: .csv, .tsv, .jsonl/.ndjson/.json,
    /// .parquet, .arrow/.ipc/.feather), "csv", "tsv", "jsonl", "parquet" or "arrow".
    #[param(default = Format::Auto)]
    pub format: Format,
    /// Field separator of CSV/TSV files, one character. Unset: "," for CSV, a tab for TSV.
    pub delimiter: Option<String>,
    /// Whether the first line of a CSV/TSV file names its columns; without
    /// one, columns are named by position: "0", "1", ...
    #[param(default = true)]
    pub header: bool,
    /// Which columns hold the user, the item and, optionally, the timestamp
    /// and the rating. Without a timestamp, file order is time order.
    pub columns: Columns,
    /// How timestamps are written: "unix" (seconds), "unix_ms",
    /// "rfc3339", or a strftime pattern such as "%Y-%m-%d %H:%M:%S" or
    /// "%Y-%m-%d" (UTC). Native timestamp and date columns need none.
    #[param(default = "unix")]
    pub timestamp_format: String,
    /// A row whose rating is at least this is a positive; the rest are
    /// dropped. Unset: every row is a positive. Must be unset with `outcomes`.
    pub min_rating: Option<f64>,
    /// Named outcomes, each a rule over a column of the log: "<column> <op>
    /// <value>" with op >=, >, <=, <, == or != (e.g. purchase = "event ==
    /// purchase", liked = "stars >= 4"). A row meeting at least one is a
    /// positive carrying those outcomes; the rest are dropped. A number
    /// compares the column as a number, other text compares its text.
    /// Empty: positives as `min_rating` says.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<String, String>,
    /// A rule (as in `outcomes`) for explicit negative feedback: a row that
    /// is no positive but meets it says the user did not want the item
    /// (e.g. "stars <= 2").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_feedback: Option<String>,
    /// A (user, item) pair seen more than once: "first" keeps the earliest,
    /// "last" the latest, "all" every one (repeat consumption).
    #[param(default = Dedup::First)]
    pub dedup: Dedup,
    /// Users with fewer positives are dropped (with items, to a fixed point).
    #[param(default = 5)]
    pub min_user_interactions: usize,
    /// Items with fewer positives are dropped (with users, to a fixed point).
    #[param(default = 1)]
    pub min_item_interactions: usize,
    /// An optional item table: `path`, `format`, `delimiter`, `header`,
    /// `columns = { item, title, categories }` and `multi_value_separator`
    /// for categories written in one string ("|" when unset; native lists
    /// need none). Categories are the `genres` item feature.
    pub items: Option<ItemTable>,
    /// An optional user table: `path`, `format`, `delimiter`, `header` and
    /// `columns = { user, features = [...] }`; each feature column becomes a
    /// user attribute the features can name.
    pub users: Option<UserTable>,
}

/// `columns` of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Columns {
    #[serde(default = "default_user")]
    pub user: String,
    #[serde(default = "default_item")]
    pub item: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rating: Option<String>,
}

fn default_user() -> String {
    "user".to_string()
}

fn default_item() -> String {
    "item".to_string()
}

impl Default for Columns {
    fn default() -> Self {
        Columns { user: default_user(), item: default_item(), timestamp: None, rating: None }
    }
}

/// Which of a repeated (user, item) pair's rows are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dedup {
    First,
    Last,
    All,
}

/// `[dataset.items]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemTable {
    pub path: String,
    #[serde(default = "auto")]
    pub format: Format,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    #[serde(default = "yes")]
    pub header: bool,
    pub columns: ItemColumns,
    #[serde(default = "bar")]
    pub multi_value_separator: String,
}

/// `columns` of the item table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemColumns {
    pub item: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<String>,
}

/// `[dataset.users]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserTable {
    pub path: String,
    #[serde(default = "auto")]
    pub format: Format,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delimiter: Option<String>,
    #[serde(default = "yes")]
    pub header: bool,
    pub columns: UserColumns,
}

/// `columns` of the user table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserColumns {
    pub user: String,
    #[serde(default)]
    pub features: Vec<String>,
}

fn auto() -> Format {
    Format::Auto
}

fn yes() -> bool {
    true
}

fn bar() -> String {
    "|".to_string()
}

impl InteractionsParams {
    /// What can be checked without reading any data.
    fn check(&self) -> Result<()> {
        if self.path.is_empty() {
            bail!("key `path`: required: the interaction log (a file or a folder of parts)");
        }
        read::delimiter(self.delimiter.as_deref(), Format::Csv).map_err(|e| anyhow::anyhow!("key `delimiter`: {e}"))?;
        time::TimestampFormat::parse(&self.timestamp_format)
            .map_err(|e| anyhow::anyhow!("key `timestamp_format`: {e}"))?;
        if self.min_user_interactions == 0 {
            bail!("key `min_user_interactions`: must be at least 1");
        }
        if self.min_item_interactions == 0 {
            bail!("key `min_item_interactions`: must be at least 1");
        }
        if let Some(r) = self.min_rating {
            if !r.is_finite() {
                bail!("key `min_rating`: must be a finite number, not {r}");
            }
            if self.columns.rating.is_none() {
                bail!("key `min_rating`: needs `columns.rating`, the column it applies to");
            }
        }
        let rules = self.rules()?;
        if rules.declared() && self.min_rating.is_some() {
            bail!(
                "key `min_rating`: with `outcomes` declared, a positive is a row meeting an outcome rule; declare the \
                 threshold as an outcome rule (e.g. liked = \"{} >= 4\") and unset min_rating",
                self.columns.rating.as_deref().unwrap_or("rating")
            );
        }
        if rules.negative.is_some() && !rules.declared() && self.min_rating.is_none() {
            bail!(
                "key `negative_feedback`: every row is a positive (no `outcomes`, no `min_rating`), so none can be \
                 negative feedback; declare `outcomes` or `min_rating`"
            );
        }
        if let Some(items) = &self.items {
            read::delimiter(items.delimiter.as_deref(), Format::Csv)
                .map_err(|e| anyhow::anyhow!("key `items.delimiter`: {e}"))?;
        }
        if let Some(users) = &self.users {
            read::delimiter(users.delimiter.as_deref(), Format::Csv)
                .map_err(|e| anyhow::anyhow!("key `users.delimiter`: {e}"))?;
        }
        Ok(())
    }

    /// `outcomes` and `negative_feedback`, parsed; their columns are checked
    /// against the log when it is read.
    fn rules(&self) -> Result<OutcomeRules> {
        OutcomeRules::parse(&self.outcomes, self.negative_feedback.as_deref(), None)
    }
}

/// An interaction log as a `Dataset`.
#[derive(Debug, Clone)]
pub struct Interactions {
    params: InteractionsParams,
}

impl Dataset for Interactions {
    fn load(&self) -> Result<LoadedDataset> {
        assemble::load(&self.params)
    }
}
