//! The Parquet writer: one sorted, zstd-compressed file per flush of a partition, made visible
//! atomically.
//!
//! A file is written under a hidden temporary name that does not end in `.parquet`, fsynced, renamed
//! to `<writer>-<seq>.parquet`, and the directory is fsynced; so a reader (DataFusion, DuckDB, Spark)
//! sees either no file or a whole one.
//!
//! Every file's footer carries the summary of its rows (`kubestep_schemas::summary`), which
//! `kubestep sessions` reads instead of the rows.

use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SendError, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use datafusion::arrow::array::builder::{NullBufferBuilder, make_view};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray, StringViewArray};
use datafusion::arrow::buffer::{Buffer, ScalarBuffer};
use datafusion::arrow::compute::{SortColumn, concat, interleave, lexsort_to_indices};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::arrow::error::ArrowError;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowColumnWriter, compute_leaves};
use datafusion::parquet::basic::{Compression, Encoding, ZstdLevel};
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{KeyValue, SortingColumn};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use kubestep_schemas::schema::columns;
use kubestep_schemas::summary::{FileSummary, SUMMARY_KEY};

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
    /// Building, joining or sorting the batch failed.
    #[error("preparing a batch for writing: {0}")]
    Sort(#[from] ArrowError),
    /// The thread writing files stopped in the middle of one (a bug); its rows are still buffered.
    #[error("the thread writing {session_id}/{date} stopped unexpectedly")]
    WriterStopped {
        /// The partition's session.
        session_id: String,
        /// The partition's date.
        date: String,
    },
}

impl WriteError {
    /// Whether the cause is a full disk or quota (the write can succeed later, once space frees).
    pub fn is_storage_full(&self) -> bool {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(self);
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<io::Error>()
                && crate::wal::is_storage_full(io)
            {
                return true;
            }
            cause = e.source();
        }
        false
    }
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
    /// The next file's number; shared by every thread writing as this writer.
    next_seq: AtomicU64,
    props: WriterProperties,
    /// How many row groups of a file are encoded at once.
    encoding_threads: usize,
}

impl ParquetWriter {
    /// A writer into `layout` that names its files after `writer_id`.
    pub fn new(layout: Layout, writer_id: String) -> Self {
        let props = writer_properties();
        Self { layout, writer_id, next_seq: AtomicU64::new(1), props, encoding_threads: 1 }
    }

    /// Encodes up to `threads` row groups of a file at once (an import, whose last files are
    /// otherwise written on one core while the others wait).
    pub fn with_encoding_threads(mut self, threads: usize) -> Self {
        self.encoding_threads = threads.max(1);
        self
    }

    /// Writes `batches` as one new file of the partition, rows sorted by `(received_at, audit_id)`.
    pub fn write(&self, session_id: &str, date: &str, batches: &[RecordBatch]) -> Result<WrittenFile, WriteError> {
        let dir = self.layout.partition_dir(session_id, date);
        self.write_into(&dir, batches)
    }

    /// Writes `batches` as one new sorted file in `dir` (created if missing), made visible atomically.
    pub fn write_into(&self, dir: &Path, batches: &[RecordBatch]) -> Result<WrittenFile, WriteError> {
        let dir = dir.to_owned();
        create_dir_durably(&dir)?;
        let order = sorted_order(batches)?;
        let (tmp, path) = loop {
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let name = format!("{}-{:06}.parquet", self.writer_id, seq);
            let path = dir.join(&name);
            if !path.exists() {
                break (dir.join(format!(".{name}.tmp")), path);
            }
        };
        let result = self.write_tmp(&tmp, batches, &order).and_then(|bytes| {
            fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))?;
            if let Err(e) = fsync_dir(&dir) {
                // Not durable, so not written: take it back, or a retry would store the rows twice.
                let _ = fs::remove_file(&path);
                return Err(e);
            }
            Ok(bytes)
        });
        match result {
            Ok(bytes) => Ok(WrittenFile { path, rows: order.len(), bytes }),
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    /// Writes the rows of `batches` in `order`, row group after row group, each a chunk of rows at
    /// a time, so that the sorted copy of a partition never exists in memory all at once. Up to
    /// `encoding_threads` row groups are encoded at once, each on a thread of its own, and
    /// appended in order.
    fn write_tmp(&self, tmp: &Path, batches: &[RecordBatch], order: &[(usize, usize)]) -> Result<u64, WriteError> {
        let file = File::create(tmp).map_err(io_err("creating", tmp))?;
        let parquet = |source| WriteError::Parquet { path: tmp.to_owned(), source };
        let schema = kubestep_schemas::file_schema();
        let (mut file_writer, row_groups) = ArrowWriter::try_new(file, Arc::clone(&schema), Some(self.props.clone()))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(parquet)?;
        let sources: Vec<&RecordBatch> = batches.iter().collect();
        let groups = row_group_ranges(order.len());
        let mut next_group = 0;
        for wave in groups.chunks(self.encoding_threads.max(1)) {
            let mut writers = Vec::with_capacity(wave.len());
            for index in next_group..next_group + wave.len() {
                writers.push(row_groups.create_column_writers(index).map_err(parquet)?);
            }
            next_group += wave.len();
            let encode = |(writers, range): (Vec<ArrowColumnWriter>, &Range<usize>)| {
                encode_row_group(writers, &schema, &sources, &order[range.clone()]).map_err(|e| match e {
                    RowGroupError::Arrow(e) => WriteError::Sort(e),
                    RowGroupError::Parquet(e) => parquet(e),
                })
            };
            let encoded: Vec<Result<Vec<ArrowColumnChunk>, WriteError>> = if wave.len() == 1 {
                writers.into_iter().zip(wave).map(encode).collect()
            } else {
                std::thread::scope(|scope| {
                    let running: Vec<_> =
                        writers.into_iter().zip(wave).map(|job| scope.spawn(move || encode(job))).collect();
                    running
                        .into_iter()
                        .map(|thread| {
                            thread.join().unwrap_or_else(|_| {
                                Err(parquet(ParquetError::General("a thread encoding a row group stopped".into())))
                            })
                        })
                        .collect()
                })
            };
            for chunks in encoded {
                let mut row_group = file_writer.next_row_group().map_err(parquet)?;
                for chunk in chunks? {
                    chunk.append_to_row_group(&mut row_group).map_err(parquet)?;
                }
                row_group.close().map_err(parquet)?;
            }
        }
        let summary =
            FileSummary::of_batches(batches).map_err(|e| WriteError::Sort(ArrowError::SchemaError(e.to_string())))?;
        if let Some(summary) = summary {
            file_writer.append_key_value_metadata(KeyValue::new(SUMMARY_KEY.to_owned(), summary.to_footer_value()));
        }
        let file = file_writer.into_inner().map_err(parquet)?;
        file.sync_all().map_err(io_err("fsyncing", tmp))?;
        Ok(file.metadata().map_err(io_err("reading the size of", tmp))?.len())
    }
}

/// The rows of each row group of a file of `rows` rows: as few groups as [`MAX_ROW_GROUP_ROWS`]
/// allows, of nearly equal size (so that groups encoded side by side take as long).
fn row_group_ranges(rows: usize) -> Vec<Range<usize>> {
    let groups = rows.div_ceil(MAX_ROW_GROUP_ROWS).max(1);
    let size = rows.div_ceil(groups).max(1);
    (0..rows).step_by(size).map(|start| start..(start + size).min(rows)).collect()
}

/// Encodes the rows `order` of `sources` into one row group's column chunks, a chunk of rows at a
/// time.
///
/// Text columns are not copied into sorted order: each chunk of them is a [`StringViewArray`] whose
/// views point into the sources' own bytes ([`SortedText`]), so a string's bytes are copied once,
/// by the encoder into its page. Other columns are gathered with `interleave`.
fn encode_row_group(
    mut writers: Vec<ArrowColumnWriter>,
    schema: &Schema,
    sources: &[&RecordBatch],
    order: &[(usize, usize)],
) -> Result<Vec<ArrowColumnChunk>, RowGroupError> {
    let columns =
        (0..schema.fields().len()).map(|index| SourceColumn::new(sources, index)).collect::<Result<Vec<_>, _>>()?;
    for chunk in order.chunks(WRITE_CHUNK_ROWS) {
        // One writer per leaf column, in schema order: a list column has one leaf, like the rest.
        let mut writer = writers.iter_mut();
        for (field, column) in schema.fields().iter().zip(&columns) {
            let sorted = column.gather(chunk)?;
            for leaf in compute_leaves(field, &sorted)? {
                let Some(writer) = writer.next() else {
                    let problem = format!("no column writer left for column {}", field.name());
                    return Err(RowGroupError::Arrow(ArrowError::SchemaError(problem)));
                };
                writer.write(&leaf)?;
            }
        }
    }
    Ok(writers.into_iter().map(ArrowColumnWriter::close).collect::<Result<_, _>>()?)
}

/// One column of a partition's batches, ready to be gathered chunk by chunk in sorted order.
enum SourceColumn<'a> {
    /// A text column: gathered as views, without copying the text.
    Text(SortedText<'a>),
    /// Any other column: gathered by copying its values.
    Other(Vec<&'a dyn Array>),
}

impl<'a> SourceColumn<'a> {
    fn new(sources: &[&'a RecordBatch], index: usize) -> Result<Self, ArrowError> {
        let arrays = sources
            .iter()
            .map(|batch| {
                batch.columns().get(index).map(|c| c.as_ref()).ok_or_else(|| {
                    ArrowError::SchemaError(format!("a batch of {} columns has no column {index}", batch.num_columns()))
                })
            })
            .collect::<Result<Vec<&dyn Array>, _>>()?;
        let text = arrays.iter().map(|a| a.as_string_opt::<i32>()).collect::<Option<Vec<&StringArray>>>();
        Ok(match text {
            Some(sources) if arrays.first().is_some_and(|a| a.data_type() == &DataType::Utf8) => {
                Self::Text(SortedText::new(sources))
            }
            _ => Self::Other(arrays),
        })
    }

    fn gather(&self, rows: &[(usize, usize)]) -> Result<ArrayRef, ArrowError> {
        match self {
            Self::Text(text) => text.gather(rows).map(|array| Arc::new(array) as ArrayRef),
            Self::Other(arrays) => interleave(arrays, rows),
        }
    }
}

/// The same text column of several batches, read in any order as views into the batches' bytes.
///
/// Sorting a partition this way costs 16 bytes per row instead of a copy of every string: the
/// JSON objects are most of a partition's bytes, and copying them into sorted batches before
/// encoding took about a tenth of an import's CPU.
struct SortedText<'a> {
    sources: Vec<&'a StringArray>,
    /// The sources' value buffers; a view names its source by the index here.
    buffers: Vec<Buffer>,
}

impl<'a> SortedText<'a> {
    fn new(sources: Vec<&'a StringArray>) -> Self {
        let buffers = sources.iter().map(|s| s.values().clone()).collect();
        Self { sources, buffers }
    }

    /// The values at `rows` (`(source, row)` pairs), in that order.
    fn gather(&self, rows: &[(usize, usize)]) -> Result<StringViewArray, ArrowError> {
        let mut views = Vec::with_capacity(rows.len());
        let mut nulls = NullBufferBuilder::new(rows.len());
        for &(source_index, row) in rows {
            let source = self.sources.get(source_index).copied().filter(|s| row < s.len()).ok_or_else(|| {
                ArrowError::InvalidArgumentError(format!("no row {row} in text source {source_index}"))
            })?;
            if source.is_null(row) {
                views.push(0);
                nulls.append_null();
                continue;
            }
            let offsets = source.value_offsets();
            let (start, end) = (offsets[row] as usize, offsets[row + 1] as usize);
            let block = u32::try_from(source_index)
                .map_err(|_| ArrowError::InvalidArgumentError(format!("text source {source_index} past u32")))?;
            let offset = u32::try_from(start)
                .map_err(|_| ArrowError::InvalidArgumentError(format!("text offset {start} past u32")))?;
            views.push(make_view(&source.values()[start..end], block, offset));
            nulls.append_non_null();
        }
        // SAFETY: every non-null view was made by `make_view` from one whole value of a
        // `StringArray` (so valid UTF-8), names that array's value buffer by its index in
        // `buffers`, and its offset and length lie within that buffer; null views are zero.
        Ok(unsafe { StringViewArray::new_unchecked(ScalarBuffer::from(views), self.buffers.clone(), nulls.finish()) })
    }
}

/// Why a row group could not be encoded; the caller knows the file.
#[derive(Debug, thiserror::Error)]
enum RowGroupError {
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    #[error(transparent)]
    Parquet(#[from] ParquetError),
}

/// One partition's records on their way to a [`WriterPool`], and back from it.
#[derive(Debug)]
pub struct WriteJob {
    /// The partition's session.
    pub session_id: String,
    /// The partition's date.
    pub date: String,
    /// Its records (emptied once they are in a file).
    pub batches: Vec<RecordBatch>,
    /// How many rows `batches` hold.
    pub rows: usize,
    /// About how much memory they take, as the ingestor counted it.
    pub bytes: usize,
}

/// A job back from the [`WriterPool`]: its file, or why it could not be written (then the job
/// still holds every record, to be buffered again).
pub type WriteOutcome = (WriteJob, Result<WrittenFile, WriteError>);

/// Writes files on threads of their own, one job per thread at a time, so that whoever hands them
/// over (an import committing blocks in order) goes on de-duplicating and routing records while
/// partitions are sorted, encoded and fsynced.
///
/// No job waits in a queue: [`try_submit`](Self::try_submit) hands a job over only when a thread is
/// idle, so no more partitions are out of the ingestor's buffer than there are threads, and a
/// caller whose job is refused keeps it buffered or writes it itself.
pub struct WriterPool {
    jobs: Option<SyncSender<WriteJob>>,
    outcomes: Receiver<WriteOutcome>,
    threads: Vec<JoinHandle<()>>,
    in_flight: usize,
}

impl WriterPool {
    /// Starts up to `threads` threads (at least one, or the error), writing with `writer` (shared
    /// with whoever writes in place meanwhile).
    pub fn spawn(writer: Arc<ParquetWriter>, threads: usize) -> io::Result<Self> {
        // Capacity 0: a job is handed over only to a thread waiting for one.
        let (jobs, job_rx) = sync_channel::<WriteJob>(0);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (outcome_tx, outcomes) = channel();
        let mut started = Vec::new();
        for _ in 0..threads.max(1) {
            let (writer, job_rx, outcome_tx) = (Arc::clone(&writer), Arc::clone(&job_rx), outcome_tx.clone());
            let spawned = std::thread::Builder::new()
                .name("kubestep-writer".into())
                .spawn(move || write_jobs(&writer, &job_rx, &outcome_tx));
            match spawned {
                Ok(thread) => started.push(thread),
                Err(e) if started.is_empty() => return Err(e),
                Err(e) => tracing::warn!(error = %e, "started fewer threads to write files than asked for"),
            }
        }
        Ok(Self { jobs: Some(jobs), outcomes, threads: started, in_flight: 0 })
    }

    /// Hands `job` to an idle thread; gives it back when every thread is busy (or gone).
    pub fn try_submit(&mut self, job: WriteJob) -> Result<(), WriteJob> {
        let Some(jobs) = &self.jobs else { return Err(job) };
        if self.in_flight >= self.threads.len() {
            return Err(job);
        }
        // A thread whose outcome was taken is back at (or on its way to) waiting for a job, so
        // this waits for no write.
        match jobs.send(job) {
            Ok(()) => {
                self.in_flight += 1;
                Ok(())
            }
            Err(SendError(job)) => Err(job),
        }
    }

    /// Whether every thread is writing (or has an outcome not taken yet).
    pub fn all_busy(&self) -> bool {
        self.in_flight >= self.threads.len()
    }

    /// Jobs handed over whose outcome has not been taken yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// The outcomes that are ready, without waiting.
    pub fn finished(&mut self) -> Vec<WriteOutcome> {
        let ready: Vec<WriteOutcome> = self.outcomes.try_iter().collect();
        self.in_flight -= ready.len();
        ready
    }

    /// Waits for the next outcome; `None` when no job is in flight (or every thread is gone, which
    /// a thread only is after sending its job's outcome).
    pub fn wait_one(&mut self) -> Option<WriteOutcome> {
        if self.in_flight == 0 {
            return None;
        }
        let outcome = self.outcomes.recv().ok()?;
        self.in_flight -= 1;
        Some(outcome)
    }
}

/// One writing thread: takes jobs until the pool goes away, sends each one back with its outcome.
fn write_jobs(writer: &ParquetWriter, jobs: &Mutex<Receiver<WriteJob>>, outcomes: &Sender<WriteOutcome>) {
    loop {
        let job = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        let Ok(mut job) = job else { return };
        let _span = tracing::debug_span!("write_file", session = %job.session_id, date = %job.date).entered();
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            writer.write(&job.session_id, &job.date, &job.batches)
        }))
        .unwrap_or_else(|_| {
            Err(WriteError::WriterStopped { session_id: job.session_id.clone(), date: job.date.clone() })
        });
        if written.is_ok() {
            job.batches = Vec::new();
        }
        if outcomes.send((job, written)).is_err() {
            return;
        }
    }
}

impl Drop for WriterPool {
    fn drop(&mut self) {
        // Each thread ends after the job it is writing, if any: that file is complete either way.
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// How KubeStep encodes Parquet: zstd, row groups of at most [`MAX_ROW_GROUP_ROWS`], page statistics
/// (except on JSON text), the sort order declared, no dictionary where it cannot pay off, times as
/// deltas.
pub fn writer_properties() -> WriterProperties {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(MAX_ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_sorting_columns(Some(
            SORT_KEY
                .iter()
                .map(|name| SortingColumn { column_idx: column_index(name), descending: false, nulls_first: false })
                .collect(),
        ))
        .set_created_by(format!("kubestep {}", env!("CARGO_PKG_VERSION")));
    // JSON documents and unique ids: a dictionary never pays off, and min/max statistics of
    // JSON text prune nothing; both would only cost encoding time.
    for column in [columns::REQUEST_OBJECT, columns::RESPONSE_OBJECT, columns::ANNOTATIONS, columns::AUDIT_ID] {
        let path = ColumnPath::from(column);
        props = props.set_column_dictionary_enabled(path.clone(), false);
        if column != columns::AUDIT_ID {
            props = props.set_column_statistics_enabled(path, EnabledStatistics::None);
        }
    }
    // Times: ascending within a file (`received_at`) or nearly so (`completed_at`), and almost all
    // distinct. A dictionary fills up and falls back to plain 8-byte values, which zstd then has
    // to inflate on every read; deltas take a byte or two per row.
    for column in [columns::RECEIVED_AT, columns::COMPLETED_AT] {
        let path = ColumnPath::from(column);
        props = props.set_column_dictionary_enabled(path.clone(), false);
        props = props.set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
    }
    props.build()
}

/// Rows handed to the Parquet encoder at a time.
const WRITE_CHUNK_ROWS: usize = 8192;

/// The table's order, `(received_at, audit_id)`, over several batches: `(batch, row)` pairs.
pub fn sorted_order(batches: &[RecordBatch]) -> Result<Vec<(usize, usize)>, ArrowError> {
    let key = |name: &str| -> Result<SortColumn, ArrowError> {
        let parts = batches
            .iter()
            .map(|b| b.column_by_name(name).map(|c| c.as_ref()))
            .collect::<Option<Vec<&dyn Array>>>()
            .ok_or_else(|| ArrowError::SchemaError(format!("no column {name}")))?;
        Ok(SortColumn { values: concat(&parts)?, options: None })
    };
    let keys = SORT_KEY.iter().map(|name| key(name)).collect::<Result<Vec<_>, _>>()?;
    let indices = lexsort_to_indices(&keys, None)?;
    let mut starts = Vec::with_capacity(batches.len());
    let mut total = 0;
    for batch in batches {
        starts.push(total);
        total += batch.num_rows();
    }
    Ok(indices
        .values()
        .iter()
        .map(|&i| {
            let i = i as usize;
            let batch = starts.partition_point(|&start| start <= i) - 1;
            (batch, i - starts[batch])
        })
        .collect())
}

/// The order of the rows in every file: the order of a session.
pub const SORT_KEY: [&str; 3] = [columns::RECEIVED_AT, columns::AUDIT_ID, columns::STAGE];

fn column_index(name: &str) -> i32 {
    let schema = kubestep_schemas::file_schema();
    schema.index_of(name).map_or(0, |i| i as i32)
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::TimestampMicrosecondType;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use kubestep_schemas::{OperationBatchBuilder, OperationRecord};

    fn batch(rows: &[(i64, &str)]) -> RecordBatch {
        let mut builder = OperationBatchBuilder::new();
        for (t, id) in rows {
            let record = OperationRecord {
                audit_id: (*id).into(),
                stage: "ResponseComplete".into(),
                verb: "get".into(),
                actor_id: "a".into(),
                received_at_us: *t,
                completed_at_us: *t,
                ..OperationRecord::default()
            };
            builder.append(&record);
        }
        builder.finish().expect("batch")
    }

    #[test]
    fn sorted_text_reads_rows_of_several_sources_in_any_order() {
        let long = "a string well past the twelve bytes a view holds inline";
        let first = StringArray::from(vec![Some("short"), None, Some(long)]);
        let second = StringArray::from(vec![Some(""), Some("{\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"}}")]);
        let text = SortedText::new(vec![&first, &second]);
        let gathered = text.gather(&[(1, 1), (0, 2), (0, 1), (1, 0), (0, 0), (0, 2)]).expect("gather");
        let got: Vec<Option<&str>> = gathered.iter().collect();
        assert_eq!(
            got,
            [
                Some("{\"kind\":\"Pod\",\"metadata\":{\"name\":\"p\"}}"),
                Some(long),
                None,
                Some(""),
                Some("short"),
                Some(long)
            ]
        );
        assert_eq!(gathered.data_buffers().len(), 2, "views point into the sources' own buffers");
        assert!(text.gather(&[(0, 3)]).is_err(), "a row past a source's end is an error");
        assert!(text.gather(&[(2, 0)]).is_err(), "a source that does not exist is an error");
    }

    #[test]
    fn rows_from_several_batches_are_written_in_table_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = ParquetWriter::new(Layout::new(dir.path()), "w".into());
        let batches = [batch(&[(30, "c"), (10, "b")]), batch(&[(20, "a"), (10, "a")]), batch(&[])];
        let written = writer.write("s", "1970-01-01", &batches).expect("write");
        assert_eq!(written.rows, 4);
        assert!(written.path.ends_with("session_id=s/date=1970-01-01/w-000001.parquet"));
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&written.path).expect("open"))
            .expect("footer")
            .build()
            .expect("reader");
        let mut got = Vec::new();
        for b in reader {
            let b = b.expect("batch");
            let t = b.column_by_name("received_at").expect("col").as_primitive::<TimestampMicrosecondType>().clone();
            let id = b.column_by_name("audit_id").expect("col").as_string::<i32>().clone();
            got.extend((0..b.num_rows()).map(|i| (t.value(i), id.value(i).to_owned())));
        }
        let want: Vec<(i64, String)> =
            [(10, "a"), (10, "b"), (20, "a"), (30, "c")].iter().map(|(t, s)| (*t, s.to_string())).collect();
        assert_eq!(got, want);
        let leftovers: Vec<_> = std::fs::read_dir(written.path.parent().expect("dir"))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(leftovers, ["w-000001.parquet"], "no temporary file left behind");
    }

    #[test]
    fn row_groups_are_as_few_as_allowed_and_of_nearly_equal_size() {
        assert!(row_group_ranges(0).is_empty(), "no rows, no row group");
        assert_eq!(row_group_ranges(10), vec![0..10]);
        assert_eq!(row_group_ranges(MAX_ROW_GROUP_ROWS), vec![0..MAX_ROW_GROUP_ROWS]);
        let rows = MAX_ROW_GROUP_ROWS * 2 + 1;
        let ranges = row_group_ranges(rows);
        assert_eq!(ranges.len(), 3);
        assert_eq!(ranges.last().map(|r| r.end), Some(rows));
        assert!(ranges.windows(2).all(|w| w[0].end == w[1].start));
        assert!(ranges.iter().all(|r| r.len() <= MAX_ROW_GROUP_ROWS && r.len() + 2 >= rows / 3), "{ranges:?}");
    }

    #[test]
    fn row_groups_encoded_side_by_side_make_one_file_in_table_order() {
        // Rows in reverse order over several batches, enough for two row groups.
        let rows = MAX_ROW_GROUP_ROWS + 1000;
        let ids: Vec<String> = (0..rows).map(|i| format!("e{i:07}")).collect();
        let batches: Vec<RecordBatch> = ids
            .chunks(50_000)
            .map(|chunk| {
                let rows: Vec<(i64, &str)> = chunk.iter().map(|id| (-(id.len() as i64), id.as_str())).rev().collect();
                batch(&rows)
            })
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        let writer = ParquetWriter::new(Layout::new(dir.path()), "w".into()).with_encoding_threads(2);
        let written = writer.write("s", "1970-01-01", &batches).expect("write");
        assert_eq!(written.rows, rows);
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&written.path).expect("open")).expect("footer");
        let groups: Vec<i64> = builder.metadata().row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(groups.len(), 2, "{groups:?}");
        assert!(groups.iter().all(|&n| n as usize > rows / 2 - 2), "nearly equal groups: {groups:?}");
        assert_eq!(builder.schema().fields(), kubestep_schemas::file_schema().fields(), "the Arrow schema is stored");
        let mut got = Vec::new();
        for b in builder.build().expect("reader") {
            let b = b.expect("batch");
            let id = b.column_by_name("audit_id").expect("col").as_string::<i32>().clone();
            got.extend((0..b.num_rows()).map(|i| id.value(i).to_owned()));
        }
        assert_eq!(got, ids, "every row once, sorted by audit_id under one received_at");
    }
}
