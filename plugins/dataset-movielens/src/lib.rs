//! The `movielens` dataset plugin: its parameters, its registration, and the
//! `Dataset` that reads a MovieLens release as implicit positive interactions.
//!
//! A rating >= `min_rating` is a positive, or, with `outcomes` declared
//! (liked = "rating >= 4", loved = "rating >= 5"), a rating meeting at
//! least one outcome rule, carrying those outcomes; a rating that is no
//! positive but meets `negative_feedback` is explicit negative feedback.
//! Users with fewer than `min_user_interactions` positives are dropped;
//! users and items get dense indices in order of first appearance among the
//! kept rows, which stay in file order. The release is read from `path`,
//! `$FUNNEL_DATA_DIR/<variant>` or the download cache, or downloaded from
//! GroupLens and verified.
//!
//! ml-100k (`u.user`) and ml-1m (`users.dat`) also describe their users:
//! `user_attributes` gets `gender`, `age`, `occupation` and `zip` exactly as
//! the file spells them (ml-1m's age and occupation are codes, ml-100k's are
//! years and names), "" for a kept user the file does not list. Without that
//! file (the CSV releases, a folder holding only ratings) it stays empty.

#![forbid(unsafe_code)]

mod assemble;
mod classify;
mod csv;
mod download;
mod locate;
mod parse;
mod variant;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use funnel_api::{BuildCx, Dataset, LoadedDataset, OutcomeRules, Registry};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use variant::{Layout, Variant};

/// Registers the `movielens` dataset.
pub fn register(reg: &mut Registry) {
    reg.dataset::<MovieLensParams>(
        "movielens",
        "MovieLens ratings (ml-100k, ml-1m, ml-20m, ml-25m, ml-latest, ml-latest-small) as implicit \
         positives, read from a folder or downloaded from GroupLens and verified by sha256",
        build,
    );
}

fn build(params: MovieLensParams, _cx: &BuildCx) -> Result<Box<dyn Dataset>> {
    Ok(Box::new(MovieLens::new(params)?))
}

/// Parameters of `movielens`.
#[funnel_api::params(unused = MovieLensParams::unused_keys)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovieLensParams {
    /// MovieLens release: "ml-100k", "ml-1m", "ml-20m", "ml-25m",
    /// "ml-latest" or "ml-latest-small".
    #[param(default = "ml-1m")]
    pub variant: String,
    /// Folder holding the release's files (u.data, ratings.dat or
    /// ratings.csv; the movies and users files beside them are optional).
    /// Unset: $FUNNEL_DATA_DIR/<variant>, then <cache_dir>/<variant>, then a
    /// download.
    pub path: Option<String>,
    /// A rating >= this is a positive interaction; the rest are dropped.
    /// Not used when `outcomes` are declared.
    #[param(default = 4.0)]
    pub min_rating: f32,
    /// Named outcomes, each a rule over the rating: "rating <op> <number>"
    /// with op >=, >, <=, <, == or != (e.g. liked = "rating >= 4", loved =
    /// "rating >= 5"). A rating meeting at least one is a positive carrying
    /// those outcomes; the rest are dropped. Empty: positives by `min_rating`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outcomes: BTreeMap<String, String>,
    /// A rule over the rating (as in `outcomes`) for explicit negative
    /// feedback: a rating that is no positive but meets it says the user
    /// did not want the movie (e.g. "rating <= 2").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub negative_feedback: Option<String>,
    /// Users with fewer positives than this are dropped.
    #[param(default = 5)]
    pub min_user_interactions: usize,
    /// Where official archives are downloaded and unpacked. Unset:
    /// $XDG_CACHE_HOME/funnel/movielens, else ~/.cache/funnel/movielens.
    pub cache_dir: Option<String>,
}

impl MovieLensParams {
    /// Keys trackers leave out: the threshold once outcomes replace it.
    fn unused_keys(&self) -> Vec<&'static str> {
        if self.outcomes.is_empty() {
            Vec::new()
        } else {
            vec!["min_rating"]
        }
    }
}

/// A MovieLens release as a `Dataset`.
#[derive(Debug, Clone)]
pub struct MovieLens {
    params: MovieLensParams,
    variant: Variant,
    rules: OutcomeRules,
}

impl MovieLens {
    /// Checks the parameters (variant name, threshold, outcome rules, an
    /// explicit `path`) without reading any data.
    pub fn new(params: MovieLensParams) -> Result<MovieLens> {
        let variant = Variant::parse(&params.variant)?;
        if !params.min_rating.is_finite() {
            bail!("min_rating must be a finite number, not {}", params.min_rating);
        }
        let rules = OutcomeRules::parse(&params.outcomes, params.negative_feedback.as_deref(), Some(&["rating"]))?;
        let keyed = params
            .outcomes
            .keys()
            .map(|name| format!("outcomes.{name}"))
            .chain(params.negative_feedback.is_some().then(|| "negative_feedback".to_string()));
        for (key, rule) in keyed.zip(rules.outcomes.iter().map(|(_, r)| r).chain(&rules.negative)) {
            if !rule.is_numeric() {
                bail!(
                    "key `{key}`: the rating is a number; compare it with one (e.g. \"rating >= 4\"), not \"{rule}\""
                );
            }
        }
        if let Some(path) = &params.path {
            locate::check_explicit(Path::new(path), variant)?;
        }
        Ok(MovieLens { params, variant, rules })
    }

    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The folder the release will be read from, downloading it first when
    /// no local copy exists.
    pub fn locate(&self) -> Result<PathBuf> {
        let variant = self.variant;
        locate::locate(
            variant,
            self.params.path.as_deref(),
            self.params.cache_dir.as_deref(),
            &locate::Env::current(),
            |cache| {
                download::fetch(
                    &download::archive_url(variant),
                    download::archive_sha256(variant),
                    cache,
                    variant.name(),
                    variant.ratings_file(),
                    download::Retry::DEFAULT,
                )
            },
        )
    }

    /// Reads the release from `dir`, which must hold its ratings file; the
    /// movies file is optional (without it every title is empty), and so is
    /// the users file (without it `user_attributes` is empty).
    pub fn load_dir(&self, dir: &Path) -> Result<LoadedDataset> {
        let layout = self.variant.layout();
        let ratings_path = dir.join(layout.ratings_file());
        let min_rating = self.params.min_rating;
        let classes = classify::Classifier::new(min_rating, self.rules.clone());
        let (positives, checksum) = match layout {
            Layout::Tab | Layout::DoubleColon => {
                let bytes = fs::read(&ratings_path).with_context(|| format!("reading {}", ratings_path.display()))?;
                let fmt = if layout == Layout::Tab { &parse::TAB } else { &parse::DOUBLE_COLON };
                let positives = parse::parse_ratings(&bytes, fmt, &ratings_path, &classes)?;
                (positives, download::hex(&Sha256::digest(&bytes)))
            }
            Layout::Csv => csv::read_ratings(&ratings_path, &classes)?,
        };
        let movies = read_movies(dir, layout)?;
        let users = read_users(dir, layout)?;
        assemble::assemble(
            positives,
            &movies,
            users.as_deref(),
            assemble::Provenance {
                name: format!("movielens/{}", self.variant),
                source: dir.display().to_string(),
                checksum,
                ratings_file: &ratings_path,
                min_rating,
                outcomes: self.rules.names(),
                min_user_interactions: self.params.min_user_interactions,
            },
        )
    }
}

impl Dataset for MovieLens {
    fn load(&self) -> Result<LoadedDataset> {
        let dir = self.locate()?;
        self.load_dir(&dir)
    }
}

/// The release's titles and genres, or none when its movies file is absent.
fn read_movies(dir: &Path, layout: Layout) -> Result<Vec<parse::Movie>> {
    let path = dir.join(layout.movies_file());
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    match layout {
        Layout::Tab => {
            let genre_path = dir.join("u.genre");
            let genre_names = if genre_path.is_file() {
                parse::parse_genre_names(&read(&genre_path)?, &genre_path)?
            } else {
                parse::ML100K_GENRES.iter().map(std::string::ToString::to_string).collect()
            };
            parse::parse_u_item(&read(&path)?, &path, &genre_names)
        }
        Layout::DoubleColon => parse::parse_movies_dat(&read(&path)?, &path),
        Layout::Csv => csv::read_movies(&path),
    }
}

/// The release's user demographics, or none when it has no users file (the
/// CSV layouts) or the file is absent (a folder or older copy holding only
/// ratings and movies).
fn read_users(dir: &Path, layout: Layout) -> Result<Option<Vec<parse::UserRow>>> {
    type Parser = fn(&[u8], &Path) -> Result<Vec<parse::UserRow>>;
    let (name, parse): (&str, Parser) = match (layout, layout.users_file()) {
        (Layout::Tab, Some(name)) => (name, parse::parse_u_user),
        (Layout::DoubleColon, Some(name)) => (name, parse::parse_users_dat),
        _ => return Ok(None),
    };
    let path = dir.join(name);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Some(parse(&bytes, &path)?))
}
