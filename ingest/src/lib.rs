//! # kubestep-ingest
//!
//! Everything between an audit event arriving (in a file or, later, an HTTP body) and it being part
//! of the recording on disk:
//!
//! - [`decode`]: bytes of any accepted shape -> audit events (never fails as a whole);
//! - [`normalize`]: an event -> an operation record, or the reason it cannot be one;
//! - [`actor`], [`session`]: who is behind a request, and which recording it belongs to;
//! - [`dedup`]: the same event twice is stored once;
//! - [`writer`]: sorted, zstd Parquet files under the hive layout of [`layout`], made visible
//!   atomically;
//! - [`rejected`]: what could not be recorded, with file, line and reason;
//! - [`prepare`]: decode + normalize of one input into an Arrow batch, on any thread;
//! - [`pipeline`]: the [`Ingestor`] that runs all of the above and commits prepared batches;
//! - [`import`]: reading files, gzip and standard input;
//! - [`compact`]: merging a session's small files into large ones, atomically for readers;
//! - [`wal`]: the write-ahead log that makes an acknowledged webhook batch durable;
//! - [`server`]: the webhook service (`kubestep serve`) over all of the above.

pub mod actor;
pub mod compact;
pub mod decode;
pub mod dedup;
pub mod import;
pub mod kinds;
pub mod layout;
pub mod normalize;
pub mod pipeline;
pub mod prepare;
pub mod redact;
pub mod rejected;
pub mod server;
pub mod session;
pub mod upload;
pub mod verify;
pub mod wal;
pub mod writer;

pub use pipeline::{IngestConfig, IngestError, IngestStats, Ingestor, StoredElsewhere, random_writer_id};
pub use prepare::{LinePreparer, PreparedBatch, prepare};
