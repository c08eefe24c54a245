//! Outcomes and explicit negative feedback declared over the rating, with
//! known answers in every layout, and the rules' errors.

use funnel_api::{BuildCx, ComponentKind, Dataset, LoadedDataset, Registry};
use funnel_dataset_movielens::{MovieLens, MovieLensParams};

use crate::release;

/// (user, item, rating, timestamp) in file order. User 3 has one positive
/// and is dropped at min_user_interactions = 2; movie 50 has no positive;
/// user 1 dislikes movie 30 twice, the second time earlier.
const ROWS: [(u64, u64, &str, i64); 11] = [
    (1, 10, "5", 300),
    (1, 20, "4", 100),
    (1, 30, "2", 200),
    (2, 30, "4", 150),
    (2, 10, "1", 120),
    (2, 20, "3", 130),
    (2, 40, "5", 160),
    (3, 10, "5", 50),
    (3, 20, "1", 60),
    (1, 50, "1", 400),
    (1, 30, "2", 90),
];

/// The release in each layout: (variant, ratings file, its bytes).
fn layouts() -> Vec<(&'static str, &'static str, String)> {
    let joined =
        |sep: &str| -> String { ROWS.iter().map(|(u, i, r, t)| format!("{u}{sep}{i}{sep}{r}{sep}{t}\n")).collect() };
    vec![
        ("ml-1m", "ratings.dat", joined("::")),
        ("ml-100k", "u.data", joined("\t")),
        ("ml-latest-small", "ratings.csv", format!("userId,movieId,rating,timestamp\n{}", joined(","))),
    ]
}

fn load(dir: &std::path::Path, variant: &str, extra: MovieLensParams) -> anyhow::Result<LoadedDataset> {
    let params = MovieLensParams {
        variant: variant.to_string(),
        path: Some(dir.to_str().expect("temporary paths are UTF-8").to_string()),
        min_user_interactions: 2,
        ..extra
    };
    MovieLens::new(params)?.load()
}

fn liked_loved(min_rating: f32) -> MovieLensParams {
    MovieLensParams {
        min_rating,
        outcomes: [("loved", "rating >= 5"), ("liked", "rating >= 4")].map(|(k, v)| (k.into(), v.into())).into(),
        negative_feedback: Some("rating <= 2".into()),
        ..MovieLensParams::default()
    }
}

#[test]
fn liked_loved_and_disliked_in_every_layout() {
    for (variant, file, ratings) in layouts() {
        let dir = release(&[(file, ratings.as_bytes())]);
        // min_rating is not used once outcomes are declared.
        let d = load(dir.path(), variant, liked_loved(5.0)).unwrap();
        assert_eq!(d.outcomes, ["liked", "loved"], "{variant}");
        assert_eq!(d.raw_rows, 11);
        assert_eq!(d.user_raw_ids, ["1", "2"], "{variant}");
        assert_eq!(d.catalog.raw_ids, ["10", "20", "30", "40"], "{variant}");
        assert_eq!(d.interactions.users, [0, 0, 1, 1], "{variant}");
        assert_eq!(d.interactions.items, [0, 1, 2, 3], "{variant}");
        assert_eq!(d.interactions.timestamps, [300, 100, 150, 160], "{variant}");
        assert_eq!(d.interactions.outcomes, [0b11, 0b01, 0b01, 0b11], "{variant}");
        // User 3 is dropped, movie 50 has no positive, and of user 1's two
        // dislikes of movie 30 the earlier stays; file order.
        assert_eq!(d.raw_feedback().collect::<Vec<_>>(), [("2", "10", 120), ("1", "30", 90)], "{variant}");
        assert!(d.feedback.outcomes.is_empty());

        // A negative rule alone: positives by min_rating, as without it.
        let negative = MovieLensParams { negative_feedback: Some("rating < 3".into()), ..MovieLensParams::default() };
        let d = load(dir.path(), variant, negative).unwrap();
        let plain = load(dir.path(), variant, MovieLensParams::default()).unwrap();
        assert!(d.outcomes.is_empty() && d.interactions.outcomes.is_empty(), "{variant}");
        assert_eq!(
            (&d.interactions.users, &d.interactions.items, &d.interactions.timestamps),
            (&plain.interactions.users, &plain.interactions.items, &plain.interactions.timestamps)
        );
        assert_eq!(d.raw_feedback().collect::<Vec<_>>(), [("2", "10", 120), ("1", "30", 90)], "{variant}");
        // The default declares neither.
        assert!(plain.outcomes.is_empty() && plain.interactions.outcomes.is_empty() && plain.feedback.is_empty());
    }
}

#[test]
fn nothing_left_names_the_outcomes() {
    let (variant, file, ratings) = layouts().remove(0);
    let dir = release(&[(file, ratings.as_bytes())]);
    let only_tens = MovieLensParams {
        outcomes: [("perfect".to_string(), "rating > 5".to_string())].into(),
        ..MovieLensParams::default()
    };
    let e = load(dir.path(), variant, only_tens).unwrap_err().to_string();
    assert!(e.contains("after outcomes perfect and min_user_interactions = 2"), "{e}");
}

fn build_error(text: &str) -> String {
    let mut reg = Registry::new();
    funnel_dataset_movielens::register(&mut reg);
    match reg.build_dataset("movielens", text.parse().expect("test TOML"), &BuildCx::default()) {
        Ok(_) => panic!("building from {text:?} succeeded"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn rules_may_only_compare_the_rating_with_a_number() {
    // Checked before the data is looked for.
    let e = build_error("path = \"/nonexistent\"\noutcomes = { liked = \"stars >= 4\" }");
    assert_eq!(
        e,
        "key `outcomes.liked`: the rule reads column `stars`, which this dataset does not have (it has `rating`)"
    );
    let e = build_error("negative_feedback = \"timestamp < 5\"");
    assert!(e.starts_with("key `negative_feedback`: the rule reads column `timestamp`"), "{e}");
    let e = build_error("outcomes = { liked = \"rating >= 4\", meh = \"rating == so-so\" }");
    assert_eq!(
        e,
        "key `outcomes.meh`: the rating is a number; compare it with one (e.g. \"rating >= 4\"), not \
         \"rating == \"so-so\"\""
    );
    let e = build_error("outcomes = { liked = \"rating ~ 4\" }");
    assert!(e.starts_with("key `outcomes.liked`: rule \"rating ~ 4\""), "{e}");
}

#[test]
fn trackers_leave_out_min_rating_once_outcomes_replace_it() {
    let mut reg = Registry::new();
    funnel_dataset_movielens::register(&mut reg);
    let unused = |text: &str| reg.unused(ComponentKind::Dataset, "movielens", text.parse().unwrap()).unwrap();
    assert!(unused("min_rating = 3.0").is_empty());
    assert_eq!(unused("outcomes = { liked = \"rating >= 4\" }"), ["min_rating"]);
}

#[test]
fn declared_rules_survive_a_round_trip_and_defaults_write_nothing_new() {
    let written = toml::to_string(&MovieLensParams::default()).unwrap();
    assert!(!written.contains("outcomes") && !written.contains("negative_feedback"), "{written}");
    let p = liked_loved(4.0);
    let back: MovieLensParams = funnel_api::parse_params(toml::to_string(&p).unwrap().parse().unwrap()).unwrap();
    assert_eq!(back, p);
    let _: &dyn Dataset = &MovieLens::new(p).unwrap();
}
