//! The durable path of the service: two threads joined by a bounded channel.
//!
//! ```text
//! handlers --append--> [WAL thread]  group commit: write every waiting batch, one fsync,
//!                           |          then forward each batch and acknowledge it
//!                           v
//!                      [writer thread] commit batches to the Ingestor (dedup, sessions),
//!                                      flush to Parquet by age / rows / bytes, then delete
//!                                      the WAL segments the flush made redundant
//! ```
//!
//! Control messages (flush a session, shut down) travel the same path, so they are ordered after
//! every batch acknowledged before them. A WAL segment is deleted only after a flush that covered
//! every entry in it succeeded; if anything goes wrong in between, the segments stay and the next
//! start replays them (de-duplication makes that exactly-once).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::metrics::Metrics;
use crate::pipeline::Ingestor;
use crate::prepare::PreparedBatch;
use crate::upload::Uploader;
use crate::wal::{self, Wal, WalError};

/// A segment is sealed once it holds this many bytes, even before the flush interval.
const SEGMENT_BYTES: u64 = 256 << 20;
/// A group commit takes at most this many body bytes; the rest wait for the next fsync.
const MAX_GROUP_BYTES: usize = 16 << 20;
/// After a failed flush, the next try waits this long.
const FLUSH_RETRY: Duration = Duration::from_secs(1);

/// Why a batch was not made durable.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The disk or quota is full: retry later.
    #[error("storage is full: {0}")]
    Full(String),
    /// Another I/O failure.
    #[error("the write-ahead log failed: {0}")]
    Io(String),
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// More batches are waiting for the WAL than it accepts.
    #[error("too many batches are waiting for the write-ahead log")]
    Busy,
}

/// When buffered records are written out.
#[derive(Debug, Clone, Copy)]
pub struct FlushPolicy {
    /// At the latest this long after the previous flush.
    pub interval: Duration,
    /// As soon as this many records are buffered.
    pub max_rows: usize,
    /// As soon as the buffered records take about this many bytes.
    pub max_bytes: usize,
}

enum WalRequest {
    Append {
        session: Option<Arc<str>>,
        body: axum::body::Bytes,
        prepared: PreparedBatch,
        budget: Option<OwnedSemaphorePermit>,
        reply: Reply<()>,
    },
    Forward(WriterMessage),
}

enum WriterMessage {
    /// A durable batch, with its share of the queue budget: released once the batch is buffered,
    /// so that the budget bounds the memory of the whole path and the WAL thread never waits for
    /// the writer.
    Batch {
        session: Option<Arc<str>>,
        prepared: PreparedBatch,
        budget: Option<OwnedSemaphorePermit>,
    },
    Sealed(u64),
    FlushSession {
        name: String,
        reply: Reply<()>,
    },
    Shutdown {
        last_segment: u64,
        reply: Reply<()>,
    },
}

type Reply<T> = oneshot::Sender<Result<T, String>>;

/// The handle request handlers use; cheap to clone.
#[derive(Clone)]
pub struct Storage {
    to_wal: SyncSender<WalRequest>,
    /// Set while flushing fails for lack of space: new batches get 503 until a flush succeeds.
    storage_full: Arc<AtomicBool>,
    /// When a WAL append last failed for lack of space (milliseconds since `started`, plus one;
    /// zero when the last append succeeded).
    wal_full_at: Arc<AtomicU64>,
    started: Instant,
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// For this long after a WAL append failed for lack of space, the service says it is not ready.
const WAL_FULL_NOT_READY: Duration = Duration::from_secs(10);

impl Storage {
    /// Starts the WAL and writer threads. `ingestor` already holds whatever recovery replayed, and
    /// `replayed_through` is the last WAL segment whose entries it holds.
    pub fn start(
        wal: Wal,
        ingestor: Ingestor,
        replayed_through: Option<u64>,
        uploader: Option<Uploader>,
        policy: FlushPolicy,
        metrics: Arc<Metrics>,
    ) -> Result<Self, WalError> {
        let (to_wal, wal_rx) = mpsc::sync_channel::<WalRequest>(1024);
        let (to_writer, writer_rx) = mpsc::channel::<WriterMessage>();
        let storage_full = Arc::new(AtomicBool::new(false));
        let wal_dir = wal.dir().to_owned();
        let wal_thread = {
            let metrics = metrics.clone();
            std::thread::Builder::new()
                .name("kubestep-wal".into())
                .spawn(move || wal_loop(wal, wal_rx, to_writer, policy.interval, &metrics))
                .map_err(|source| WalError::Io {
                    action: "starting the WAL thread for",
                    path: wal_dir.clone(),
                    source,
                })?
        };
        let writer_thread = {
            let writer = WriterLoop {
                ingestor,
                wal_dir: wal_dir.clone(),
                sealed: replayed_through,
                uploader,
                pinned: false,
                policy,
                metrics,
                storage_full: storage_full.clone(),
                last_flush: Instant::now(),
                trimmed: false,
                failing_since: None,
            };
            std::thread::Builder::new()
                .name("kubestep-writer".into())
                .spawn(move || writer.run(writer_rx))
                .map_err(|source| WalError::Io { action: "starting the writer thread for", path: wal_dir, source })?
        };
        Ok(Self {
            to_wal,
            storage_full,
            wal_full_at: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
            threads: Arc::new(Mutex::new(vec![wal_thread, writer_thread])),
        })
    }

    /// Whether new batches should be refused because storage is full.
    pub fn is_full(&self) -> bool {
        self.storage_full.load(Relaxed)
    }

    /// Whether storage was found full recently: flushes are failing, or a WAL append failed for
    /// lack of space in the last few seconds (batches are still tried, so that the service notices
    /// by itself when space frees). For the readiness probe.
    pub fn was_recently_full(&self) -> bool {
        let at = self.wal_full_at.load(Relaxed);
        let recent = at != 0
            && self.started.elapsed().as_millis().saturating_sub(u128::from(at - 1)) < WAL_FULL_NOT_READY.as_millis();
        self.is_full() || recent
    }

    /// Makes a prepared batch durable and hands it to the writer. Returns once it is in the WAL.
    ///
    /// `budget` is the batch's share of the queue budget; it is held until the writer has buffered
    /// the batch, after the acknowledgement.
    pub async fn append(
        &self,
        session: Option<Arc<str>>,
        body: axum::body::Bytes,
        prepared: PreparedBatch,
        budget: Option<OwnedSemaphorePermit>,
    ) -> Result<(), AppendError> {
        let (reply, done) = oneshot::channel();
        let request = WalRequest::Append { session, body, prepared, budget, reply };
        self.to_wal.try_send(request).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => AppendError::Busy,
            mpsc::TrySendError::Disconnected(_) => AppendError::ShuttingDown,
        })?;
        match done.await {
            Ok(Ok(())) => {
                self.wal_full_at.store(0, Relaxed);
                Ok(())
            }
            Ok(Err(e)) if e.starts_with(FULL_PREFIX) => {
                let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
                self.wal_full_at.store(now + 1, Relaxed);
                Err(AppendError::Full(e[FULL_PREFIX.len()..].to_owned()))
            }
            Ok(Err(e)) => Err(AppendError::Io(e)),
            Err(_) => Err(AppendError::ShuttingDown),
        }
    }

    /// Writes every buffered record of `session` to Parquet, after every batch acknowledged so far.
    pub async fn flush_session(&self, name: String) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        self.send(WalRequest::Forward(WriterMessage::FlushSession { name, reply })).await.map_err(|e| e.to_string())?;
        done.await.map_err(|_| AppendError::ShuttingDown.to_string())?
    }

    /// Flushes everything, deletes the WAL if that succeeded, and stops both threads.
    pub async fn shutdown(&self) -> Result<(), String> {
        let (reply, done) = oneshot::channel();
        // The WAL thread fills in the last segment it wrote.
        let message = WriterMessage::Shutdown { last_segment: 0, reply };
        self.send(WalRequest::Forward(message)).await.map_err(|e| e.to_string())?;
        let result = done.await.map_err(|_| "the writer stopped before flushing".to_owned())?;
        let threads = std::mem::take(&mut *self.threads.lock().map_err(|_| "a storage thread panicked".to_owned())?);
        tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        result
    }

    /// Sends a control message, waiting for room in the queue.
    async fn send(&self, request: WalRequest) -> Result<(), AppendError> {
        let sender = self.to_wal.clone();
        tokio::task::spawn_blocking(move || sender.send(request).is_ok())
            .await
            .ok()
            .filter(|&sent| sent)
            .map(|_| ())
            .ok_or(AppendError::ShuttingDown)
    }
}

const FULL_PREFIX: &str = "full: ";

fn wal_loop(
    mut wal: Wal,
    requests: Receiver<WalRequest>,
    to_writer: Sender<WriterMessage>,
    interval: Duration,
    metrics: &Metrics,
) {
    let mut seal_at = Instant::now() + interval;
    loop {
        let first = match requests.recv_timeout(seal_at.saturating_duration_since(Instant::now())) {
            Ok(request) => request,
            Err(RecvTimeoutError::Timeout) => {
                seal(&mut wal, &to_writer);
                seal_at = Instant::now() + interval;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut group = vec![first];
        let mut bytes = 0;
        while bytes < MAX_GROUP_BYTES {
            match requests.try_recv() {
                Ok(request) => {
                    if let WalRequest::Append { body, .. } = &request {
                        bytes += body.len();
                    }
                    group.push(request);
                }
                Err(_) => break,
            }
        }
        let appends = group.iter().filter_map(|r| match r {
            WalRequest::Append { session, body, .. } => Some((session.as_deref(), &body[..])),
            WalRequest::Forward(_) => None,
        });
        let count = appends.clone().count();
        let started = Instant::now();
        let result = if count > 0 { wal.append_group(appends) } else { Ok(()) };
        if count > 0 && result.is_ok() {
            metrics.wal_fsync.observe(started.elapsed());
            metrics.wal_group_entries.fetch_add(count as u64, Relaxed);
        }
        let failure = result.err().map(|e| {
            tracing::error!(error = %e, batches = count, "WAL append failed; the batches were refused");
            if e.is_storage_full() { format!("{FULL_PREFIX}{e}") } else { e.to_string() }
        });
        let mut stop = false;
        for request in group {
            match request {
                // Nothing after a shutdown is forwarded: the writer has stopped reading.
                WalRequest::Append { reply, .. } if stop => {
                    let _ = reply.send(Err(AppendError::ShuttingDown.to_string()));
                }
                WalRequest::Forward(_) if stop => {}
                WalRequest::Append { session, prepared, budget, reply, .. } => match &failure {
                    Some(e) => {
                        let _ = reply.send(Err(e.clone()));
                    }
                    None => {
                        if to_writer.send(WriterMessage::Batch { session, prepared, budget }).is_err() {
                            let _ = reply.send(Err("the writer has stopped".into()));
                            continue;
                        }
                        let _ = reply.send(Ok(()));
                    }
                },
                WalRequest::Forward(WriterMessage::Shutdown { reply, .. }) => {
                    let last_segment = wal.current_segment();
                    let _ = to_writer.send(WriterMessage::Shutdown { last_segment, reply });
                    stop = true;
                }
                WalRequest::Forward(message) => {
                    let _ = to_writer.send(message);
                }
            }
        }
        if stop {
            return;
        }
        if wal.current_len() >= SEGMENT_BYTES || Instant::now() >= seal_at {
            seal(&mut wal, &to_writer);
            seal_at = Instant::now() + interval;
        }
    }
}

/// Seals the current segment if it holds anything, and tells the writer.
fn seal(wal: &mut Wal, to_writer: &Sender<WriterMessage>) {
    if wal.entries_in_segment() == 0 {
        return;
    }
    match wal.rotate() {
        Ok(sealed) => {
            let _ = to_writer.send(WriterMessage::Sealed(sealed));
        }
        // Appends carry on into the current segment; it is sealed at the next chance.
        Err(e) => tracing::warn!(error = %e, "could not start a new WAL segment"),
    }
}

struct WriterLoop {
    ingestor: Ingestor,
    wal_dir: PathBuf,
    /// The newest sealed segment whose entries have all been committed.
    sealed: Option<u64>,
    /// For a recording in object storage: uploads each written file before the WAL segments that
    /// hold its records may go.
    uploader: Option<Uploader>,
    /// Set when a committed batch may not be fully buffered (a commit failed): from then on no WAL
    /// segment is deleted, and the next start replays them.
    pinned: bool,
    policy: FlushPolicy,
    metrics: Arc<Metrics>,
    storage_full: Arc<AtomicBool>,
    last_flush: Instant,
    failing_since: Option<Instant>,
    /// Whether the last flush removed the WAL segments it was asked to (what lets a shutdown drop
    /// the uploaded files' local copies).
    trimmed: bool,
}

impl WriterLoop {
    fn run(mut self, messages: Receiver<WriterMessage>) {
        loop {
            let wait = match self.failing_since {
                Some(_) => FLUSH_RETRY,
                None => self.policy.interval.saturating_sub(self.last_flush.elapsed()),
            };
            match messages.recv_timeout(wait) {
                Ok(WriterMessage::Batch { session, prepared, budget }) => {
                    // The batch's memory is the Ingestor's from here on (bounded by the flush size).
                    let _budget = budget;
                    if let Err(e) = self.ingestor.commit(prepared, session.as_deref()) {
                        tracing::error!(error = %e, "could not buffer a batch; its WAL entry is kept for the next start");
                        self.pinned = true;
                    }
                    self.publish();
                    let buffered_bytes = self.ingestor.buffered_bytes();
                    if self.ingestor.buffered_records() >= self.policy.max_rows
                        || buffered_bytes >= self.policy.max_bytes
                    {
                        self.flush_all();
                    }
                }
                Ok(WriterMessage::Sealed(id)) => {
                    self.sealed = Some(id);
                    self.flush_all();
                }
                Ok(WriterMessage::FlushSession { name, reply }) => {
                    let started = Instant::now();
                    let result = self.ingestor.flush_session(&name).map_err(|e| e.to_string());
                    // A stopped session is queryable at once, in the bucket too.
                    self.log_written();
                    let result = result.and_then(|()| self.upload().map_err(|(_, e)| e));
                    self.metrics.flush.observe(started.elapsed());
                    self.publish();
                    let _ = reply.send(result);
                }
                Ok(WriterMessage::Shutdown { last_segment, reply }) => {
                    self.sealed = Some(last_segment);
                    let result = match self.flush_all() {
                        true => {
                            // Every segment is gone: every record is in an uploaded file. (When the
                            // WAL is kept, the local copies stay for its replay to find.)
                            if self.trimmed
                                && let Some(uploader) = &mut self.uploader
                            {
                                uploader.wal_emptied();
                            }
                            Ok(())
                        }
                        false => Err("could not write every buffered record; the WAL is kept and will be \
                                      replayed at the next start"
                            .to_owned()),
                    };
                    let _ = reply.send(result);
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    self.flush_all();
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.flush_all();
                    return;
                }
            }
        }
    }

    /// Writes everything buffered; on success deletes the sealed WAL segments. Returns success.
    fn flush_all(&mut self) -> bool {
        let started = Instant::now();
        let had_records = self.ingestor.buffered_records() > 0;
        let result = self.ingestor.flush_all();
        if had_records {
            self.metrics.flush.observe(started.elapsed());
        }
        self.last_flush = Instant::now();
        self.publish();
        self.log_written();
        let result = result.map_err(|e| (e.is_storage_full(), e.to_string())).and_then(|()| self.upload());
        match result {
            Ok(()) => {
                if self.failing_since.take().is_some() {
                    tracing::info!("flushing works again; accepting batches");
                }
                self.storage_full.store(false, Relaxed);
                self.trimmed = false;
                if let Some(last) = self.sealed.take().filter(|_| !self.pinned)
                    && remove_segments(&self.wal_dir, last)
                {
                    self.trimmed = true;
                    if let Some(uploader) = &mut self.uploader {
                        uploader.wal_trimmed();
                    }
                }
                true
            }
            Err((full, e)) => {
                self.metrics.flush_failures.fetch_add(1, Relaxed);
                if self.failing_since.is_none() {
                    tracing::error!(error = %e, storage_full = full, "flush failed; records stay buffered and in the WAL");
                }
                self.failing_since.get_or_insert_with(Instant::now);
                self.storage_full.store(full, Relaxed);
                false
            }
        }
    }

    /// Copies the ingestor's counters into the exported metrics.
    fn publish(&self) {
        let stats = self.ingestor.stats();
        let m = &self.metrics;
        m.events_stored.store(stats.records_stored, Relaxed);
        m.events_rejected.store(stats.rejected, Relaxed);
        m.events_deduplicated.store(stats.duplicates, Relaxed);
        m.files_written.store(stats.files_written, Relaxed);
        m.dropped_request_received.store(stats.dropped_by_stage.get("RequestReceived").copied().unwrap_or(0), Relaxed);
        m.dropped_response_started.store(stats.dropped_by_stage.get("ResponseStarted").copied().unwrap_or(0), Relaxed);
        m.buffered_records.store(self.ingestor.buffered_records() as u64, Relaxed);
    }

    /// Logs the files the last flush made visible (and queues them for upload).
    fn log_written(&mut self) {
        for file in self.ingestor.drain_written() {
            tracing::debug!(path = %file.path.display(), rows = file.rows, "stored");
            if let Some(uploader) = &mut self.uploader {
                uploader.add(file.path);
            }
        }
    }

    /// Uploads the files waiting for it, if the recording is in object storage.
    fn upload(&mut self) -> Result<(), (bool, String)> {
        let Some(uploader) = &mut self.uploader else { return Ok(()) };
        let started = Instant::now();
        let uploaded = uploader.upload_waiting().map_err(|e| (false, e.to_string()))?;
        if uploaded > 0 {
            tracing::debug!(files = uploaded, elapsed = ?started.elapsed(), url = %uploader.remote().url, "uploaded");
        }
        Ok(())
    }
}

/// Removes the WAL segments through `last`; says whether that worked.
fn remove_segments(dir: &Path, last: u64) -> bool {
    match wal::remove_segments_through(dir, last) {
        Ok(n) => {
            tracing::debug!(segments = n, through = last, "removed WAL segments now in Parquet");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "could not remove WAL segments; they will be replayed (and skipped as duplicates) at the next start");
            false
        }
    }
}
