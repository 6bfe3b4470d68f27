//! `kubestep verify`: checks a recording and says what is wrong with it and how to repair it.
//!
//! It reads everything and changes nothing: every Parquet file is decoded in full (a damaged page
//! anywhere is found), its schema compared with the operation record's, its place checked against
//! the hive layout and its rows against their partition's date; every event's de-duplication key is
//! compared across files (one date at a time, since a key includes its event's time); the summary
//! in its footer compared with what its rows hold (`kubestep sessions` trusts it); the WAL's
//! segments are parsed as recovery would parse them; leftovers of interrupted writes and
//! compactions are listed.
//!
//! Findings are errors (data is damaged, missing or stored twice) or notices (states the service
//! repairs by itself at its next start, such as a torn WAL tail or a temporary file).
//!
//! A recording in object storage (`s3://BUCKET/PREFIX`, ...) gets the same checks of its files, each
//! fetched whole, one at a time; it has no WAL and no compaction staging there (those stay on the
//! writer's local volume), so those checks are skipped.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::file::reader::ChunkReader;
use futures::TryStreamExt;
use kubestep_schemas::location::{RecordingLocation, RemoteRecording, store_error_line};
use kubestep_schemas::schema::{columns, file_schema};
use kubestep_schemas::summary::{FileSummary, SUMMARY_KEY};
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Serialize;

use crate::dedup::batch_keys;
use crate::layout::{Layout, partition_date};
use crate::wal;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Data is damaged, unreadable or stored twice: `verify` exits 1.
    Error,
    /// Something the service cleans up or finishes by itself; nothing is lost.
    Notice,
}

/// One thing found wrong.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// How bad it is.
    pub severity: Severity,
    /// The file or directory concerned.
    pub path: PathBuf,
    /// What is wrong.
    pub problem: String,
    /// What to do about it.
    pub repair: String,
}

/// What `verify` read and found.
#[derive(Debug, Default, Clone, Serialize)]
pub struct VerifyReport {
    /// Parquet files read in full.
    pub files: usize,
    /// Rows in them.
    pub rows: u64,
    /// Sessions (partition directories `session_id=...`).
    pub sessions: usize,
    /// WAL segments, and complete entries in them (batches acknowledged but not yet in Parquet,
    /// unless the service is running).
    pub wal_segments: usize,
    /// Complete WAL entries.
    pub wal_entries: u64,
    /// Files read whose footer has no summary of the rows (written by another tool or before
    /// summaries existed): `kubestep sessions` then reads every row.
    pub files_without_summary: usize,
    /// Everything wrong, in the order found.
    pub findings: Vec<Finding>,
}

impl VerifyReport {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    fn error(&mut self, path: &Path, problem: impl Into<String>, repair: impl Into<String>) {
        self.push(Severity::Error, path, problem, repair);
    }

    fn notice(&mut self, path: &Path, problem: impl Into<String>, repair: impl Into<String>) {
        self.push(Severity::Notice, path, problem, repair);
    }

    fn push(&mut self, severity: Severity, path: &Path, problem: impl Into<String>, repair: impl Into<String>) {
        self.findings.push(Finding { severity, path: path.to_owned(), problem: problem.into(), repair: repair.into() });
    }
}

/// Why a recording could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// There is no recording there.
    #[error("{0} is not a KubeStep recording: it has no operations/ directory")]
    NotARecording(PathBuf),
    /// A directory could not be listed.
    #[error("listing {path}: {source}")]
    List {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The location is not one a recording can be at (an unsupported URL scheme, say).
    #[error("{0}")]
    Location(String),
    /// The object store could not be listed.
    #[error("listing {url}: {reason}")]
    ListStore {
        /// The prefix listed.
        url: String,
        /// The store's answer, on one line.
        reason: String,
    },
}

/// Checks the recording at `root`: a directory, or an object-store URL.
pub fn verify(root: &Path) -> Result<VerifyReport, VerifyError> {
    match RecordingLocation::parse(root).map_err(|e| VerifyError::Location(e.to_string()))? {
        RecordingLocation::Local(root) => verify_directory(&root),
        RecordingLocation::Remote(remote) => verify_remote(&remote),
    }
}

/// A Parquet file of the recording: what messages call it and where its bytes are.
struct StoredFile {
    /// The file's path, or its URL for a file in object storage.
    shown: PathBuf,
    /// The object's key when it is in object storage.
    key: Option<object_store::path::Path>,
}

/// Fetches files of a recording in object storage.
struct Fetcher<'a> {
    store: &'a dyn ObjectStore,
    runtime: tokio::runtime::Runtime,
}

fn verify_directory(root: &Path) -> Result<VerifyReport, VerifyError> {
    let layout = Layout::new(root);
    let operations = layout.operations_dir();
    if !operations.is_dir() {
        return Err(VerifyError::NotARecording(root.to_owned()));
    }
    let mut report = VerifyReport::default();
    // Files by date: keys of different dates never collide.
    let mut by_date: BTreeMap<String, Vec<StoredFile>> = BTreeMap::new();
    for session in list(&operations)? {
        let Some(_) = hive_value(&session, columns::SESSION_ID).filter(|_| session.is_dir()) else {
            report.notice(&session, "not a session directory (session_id=NAME)", "move it out of operations/");
            continue;
        };
        report.sessions += 1;
        for date_dir in list(&session)? {
            let date = hive_value(&date_dir, columns::DATE).filter(|d| date_dir.is_dir() && is_date(d));
            let Some(date) = date else {
                report.notice(&date_dir, "not a date directory (date=YYYY-MM-DD)", "move it out of operations/");
                continue;
            };
            for file in list(&date_dir)? {
                let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if name.ends_with(".tmp") {
                    report.notice(
                        &file,
                        "the temporary file of an interrupted write (never part of the recording)",
                        "`kubestep serve` removes it at its next start; or delete it",
                    );
                } else if name.ends_with(".parquet") && file.is_file() {
                    by_date.entry(date.clone()).or_default().push(StoredFile { shown: file, key: None });
                } else {
                    report.notice(&file, "not a Parquet file of the recording", "move it out of operations/");
                }
            }
        }
    }
    for (date, files) in &by_date {
        check_date(date, files, None, &mut report);
    }
    note_files_without_summary(&operations, &mut report);
    check_compaction(root, &mut report)?;
    check_wal(&layout.wal_dir(), &mut report);
    Ok(report)
}

/// The same checks of the files of a recording in object storage: one listing of `operations/`,
/// then each file fetched whole, one at a time.
fn verify_remote(remote: &RemoteRecording) -> Result<VerifyReport, VerifyError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| VerifyError::Location(format!("starting a runtime: {e}")))?;
    let operations = remote.path_of("operations");
    let listing = runtime
        .block_on(remote.store.list(Some(&operations)).try_collect::<Vec<_>>())
        .map_err(|e| VerifyError::ListStore { url: remote.url_of("operations"), reason: store_error_line(&e) })?;
    if listing.is_empty() {
        return Err(VerifyError::NotARecording(PathBuf::from(&remote.url)));
    }
    let mut report = VerifyReport::default();
    let mut sessions = std::collections::BTreeSet::new();
    let mut by_date: BTreeMap<String, Vec<StoredFile>> = BTreeMap::new();
    let base = remote.url_of("");
    for object in listing {
        let shown = PathBuf::from(format!("{base}{}", relative_key(&object.location, &remote.prefix)));
        let parts: Vec<String> =
            object.location.prefix_match(&operations).into_iter().flatten().map(|p| p.as_ref().to_owned()).collect();
        let session = parts.first().and_then(|p| hive_part(p, columns::SESSION_ID));
        let date = parts.get(1).and_then(|p| hive_part(p, columns::DATE)).filter(|d| is_date(d));
        match (session, date, parts.len()) {
            (Some(session), Some(date), 3) if parts[2].ends_with(".parquet") => {
                sessions.insert(session);
                by_date.entry(date).or_default().push(StoredFile { shown, key: Some(object.location) });
            }
            (Some(_), Some(_), 3) => {
                report.notice(&shown, "not a Parquet file of the recording", "move it out of operations/")
            }
            _ => report.notice(
                &shown,
                "not in a session and date partition (operations/session_id=NAME/date=YYYY-MM-DD/FILE)",
                "move it out of operations/",
            ),
        }
    }
    report.sessions = sessions.len();
    let journal =
        runtime.block_on(kubestep_schemas::compaction::list_journal(remote)).map_err(|e| VerifyError::ListStore {
            url: remote.url_of(kubestep_schemas::compaction::JOURNAL_DIR),
            reason: store_error_line(&e),
        })?;
    for entry in journal.iter().filter(|e| !e.done) {
        report.error(
            &PathBuf::from(format!("{base}{}/{}", kubestep_schemas::compaction::JOURNAL_DIR, entry.name())),
            "an unfinished compaction: its merged files and the files it merges can both be in the partition, and \
             queries wait for it",
            format!("run `kubestep compact -d {}` to finish it or roll it back", remote.url),
        );
    }
    for files in by_date.values_mut() {
        files.sort_by(|a, b| a.shown.cmp(&b.shown));
    }
    let fetcher = Fetcher { store: remote.store.as_ref(), runtime };
    for (date, files) in &by_date {
        check_date(date, files, Some(&fetcher), &mut report);
    }
    note_files_without_summary(Path::new(&remote.url_of("operations")), &mut report);
    Ok(report)
}

/// `key` relative to the recording's prefix, as the local layout would name it.
fn relative_key(key: &object_store::path::Path, prefix: &object_store::path::Path) -> String {
    match key.prefix_match(prefix) {
        Some(parts) => parts.map(|p| p.as_ref().to_owned()).collect::<Vec<_>>().join("/"),
        None => key.to_string(),
    }
}

fn hive_part(name: &str, key: &str) -> Option<String> {
    name.strip_prefix(key)?.strip_prefix('=').filter(|v| !v.is_empty()).map(str::to_owned)
}

fn list(dir: &Path) -> Result<Vec<PathBuf>, VerifyError> {
    let entries = std::fs::read_dir(dir).map_err(|source| VerifyError::List { path: dir.to_owned(), source })?;
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    Ok(paths)
}

fn hive_value(dir: &Path, key: &str) -> Option<String> {
    hive_part(dir.file_name()?.to_str()?, key)
}

fn is_date(text: &str) -> bool {
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").is_ok()
}

/// Reads every file of one date in full; reports unreadable files, wrong schemas, rows of another
/// date and events stored more than once.
fn check_date(date: &str, files: &[StoredFile], fetcher: Option<&Fetcher>, report: &mut VerifyReport) {
    let mut keys = KeysSeen::default();
    for (index, file) in files.iter().enumerate() {
        let path = &file.shown;
        let checked = match (&file.key, fetcher) {
            (Some(key), Some(fetcher)) => {
                fetcher.fetch(key).and_then(|bytes| check_file(bytes, date, index, &mut keys))
            }
            _ => File::open(path)
                .map_err(|e| FileProblem::Unreadable(e.to_string()))
                .and_then(|f| check_file(f, date, index, &mut keys)),
        };
        let checked = match checked {
            Ok(checked) => checked,
            Err(FileProblem::Unreadable(reason)) => {
                report.error(path, format!("cannot be read: {reason}"), DAMAGED_REPAIR);
                continue;
            }
            Err(FileProblem::Schema(difference)) => {
                report.error(
                    path,
                    format!("its schema is not the operation record's: {difference}"),
                    "move it out of operations/: it was not written by KubeStep (or by an incompatible version)",
                );
                continue;
            }
        };
        if let Some(reason) = checked.failure {
            report.error(path, format!("cannot be read: {reason}"), DAMAGED_REPAIR);
        }
        report.files += 1;
        report.rows += checked.rows;
        match checked.summary {
            SummaryCheck::Agrees => {}
            SummaryCheck::Missing => report.files_without_summary += 1,
            SummaryCheck::Differs { stored, rows } => report.error(
                path,
                format!("its footer summary ({SUMMARY_KEY}) says {stored}, but its rows hold {rows}"),
                "`kubestep sessions` reports the footer's figures: move the file out and re-import its events \
                 (`kubestep import`), or rewrite it without the summary",
            ),
        }
        if checked.wrong_date > 0 {
            report.error(
                path,
                format!("{} rows were received on another date than its partition's ({date})", checked.wrong_date),
                "re-import the events with `kubestep import` into a fresh recording",
            );
        }
    }
    let KeysSeen { duplicates, .. } = keys;
    let files: Vec<&PathBuf> = files.iter().map(|f| &f.shown).collect();
    for ((first, second), count) in duplicates {
        let (a, b) = (files[first], files[second]);
        let within =
            if first == second { "twice within this file".to_owned() } else { format!("also in {}", a.display()) };
        let repair = if a.parent() == b.parent() {
            "run `kubestep compact --session S --target-rows N` with N above the rows of both files: merging \
             keeps each event once"
        } else {
            "the two files are in different sessions: move the file of the session that should not hold the \
             events out of the recording"
        };
        report.error(b, format!("{count} events stored more than once: {within}"), repair);
    }
}

/// What to do about a file that cannot be read.
const DAMAGED_REPAIR: &str = "move it out of the recording (keep it for analysis); if the service wrote it and its \
     WAL still holds the batches, restarting `kubestep serve` stores them again";

/// The de-duplication keys of one date's files read so far.
#[derive(Default)]
struct KeysSeen {
    /// key -> index of the first file that holds it
    first_seen: HashMap<u128, usize>,
    /// (first file, later file) -> events of the later file already in the first
    duplicates: BTreeMap<(usize, usize), u64>,
}

/// Why a file was not read at all.
enum FileProblem {
    /// It cannot be opened or fetched, or is not Parquet.
    Unreadable(String),
    /// It is Parquet with another schema.
    Schema(String),
}

/// What reading a file in full found.
struct FileCheck {
    rows: u64,
    wrong_date: u64,
    /// Why reading stopped before the end, if it did.
    failure: Option<String>,
    /// Whether the footer's summary says what the rows say.
    summary: SummaryCheck,
}

/// The footer summary of a file against its rows.
enum SummaryCheck {
    /// The same figures.
    Agrees,
    /// No summary (or one of another version, which readers ignore alike).
    Missing,
    /// Different figures: what each says.
    Differs { stored: String, rows: String },
}

/// One notice for all the files without a summary: nothing is wrong with them, but `sessions`
/// reads every row while any is there.
fn note_files_without_summary(operations: &Path, report: &mut VerifyReport) {
    if report.files_without_summary > 0 {
        let files = report.files_without_summary;
        report.notice(
            operations,
            format!(
                "{files} file(s) have no summary of their rows in the footer (written by another tool or an older \
                 KubeStep): `kubestep sessions` reads every row instead of the footers"
            ),
            "nothing is lost; `kubestep compact` gives the files it merges a summary",
        );
    }
}

/// A summary's figures, for a message.
fn describe(summary: &FileSummary) -> String {
    format!(
        "{} operations, {} writes, {} errors, {} actors, received from {:?} to {:?} (us)",
        summary.operations,
        summary.writes,
        summary.errors,
        summary.actors.len(),
        summary.first_received_at,
        summary.last_completed_at
    )
}

/// Reads one file (the `index`th of its date) in full, adding its keys to `keys`.
fn check_file<R: ChunkReader + 'static>(
    reader: R,
    date: &str,
    index: usize,
    keys: &mut KeysSeen,
) -> Result<FileCheck, FileProblem> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(reader).map_err(|e| FileProblem::Unreadable(e.to_string()))?;
    if let Some(difference) = schema_difference(builder.schema(), &file_schema()) {
        return Err(FileProblem::Schema(difference));
    }
    let stored = FileSummary::in_footer(builder.metadata());
    let reader = builder.with_batch_size(8192).build().map_err(|e| FileProblem::Unreadable(e.to_string()))?;
    let mut checked = FileCheck { rows: 0, wrong_date: 0, failure: None, summary: SummaryCheck::Missing };
    // What the rows say; `None` once they hold more actor ids than a summary may list.
    let mut from_rows = Some(FileSummary::default());
    for batch in reader {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => {
                checked.failure = Some(e.to_string());
                break;
            }
        };
        checked.rows += batch.num_rows() as u64;
        if let Some(received) =
            batch.column_by_name(columns::RECEIVED_AT).and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        {
            checked.wrong_date +=
                (0..received.len()).filter(|&i| partition_date(received.value(i)) != date).count() as u64;
        }
        let keyed = batch_keys(&batch, |key| {
            if let Some(&first) = keys.first_seen.get(&key) {
                *keys.duplicates.entry((first, index)).or_default() += 1;
            } else {
                keys.first_seen.insert(key, index);
            }
        });
        if let Err(e) = keyed {
            checked.failure = Some(e);
            break;
        }
        if stored.is_some()
            && let Some(summary) = from_rows.as_mut()
        {
            match FileSummary::of_batches(std::slice::from_ref(&batch)) {
                Ok(Some(batch_summary)) => summary.merge(batch_summary),
                Ok(None) => from_rows = None,
                Err(e) => {
                    checked.failure = Some(e.to_string());
                    break;
                }
            }
        }
    }
    if let Some(stored) = stored
        && checked.failure.is_none()
    {
        checked.summary = match from_rows {
            Some(rows) if rows == stored => SummaryCheck::Agrees,
            Some(rows) => SummaryCheck::Differs { stored: describe(&stored), rows: describe(&rows) },
            None => SummaryCheck::Differs {
                stored: describe(&stored),
                rows: "more distinct actor ids than a summary may list".to_owned(),
            },
        };
    }
    Ok(checked)
}

impl Fetcher<'_> {
    /// The whole object at `key`.
    fn fetch(&self, key: &object_store::path::Path) -> Result<impl ChunkReader + 'static, FileProblem> {
        self.runtime
            .block_on(async { self.store.get(key).await?.bytes().await })
            .map_err(|e| FileProblem::Unreadable(store_error_line(&e)))
    }
}

/// The first way `actual` differs from `expected` (names, order, types), if any.
fn schema_difference(
    actual: &datafusion::arrow::datatypes::Schema,
    expected: &datafusion::arrow::datatypes::Schema,
) -> Option<String> {
    for (i, want) in expected.fields().iter().enumerate() {
        let Some(have) = actual.fields().get(i) else {
            return Some(format!("column {} ({}) is missing", i + 1, want.name()));
        };
        if have.name() != want.name() {
            return Some(format!("column {} is {}, expected {}", i + 1, have.name(), want.name()));
        }
        if have.data_type() != want.data_type() {
            return Some(format!("{} is {}, expected {}", want.name(), have.data_type(), want.data_type()));
        }
    }
    let extra = actual.fields().len().checked_sub(expected.fields().len()).filter(|&n| n > 0)?;
    Some(format!("{extra} columns more than expected"))
}

/// A compaction that stopped half-way leaves its staging directory and manifest behind.
fn check_compaction(root: &Path, report: &mut VerifyReport) -> Result<(), VerifyError> {
    let staging = root.join("compact");
    if !staging.is_dir() {
        return Ok(());
    }
    for entry in list(&staging)? {
        let name = entry.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name == ".lock" || name.ends_with(".lock") {
            continue;
        }
        report.notice(
            &entry,
            "left by a compaction that was interrupted",
            "run `kubestep compact` (the next run finishes or undoes it); queries are not affected",
        );
    }
    Ok(())
}

/// Parses the WAL as recovery would: a torn tail of the newest segment is a crash's normal trace,
/// damage anywhere else means acknowledged batches that cannot be replayed.
fn check_wal(dir: &Path, report: &mut VerifyReport) {
    let segments = match wal::inspect(dir) {
        Ok(s) => s,
        Err(e) => {
            report.error(dir, format!("the write-ahead log cannot be read: {e}"), "check the directory's permissions");
            return;
        }
    };
    report.wal_segments = segments.len();
    report.wal_entries = segments.iter().map(|s| s.entries).sum();
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter().enumerate() {
        let Some(problem) = &segment.problem else { continue };
        let discarded = segment.len - segment.valid_len;
        if i == last {
            report.notice(
                &segment.path,
                format!("{problem}: {discarded} bytes after the last complete entry (a batch never acknowledged)"),
                "`kubestep serve` cuts it off at its next start",
            );
        } else {
            report.error(
                &segment.path,
                format!("{problem}: {discarded} bytes of an older segment cannot be replayed"),
                "start `kubestep serve` to replay the entries before it; the batches after it must be re-sent",
            );
        }
    }
    if report.wal_entries > 0 {
        report.notice(
            dir,
            format!(
                "{} acknowledged batches are in the write-ahead log, not yet in Parquet (normal while the \
                 service runs; after a crash, until it restarts)",
                report.wal_entries
            ),
            "if the service is not running, start `kubestep serve -d DIR`: it replays them",
        );
    }
}
