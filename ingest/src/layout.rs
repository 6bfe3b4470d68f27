//! Where things live in a recording directory.
//!
//! ```text
//! DATA/operations/session_id=<id>/date=<YYYY-MM-DD>/<writer>-<seq>.parquet
//! DATA/rejected/<writer>.jsonl
//! DATA/wal/
//! ```

use std::path::{Path, PathBuf};

use kubestep_schemas::schema::columns;

/// The directory layout of one recording.
#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// The recording rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The recording's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Parent of all partitions: what a query engine registers as the `operations` table.
    pub fn operations_dir(&self) -> PathBuf {
        self.root.join("operations")
    }

    /// The directory of one `(session, date)` partition.
    pub fn partition_dir(&self, session_id: &str, date: &str) -> PathBuf {
        self.operations_dir()
            .join(format!("{}={session_id}", columns::SESSION_ID))
            .join(format!("{}={date}", columns::DATE))
    }

    /// Where events that could not be recorded are kept, with their reasons.
    pub fn rejected_dir(&self) -> PathBuf {
        self.root.join("rejected")
    }
}

/// The `date` partition value of a timestamp: its UTC date, `YYYY-MM-DD`.
pub fn partition_date(received_at_us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(received_at_us) {
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => "1970-01-01".to_owned(),
    }
}
