//! Reading a table in any of the supported formats as rows of [`Cell`]s of
//! the wanted columns, one file (or folder of parts) at a time, without
//! holding more than one batch of it.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, TimeUnit, TimestampSecondType};
use serde::{Deserialize, Serialize};

use crate::cells::Cell;

/// A table's file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Auto,
    Csv,
    Tsv,
    Jsonl,
    Parquet,
    Arrow,
}

impl Format {
    /// The format of `file`: `self`, or from its extension when `Auto`.
    fn of(self, file: &Path) -> Result<Format> {
        if self != Format::Auto {
            return Ok(self);
        }
        let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        Ok(match ext.as_str() {
            "csv" => Format::Csv,
            "tsv" | "tab" => Format::Tsv,
            "jsonl" | "ndjson" | "json" => Format::Jsonl,
            "parquet" | "pq" => Format::Parquet,
            "arrow" | "ipc" | "feather" => Format::Arrow,
            _ => bail!(
                "{}: cannot tell the format from the extension \"{ext}\"; set `format` to \"csv\", \"tsv\", \"jsonl\", \
                 \"parquet\" or \"arrow\"",
                file.display()
            ),
        })
    }
}

/// The one-byte field separator of a CSV/TSV table.
pub fn delimiter(given: Option<&str>, format: Format) -> Result<u8, String> {
    match given {
        None => Ok(if format == Format::Tsv { b'\t' } else { b',' }),
        Some("\\t") => Ok(b'\t'),
        Some(s) if s.len() == 1 => Ok(s.as_bytes()[0]),
        Some(s) => Err(format!("must be one ASCII character, found {s:?}")),
    }
}

/// The files of `path`: itself, or a folder's visible files by name (parts
/// of one table, as Spark and pandas write them).
pub fn parts(path: &Path) -> Result<Vec<PathBuf>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        let p = entry?.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if p.is_file() && !name.starts_with('.') && !name.starts_with('_') {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("{} is an empty folder: no parts to read", path.display());
    }
    Ok(files)
}

/// How to read one table.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    pub format: Format,
    pub delimiter: Option<&'a str>,
    pub header: bool,
}

/// Calls `f(file, row, cells)` for every row of every part of `path`, with
/// one cell per `wanted` column (rows 1-based within their file). Returns
/// the number of rows read.
pub fn scan(
    path: &Path,
    options: Options<'_>,
    wanted: &[&str],
    mut f: impl FnMut(&Path, usize, &[Cell<'_>]) -> Result<()>,
) -> Result<usize> {
    let mut rows = 0;
    for file in parts(path)? {
        let format = options.format.of(&file)?;
        rows += match format {
            Format::Jsonl => scan_jsonl(&file, wanted, &mut f),
            Format::Csv | Format::Tsv => {
                let delimiter = delimiter(options.delimiter, format).map_err(anyhow::Error::msg)?;
                scan_batches(&file, wanted, csv_batches(&file, format, delimiter, options.header)?, &mut f)
            }
            Format::Parquet => scan_batches(&file, wanted, parquet_batches(&file, wanted)?, &mut f),
            Format::Arrow => scan_batches(&file, wanted, ipc_batches(&file, wanted)?, &mut f),
            Format::Auto => unreachable!("resolved above"),
        }?;
    }
    Ok(rows)
}

/// A declared column the file lacks: name the file and what it has.
fn missing_column(file: &Path, column: &str, found: &[String]) -> anyhow::Error {
    anyhow::anyhow!(
        "{}: no column `{column}`; its columns are: {}",
        file.display(),
        if found.is_empty() { "(none)".to_string() } else { found.join(", ") }
    )
}

type Batches = (Arc<Schema>, Box<dyn Iterator<Item = Result<RecordBatch>>>);

fn csv_batches(file: &Path, format: Format, delimiter: u8, header: bool) -> Result<Batches> {
    let open = || File::open(file).with_context(|| format!("opening {}", file.display()));
    let mut csv_format = arrow::csv::reader::Format::default().with_header(header).with_delimiter(delimiter);
    if format == Format::Tsv {
        // Tab-separated logs do not quote: a `"` inside a title is text.
        csv_format = csv_format.with_quote(0);
    }
    let (inferred, _) = csv_format
        .infer_schema(BufReader::new(open()?), Some(1))
        .with_context(|| format!("reading the first line of {}", file.display()))?;
    // Every column as text: ids stay exactly as written ("007" is not 7);
    // numbers are parsed per value, so a bad one is named with its row.
    let fields: Vec<Field> = inferred
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| Field::new(if header { f.name().clone() } else { i.to_string() }, DataType::Utf8, true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let reader = arrow::csv::ReaderBuilder::new(schema.clone())
        .with_format(csv_format)
        .with_batch_size(65_536)
        .build(BufReader::new(open()?))?;
    let name = file.display().to_string();
    Ok((schema, Box::new(reader.map(move |b| b.with_context(|| format!("reading {name}"))))))
}

fn projection(schema: &Schema, file: &Path, wanted: &[&str]) -> Result<Vec<usize>> {
    let found: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    wanted.iter().map(|w| schema.index_of(w).map_err(|_| missing_column(file, w, &found))).collect()
}

fn parquet_batches(file: &Path, wanted: &[&str]) -> Result<Batches> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let name = file.display().to_string();
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(File::open(file).with_context(|| format!("opening {name}"))?)
            .with_context(|| format!("{name} is not a Parquet file"))?;
    let mut indices = projection(builder.schema(), file, wanted)?;
    indices.sort_unstable();
    indices.dedup();
    let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
    let reader = builder.with_projection(mask).with_batch_size(65_536).build()?;
    let schema = arrow::record_batch::RecordBatchReader::schema(&reader);
    Ok((schema, Box::new(reader.map(move |b| b.with_context(|| format!("reading {name}"))))))
}

fn ipc_batches(file: &Path, wanted: &[&str]) -> Result<Batches> {
    let name = file.display().to_string();
    let open = || File::open(file).with_context(|| format!("opening {name}"));
    if let Ok(reader) = arrow::ipc::reader::FileReader::try_new(open()?, None) {
        let schema = reader.schema();
        projection(&schema, file, wanted)?;
        return Ok((schema, Box::new(reader.map(move |b| b.with_context(|| format!("reading {name}"))))));
    }
    // The IPC stream format (what `pyarrow` writes to a stream) has no footer.
    let reader = arrow::ipc::reader::StreamReader::try_new(BufReader::new(open()?), None)
        .with_context(|| format!("{name} is not an Arrow IPC file or stream"))?;
    let schema = reader.schema();
    projection(&schema, file, wanted)?;
    Ok((schema, Box::new(reader.map(move |b| b.with_context(|| format!("reading {name}"))))))
}

/// A column of one batch in the form cells are read from.
enum View {
    Text(ArrayRef),
    Int(ArrayRef),
    Float(ArrayRef),
    Time(ArrayRef),
    List(ArrayRef),
}

impl View {
    fn of(column: &ArrayRef, file: &Path, name: &str) -> Result<View> {
        use arrow::compute::cast;
        let to = |t: &DataType| {
            cast(column, t).with_context(|| {
                format!("{}: column `{name}` of type {} cannot be read", file.display(), column.data_type())
            })
        };
        Ok(match column.data_type() {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => View::Int(to(&DataType::Int64)?),
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => View::Int(to(&DataType::Int64)?),
            DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(..) => {
                View::Float(to(&DataType::Float64)?)
            }
            DataType::Timestamp(..) | DataType::Date32 | DataType::Date64 => {
                View::Time(to(&DataType::Timestamp(TimeUnit::Second, None))?)
            }
            DataType::List(_) | DataType::LargeList(_) => {
                View::List(to(&DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))))?)
            }
            _ => View::Text(to(&DataType::Utf8)?),
        })
    }

    fn cell(&self, row: usize) -> Cell<'_> {
        let array: &ArrayRef = match self {
            View::Text(a) | View::Int(a) | View::Float(a) | View::Time(a) | View::List(a) => a,
        };
        if array.is_null(row) {
            return Cell::Null;
        }
        match self {
            View::Text(a) => Cell::Text(a.as_string::<i32>().value(row)),
            View::Int(a) => Cell::Int(a.as_primitive::<Int64Type>().value(row)),
            View::Float(a) => Cell::Float(a.as_primitive::<arrow::datatypes::Float64Type>().value(row)),
            View::Time(a) => Cell::Time(a.as_primitive::<TimestampSecondType>().value(row)),
            View::List(a) => {
                let values = a.as_list::<i32>().value(row);
                let strings = values.as_string::<i32>();
                Cell::List(
                    (0..strings.len()).filter(|&i| !strings.is_null(i)).map(|i| strings.value(i).to_string()).collect(),
                )
            }
        }
    }
}

fn scan_batches(
    file: &Path,
    wanted: &[&str],
    (schema, batches): Batches,
    f: &mut impl FnMut(&Path, usize, &[Cell<'_>]) -> Result<()>,
) -> Result<usize> {
    let indices = projection(&schema, file, wanted)?;
    let mut row = 0;
    for batch in batches {
        let batch = batch?;
        // A projected reader may order columns its own way: find them by name.
        let views = wanted
            .iter()
            .zip(&indices)
            .map(|(name, _)| {
                let column = batch.column_by_name(name).ok_or_else(|| missing_column(file, name, &[]))?;
                View::of(column, file, name)
            })
            .collect::<Result<Vec<_>>>()?;
        let mut cells = Vec::with_capacity(views.len());
        for i in 0..batch.num_rows() {
            row += 1;
            cells.clear();
            cells.extend(views.iter().map(|v| v.cell(i)));
            f(file, row, &cells)?;
        }
    }
    Ok(row)
}

fn scan_jsonl(
    file: &Path,
    wanted: &[&str],
    f: &mut impl FnMut(&Path, usize, &[Cell<'_>]) -> Result<()>,
) -> Result<usize> {
    let reader = BufReader::new(File::open(file).with_context(|| format!("opening {}", file.display()))?);
    let mut row = 0;
    for (n, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", file.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        row += 1;
        let value: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}, line {}: not a JSON object", file.display(), n + 1))?;
        let Some(object) = value.as_object() else {
            bail!("{}, line {}: expected a JSON object per line, found {}", file.display(), n + 1, json_kind(&value));
        };
        if row == 1 {
            let found: Vec<String> = object.keys().cloned().collect();
            if let Some(w) = wanted.iter().find(|w| !object.contains_key(**w)) {
                return Err(missing_column(file, w, &found).context("(the columns of its first line)"));
            }
        }
        let cells: Vec<Cell<'_>> = wanted.iter().map(|w| json_cell(object.get(*w))).collect();
        f(file, row, &cells)?;
    }
    Ok(row)
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn json_cell(v: Option<&serde_json::Value>) -> Cell<'_> {
    use serde_json::Value;
    match v {
        None | Some(Value::Null) => Cell::Null,
        Some(Value::String(s)) => Cell::Text(s),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(i) => Cell::Int(i),
            None => {
                n.as_u64().map_or_else(|| Cell::Float(n.as_f64().unwrap_or(f64::NAN)), |u| Cell::Owned(u.to_string()))
            }
        },
        Some(Value::Bool(b)) => Cell::Owned(b.to_string()),
        Some(Value::Array(items)) => {
            // Nested lists (Amazon's [["Books", "Fiction"]]) are flattened.
            let mut out = Vec::new();
            flatten(items, &mut out);
            Cell::List(out)
        }
        Some(other @ Value::Object(_)) => Cell::Owned(other.to_string()),
    }
}

fn flatten(items: &[serde_json::Value], out: &mut Vec<String>) {
    for item in items {
        match item {
            serde_json::Value::Array(inner) => flatten(inner, out),
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Null => {}
            other => out.push(other.to_string()),
        }
    }
}
