//! The compaction journal of a recording in object storage: how `kubestep compact` and the query
//! commands agree on which files of a partition a query may read together.
//!
//! A directory can swap a partition's files for their merge in one rename; a bucket cannot: the
//! merged files appear one put at a time and the inputs disappear one delete at a time, and for
//! that while a listing holds both. Every compaction of a partition therefore leaves a trace under
//! `compact/` in the recording, written before its first output appears and kept after its last
//! input is gone:
//!
//! 1. `compact/<id>.merging` (a [`CompactionJournal`]) is created; from now on a listing may hold
//!    outputs and inputs together;
//! 2. the outputs are uploaded and the inputs deleted;
//! 3. `compact/<id>.done` is created (the same journal with its outcome) and the `.merging` object
//!    deleted. Done journals stay for [`DONE_RETENTION_HOURS`], then a later compaction removes them.
//!
//! A reader that saw no `.merging` journal before it listed the files, and sees the same journal
//! names after it has finished, read a set of files no compaction was changing: the old set or the
//! new one. Otherwise it reads again. The names alone carry the state, so each check is one
//! listing, and nothing is ever overwritten.

use object_store::ObjectStore;
use object_store::path::Path as StorePath;
use serde::{Deserialize, Serialize};

use crate::location::RemoteRecording;

/// The directory of the journal, and of the lock one compaction holds, inside a recording.
pub const JOURNAL_DIR: &str = "compact";

/// The lock object: created with a create-only put by the compaction that runs, deleted when it ends.
pub const LOCK_NAME: &str = "lock";

/// The suffix of a journal whose compaction is under way (or was interrupted).
pub const MERGING_SUFFIX: &str = ".merging";

/// The suffix of a journal whose compaction has finished, one way or the other.
pub const DONE_SUFFIX: &str = ".done";

/// How long a done journal is kept: longer than any query a reader could be running.
pub const DONE_RETENTION_HOURS: i64 = 24;

/// What one compaction of one partition does, written before it changes anything.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionJournal {
    /// The partition, relative to the recording: `operations/session_id=S/date=D`.
    pub partition: String,
    /// The names of the files it merges (and deletes), inside the partition.
    pub inputs: Vec<String>,
    /// The names of the files it writes, inside the partition.
    pub outputs: Vec<String>,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// How it ended: `merged`, or `rolled back` with the reason. Absent while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// A journal object, by its name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct JournalEntry {
    /// The compaction's id (the name without its suffix).
    pub id: String,
    /// Whether the compaction has finished.
    pub done: bool,
}

impl JournalEntry {
    /// Reads a journal object's name; `None` for anything else (the lock).
    pub fn from_name(name: &str) -> Option<JournalEntry> {
        if let Some(id) = name.strip_suffix(MERGING_SUFFIX) {
            Some(JournalEntry { id: id.to_owned(), done: false })
        } else {
            name.strip_suffix(DONE_SUFFIX).map(|id| JournalEntry { id: id.to_owned(), done: true })
        }
    }

    /// The object's name.
    pub fn name(&self) -> String {
        format!("{}{}", self.id, if self.done { DONE_SUFFIX } else { MERGING_SUFFIX })
    }
}

/// The store path of a journal object (or the lock) named `name`.
pub fn journal_path(remote: &RemoteRecording, name: &str) -> StorePath {
    remote.path_of(&format!("{JOURNAL_DIR}/{name}"))
}

/// Every journal entry of the recording, sorted: one listing of `compact/`.
pub async fn list_journal(remote: &RemoteRecording) -> Result<Vec<JournalEntry>, object_store::Error> {
    let dir = remote.path_of(JOURNAL_DIR);
    let listing = remote.store.list_with_delimiter(Some(&dir)).await?;
    let mut entries: Vec<JournalEntry> =
        listing.objects.iter().filter_map(|o| o.location.filename().and_then(JournalEntry::from_name)).collect();
    entries.sort();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_names_carry_the_state_and_nothing_else_is_a_journal() {
        let merging = JournalEntry::from_name("s_2026-01-02-ab12.merging");
        assert_eq!(merging, Some(JournalEntry { id: "s_2026-01-02-ab12".to_owned(), done: false }));
        let done = JournalEntry::from_name("s_2026-01-02-ab12.done");
        assert_eq!(done.as_ref().map(|d| d.name()).as_deref(), Some("s_2026-01-02-ab12.done"));
        assert_eq!(JournalEntry::from_name(LOCK_NAME), None);
        assert_eq!(JournalEntry::from_name("notes.txt"), None);
    }

    #[test]
    fn a_journal_without_an_outcome_reads_back() {
        let journal = CompactionJournal {
            partition: "operations/session_id=s/date=2026-01-02".to_owned(),
            inputs: vec!["a.parquet".to_owned()],
            outputs: vec!["b.parquet".to_owned()],
            started_at: "2026-01-02T00:00:00Z".to_owned(),
            outcome: None,
        };
        let text = serde_json::to_string(&journal).unwrap_or_default();
        assert!(!text.contains("outcome"), "{text}");
        let back: Result<CompactionJournal, _> = serde_json::from_str(&text);
        assert_eq!(back.ok(), Some(journal));
    }
}
