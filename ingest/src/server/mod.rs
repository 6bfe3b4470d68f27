//! The ingest service behind `kubestep serve`: the API server's audit webhook backend.
//!
//! A request's life: the body is read (up to `max_body`), prepared (decoded and normalized into an
//! Arrow batch) on a blocking thread, appended to the write-ahead log with a group commit, and only
//! then acknowledged. The [`storage`] threads buffer the records and write Parquet files by age,
//! rows and bytes, deleting WAL segments once their records are in Parquet. At start-up the WAL is
//! replayed first, so every acknowledged event ends up stored exactly once.

pub mod auth;
pub mod connections;
pub mod http;
pub mod metrics;
pub mod registry;
pub mod sessions;
pub mod storage;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::layout::Layout;
use crate::normalize::NormalizeConfig;
use crate::pipeline::{IngestConfig, Ingestor, StoredElsewhere};
use crate::session::DEFAULT_IDLE_GAP_US;
use crate::upload::Uploader;
use crate::wal::{self, Wal};
use crate::writer::create_dir_durably;
use kubestep_schemas::location::RemoteRecording;
use metrics::Metrics;
use registry::SessionRegistry;
use sessions::ActiveSession;
use storage::{FlushPolicy, Storage};

/// Default `--dedup-window`: half a million events, so that between 0.5 and 1 million keys are
/// remembered (about 18 to 36 MB). The API server gives up on a batch about two minutes after its
/// first attempt; half a million events are more than two minutes up to 4 000 events/s. Busier
/// clusters should raise it (memory grows by about 36 bytes per event).
pub const DEFAULT_DEDUP_WINDOW: usize = 500_000;

/// Everything `kubestep serve` can be told.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The recording directory.
    pub data: PathBuf,
    /// Where to listen.
    pub listen: SocketAddr,
    /// How events become records.
    pub normalize: NormalizeConfig,
    /// Record into this named session from the start.
    pub session: Option<String>,
    /// Automatic sessions end after this long without events (microseconds).
    pub idle_gap_us: i64,
    /// When buffered records are written to Parquet.
    pub flush: FlushPolicy,
    /// Larger bodies get 413.
    pub max_body: usize,
    /// Memory that batches waiting for the WAL may take (a body counts twice: its bytes and its
    /// decoded records); beyond that, 503 with Retry-After.
    pub max_queue_bytes: usize,
    /// Listen on a non-loopback address without TLS and authentication.
    pub insecure: bool,
    /// Serve HTTPS with these files.
    pub tls: Option<auth::TlsFiles>,
    /// Require a bearer token from this file (one per line).
    pub token_file: Option<PathBuf>,
    /// De-duplicate against about this many of the most recent events (bounds memory).
    pub dedup_window: usize,
    /// Name of this writer in file names; random when `None`.
    pub writer_id: Option<String>,
    /// Timeouts and limits every connection is served under.
    pub connections: connections::ConnectionLimits,
    /// The recording in object storage that `data` is the spool of: every finished file is
    /// uploaded there, and removed locally once the WAL no longer holds its records.
    pub upload_to: Option<RemoteRecording>,
    /// What that recording already holds (its automatic sessions are continued).
    pub stored_elsewhere: Option<StoredElsewhere>,
}

impl ServeConfig {
    /// The defaults of `kubestep serve` over `data`.
    pub fn new(data: PathBuf) -> Self {
        Self {
            data,
            listen: SocketAddr::from(([127, 0, 0, 1], 9443)),
            normalize: NormalizeConfig::default(),
            session: None,
            idle_gap_us: DEFAULT_IDLE_GAP_US,
            flush: FlushPolicy { interval: Duration::from_secs(10), max_rows: 1_000_000, max_bytes: 16 << 20 },
            max_body: 32 << 20,
            max_queue_bytes: 64 << 20,
            insecure: false,
            tls: None,
            token_file: None,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            writer_id: None,
            connections: connections::ConnectionLimits::default(),
            upload_to: None,
            stored_elsewhere: None,
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is refused.
    #[error("{0}")]
    Config(String),
    /// Binding the listen address failed.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The recording directory, the WAL or the replay failed.
    #[error("{0}")]
    Storage(String),
}

/// A service that has recovered its WAL and is bound to its address, ready to run.
pub struct Server {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    credentials: Arc<auth::Credentials>,
    state: http::AppState,
    limits: connections::ConnectionLimits,
    ui: Option<axum::Router>,
}

/// What start-up recovery did, for the log and for tests.
#[derive(Debug, Default, Clone)]
pub struct RecoveryReport {
    /// WAL entries (accepted batches) replayed.
    pub batches: u64,
    /// Records they held that were not yet stored.
    pub records: u64,
    /// Records they held that were stored already.
    pub duplicates: u64,
    /// Temporary files of interrupted Parquet writes that were removed.
    pub removed_temp_files: Vec<PathBuf>,
    /// Torn or corrupt WAL tails that were cut off.
    pub repairs: Vec<String>,
}

impl Server {
    /// Recovers the recording at `config.data` (removes temporary files of interrupted writes,
    /// replays the WAL into Parquet) and binds the listen address.
    pub async fn bind(config: ServeConfig) -> Result<Self, ServeError> {
        let tokens = match &config.token_file {
            Some(path) => auth::read_tokens(path).map_err(|e| ServeError::Config(e.to_string()))?,
            None => Vec::new(),
        };
        let client_certs = config.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        let credentials = Arc::new(auth::Credentials { tokens, client_certs });
        let tls = match &config.tls {
            Some(files) => Some(
                auth::server_config(files, !credentials.tokens.is_empty())
                    .map_err(|e| ServeError::Config(e.to_string()))?,
            ),
            None => None,
        };
        let protected = tls.is_some() && credentials.required();
        if !config.listen.ip().is_loopback() && !protected && !config.insecure {
            return Err(ServeError::Config(format!(
                "refusing to listen on {} without TLS and authentication (--tls-cert/--tls-key with \
                 --client-ca or --token-file); listen on a loopback address, or pass --insecure if \
                 something else protects this port",
                config.listen
            )));
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServeError::Bind { addr: config.listen, source })?;
        let metrics = Arc::new(Metrics::default());
        let data = config.data.clone();
        let (storage, sessions, report) = {
            let config = config.clone();
            let metrics = metrics.clone();
            tokio::task::spawn_blocking(move || start_storage(&config, metrics))
                .await
                .map_err(|e| ServeError::Storage(e.to_string()))??
        };
        log_recovery(&report);
        if sessions.is_shared() {
            // Replicas share the named session through the bucket: `serve --session` claims it
            // there, otherwise this replica adopts whatever is active, then keeps following it.
            match &config.session {
                Some(name) => sessions.start(name).await.map_err(|e| ServeError::Config(e.to_string()))?,
                None => {
                    if let Err(e) = sessions.refresh().await {
                        // The registry is followed from here on; until it answers, the session
                        // this replica last knew stands.
                        tracing::warn!(error = %e, "cannot read the shared session registry yet");
                    }
                }
            }
            tokio::spawn(follow_registry(sessions.clone(), storage.clone()));
        }
        let queue_permits = (config.max_queue_bytes / 1024).clamp(1, Semaphore::MAX_PERMITS);
        let state = http::AppState {
            inner: Arc::new(http::Shared {
                normalize: config.normalize,
                storage,
                sessions,
                metrics,
                queue: Arc::new(Semaphore::new(queue_permits)),
                queue_permits: queue_permits as u32,
                max_body: config.max_body,
                body_timeout: config.connections.client_timeout,
                layout: Layout::new(data),
                shutting_down: AtomicBool::new(false),
            }),
        };
        Ok(Self { listener, tls, credentials, state, limits: config.connections, ui: None })
    }

    /// Whether the service speaks HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `ui` under `/ui`, behind the same authentication as the webhook. The pages come
    /// from the binary: this crate does not read recordings back (the query crate does).
    pub fn with_ui(mut self, ui: axum::Router) -> Self {
        self.ui = Some(ui);
        self
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        self.listener.local_addr().map_err(|e| ServeError::Storage(e.to_string()))
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests in flight finish,
    /// flushes every buffered record and removes the WAL.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), ServeError> {
        let state = self.state.clone();
        let metrics = state.inner.metrics.clone();
        let router = http::router(self.state, self.credentials, metrics.clone(), self.ui, self.tls.is_some());
        let limits = self.limits;
        let shutdown = async move {
            shutdown.await;
            tracing::info!("shutting down: finishing requests in flight, then flushing");
        };
        match self.tls {
            Some(config) => {
                let listener = auth::TlsListener::new(
                    self.listener,
                    config,
                    limits.client_timeout,
                    limits.max_connections,
                    metrics.clone(),
                )
                .map_err(|e| ServeError::Storage(format!("starting TLS: {e}")))?;
                connections::serve(listener, router, limits, metrics, shutdown).await;
            }
            None => connections::serve(auth::PlainListener(self.listener), router, limits, metrics, shutdown).await,
        }
        state.inner.shutting_down.store(true, std::sync::atomic::Ordering::Relaxed);
        state.inner.storage.shutdown().await.map_err(ServeError::Storage)?;
        tracing::info!("stopped; every accepted event is stored");
        Ok(())
    }
}

/// Recovery, then the storage threads. Runs on a blocking thread.
fn start_storage(
    config: &ServeConfig,
    metrics: Arc<Metrics>,
) -> Result<(Storage, Arc<ActiveSession>, RecoveryReport), ServeError> {
    let storage_err = |e: &dyn std::fmt::Display| ServeError::Storage(e.to_string());
    let layout = Layout::new(&config.data);
    create_dir_durably(layout.root()).map_err(|e| storage_err(&e))?;
    let mut report = RecoveryReport { removed_temp_files: remove_temp_files(&layout), ..RecoveryReport::default() };
    let mut sessions = ActiveSession::load(&layout.wal_dir(), config.session.clone()).map_err(|e| storage_err(&e))?;
    if let Some(remote) = &config.upload_to {
        sessions = sessions.with_registry(SessionRegistry::new(remote.clone()));
    }
    let sessions = Arc::new(sessions);
    let writer_id = config.writer_id.clone().unwrap_or_else(crate::random_writer_id);
    let ingest_config = IngestConfig {
        normalize: config.normalize.clone(),
        session: None,
        idle_gap_us: config.idle_gap_us,
        max_rows_per_file: config.flush.max_rows,
        max_bytes_per_file: config.flush.max_bytes,
        // Many sessions or days at once must not hold many files' worth of records.
        max_buffered_bytes: config.flush.max_bytes.saturating_mul(4),
        // The WAL is replayed against every stored key; the window applies from then on.
        dedup_window: None,
        // The WAL holds what a full disk keeps out of files; later flushes write it.
        retry_failed_writes: true,
        // The WAL is truncated after each file, so a file is written where it is flushed.
        write_in_background: false,
    };
    let mut ingestor = Ingestor::new(layout.root(), &writer_id, ingest_config);
    if let Some(stored) = &config.stored_elsewhere {
        ingestor = ingestor.with_stored_elsewhere(stored.clone());
    }
    // Files a previous run wrote but may not have uploaded are uploaded first (again, if they were:
    // the same file already there counts as uploaded); they stay until the WAL is trimmed.
    let mut uploader = config.upload_to.clone().map(|remote| {
        let mut uploader = Uploader::new(layout.root(), remote, tokio::runtime::Handle::current());
        uploader.adopt_local_files();
        uploader
    });
    let mut failure = None;
    let recovery = wal::recover(&layout.wal_dir(), |entry| {
        if failure.is_some() {
            return;
        }
        let prepared = match crate::prepare("write-ahead log", &entry.body, &config.normalize) {
            Ok(p) => p,
            Err(e) => {
                failure = Some(e.to_string());
                return;
            }
        };
        report.batches += 1;
        if let Err(e) = ingestor.commit(prepared, entry.session.as_deref()) {
            failure = Some(e.to_string());
        }
    })
    .map_err(|e| storage_err(&e))?;
    if let Some(e) = failure {
        return Err(ServeError::Storage(format!("replaying the write-ahead log: {e}; the log is kept")));
    }
    report.repairs = recovery.repairs;
    report.records = ingestor.stats().records_accepted;
    report.duplicates = ingestor.stats().duplicates;
    let mut replayed_through = recovery.segments.last().copied();
    let flushed = match replayed_through {
        Some(_) => ingestor.flush_all().map_err(|e| e.to_string()),
        None => Ok(()),
    };
    // Files a partly failed flush did write are queued too: they leave the WAL's care later.
    let written = ingestor.drain_written();
    if let Some(uploader) = &mut uploader {
        written.into_iter().for_each(|file| uploader.add(file.path));
    }
    let uploaded = match (&mut uploader, flushed) {
        (Some(uploader), Ok(())) => uploader.upload_waiting().map(drop).map_err(|e| e.to_string()),
        (_, flushed) => flushed,
    };
    match (replayed_through, uploaded) {
        (Some(last), Ok(())) => {
            wal::remove_segments_through(&layout.wal_dir(), last).map_err(|e| storage_err(&e))?;
            replayed_through = None;
            if let Some(uploader) = &mut uploader {
                uploader.wal_emptied();
            }
        }
        (None, Ok(())) => {
            if let Some(uploader) = &mut uploader {
                uploader.wal_emptied();
            }
        }
        (_, Err(e)) => tracing::error!(error = %e, "could not store the replayed records yet; keeping the WAL"),
    }
    ingestor.set_dedup_window(Some(config.dedup_window));
    let wal = Wal::create(&layout.wal_dir()).map_err(|e| storage_err(&e))?;
    let storage = Storage::start(wal, ingestor, replayed_through, uploader, config.flush, metrics)
        .map_err(|e| storage_err(&e))?;
    Ok((storage, sessions, report))
}

/// Follows the shared session registry: every [`registry::FOLLOW_INTERVAL`], adopts the active
/// session it names; when another replica stopped the session this one was recording, writes
/// (and uploads) that session's buffered records, so a stopped session is whole in the bucket
/// within about a second on every replica.
async fn follow_registry(sessions: Arc<ActiveSession>, storage: Storage) {
    let mut failing = false;
    loop {
        tokio::time::sleep(registry::FOLLOW_INTERVAL).await;
        match sessions.refresh().await {
            Ok(Some(previous)) => {
                tracing::info!(session = ?sessions.current(), "the shared session registry changed");
                if let Some(previous) = previous
                    && let Err(e) = storage.flush_session(previous.to_string()).await
                {
                    tracing::warn!(session = %previous, error = %e, "could not write a stopped session's records yet");
                }
                failing = false;
            }
            Ok(None) => failing = false,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot read the shared session registry; keeping the last session it named");
                }
                failing = true;
            }
        }
    }
}

/// Removes the hidden temporary files (`.<name>.tmp`) that an interrupted Parquet write leaves.
fn remove_temp_files(layout: &Layout) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    let Ok(sessions) = std::fs::read_dir(layout.operations_dir()) else { return removed };
    for session in sessions.flatten() {
        let Ok(dates) = std::fs::read_dir(session.path()) else { continue };
        for date in dates.flatten() {
            let Ok(files) = std::fs::read_dir(date.path()) else { continue };
            for file in files.flatten() {
                let name = file.file_name();
                let name = name.to_string_lossy();
                if name.starts_with('.') && name.ends_with(".tmp") {
                    match std::fs::remove_file(file.path()) {
                        Ok(()) => removed.push(file.path()),
                        Err(e) => {
                            tracing::warn!(path = %file.path().display(), error = %e, "could not remove a temporary file")
                        }
                    }
                }
            }
        }
    }
    removed
}

fn log_recovery(report: &RecoveryReport) {
    for path in &report.removed_temp_files {
        tracing::warn!(path = %path.display(), "removed the temporary file of an interrupted Parquet write");
    }
    for repair in &report.repairs {
        tracing::warn!("write-ahead log repaired: {repair}");
    }
    if report.batches > 0 {
        tracing::info!(
            batches = report.batches,
            records = report.records,
            already_stored = report.duplicates,
            "replayed the write-ahead log"
        );
    }
}
