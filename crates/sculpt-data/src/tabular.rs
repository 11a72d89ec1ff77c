//! Tabular data and the CIFAR-10 binary batches.
//!
//! `csv:PATH` and `parquet:PATH` are read through polars. The label column is `label`, or
//! the one named after a `#` (`csv:iris.csv#species`). Every other column must be numeric
//! and without nulls. Labels may be integers or strings; their distinct values, sorted,
//! become classes 0, 1, 2, …
//!
//! `cifar10:DIR` reads `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`: each
//! record is one label byte and 3,072 pixel bytes (3 × 32 × 32, channel-major).

use std::path::Path;

use polars::prelude::*;

use crate::error::{DataError, Result};
use crate::load::RawData;

fn bad(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Reads a CSV or parquet table (`kind` is "csv" or "parquet") with the label column `label`.
pub fn read_table(kind: &str, path: &Path, label: &str) -> Result<RawData> {
    if !path.is_file() {
        return Err(DataError::io(
            path,
            std::io::Error::new(std::io::ErrorKind::NotFound, "file not found"),
        ));
    }
    let frame = match kind {
        "csv" => CsvReadOptions::default()
            .with_has_header(true)
            .try_into_reader_with_file_path(Some(path.to_path_buf()))
            .and_then(|r| r.finish()),
        _ => std::fs::File::open(path)
            .map_err(PolarsError::from)
            .and_then(|f| ParquetReader::new(f).finish()),
    }
    .map_err(|e| bad(path, format!("not a readable {kind} table: {e}")))?;
    let names: Vec<String> = frame
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let label_column = frame.column(label).map_err(|_| {
        bad(
            path,
            format!(
                "no label column `{label}` (columns: {}); name it with {kind}:PATH#COLUMN",
                names.join(", ")
            ),
        )
    })?;
    if label_column.null_count() > 0 {
        return Err(bad(
            path,
            format!(
                "label column `{label}` has {} empty values",
                label_column.null_count()
            ),
        ));
    }
    let as_text = label_column
        .cast(&DataType::String)
        .map_err(|e| bad(path, format!("label column `{label}`: {e}")))?;
    let texts: Vec<String> = as_text
        .str()
        .map_err(|e| bad(path, e.to_string()))?
        .iter()
        .map(|v| v.unwrap_or_default().to_string())
        .collect();
    let numeric = label_column.dtype().is_integer();
    let mut classes: Vec<String> = texts.clone();
    if numeric {
        classes.sort_by_key(|t| t.parse::<i64>().unwrap_or(i64::MAX));
    } else {
        classes.sort();
    }
    classes.dedup();
    let labels: Vec<u32> = texts
        .iter()
        .map(|t| classes.iter().position(|c| c == t).unwrap_or(0) as u32)
        .collect();

    let features: Vec<&String> = names.iter().filter(|n| n.as_str() != label).collect();
    if features.is_empty() {
        return Err(bad(path, "no feature columns besides the label"));
    }
    let rows = frame.height();
    let mut columns = Vec::with_capacity(features.len());
    for name in &features {
        let column = frame.column(name).map_err(|e| bad(path, e.to_string()))?;
        if !column.dtype().is_primitive_numeric() {
            return Err(bad(
                path,
                format!("feature column `{name}` is {}, not numeric", column.dtype()),
            ));
        }
        if column.null_count() > 0 {
            return Err(bad(
                path,
                format!(
                    "feature column `{name}` has {} empty values",
                    column.null_count()
                ),
            ));
        }
        let values: Vec<f32> = column
            .cast(&DataType::Float32)
            .and_then(|c| c.f32().map(|a| a.into_no_null_iter().collect()))
            .map_err(|e| bad(path, format!("feature column `{name}`: {e}")))?;
        columns.push(values);
    }
    let mut data = Vec::with_capacity(rows * columns.len());
    for r in 0..rows {
        data.extend(columns.iter().map(|c| c[r]));
    }
    Ok(RawData {
        features: data,
        labels,
        sample_shape: vec![columns.len()],
        num_classes: classes.len().max(2),
        raw_scale: 1.0,
    })
}

const CIFAR_RECORD: usize = 1 + 3 * 32 * 32;

fn read_cifar_batch(path: &Path, into: &mut RawData) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.is_empty() || bytes.len() % CIFAR_RECORD != 0 {
        return Err(bad(
            path,
            format!(
                "{} bytes is not a whole number of {CIFAR_RECORD}-byte CIFAR-10 records (truncated?)",
                bytes.len()
            ),
        ));
    }
    for record in bytes.chunks(CIFAR_RECORD) {
        if record[0] > 9 {
            return Err(bad(
                path,
                format!("label {} is not a CIFAR-10 class (0-9)", record[0]),
            ));
        }
        into.labels.push(record[0] as u32);
        into.features
            .extend(record[1..].iter().map(|&p| p as f32 / 255.0));
    }
    Ok(())
}

/// Reads the CIFAR-10 binary batches in `dir`: (training, test).
pub fn read_cifar10(dir: &Path) -> Result<(RawData, RawData)> {
    let empty = || RawData {
        features: Vec::new(),
        labels: Vec::new(),
        sample_shape: vec![3, 32, 32],
        num_classes: 10,
        raw_scale: 1.0 / 255.0,
    };
    let (mut train, mut test) = (empty(), empty());
    for i in 1..=5 {
        read_cifar_batch(&dir.join(format!("data_batch_{i}.bin")), &mut train)?;
    }
    read_cifar_batch(&dir.join("test_batch.bin"), &mut test)?;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_with_string_labels_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(
            &path,
            "a,b,species\n1.0,2,setosa\n3.5,4,virginica\n0.5,1,setosa\n",
        )
        .unwrap();
        let data = read_table("csv", &path, "species").unwrap();
        assert_eq!(data.labels, vec![0, 1, 0]);
        assert_eq!(data.sample_shape, vec![2]);
        assert_eq!(data.features, vec![1.0, 2.0, 3.5, 4.0, 0.5, 1.0]);
        let err = read_table("csv", &path, "label").unwrap_err().to_string();
        assert!(
            err.contains("no label column `label`") && err.contains("species"),
            "{err}"
        );
        std::fs::write(&path, "a,label\nx,1\ny,0\n").unwrap();
        let err = read_table("csv", &path, "label").unwrap_err().to_string();
        assert!(err.contains("feature column `a`"), "{err}");
    }

    #[test]
    fn cifar_batches_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut record = vec![3u8];
        record.extend(std::iter::repeat_n(128u8, 3072));
        for i in 1..=5 {
            std::fs::write(
                dir.path().join(format!("data_batch_{i}.bin")),
                record.repeat(2),
            )
            .unwrap();
        }
        std::fs::write(dir.path().join("test_batch.bin"), &record).unwrap();
        let (train, test) = read_cifar10(dir.path()).unwrap();
        assert_eq!((train.labels.len(), test.labels.len()), (10, 1));
        assert_eq!(train.features.len(), 10 * 3072);
        std::fs::write(dir.path().join("test_batch.bin"), &record[..100]).unwrap();
        let err = read_cifar10(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("test_batch.bin") && err.contains("truncated"),
            "{err}"
        );
    }
}
