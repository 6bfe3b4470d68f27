//! The ingest pipeline: decode -> normalize -> de-duplicate -> tag with a session -> Arrow ->
//! Parquet. One [`Ingestor`] is one writer: an import run (and, later, one ingest replica).

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use kubestep_schemas::OperationBatchBuilder;
use kubestep_schemas::audit::Event;
use kubestep_schemas::schema::columns;

use crate::decode::{EventSink, Location, decode, decode_json_lines};
use crate::dedup::{Deduplicator, LoadKeysError, record_key};
use crate::layout::{Layout, partition_date, stored_auto_sessions};
use crate::normalize::{NormalizeConfig, Normalized, normalize};
use crate::prepare::PreparedBatch;
use crate::rejected::{RejectedLog, Rejection};
use crate::session::{DEFAULT_IDLE_GAP_US, SessionAssigner};
use crate::writer::{ParquetWriter, WriteError, WriteJob, WriteOutcome, WriterPool, WrittenFile};

/// How many rejections are kept in memory for the summary (all of them go to the log).
pub const MAX_REPORTED_REJECTIONS: usize = 1000;

/// Settings of an ingest run.
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// How events become records.
    pub normalize: NormalizeConfig,
    /// Record everything into this session instead of automatic ones.
    pub session: Option<String>,
    /// Automatic sessions end after this long without events (microseconds).
    pub idle_gap_us: i64,
    /// A partition's buffered rows are written out as a file once there are this many.
    pub max_rows_per_file: usize,
    /// ... or once they hold about this many bytes.
    pub max_bytes_per_file: usize,
    /// All partitions together hold at most about this many bytes: past it, the largest is
    /// written out early. An import spanning many days (one partition per day) stays bounded.
    pub max_buffered_bytes: usize,
    /// Remember only about this many of the most recent events for de-duplication (a long-running
    /// service); `None` remembers every event (an import).
    pub dedup_window: Option<usize>,
    /// When a file cannot be written while committing (a full disk), keep its records buffered and
    /// write them at a later flush: the service does, since its WAL holds them and the disk may
    /// free up. Otherwise (an import) the commit returns the failure and the run stops, rather
    /// than reading the rest of its input into memory.
    pub retry_failed_writes: bool,
    /// Write files on a thread of their own while committing goes on (an import: the committing
    /// thread is the busiest, and most of its time is writing). A failed write is returned by a
    /// later commit, its records buffered again. The service writes in place, because its WAL
    /// truncation follows each file.
    pub write_in_background: bool,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            normalize: NormalizeConfig::default(),
            session: None,
            idle_gap_us: DEFAULT_IDLE_GAP_US,
            max_rows_per_file: 1_000_000,
            max_bytes_per_file: 256 << 20,
            max_buffered_bytes: 512 << 20,
            dedup_window: None,
            retry_failed_writes: false,
            write_in_background: false,
        }
    }
}

/// Storage failed; what was stored before stays stored.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Writing a Parquet file or the rejected-events log failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// The records already stored could not be read to de-duplicate against.
    #[error(transparent)]
    LoadKeys(#[from] LoadKeysError),
}

impl IngestError {
    /// Whether the cause is a full disk or quota.
    pub fn is_storage_full(&self) -> bool {
        match self {
            IngestError::Write(e) => e.is_storage_full(),
            IngestError::LoadKeys(_) => false,
        }
    }
}

/// What an ingest run did. `events_read = dropped + rejected(events) + duplicates + accepted`.
#[derive(Debug, Default, Clone)]
pub struct IngestStats {
    /// Audit events decoded, at every stage.
    pub events_read: u64,
    /// New records handed to the writer.
    pub records_accepted: u64,
    /// Records in files that are now part of the recording.
    pub records_stored: u64,
    /// Parquet files written.
    pub files_written: u64,
    /// Bytes of Parquet written.
    pub bytes_written: u64,
    /// Events at stages that are not recorded, by stage.
    pub dropped_by_stage: BTreeMap<&'static str, u64>,
    /// Events already recorded (in this run or before).
    pub duplicates: u64,
    /// Inputs or events that could not be recorded.
    pub rejected: u64,
    /// The first [`MAX_REPORTED_REJECTIONS`] rejections.
    pub rejections: Vec<Rejection>,
    /// Sessions that received records, in name order.
    pub sessions: Vec<String>,
}

/// Records are cut into Arrow batches of this many rows while they wait to be written: small
/// enough that builder buffers are reused from the allocator instead of freshly mapped, the same
/// size DataFusion reads in.
const BATCH_ROWS: usize = 8192;

/// The records of one `(session, date)` waiting to be written.
struct Partition {
    session_id: String,
    date: String,
    builder: OperationBatchBuilder,
    batches: Vec<RecordBatch>,
    rows: usize,
    bytes: usize,
}

/// What a recording kept somewhere else already holds, for an ingestor that writes into a local
/// staging directory whose files are then uploaded (a recording in object storage): the events it
/// must not store again, and the automatic sessions new events may continue.
#[derive(Debug, Default, Clone)]
pub struct StoredElsewhere {
    /// The de-duplication key ([`crate::dedup::dedup_key`]) of every stored event.
    pub keys: Vec<u128>,
    /// Every stored automatic session with its first and latest `completed_at` (microseconds).
    pub auto_sessions: Vec<(String, i64, i64)>,
}

/// One writer's pipeline into a recording directory.
pub struct Ingestor {
    config: IngestConfig,
    sessions: SessionAssigner,
    dedup: Deduplicator,
    partitions: Vec<Partition>,
    /// What all partitions hold together (the sum of their `bytes`).
    buffered: usize,
    last_partition: Option<usize>,
    day_cache: (i64, String),
    writer: Arc<ParquetWriter>,
    /// Started by the first file written in the background.
    writer_pool: Option<WriterPool>,
    /// Partitions cut at their size, waiting for a writing thread (only when writing in the
    /// background). Their bytes still count in `buffered`.
    ready: VecDeque<WriteJob>,
    rejected: RejectedLog,
    stats: IngestStats,
    written: Vec<WrittenFile>,
    failure: Option<IngestError>,
}

/// A writer id that no other writer will pick: 12 random hex digits.
pub fn random_writer_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.write_u32(std::process::id());
    format!("{:012x}", h.finish() & 0xffff_ffff_ffff)
}

impl Ingestor {
    /// An ingestor writing into the recording at `root` under the name `writer_id`.
    pub fn new(root: &Path, writer_id: &str, config: IngestConfig) -> Self {
        let layout = Layout::new(root);
        let sessions = match &config.session {
            Some(name) => SessionAssigner::named(name.clone()),
            None => {
                let mut sessions = SessionAssigner::automatic(config.idle_gap_us);
                for (name, first, latest) in stored_auto_sessions(&layout) {
                    sessions.resume(name, first, latest);
                }
                sessions
            }
        };
        Self {
            sessions,
            dedup: match config.dedup_window {
                Some(window) => Deduplicator::with_window(layout.clone(), window),
                None => Deduplicator::new(layout.clone()),
            },
            partitions: Vec::new(),
            buffered: 0,
            last_partition: None,
            day_cache: (i64::MIN, String::new()),
            writer: Arc::new(ParquetWriter::new(layout.clone(), writer_id.to_owned()).with_encoding_threads(
                match config.write_in_background {
                    true => std::thread::available_parallelism().map_or(1, |n| n.get()),
                    false => 1,
                },
            )),
            writer_pool: None,
            ready: VecDeque::new(),
            rejected: RejectedLog::new(layout.rejected_dir(), writer_id),
            stats: IngestStats::default(),
            written: Vec::new(),
            failure: None,
            config,
        }
    }

    /// Takes into account what the recording holds outside this ingestor's directory (see
    /// [`StoredElsewhere`]): those events count as duplicates, and their automatic sessions are
    /// continued as if their files were local.
    pub fn with_stored_elsewhere(mut self, stored: StoredElsewhere) -> Self {
        self.dedup.preload(stored.keys);
        if self.config.session.is_none() {
            for (name, first, latest) in stored.auto_sessions {
                self.sessions.resume(name, first, latest);
            }
        }
        self
    }

    /// The settings this ingestor runs with (inputs prepared elsewhere must use its `normalize`).
    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// What happened so far.
    pub fn stats(&self) -> &IngestStats {
        &self.stats
    }

    /// Where rejections are logged.
    pub fn rejected_log(&self) -> &PathBuf {
        self.rejected.path()
    }

    /// Decodes and records every event in `bytes`, which came from `source`. `progress` is told how
    /// many bytes of `bytes` have been decoded, now and then.
    pub fn ingest(&mut self, source: &str, bytes: &[u8], progress: &mut dyn FnMut(usize)) -> Result<(), IngestError> {
        let mut sink = Sink { ingestor: self, source, progress };
        decode(bytes, &mut sink);
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Like [`ingest`](Self::ingest) for a block of whole lines of a JSON-lines input, the
    /// `lines_before` lines before it having been ingested already.
    pub fn ingest_lines(&mut self, source: &str, block: &[u8], lines_before: usize) -> Result<(), IngestError> {
        let mut no_progress = |_| {};
        let mut sink = Sink { ingestor: self, source, progress: &mut no_progress };
        decode_json_lines(block, lines_before, lines_before == 0, &mut sink);
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Records that a whole input (or part of one) could not be read.
    pub fn reject_input(&mut self, source: &str, reason: String) -> Result<(), IngestError> {
        self.reject(Rejection { source: source.to_owned(), location: None, reason }, &[]);
        match self.failure.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Writes every buffered record out and returns the run's statistics and files.
    pub fn finish(mut self) -> Result<(IngestStats, Vec<WrittenFile>), IngestError> {
        let mut flushed = self.hand_over_ready(WhenWritersBusy::WriteInPlace);
        for index in 0..self.partitions.len() {
            flushed = flushed.and_then(|()| self.flush_partition(index, WhenWritersBusy::WriteInPlace));
        }
        if flushed.and_then(|()| self.collect_writes(true)).is_err() {
            // Whatever failed is buffered again: one more try, in place, and its failure is final.
            self.config.write_in_background = false;
            self.hand_over_ready(WhenWritersBusy::WriteInPlace)?;
            for index in 0..self.partitions.len() {
                self.flush_partition(index, WhenWritersBusy::WriteInPlace)?;
            }
        }
        self.rejected.sync()?;
        let mut sessions: Vec<String> = self.partitions.iter().map(|p| p.session_id.clone()).collect();
        sessions.sort();
        sessions.dedup();
        self.stats.sessions = sessions;
        Ok((self.stats, self.written))
    }

    /// Stores a batch prepared elsewhere: its rejections go to the log, each new record to
    /// `session` (or to an automatic session when `None`), duplicates are counted and skipped.
    /// Batches must be committed in the order they were accepted.
    ///
    /// The records stay buffered whatever happens to files: with
    /// [`retry_failed_writes`](IngestConfig::retry_failed_writes), a partition that reaches its size
    /// and cannot be written now (a full disk) is written by a later flush; without it, that failure
    /// is returned (the records stay buffered for [`finish`](Self::finish) to try once more). Any
    /// other error means something was not kept: the rejections could not be logged, or the stored
    /// keys could not be read (then none of the batch's records was buffered).
    pub fn commit(&mut self, prepared: PreparedBatch, session: Option<&str>) -> Result<(), IngestError> {
        self.stats.events_read += prepared.events_read;
        for (stage, n) in prepared.dropped_by_stage {
            *self.stats.dropped_by_stage.entry(stage).or_default() += n;
        }
        for (rejection, raw) in prepared.rejections {
            self.reject(rejection, &raw);
        }
        let rejections_lost = self.failure.take();
        if let Some(records) = prepared.records {
            self.buffer(&records, &prepared.keys, session)?;
        }
        match rejections_lost {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn buffer(&mut self, records: &RecordBatch, keys: &[u128], session: Option<&str>) -> Result<(), IngestError> {
        let (routes, inserted) = self.route(records, keys, session)?;
        let row_bytes = records.get_array_memory_size() / records.num_rows().max(1);
        let whole = routes.len() == 1 && routes[0].1.len() == records.num_rows();
        let mut batches = Vec::with_capacity(routes.len());
        for (index, rows) in routes {
            let batch = match whole {
                true => records.clone(),
                false => match take_record_batch(records, &UInt32Array::from(rows)) {
                    Ok(batch) => batch,
                    Err(e) => {
                        // Nothing of the batch is buffered, so none of its keys may stay remembered.
                        for key in inserted {
                            self.dedup.forget(key);
                        }
                        return Err(WriteError::Sort(e).into());
                    }
                },
            };
            batches.push((index, batch));
        }
        // Every record is buffered before any file is written: a write that fails leaves them all
        // buffered, for a later flush (the service) or for `finish` (an import that stops).
        let mut full = Vec::new();
        for (index, batch) in batches {
            let partition = &mut self.partitions[index];
            partition.rows += batch.num_rows();
            partition.bytes += batch.num_rows() * row_bytes;
            self.buffered += batch.num_rows() * row_bytes;
            self.stats.records_accepted += batch.num_rows() as u64;
            partition.batches.push(batch);
            if partition.rows >= self.config.max_rows_per_file || partition.bytes >= self.config.max_bytes_per_file {
                full.push(index);
            }
        }
        // Partitions cut earlier go as soon as a writing thread is free.
        let mut flushes = vec![None; usize::from(!self.ready.is_empty())];
        flushes.extend(full.into_iter().map(Some));
        for index in flushes {
            let flushed = match index {
                Some(index) => self.flush_partition(index, WhenWritersBusy::KeepBuffered),
                None => self.hand_over_ready(WhenWritersBusy::KeepBuffered),
            };
            if let Err(e) = flushed {
                if !self.config.retry_failed_writes {
                    return Err(e);
                }
                tracing::warn!(error = %e, "could not write a full partition yet; its records stay buffered");
            }
        }
        if let Err(e) = self.keep_within_budget() {
            if !self.config.retry_failed_writes {
                return Err(e);
            }
            tracing::warn!(error = %e, "could not write partitions out early; their records stay buffered");
        }
        Ok(())
    }

    /// Writes out the largest partitions while all of them together (with those waiting for or
    /// being written) hold more than `max_buffered_bytes`. Writing in the background, it first
    /// waits for a thread whenever partitions already cut are waiting for one.
    fn keep_within_budget(&mut self) -> Result<(), IngestError> {
        while self.buffered > self.config.max_buffered_bytes {
            if self.config.write_in_background {
                self.hand_over_ready(WhenWritersBusy::KeepBuffered)?;
                let busy = self.writer_pool.as_ref().is_some_and(WriterPool::all_busy);
                if (busy || !self.ready.is_empty())
                    && let Some(outcome) = self.writer_pool.as_mut().and_then(WriterPool::wait_one)
                {
                    self.apply_write(outcome)?;
                    continue;
                }
            }
            let largest = (0..self.partitions.len()).max_by_key(|&i| self.partitions[i].bytes);
            match largest {
                Some(largest) if self.partitions[largest].rows > 0 => {
                    self.flush_partition(largest, WhenWritersBusy::WriteInPlace)?
                }
                // What is over the budget is being written: wait for it.
                _ => match self.writer_pool.as_mut().and_then(WriterPool::wait_one) {
                    Some(outcome) => self.apply_write(outcome)?,
                    None => break,
                },
            }
        }
        Ok(())
    }

    /// Changes how many recent keys de-duplication remembers (`None`: all). The service replays
    /// its WAL remembering everything, then bounds the memory.
    pub fn set_dedup_window(&mut self, window: Option<usize>) {
        self.dedup.set_window(window);
    }

    /// The partition each new row of `records` goes to, and the keys newly remembered (for taking
    /// back if the rows cannot be buffered). Either every new key is remembered or, on failure,
    /// none is.
    fn route(
        &mut self,
        records: &RecordBatch,
        keys: &[u128],
        session: Option<&str>,
    ) -> Result<(Routes, Vec<u128>), IngestError> {
        let schema = records.schema();
        let column = |name: &str| {
            schema.index_of(name).ok().and_then(|i| records.column(i).as_primitive_opt::<TimestampMicrosecondType>())
        };
        let (Some(received), Some(completed)) = (column(columns::RECEIVED_AT), column(columns::COMPLETED_AT)) else {
            return Err(WriteError::Sort(datafusion::arrow::error::ArrowError::SchemaError(
                "a prepared batch lacks received_at or completed_at".into(),
            ))
            .into());
        };
        let mut routes: Vec<(usize, Vec<u32>)> = Vec::new();
        let mut inserted = Vec::new();
        for (row, &key) in keys.iter().enumerate().take(records.num_rows()) {
            let date = self.partition_date(received.value(row)).to_owned();
            match self.dedup.insert(&date, key) {
                Ok(true) => inserted.push(key),
                Ok(false) => {
                    self.stats.duplicates += 1;
                    continue;
                }
                Err(e) => {
                    for key in inserted {
                        self.dedup.forget(key);
                    }
                    return Err(e.into());
                }
            }
            let name = match session {
                Some(name) => name,
                None => self.sessions.assign(completed.value(row)),
            };
            let index = partition_index(&mut self.partitions, &mut self.last_partition, name, date);
            match routes.iter_mut().find(|(i, _)| *i == index) {
                Some((_, rows)) => rows.push(row as u32),
                None => routes.push((index, vec![row as u32])),
            }
        }
        Ok((routes, inserted))
    }

    /// Writes out every buffered record and forgets the partitions, so that a long-running writer
    /// does not accumulate them. Records that could not be written stay buffered.
    pub fn flush_all(&mut self) -> Result<(), IngestError> {
        self.flush_where(|_| true)
    }

    /// Writes out every buffered record of `session`.
    pub fn flush_session(&mut self, session: &str) -> Result<(), IngestError> {
        self.flush_where(|p| p.session_id == session)
    }

    fn flush_where(&mut self, wanted: impl Fn(&Partition) -> bool) -> Result<(), IngestError> {
        let mut result = self.hand_over_ready(WhenWritersBusy::WriteInPlace);
        for index in 0..self.partitions.len() {
            if wanted(&self.partitions[index])
                && let Err(e) = self.flush_partition(index, WhenWritersBusy::WriteInPlace)
            {
                result = Err(e);
                break;
            }
        }
        // Written out means in files: wait for the ones being written (their failures are buffered again).
        result = result.and(self.collect_writes(true));
        self.partitions.retain(|p| p.rows > 0 || !p.builder.is_empty());
        self.last_partition = None;
        self.rejected.sync()?;
        result
    }

    /// Records buffered and not yet written to a file.
    pub fn buffered_records(&self) -> usize {
        self.partitions.iter().map(|p| p.rows).chain(self.ready.iter().map(|job| job.rows)).sum()
    }

    /// About how much memory the buffered records take.
    pub fn buffered_bytes(&self) -> usize {
        self.partitions.iter().map(|p| p.bytes).chain(self.ready.iter().map(|job| job.bytes)).sum()
    }

    /// The files written since the last call.
    pub fn drain_written(&mut self) -> Vec<WrittenFile> {
        std::mem::take(&mut self.written)
    }

    fn reject(&mut self, rejection: Rejection, raw: &[u8]) {
        self.stats.rejected += 1;
        if let Err(e) = self.rejected.append(&rejection, raw) {
            self.failure.get_or_insert(e.into());
        }
        if self.stats.rejections.len() < MAX_REPORTED_REJECTIONS {
            self.stats.rejections.push(rejection);
        }
    }

    fn partition_date(&mut self, received_at_us: i64) -> &str {
        let day = received_at_us.div_euclid(86_400_000_000);
        if self.day_cache.0 != day {
            self.day_cache = (day, partition_date(received_at_us));
        }
        &self.day_cache.1
    }

    fn record(&mut self, source: &str, location: Location, event: Event<'_>, raw: &[u8]) -> Result<(), IngestError> {
        self.stats.events_read += 1;
        let record = match normalize(event, &self.config.normalize) {
            Ok(Normalized::Record(record)) => record,
            Ok(Normalized::Dropped(stage)) => {
                *self.stats.dropped_by_stage.entry(stage.as_str()).or_default() += 1;
                return Ok(());
            }
            Err(e) => {
                let rejection =
                    Rejection { source: source.to_owned(), location: Some(location), reason: e.to_string() };
                self.reject(rejection, raw);
                return Ok(());
            }
        };
        let key = record_key(&record);
        let date = self.partition_date(record.received_at_us).to_owned();
        if !self.dedup.insert(&date, key)? {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let session = self.sessions.assign(record.completed_at_us);
        let index = partition_index(&mut self.partitions, &mut self.last_partition, session, date);
        let partition = &mut self.partitions[index];
        let before = partition.builder.approx_bytes();
        partition.builder.append(&record);
        partition.rows += 1;
        let grown = partition.builder.approx_bytes() - before;
        partition.bytes += grown;
        self.buffered += grown;
        self.stats.records_accepted += 1;
        if partition.builder.len() >= BATCH_ROWS {
            let batch = partition.builder.finish().map_err(WriteError::Sort)?;
            partition.batches.push(batch);
        }
        if partition.rows >= self.config.max_rows_per_file || partition.bytes >= self.config.max_bytes_per_file {
            self.flush_partition(index, WhenWritersBusy::WriteInPlace)?;
        }
        if self.buffered > self.config.max_buffered_bytes {
            self.keep_within_budget()?;
        }
        Ok(())
    }

    /// Writes out partition `index`. Writing in the background, it is cut into a job for the
    /// writing threads, and `busy` says what happens when every thread is busy; otherwise it is
    /// written in place.
    fn flush_partition(&mut self, index: usize, busy: WhenWritersBusy) -> Result<(), IngestError> {
        let partition = &mut self.partitions[index];
        if partition.rows == 0 {
            return Ok(());
        }
        if !partition.builder.is_empty() {
            let batch = partition.builder.finish().map_err(WriteError::Sort)?;
            partition.batches.push(batch);
        }
        if self.config.write_in_background {
            let job = WriteJob {
                session_id: partition.session_id.clone(),
                date: partition.date.clone(),
                batches: std::mem::take(&mut partition.batches),
                rows: std::mem::take(&mut partition.rows),
                bytes: std::mem::take(&mut partition.bytes),
            };
            self.ready.push_back(job);
            return self.hand_over_ready(busy);
        }
        // Written in place: if writing fails (a full disk), the records stay buffered for the next try.
        let partition = &mut self.partitions[index];
        let file = self.writer.write(&partition.session_id, &partition.date, &partition.batches)?;
        partition.batches.clear();
        partition.rows = 0;
        self.buffered = self.buffered.saturating_sub(partition.bytes);
        partition.bytes = 0;
        self.record_written(file);
        Ok(())
    }

    /// Hands the partitions waiting in `ready` to idle writing threads, oldest first, after taking
    /// the outcomes of earlier files (a failure among them is returned; the rest stays ready). When
    /// every thread is busy, `busy` says whether the rest waits or is written in place; without
    /// threads (they could not be started) it is written in place.
    fn hand_over_ready(&mut self, busy: WhenWritersBusy) -> Result<(), IngestError> {
        self.collect_writes(false)?;
        while let Some(job) = self.ready.pop_front() {
            let job = match self.submit(job) {
                Ok(()) => continue,
                Err(job) => job,
            };
            if busy == WhenWritersBusy::KeepBuffered && self.config.write_in_background {
                self.ready.push_front(job);
                return Ok(());
            }
            self.buffered = self.buffered.saturating_sub(job.bytes);
            match self.writer.write(&job.session_id, &job.date, &job.batches) {
                Ok(file) => self.record_written(file),
                Err(e) => {
                    // Back into its partition, for the next try.
                    self.rebuffer(job);
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    /// Hands `job` to an idle writing thread, starting the threads the first time; gives it back
    /// when every thread is busy or none could be started (then writing in the background stops).
    fn submit(&mut self, job: WriteJob) -> Result<(), WriteJob> {
        if !self.config.write_in_background {
            return Err(job);
        }
        if self.writer_pool.is_none() {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            match WriterPool::spawn(Arc::clone(&self.writer), threads) {
                Ok(pool) => self.writer_pool = Some(pool),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start threads to write files; writing them in place");
                    self.config.write_in_background = false;
                    return Err(job);
                }
            }
        }
        match self.writer_pool.as_mut() {
            Some(pool) => pool.try_submit(job),
            None => Err(job),
        }
    }

    /// Takes the outcomes of files written in the background (`wait`: of all of them, waiting for
    /// those still being written). Records whose file failed are buffered again; the first failure
    /// is returned.
    fn collect_writes(&mut self, wait: bool) -> Result<(), IngestError> {
        let Some(pool) = self.writer_pool.as_mut() else { return Ok(()) };
        let mut outcomes = pool.finished();
        if wait {
            while let Some(outcome) = pool.wait_one() {
                outcomes.push(outcome);
            }
        }
        let mut first_failure = Ok(());
        for outcome in outcomes {
            let applied = self.apply_write(outcome);
            if first_failure.is_ok() {
                first_failure = applied;
            }
        }
        first_failure
    }

    /// Accounts for one file written in the background, or buffers its records again.
    fn apply_write(&mut self, (job, written): WriteOutcome) -> Result<(), IngestError> {
        self.buffered = self.buffered.saturating_sub(job.bytes);
        match written {
            Ok(file) => {
                self.record_written(file);
                Ok(())
            }
            Err(e) => {
                self.rebuffer(job);
                Err(e.into())
            }
        }
    }

    /// Puts a job's records back into its partition, to be written by a later flush.
    fn rebuffer(&mut self, job: WriteJob) {
        let index = partition_index(&mut self.partitions, &mut self.last_partition, &job.session_id, job.date);
        let partition = &mut self.partitions[index];
        partition.batches.extend(job.batches);
        partition.rows += job.rows;
        partition.bytes += job.bytes;
        self.buffered += job.bytes;
    }

    fn record_written(&mut self, file: WrittenFile) {
        tracing::debug!(path = %file.path.display(), rows = file.rows, bytes = file.bytes, "wrote parquet file");
        self.stats.records_stored += file.rows as u64;
        self.stats.files_written += 1;
        self.stats.bytes_written += file.bytes;
        self.written.push(file);
    }
}

/// What [`Ingestor::flush_partition`] does with a partition when every writing thread is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenWritersBusy {
    /// Write it on the calling thread: it must be out now (finishing, flushing, keeping within
    /// the memory budget).
    WriteInPlace,
    /// Leave it waiting in `ready`, to be handed over at a later commit: the calling thread goes
    /// on committing, which keeps the cores that prepare blocks busy.
    KeepBuffered,
}

/// Rows of a batch by partition: `(partition index, row numbers)`.
type Routes = Vec<(usize, Vec<u32>)>;

/// The partition of `(session, date)`, created if new. `last` remembers the previous answer, which
/// is nearly always the next one too.
fn partition_index(partitions: &mut Vec<Partition>, last: &mut Option<usize>, session: &str, date: String) -> usize {
    if let Some(i) = *last
        && partitions[i].session_id == session
        && partitions[i].date == date
    {
        return i;
    }
    let index = match partitions.iter().position(|p| p.session_id == session && p.date == date) {
        Some(i) => i,
        None => {
            partitions.push(Partition {
                session_id: session.to_owned(),
                date,
                builder: OperationBatchBuilder::new(),
                batches: Vec::new(),
                rows: 0,
                bytes: 0,
            });
            partitions.len() - 1
        }
    };
    *last = Some(index);
    index
}

struct Sink<'i, 's, 'p> {
    ingestor: &'i mut Ingestor,
    source: &'s str,
    progress: &'p mut dyn FnMut(usize),
}

impl EventSink for Sink<'_, '_, '_> {
    fn on_event(&mut self, location: Location, event: Event<'_>, raw: &[u8]) {
        if self.ingestor.failure.is_some() {
            return;
        }
        if let Err(e) = self.ingestor.record(self.source, location, event, raw) {
            self.ingestor.failure = Some(e);
        }
    }

    fn on_reject(&mut self, location: Location, reason: String, raw: &[u8]) {
        let rejection = Rejection { source: self.source.to_owned(), location: Some(location), reason };
        self.ingestor.reject(rejection, raw);
    }

    fn on_progress(&mut self, consumed: usize) {
        (self.progress)(consumed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prepare::prepare;

    fn event(id: &str, time: &str) -> String {
        format!(
            r#"{{"auditID":"{id}","stage":"ResponseComplete","verb":"get","requestReceivedTimestamp":"{time}","stageTimestamp":"{time}"}}"#
        )
    }

    /// An ingestor whose recording would live under a regular file (so every file written fails),
    /// and a batch of four events in two sessions (two hours apart), each full at once.
    fn failing_ingestor_and_batch(dir: &Path, write_in_background: bool) -> (Ingestor, PreparedBatch) {
        let file = dir.join("a-file");
        std::fs::write(&file, b"").expect("file");
        let config = IngestConfig { max_rows_per_file: 2, write_in_background, ..IngestConfig::default() };
        let ingestor = Ingestor::new(&file.join("data"), "t", config);
        let lines: Vec<String> = ["10:00:00", "10:00:01", "12:00:00", "12:00:01"]
            .iter()
            .enumerate()
            .map(|(i, t)| event(&format!("e{i}"), &format!("2024-05-01T{t}.000000Z")))
            .collect();
        let prepared = prepare("test", lines.join("\n").as_bytes(), &NormalizeConfig::default()).expect("prepare");
        (ingestor, prepared)
    }

    #[test]
    fn a_failed_write_keeps_every_row_of_the_batch_buffered_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ingestor, prepared) = failing_ingestor_and_batch(dir.path(), false);
        assert!(ingestor.commit(prepared, None).is_err(), "the write fails");
        assert_eq!(ingestor.stats().records_accepted, 4, "every row is counted");
        assert_eq!(ingestor.buffered_records(), 4, "and every row is still buffered for a later try");
    }

    #[test]
    fn a_write_that_fails_in_the_background_buffers_its_rows_again_and_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut ingestor, prepared) = failing_ingestor_and_batch(dir.path(), true);
        // The first partition is handed over; whether its failure shows in this commit or the
        // next flush depends on timing, but it shows, and nothing is lost.
        let committed = ingestor.commit(prepared, None);
        let flushed = ingestor.flush_all();
        assert!(committed.is_err() || flushed.is_err(), "the failure is reported");
        let error = committed.err().or(flushed.err()).map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("creating directory"), "{error}");
        assert_eq!(ingestor.stats().records_stored, 0);
        assert_eq!(ingestor.buffered_records(), 4, "every row is buffered again for a later try");
        assert!(ingestor.finish().is_err(), "and the last try in place fails too");
    }
}
