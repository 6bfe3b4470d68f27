//! Importing into a recording in object storage.
//!
//! The ingest pipeline writes files into a directory; for a recording at `s3://...` (or `gs://`,
//! `az://`) that directory is a private staging directory, and each file is uploaded once it is
//! complete, under the same relative path, with a create-only put (a file name is never written
//! twice: names carry the writer's random id; the ingest crate's `Uploader` does it, as it does
//! for `kubestep serve`). Before the import, the stored events' keys and
//! automatic sessions are read from the recording through the query engine, so events already in
//! the bucket count as duplicates and sessions continue across imports exactly as they do in a
//! directory. If an upload fails, the staging directory is kept and named, so nothing accepted is
//! lost.

use std::path::{Path, PathBuf};

use anyhow::Context;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Int64Type;
use futures::StreamExt;
use kubestep_ingest::StoredElsewhere;
use kubestep_ingest::dedup::batch_keys;
use kubestep_ingest::upload::Uploader;
use kubestep_query::QueryError;
use kubestep_schemas::location::RemoteRecording;

/// Reads what the recording at `url` already holds: the automatic sessions' spans and, with
/// `keys`, every stored event's de-duplication key. An empty or new prefix holds nothing.
pub async fn stored_state(url: &Path, keys: bool) -> anyhow::Result<StoredElsewhere> {
    let ctx = match kubestep_query::open_recording(url).await {
        Ok(ctx) => ctx,
        Err(QueryError::NoRecording { reason, .. }) if reason.contains("holds no operations") => {
            return Ok(StoredElsewhere::default());
        }
        Err(e) => return Err(e.into()),
    };
    let mut stored = StoredElsewhere::default();
    if keys {
        let keys = "SELECT audit_id, stage, received_at, verb, request_uri FROM operations";
        let mut stream = ctx.sql(keys).await?.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            batch_keys(&batch, |key| stored.keys.push(key)).map_err(|e| anyhow::anyhow!("reading stored keys: {e}"))?;
        }
    }
    let sessions = "SELECT session_id, CAST(min(completed_at) AS BIGINT), CAST(max(completed_at) AS BIGINT) \
                    FROM operations WHERE starts_with(session_id, 'auto-') GROUP BY session_id";
    for batch in ctx.sql(sessions).await?.collect().await? {
        let names = batch.column(0).as_string_opt::<i32>().context("session_id is not text")?;
        let (first, latest) =
            (batch.column(1).as_primitive::<Int64Type>(), batch.column(2).as_primitive::<Int64Type>());
        for row in 0..batch.num_rows() {
            if !first.is_null(row) && !latest.is_null(row) {
                stored.auto_sessions.push((names.value(row).to_owned(), first.value(row), latest.value(row)));
            }
        }
    }
    Ok(stored)
}

/// A private directory the import writes into before its files are uploaded; removed by
/// [`Staging::finish`] once everything is uploaded, kept (and named in the error) otherwise.
pub struct Staging {
    dir: PathBuf,
}

impl Staging {
    /// A new, empty staging directory under the system's temporary directory (`TMPDIR`).
    pub fn create(writer_id: &str) -> anyhow::Result<Staging> {
        let dir = std::env::temp_dir().join(format!("kubestep-import-{writer_id}"));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating the staging directory {}", dir.display()))?;
        Ok(Staging { dir })
    }

    /// Where the ingestor writes.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Uploads every file the import wrote (Parquet files and the rejected-events log) to the
    /// same relative paths under `remote`, then removes the staging directory. Returns how many
    /// files were uploaded.
    pub fn finish(self, remote: &RemoteRecording) -> anyhow::Result<usize> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the upload runtime")?;
        let mut uploader = Uploader::new(&self.dir, remote.clone(), runtime.handle().clone());
        uploader.adopt_everything();
        let uploaded = uploader.upload_waiting().map_err(|e| {
            anyhow::Error::new(e).context(format!(
                "uploading to {} failed; every file not yet uploaded is kept in {}",
                remote.url,
                self.dir.display()
            ))
        })?;
        uploader.wal_emptied();
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("removing the staging directory {}", self.dir.display()))?;
        Ok(uploaded)
    }
}
