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
    /// The dataset's own id of each item (`raw_ids[idx]`), as the data
    /// writes it (MovieLens's numbers, Amazon's ASINs).
    pub raw_ids: Vec<String>,
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

    /// The distinct category (genre) names, sorted; a category's id is its
    /// position here.
    pub fn category_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.genres.iter().flatten().map(String::as_str).collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Each item's categories as ids into [`ItemCatalog::category_names`].
    pub fn category_ids(&self) -> Vec<Vec<u32>> {
        let names = self.category_names();
        self.genres
            .iter()
            .map(|g| g.iter().filter_map(|c| names.binary_search(&c.as_str()).ok().map(|i| i as u32)).collect())
            .collect()
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
    /// Each row's outcomes as bits (bit `i` is the dataset's `outcomes[i]`);
    /// empty when the dataset declares none (every row is a positive of
    /// one implicit outcome).
    pub outcomes: Vec<u32>,
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
    /// The dataset's own id of each user (`user_raw_ids[idx]`), as written.
    pub user_raw_ids: Vec<String>,
    pub catalog: ItemCatalog,
    pub interactions: Interactions,
    /// Named attributes of users (ml-1m's `gender`, `age`, `occupation`,
    /// `zip`), one value per user, "" where unknown; empty when the dataset
    /// has none.
    pub user_attributes: BTreeMap<String, Vec<String>>,
    /// Rows read before filtering, for the report.
    pub raw_rows: usize,
    /// Names of the outcomes the dataset declares, in bit order; empty
    /// when it declares none.
    pub outcomes: Vec<String>,
    /// Explicit negative feedback (e.g. ratings <= 2): rows meeting the
    /// dataset's negative rule and no outcome, of kept users on catalog
    /// items, never a pair that is also a positive; `outcomes` stays empty.
    pub feedback: Interactions,
}

impl LoadedDataset {
    pub fn n_users(&self) -> usize {
        self.user_raw_ids.len()
    }

    pub fn n_items(&self) -> usize {
        self.catalog.len()
    }

    /// Each explicit negative feedback row as the data writes it: raw user
    /// id, raw item id, time.
    pub fn raw_feedback(&self) -> impl Iterator<Item = (&str, &str, i64)> + '_ {
        let f = &self.feedback;
        (0..f.len()).map(move |k| {
            (
                self.user_raw_ids[f.users[k] as usize].as_str(),
                self.catalog.raw_ids[f.items[k] as usize].as_str(),
                f.timestamps[k],
            )
        })
    }
}

/// One example or held-out case: predict `sequences[user][position +
/// ahead]` from the items before `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Example {
    pub user: UserIdx,
    pub position: u32,
    /// Held-out positives between the history's end and the target: 0 (the
    /// target is the next positive) except when one history serves several
    /// held-out targets, as in a random holdout of a fraction per user.
    pub ahead: u32,
}

/// A categorical side feature: each entity (a user, or an item) has zero or
/// more values in `0..cardinality`. Models embed each value and average the
/// embeddings of an entity's values (a multi-hot bag, e.g. an item's genres).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Categorical {
    pub name: String,
    pub cardinality: usize,
    /// `values[offsets[e]..offsets[e + 1]]` are entity `e`'s values.
    offsets: Vec<u32>,
    values: Vec<u32>,
}

impl Categorical {
    /// One list of values per entity, in entity order.
    ///
    /// # Panics
    /// On a value outside `0..cardinality`: a bug of the features plugin.
    pub fn from_lists<L: AsRef<[u32]>>(
        name: impl Into<String>,
        cardinality: usize,
        lists: impl IntoIterator<Item = L>,
    ) -> Categorical {
        let mut c = Categorical { name: name.into(), cardinality, offsets: vec![0], values: Vec::new() };
        for list in lists {
            let list = list.as_ref();
            assert!(
                list.iter().all(|&v| (v as usize) < cardinality),
                "feature `{}`: value outside 0..{cardinality} in {list:?}",
                c.name
            );
            c.values.extend_from_slice(list);
            c.offsets.push(c.values.len() as u32);
        }
        c
    }

    /// Number of entities described.
    pub fn entities(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// Entity `e`'s values (empty when it has none, or when `e` is unknown).
    pub fn values(&self, e: usize) -> &[u32] {
        if e + 1 >= self.offsets.len() {
            return &[];
        }
        &self.values[self.offsets[e] as usize..self.offsets[e + 1] as usize]
    }
}

/// How items enter a model's embedding tables: item `i` is the sum of rows
/// `ids(i)` of a table with `rows` rows. One row per item is the plain ID
/// embedding; several hashed rows are a hash embedding.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemEncoding {
    pub rows: usize,
    pub per_item: usize,
    ids: Vec<u32>,
}

impl ItemEncoding {
    /// Item `i` is row `i`.
    pub fn identity(n_items: usize) -> ItemEncoding {
        ItemEncoding { rows: n_items, per_item: 1, ids: (0..n_items as u32).collect() }
    }

    /// `per_item` rows for each item, row-major.
    ///
    /// # Panics
    /// When `ids` is not a whole number of items or names a row outside the table.
    pub fn from_ids(rows: usize, per_item: usize, ids: Vec<u32>) -> ItemEncoding {
        assert!(per_item > 0 && ids.len().is_multiple_of(per_item), "{} ids for {per_item} per item", ids.len());
        assert!(ids.iter().all(|&r| (r as usize) < rows), "an id is outside the table of {rows} rows");
        ItemEncoding { rows, per_item, ids }
    }

    /// Items encoded (0 for the empty default).
    pub fn items(&self) -> usize {
        self.ids.len().checked_div(self.per_item).unwrap_or(0)
    }

    pub fn ids(&self, item: ItemIdx) -> &[u32] {
        &self.ids[item as usize * self.per_item..(item as usize + 1) * self.per_item]
    }
}

/// What a model may read besides each query's history, as chosen by the
/// features plugin.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SideInputs {
    /// How item IDs map to embedding rows; empty (the default) means one row
    /// per catalog item.
    pub items: ItemEncoding,
    /// Categorical features of items (e.g. genres), one entity per item.
    pub item_fields: Vec<Categorical>,
    /// Categorical features of users (e.g. gender, age bucket), one entity per user.
    pub user_fields: Vec<Categorical>,
    /// Whether queries carry the example age (Covington et al. §3.3).
    pub example_age: bool,
    /// Outcomes a query may ask about (`Queries::outcomes` indexes them):
    /// with two or more, a model conditions its query on the outcome
    /// (ItemSage-style); 0 or 1, it ignores it. The core sets it from `[train] outcomes`.
    pub outcomes: usize,
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
    /// What else a model may read about users and items.
    pub inputs: SideInputs,
    /// How targets were chosen (the split), in words for the report.
    pub protocol: String,
    /// Example age of each position of each sequence, in `[0, 1]` (0 at the
    /// end of the training window); empty unless `inputs.example_age`.
    pub ages: Vec<Vec<f32>>,
    /// When each position of each sequence was consumed (the dataset's
    /// timestamps, Unix seconds); empty when the features give none.
    pub timestamps: Vec<Vec<i64>>,
    /// The dataset's outcome names (empty: one implicit outcome).
    pub outcomes: Vec<String>,
    /// Outcome bits of each position of each sequence; empty when
    /// `outcomes` is.
    pub target_outcomes: Vec<Vec<u32>>,
    /// Each user's explicit negative feedback in time order; empty when
    /// the dataset has none.
    pub feedback: Vec<UserFeedback>,
    /// The outcome serving queries ask about (index into `outcomes`; 0
    /// without outcomes). The core sets it.
    pub serving_outcome: u32,
}

/// One user's explicit negative feedback: items and when, in time order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFeedback {
    pub items: Vec<ItemIdx>,
    pub times: Vec<i64>,
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
        self.sequences[ex.user as usize][(ex.position + ex.ahead) as usize]
    }

    /// The outcome bits of the example's target (bit 0 alone without outcomes).
    pub fn target_outcomes(&self, ex: Example) -> u32 {
        self.target_outcomes.get(ex.user as usize).map_or(1, |o| o[(ex.position + ex.ahead) as usize])
    }

    /// Appends a training example's query asking about `outcome`: its
    /// history, user and example age.
    pub fn push_training_query(&self, queries: &mut Queries, ex: Example, outcome: u32) {
        let age = self.ages.get(ex.user as usize).map_or(0.0, |a| a[(ex.position + ex.ahead) as usize]);
        queries.push_asking(self.history(ex), ex.user, age, outcome);
    }

    /// Appends a held-out case's query as it is asked at serving time:
    /// example age 0 (Covington et al. §3.3).
    pub fn push_serving_query(&self, queries: &mut Queries, ex: Example) {
        queries.push_asking(self.history(ex), ex.user, 0.0, self.serving_outcome);
    }

    /// The serving queries of `cases`, in order.
    pub fn serving_queries(&self, cases: &[Example]) -> Queries {
        let mut q = Queries::new(self.max_history);
        cases.iter().for_each(|&ex| self.push_serving_query(&mut q, ex));
        q
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

/// Who asks for recommendations: one row per training example or held-out case.
#[derive(Debug, Clone, Default)]
pub struct Queries {
    pub histories: Histories,
    /// Each row's user, [`Queries::UNKNOWN_USER`] when there is none (a
    /// recommendation from a list of items).
    pub users: Vec<UserIdx>,
    /// Each row's example age in `[0, 1]`; 0 at serving time.
    pub ages: Vec<f32>,
    /// The outcome each row asks about (an index into the dataset's
    /// outcomes; 0 when it has none).
    pub outcomes: Vec<u32>,
}

impl Queries {
    pub const UNKNOWN_USER: UserIdx = UserIdx::MAX;

    pub fn new(width: usize) -> Queries {
        Queries { histories: Histories::new(width), users: Vec::new(), ages: Vec::new(), outcomes: Vec::new() }
    }

    pub fn clear(&mut self) {
        self.histories.clear();
        self.users.clear();
        self.ages.clear();
        self.outcomes.clear();
    }

    /// Appends one row asking about outcome 0; keeps the most recent
    /// `width` items of `history`.
    pub fn push(&mut self, history: &[ItemIdx], user: UserIdx, age: f32) {
        self.push_asking(history, user, age, 0);
    }

    /// Appends one row asking about `outcome`.
    pub fn push_asking(&mut self, history: &[ItemIdx], user: UserIdx, age: f32, outcome: u32) {
        self.histories.push(history);
        self.users.push(user);
        self.ages.push(age);
        self.outcomes.push(outcome);
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
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
    /// `log q` of each row's positive, one per row: the correction of the
    /// row's own positive column, and of the other rows' when `in_batch`.
    pub positive_log_q: Vec<f32>,
    /// Whether the loss subtracts `log q` from every candidate logit.
    pub log_q_correction: bool,
    /// The last `explicit` of each row's own negatives are explicit
    /// negatives (the user's negative feedback) rather than draws: their
    /// `per_row_log_q` is `-ln(weight)`, subtracted whether or not
    /// `log_q_correction` is on (a weight `w` counts the item `w` times),
    /// and one equal to the row's positive is padding, masked as any
    /// accidental hit is. The core appends them after `Sampler::sample`.
    pub explicit: usize,
}

impl Candidates {
    /// Checks what a sampler filled in for a batch of `batch` rows over
    /// `n_items` items: one log q per shared and per-row negative and per
    /// row's positive, the same number of own negatives for every row, and
    /// every item in the catalog. The core calls it after each
    /// `Sampler::sample`, so a plugin's mistake is an error, not a panic
    /// deep in a model.
    ///
    /// # Errors
    /// Naming the first list that does not fit.
    pub fn check(&self, batch: usize, n_items: usize) -> anyhow::Result<()> {
        let lists = [
            ("shared_log_q", self.shared_log_q.len(), "shared", self.shared.len()),
            ("per_row_log_q", self.per_row_log_q.len(), "per_row", self.per_row.len()),
            ("positive_log_q", self.positive_log_q.len(), "the batch's rows", batch),
        ];
        for (name, len, of, expected) in lists {
            if len != expected {
                anyhow::bail!("the sampler gave {len} values in `{name}`, expected one per entry of {of} ({expected})");
            }
        }
        if batch > 0 && !self.per_row.len().is_multiple_of(batch) {
            anyhow::bail!(
                "the sampler gave {} per-row negatives for {batch} rows: every row needs the same number",
                self.per_row.len()
            );
        }
        if self.explicit > 0 && batch > 0 && self.per_row.len() / batch < self.explicit {
            anyhow::bail!(
                "{} explicit negatives per row, but only {} own negatives per row",
                self.explicit,
                self.per_row.len() / batch
            );
        }
        if let Some(&item) = self.shared.iter().chain(&self.per_row).find(|&&i| i as usize >= n_items) {
            anyhow::bail!("the sampler drew item index {item}, outside the catalog's {n_items} items");
        }
        Ok(())
    }

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
        self.explicit = 0;
    }
}

/// One optimisation step's input.
#[derive(Debug, Clone, Copy)]
pub struct TrainBatch<'a> {
    /// One row per positive: the history (and user and example age) that
    /// predicts it, as for any example.
    pub queries: &'a Queries,
    pub positives: &'a [ItemIdx],
    pub candidates: &'a Candidates,
    /// With `[train] targets = "all_positions"`: the sequence windows the
    /// queries were cut from. A model may ignore it (the queries say
    /// everything), or encode each window once and read every query from it.
    pub windows: Option<&'a Windows>,
    /// Each row's weight in the loss (its outcome's `[train] outcomes`
    /// weight); empty means 1 for every row. The loss stays a mean over rows.
    pub weights: &'a [f32],
}

/// Sequence windows of a batch trained on every position (SASRec's way):
/// query `k` of the batch is the first `queries[k].prefix` items of window
/// `queries[k].row`, and predicts the item after them.
#[derive(Debug, Clone, Default)]
pub struct Windows {
    pub histories: Histories,
    /// One per query of the batch, in the batch's order.
    pub queries: Vec<WindowQuery>,
}

/// Where a query lies in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowQuery {
    pub row: u32,
    /// Items of the window the query has read (at least 1).
    pub prefix: u32,
}

impl Windows {
    pub fn new(width: usize) -> Windows {
        Windows { histories: Histories::new(width), queries: Vec::new() }
    }

    pub fn clear(&mut self) {
        self.histories.clear();
        self.queries.clear();
    }
}

/// Named scalar metrics, ordered for stable reports.
pub type Metrics = BTreeMap<String, f64>;

#[cfg(test)]
mod tests {
    use super::*;

    fn filled() -> Candidates {
        Candidates {
            shared: vec![0, 4],
            shared_log_q: vec![-1.0, -1.0],
            per_row: vec![1, 2, 3, 1],
            per_row_log_q: vec![-2.0; 4],
            in_batch: true,
            positive_log_q: vec![-0.5, -0.5],
            log_q_correction: true,
            explicit: 0,
        }
    }

    #[test]
    fn a_case_ahead_of_its_history_targets_a_later_positive() {
        let set = ExampleSet { sequences: vec![vec![5, 6, 7, 8, 9]], max_history: 2, ..Default::default() };
        let ex = Example { user: 0, position: 2, ahead: 2 };
        assert_eq!(set.history(ex), [5, 6]);
        assert_eq!(set.seen(ex), [5, 6]);
        assert_eq!(set.target(ex), 9);
        assert_eq!(set.target(Example { ahead: 0, ..ex }), 7);
    }

    #[test]
    fn a_well_formed_batch_passes_and_each_mistake_is_named() {
        assert!(filled().check(2, 5).is_ok());
        let error = |c: Candidates| c.check(2, 5).unwrap_err().to_string();
        let mut c = filled();
        c.positive_log_q.clear();
        assert!(error(c).contains("`positive_log_q`"));
        let mut c = filled();
        c.shared_log_q.pop();
        assert!(error(c).contains("`shared_log_q`"));
        let mut c = filled();
        c.per_row.pop();
        c.per_row_log_q.pop();
        assert!(error(c).contains("same number"));
        let mut c = filled();
        c.shared[1] = 5;
        assert!(error(c).contains("item index 5"));
    }
}
