//! Moving finished files from a local recording directory to a recording in object storage.
//!
//! The pipeline only ever writes into a directory. When the recording lives in a bucket, that
//! directory is a spool (`kubestep serve`) or a staging directory (`kubestep import`): every file
//! the writer finishes is uploaded under the same relative path with a create-only put, so a
//! reader of the bucket sees a whole file or none, and nothing there is ever overwritten. A file
//! already present with the same size counts as uploaded (a retry after a crash between the
//! upload and the local bookkeeping).
//!
//! The service keeps an uploaded file locally until the write-ahead log that holds its records is
//! gone, so that a restart replaying that log finds the records already stored (the de-duplicator
//! reads the local files) instead of storing them a second time; see [`Uploader::wal_trimmed`].

use std::path::{Path, PathBuf};

use kubestep_schemas::location::{RemoteRecording, store_error_line};
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::layout::Layout;

/// Why a file could not be uploaded; the file stays where it is and is tried again.
#[derive(Debug, thiserror::Error)]
#[error("uploading {path} to {target}: {reason}")]
pub struct UploadError {
    /// The local file.
    pub path: PathBuf,
    /// Where it was going.
    pub target: String,
    /// What failed.
    pub reason: String,
}

/// Uploads the files a local recording directory receives to a recording in object storage.
pub struct Uploader {
    local: Layout,
    remote: RemoteRecording,
    runtime: tokio::runtime::Handle,
    /// Written locally, not uploaded yet.
    waiting: Vec<PathBuf>,
    /// Uploaded since the last time the write-ahead log was trimmed.
    uploaded: Vec<PathBuf>,
    /// Uploaded before the last trim: deleted at the next one.
    retired: Vec<PathBuf>,
}

impl Uploader {
    /// An uploader from the recording directory `local` to `remote`. Blocking calls run on
    /// `runtime`; they must be made from threads that are not running asynchronous tasks.
    pub fn new(local: &Path, remote: RemoteRecording, runtime: tokio::runtime::Handle) -> Self {
        Self {
            local: Layout::new(local),
            remote,
            runtime,
            waiting: Vec::new(),
            uploaded: Vec::new(),
            retired: Vec::new(),
        }
    }

    /// Where files go.
    pub fn remote(&self) -> &RemoteRecording {
        &self.remote
    }

    /// Queues every finished Parquet file in the local directory (what a previous run left behind:
    /// written, maybe uploaded, not yet removed).
    pub fn adopt_local_files(&mut self) {
        let mut found = Vec::new();
        collect(&self.local.operations_dir(), &mut found);
        found.retain(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.ends_with(".parquet") && !name.starts_with('.')
        });
        found.sort();
        for path in found {
            if !self.waiting.contains(&path) {
                self.waiting.push(path);
            }
        }
    }

    /// Queues every file under the local directory, whatever it is (an import's Parquet files and
    /// its rejected-events log).
    pub fn adopt_everything(&mut self) {
        let mut found = Vec::new();
        collect(self.local.root(), &mut found);
        found.sort();
        self.waiting.extend(found);
    }

    /// Queues a file the writer just finished.
    pub fn add(&mut self, path: PathBuf) {
        self.waiting.push(path);
    }

    /// How many files wait for their upload.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Uploads the waiting files, oldest first. Stops at the first failure; what failed stays
    /// queued. Returns how many were uploaded.
    pub fn upload_waiting(&mut self) -> Result<usize, UploadError> {
        let mut done = 0;
        while let Some(path) = self.waiting.first().cloned() {
            if !path.exists() {
                // Removed by hand, or already uploaded and removed by an earlier run: nothing to
                // send, and it must not block the files behind it.
                tracing::warn!(path = %path.display(), "a file waiting for upload is gone; skipping it");
                self.waiting.remove(0);
                continue;
            }
            self.upload(&path)?;
            self.waiting.remove(0);
            self.uploaded.push(path);
            done += 1;
        }
        Ok(done)
    }

    /// The write-ahead log was trimmed: files uploaded before the previous trim hold only records
    /// of removed log segments, so their local copies go; those uploaded since wait one more trim
    /// (their last records may sit in the segment that was current when they were written).
    pub fn wal_trimmed(&mut self) {
        for path in std::mem::take(&mut self.retired) {
            remove_local(&path);
        }
        self.retired = std::mem::take(&mut self.uploaded);
    }

    /// The whole write-ahead log is gone (a clean shutdown, or an import's end): every uploaded
    /// file's local copy goes.
    pub fn wal_emptied(&mut self) {
        for path in std::mem::take(&mut self.retired).into_iter().chain(std::mem::take(&mut self.uploaded)) {
            remove_local(&path);
        }
    }

    fn upload(&self, path: &Path) -> Result<(), UploadError> {
        let relative = path.strip_prefix(self.local.root()).unwrap_or(path).to_string_lossy().replace('\\', "/");
        let target = self.remote.path_of(&relative);
        let failed = |reason: String| UploadError {
            path: path.to_owned(),
            target: format!("{}/{relative}", self.remote.url),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| failed(e.to_string()))?;
        let size = bytes.len() as u64;
        let options = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
        let store = self.remote.store.clone();
        let result = self.runtime.block_on(async move {
            match store.put_opts(&target, PutPayload::from(bytes), options).await {
                Err(object_store::Error::AlreadyExists { .. }) => match store.head(&target).await {
                    Ok(meta) if meta.size == size => Ok(()),
                    Ok(meta) => Err(format!("a different file of {} bytes is there already", meta.size)),
                    Err(e) => Err(store_error_line(&e)),
                },
                other => other.map(drop).map_err(|e| store_error_line(&e)),
            }
        });
        result.map_err(failed)
    }
}

fn remove_local(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "could not remove an uploaded file's local copy"),
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}
