//! One small synthetic release written in each of the three layouts, with
//! known answers: thresholds, dense index order, file order on tied
//! timestamps, ISO-8859-1 and quoted titles.

use funnel_api::LoadedDataset;
use sha2::{Digest, Sha256};

use crate::{load, release};

/// (user, item, rating, timestamp) in file order. User 3 has one positive
/// and is dropped at min_user_interactions = 2; users 1 and 2 have tied
/// timestamps whose file order must survive.
const ROWS: [(u64, u64, &str, i64); 7] = [
    (1, 10, "5", 300),
    (2, 10, "3", 100),
    (2, 20, "4", 100),
    (3, 30, "5", 50),
    (1, 20, "4", 300),
    (2, 30, "4", 100),
    (1, 40, "4", 200),
];

fn rows_joined(sep: &str) -> String {
    ROWS.iter().map(|(u, i, r, t)| format!("{u}{sep}{i}{sep}{r}{sep}{t}\n")).collect()
}

/// The answer every layout must give at min_rating = 4, min_user_interactions = 2.
fn assert_known_answer(d: &LoadedDataset, variant: &str, dir: &std::path::Path, ratings: &[u8]) {
    assert_eq!(d.name, format!("movielens/{variant}"));
    assert_eq!(d.source, dir.display().to_string());
    assert_eq!(d.checksum, format!("{:x}", Sha256::digest(ratings)));
    assert_eq!(d.raw_rows, 7);
    assert_eq!(d.user_raw_ids, ["1", "2"]);
    assert_eq!(d.catalog.raw_ids, ["10", "20", "30", "40"]);
    assert_eq!(d.interactions.users, [0, 1, 0, 1, 0]);
    assert_eq!(d.interactions.items, [0, 1, 1, 2, 3]);
    assert_eq!(d.interactions.timestamps, [300, 100, 300, 100, 200]);
    assert_eq!(d.catalog.titles, ["Café (1999)", "American President, The (1995)", "", "Untitled"]);
    assert_eq!(d.catalog.display(2), "item 30");
    assert_eq!(d.catalog.genres[0], ["Comedy", "Drama"]);
    assert_eq!(d.catalog.genres[1], ["Action"]);
    assert!(d.catalog.genres[2].is_empty() && d.catalog.genres[3].is_empty());
}

const MOVIES_DAT: &[u8] =
    b"10::Caf\xe9 (1999)::Comedy|Drama\n20::American President, The (1995)::Action\n40::Untitled::\n";

#[test]
fn double_colon_layout_known_answer() {
    let ratings = rows_joined("::");
    let dir = release(&[("ratings.dat", ratings.as_bytes()), ("movies.dat", MOVIES_DAT)]);
    let d = load(dir.path(), "ml-1m", 4.0, 2).unwrap();
    assert_known_answer(&d, "ml-1m", dir.path(), ratings.as_bytes());
}

/// A `u.item` line: 19 genre flags, set at `genres` (indices into u.genre).
fn u_item_line(id: u64, title: &[u8], genres: &[usize]) -> Vec<u8> {
    let mut line = format!("{id}|").into_bytes();
    line.extend_from_slice(title);
    line.extend_from_slice(b"|01-Jan-1995||http://us.imdb.com/M/x");
    for g in 0..19 {
        line.extend_from_slice(if genres.contains(&g) { b"|1" } else { b"|0" });
    }
    line.push(b'\n');
    line
}

const U_GENRE: &str = "unknown|0\nAction|1\nAdventure|2\nAnimation|3\nChildren's|4\nComedy|5\nCrime|6\n\
Documentary|7\nDrama|8\nFantasy|9\nFilm-Noir|10\nHorror|11\nMusical|12\nMystery|13\nRomance|14\n\
Sci-Fi|15\nThriller|16\nWar|17\nWestern|18\n\n";

#[test]
fn tab_layout_known_answer_with_and_without_u_genre() {
    let ratings = rows_joined("\t");
    let mut u_item = u_item_line(10, b"Caf\xe9 (1999)", &[5, 8]);
    u_item.extend(u_item_line(20, b"American President, The (1995)", &[1]));
    u_item.extend(u_item_line(40, b"Untitled", &[]));
    let dir = release(&[("u.data", ratings.as_bytes()), ("u.item", &u_item)]);
    let d = load(dir.path(), "ml-100k", 4.0, 2).unwrap();
    assert_known_answer(&d, "ml-100k", dir.path(), ratings.as_bytes());

    // Names come from u.genre when it is there, decoded as ISO-8859-1.
    let u_genre: Vec<u8> = U_GENRE.replace("Comedy|5", "Komödie|5").chars().map(|c| c as u8).collect();
    std::fs::write(dir.path().join("u.genre"), u_genre).unwrap();
    let d = load(dir.path(), "ml-100k", 4.0, 2).unwrap();
    assert_eq!(d.catalog.genres[0], ["Komödie", "Drama"]);
}

const MOVIES_CSV: &str = "movieId,title,genres\n\
10,Café (1999),Comedy|Drama\n\
20,\"American President, The (1995)\",Action\n\
40,Untitled,(no genres listed)\n\
50,\"Quote \"\"Marks\"\" (2001)\",Drama\n";

#[test]
fn csv_layout_known_answer() {
    let ratings = format!("userId,movieId,rating,timestamp\n{}\n\n", rows_joined(","));
    let dir = release(&[("ratings.csv", ratings.as_bytes()), ("movies.csv", MOVIES_CSV.as_bytes())]);
    let d = load(dir.path(), "ml-latest-small", 4.0, 2).unwrap();
    assert_known_answer(&d, "ml-latest-small", dir.path(), ratings.as_bytes());
}

#[test]
fn csv_half_star_ratings_meet_the_threshold() {
    let ratings = "userId,movieId,rating,timestamp\r\n1,50,3.5,9\r\n1,10,3.0,8\r\n1,20,4.5,7\r\n";
    let dir = release(&[("ratings.csv", ratings.as_bytes()), ("movies.csv", MOVIES_CSV.as_bytes())]);
    let d = load(dir.path(), "ml-25m", 3.5, 1).unwrap();
    assert_eq!(d.raw_rows, 3);
    assert_eq!(d.catalog.raw_ids, ["50", "20"]);
    assert_eq!(d.catalog.titles, ["Quote \"Marks\" (2001)", "American President, The (1995)"]);
    assert_eq!(d.interactions.timestamps, [9, 7]);
    let d = load(dir.path(), "ml-25m", 4.0, 1).unwrap();
    assert_eq!(d.catalog.raw_ids, ["20"]);
}

#[test]
fn csv_spanning_several_batches_is_read_whole() {
    // 200,000 rows: more than one arrow batch; every third is a 2-star row.
    let mut ratings = String::from("userId,movieId,rating,timestamp\n");
    for i in 0..200_000u64 {
        let rating = if i % 3 == 0 { "2" } else { "4.5" };
        ratings.push_str(&format!("{},{},{rating},{i}\n", i % 1000, i % 778));
    }
    let dir = release(&[("ratings.csv", ratings.as_bytes())]);
    let d = load(dir.path(), "ml-20m", 4.0, 1).unwrap();
    assert_eq!(d.raw_rows, 200_000);
    assert_eq!(d.interactions.len(), 200_000 - 66_667);
    assert_eq!(d.checksum, format!("{:x}", Sha256::digest(ratings.as_bytes())));
    assert_eq!(d.interactions.timestamps[..3], [1, 2, 4]);
    assert_eq!(d.user_raw_ids[..3], ["1", "2", "4"]);
    assert_eq!(d.n_users(), 1000);
    assert_eq!(d.n_items(), 778);
}

#[test]
fn thresholds_change_what_is_kept() {
    let ratings = rows_joined("::");
    let dir = release(&[("ratings.dat", ratings.as_bytes())]);
    // A 3-star threshold admits user 2's first row, which comes first for item 10.
    let d = load(dir.path(), "ml-1m", 3.0, 2).unwrap();
    assert_eq!(d.interactions.len(), 6);
    assert_eq!(d.user_raw_ids, ["1", "2"]);
    assert_eq!(d.interactions.users[..2], [0, 1]);
    // Everyone with one positive stays at min_user_interactions = 1, and user
    // 3's item 30 now appears before user 1's item 20.
    let d = load(dir.path(), "ml-1m", 4.0, 1).unwrap();
    assert_eq!(d.user_raw_ids, ["1", "2", "3"]);
    assert_eq!(d.catalog.raw_ids, ["10", "20", "30", "40"]);
    assert_eq!(d.interactions.items, [0, 1, 2, 1, 2, 3]);
    // Without a movies file every title is empty and display shows the id.
    assert!(d.catalog.titles.iter().all(String::is_empty));
    assert_eq!(d.catalog.display(0), "item 10");
}

/// The attribute `name` of every user, in user index order.
fn attribute<'a>(d: &'a LoadedDataset, name: &str) -> &'a [String] {
    d.user_attributes.get(name).unwrap_or_else(|| panic!("no attribute `{name}`"))
}

#[test]
fn users_files_give_each_kept_user_its_demographics() {
    // Users are indexed 1, 2, 3 at min_user_interactions = 1; the files list
    // them out of order, leave out user 3 and add user 8, who rated nothing.
    let users_dat = b"2::M::56::16::70072\n8::F::18::3::10001\n1::F::1::10::48067\n";
    let ratings = rows_joined("::");
    let dir = release(&[("ratings.dat", ratings.as_bytes()), ("users.dat", users_dat)]);
    let d = load(dir.path(), "ml-1m", 4.0, 1).unwrap();
    assert_eq!(d.user_raw_ids, ["1", "2", "3"]);
    assert_eq!(d.user_attributes.len(), 4);
    assert_eq!(attribute(&d, "gender"), ["F", "M", ""]);
    assert_eq!(attribute(&d, "age"), ["1", "56", ""]);
    assert_eq!(attribute(&d, "occupation"), ["10", "16", ""]);
    assert_eq!(attribute(&d, "zip"), ["48067", "70072", ""]);

    let u_user = b"2|53|M|other|T8H1N\n1|24|F|technician|85711\n3|17|M|student|01002\n";
    let ratings = rows_joined("\t");
    let dir = release(&[("u.data", ratings.as_bytes()), ("u.user", u_user)]);
    let d = load(dir.path(), "ml-100k", 4.0, 2).unwrap();
    assert_eq!(d.user_raw_ids, ["1", "2"]);
    assert_eq!(attribute(&d, "gender"), ["F", "M"]);
    assert_eq!(attribute(&d, "age"), ["24", "53"]);
    assert_eq!(attribute(&d, "occupation"), ["technician", "other"]);
    assert_eq!(attribute(&d, "zip"), ["85711", "T8H1N"]);
}

#[test]
fn without_a_users_file_there_are_no_attributes() {
    let ratings = rows_joined("::");
    let dir = release(&[("ratings.dat", ratings.as_bytes()), ("movies.dat", MOVIES_DAT)]);
    assert!(load(dir.path(), "ml-1m", 4.0, 2).unwrap().user_attributes.is_empty());
    let ratings = rows_joined("\t");
    let dir = release(&[("u.data", ratings.as_bytes())]);
    assert!(load(dir.path(), "ml-100k", 4.0, 2).unwrap().user_attributes.is_empty());
    // The CSV releases have no demographics; a stray users.dat is not read.
    let ratings = format!("userId,movieId,rating,timestamp\n{}", rows_joined(","));
    let dir = release(&[("ratings.csv", ratings.as_bytes()), ("users.dat", b"garbage")]);
    assert!(load(dir.path(), "ml-25m", 4.0, 2).unwrap().user_attributes.is_empty());
}
