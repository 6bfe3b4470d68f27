//! The Parquet writer: one sorted, zstd-compressed file per flush of a partition, made visible
//! atomically.
//!
//! A file is written under a hidden temporary name that does not end in `.parquet`, fsynced, renamed
//! to `<writer>-<seq>.parquet`, and the directory is fsynced; so a reader (DataFusion, DuckDB, Spark)
//! sees either no file or a whole one.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use datafusion::arrow::error::ArrowError;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::SortingColumn;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use kubestep_schemas::schema::columns;

use crate::layout::Layout;

/// Largest row group written.
pub const MAX_ROW_GROUP_ROWS: usize = 128 * 1024;

/// Why a file could not be written. Nothing is visible to readers when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Encoding the batch failed.
    #[error("encoding {path}: {source}")]
    Parquet {
        /// The temporary file being written.
        path: PathBuf,
        /// The encoder's error.
        source: ParquetError,
    },
    /// Sorting the batch failed.
    #[error("sorting a batch: {0}")]
    Sort(#[from] ArrowError),
}

fn io_err<'p>(action: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> WriteError + use<'p> {
    move |source| WriteError::Io { action, path: path.to_owned(), source }
}

/// A file that is now part of the recording.
#[derive(Debug, Clone)]
pub struct WrittenFile {
    /// Its final path.
    pub path: PathBuf,
    /// Rows in it.
    pub rows: usize,
    /// Its size in bytes.
    pub bytes: u64,
}

/// Writes partitions of one writer (one import run or one ingest replica). File names are
/// `<writer_id>-<seq>.parquet`, so writers never collide and one writer's files sort in write order.
pub struct ParquetWriter {
    layout: Layout,
    writer_id: String,
    next_seq: u64,
    props: WriterProperties,
}

impl ParquetWriter {
    /// A writer into `layout` that names its files after `writer_id`.
    pub fn new(layout: Layout, writer_id: String) -> Self {
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_sorting_columns(Some(vec![SortingColumn {
                column_idx: sort_column_index(),
                descending: false,
                nulls_first: false,
            }]))
            .set_created_by(format!("kubestep {}", env!("CARGO_PKG_VERSION")))
            .build();
        Self { layout, writer_id, next_seq: 1, props }
    }

    /// Sorts `batch` by `(received_at, audit_id)` and writes it as one new file of the partition.
    pub fn write(&mut self, session_id: &str, date: &str, batch: &RecordBatch) -> Result<WrittenFile, WriteError> {
        let dir = self.layout.partition_dir(session_id, date);
        create_dir_durably(&dir)?;
        let batch = sort_batch(batch)?;
        let (tmp, path) = loop {
            let name = format!("{}-{:06}.parquet", self.writer_id, self.next_seq);
            self.next_seq += 1;
            let path = dir.join(&name);
            if !path.exists() {
                break (dir.join(format!(".{name}.tmp")), path);
            }
        };
        let result = self.write_tmp(&tmp, &batch).and_then(|bytes| {
            fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))?;
            fsync_dir(&dir)?;
            Ok(bytes)
        });
        match result {
            Ok(bytes) => Ok(WrittenFile { path, rows: batch.num_rows(), bytes }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    fn write_tmp(&self, tmp: &Path, batch: &RecordBatch) -> Result<u64, WriteError> {
        let file = File::create(tmp).map_err(io_err("creating", tmp))?;
        let parquet = |source| WriteError::Parquet { path: tmp.to_owned(), source };
        let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(self.props.clone())).map_err(parquet)?;
        writer.write(batch).map_err(parquet)?;
        let file = writer.into_inner().map_err(parquet)?;
        file.sync_all().map_err(io_err("fsyncing", tmp))?;
        Ok(file.metadata().map_err(io_err("reading the size of", tmp))?.len())
    }
}

/// Leaf index of `received_at` (no nested column precedes it, so field and leaf indexes agree).
fn sort_column_index() -> i32 {
    let schema = kubestep_schemas::file_schema();
    schema.index_of(columns::RECEIVED_AT).map_or(0, |i| i as i32)
}

/// Sorts a batch of operations into the table's order: `(received_at, audit_id)`.
pub fn sort_batch(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let key = |name: &str| -> Result<SortColumn, ArrowError> {
        let column = batch.column_by_name(name).ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")))?;
        Ok(SortColumn { values: Arc::clone(column), options: None })
    };
    let indices = lexsort_to_indices(&[key(columns::RECEIVED_AT)?, key(columns::AUDIT_ID)?], None)?;
    take_record_batch(batch, &indices)
}

/// Creates `dir` and any missing parents, fsyncing each parent whose entry list changed, so that
/// a file renamed into `dir` survives a crash together with the directories that lead to it.
pub fn create_dir_durably(dir: &Path) -> Result<(), WriteError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cursor = dir;
    while !cursor.exists() {
        missing.push(cursor.to_owned());
        match cursor.parent() {
            Some(parent) => cursor = parent,
            None => break,
        }
    }
    fs::create_dir_all(dir).map_err(io_err("creating directory", dir))?;
    for created in missing.iter().rev() {
        if let Some(parent) = created.parent() {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

/// fsyncs a directory so that renames and new entries in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<(), WriteError> {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsyncing directory", dir))
}
