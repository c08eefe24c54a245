//! Readers for the CSV layout (ml-20m, ml-25m, ml-latest, ml-latest-small),
//! built on arrow's CSV decoder: tens of millions of rating rows decode in
//! typed batches, and quoted titles with commas parse correctly.
//!
//! Arrow's errors name a record, not a file line, so when a batch fails the
//! file is scanned again, slowly, to name the first bad line exactly.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use arrow::array::{Array, AsArray};
use arrow::csv::ReaderBuilder;
use arrow::datatypes::{DataType, Field, Float32Type, Int64Type, Schema, UInt64Type};
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use sha2::{Digest, Sha256};

use crate::classify::Classifier;
use crate::parse::{self, line_error, shown, Movie, Positives, RowFormat};

pub(crate) const RATINGS_HEADER: &str = "userId,movieId,rating,timestamp";
pub(crate) const MOVIES_HEADER: &str = "movieId,title,genres";

/// `ratings.csv` rows as the diagnosis scan reads them (never quoted in practice).
const RATINGS_ROW: RowFormat =
    RowFormat { sep: b",", fields: ["userId", "movieId", "rating", "timestamp"], expected: RATINGS_HEADER };

/// Rows per arrow batch: large enough to amortise per-batch work, small
/// enough that a batch's columns stay in cache-friendly megabytes.
const BATCH_ROWS: usize = 64 * 1024;

/// Passes bytes through while hashing them, so the checksum of a large
/// ratings file costs no second read.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads `ratings.csv`, keeping positives and feedback as `classes` says;
/// returns them with the hex sha256 of the whole file.
pub(crate) fn read_ratings(path: &Path, classes: &Classifier) -> Result<(Positives, String)> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hashing = HashingReader { inner: file, hasher: Sha256::new() };
    let mut out = Positives::default();
    {
        let mut reader = BufReader::with_capacity(1 << 20, &mut hashing);
        check_header(&mut reader, RATINGS_HEADER, path)?;
        let schema = Schema::new(vec![
            Field::new("userId", DataType::UInt64, true),
            Field::new("movieId", DataType::UInt64, true),
            Field::new("rating", DataType::Float32, true),
            Field::new("timestamp", DataType::Int64, true),
        ]);
        // The header is consumed above, so arrow sees data rows only.
        let batches = ReaderBuilder::new(Arc::new(schema))
            .with_header(false)
            .with_batch_size(BATCH_ROWS)
            .build_buffered(&mut reader)
            .with_context(|| format!("reading {}", path.display()))?;
        for batch in batches {
            let batch = batch.map_err(|e| diagnose(path, RATINGS_HEADER, check_rating_row, Some(e)))?;
            append_ratings(&batch, classes, &mut out)
                .map_err(|()| diagnose(path, RATINGS_HEADER, check_rating_row, None))?;
        }
    }
    // Arrow stops at the end of the data; whatever it left unread still counts.
    io::copy(&mut hashing, &mut io::sink()).with_context(|| format!("reading {}", path.display()))?;
    Ok((out, crate::download::hex(&hashing.hasher.finalize())))
}

/// Appends one batch's positives; `Err` when a value is missing or not finite,
/// which the caller turns into a located error.
fn append_ratings(batch: &RecordBatch, classes: &Classifier, out: &mut Positives) -> std::result::Result<(), ()> {
    if batch.columns().iter().any(|c| c.null_count() > 0) {
        return Err(());
    }
    let users = batch.column(0).as_primitive::<UInt64Type>().values();
    let items = batch.column(1).as_primitive::<UInt64Type>().values();
    let ratings = batch.column(2).as_primitive::<Float32Type>().values();
    let timestamps = batch.column(3).as_primitive::<Int64Type>().values();
    if ratings.iter().any(|r| !r.is_finite()) {
        return Err(());
    }
    // The default (a threshold alone) keeps the plain comparison: ml-25m's
    // 25 million rows pass through here.
    if let Some(min_rating) = classes.threshold_only() {
        for i in 0..batch.num_rows() {
            if ratings[i] >= min_rating {
                out.push(users[i], items[i], timestamps[i], 0);
            }
        }
    } else {
        for i in 0..batch.num_rows() {
            out.add(classes.classify(ratings[i]), users[i], items[i], timestamps[i]);
        }
    }
    out.raw_rows += batch.num_rows();
    Ok(())
}

/// Reads `movies.csv`: `movieId,title,genres`, UTF-8, titles quoted when they
/// hold commas, genres `|`-separated or `(no genres listed)`.
pub(crate) fn read_movies(path: &Path) -> Result<Vec<Movie>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = BufReader::new(file);
    check_header(&mut reader, MOVIES_HEADER, path)?;
    let schema = Schema::new(vec![
        Field::new("movieId", DataType::UInt64, true),
        Field::new("title", DataType::Utf8, true),
        Field::new("genres", DataType::Utf8, true),
    ]);
    let batches = ReaderBuilder::new(Arc::new(schema))
        .with_header(false)
        .with_batch_size(BATCH_ROWS)
        .build_buffered(reader)
        .with_context(|| format!("reading {}", path.display()))?;
    let mut movies = Vec::new();
    for batch in batches {
        let batch = batch.map_err(|e| diagnose(path, MOVIES_HEADER, check_movie_row, Some(e)))?;
        let ids = batch.column(0).as_primitive::<UInt64Type>();
        if ids.null_count() > 0 {
            return Err(diagnose(path, MOVIES_HEADER, check_movie_row, None));
        }
        // An empty title or genre field decodes as null: treat it as empty.
        let titles = batch.column(1).as_string::<i32>();
        let genres = batch.column(2).as_string::<i32>();
        for i in 0..batch.num_rows() {
            let genres = if genres.is_null(i) { "" } else { genres.value(i) };
            movies.push(Movie {
                id: ids.value(i),
                title: if titles.is_null(i) { String::new() } else { titles.value(i).to_string() },
                genres: genres
                    .split('|')
                    .filter(|g| !g.is_empty() && *g != "(no genres listed)")
                    .map(str::to_string)
                    .collect(),
            });
        }
    }
    Ok(movies)
}

/// Consumes the first line and checks it is `expected` (a UTF-8 BOM and a
/// `\r` tolerated).
fn check_header(reader: &mut impl BufRead, expected: &str, path: &Path) -> Result<()> {
    let mut header = Vec::new();
    reader.read_until(b'\n', &mut header).with_context(|| format!("reading {}", path.display()))?;
    if header.is_empty() {
        bail!("{} is empty: expected a header `{expected}` and data rows", path.display());
    }
    let line = header.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&header);
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line != expected.as_bytes() {
        bail!("{}:1: expected the header `{expected}`, found `{}`", path.display(), shown(line));
    }
    Ok(())
}

/// Why a `ratings.csv` data line is bad, if it is.
fn check_rating_row(line: &[u8]) -> Option<String> {
    parse::parse_row(line, &RATINGS_ROW).err()
}

/// Why a `movies.csv` data line is bad, if it is.
fn check_movie_row(line: &[u8]) -> Option<String> {
    let fields = match split_quoted(line) {
        Ok(f) => f,
        Err(reason) => return Some(reason),
    };
    if fields.len() != 3 {
        return Some(format!("{} fields instead of 3", fields.len()));
    }
    if parse::parse_u64(&fields[0]).is_none() {
        return Some(format!("cannot parse movieId from `{}`", shown(&fields[0])));
    }
    fields
        .iter()
        .zip(["movieId", "title", "genres"])
        .find(|(f, _)| std::str::from_utf8(f).is_err())
        .map(|(_, name)| format!("{name} is not valid UTF-8"))
}

/// Fields of one CSV line, quotes removed and `""` unescaped.
fn split_quoted(line: &[u8]) -> std::result::Result<Vec<Vec<u8>>, String> {
    let mut fields = vec![Vec::new()];
    let mut quoted = false;
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        let field = fields.last_mut().expect("fields starts non-empty");
        match (quoted, b) {
            (true, b'"') if line.get(i + 1) == Some(&b'"') => {
                field.push(b'"');
                i += 1;
            }
            (true, b'"') => quoted = false,
            (false, b'"') if field.is_empty() => quoted = true,
            (false, b',') => fields.push(Vec::new()),
            _ => field.push(b),
        }
        i += 1;
    }
    if quoted {
        return Err("a quoted field is not closed on its line".to_string());
    }
    Ok(fields)
}

/// The located error for a file arrow rejected: the first data line that
/// `check` finds bad, else arrow's own message with the file named.
fn diagnose(
    path: &Path,
    expected: &str,
    check: fn(&[u8]) -> Option<String>,
    arrow_error: Option<ArrowError>,
) -> anyhow::Error {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => return anyhow!(e).context(format!("reading {}", path.display())),
    };
    for (line_no, line) in parse::lines(&bytes).filter(|(n, _)| *n > 1) {
        if let Some(reason) = check(line) {
            return line_error(path, line_no, expected, line, &reason);
        }
    }
    match arrow_error {
        Some(e) => anyhow!("{}: {e}", path.display()),
        None => anyhow!("{}: a value is missing or not a finite number", path.display()),
    }
}
