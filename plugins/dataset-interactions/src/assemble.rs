//! From rows to a `LoadedDataset`: positives, repeats, the k-core, dense
//! indices, and the optional item and user tables.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use funnel_api::{ItemCatalog, LoadedDataset, OutcomeRules};
use sha2::{Digest, Sha256};

use crate::cells::{At, Cell};
use crate::log::{self, Filters, Row};
use crate::read::{self, Options};
use crate::time::TimestampFormat;
use crate::InteractionsParams;

/// Strings to dense ids in order of first appearance.
#[derive(Default)]
struct Interner {
    index: HashMap<String, u32>,
    names: Vec<String>,
}

impl Interner {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(&i) = self.index.get(name) {
            return i;
        }
        let i = self.names.len() as u32;
        self.index.insert(name.to_string(), i);
        self.names.push(name.to_string());
        i
    }
}

/// How many rows each step removed, for the log line and for the error
/// when nothing is left.
#[derive(Debug, Default)]
struct Removed {
    read: usize,
    /// Below `min_rating`, or meeting no outcome rule.
    not_positive: usize,
    repeated: usize,
    by_minimums: usize,
}

pub fn load(p: &InteractionsParams) -> Result<LoadedDataset> {
    let path = Path::new(&p.path);
    let format = TimestampFormat::parse(&p.timestamp_format).map_err(anyhow::Error::msg)?;
    let rules = p.rules()?;
    let mut wanted = vec![p.columns.user.as_str(), p.columns.item.as_str()];
    let time_column = optional(&mut wanted, p.columns.timestamp.as_deref());
    let rating_column = optional(&mut wanted, p.columns.rating.as_deref());
    let rule_cells = RuleCells::new(&rules, &mut wanted);
    let (mut users, mut items) = (Interner::default(), Interner::default());
    let (mut rows, mut feedback_rows) = (Vec::new(), Vec::new());
    let mut removed = Removed::default();
    let mut order = 0i64;
    let mut values = RuleValues::default();
    let options = Options { format: p.format, delimiter: p.delimiter.as_deref(), header: p.header };
    removed.read = read::scan(path, options, &wanted, |file, row, cells| {
        let at = |c: usize| At { file, row, column: wanted[c] };
        let user = cells[0].id(at(0))?;
        let item = cells[1].id(at(1))?;
        let time = match time_column {
            Some(c) => cells[c].timestamp(&format, at(c))?,
            // File order is time order.
            None => order,
        };
        order += 1;
        let mut positive = true;
        if let Some(c) = rating_column {
            let rating = cells[c].number(at(c))?;
            positive = p.min_rating.is_none_or(|min| rating >= min);
        }
        let (mask, negative) = rule_cells.classify(&rules, cells, &at, &mut values)?;
        if rules.declared() {
            positive = mask != 0;
        }
        let (user, item) = (users.id(&user), items.id(&item));
        if positive {
            rows.push(Row { user, item, time, outcomes: mask });
        } else {
            removed.not_positive += 1;
            if negative {
                feedback_rows.push(Row { user, item, time, outcomes: 0 });
            }
        }
        Ok(())
    })?;
    let filters = Filters {
        dedup: p.dedup,
        min_user_interactions: p.min_user_interactions,
        min_item_interactions: p.min_item_interactions,
    };
    let kept = log::keep(&rows, users.names.len(), items.names.len(), filters);
    removed.repeated = kept.repeated;
    removed.by_minimums = kept.by_minimums;
    let not_positive = if rules.declared() { "meeting no outcome" } else { "below min_rating" };
    if kept.interactions.is_empty() {
        bail!(
            "{}: no interactions left: {} rows read, {} {not_positive}, {} repeated (user, item) pairs dropped \
             (dedup = {}), {} removed by min_user_interactions = {} / min_item_interactions = {}",
            path.display(),
            removed.read,
            removed.not_positive,
            removed.repeated,
            format!("{:?}", p.dedup).to_lowercase(),
            removed.by_minimums,
            p.min_user_interactions,
            p.min_item_interactions
        );
    }
    let feedback = log::feedback(&feedback_rows, &kept);
    let user_raw_ids: Vec<String> = kept.users.iter().map(|&u| std::mem::take(&mut users.names[u as usize])).collect();
    let item_raw_ids: Vec<String> = kept.items.iter().map(|&i| std::mem::take(&mut items.names[i as usize])).collect();
    let interactions = kept.interactions;
    let feedback_note =
        if rules.negative.is_some() { format!(", {} negative feedback", feedback.len()) } else { String::new() };
    eprintln!(
        "interactions: {} rows read from {}; {} {not_positive}, {} repeated pairs, {} under the minimums dropped; \
         {} positives{feedback_note}, {} users, {} items",
        removed.read,
        path.display(),
        removed.not_positive,
        removed.repeated,
        removed.by_minimums,
        interactions.len(),
        user_raw_ids.len(),
        item_raw_ids.len()
    );
    let n_items = item_raw_ids.len();
    let mut catalog =
        ItemCatalog { raw_ids: item_raw_ids, titles: vec![String::new(); n_items], genres: vec![Vec::new(); n_items] };
    if let Some(table) = &p.items {
        item_table(table, &mut catalog).context("[dataset.items]")?;
    }
    let user_attributes = match &p.users {
        Some(table) => user_table(table, &user_raw_ids).context("[dataset.users]")?,
        None => BTreeMap::new(),
    };
    Ok(LoadedDataset {
        name: format!("interactions/{}", path.file_stem().and_then(|s| s.to_str()).unwrap_or("log")),
        source: path.display().to_string(),
        checksum: checksum(path)?,
        user_raw_ids,
        catalog,
        interactions,
        user_attributes,
        raw_rows: removed.read,
        outcomes: rules.names(),
        feedback,
    })
}

/// Where the columns the outcome rules read are among the cells of a row,
/// and whether each is read as a number, as text, or both.
struct RuleCells<'a> {
    columns: Vec<&'a str>,
    cells: Vec<usize>,
    as_number: Vec<bool>,
    as_text: Vec<bool>,
}

/// One row's values of the rule columns (buffers reused across rows).
#[derive(Default)]
struct RuleValues {
    numbers: Vec<f64>,
    texts: Vec<String>,
}

impl<'a> RuleCells<'a> {
    /// Adds the rule columns to `wanted` (once each; one already read, such
    /// as the rating, is shared).
    fn new(rules: &'a OutcomeRules, wanted: &mut Vec<&'a str>) -> RuleCells<'a> {
        let columns = rules.columns();
        let cells = columns
            .iter()
            .map(|&c| {
                wanted.iter().position(|w| *w == c).unwrap_or_else(|| {
                    wanted.push(c);
                    wanted.len() - 1
                })
            })
            .collect();
        let all = || rules.outcomes.iter().map(|(_, r)| r).chain(&rules.negative);
        let reads = |c: &str, numeric: bool| all().any(|r| r.column == c && r.is_numeric() == numeric);
        let as_number = columns.iter().map(|c| reads(c, true)).collect();
        let as_text = columns.iter().map(|c| reads(c, false)).collect();
        RuleCells { columns, cells, as_number, as_text }
    }

    /// The row's outcome mask and whether it is negative feedback; a cell a
    /// numeric rule reads that is no number is an error naming file, row
    /// and column.
    fn classify<'c>(
        &self,
        rules: &OutcomeRules,
        cells: &[Cell<'_>],
        at: &impl Fn(usize) -> At<'c>,
        values: &mut RuleValues,
    ) -> Result<(u32, bool)> {
        if self.columns.is_empty() {
            return Ok((0, false));
        }
        values.numbers.resize(self.columns.len(), 0.0);
        values.texts.resize(self.columns.len(), String::new());
        for (k, &c) in self.cells.iter().enumerate() {
            if self.as_number[k] {
                values.numbers[k] = cells[c].number(at(c))?;
            }
            if self.as_text[k] {
                values.texts[k] = cells[c].category();
            }
        }
        Ok(rules.classify(|rule| {
            let k = self.columns.iter().position(|c| *c == rule.column).expect("every rule column is read");
            if rule.is_numeric() {
                rule.matches_number(values.numbers[k])
            } else {
                rule.matches_text(&values.texts[k])
            }
        }))
    }
}

/// Adds an optional column to those read; its index among them.
fn optional<'a>(wanted: &mut Vec<&'a str>, column: Option<&'a str>) -> Option<usize> {
    column.map(|c| {
        wanted.push(c);
        wanted.len() - 1
    })
}

fn item_table(t: &crate::ItemTable, catalog: &mut ItemCatalog) -> Result<()> {
    let index: HashMap<&str, usize> = catalog.raw_ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let mut wanted = vec![t.columns.item.as_str()];
    let title = optional(&mut wanted, t.columns.title.as_deref());
    let categories = optional(&mut wanted, t.columns.categories.as_deref());
    let (mut titles, mut genres) = (vec![String::new(); catalog.len()], vec![Vec::new(); catalog.len()]);
    let (mut matched, mut example) = (0usize, None);
    let options = Options { format: t.format, delimiter: t.delimiter.as_deref(), header: t.header };
    let rows = read::scan(Path::new(&t.path), options, &wanted, |file, row, cells| {
        let id = cells[0].id(At { file, row, column: wanted[0] })?;
        let Some(&i) = index.get(id.as_ref()) else {
            example.get_or_insert_with(|| id.to_string());
            return Ok(());
        };
        matched += 1;
        if let Some(c) = title {
            titles[i] = cells[c].category();
        }
        if let Some(c) = categories {
            genres[i] = cells[c].list(&t.multi_value_separator);
        }
        Ok(())
    })?;
    if matched == 0 {
        bail!(
            "{}: none of its {rows} item ids is an item of the log (its first is {:?}; the log's first is {:?})",
            t.path,
            example.unwrap_or_default(),
            catalog.raw_ids.first().cloned().unwrap_or_default()
        );
    }
    catalog.titles = titles;
    catalog.genres = genres;
    Ok(())
}

fn user_table(t: &crate::UserTable, user_raw_ids: &[String]) -> Result<BTreeMap<String, Vec<String>>> {
    let index: HashMap<&str, usize> = user_raw_ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let mut wanted = vec![t.columns.user.as_str()];
    wanted.extend(t.columns.features.iter().map(String::as_str));
    let mut columns: Vec<Vec<String>> = vec![vec![String::new(); user_raw_ids.len()]; t.columns.features.len()];
    let mut matched = 0usize;
    let options = Options { format: t.format, delimiter: t.delimiter.as_deref(), header: t.header };
    let rows = read::scan(Path::new(&t.path), options, &wanted, |file, row, cells| {
        let id = cells[0].id(At { file, row, column: wanted[0] })?;
        if let Some(&u) = index.get(id.as_ref()) {
            matched += 1;
            for (column, cell) in columns.iter_mut().zip(&cells[1..]) {
                column[u] = cell.category();
            }
        }
        Ok(())
    })?;
    if matched == 0 {
        bail!("{}: none of its {rows} user ids is a user of the log", t.path);
    }
    Ok(t.columns.features.iter().cloned().zip(columns).collect())
}

/// sha256 over every part's bytes, in order.
fn checksum(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for part in read::parts(path)? {
        let mut f = std::fs::File::open(&part).with_context(|| format!("opening {}", part.display()))?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}
