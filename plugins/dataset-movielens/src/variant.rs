//! The MovieLens releases this plugin reads and the file layout of each.

use std::fmt;

use anyhow::{bail, Result};

/// One official MovieLens release, named as GroupLens names its archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Ml100k,
    Ml1m,
    Ml20m,
    Ml25m,
    MlLatest,
    MlLatestSmall,
}

/// How a release stores its ratings, movies and users: three generations of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// ml-100k: tab-separated `u.data`, `|`-separated ISO-8859-1 `u.item`
    /// and `u.user`.
    Tab,
    /// ml-1m: `::`-separated `ratings.dat`, ISO-8859-1 `movies.dat` and `users.dat`.
    DoubleColon,
    /// ml-20m and later: `ratings.csv` and UTF-8 `movies.csv` with headers;
    /// no user demographics.
    Csv,
}

impl Variant {
    pub const ALL: [Variant; 6] =
        [Variant::Ml100k, Variant::Ml1m, Variant::Ml20m, Variant::Ml25m, Variant::MlLatest, Variant::MlLatestSmall];

    /// The variant called `name`; the error lists every valid name.
    pub fn parse(name: &str) -> Result<Variant> {
        match Variant::ALL.into_iter().find(|v| v.name() == name) {
            Some(v) => Ok(v),
            None => {
                let valid: Vec<String> = Variant::ALL.iter().map(|v| format!("\"{}\"", v.name())).collect();
                bail!("unknown MovieLens variant \"{name}\"; valid variants: {}", valid.join(", "))
            }
        }
    }

    /// The release's name, which is also its archive's and folder's name.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Ml100k => "ml-100k",
            Variant::Ml1m => "ml-1m",
            Variant::Ml20m => "ml-20m",
            Variant::Ml25m => "ml-25m",
            Variant::MlLatest => "ml-latest",
            Variant::MlLatestSmall => "ml-latest-small",
        }
    }

    pub fn layout(self) -> Layout {
        match self {
            Variant::Ml100k => Layout::Tab,
            Variant::Ml1m => Layout::DoubleColon,
            Variant::Ml20m | Variant::Ml25m | Variant::MlLatest | Variant::MlLatestSmall => Layout::Csv,
        }
    }

    /// File name of the ratings inside the release's folder.
    pub fn ratings_file(self) -> &'static str {
        self.layout().ratings_file()
    }

    /// File name of the movie titles and genres inside the release's folder.
    pub fn movies_file(self) -> &'static str {
        self.layout().movies_file()
    }

    /// File name of the user demographics inside the release's folder, for
    /// the releases that have them.
    pub fn users_file(self) -> Option<&'static str> {
        self.layout().users_file()
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Layout {
    pub fn ratings_file(self) -> &'static str {
        match self {
            Layout::Tab => "u.data",
            Layout::DoubleColon => "ratings.dat",
            Layout::Csv => "ratings.csv",
        }
    }

    pub fn movies_file(self) -> &'static str {
        match self {
            Layout::Tab => "u.item",
            Layout::DoubleColon => "movies.dat",
            Layout::Csv => "movies.csv",
        }
    }

    /// The demographics file (`gender`, `age`, `occupation`, `zip` of each
    /// user); the CSV releases have none.
    pub fn users_file(self) -> Option<&'static str> {
        match self {
            Layout::Tab => Some("u.user"),
            Layout::DoubleColon => Some("users.dat"),
            Layout::Csv => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_parses_back() {
        for v in Variant::ALL {
            assert_eq!(Variant::parse(v.name()).unwrap(), v);
        }
    }

    #[test]
    fn unknown_variant_lists_the_valid_ones() {
        let e = Variant::parse("ml-10m").unwrap_err().to_string();
        assert!(e.contains("\"ml-10m\""), "{e}");
        for v in Variant::ALL {
            assert!(e.contains(&format!("\"{}\"", v.name())), "{e}");
        }
    }
}
