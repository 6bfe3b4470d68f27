//! The summary every operations file carries in its Parquet footer: what `kubestep sessions`
//! reports, per file, so that listing the sessions reads footers instead of every row.
//!
//! The writer computes a [`FileSummary`] from the rows it writes and stores it as JSON under the
//! footer key [`SUMMARY_KEY`]; every writer of operations files (the ingest service, `kubestep
//! import`, `kubestep compact`) goes through the same code, so a merged file is summarised afresh.
//! A reader merges the summaries of a session's files ([`FileSummary::merge`]). The numbers mean
//! what the `sessions` SQL computes over the same rows: the earliest `received_at`, the latest
//! `completed_at`, the count of rows, of write verbs ([`is_write_verb`]), of `status_code >= 400`,
//! and the distinct `actor_id`s.
//!
//! A file whose distinct actors would take more than [`MAX_ACTOR_BYTES`] gets no summary (its
//! footer would grow with the cluster); neither do files written before summaries existed. A
//! reader that meets such a file answers from the rows instead.

use std::collections::BTreeSet;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Int32Type, TimestampMicrosecondType};
use datafusion::parquet::file::metadata::ParquetMetaData;
use serde::{Deserialize, Serialize};

use crate::schema::columns;

/// The Parquet footer key (key-value metadata) under which a file's summary is stored.
pub const SUMMARY_KEY: &str = "kubestep.summary";

/// The summary format written today; a reader ignores summaries of another version.
pub const SUMMARY_VERSION: u32 = 1;

/// The most bytes of distinct actor ids a summary may list: beyond it the file gets no summary,
/// so that a footer stays small next to the rows it describes.
pub const MAX_ACTOR_BYTES: usize = 64 * 1024;

/// The verbs counted as writes, as everywhere in KubeStep.
pub fn is_write_verb(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

/// What a file (or, merged, a session) holds, as `kubestep sessions` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    /// [`SUMMARY_VERSION`] when written.
    pub version: u32,
    /// Rows.
    pub operations: u64,
    /// Rows whose verb is a write.
    pub writes: u64,
    /// Rows with `status_code >= 400`.
    pub errors: u64,
    /// The earliest `received_at` (microseconds since the epoch); none without rows.
    pub first_received_at: Option<i64>,
    /// The latest `completed_at`.
    pub last_completed_at: Option<i64>,
    /// The distinct `actor_id`s, sorted.
    pub actors: BTreeSet<String>,
}

/// Why rows could not be summarised: a column missing or of another type than the schema's.
#[derive(Debug, thiserror::Error)]
#[error("cannot summarise the rows: column {column} is {problem}")]
pub struct SummaryError {
    /// The column.
    pub column: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

impl Default for FileSummary {
    fn default() -> Self {
        Self {
            version: SUMMARY_VERSION,
            operations: 0,
            writes: 0,
            errors: 0,
            first_received_at: None,
            last_completed_at: None,
            actors: BTreeSet::new(),
        }
    }
}

impl FileSummary {
    /// The summary of every row of `batches` (in the file schema); `None` when the distinct actors
    /// exceed [`MAX_ACTOR_BYTES`].
    pub fn of_batches(batches: &[RecordBatch]) -> Result<Option<Self>, SummaryError> {
        let mut summary = Self::default();
        let mut actor_bytes = 0;
        for batch in batches {
            summary.operations += batch.num_rows() as u64;
            let received = column(batch, columns::RECEIVED_AT)?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| wrong_type(columns::RECEIVED_AT, batch))?;
            let completed = column(batch, columns::COMPLETED_AT)?
                .as_primitive_opt::<TimestampMicrosecondType>()
                .ok_or_else(|| wrong_type(columns::COMPLETED_AT, batch))?;
            let status = column(batch, columns::STATUS_CODE)?
                .as_primitive_opt::<Int32Type>()
                .ok_or_else(|| wrong_type(columns::STATUS_CODE, batch))?;
            let verbs =
                column(batch, columns::VERB)?.as_string_opt::<i32>().ok_or_else(|| wrong_type(columns::VERB, batch))?;
            let actors = column(batch, columns::ACTOR_ID)?
                .as_string_opt::<i32>()
                .ok_or_else(|| wrong_type(columns::ACTOR_ID, batch))?;

            let min = datafusion::arrow::compute::min(received);
            let max = datafusion::arrow::compute::max(completed);
            summary.first_received_at = earliest(summary.first_received_at, min);
            summary.last_completed_at = latest(summary.last_completed_at, max);
            summary.errors += status.iter().filter(|code| code.is_some_and(|c| c >= 400)).count() as u64;
            summary.writes += verbs.iter().filter(|verb| verb.is_some_and(is_write_verb)).count() as u64;

            // Consecutive rows often share their actor: compare with the last one before hashing.
            let mut previous: Option<&str> = None;
            for actor in actors.iter().flatten() {
                if previous == Some(actor) {
                    continue;
                }
                previous = Some(actor);
                if !summary.actors.contains(actor) {
                    actor_bytes += actor.len();
                    if actor_bytes > MAX_ACTOR_BYTES {
                        return Ok(None);
                    }
                    summary.actors.insert(actor.to_owned());
                }
            }
        }
        Ok(Some(summary))
    }

    /// Adds `other` (another file of the same session) to this summary.
    pub fn merge(&mut self, other: FileSummary) {
        self.operations += other.operations;
        self.writes += other.writes;
        self.errors += other.errors;
        self.first_received_at = earliest(self.first_received_at, other.first_received_at);
        self.last_completed_at = latest(self.last_completed_at, other.last_completed_at);
        self.actors.extend(other.actors);
    }

    /// The footer value: JSON.
    pub fn to_footer_value(&self) -> String {
        // A struct of numbers and strings always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The summary in a footer value, if it is one of [`SUMMARY_VERSION`].
    pub fn from_footer_value(value: &str) -> Option<Self> {
        serde_json::from_str::<Self>(value).ok().filter(|s| s.version == SUMMARY_VERSION)
    }

    /// The summary in a file's footer, if it has one of [`SUMMARY_VERSION`].
    pub fn in_footer(metadata: &ParquetMetaData) -> Option<Self> {
        metadata
            .file_metadata()
            .key_value_metadata()
            .and_then(|pairs| pairs.iter().find(|kv| kv.key == SUMMARY_KEY))
            .and_then(|kv| kv.value.as_deref())
            .and_then(Self::from_footer_value)
    }
}

fn column<'b>(batch: &'b RecordBatch, name: &'static str) -> Result<&'b dyn Array, SummaryError> {
    batch.column_by_name(name).map(|c| c.as_ref()).ok_or(SummaryError { column: name, problem: "missing".into() })
}

fn wrong_type(name: &'static str, batch: &RecordBatch) -> SummaryError {
    let found = batch.column_by_name(name).map(|c| c.data_type().to_string()).unwrap_or_default();
    SummaryError { column: name, problem: format!("of type {found}, not the schema's") }
}

fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn latest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{OperationBatchBuilder, OperationRecord};

    fn record(at: i64, verb: &str, actor: &str, status: Option<i32>) -> OperationRecord<'static> {
        OperationRecord {
            received_at_us: at,
            completed_at_us: at + 10,
            verb: verb.to_owned().into(),
            actor_id: actor.to_owned().into(),
            status_code: status,
            ..OperationRecord::default()
        }
    }

    fn batch(records: &[OperationRecord<'_>]) -> RecordBatch {
        let mut builder = OperationBatchBuilder::new();
        for r in records {
            builder.append(r);
        }
        builder.finish().expect("a batch of valid records")
    }

    #[test]
    fn counts_what_sessions_reports() {
        let first = batch(&[
            record(100, "get", "a", Some(200)),
            record(50, "update", "b", Some(409)),
            record(70, "patch", "a", None),
        ]);
        let second = batch(&[record(300, "deletecollection", "c", Some(500)), record(200, "watch", "a", Some(200))]);
        let summary = FileSummary::of_batches(&[first, second]).expect("valid batches").expect("few actors");
        assert_eq!(summary.operations, 5);
        assert_eq!(summary.writes, 3);
        assert_eq!(summary.errors, 2);
        assert_eq!(summary.first_received_at, Some(50));
        assert_eq!(summary.last_completed_at, Some(310));
        assert_eq!(summary.actors.iter().map(String::as_str).collect::<Vec<_>>(), ["a", "b", "c"]);
    }

    #[test]
    fn merging_adds_counts_and_unites_actors() {
        let one = FileSummary::of_batches(&[batch(&[record(100, "create", "a", Some(201))])]).unwrap().unwrap();
        let two = FileSummary::of_batches(&[batch(&[record(10, "get", "b", Some(404))])]).unwrap().unwrap();
        let mut merged = one.clone();
        merged.merge(two);
        merged.merge(one);
        assert_eq!((merged.operations, merged.writes, merged.errors), (3, 2, 1));
        assert_eq!((merged.first_received_at, merged.last_completed_at), (Some(10), Some(110)));
        assert_eq!(merged.actors.len(), 2);
    }

    #[test]
    fn footer_value_round_trips_and_other_versions_are_ignored() {
        let summary = FileSummary::of_batches(&[batch(&[record(1, "get", "a", None)])]).unwrap().unwrap();
        assert_eq!(FileSummary::from_footer_value(&summary.to_footer_value()), Some(summary.clone()));
        let future = FileSummary { version: SUMMARY_VERSION + 1, ..summary };
        assert_eq!(FileSummary::from_footer_value(&future.to_footer_value()), None);
        assert_eq!(FileSummary::from_footer_value("not json"), None);
    }

    #[test]
    fn too_many_actor_bytes_give_no_summary() {
        let long = "x".repeat(1000);
        let records: Vec<_> =
            (0..(MAX_ACTOR_BYTES / 1000 + 1)).map(|i| record(i as i64, "get", &format!("{long}{i}"), None)).collect();
        assert_eq!(FileSummary::of_batches(&[batch(&records)]).expect("valid batch"), None);
        assert!(FileSummary::of_batches(&[batch(&records[..10])]).expect("valid batch").is_some());
    }
}
