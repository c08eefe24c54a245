//! One value of one row, whatever the file's format wrote, and the
//! conversions the log needs, each naming file, row, column and value on error.

use std::fmt;

use anyhow::{bail, Result};

use crate::time::TimestampFormat;

/// A value as read: the reader keeps what the format knows (a JSON number
/// stays a number, a Parquet timestamp a time), the log decides what it means.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Text(&'a str),
    Owned(String),
    Int(i64),
    Float(f64),
    /// Seconds since the Unix epoch, from a native timestamp or date column.
    Time(i64),
    List(Vec<String>),
}

impl fmt::Display for Cell<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cell::Null => f.write_str("null"),
            Cell::Text(s) => write!(f, "{s:?}"),
            Cell::Owned(s) => write!(f, "{s:?}"),
            Cell::Int(v) | Cell::Time(v) => write!(f, "{v}"),
            Cell::Float(v) => write!(f, "{v}"),
            Cell::List(v) => write!(f, "{v:?}"),
        }
    }
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, Copy)]
pub struct At<'a> {
    pub file: &'a std::path::Path,
    /// 1-based data row within the file (a CSV header line not counted).
    pub row: usize,
    pub column: &'a str,
}

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, row {}, column `{}`", self.file.display(), self.row, self.column)
    }
}

impl Cell<'_> {
    fn text(&self) -> Option<&str> {
        match self {
            Cell::Text(s) => Some(s),
            Cell::Owned(s) => Some(s),
            _ => None,
        }
    }

    /// An id: text as written, whole numbers in decimal.
    pub fn id(&self, at: At<'_>) -> Result<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match self {
            Cell::Text(s) if !s.is_empty() => Ok(Cow::Borrowed(s)),
            Cell::Owned(s) if !s.is_empty() => Ok(Cow::Borrowed(s)),
            Cell::Int(v) => Ok(Cow::Owned(v.to_string())),
            Cell::Float(v) if v.fract() == 0.0 && v.is_finite() => Ok(Cow::Owned(format!("{v:.0}"))),
            Cell::Null | Cell::Text(_) | Cell::Owned(_) => bail!("{at}: the id is missing (null or empty)"),
            other => bail!("{at}: {other} is not an id"),
        }
    }

    /// A number (a rating).
    pub fn number(&self, at: At<'_>) -> Result<f64> {
        match self {
            Cell::Int(v) => Ok(*v as f64),
            Cell::Float(v) => Ok(*v),
            Cell::Null => bail!("{at}: the value is missing (null)"),
            other => match other.text().and_then(|s| s.trim().parse::<f64>().ok()) {
                Some(v) => Ok(v),
                None => bail!("{at}: {other} is not a number"),
            },
        }
    }

    /// Seconds since the Unix epoch.
    pub fn timestamp(&self, format: &TimestampFormat, at: At<'_>) -> Result<i64> {
        let parsed = match self {
            Cell::Time(s) => Some(*s),
            Cell::Null => bail!("{at}: the timestamp is missing (null)"),
            Cell::Int(v) => format.seconds_of_number(*v as f64),
            Cell::Float(v) => format.seconds_of_number(*v),
            other => other.text().and_then(|s| format.seconds_of_text(s.trim())),
        };
        match parsed {
            Some(s) => Ok(s),
            None => bail!("{at}: {self} does not match timestamp_format \"{format}\""),
        }
    }

    /// Categories: a native list, or one string split by `separator`.
    pub fn list(&self, separator: &str) -> Vec<String> {
        match self {
            Cell::List(v) => v.iter().filter(|s| !s.is_empty()).cloned().collect(),
            Cell::Null => Vec::new(),
            Cell::Int(v) => vec![v.to_string()],
            other => other
                .text()
                .map(|s| s.split(separator).map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
                .unwrap_or_default(),
        }
    }

    /// A categorical value ("" when missing).
    pub fn category(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Text(s) => (*s).to_string(),
            Cell::Owned(s) => s.clone(),
            Cell::Int(v) | Cell::Time(v) => v.to_string(),
            Cell::Float(v) if v.fract() == 0.0 => format!("{v:.0}"),
            Cell::Float(v) => v.to_string(),
            Cell::List(v) => v.join("|"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn at() -> At<'static> {
        At { file: Path::new("log.csv"), row: 3, column: "rating" }
    }

    #[test]
    fn ids_numbers_and_lists_convert_and_name_the_bad_value() {
        assert_eq!(Cell::Int(42).id(at()).unwrap(), "42");
        assert_eq!(Cell::Float(7.0).id(at()).unwrap(), "7");
        assert_eq!(Cell::Text("B00X").id(at()).unwrap(), "B00X");
        let e = Cell::Null.id(at()).unwrap_err().to_string();
        assert!(e.contains("log.csv, row 3, column `rating`") && e.contains("missing"), "{e}");
        assert_eq!(Cell::Text(" 4.5 ").number(at()).unwrap(), 4.5);
        let e = Cell::Text("five").number(at()).unwrap_err().to_string();
        assert!(e.contains("row 3") && e.contains("\"five\" is not a number"), "{e}");
        assert_eq!(Cell::Text("a| b||c").list("|"), ["a", "b", "c"]);
        assert_eq!(Cell::List(vec!["x".into(), String::new()]).list("|"), ["x"]);
    }
}
