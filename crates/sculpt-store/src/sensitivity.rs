//! The sensitivity table: how much validation accuracy a model loses when one layer alone
//! is pruned, sparsified or quantized, one row per (layer, knob, value). It is written as
//! `sensitivity.parquet` by `sculpt sensitivity`, drawn by sculpt-report and read back by a
//! campaign that narrows its search space with it, so the row type and both directions of
//! the parquet codec live here, beside the other frames.
//!
//! Columns, in order: `layer` (text), `knob` (text: `prune`, `sparsity` or `bits`), `value`
//! (f64: the ratio or the bit width), `accuracy` and `accuracy_drop` (f64 fractions; the
//! drop is the unmodified model's accuracy minus this one, so a positive drop is a loss),
//! `size_bytes` and `params` (u64, of the whole model with that one layer changed).

use std::fs::File;
use std::path::Path;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{io, Result, StoreError};

/// The file name `sculpt sensitivity` writes the table to.
pub const SENSITIVITY_FILE: &str = "sensitivity.parquet";

/// One measurement: `layer` alone set to `value` of `knob`, everything else untouched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityRow {
    pub layer: String,
    /// `prune` (structured ratio), `sparsity` (unstructured ratio) or `bits`.
    pub knob: String,
    pub value: f64,
    /// Validation accuracy, a fraction in [0, 1].
    pub accuracy: f64,
    /// The unmodified model's validation accuracy minus `accuracy`.
    pub accuracy_drop: f64,
    pub size_bytes: u64,
    pub params: u64,
}

const COLUMNS: &[&str] = &[
    "layer",
    "knob",
    "value",
    "accuracy",
    "accuracy_drop",
    "size_bytes",
    "params",
];

/// The rows as a polars frame, in the documented column order.
pub fn sensitivity_frame(rows: &[SensitivityRow]) -> Result<DataFrame> {
    let text = |f: fn(&SensitivityRow) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    let float = |f: fn(&SensitivityRow) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let count = |f: fn(&SensitivityRow) -> u64| rows.iter().map(f).collect::<Vec<u64>>();
    Ok(DataFrame::new(
        rows.len(),
        vec![
            Column::new("layer".into(), text(|r| &r.layer)),
            Column::new("knob".into(), text(|r| &r.knob)),
            Column::new("value".into(), float(|r| r.value)),
            Column::new("accuracy".into(), float(|r| r.accuracy)),
            Column::new("accuracy_drop".into(), float(|r| r.accuracy_drop)),
            Column::new("size_bytes".into(), count(|r| r.size_bytes)),
            Column::new("params".into(), count(|r| r.params)),
        ],
    )?)
}

/// Writes the table to `path` through a temporary file and a rename, so a reader never
/// sees half a table.
pub fn write_sensitivity(path: &Path, rows: &[SensitivityRow]) -> Result<()> {
    let mut frame = sensitivity_frame(rows)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let file = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    ParquetWriter::new(file)
        .with_compression(ParquetCompression::Snappy)
        .finish(&mut frame)?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    crate::store::sync_dir(path.parent().unwrap_or(std::path::Path::new(".")))
}

/// Reads a table written by [`write_sensitivity`]. A missing file, a file that is not
/// parquet, a missing column, a column of the wrong type or an empty value is reported
/// with the path and the column.
pub fn read_sensitivity(path: &Path) -> Result<Vec<SensitivityRow>> {
    let bad = |message: String| StoreError::Table {
        path: path.to_path_buf(),
        message,
    };
    let file = File::open(path).map_err(|e| io(path, e))?;
    let frame = ParquetReader::new(file)
        .finish()
        .map_err(|e| bad(format!("not a readable parquet table: {e}")))?;
    let column = |name: &str| -> Result<&Column> {
        let column = frame.column(name).map_err(|_| {
            bad(format!(
                "no column `{name}`; a sensitivity table has the columns {}",
                COLUMNS.join(", ")
            ))
        })?;
        if column.null_count() > 0 {
            return Err(bad(format!(
                "column `{name}` has {} empty values",
                column.null_count()
            )));
        }
        Ok(column)
    };
    let texts = |name: &str| -> Result<Vec<String>> {
        let c = column(name)?;
        let values = c
            .str()
            .map_err(|_| bad(format!("column `{name}` holds {}, not text", c.dtype())))?;
        Ok(values
            .iter()
            .map(|v| v.unwrap_or_default().to_string())
            .collect())
    };
    // Numbers are cast, so a table rewritten by another tool (say with int64 counts or
    // float32 values) still reads.
    let numbers = |name: &str, dtype: DataType| -> Result<Column> {
        let c = column(name)?;
        if !c.dtype().is_primitive_numeric() {
            return Err(bad(format!(
                "column `{name}` holds {}, not numbers",
                c.dtype()
            )));
        }
        c.cast(&dtype)
            .map_err(|e| bad(format!("column `{name}`: {e}")))
    };
    let floats = |name: &str| -> Result<Vec<f64>> {
        let c = numbers(name, DataType::Float64)?;
        let values = c.f64().map_err(|e| bad(format!("column `{name}`: {e}")))?;
        Ok(values.into_no_null_iter().collect())
    };
    let counts = |name: &str| -> Result<Vec<u64>> {
        let c = numbers(name, DataType::UInt64)?;
        let values = c.u64().map_err(|e| bad(format!("column `{name}`: {e}")))?;
        if values.null_count() > 0 {
            return Err(bad(format!("column `{name}` has negative values")));
        }
        Ok(values.into_no_null_iter().collect())
    };
    let layer = texts("layer")?;
    let knob = texts("knob")?;
    let value = floats("value")?;
    let accuracy = floats("accuracy")?;
    let accuracy_drop = floats("accuracy_drop")?;
    let size_bytes = counts("size_bytes")?;
    let params = counts("params")?;
    Ok((0..frame.height())
        .map(|i| SensitivityRow {
            layer: layer[i].clone(),
            knob: knob[i].clone(),
            value: value[i],
            accuracy: accuracy[i],
            accuracy_drop: accuracy_drop[i],
            size_bytes: size_bytes[i],
            params: params[i],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(layer: &str, knob: &str, value: f64, drop: f64) -> SensitivityRow {
        SensitivityRow {
            layer: layer.into(),
            knob: knob.into(),
            value,
            accuracy: 0.95 - drop,
            accuracy_drop: drop,
            size_bytes: 1234,
            params: 567,
        }
    }

    #[test]
    fn table_round_trips_through_parquet() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(SENSITIVITY_FILE);
        let rows = vec![
            row("fc1", "prune", 0.1, 0.0),
            row("fc1", "bits", 2.0, 0.4),
            row("conv2", "sparsity", 0.95, -0.0025),
        ];
        write_sensitivity(&path, &rows).unwrap();
        assert!(!tmp.path().join("sensitivity.parquet.tmp").exists());
        assert_eq!(read_sensitivity(&path).unwrap(), rows);
        let names: Vec<String> = sensitivity_frame(&rows)
            .unwrap()
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(names, COLUMNS);
    }

    #[test]
    fn a_table_of_something_else_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("other.parquet");
        let mut frame = DataFrame::new(
            1,
            vec![
                Column::new("layer".into(), vec!["fc1"]),
                Column::new("knob".into(), vec![1i64]),
            ],
        )
        .unwrap();
        ParquetWriter::new(File::create(&path).unwrap())
            .finish(&mut frame)
            .unwrap();
        let err = read_sensitivity(&path).unwrap_err().to_string();
        assert!(
            err.contains("other.parquet") && err.contains("column `knob`"),
            "{err}"
        );

        std::fs::write(&path, "layer,knob\n").unwrap();
        let err = read_sensitivity(&path).unwrap_err().to_string();
        assert!(err.contains("not a readable parquet table"), "{err}");

        let err = read_sensitivity(&tmp.path().join("none.parquet"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("none.parquet"), "{err}");
    }
}
