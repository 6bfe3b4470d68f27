//! Reading values out of result batches whatever physical type DataFusion chose for them
//! (`Utf8` or `Utf8View`, `Int32` or `Int64`), so the analyses do not depend on planner details.

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, ListArray, RecordBatch, StringArray,
    StringViewArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};

use crate::QueryError;

/// A column of a batch converted to a known type.
fn column_as(batch: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef, QueryError> {
    let column =
        batch.column_by_name(name).ok_or_else(|| QueryError::Data(format!("no column {name} in the result")))?;
    if column.data_type() == to {
        return Ok(Arc::clone(column));
    }
    cast(column, to).map_err(|e| QueryError::Data(format!("column {name}: {e}")))
}

/// The column `name` as the array type `A` (after [`column_as`] made it that type): each reader
/// below downcasts once per batch, not once per value.
fn typed<A: Array + Clone + 'static>(column: &ArrayRef, name: &str) -> Result<A, QueryError> {
    column
        .as_any()
        .downcast_ref::<A>()
        .cloned()
        .ok_or_else(|| QueryError::Data(format!("column {name} is {}, not what was asked for", column.data_type())))
}

/// The text column `name`: `Utf8View` read as it is (no copy), any other type as `Utf8`.
pub(crate) enum Strings {
    Plain(StringArray),
    Views(StringViewArray),
}

impl Strings {
    pub(crate) fn of(batch: &RecordBatch, name: &str) -> Result<Self, QueryError> {
        let column =
            batch.column_by_name(name).ok_or_else(|| QueryError::Data(format!("no column {name} in the result")))?;
        if column.data_type() == &DataType::Utf8View {
            return Ok(Strings::Views(typed(column, name)?));
        }
        Ok(Strings::Plain(typed(&column_as(batch, name, &DataType::Utf8)?, name)?))
    }

    pub(crate) fn get(&self, row: usize) -> Option<&str> {
        match self {
            Strings::Plain(a) => (!a.is_null(row)).then(|| a.value(row)),
            Strings::Views(a) => (!a.is_null(row)).then(|| a.value(row)),
        }
    }

    /// The value, or `""` for null.
    pub(crate) fn text(&self, row: usize) -> String {
        self.get(row).unwrap_or("").to_owned()
    }

    pub(crate) fn owned(&self, row: usize) -> Option<String> {
        self.get(row).map(str::to_owned)
    }
}

/// The integer column `name`.
pub(crate) struct Ints(Int64Array);

impl Ints {
    pub(crate) fn of(batch: &RecordBatch, name: &str) -> Result<Self, QueryError> {
        Ok(Ints(typed(&column_as(batch, name, &DataType::Int64)?, name)?))
    }

    pub(crate) fn get(&self, row: usize) -> Option<i64> {
        (!self.0.is_null(row)).then(|| self.0.value(row))
    }
}

/// The floating-point column `name`.
pub(crate) struct Floats(Float64Array);

impl Floats {
    pub(crate) fn of(batch: &RecordBatch, name: &str) -> Result<Self, QueryError> {
        Ok(Floats(typed(&column_as(batch, name, &DataType::Float64)?, name)?))
    }

    pub(crate) fn get(&self, row: usize) -> Option<f64> {
        (!self.0.is_null(row)).then(|| self.0.value(row))
    }
}

/// The boolean column `name`.
pub(crate) struct Bools(BooleanArray);

impl Bools {
    pub(crate) fn of(batch: &RecordBatch, name: &str) -> Result<Self, QueryError> {
        Ok(Bools(typed(&column_as(batch, name, &DataType::Boolean)?, name)?))
    }

    pub(crate) fn get(&self, row: usize) -> Option<bool> {
        (!self.0.is_null(row)).then(|| self.0.value(row))
    }
}

/// The list-of-text column `name`.
pub(crate) struct StringLists(ListArray);

impl StringLists {
    pub(crate) fn of(batch: &RecordBatch, name: &str) -> Result<Self, QueryError> {
        let item = Arc::new(datafusion::arrow::datatypes::Field::new_list_field(DataType::Utf8, true));
        Ok(StringLists(typed(&column_as(batch, name, &DataType::List(item))?, name)?))
    }

    /// The texts of the list at `row` (none for a null list; null items left out).
    pub(crate) fn each(&self, row: usize, mut visit: impl FnMut(&str)) {
        if self.0.is_null(row) {
            return;
        }
        let items = self.0.value(row);
        let Some(texts) = items.as_string_opt::<i32>() else { return };
        for i in 0..texts.len() {
            if !texts.is_null(i) {
                visit(texts.value(i));
            }
        }
    }
}

/// The timestamp column `name`, in microseconds since the epoch.
pub(crate) struct Micros(TimestampMicrosecondArray);

impl Micros {
    pub(crate) fn of(batch: &RecordBatch, name: &str) -> Result<Self, QueryError> {
        let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        Ok(Micros(typed(&column_as(batch, name, &utc)?, name)?))
    }

    pub(crate) fn get(&self, row: usize) -> Option<i64> {
        (!self.0.is_null(row)).then(|| self.0.value(row))
    }
}

/// The unsigned integer in column `col`, row `row` (a count).
pub(crate) fn u64_at(batch: &RecordBatch, col: usize, row: usize) -> Option<u64> {
    let column = batch.columns().get(col)?;
    let as_i64 = cast(column, &DataType::Int64).ok()?;
    let a = as_i64.as_primitive::<Int64Type>();
    (row < a.len() && !a.is_null(row)).then(|| a.value(row).max(0) as u64)
}

/// RFC 3339 UTC with microseconds, the precision of the audit log: `2024-05-01T10:00:00.123456Z`.
pub fn format_time(micros: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(micros) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        None => format!("{micros}us"),
    }
}
