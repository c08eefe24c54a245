//! A seeded MovieLens-shaped rating log (the ml-25m CSV layout), for the
//! benches that measure growth with the data.

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, LogNormal, WeightedAliasIndex};

pub const ML25M: Shape = Shape { users: 162_541, items: 59_047, ratings: 25_000_095 };
const GENRES: usize = 20;

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub users: usize,
    pub items: usize,
    pub ratings: usize,
}

impl Shape {
    /// ml-25m's shape at `ratings` interactions: users and items scale with
    /// the square root of the ratio, so ratings per user and per item scale
    /// alike.
    pub fn at(ratings: usize) -> Shape {
        let f = (ratings as f64 / ML25M.ratings as f64).sqrt();
        let scale = |n: usize| ((n as f64 * f).round() as usize).max(100);
        let users = scale(ML25M.users).min(ratings / 20);
        Shape { users, items: scale(ML25M.items), ratings }
    }
}

/// Writes `ratings.csv` and `movies.csv` of `shape` into `dir`.
pub fn generate(dir: &Path, shape: Shape, seed: u64) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(seed);
    // Items: a genre each, Zipf-like popularity over a random order.
    let genre_of: Vec<usize> = (0..shape.items).map(|_| rng.gen_range(0..GENRES)).collect();
    let mut rank: Vec<usize> = (0..shape.items).collect();
    for i in (1..rank.len()).rev() {
        rank.swap(i, rng.gen_range(0..=i));
    }
    let popularity: Vec<f64> = rank.iter().map(|&r| 1.0 / (r as f64 + 10.0).powf(0.9)).collect();
    let global = WeightedAliasIndex::new(popularity.clone())?;
    let by_genre: Vec<(Vec<usize>, WeightedAliasIndex<f64>)> = (0..GENRES)
        .map(|g| {
            let members: Vec<usize> = (0..shape.items).filter(|&i| genre_of[i] == g).collect();
            let weights = members.iter().map(|&i| popularity[i]).collect();
            Ok((members, WeightedAliasIndex::new(weights)?))
        })
        .collect::<Result<_>>()?;
    let movie_id = |i: usize| 1 + 3 * i as u64;

    let mut movies = std::io::BufWriter::new(std::fs::File::create(dir.join("movies.csv"))?);
    writeln!(movies, "movieId,title,genres")?;
    for (i, genre) in genre_of.iter().enumerate() {
        writeln!(movies, "{},Movie {i} ({}),Genre{genre}", movie_id(i), 1950 + i % 70)?;
    }
    movies.flush()?;

    // Users: at least 20 ratings each, log-normal activity scaled to the total.
    let activity = LogNormal::new(0.0, 1.1)?;
    let weights: Vec<f64> = (0..shape.users).map(|_| activity.sample(&mut rng)).collect();
    let spare = shape.ratings.saturating_sub(20 * shape.users) as f64;
    let total: f64 = weights.iter().sum();
    let cap = shape.items / 2;
    let counts: Vec<usize> = weights.iter().map(|w| (20 + (spare * w / total).round() as usize).min(cap)).collect();

    let mut ratings = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dir.join("ratings.csv"))?);
    writeln!(ratings, "userId,movieId,rating,timestamp")?;
    let mut seen = HashSet::new();
    for (u, &count) in counts.iter().enumerate() {
        let favourites = [rng.gen_range(0..GENRES), rng.gen_range(0..GENRES), rng.gen_range(0..GENRES)];
        let mut t: u64 = rng.gen_range(820_000_000..1_550_000_000);
        seen.clear();
        while seen.len() < count {
            let item = if rng.gen_bool(0.7) {
                let (members, alias) = &by_genre[favourites[rng.gen_range(0..3)]];
                if members.is_empty() {
                    continue;
                }
                members[alias.sample(&mut rng)]
            } else {
                global.sample(&mut rng)
            };
            if !seen.insert(item) {
                continue;
            }
            let rating = if rng.gen_bool(0.48) {
                if rng.gen_bool(0.45) {
                    "5.0"
                } else {
                    "4.0"
                }
            } else {
                ["0.5", "1.0", "1.5", "2.0", "2.5", "3.0", "3.5"][rng.gen_range(0..7)]
            };
            t += rng.gen_range(1..200_000);
            writeln!(ratings, "{},{},{rating},{t}", u + 1, movie_id(item))?;
        }
    }
    ratings.flush()?;
    Ok(())
}
