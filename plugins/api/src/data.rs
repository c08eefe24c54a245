//! Plain data passed between components: interactions, the item catalog,
//! training examples and evaluation cases.

use std::collections::BTreeMap;

/// Dense item index in `0..n_items`, assigned in order of first appearance.
pub type ItemIdx = u32;
/// Dense user index in `0..n_users`, assigned in order of first appearance.
pub type UserIdx = u32;

/// The items that can be recommended, with what reports show of them.
#[derive(Debug, Clone, Default)]
pub struct ItemCatalog {
    /// The dataset's own id of each item (`raw_ids[idx]`).
    pub raw_ids: Vec<u64>,
    /// Human-readable title of each item ("" when the dataset has none).
    pub titles: Vec<String>,
    /// Genre names of each item (empty when unknown).
    pub genres: Vec<Vec<String>>,
}

impl ItemCatalog {
    pub fn len(&self) -> usize {
        self.raw_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.raw_ids.is_empty()
    }

    /// Title, or the raw id when the dataset has no title for the item.
    pub fn display(&self, item: ItemIdx) -> String {
        match self.titles.get(item as usize) {
            Some(t) if !t.is_empty() => t.clone(),
            _ => format!("item {}", self.raw_ids[item as usize]),
        }
    }
}

/// Positive (implicit) interactions after the dataset's own filtering, in file
/// order, as parallel columns.
#[derive(Debug, Clone, Default)]
pub struct Interactions {
    pub users: Vec<UserIdx>,
    pub items: Vec<ItemIdx>,
    pub timestamps: Vec<i64>,
}

impl Interactions {
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// What a dataset plugin delivers.
#[derive(Debug, Clone, Default)]
pub struct LoadedDataset {
    /// Short name for reports and tracking, e.g. `movielens/ml-1m`.
    pub name: String,
    /// Where the data was read from.
    pub source: String,
    /// sha256 of the main interaction file, so runs name exactly what they used.
    pub checksum: String,
    /// The dataset's own id of each user (`user_raw_ids[idx]`).
    pub user_raw_ids: Vec<u64>,
    pub catalog: ItemCatalog,
    pub interactions: Interactions,
    /// Rows read before filtering, for the report.
    pub raw_rows: usize,
}

impl LoadedDataset {
    pub fn n_users(&self) -> usize {
        self.user_raw_ids.len()
    }

    pub fn n_items(&self) -> usize {
        self.catalog.len()
    }
}

/// One training example: predict `sequences[user][position]` from the
/// items before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Example {
    pub user: UserIdx,
    pub position: u32,
}

/// Training examples and held-out cases built by a features plugin.
#[derive(Debug, Clone, Default)]
pub struct ExampleSet {
    /// Each user's positives in time order (ties keep file order).
    pub sequences: Vec<Vec<ItemIdx>>,
    /// At most this many most recent items form a history.
    pub max_history: usize,
    pub train: Vec<Example>,
    pub validation: Vec<Example>,
    pub test: Vec<Example>,
}

impl ExampleSet {
    /// The (at most `max_history`) items before the example's position.
    pub fn history(&self, ex: Example) -> &[ItemIdx] {
        let seq = &self.sequences[ex.user as usize];
        let end = ex.position as usize;
        &seq[end.saturating_sub(self.max_history)..end]
    }

    /// Every item before the example's position: what the user has already
    /// seen, excluded from ranking.
    pub fn seen(&self, ex: Example) -> &[ItemIdx] {
        &self.sequences[ex.user as usize][..ex.position as usize]
    }

    pub fn target(&self, ex: Example) -> ItemIdx {
        self.sequences[ex.user as usize][ex.position as usize]
    }
}

/// A batch of histories, padded to a common length.
#[derive(Debug, Clone, Default)]
pub struct Histories {
    /// `len() * width` item indices, row-major; slots past a row's length hold
    /// [`Histories::PAD`].
    pub items: Vec<ItemIdx>,
    /// Number of real items in each row (may be 0: an empty history).
    pub lengths: Vec<u32>,
    pub width: usize,
}

impl Histories {
    pub const PAD: ItemIdx = ItemIdx::MAX;

    pub fn new(width: usize) -> Histories {
        Histories { items: Vec::new(), lengths: Vec::new(), width }
    }

    pub fn clear(&mut self) {
        self.items.clear();
        self.lengths.clear();
    }

    /// Appends one row; keeps the most recent `width` items.
    pub fn push(&mut self, history: &[ItemIdx]) {
        let h = &history[history.len().saturating_sub(self.width)..];
        self.items.extend_from_slice(h);
        self.items.extend(std::iter::repeat_n(Self::PAD, self.width - h.len()));
        self.lengths.push(h.len() as u32);
    }

    pub fn len(&self) -> usize {
        self.lengths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// The real items of row `r`.
    pub fn row(&self, r: usize) -> &[ItemIdx] {
        &self.items[r * self.width..r * self.width + self.lengths[r] as usize]
    }
}

/// Candidate items a batch is scored against, with the probability with which
/// each entered the set, so a loss can subtract `log q` (Yi et al. 2019).
#[derive(Debug, Clone, Default)]
pub struct Candidates {
    /// Negatives shared by every row of the batch.
    pub shared: Vec<ItemIdx>,
    /// `log q` of each shared negative.
    pub shared_log_q: Vec<f32>,
    /// Negatives of each row alone, row-major: `len / batch` per row (empty
    /// when the sampler shares its negatives).
    pub per_row: Vec<ItemIdx>,
    /// `log q` of each per-row negative.
    pub per_row_log_q: Vec<f32>,
    /// Whether the batch's other positives also serve as negatives.
    pub in_batch: bool,
    /// `log q` of each row's positive, used when `in_batch` is set.
    pub positive_log_q: Vec<f32>,
    /// Whether the loss subtracts `log q` from every candidate logit.
    pub log_q_correction: bool,
}

impl Candidates {
    /// Empties every list (keeping their memory) and resets the flags; the
    /// core calls it before each `Sampler::sample`.
    pub fn clear(&mut self) {
        self.shared.clear();
        self.shared_log_q.clear();
        self.per_row.clear();
        self.per_row_log_q.clear();
        self.positive_log_q.clear();
        self.in_batch = false;
        self.log_q_correction = false;
    }
}

/// One optimisation step's input.
#[derive(Debug, Clone, Copy)]
pub struct TrainBatch<'a> {
    pub histories: &'a Histories,
    pub positives: &'a [ItemIdx],
    pub candidates: &'a Candidates,
}

/// Named scalar metrics, ordered for stable reports.
pub type Metrics = BTreeMap<String, f64>;
