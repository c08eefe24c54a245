//! `timestamp_format`: how a log writes time, to seconds since the Unix epoch.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// A parsed `timestamp_format`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimestampFormat {
    Unix,
    UnixMs,
    Rfc3339,
    /// A strftime pattern, read as UTC; a pattern without a time of day is midnight.
    Pattern(String),
}

impl TimestampFormat {
    pub fn parse(s: &str) -> Result<TimestampFormat, String> {
        Ok(match s {
            "unix" => TimestampFormat::Unix,
            "unix_ms" => TimestampFormat::UnixMs,
            "rfc3339" => TimestampFormat::Rfc3339,
            p if p.contains('%') => TimestampFormat::Pattern(p.to_string()),
            other => {
                return Err(format!(
                    "\"{other}\" is not a timestamp format; expected \"unix\", \"unix_ms\", \"rfc3339\" or a strftime \
                     pattern such as \"%Y-%m-%d %H:%M:%S\""
                ))
            }
        })
    }

    /// A numeric cell: seconds or milliseconds since the epoch.
    pub fn seconds_of_number(&self, v: f64) -> Option<i64> {
        if !v.is_finite() {
            return None;
        }
        match self {
            TimestampFormat::Unix => Some(v.floor() as i64),
            TimestampFormat::UnixMs => Some((v / 1000.0).floor() as i64),
            // A number where text was declared: a pattern of digits, as "%Y%m%d".
            TimestampFormat::Pattern(_) if v.fract() == 0.0 => self.seconds_of_text(&format!("{v:.0}")),
            _ => None,
        }
    }

    /// A text cell.
    pub fn seconds_of_text(&self, s: &str) -> Option<i64> {
        match self {
            TimestampFormat::Unix | TimestampFormat::UnixMs => {
                s.parse::<f64>().ok().and_then(|v| self.seconds_of_number(v))
            }
            TimestampFormat::Rfc3339 => DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp()),
            TimestampFormat::Pattern(p) => NaiveDateTime::parse_from_str(s, p)
                .map(|t| t.and_utc().timestamp())
                .or_else(|_| {
                    NaiveDate::parse_from_str(s, p)
                        .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp())
                })
                .ok(),
        }
    }
}

impl fmt::Display for TimestampFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimestampFormat::Unix => "unix",
            TimestampFormat::UnixMs => "unix_ms",
            TimestampFormat::Rfc3339 => "rfc3339",
            TimestampFormat::Pattern(p) => p,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_format_reads_the_same_instant() {
        let t = 1_000_000_000; // 2001-09-09T01:46:40Z
        let f = |s: &str| TimestampFormat::parse(s).unwrap();
        assert_eq!(f("unix").seconds_of_text("1000000000"), Some(t));
        assert_eq!(f("unix").seconds_of_number(1_000_000_000.7), Some(t));
        assert_eq!(f("unix_ms").seconds_of_number(1_000_000_000_123.0), Some(t));
        assert_eq!(f("rfc3339").seconds_of_text("2001-09-09T01:46:40Z"), Some(t));
        assert_eq!(f("rfc3339").seconds_of_text("2001-09-09T03:46:40+02:00"), Some(t));
        assert_eq!(f("%Y-%m-%d %H:%M:%S").seconds_of_text("2001-09-09 01:46:40"), Some(t));
        assert_eq!(f("%Y-%m-%d").seconds_of_text("2001-09-09"), Some(t - 6400));
        assert_eq!(f("%Y%m%d").seconds_of_number(20_010_909.0), Some(t - 6400));
        assert_eq!(f("%Y-%m-%d").seconds_of_text("09/09/2001"), None);
        assert_eq!(f("unix").seconds_of_text("yesterday"), None);
        assert!(TimestampFormat::parse("iso").unwrap_err().contains("\"iso\""));
    }
}
