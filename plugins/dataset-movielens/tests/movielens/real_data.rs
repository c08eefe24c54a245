//! The real ml-100k and ml-1m copies in `../shared/data` beside the project
//! (never committed), against counts computed independently with awk:
//!
//! ```text
//! awk -F'\t' '$3>=4{n++; c[$1]++} END{print n; for(k in c) if(c[k]>=5){u++; r+=c[k]}; print u, r}' u.data
//! ```
//!
//! and the same with `-F'::'` on ratings.dat; items counted likewise over the
//! rows of kept users.

use std::path::{Path, PathBuf};

use funnel_api::Dataset;
use funnel_dataset_movielens::{MovieLens, MovieLensParams};

use crate::load;

fn shared(variant: &str) -> Option<PathBuf> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data")).join(variant);
    if dir.is_dir() {
        Some(dir)
    } else {
        // The data may not be redistributed, so a checkout elsewhere lacks it.
        eprintln!("skipping: {} is absent", dir.display());
        None
    }
}

#[test]
fn ml_100k_counts_and_titles() {
    let Some(dir) = shared("ml-100k") else { return };
    let d = load(&dir, "ml-100k", 4.0, 5).unwrap();
    assert_eq!(d.name, "movielens/ml-100k");
    assert_eq!(d.checksum, "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490");
    assert_eq!(d.raw_rows, 100_000);
    // 55,375 rows rate >= 4; 938 users have >= 5 of them, holding 55,361 rows
    // over 1,447 items.
    assert_eq!(d.interactions.len(), 55_361);
    assert_eq!(d.n_users(), 938);
    assert_eq!(d.n_items(), 1_447);
    assert_eq!(d.user_raw_ids[..3], ["298", "253", "286"]);
    assert_eq!(d.catalog.raw_ids[..3], ["474", "465", "1014"]);
    assert_eq!(d.interactions.timestamps[0], 884_182_806);
    let toy = d.catalog.titles.iter().position(|t| t == "Toy Story (1995)").expect("Toy Story is kept");
    assert_eq!(d.catalog.raw_ids[toy], "1");
    assert_eq!(d.catalog.genres[toy], ["Animation", "Children's", "Comedy"]);
    assert!(d.catalog.titles.iter().all(|t| !t.is_empty()));

    // Outcomes over the same positives: 21,199 of the kept rows rate 5, and
    // 16,951 rows of kept users on kept items rate <= 2 (no pair is rated twice):
    // awk -F'\t' '$3>=4{c[$1]++} {u[NR]=$1; i[NR]=$2; r[NR]=$3} END{for(n=1;n<=NR;n++) if(c[u[n]]>=5 && r[n]>=4)
    //   {items[i[n]]=1; if(r[n]==5) l++} for(n=1;n<=NR;n++) if(c[u[n]]>=5 && r[n]<=2 && (i[n] in items)) f++; print l, f}'
    let params = MovieLensParams {
        variant: "ml-100k".into(),
        path: Some(dir.display().to_string()),
        outcomes: [("liked", "rating >= 4"), ("loved", "rating >= 5")].map(|(k, v)| (k.into(), v.into())).into(),
        negative_feedback: Some("rating <= 2".into()),
        ..MovieLensParams::default()
    };
    let o = MovieLens::new(params).unwrap().load().unwrap();
    assert_eq!((o.interactions.items.as_slice(), o.user_raw_ids.len()), (d.interactions.items.as_slice(), 938));
    assert!(o.interactions.outcomes.iter().all(|&m| m & 1 == 1));
    assert_eq!(o.interactions.outcomes.iter().filter(|&&m| m == 0b11).count(), 21_199);
    assert_eq!(o.feedback.len(), 16_951);

    let all = load(&dir, "ml-100k", 1.0, 1).unwrap();
    assert_eq!((all.interactions.len(), all.n_users(), all.n_items()), (100_000, 943, 1_682));
    assert_every_user_described(&all);
}

#[test]
fn ml_1m_counts_and_titles() {
    let Some(dir) = shared("ml-1m") else { return };
    let d = load(&dir, "ml-1m", 4.0, 5).unwrap();
    assert_eq!(d.name, "movielens/ml-1m");
    assert_eq!(d.checksum, "4dfba5d0f5babae7a3f8aaab403d9287c28d75a1265406625fab5697d431d765");
    // The shared copy holds only the 575,281 ratings >= 4; four users have
    // fewer than 5 (4, 1, 2 and 2 rows), leaving 575,272 rows of 6,034 users
    // over 3,533 items.
    assert_eq!(d.raw_rows, 575_281);
    assert_eq!(d.interactions.len(), 575_272);
    assert_eq!(d.n_users(), 6_034);
    assert_eq!(d.n_items(), 3_533);
    assert!(!d.user_raw_ids.iter().any(|u| ["4295", "5850", "4636", "4349"].contains(&u.as_str())));
    assert_eq!(d.user_raw_ids[0], "1");
    assert_eq!(d.catalog.raw_ids[..3], ["1193", "3408", "2355"]);
    assert_eq!(d.catalog.titles[0], "One Flew Over the Cuckoo's Nest (1975)");
    assert_eq!(d.catalog.genres[0], ["Drama"]);
    assert_eq!(d.catalog.raw_ids[287], "73");
    assert_eq!(d.catalog.titles[287], "Misérables, Les (1995)");
    assert!(d.catalog.titles.iter().any(|t| t == "Toy Story (1995)"));
    assert_every_user_described(&d);
    // users.dat's first line: `1::F::1::10::48067`.
    let attribute = |name: &str| d.user_attributes[name][0].as_str();
    assert_eq!(
        [attribute("gender"), attribute("age"), attribute("occupation"), attribute("zip")],
        ["F", "1", "10", "48067"]
    );
}

/// u.user and users.dat describe every user, so each kept one has a gender,
/// an age, an occupation and a zip code.
fn assert_every_user_described(d: &funnel_api::LoadedDataset) {
    let names: Vec<&str> = d.user_attributes.keys().map(String::as_str).collect();
    assert_eq!(names, ["age", "gender", "occupation", "zip"]);
    for (name, column) in &d.user_attributes {
        assert_eq!(column.len(), d.n_users(), "{name}");
        assert!(column.iter().all(|v| !v.is_empty()), "an empty {name}");
    }
}
