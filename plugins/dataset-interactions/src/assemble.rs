//! From rows to a `LoadedDataset`: positives, repeats, the k-core, dense
//! indices, and the optional item and user tables.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use funnel_api::{Interactions, ItemCatalog, LoadedDataset};
use sha2::{Digest, Sha256};

use crate::cells::At;
use crate::read::{self, Options};
use crate::time::TimestampFormat;
use crate::{Dedup, InteractionsParams};

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

/// One positive as read, with its place in the file(s).
#[derive(Debug, Clone, Copy)]
struct Row {
    user: u32,
    item: u32,
    time: i64,
}

/// How many rows each step removed, for the log line and for the error
/// when nothing is left.
#[derive(Debug, Default)]
struct Removed {
    read: usize,
    below_min_rating: usize,
    repeated: usize,
    by_minimums: usize,
}

pub fn load(p: &InteractionsParams) -> Result<LoadedDataset> {
    let path = Path::new(&p.path);
    let format = TimestampFormat::parse(&p.timestamp_format).map_err(anyhow::Error::msg)?;
    let mut wanted = vec![p.columns.user.as_str(), p.columns.item.as_str()];
    let time_column = optional(&mut wanted, p.columns.timestamp.as_deref());
    let rating_column = optional(&mut wanted, p.columns.rating.as_deref());
    let (mut users, mut items) = (Interner::default(), Interner::default());
    let mut rows = Vec::new();
    let mut removed = Removed::default();
    let options = Options { format: p.format, delimiter: p.delimiter.as_deref(), header: p.header };
    removed.read = read::scan(path, options, &wanted, |file, row, cells| {
        let at = |c: usize| At { file, row, column: wanted[c] };
        let user = cells[0].id(at(0))?;
        let item = cells[1].id(at(1))?;
        let time = match time_column {
            Some(c) => cells[c].timestamp(&format, at(c))?,
            None => rows.len() as i64 + removed.below_min_rating as i64,
        };
        if let Some(c) = rating_column {
            let rating = cells[c].number(at(c))?;
            if p.min_rating.is_some_and(|min| rating < min) {
                removed.below_min_rating += 1;
                return Ok(());
            }
        }
        rows.push(Row { user: users.id(&user), item: items.id(&item), time });
        Ok(())
    })?;
    let kept = dedup(&rows, p.dedup);
    removed.repeated = rows.len() - kept.iter().filter(|&&k| k).count();
    let kept = k_core(&rows, kept, users.names.len(), items.names.len(), p);
    let positives: Vec<Row> = rows.iter().zip(&kept).filter(|(_, &k)| k).map(|(r, _)| *r).collect();
    removed.by_minimums = rows.len() - removed.repeated - positives.len();
    if positives.is_empty() {
        bail!(
            "{}: no interactions left: {} rows read, {} below min_rating, {} repeated (user, item) pairs dropped \
             (dedup = {}), {} removed by min_user_interactions = {} / min_item_interactions = {}",
            path.display(),
            removed.read,
            removed.below_min_rating,
            removed.repeated,
            format!("{:?}", p.dedup).to_lowercase(),
            removed.by_minimums,
            p.min_user_interactions,
            p.min_item_interactions
        );
    }

    // Dense indices in order of first appearance among the kept rows.
    let (mut user_index, mut item_index) = (vec![u32::MAX; users.names.len()], vec![u32::MAX; items.names.len()]);
    let (mut user_raw_ids, mut item_raw_ids) = (Vec::new(), Vec::new());
    let mut interactions = Interactions::default();
    for r in &positives {
        if user_index[r.user as usize] == u32::MAX {
            user_index[r.user as usize] = user_raw_ids.len() as u32;
            user_raw_ids.push(std::mem::take(&mut users.names[r.user as usize]));
        }
        if item_index[r.item as usize] == u32::MAX {
            item_index[r.item as usize] = item_raw_ids.len() as u32;
            item_raw_ids.push(std::mem::take(&mut items.names[r.item as usize]));
        }
        interactions.users.push(user_index[r.user as usize]);
        interactions.items.push(item_index[r.item as usize]);
        interactions.timestamps.push(r.time);
    }
    eprintln!(
        "interactions: {} rows read from {}; {} below min_rating, {} repeated pairs, {} under the minimums dropped; \
         {} positives, {} users, {} items",
        removed.read,
        path.display(),
        removed.below_min_rating,
        removed.repeated,
        removed.by_minimums,
        positives.len(),
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
    })
}

/// Adds an optional column to those read; its index among them.
fn optional<'a>(wanted: &mut Vec<&'a str>, column: Option<&'a str>) -> Option<usize> {
    column.map(|c| {
        wanted.push(c);
        wanted.len() - 1
    })
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
    let mut seen = HashSet::with_capacity(rows.len());
    let mut kept = vec![false; rows.len()];
    for i in order {
        kept[i] = seen.insert((rows[i].user, rows[i].item));
    }
    kept
}

/// Drops users and items under their minimum counts until none is.
fn k_core(rows: &[Row], mut kept: Vec<bool>, n_users: usize, n_items: usize, p: &InteractionsParams) -> Vec<bool> {
    loop {
        let (mut per_user, mut per_item) = (vec![0usize; n_users], vec![0usize; n_items]);
        for (r, _) in rows.iter().zip(&kept).filter(|(_, &k)| k) {
            per_user[r.user as usize] += 1;
            per_item[r.item as usize] += 1;
        }
        let mut changed = false;
        for (r, k) in rows.iter().zip(kept.iter_mut()).filter(|(_, k)| **k) {
            if per_user[r.user as usize] < p.min_user_interactions
                || per_item[r.item as usize] < p.min_item_interactions
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
