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

    /// The directory of one session: its `date=` partitions.
    pub fn session_dir(&self, session_id: &str) -> PathBuf {
        self.operations_dir().join(format!("{}={session_id}", columns::SESSION_ID))
    }

    /// The directory of one `(session, date)` partition.
    pub fn partition_dir(&self, session_id: &str, date: &str) -> PathBuf {
        self.session_dir(session_id).join(format!("{}={date}", columns::DATE))
    }

    /// Where events that could not be recorded are kept, with their reasons.
    pub fn rejected_dir(&self) -> PathBuf {
        self.root.join("rejected")
    }

    /// The ingest service's write-ahead log and its small state files.
    pub fn wal_dir(&self) -> PathBuf {
        self.root.join("wal")
    }

    /// The names of the sessions that have files, sorted.
    pub fn stored_sessions(&self) -> Vec<String> {
        let prefix = format!("{}=", columns::SESSION_ID);
        let Ok(dirs) = std::fs::read_dir(self.operations_dir()) else { return Vec::new() };
        let mut names: Vec<String> = dirs
            .flatten()
            .filter_map(|d| d.file_name().to_str().and_then(|n| n.strip_prefix(&prefix)).map(str::to_owned))
            .collect();
        names.sort();
        names
    }
}

/// The automatic sessions stored in a recording, with the first and latest `completed_at` of each
/// (microseconds), read from the Parquet footers' statistics alone. Files that cannot be read are
/// skipped with a warning: this only decides which session new events join.
pub fn stored_auto_sessions(layout: &Layout) -> Vec<(String, i64, i64)> {
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};
    use datafusion::parquet::file::statistics::Statistics;

    let mut out = Vec::new();
    let Ok(sessions) = std::fs::read_dir(layout.operations_dir()) else { return out };
    let prefix = format!("{}=", columns::SESSION_ID);
    for session in sessions.flatten() {
        let dir_name = session.file_name().to_string_lossy().into_owned();
        let Some(name) = dir_name.strip_prefix(&prefix).filter(|n| n.starts_with("auto-")) else { continue };
        let mut span: Option<(i64, i64)> = None;
        for date in std::fs::read_dir(session.path()).into_iter().flatten().flatten() {
            for file in std::fs::read_dir(date.path()).into_iter().flatten().flatten() {
                let path = file.path();
                if path.extension().is_none_or(|e| e != "parquet") {
                    continue;
                }
                let reader = match std::fs::File::open(&path)
                    .map_err(|e| e.to_string())
                    .and_then(|f| SerializedFileReader::new(f).map_err(|e| e.to_string()))
                {
                    Ok(reader) => reader,
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "skipping unreadable file while resuming sessions");
                        continue;
                    }
                };
                let metadata = reader.metadata();
                let Some(index) = metadata
                    .file_metadata()
                    .schema_descr()
                    .columns()
                    .iter()
                    .position(|c| c.name() == columns::COMPLETED_AT)
                else {
                    continue;
                };
                for row_group in metadata.row_groups() {
                    if let Some(Statistics::Int64(stats)) = row_group.column(index).statistics()
                        && let (Some(&min), Some(&max)) = (stats.min_opt(), stats.max_opt())
                    {
                        span = Some(span.map_or((min, max), |(a, b)| (a.min(min), b.max(max))));
                    }
                }
            }
        }
        if let Some((first, latest)) = span {
            out.push((name.to_owned(), first, latest));
        }
    }
    out.sort_by_key(|(_, _, latest)| *latest);
    out
}

/// The `date` partition value of a timestamp: its UTC date, `YYYY-MM-DD`.
pub fn partition_date(received_at_us: i64) -> String {
    match chrono::DateTime::from_timestamp_micros(received_at_us) {
        Some(t) => t.format("%Y-%m-%d").to_string(),
        None => "1970-01-01".to_owned(),
    }
}
