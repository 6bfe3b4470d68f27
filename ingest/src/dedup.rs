//! De-duplication: the same event delivered twice (a retried webhook batch, a re-imported file) is
//! stored once.
//!
//! The key is `auditID + stage + requestReceivedTimestamp + verb + requestURI`: `auditID` alone is not
//! unique, because clients can choose it. Keys are kept as 128-bit hashes, so ten million events cost
//! 160 MB of memory at most, and an accidental collision would need about 2^64 events. The sets
//! hash those keys with `foldhash` (seeded per process) rather than SipHash: on `import`, SipHash
//! alone was 3% of the CPU time.

use std::collections::HashSet as StdHashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use kubestep_schemas::OperationRecord;
use kubestep_schemas::schema::columns;
use xxhash_rust::xxh3::Xxh3;

use crate::layout::Layout;

/// A set of keys, hashed with a per-process seed.
type HashSet<T> = StdHashSet<T, foldhash::fast::RandomState>;

/// The identity of an event for de-duplication.
pub fn dedup_key(audit_id: &str, stage: &str, received_at_us: i64, verb: &str, request_uri: Option<&str>) -> u128 {
    let mut h = Xxh3::new();
    for part in [audit_id, stage, verb, request_uri.unwrap_or("")] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.update(&received_at_us.to_le_bytes());
    h.digest128()
}

/// The key of a record.
pub fn record_key(r: &OperationRecord<'_>) -> u128 {
    dedup_key(&r.audit_id, &r.stage, r.received_at_us, &r.verb, r.request_uri.as_deref())
}

/// Why stored keys could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading stored events from {path}: {reason}")]
pub struct LoadKeysError {
    /// The file or directory.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// The keys seen so far, including those already stored in the recording. Stored keys are loaded
/// lazily, one `date` partition at a time (across all sessions), the first time an event of that
/// date shows up: an event's date is a function of its key, so that is everywhere a duplicate of it
/// can be.
///
/// A long-running writer bounds the memory with [`with_window`](Self::with_window): it then remembers
/// the most recent keys only (two generations of `window` keys each), which covers any retry that
/// arrives within the last `window` distinct events.
pub struct Deduplicator {
    layout: Layout,
    seen: HashSet<u128>,
    older: HashSet<u128>,
    window: Option<usize>,
    loaded_dates: HashSet<String>,
}

impl Deduplicator {
    /// A de-duplicator over the recording in `layout` that remembers every key.
    pub fn new(layout: Layout) -> Self {
        Self {
            layout,
            seen: HashSet::default(),
            older: HashSet::default(),
            window: None,
            loaded_dates: HashSet::default(),
        }
    }

    /// A de-duplicator that remembers between `window` and `2 * window` of the most recent keys.
    pub fn with_window(layout: Layout, window: usize) -> Self {
        Self { window: Some(window.max(1)), ..Self::new(layout) }
    }

    /// Records `key` as seen and says whether it is new. `date` is the event's partition date.
    pub fn insert(&mut self, date: &str, key: u128) -> Result<bool, LoadKeysError> {
        if !self.loaded_dates.contains(date) {
            self.load_date(date)?;
            self.loaded_dates.insert(date.to_owned());
        }
        if self.older.contains(&key) {
            return Ok(false);
        }
        let new = self.seen.insert(key);
        self.rotate_if_full();
        Ok(new)
    }

    /// Remembers `keys` as already stored, for events stored where this de-duplicator cannot list
    /// them (a recording in object storage, read through the query engine).
    pub fn preload(&mut self, keys: impl IntoIterator<Item = u128>) {
        self.seen.extend(keys);
        self.rotate_if_full();
    }

    /// Changes the window (`None`: remember everything from now on).
    pub fn set_window(&mut self, window: Option<usize>) {
        self.window = window.map(|w| w.max(1));
        self.rotate_if_full();
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.seen.len() + self.older.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn rotate_if_full(&mut self) {
        if let Some(window) = self.window
            && self.seen.len() >= window
        {
            self.older = std::mem::take(&mut self.seen);
            self.seen.reserve(window);
        }
    }

    /// Forgets `key`, for a record that was accepted but then could not be stored.
    pub fn forget(&mut self, key: u128) {
        self.seen.remove(&key);
        self.older.remove(&key);
    }

    fn load_date(&mut self, date: &str) -> Result<(), LoadKeysError> {
        // A file can vanish between listing and reading when `kubestep compact` swaps its partition;
        // its rows are then in the merged file, which a fresh listing finds.
        let mut attempts = 0;
        loop {
            match self.load_date_once(date) {
                Err(e) if attempts < 3 && !e.path.exists() => attempts += 1,
                other => return other,
            }
        }
    }

    fn load_date_once(&mut self, date: &str) -> Result<(), LoadKeysError> {
        let ops = self.layout.operations_dir();
        let Ok(sessions) = std::fs::read_dir(&ops) else { return Ok(()) };
        let wanted = format!("{}={date}", columns::DATE);
        let mut files = Vec::new();
        for session in sessions.flatten() {
            let dir = session.path().join(&wanted);
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for file in entries.flatten() {
                let path = file.path();
                if path.extension().is_some_and(|e| e == "parquet") {
                    let written = file.metadata().and_then(|m| m.modified()).ok();
                    files.push((written, path));
                }
            }
        }
        // Oldest first, so that a bounded window ends up holding the most recently written keys:
        // those are the ones a retry or a WAL replay can repeat.
        files.sort();
        for (_, path) in files {
            load_file_keys(&path, &mut self.seen)?;
            self.rotate_if_full();
        }
        Ok(())
    }
}

/// Hands the de-duplication key of every row of `batch` (a batch of operation records with at
/// least the key columns) to `each`.
pub fn batch_keys(batch: &RecordBatch, mut each: impl FnMut(u128)) -> Result<(), String> {
    let column = |name: &str| batch.column_by_name(name).ok_or_else(|| format!("no column {name}"));
    let audit_id = column(columns::AUDIT_ID)?.as_string_opt::<i32>().ok_or("audit_id is not Utf8")?;
    let stage = column(columns::STAGE)?.as_string_opt::<i32>().ok_or("stage is not Utf8")?;
    let verb = column(columns::VERB)?.as_string_opt::<i32>().ok_or("verb is not Utf8")?;
    let uri = column(columns::REQUEST_URI)?.as_string_opt::<i32>().ok_or("request_uri is not Utf8")?;
    let received = column(columns::RECEIVED_AT)?
        .as_primitive_opt::<TimestampMicrosecondType>()
        .ok_or("received_at is not Timestamp(us)")?;
    for i in 0..batch.num_rows() {
        let request_uri = (!uri.is_null(i)).then(|| uri.value(i));
        each(dedup_key(audit_id.value(i), stage.value(i), received.value(i), verb.value(i), request_uri));
    }
    Ok(())
}

fn load_file_keys(path: &Path, out: &mut HashSet<u128>) -> Result<(), LoadKeysError> {
    let err = |reason: String| LoadKeysError { path: path.to_owned(), reason };
    let file = File::open(path).map_err(|e| err(e.to_string()))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| err(e.to_string()))?;
    let wanted = [columns::AUDIT_ID, columns::STAGE, columns::RECEIVED_AT, columns::VERB, columns::REQUEST_URI];
    let mask = ProjectionMask::columns(builder.parquet_schema(), wanted);
    let reader = builder.with_projection(mask).build().map_err(|e| err(e.to_string()))?;
    for batch in reader {
        let batch = batch.map_err(|e| err(e.to_string()))?;
        batch_keys(&batch, |key| {
            out.insert(key);
        })
        .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_remembers_the_most_recent_keys_only() {
        let tmp = tempfile::tempdir().unwrap();
        let mut dedup = Deduplicator::with_window(Layout::new(tmp.path()), 100);
        for key in 0..1000u128 {
            assert!(dedup.insert("2024-01-01", key).unwrap());
        }
        assert!(dedup.len() <= 200, "{}", dedup.len());
        assert!(!dedup.insert("2024-01-01", 999).unwrap(), "recent keys are remembered");
        assert!(!dedup.insert("2024-01-01", 900).unwrap(), "the previous generation too");
        assert!(dedup.insert("2024-01-01", 5).unwrap(), "old keys are forgotten");
    }

    #[test]
    fn every_part_of_the_key_matters() {
        let base = dedup_key("a", "ResponseComplete", 1, "get", Some("/x"));
        assert_eq!(base, dedup_key("a", "ResponseComplete", 1, "get", Some("/x")));
        assert_ne!(base, dedup_key("b", "ResponseComplete", 1, "get", Some("/x")));
        assert_ne!(base, dedup_key("a", "Panic", 1, "get", Some("/x")));
        assert_ne!(base, dedup_key("a", "ResponseComplete", 2, "get", Some("/x")));
        assert_ne!(base, dedup_key("a", "ResponseComplete", 1, "list", Some("/x")));
        assert_ne!(base, dedup_key("a", "ResponseComplete", 1, "get", Some("/y")));
        // Field boundaries cannot be shifted to forge a collision.
        assert_ne!(dedup_key("ab", "c", 1, "", None), dedup_key("a", "bc", 1, "", None));
    }
}
