//! What a user sees when parameters, folders or files are wrong: every
//! message names the key, folder, or file and line at fault.

use funnel_api::{parse_params, BuildCx, ComponentKind, ParamError, Registry};
use funnel_dataset_movielens::MovieLensParams;

use crate::{load, release};

fn registry() -> Registry {
    let mut reg = Registry::new();
    funnel_dataset_movielens::register(&mut reg);
    reg
}

fn table(text: &str) -> toml::Table {
    text.parse().expect("test TOML parses")
}

fn build_error(text: &str) -> String {
    match registry().build_dataset("movielens", table(text), &BuildCx::default()) {
        Ok(_) => panic!("building from {text:?} succeeded"),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn unknown_parameter_key_is_named() {
    let e = parse_params::<MovieLensParams>(table("min_ratings = 3.0")).unwrap_err();
    let p = e.downcast_ref::<ParamError>().expect("a ParamError");
    assert_eq!(p.key.as_deref(), Some("min_ratings"));
    assert!(e.to_string().contains("min_ratings"), "{e}");
}

#[test]
fn defaults_and_docs_are_registered() {
    let reg = registry();
    let info = reg.info(ComponentKind::Dataset, "movielens").expect("registered");
    let shown: Vec<(&str, &str)> = info.params.iter().map(|(k, d, _)| (k.as_str(), d.as_str())).collect();
    assert_eq!(
        shown,
        [
            ("variant", "\"ml-1m\""),
            ("path", "(unset)"),
            ("min_rating", "4.0"),
            ("outcomes", "(unset)"),
            ("negative_feedback", "(unset)"),
            ("min_user_interactions", "5"),
            ("cache_dir", "(unset)"),
        ]
    );
    assert!(info.params.iter().all(|(_, _, doc)| !doc.is_empty() && !doc.contains("(default ")));
    assert_eq!(parse_params::<MovieLensParams>(toml::Table::new()).unwrap(), MovieLensParams::default());
}

#[test]
fn unknown_variant_lists_the_valid_ones() {
    let e = build_error("variant = \"ml-10m\"");
    assert!(e.contains("unknown MovieLens variant \"ml-10m\""), "{e}");
    assert!(e.contains("\"ml-100k\", \"ml-1m\", \"ml-20m\", \"ml-25m\", \"ml-latest\", \"ml-latest-small\""), "{e}");
}

#[test]
fn missing_or_wrong_folder_is_named() {
    let e = build_error("path = \"/nonexistent/ml\"");
    assert!(e.contains("dataset.path `/nonexistent/ml` does not exist"), "{e}");
    let dir = release(&[("u.data", b"1\t2\t5\t3\n")]);
    let e = build_error(&format!("path = \"{}\"", dir.path().display()));
    assert_eq!(
        e,
        format!(
            "dataset.path `{}` does not contain ratings.dat (expected MovieLens ml-1m layout)",
            dir.path().display()
        )
    );
}

#[test]
fn non_finite_threshold_is_refused() {
    let e = build_error("min_rating = nan");
    assert!(e.contains("min_rating must be a finite number"), "{e}");
}

#[test]
fn empty_after_filtering_names_file_and_thresholds() {
    let dir = release(&[("ratings.dat", b"1::2::5::3\n1::3::4::3\n")]);
    let e = load(dir.path(), "ml-1m", 4.0, 5).unwrap_err().to_string();
    let file = dir.path().join("ratings.dat");
    assert!(
        e.starts_with(&format!(
            "no positive interactions left in {} after min_rating = 4 and min_user_interactions = 5",
            file.display()
        )),
        "{e}"
    );
}

#[test]
fn malformed_dat_line_gives_file_and_line() {
    let dir = release(&[("ratings.dat", b"1::2::5::3\n1::3::4::3\n31::forty-two::5::1000\n")]);
    let e = load(dir.path(), "ml-1m", 4.0, 1).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:3: expected `UserID::MovieID::Rating::Timestamp`, found `31::forty-two::5::1000` \
             (cannot parse MovieID from `forty-two`)",
            dir.path().join("ratings.dat").display()
        )
    );
}

#[test]
fn malformed_u_item_line_gives_file_and_line() {
    let dir = release(&[("u.data", b"1\t2\t5\t3\n"), ("u.item", b"2|Only a title\n")]);
    let e = load(dir.path(), "ml-100k", 4.0, 1).unwrap_err().to_string();
    assert!(e.starts_with(&format!("{}:1: expected `movie id|title", dir.path().join("u.item").display())), "{e}");
}

#[test]
fn malformed_users_lines_give_file_and_line() {
    let dir = release(&[("ratings.dat", b"1::2::5::3\n"), ("users.dat", b"1::F::1::10::48067\n2::M::25::16\n")]);
    let e = load(dir.path(), "ml-1m", 4.0, 1).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:2: expected `UserID::Gender::Age::Occupation::Zip-code`, found `2::M::25::16` (4 fields instead of 5)",
            dir.path().join("users.dat").display()
        )
    );
    let dir = release(&[("u.data", b"1\t2\t5\t3\n"), ("u.user", b"\n\nx|24|M|technician|85711\n")]);
    let e = load(dir.path(), "ml-100k", 4.0, 1).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:3: expected `user id|age|gender|occupation|zip code`, found `x|24|M|technician|85711` \
             (cannot parse user id from `x`)",
            dir.path().join("u.user").display()
        )
    );
}

/// The error for `ratings.csv` holding `rows` after the header.
fn csv_error(rows: &str) -> String {
    let text = format!("userId,movieId,rating,timestamp\n{rows}");
    let dir = release(&[("ratings.csv", text.as_bytes())]);
    let e = load(dir.path(), "ml-20m", 4.0, 1).unwrap_err().to_string();
    let prefix = format!("{}", dir.path().join("ratings.csv").display());
    e.strip_prefix(&prefix).unwrap_or_else(|| panic!("{e} does not name the file")).to_string()
}

#[test]
fn malformed_csv_lines_give_file_line_and_field() {
    assert_eq!(
        csv_error("1,2,4,5\n2,abc,4,5\n"),
        ":3: expected `userId,movieId,rating,timestamp`, found `2,abc,4,5` (cannot parse movieId from `abc`)"
    );
    assert!(csv_error("1,2,4,5\n2,3,4\n").starts_with(":3: expected"), "missing field");
    assert!(csv_error("1,2,4,5\n2,3,4\n").ends_with("(missing timestamp)"));
    assert!(csv_error("1,2,4,5\n\n2,,4,5\n")
        .ends_with(":4: expected `userId,movieId,rating,timestamp`, found `2,,4,5` (cannot parse movieId from ``)"));
    assert!(csv_error("1,2,NaN,5\n").ends_with("(cannot parse rating from `NaN`)"));
    assert!(csv_error("1,2,4,5,6\n").starts_with(":2: "));
}

#[test]
fn malformed_csv_line_past_the_first_batch_is_located() {
    let mut rows: String = (0..100_000).map(|i| format!("{i},7,4,{i}\n")).collect();
    rows.push_str("5,6,four,7\n");
    assert!(csv_error(&rows).starts_with(":100002: expected"));
}

#[test]
fn wrong_csv_header_is_shown() {
    let dir = release(&[("ratings.csv", b"user,item,rating,time\n1,2,4,5\n")]);
    let e = load(dir.path(), "ml-25m", 4.0, 1).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:1: expected the header `userId,movieId,rating,timestamp`, found `user,item,rating,time`",
            dir.path().join("ratings.csv").display()
        )
    );
}

#[test]
fn malformed_movies_csv_line_gives_file_and_line() {
    let ratings: &[u8] = b"userId,movieId,rating,timestamp\n1,2,4,5\n";
    let movies: &[u8] = b"movieId,title,genres\n2,\"A, B\",Drama\nx,Title,Drama\n";
    let dir = release(&[("ratings.csv", ratings), ("movies.csv", movies)]);
    let e = load(dir.path(), "ml-latest", 4.0, 1).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "{}:3: expected `movieId,title,genres`, found `x,Title,Drama` (cannot parse movieId from `x`)",
            dir.path().join("movies.csv").display()
        )
    );
}
