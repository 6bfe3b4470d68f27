//! Compaction: merging the many small files a long-running service writes (one per flush) into
//! few large ones, without a reader ever seeing both the small files and their merge, or neither.
//!
//! What is merged is decided the same way wherever the recording lives: in each partition, the
//! files with fewer rows than the target are taken in name order and grouped greedily, each group
//! of two or more becoming one sorted file (an event stored twice is kept once). How the new set
//! replaces the old one differs:
//!
//! - [`directory`]: the partition directory is swapped whole with one `renameat2` exchange;
//! - [`bucket`]: object storage has no rename, so every compaction of a partition is announced in
//!   the recording's compaction journal (`kubestep_schemas::compaction`) before its first output
//!   appears and marked done after its last input is gone; the query commands read again when a
//!   compaction overlapped their listing.

pub mod bucket;
pub mod directory;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::reader::ChunkReader;
use kubestep_schemas::location::RecordingLocation;

use crate::writer::WriteError;

/// Files with fewer rows than this are merged (`--target-rows`): a million operations make a file
/// of a few hundred MB, large enough for any scan and small enough to sort in memory.
pub const DEFAULT_TARGET_ROWS: usize = 1_000_000;

/// Why compaction stopped. Partitions compacted before the failure stay compacted; the one being
/// compacted is untouched unless the swap happened (a directory), or is finished or rolled back by
/// the next run (a bucket).
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// A filesystem operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An object-store operation failed.
    #[error("{action} {url}: {reason}")]
    Store {
        /// What was being done.
        action: &'static str,
        /// On which object or prefix.
        url: String,
        /// The store's answer, on one line.
        reason: String,
    },
    /// A file could not be read.
    #[error("reading {path}: {reason}")]
    Read {
        /// The file (its URL for a file in object storage).
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Writing the merged file failed.
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Another compaction holds the lock.
    #[error("another `kubestep compact` is running on {0}")]
    Busy(PathBuf),
    /// Another compaction holds the lock of a recording in object storage, or one was interrupted.
    #[error(
        "another `kubestep compact` holds {lock} (taken {since}); if none is running, one was interrupted: \
         delete that object and run `kubestep compact` again"
    )]
    BusyBucket {
        /// The lock object's URL.
        lock: String,
        /// What the lock says about when it was taken.
        since: String,
    },
    /// A journal entry left by an interrupted compaction cannot be read, so it cannot be finished.
    #[error("the compaction journal {url} cannot be read ({reason}); look at it, then delete it by hand")]
    Journal {
        /// The journal object's URL.
        url: String,
        /// Why it could not be used.
        reason: String,
    },
    /// The recording location is not usable.
    #[error("{0}")]
    Location(String),
    /// There is no recording there.
    #[error("{0} is not a KubeStep recording (no operations/ to compact)")]
    NotARecording(String),
    /// The session does not exist.
    #[error("no session {session:?} in {root}")]
    NoSession {
        /// The session asked for.
        session: String,
        /// The recording.
        root: PathBuf,
    },
}

/// What compacting one partition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionCompaction {
    /// The session.
    pub session: String,
    /// The date partition.
    pub date: String,
    /// Files merged away.
    pub files_merged: usize,
    /// Files written in their place.
    pub files_written: usize,
    /// Rows in the merged files.
    pub rows: usize,
}

/// Compacts every partition of `session` (or of every session) in the recording at `root`: a
/// directory, or an object-store URL.
pub fn compact(
    root: &Path,
    session: Option<&str>,
    target_rows: usize,
) -> Result<Vec<PartitionCompaction>, CompactError> {
    match RecordingLocation::parse(root).map_err(|e| CompactError::Location(e.to_string()))? {
        RecordingLocation::Local(root) => {
            if !root.join("operations").is_dir() {
                return Err(CompactError::NotARecording(root.display().to_string()));
            }
            directory::compact_directory(&root, session, target_rows)
        }
        RecordingLocation::Remote(remote) => bucket::compact_bucket(&remote, session, target_rows),
    }
}

/// Groups the small files of a partition (in name order, with their row counts) into merges of at
/// most `target_rows` rows; groups of one file are dropped (nothing to merge).
fn plan_groups<F>(small: Vec<(F, usize)>, target_rows: usize) -> Vec<Vec<(F, usize)>> {
    let mut groups: Vec<Vec<(F, usize)>> = Vec::new();
    let mut rows_in_group = 0;
    for (file, rows) in small {
        match groups.last_mut() {
            Some(group) if rows_in_group + rows <= target_rows => group.push((file, rows)),
            _ => {
                groups.push(vec![(file, rows)]);
                rows_in_group = 0;
            }
        }
        rows_in_group += rows;
    }
    groups.retain(|g| g.len() > 1);
    groups
}

/// The rows of one group of files, each event once: an event stored twice (by a bug, or by a copy
/// made by hand) is merged once.
#[derive(Default)]
struct GroupMerge {
    seen: HashSet<u128>,
    batches: Vec<RecordBatch>,
}

impl GroupMerge {
    /// Adds the batches of the file `shown`.
    fn add(&mut self, shown: &str, batches: Vec<RecordBatch>) -> Result<(), CompactError> {
        let err = |reason: String| CompactError::Read { path: PathBuf::from(shown), reason };
        for batch in batches {
            let mut keep = Vec::with_capacity(batch.num_rows());
            crate::dedup::batch_keys(&batch, |key| keep.push(self.seen.insert(key))).map_err(err)?;
            let batch = filter_record_batch(&batch, &BooleanArray::from(keep)).map_err(|e| err(e.to_string()))?;
            self.batches.push(batch);
        }
        Ok(())
    }
}

/// Every row of a Parquet file, read from a local file or from fetched bytes.
fn read_batches<R: ChunkReader + 'static>(shown: &str, reader: R) -> Result<Vec<RecordBatch>, CompactError> {
    let err = |reason: String| CompactError::Read { path: PathBuf::from(shown), reason };
    let reader = ParquetRecordBatchReaderBuilder::try_new(reader)
        .and_then(|b| b.with_batch_size(8192).build())
        .map_err(|e| err(e.to_string()))?;
    reader.map(|b| b.map_err(|e| err(e.to_string()))).collect()
}

#[cfg(test)]
mod tests {
    use super::plan_groups;

    #[test]
    fn groups_fill_up_to_the_target_and_single_files_stay() {
        let files = vec![("a", 40), ("b", 50), ("c", 30), ("d", 90), ("e", 5)];
        let groups: Vec<Vec<&str>> =
            plan_groups(files, 100).into_iter().map(|g| g.into_iter().map(|(f, _)| f).collect()).collect();
        // a+b fit (90); c does not (120), and d does not fit after c (120), so c is alone and
        // stays as it is; d+e fit (95).
        assert_eq!(groups, vec![vec!["a", "b"], vec!["d", "e"]]);
    }
}
