//! funnel's baselines: rankers without learned vectors that every report
//! shows next to the model, ranked on the same test cases over the full
//! catalog, so a model's numbers have context.
//!
//! - `most_popular`: each item's number of training positives.
//! - `covisitation`: the item-to-item co-visitation graph of YouTube's 2010
//!   recommender (Davidson et al., "The YouTube video recommendation system",
//!   RecSys 2010): items watched within a window of each other are related,
//!   and a user's recent items vote for their neighbours.
//! - `ials`: implicit-feedback matrix factorisation by weighted alternating
//!   least squares (Hu, Koren & Volinsky 2008), a case's user factor folded
//!   in from its history.
//! - `random_walk`: Pixie-style random walks with restart on the item graph
//!   of consumption order, with freshness decay and a new-user node.
//!
//! All learn from the training examples alone: a user's sequence is read up
//! to and including their last training target, never the validation or test
//! targets that follow it.

#![forbid(unsafe_code)]

mod bounds;
mod covisitation;
mod ials;
mod popular;
mod random_walk;

pub use covisitation::{Covisitation, CovisitationParams};
pub use ials::{Ials, IalsParams};
pub use popular::MostPopular;
pub use random_walk::{RandomWalk, RandomWalkParams};

use funnel_api::{BuildCx, NoParams, Registry};

/// Registers `most_popular`, `covisitation`, `ials` and `random_walk`.
pub fn register(reg: &mut Registry) {
    reg.baseline::<NoParams>(
        "most_popular",
        "Scores each item by its number of training positives (train targets only): the same \
         list for every user",
        |_, _cx: &BuildCx| Ok(Box::new(MostPopular::default())),
    );
    reg.baseline::<CovisitationParams>(
        "covisitation",
        "Item-to-item co-visitation (Davidson et al. 2010): items within `window` positions of \
         each other in a user's training sequence are related, r(i, j) = c_ij / (c_i c_j)^alpha; \
         an item scores the sum of its relatedness to the user's `seeds` most recent items, and \
         items without evidence follow by popularity",
        |p, _cx: &BuildCx| Ok(Box::new(Covisitation::new(p))),
    );
    reg.baseline::<IalsParams>(
        "ials",
        "Implicit-feedback matrix factorisation by weighted alternating least squares (Hu, Koren & \
         Volinsky 2008): confidence 1 + alpha * count, exact Cholesky solves with the Gramian trick; a \
         case's user factor is solved from its whole history against the item factors",
        |p, cx: &BuildCx| Ok(Box::new(Ials::new(p, cx.seed))),
    );
    reg.baseline::<RandomWalkParams>(
        "random_walk",
        "Random walks with restart on the item graph of consumption order (Pixie, Eksombatchai et al. \
         2018): from the user's `seeds` most recent items (a new-user node for an empty history), items \
         score their visits; edges optionally decayed by age (`half_life_days`)",
        |p, cx: &BuildCx| Ok(Box::new(RandomWalk::new(p, cx.seed))),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use funnel_api::{parse_params, toml, ComponentKind};

    #[test]
    fn both_baselines_are_registered_with_documented_defaults() {
        let mut reg = Registry::new();
        register(&mut reg);
        let names: Vec<_> =
            reg.plugins().into_iter().filter(|p| p.kind == ComponentKind::Baseline).map(|p| p.name).collect();
        assert_eq!(names, ["covisitation", "ials", "most_popular", "random_walk"]);
        let covisitation = reg.info(ComponentKind::Baseline, "covisitation").unwrap();
        let keys: Vec<_> = covisitation.params.iter().map(|(k, _, _)| k.as_str()).collect();
        assert_eq!(keys, ["window", "alpha", "seeds"]);
        let resolved = reg.resolve(ComponentKind::Baseline, "covisitation", toml::Table::new()).unwrap();
        assert_eq!(resolved.to_string(), "alpha = 0.5\nseeds = 5\nwindow = 5\n");
        assert!(reg.resolve(ComponentKind::Baseline, "most_popular", toml::Table::new()).unwrap().is_empty());
    }

    #[test]
    fn an_unknown_baseline_lists_the_registered_ones() {
        let mut reg = Registry::new();
        register(&mut reg);
        let err = reg.resolve(ComponentKind::Baseline, "most_popularr", toml::Table::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown baseline type \"most_popularr\"; registered baseline types: \"covisitation\", \"ials\", \
             \"most_popular\", \"random_walk\""
        );
    }

    #[test]
    fn out_of_range_parameters_name_their_key() {
        let parse = |text: &str| parse_params::<CovisitationParams>(text.parse().unwrap()).unwrap_err().to_string();
        assert_eq!(parse("window = 0"), "key `window`: must be at least 1, found 0");
        assert_eq!(parse("seeds = 0"), "key `seeds`: must be at least 1, found 0");
        assert_eq!(parse("alpha = 1.5"), "key `alpha`: must be between 0 and 1, found 1.5");
        assert!(parse("windows = 3").starts_with("key `windows`: unknown field"));
        assert!(parse_params::<NoParams>("window = 3".parse().unwrap()).is_err());
        let parse = |text: &str| parse_params::<IalsParams>(text.parse().unwrap()).unwrap_err().to_string();
        assert_eq!(parse("factors = 0"), "key `factors`: must be at least 1, found 0");
        assert_eq!(parse("regularization = 0.0"), "key `regularization`: must be a finite number > 0, found 0");
        assert_eq!(parse("alpha = -1.0"), "key `alpha`: must be a finite number >= 0, found -1");
        assert_eq!(parse("iterations = 0"), "key `iterations`: must be at least 1, found 0");
    }
}

#[cfg(test)]
pub(crate) mod fixture {
    use funnel_api::{Example, ExampleSet, ItemIdx};

    /// Examples over hand-written sequences, with the protocol of the
    /// `watch_history` features: the last item of each sequence is the test
    /// target, the one before it the validation target, and every earlier
    /// position from 1 on a training example; `holdout = false` makes every
    /// position from 1 on a training example instead.
    pub fn examples(sequences: &[&[ItemIdx]], holdout: bool) -> ExampleSet {
        let mut set = ExampleSet {
            sequences: sequences.iter().map(|s| s.to_vec()).collect(),
            max_history: 30,
            ..Default::default()
        };
        for (user, seq) in sequences.iter().enumerate() {
            let (user, n) = (user as u32, seq.len() as u32);
            if holdout {
                if n >= 2 {
                    set.test.push(Example { user, position: n - 1, ahead: 0 });
                }
                if n >= 3 {
                    set.validation.push(Example { user, position: n - 2, ahead: 0 });
                }
                set.train.extend((1..n.saturating_sub(2)).map(|position| Example { user, position, ahead: 0 }));
            } else {
                set.train.extend((1..n).map(|position| Example { user, position, ahead: 0 }));
            }
        }
        set
    }
}
