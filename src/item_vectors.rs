//! The learned item vectors as a run artifact: an Arrow IPC file with one row
//! per catalog item, so notebooks (pyarrow, polars) and `funnel recommend`
//! read the same table.
//!
//! Columns: `item_index` (u32, funnel's dense index), `item_id` (utf8, the
//! dataset's own id), `title` (utf8), `vector` (fixed-size list of f32).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::reader::FileReader;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use funnel_api::{ItemCatalog, Matrix};

/// File name inside a run folder.
pub const FILE: &str = "item_vectors.arrow";

/// Item vectors with the catalog they index.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemVectors {
    pub vectors: Matrix,
    pub raw_ids: Vec<String>,
    pub titles: Vec<String>,
}

fn schema(dim: usize) -> Schema {
    Schema::new(vec![
        Field::new("item_index", DataType::UInt32, false),
        Field::new("item_id", DataType::Utf8, false),
        Field::new("title", DataType::Utf8, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, false)), dim as i32),
            false,
        ),
    ])
}

/// Writes `vectors` (one row per item of `catalog`) to `path`.
pub fn write(path: &Path, vectors: &Matrix, catalog: &ItemCatalog) -> Result<()> {
    if vectors.rows != catalog.len() {
        bail!("{} item vectors for a catalog of {} items", vectors.rows, catalog.len());
    }
    let schema = Arc::new(schema(vectors.cols));
    let values = Arc::new(Float32Array::from(vectors.data.clone()));
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(UInt32Array::from_iter_values(0..vectors.rows as u32)),
        Arc::new(StringArray::from_iter_values(catalog.raw_ids.iter().map(String::as_str))),
        Arc::new(StringArray::from_iter_values(catalog.titles.iter().map(String::as_str))),
        Arc::new(FixedSizeListArray::try_new(item, vectors.cols as i32, values, None)?),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    crate::run_folder::write_with(path, |file| {
        let mut writer = FileWriter::try_new(file, &schema)?;
        writer.write(&batch)?;
        writer.finish()?;
        Ok(())
    })
}

/// Reads what [`write`] wrote.
pub fn read(path: &Path) -> Result<ItemVectors> {
    let inner = || -> Result<ItemVectors> {
        let file = File::open(path)?;
        let reader = FileReader::try_new(file, None)?;
        let dim = match reader.schema().field_with_name("vector")?.data_type() {
            DataType::FixedSizeList(_, d) => *d as usize,
            other => bail!("column `vector` is {other}, expected a fixed-size list of f32"),
        };
        let mut out = ItemVectors { vectors: Matrix::zeros(0, dim), raw_ids: Vec::new(), titles: Vec::new() };
        for batch in reader {
            let batch = batch?;
            let column = |name: &str| batch.column_by_name(name).with_context(|| format!("no column `{name}`"));
            let ids = column("item_id")?;
            // Runs before ids became text wrote them as u64.
            let ids: Vec<String> = match ids.as_any().downcast_ref::<arrow::array::UInt64Array>() {
                Some(numbers) => numbers.values().iter().map(u64::to_string).collect(),
                None => {
                    let text = ids.as_any().downcast_ref::<StringArray>().context("`item_id` is not utf8")?;
                    (0..text.len()).map(|i| text.value(i).to_string()).collect()
                }
            };
            let titles = column("title")?.as_any().downcast_ref::<StringArray>().context("`title` is not utf8")?;
            let list =
                column("vector")?.as_any().downcast_ref::<FixedSizeListArray>().context("`vector` is not a list")?;
            let values = list.values().as_any().downcast_ref::<Float32Array>().context("`vector` items are not f32")?;
            out.raw_ids.extend(ids);
            out.titles.extend((0..titles.len()).map(|i| titles.value(i).to_string()));
            let start = list.offset() * dim;
            out.vectors.data.extend_from_slice(&values.values()[start..start + list.len() * dim]);
            out.vectors.rows += list.len();
        }
        Ok(out)
    };
    inner().with_context(|| format!("reading item vectors from {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE);
        let catalog = ItemCatalog {
            raw_ids: vec!["10".into(), "B0X".into(), "30".into()],
            titles: vec!["A (1999)".into(), "".into(), "C".into()],
            genres: vec![vec![]; 3],
        };
        let vectors = Matrix::from_vec(3, 2, vec![1., 2., 3., 4., 5., -6.5]);
        write(&path, &vectors, &catalog).unwrap();
        let back = read(&path).unwrap();
        assert_eq!(back, ItemVectors { vectors, raw_ids: catalog.raw_ids.clone(), titles: catalog.titles.clone() });
        let e = write(&path, &Matrix::zeros(2, 2), &catalog).unwrap_err().to_string();
        assert!(e.contains("2 item vectors for a catalog of 3"), "{e}");
        std::fs::write(&path, b"not arrow").unwrap();
        let e = format!("{:#}", read(&path).unwrap_err());
        assert!(e.contains("reading item vectors from"), "{e}");
    }
}
