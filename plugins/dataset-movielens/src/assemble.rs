//! From parsed positives to a `LoadedDataset`: the per-user threshold, dense
//! indices in order of first appearance, the catalog of kept items and the
//! demographics of kept users.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Result};
use funnel_api::{ItemCatalog, LoadedDataset};
use funnel_dataset_interactions::log::{self, Filters, Row};
use funnel_dataset_interactions::Dedup;

use crate::parse::{Movie, Positives, UserRow, USER_ATTRIBUTES};

/// Raw ids to dense indices `0..n`, assigned in order of first appearance.
struct FirstSeen {
    lookup: Lookup,
    raw: Vec<u64>,
}

/// MovieLens ids are small and nearly dense, so a flat table beats hashing;
/// a stray huge id falls back to a map rather than a huge table.
enum Lookup {
    Table(Vec<u32>),
    Map(HashMap<u64, u32>),
}

const VACANT: u32 = u32::MAX;

impl FirstSeen {
    /// An empty mapping sized for `ids`, which it will be asked about.
    fn for_ids(ids: &[u64]) -> FirstSeen {
        let max = ids.iter().copied().max().unwrap_or(0);
        let table_limit = (ids.len() as u64 * 4).max(1 << 20);
        let lookup = match usize::try_from(max) {
            Ok(max) if (max as u64) < table_limit => Lookup::Table(vec![VACANT; max + 1]),
            _ => Lookup::Map(HashMap::new()),
        };
        FirstSeen { lookup, raw: Vec::new() }
    }

    /// The index of `id`, assigning the next one when `id` is new.
    fn index(&mut self, id: u64) -> u32 {
        let next = self.raw.len() as u32;
        let slot = match &mut self.lookup {
            // `for_ids` sized the table for every id it will see.
            Lookup::Table(t) => &mut t[id as usize],
            Lookup::Map(m) => m.entry(id).or_insert(VACANT),
        };
        if *slot == VACANT {
            *slot = next;
            self.raw.push(id);
        }
        *slot
    }

    fn get(&self, id: u64) -> Option<u32> {
        let idx = match &self.lookup {
            Lookup::Table(t) => usize::try_from(id).ok().and_then(|i| t.get(i)).copied(),
            Lookup::Map(m) => m.get(&id).copied(),
        };
        idx.filter(|&i| i != VACANT)
    }
}

/// What `assemble` needs besides the rows, for the result and its errors.
pub(crate) struct Provenance<'a> {
    pub name: String,
    pub source: String,
    pub checksum: String,
    pub ratings_file: &'a Path,
    pub min_rating: f32,
    /// The declared outcomes' names (then `min_rating` is not used).
    pub outcomes: Vec<String>,
    pub min_user_interactions: usize,
}

/// Drops users with fewer than `min_user_interactions` positives, indexes
/// users and items densely by first appearance among the kept rows (both
/// through `funnel_dataset_interactions::log`, shared with `interactions`), and
/// builds the catalog of exactly the kept items (titles from `movies` where
/// known, "" otherwise). With a demographics file (`demographics`), every kept user
/// gets its attributes ("" for a user the file does not list); without one
/// `user_attributes` stays empty.
pub(crate) fn assemble(
    pos: Positives,
    movies: &[Movie],
    demographics: Option<&[UserRow]>,
    prov: Provenance<'_>,
) -> Result<LoadedDataset> {
    if pos.users.len() >= VACANT as usize {
        bail!("{} holds {} positives, more than this plugin indexes", prov.ratings_file.display(), pos.users.len());
    }
    // Provisional ids by first appearance in the file, through flat tables;
    // filtering and final indices are the path every dataset shares.
    let mut users = FirstSeen::for_ids(&pos.users);
    let mut items = FirstSeen::for_ids(&pos.items);
    // Masks are empty without outcomes: every row's is then 0.
    let masks = pos.outcomes.iter().copied().chain(std::iter::repeat(0));
    let rows: Vec<Row> = pos
        .users
        .iter()
        .zip(&pos.items)
        .zip(&pos.timestamps)
        .zip(masks)
        .map(|(((&u, &i), &time), outcomes)| Row { user: users.index(u), item: items.index(i), time, outcomes })
        .collect();
    let filters =
        Filters { dedup: Dedup::All, min_user_interactions: prov.min_user_interactions, min_item_interactions: 1 };
    let kept = log::keep(&rows, users.raw.len(), items.raw.len(), filters);
    drop(rows);
    if kept.interactions.is_empty() {
        let positives = if prov.outcomes.is_empty() {
            format!("min_rating = {}", prov.min_rating)
        } else {
            format!("outcomes {}", prov.outcomes.join(", "))
        };
        bail!(
            "no positive interactions left in {} after {positives} and min_user_interactions = {} \
             ({} rows read, {} positives)",
            prov.ratings_file.display(),
            prov.min_user_interactions,
            pos.raw_rows,
            pos.users.len()
        );
    }
    // Feedback on a user or movie without positives is dropped anyway.
    let feedback_rows: Vec<Row> = pos
        .feedback
        .iter()
        .filter_map(|&(u, i, time)| Some(Row { user: users.get(u)?, item: items.get(i)?, time, outcomes: 0 }))
        .collect();
    let feedback = log::feedback(&feedback_rows, &kept);
    let user_raw_ids: Vec<u64> = kept.users.iter().map(|&u| users.raw[u as usize]).collect();
    let interactions = kept.interactions;

    let n_items = kept.items.len();
    let mut catalog =
        ItemCatalog { raw_ids: Vec::new(), titles: vec![String::new(); n_items], genres: vec![Vec::new(); n_items] };
    let mut described = vec![false; n_items];
    for movie in movies {
        let Some(i) = items.get(movie.id).map(|p| kept.item_index[p as usize]).filter(|&i| i != VACANT) else {
            continue;
        };
        // The first entry of a duplicated id wins, as a reader scanning
        // the file top-down would expect.
        if !described[i as usize] {
            described[i as usize] = true;
            catalog.titles[i as usize] = movie.title.clone();
            catalog.genres[i as usize] = movie.genres.clone();
        }
    }
    catalog.raw_ids = kept.items.iter().map(|&i| items.raw[i as usize].to_string()).collect();
    let user_attributes = demographics.map(|rows| user_attributes(rows, &user_raw_ids)).unwrap_or_default();
    let user_raw_ids = user_raw_ids.iter().map(u64::to_string).collect();

    Ok(LoadedDataset {
        name: prov.name,
        source: prov.source,
        checksum: prov.checksum,
        user_raw_ids,
        catalog,
        interactions,
        user_attributes,
        raw_rows: pos.raw_rows,
        outcomes: prov.outcomes,
        feedback,
    })
}

/// One column per attribute, aligned with `user_raw_ids`; users absent from
/// `rows` get "", and as with movies the first row of a duplicated id wins.
fn user_attributes(rows: &[UserRow], user_raw_ids: &[u64]) -> BTreeMap<String, Vec<String>> {
    let index: HashMap<u64, usize> = user_raw_ids.iter().enumerate().map(|(i, &raw)| (raw, i)).collect();
    let mut columns = USER_ATTRIBUTES.map(|_| vec![String::new(); user_raw_ids.len()]);
    let mut described = vec![false; user_raw_ids.len()];
    for row in rows {
        if let Some(&u) = index.get(&row.id) {
            if !described[u] {
                described[u] = true;
                for (column, value) in columns.iter_mut().zip(&row.values) {
                    column[u] = value.clone();
                }
            }
        }
    }
    USER_ATTRIBUTES.iter().map(std::string::ToString::to_string).zip(columns).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prov(min_user_interactions: usize) -> Provenance<'static> {
        Provenance {
            name: "t".into(),
            source: "s".into(),
            checksum: "c".into(),
            ratings_file: Path::new("r.dat"),
            min_rating: 4.0,
            outcomes: Vec::new(),
            min_user_interactions,
        }
    }

    fn positives(rows: &[(u64, u64, i64)]) -> Positives {
        let mut p = Positives::default();
        for &(u, i, t) in rows {
            p.push(u, i, t, 0);
        }
        p.raw_rows = rows.len() + 3;
        p
    }

    #[test]
    fn dense_indices_follow_first_appearance_among_kept_rows() {
        // User 9 has one positive and is dropped, so item 500 (seen only by
        // user 9) is absent and item 7 becomes index 1 after item 3.
        let pos = positives(&[(9, 500, 1), (4, 3, 5), (2, 7, 2), (4, 7, 2), (2, 3, 9)]);
        let movies = [
            Movie { id: 7, title: "Seven".into(), genres: vec!["Drama".into()] },
            Movie { id: 7, title: "Duplicate".into(), genres: vec![] },
            Movie { id: 500, title: "Dropped".into(), genres: vec![] },
        ];
        let d = assemble(pos, &movies, None, prov(2)).unwrap();
        assert_eq!(d.user_raw_ids, ["4", "2"]);
        assert_eq!(d.catalog.raw_ids, ["3", "7"]);
        assert_eq!(d.interactions.users, [0, 1, 0, 1]);
        assert_eq!(d.interactions.items, [0, 1, 1, 0]);
        assert_eq!(d.interactions.timestamps, [5, 2, 2, 9]);
        assert_eq!(d.catalog.titles, ["", "Seven"]);
        assert_eq!(d.catalog.genres, [vec![], vec!["Drama".to_string()]]);
        assert_eq!(d.catalog.display(0), "item 3");
        assert_eq!(d.raw_rows, 8);
        assert!(d.user_attributes.is_empty());
    }

    #[test]
    fn user_attributes_follow_the_dense_user_indices() {
        // Users are indexed 4, 2, 6 by first appearance; user 9 is dropped,
        // user 6 is missing from the file, user 5 is not in the ratings and
        // user 2's second line is a duplicate.
        let pos = positives(&[(4, 1, 0), (9, 1, 0), (2, 1, 0), (4, 2, 0), (6, 3, 0), (2, 2, 0), (6, 1, 0)]);
        let row = |id, v: [&str; 4]| UserRow { id, values: v.map(String::from) };
        let users = [
            row(2, ["F", "18", "4", "10001"]),
            row(5, ["M", "1", "0", "99999"]),
            row(9, ["M", "56", "1", "12345"]),
            row(4, ["M", "25", "7", "55455"]),
            row(2, ["M", "50", "9", "00000"]),
        ];
        let d = assemble(pos, &[], Some(&users), prov(2)).unwrap();
        assert_eq!(d.user_raw_ids, ["4", "2", "6"]);
        let column = |name: &str| d.user_attributes[name].clone();
        assert_eq!(d.user_attributes.keys().collect::<Vec<_>>(), ["age", "gender", "occupation", "zip"]);
        assert_eq!(column("gender"), ["M", "F", ""]);
        assert_eq!(column("age"), ["25", "18", ""]);
        assert_eq!(column("occupation"), ["7", "4", ""]);
        assert_eq!(column("zip"), ["55455", "10001", ""]);

        // An empty file still names every attribute, unknown for everyone.
        let d = assemble(positives(&[(1, 1, 0)]), &[], Some(&[]), prov(1)).unwrap();
        assert!(USER_ATTRIBUTES.iter().all(|a| d.user_attributes[*a] == [""]));
    }

    #[test]
    fn huge_ids_use_the_map_and_agree_with_the_table() {
        let rows = [(u64::MAX, 1 << 40, 0), (3, 2, 0), (u64::MAX, 2, 1)];
        let d = assemble(positives(&rows), &[], None, prov(1)).unwrap();
        assert_eq!(d.user_raw_ids, [u64::MAX.to_string(), "3".to_string()]);
        assert_eq!(d.catalog.raw_ids, [(1u64 << 40).to_string(), "2".to_string()]);
        assert_eq!(d.interactions.items, [0, 1, 1]);
    }

    #[test]
    fn nothing_left_names_file_and_thresholds() {
        let e = assemble(positives(&[(1, 1, 0)]), &[], None, prov(5)).unwrap_err().to_string();
        assert!(
            e.starts_with("no positive interactions left in r.dat after min_rating = 4 and min_user_interactions = 5"),
            "{e}"
        );
    }
}
