//! `kubestep sessions`: one summary per session.
//!
//! Two ways to the same answer: [`sessions`] runs `sql/sessions.sql` over the rows;
//! [`sessions_from_footers`] merges the summaries the writer stored in every file's footer
//! (`kubestep_schemas::summary`), reading no row at all, for a recording in a directory whose
//! files all carry one.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use datafusion::parquet::file::metadata::ParquetMetaDataReader;
use datafusion::prelude::SessionContext;
use kubestep_schemas::schema::columns;
use kubestep_schemas::summary::{FileSummary, SUMMARY_KEY};
use serde::Serialize;

use crate::QueryError;
use crate::context::collect;
use crate::values::{Ints, Micros, Strings, format_time};

/// The statement [`sessions`] runs over the rows: the question the footer summaries answer
/// without it ([`sessions_from_footers`]).
pub const SESSIONS_SQL: &str = include_str!("../sql/sessions.sql");

/// What a session holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// The session's name.
    pub session_id: String,
    /// When its first request was received (RFC 3339, UTC).
    pub first_at: String,
    /// When its last request completed.
    pub last_at: String,
    /// Operations recorded.
    pub operations: u64,
    /// Of which writes (create, update, patch, delete, deletecollection).
    pub writes: u64,
    /// Distinct actors.
    pub actors: u64,
    /// Operations that failed (status >= 400).
    pub errors: u64,
}

/// Every session, oldest first.
pub async fn sessions(ctx: &SessionContext) -> Result<Vec<SessionSummary>, QueryError> {
    let ctx = &scanned_in_any_order(ctx);
    crate::consistency::consistently(ctx, || sessions_once(ctx)).await
}

/// `ctx` (the same tables, views and settings) with its scans no longer keeping the files' order.
///
/// Files grouped by their time ranges make each scan partition ordered by `session_id`, and the
/// aggregation then checks, row by row, where one session's rows end (`PartiallySorted`): worth it
/// for windows, which would otherwise sort, but for a handful of groups only extra work. Without
/// it `sessions` at 10M operations needs 11% less CPU (docs/PERFORMANCE.md).
fn scanned_in_any_order(ctx: &SessionContext) -> SessionContext {
    let mut state = ctx.state();
    state.config_mut().options_mut().execution.split_file_groups_by_statistics = false;
    SessionContext::new_with_state(state)
}

async fn sessions_once(ctx: &SessionContext) -> Result<Vec<SessionSummary>, QueryError> {
    let mut out = Vec::new();
    for batch in collect(ctx, SESSIONS_SQL, Vec::new()).await? {
        let id = Strings::of(&batch, "session_id")?;
        let first = Micros::of(&batch, "first_at")?;
        let last = Micros::of(&batch, "last_at")?;
        let count = |name| Ints::of(&batch, name);
        let (operations, writes, actors, errors) =
            (count("operations")?, count("writes")?, count("actors")?, count("errors")?);
        let n = |c: &Ints, row| c.get(row).unwrap_or(0).max(0) as u64;
        for row in 0..batch.num_rows() {
            out.push(SessionSummary {
                session_id: id.text(row),
                first_at: first.get(row).map(format_time).unwrap_or_default(),
                last_at: last.get(row).map(format_time).unwrap_or_default(),
                operations: n(&operations, row),
                writes: n(&writes, row),
                actors: n(&actors, row),
                errors: n(&errors, row),
            });
        }
    }
    Ok(out)
}

/// How many times the footers are read again when a listed file vanished meanwhile (a
/// compaction swapped its partition) before the rows are asked instead.
const FOOTER_ATTEMPTS: usize = 3;

/// Every session, oldest first, from the summaries in the footers of a recording directory's
/// files: the same answer as [`sessions`] without reading a row.
///
/// `None` when the footers cannot answer and the rows must: `root` is not a directory (a bucket
/// URL, or nothing), it holds no file, a file has no summary (written before summaries existed,
/// by another tool, or with too many actors), a footer cannot be read, something in `operations/`
/// is not laid out as KubeStep writes it, or files kept vanishing while being read.
pub fn sessions_from_footers(root: &Path) -> Option<Vec<SessionSummary>> {
    for _ in 0..FOOTER_ATTEMPTS {
        match summaries_by_session(&root.join("operations")) {
            Ok(Some(by_session)) => return Some(in_time_order(by_session)).filter(|s| !s.is_empty()),
            Ok(None) => return None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => return None,
        }
    }
    None
}

/// The merged summary of each session's files; `Ok(None)` when a file has none or the directory
/// holds something the layout does not, `Err` when listing or reading failed.
fn summaries_by_session(operations: &Path) -> io::Result<Option<BTreeMap<String, FileSummary>>> {
    let session_prefix = format!("{}=", columns::SESSION_ID);
    let date_prefix = format!("{}=", columns::DATE);
    let mut by_session: BTreeMap<String, FileSummary> = BTreeMap::new();
    for session_dir in std::fs::read_dir(operations)? {
        let session_dir = session_dir?;
        let name = session_dir.file_name();
        let Some(session) = name.to_str().and_then(|n| n.strip_prefix(&session_prefix)) else { return Ok(None) };
        for date_dir in std::fs::read_dir(session_dir.path())? {
            let date_dir = date_dir?;
            if !date_dir.file_name().to_str().is_some_and(|n| n.starts_with(&date_prefix)) {
                return Ok(None);
            }
            for file in std::fs::read_dir(date_dir.path())? {
                let file = file?;
                let file_name = file.file_name();
                let Some(file_name) = file_name.to_str() else { return Ok(None) };
                if !file_name.ends_with(".parquet") {
                    continue; // a file being written: `.<name>.tmp`
                }
                if file_name.starts_with(['.', '_']) {
                    return Ok(None);
                }
                let Some(summary) = footer_summary(&file.path())? else { return Ok(None) };
                by_session.entry(session.to_owned()).or_default().merge(summary);
            }
        }
    }
    Ok(Some(by_session))
}

/// The summary in one file's footer, if it has one.
fn footer_summary(path: &Path) -> io::Result<Option<FileSummary>> {
    let file = std::fs::File::open(path)?;
    let Ok(metadata) = ParquetMetaDataReader::new().parse_and_finish(&file) else { return Ok(None) };
    let summary = metadata
        .file_metadata()
        .key_value_metadata()
        .and_then(|pairs| pairs.iter().find(|kv| kv.key == SUMMARY_KEY))
        .and_then(|kv| kv.value.as_deref())
        .and_then(FileSummary::from_footer_value);
    Ok(summary)
}

/// The sessions with rows, ordered as `sql/sessions.sql` orders them: by first time, then name.
fn in_time_order(by_session: BTreeMap<String, FileSummary>) -> Vec<SessionSummary> {
    let mut sessions: Vec<(Option<i64>, SessionSummary)> = by_session
        .into_iter()
        .filter(|(_, s)| s.operations > 0)
        .map(|(session_id, s)| {
            let summary = SessionSummary {
                session_id,
                first_at: s.first_received_at.map(format_time).unwrap_or_default(),
                last_at: s.last_completed_at.map(format_time).unwrap_or_default(),
                operations: s.operations,
                writes: s.writes,
                actors: s.actors.len() as u64,
                errors: s.errors,
            };
            (s.first_received_at, summary)
        })
        .collect();
    sessions.sort_by(|(a, x), (b, y)| a.cmp(b).then_with(|| x.session_id.cmp(&y.session_id)));
    sessions.into_iter().map(|(_, s)| s).collect()
}
