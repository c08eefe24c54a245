//! `[dataset] type = "clustered"`: a generated interaction log with
//! structure a model can learn: items fall into clusters, each user mostly
//! stays in one cluster, and the next item is usually a near neighbour (in
//! cluster order) of the one before.

use funnel_api::anyhow::{ensure, Result};
use funnel_api::{BuildCx, Dataset, Interactions, ItemCatalog, ItemIdx, LoadedDataset, Registry, UserIdx};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

pub fn register(reg: &mut Registry) {
    reg.dataset::<ClusteredParams>(
        "clustered",
        "A generated log: users who mostly stay in one cluster of items and move to near neighbours",
        |params, cx: &BuildCx| {
            ensure!(params.items >= params.clusters && params.clusters > 0, "key `clusters`: 1 to `items`");
            ensure!(params.per_user >= 3, "key `per_user`: at least 3 (training, validation and test)");
            ensure!(params.per_user <= params.items / params.clusters, "key `per_user`: at most items / clusters");
            Ok(Box::new(Clustered { params, seed: cx.seed }))
        },
    );
}

/// Parameters of `clustered`.
#[funnel_api::params]
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusteredParams {
    /// Users in the log.
    #[param(default = 500)]
    pub users: usize,
    /// Items in the catalog.
    #[param(default = 400)]
    pub items: usize,
    /// Clusters the items fall into (contiguous blocks of ids).
    #[param(default = 10)]
    pub clusters: usize,
    /// Interactions per user, each a distinct item.
    #[param(default = 20)]
    pub per_user: usize,
    /// Chance that a user's next item is outside their cluster.
    #[param(default = 0.1)]
    pub explore: f64,
}

struct Clustered {
    params: ClusteredParams,
    seed: u64,
}

impl Dataset for Clustered {
    fn load(&self) -> Result<LoadedDataset> {
        let p = &self.params;
        let mut rng = StdRng::seed_from_u64(self.seed);
        let size = p.items / p.clusters;
        let mut interactions = Interactions::default();
        for user in 0..p.users {
            let home = rng.gen_range(0..p.clusters);
            let mut current = home * size + rng.gen_range(0..size);
            let mut seen = Vec::with_capacity(p.per_user);
            while seen.len() < p.per_user {
                if !seen.contains(&current) {
                    seen.push(current);
                    interactions.users.push(user as UserIdx);
                    interactions.items.push(current as ItemIdx);
                    interactions.timestamps.push((user * p.per_user + seen.len()) as i64);
                }
                current = if rng.gen_bool(p.explore) {
                    rng.gen_range(0..p.clusters * size)
                } else {
                    // A near neighbour within the home cluster.
                    home * size + (current % size + rng.gen_range(1..=3)) % size
                };
            }
        }
        let n = p.clusters * size;
        let catalog = ItemCatalog {
            raw_ids: (0..n).map(|i| format!("m{i}")).collect(),
            titles: (0..n).map(|i| format!("cluster {} item {}", i / size, i % size)).collect(),
            genres: (0..n).map(|i| vec![format!("cluster {}", i / size)]).collect(),
        };
        Ok(LoadedDataset {
            name: format!("clustered/{}x{}", p.users, n),
            source: "generated".to_string(),
            checksum: format!("generated with seed {}", self.seed),
            user_raw_ids: (1..=p.users).map(|u| format!("u{u}")).collect(),
            raw_rows: interactions.len(),
            catalog,
            interactions,
            // No user attributes, outcomes or negative feedback; the default
            // also keeps this plugin compiling as funnel's data grows.
            ..Default::default()
        })
    }
}
