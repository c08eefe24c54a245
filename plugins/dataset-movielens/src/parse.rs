//! Byte parsers for the small layouts (ml-100k's tab and `|` files, ml-1m's
//! `::` files) and the row types every layout's reader produces.
//!
//! The whole file is in memory and parsed in place: no per-line allocation,
//! so ml-1m's ratings parse in a few tens of milliseconds.

use std::path::Path;

use anyhow::Result;

use crate::classify::{Class, Classifier};

/// Positive ratings in file order, with raw ids, and the explicit negative
/// feedback beside them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Positives {
    pub users: Vec<u64>,
    pub items: Vec<u64>,
    pub timestamps: Vec<i64>,
    /// Each positive's outcomes; empty when none are declared.
    pub outcomes: Vec<u32>,
    /// Negative feedback rows (user, item, timestamp) in file order.
    pub feedback: Vec<(u64, u64, i64)>,
    /// Data rows read, positive or not.
    pub raw_rows: usize,
}

impl Positives {
    /// Adds a positive; `outcomes` is 0 exactly when none are declared (a
    /// declared positive meets one), so masks are kept only when they are.
    pub fn push(&mut self, user: u64, item: u64, timestamp: i64, outcomes: u32) {
        self.users.push(user);
        self.items.push(item);
        self.timestamps.push(timestamp);
        if outcomes != 0 {
            self.outcomes.push(outcomes);
        }
    }

    /// Files a row by what its rating says.
    #[inline]
    pub fn add(&mut self, class: Class, user: u64, item: u64, timestamp: i64) {
        match class {
            Class::Positive(outcomes) => self.push(user, item, timestamp, outcomes),
            Class::Feedback => self.feedback.push((user, item, timestamp)),
            Class::Dropped => {}
        }
    }
}

/// One entry of a movies file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Movie {
    pub id: u64,
    pub title: String,
    pub genres: Vec<String>,
}

/// Names of the user attributes the demographics files hold, in the order of
/// [`UserRow::values`]; they become `LoadedDataset::user_attributes`' keys.
pub(crate) const USER_ATTRIBUTES: [&str; 4] = ["gender", "age", "occupation", "zip"];

/// One entry of a demographics file (`users.dat`, `u.user`), values as the
/// file spells them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UserRow {
    pub id: u64,
    /// Gender, age, occupation and zip code, in [`USER_ATTRIBUTES`] order.
    pub values: [String; 4],
}

/// How one ratings row is laid out: separator and field names for messages.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowFormat {
    pub sep: &'static [u8],
    /// Names of user, item, rating and timestamp as the release's README calls them.
    pub fields: [&'static str; 4],
    /// The row as the release documents it, quoted in error messages.
    pub expected: &'static str,
}

/// ml-1m `ratings.dat`.
pub(crate) const DOUBLE_COLON: RowFormat = RowFormat {
    sep: b"::",
    fields: ["UserID", "MovieID", "Rating", "Timestamp"],
    expected: "UserID::MovieID::Rating::Timestamp",
};

/// ml-100k `u.data`; the tabs are spelled `\t` so messages show them.
pub(crate) const TAB: RowFormat = RowFormat {
    sep: b"\t",
    fields: ["user id", "item id", "rating", "timestamp"],
    expected: "user id\\titem id\\trating\\ttimestamp",
};

/// The 19 genres of ml-100k in flag order, for when `u.genre` is absent.
pub(crate) const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// Non-blank lines of `bytes` as (1-based line number, line without its end).
/// Blank lines (a trailing newline, an empty last line) carry no data and are
/// skipped wherever they occur.
pub(crate) fn lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    bytes
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| (i + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
}

/// ISO-8859-1 text: every byte is the code point of the same value.
pub(crate) fn latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// A line as an error message quotes it: control characters escaped, cut short.
pub(crate) fn shown(line: &[u8]) -> String {
    const MAX: usize = 120;
    let text = String::from_utf8_lossy(line);
    let mut out: String = text.chars().take(MAX).flat_map(char::escape_debug).collect();
    if text.chars().count() > MAX {
        out.push_str("...");
    }
    out
}

/// `FILE:LINE: expected `FORMAT`, found `LINE` (REASON)`.
pub(crate) fn line_error(file: &Path, line_no: usize, expected: &str, line: &[u8], reason: &str) -> anyhow::Error {
    anyhow::anyhow!("{}:{line_no}: expected `{expected}`, found `{}` ({reason})", file.display(), shown(line))
}

pub(crate) fn parse_u64(b: &[u8]) -> Option<u64> {
    if b.is_empty() {
        return None;
    }
    b.iter().try_fold(0u64, |acc, &c| {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

pub(crate) fn parse_i64(b: &[u8]) -> Option<i64> {
    match b.strip_prefix(b"-") {
        Some(digits) => parse_u64(digits).and_then(|v| 0i64.checked_sub_unsigned(v)),
        None => parse_u64(b).and_then(|v| i64::try_from(v).ok()),
    }
}

/// A finite rating; whole stars take a fast path, halves (3.5) the general one.
pub(crate) fn parse_rating(b: &[u8]) -> Option<f32> {
    match b {
        [d @ b'0'..=b'9'] => Some(f32::from(d - b'0')),
        _ => std::str::from_utf8(b).ok()?.parse::<f32>().ok().filter(|r| r.is_finite()),
    }
}

/// Splits off the field before the next `sep`; `None` as the rest when the
/// field was the line's last.
fn next_field<'a>(rest: &'a [u8], sep: &[u8]) -> (&'a [u8], Option<&'a [u8]>) {
    let found = if sep.len() == 1 {
        rest.iter().position(|&b| b == sep[0])
    } else {
        rest.windows(sep.len()).position(|w| w == sep)
    };
    match found {
        Some(i) => (&rest[..i], Some(&rest[i + sep.len()..])),
        None => (rest, None),
    }
}

/// The four fields of one ratings row, or why they are not there.
pub(crate) fn parse_row(line: &[u8], fmt: &RowFormat) -> std::result::Result<(u64, u64, f32, i64), String> {
    let mut fields: [&[u8]; 4] = [&[]; 4];
    let mut rest = Some(line);
    for (i, name) in fmt.fields.iter().enumerate() {
        let Some(r) = rest else {
            return Err(format!("missing {name}"));
        };
        let (field, after) = next_field(r, fmt.sep);
        fields[i] = field;
        rest = after;
    }
    if rest.is_some() {
        return Err(format!("more than 4 fields: nothing may follow {}", fmt.fields[3]));
    }
    let bad = |i: usize| format!("cannot parse {} from `{}`", fmt.fields[i], shown(fields[i]));
    let user = parse_u64(fields[0]).ok_or_else(|| bad(0))?;
    let item = parse_u64(fields[1]).ok_or_else(|| bad(1))?;
    let rating = parse_rating(fields[2]).ok_or_else(|| bad(2))?;
    let timestamp = parse_i64(fields[3]).ok_or_else(|| bad(3))?;
    Ok((user, item, rating, timestamp))
}

/// Reads a whole `u.data` or `ratings.dat`, keeping positives and feedback as `classes` says.
pub(crate) fn parse_ratings(bytes: &[u8], fmt: &RowFormat, file: &Path, classes: &Classifier) -> Result<Positives> {
    let mut out = Positives::default();
    // About 20-25 bytes a row in both layouts; most rows are kept at the
    // default threshold, so this avoids most regrowth without overshooting far.
    let rows_guess = bytes.len() / 24;
    out.users.reserve(rows_guess);
    out.items.reserve(rows_guess);
    out.timestamps.reserve(rows_guess);
    for (line_no, line) in lines(bytes) {
        let (user, item, rating, timestamp) =
            parse_row(line, fmt).map_err(|reason| line_error(file, line_no, fmt.expected, line, &reason))?;
        out.raw_rows += 1;
        out.add(classes.classify(rating), user, item, timestamp);
    }
    Ok(out)
}

/// Every field of `line` between `sep`s.
fn split_fields<'a>(line: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut fields = Vec::new();
    let mut rest = Some(line);
    while let Some(r) = rest {
        let (field, after) = next_field(r, sep);
        fields.push(field);
        rest = after;
    }
    fields
}

/// Reads a demographics file whose lines hold `names` (the release's own
/// field names, user id first) separated by `sep`; `order` picks gender,
/// age, occupation and zip code among the fields after the user id. Ages
/// must be whole numbers (ml-1m's age codes, ml-100k's years); the other
/// values are kept as written, ISO-8859-1, and may be empty.
fn parse_users(bytes: &[u8], file: &Path, sep: &[u8], names: [&str; 5], order: [usize; 4]) -> Result<Vec<UserRow>> {
    let expected = names.join(std::str::from_utf8(sep).expect("ASCII separators"));
    let age_field = 1 + order[1];
    let mut users = Vec::new();
    for (line_no, line) in lines(bytes) {
        let err = |reason: &str| line_error(file, line_no, &expected, line, reason);
        let fields = split_fields(line, sep);
        if fields.len() != 5 {
            return Err(err(&format!("{} fields instead of 5", fields.len())));
        }
        let id = parse_u64(fields[0])
            .ok_or_else(|| err(&format!("cannot parse {} from `{}`", names[0], shown(fields[0]))))?;
        if parse_u64(fields[age_field]).is_none() {
            return Err(err(&format!("cannot parse {} from `{}`", names[age_field], shown(fields[age_field]))));
        }
        let values = order.map(|i| latin1(fields[1 + i]));
        users.push(UserRow { id, values });
    }
    Ok(users)
}

/// Reads ml-1m's `users.dat`: `UserID::Gender::Age::Occupation::Zip-code`,
/// the age a bucket code (1, 18, 25, 35, 45, 50, 56) and the occupation a
/// code 0-20.
pub(crate) fn parse_users_dat(bytes: &[u8], file: &Path) -> Result<Vec<UserRow>> {
    parse_users(bytes, file, b"::", ["UserID", "Gender", "Age", "Occupation", "Zip-code"], [0, 1, 2, 3])
}

/// Reads ml-100k's `u.user`: `user id|age|gender|occupation|zip code`, the
/// age in years and the occupation a name.
pub(crate) fn parse_u_user(bytes: &[u8], file: &Path) -> Result<Vec<UserRow>> {
    parse_users(bytes, file, b"|", ["user id", "age", "gender", "occupation", "zip code"], [1, 0, 2, 3])
}

/// Reads ml-1m's `movies.dat`: `MovieID::Title::Genres`, ISO-8859-1.
pub(crate) fn parse_movies_dat(bytes: &[u8], file: &Path) -> Result<Vec<Movie>> {
    const EXPECTED: &str = "MovieID::Title::Genres";
    let mut movies = Vec::new();
    for (line_no, line) in lines(bytes) {
        let err = |reason: &str| line_error(file, line_no, EXPECTED, line, reason);
        let (id, rest) = next_field(line, b"::");
        let Some(rest) = rest else {
            return Err(err("missing Title"));
        };
        // Genres follow the last `::`, so a title could even hold one.
        let Some(split) = rest.windows(2).rposition(|w| w == b"::") else {
            return Err(err("missing Genres"));
        };
        let id = parse_u64(id).ok_or_else(|| err(&format!("cannot parse MovieID from `{}`", shown(id))))?;
        let genres = latin1(&rest[split + 2..]);
        movies.push(Movie {
            id,
            title: latin1(&rest[..split]),
            genres: genres.split('|').filter(|g| !g.is_empty()).map(str::to_string).collect(),
        });
    }
    Ok(movies)
}

/// Reads ml-100k's `u.genre` (`name|index`) into names by index.
pub(crate) fn parse_genre_names(bytes: &[u8], file: &Path) -> Result<Vec<String>> {
    const EXPECTED: &str = "name|index";
    let mut names: Vec<Option<String>> = Vec::new();
    for (line_no, line) in lines(bytes) {
        let err = |reason: &str| line_error(file, line_no, EXPECTED, line, reason);
        let (name, index) = next_field(line, b"|");
        let Some(index) = index else {
            return Err(err("missing index"));
        };
        let i = parse_u64(index)
            .and_then(|i| usize::try_from(i).ok())
            .filter(|&i| i < 1024)
            .ok_or_else(|| err(&format!("cannot parse index from `{}`", shown(index))))?;
        if names.len() <= i {
            names.resize(i + 1, None);
        }
        if names[i].is_some() {
            return Err(err(&format!("genre index {i} appears twice")));
        }
        names[i] = Some(latin1(name));
    }
    names
        .into_iter()
        .enumerate()
        .map(|(i, n)| n.ok_or_else(|| anyhow::anyhow!("{}: no genre has index {i}", file.display())))
        .collect()
}

/// Reads ml-100k's `u.item`: `id|title|release|video release|url|` and one
/// 0/1 flag per genre of `genre_names`, ISO-8859-1.
pub(crate) fn parse_u_item(bytes: &[u8], file: &Path, genre_names: &[String]) -> Result<Vec<Movie>> {
    let expected = format!("movie id|title|release date|video release date|IMDb URL|{} genre flags", genre_names.len());
    let mut movies = Vec::new();
    for (line_no, line) in lines(bytes) {
        let err = |reason: &str| line_error(file, line_no, &expected, line, reason);
        let fields: Vec<&[u8]> = line.split(|&b| b == b'|').collect();
        if fields.len() != 5 + genre_names.len() {
            return Err(err(&format!("{} fields instead of {}", fields.len(), 5 + genre_names.len())));
        }
        let id =
            parse_u64(fields[0]).ok_or_else(|| err(&format!("cannot parse movie id from `{}`", shown(fields[0]))))?;
        let mut genres = Vec::new();
        for (flag, name) in fields[5..].iter().zip(genre_names) {
            match *flag {
                b"1" => genres.push(name.clone()),
                b"0" => {}
                other => return Err(err(&format!("genre flag `{}` for {name} is neither 0 nor 1", shown(other)))),
            }
        }
        movies.push(Movie { id, title: latin1(fields[1]), genres });
    }
    Ok(movies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> &'static Path {
        Path::new("ratings.dat")
    }

    #[test]
    fn numbers_parse_strictly() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_u64(b"1a"), None);
        assert_eq!(parse_u64(b"+1"), None);
        assert_eq!(parse_i64(b"-5"), Some(-5));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"-"), None);
        assert_eq!(parse_rating(b"4"), Some(4.0));
        assert_eq!(parse_rating(b"3.5"), Some(3.5));
        assert_eq!(parse_rating(b"NaN"), None);
        assert_eq!(parse_rating(b"inf"), None);
        assert_eq!(parse_rating(b"x"), None);
    }

    #[test]
    fn latin1_maps_bytes_to_code_points() {
        assert_eq!(latin1(b"Caf\xe9 \xdcber"), "Café Über");
    }

    #[test]
    fn ratings_keep_positive_rows_in_file_order_and_skip_blank_lines() {
        let text = b"1::10::5::100\r\n2::20::3::100\n1::30::4::100\n\n  \n";
        let p = parse_ratings(text, &DOUBLE_COLON, file(), &Classifier::threshold(4.0)).unwrap();
        assert_eq!(p.raw_rows, 3);
        assert_eq!(p.users, [1, 1]);
        assert_eq!(p.items, [10, 30]);
        assert_eq!(p.timestamps, [100, 100]);
    }

    #[test]
    fn each_malformed_field_is_named_with_file_and_line() {
        let cases: [(&[u8], &str); 6] = [
            (b"1::x::5::100", "cannot parse MovieID from `x`"),
            (b"x::1::5::100", "cannot parse UserID"),
            (b"1::1::five::100", "cannot parse Rating"),
            (b"1::1::5::", "cannot parse Timestamp from ``"),
            (b"1::1::5", "missing Timestamp"),
            (b"1::1::5::100::7", "more than 4 fields"),
        ];
        for (bad, reason) in cases {
            let mut text = b"1::10::5::100\n\n".to_vec();
            text.extend_from_slice(bad);
            let e = parse_ratings(&text, &DOUBLE_COLON, file(), &Classifier::threshold(4.0)).unwrap_err().to_string();
            let want = format!(
                "ratings.dat:3: expected `UserID::MovieID::Rating::Timestamp`, found `{}` ({reason}",
                String::from_utf8_lossy(bad)
            );
            assert!(e.starts_with(&want), "{e}\nwanted {want}");
        }
    }

    #[test]
    fn tab_rows_show_their_tabs_escaped() {
        let e = parse_ratings(b"1\t2\tx\t4\n", &TAB, Path::new("u.data"), &Classifier::threshold(4.0))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "u.data:1: expected `user id\\titem id\\trating\\ttimestamp`, found `1\\t2\\tx\\t4` \
             (cannot parse rating from `x`)"
        );
    }

    #[test]
    fn movies_dat_decodes_latin1_and_splits_genres() {
        let text = b"73::Mis\xe9rables, Les (1995)::Drama|Musical\n5::Untitled::\n";
        let m = parse_movies_dat(text, Path::new("movies.dat")).unwrap();
        assert_eq!(m[0].id, 73);
        assert_eq!(m[0].title, "Misérables, Les (1995)");
        assert_eq!(m[0].genres, ["Drama", "Musical"]);
        assert_eq!(m[1].genres, Vec::<String>::new());
        let e = parse_movies_dat(b"7 Title::Drama\n", Path::new("movies.dat")).unwrap_err();
        assert!(e.to_string().starts_with("movies.dat:1: expected `MovieID::Title::Genres`"), "{e}");
    }

    #[test]
    fn u_item_flags_become_genre_names() {
        let names: Vec<String> = ["unknown", "Action", "Comedy"].map(String::from).to_vec();
        let text = b"1|Caf\xe9 (1995)|01-Jan-1995||http://x|0|1|1\n";
        let m = parse_u_item(text, Path::new("u.item"), &names).unwrap();
        assert_eq!(m, [Movie { id: 1, title: "Café (1995)".into(), genres: vec!["Action".into(), "Comedy".into()] }]);
        let e = parse_u_item(b"1|T|||u|0|2|0\n", Path::new("u.item"), &names).unwrap_err();
        assert!(e.to_string().contains("genre flag `2` for Action"), "{e}");
        let e = parse_u_item(b"1|T|||u|0|1\n", Path::new("u.item"), &names).unwrap_err();
        assert!(e.to_string().contains("u.item:1:") && e.to_string().contains("7 fields instead of 8"), "{e}");
    }

    #[test]
    fn users_dat_keeps_raw_values_in_attribute_order() {
        let text = b"1::F::1::10::48067\r\n\n2::M::56::16::55455-1234\n3::::25::::\n";
        let u = parse_users_dat(text, Path::new("users.dat")).unwrap();
        let row = |id, v: [&str; 4]| UserRow { id, values: v.map(String::from) };
        assert_eq!(
            u,
            [row(1, ["F", "1", "10", "48067"]), row(2, ["M", "56", "16", "55455-1234"]), row(3, ["", "25", "", ""]),]
        );
    }

    #[test]
    fn u_user_reorders_age_and_gender() {
        let text = b"1|24|M|technician|85711\n2|53|F|other|T8H1N\n";
        let u = parse_u_user(text, Path::new("u.user")).unwrap();
        assert_eq!(u[0], UserRow { id: 1, values: ["M", "24", "technician", "85711"].map(String::from) });
        assert_eq!(u[1].values, ["F", "53", "other", "T8H1N"]);
    }

    #[test]
    fn malformed_user_lines_are_named_with_file_and_line() {
        let cases: [(&[u8], &str); 4] = [
            (b"2::M::25::16", "4 fields instead of 5"),
            (b"2::M::25::16::1::2", "6 fields instead of 5"),
            (b"x::M::25::16::55455", "cannot parse UserID from `x`"),
            (b"2::M::old::16::55455", "cannot parse Age from `old`"),
        ];
        for (bad, reason) in cases {
            let mut text = b"1::F::1::10::48067\n".to_vec();
            text.extend_from_slice(bad);
            let e = parse_users_dat(&text, Path::new("users.dat")).unwrap_err().to_string();
            let want = format!(
                "users.dat:2: expected `UserID::Gender::Age::Occupation::Zip-code`, found `{}` ({reason})",
                String::from_utf8_lossy(bad)
            );
            assert_eq!(e, want);
        }
        let e = parse_u_user(b"1|M|24|technician|85711\n", Path::new("u.user")).unwrap_err().to_string();
        assert_eq!(
            e,
            "u.user:1: expected `user id|age|gender|occupation|zip code`, found `1|M|24|technician|85711` \
             (cannot parse age from `M`)"
        );
    }

    #[test]
    fn genre_names_follow_their_indices() {
        let names = parse_genre_names(b"b|1\na|0\n\n", Path::new("u.genre")).unwrap();
        assert_eq!(names, ["a", "b"]);
        let e = parse_genre_names(b"a|0\nc|2\n", Path::new("u.genre")).unwrap_err();
        assert!(e.to_string().contains("no genre has index 1"), "{e}");
        let e = parse_genre_names(b"a|0\nb|0\n", Path::new("u.genre")).unwrap_err();
        assert!(e.to_string().contains("u.genre:2:"), "{e}");
    }
}
