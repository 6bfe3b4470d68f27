//! `kubestep sessions`: one summary per session.
//!
//! Two ways to the same answer: [`sessions_from_rows`] runs `sql/sessions.sql` over the rows;
//! [`sessions_from_footers`] merges the summaries the writer stored in every file's footer
//! (`kubestep_schemas::summary`), reading no row at all, when every file carries one. [`sessions`]
//! tries the footers first. Both read through the context's object store, so a recording in a
//! bucket is answered from its footers too (two small range reads per file instead of its columns).

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::datasource::listing::{ListingTable, ListingTableUrl};
use datafusion::parquet::file::metadata::ParquetMetaDataReader;
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use kubestep_schemas::schema::columns;
use kubestep_schemas::summary::FileSummary;
use object_store::path::Path as StorePath;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
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

/// Every session, oldest first: from the files' footers when they all carry a summary, otherwise
/// from the rows.
pub async fn sessions(ctx: &SessionContext) -> Result<Vec<SessionSummary>, QueryError> {
    match sessions_from_footers(ctx).await? {
        Some(sessions) => Ok(sessions),
        None => sessions_from_rows(ctx).await,
    }
}

/// Every session, oldest first, computed by `sql/sessions.sql` over the rows.
pub async fn sessions_from_rows(ctx: &SessionContext) -> Result<Vec<SessionSummary>, QueryError> {
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

/// How many bytes from a file's end are read first: footers of KubeStep's files fit (a 10M-operation
/// recording's largest is 40 KiB), so one read per file is the rule.
const FOOTER_PREFETCH: u64 = 64 * 1024;

/// Every session, oldest first, from the summaries in the footers of the recording's files: the
/// same answer as [`sessions_from_rows`] without reading a row.
///
/// `Ok(None)` when the footers cannot answer and the rows must: no file, a file without a summary
/// (written before summaries existed, by another tool, or with too many actors), a footer that
/// cannot be read, something under `operations/` that is not laid out as KubeStep writes it, or
/// files that kept vanishing while being read. In a bucket the footers are read like the rows
/// are, never while a compaction is under way ([`crate::consistently`]).
pub async fn sessions_from_footers(ctx: &SessionContext) -> Result<Option<Vec<SessionSummary>>, QueryError> {
    let Some((store, url)) = operations_store(ctx).await else { return Ok(None) };
    let concurrency = ctx.state().config_options().execution.meta_fetch_concurrency.get();
    crate::consistency::consistently(ctx, || async {
        for _ in 0..FOOTER_ATTEMPTS {
            match summaries_by_session(store.as_ref(), url.prefix(), concurrency).await {
                Ok(Some(by_session)) => return Ok(Some(in_time_order(by_session)).filter(|s| !s.is_empty())),
                Ok(None) => return Ok(None),
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "reading the footers failed; answering from the rows");
                    return Ok(None);
                }
            }
        }
        Ok(None)
    })
    .await
}

/// The object store and directory of the `operations` table, if it is the listing table
/// `open_recording` registers.
async fn operations_store(ctx: &SessionContext) -> Option<(Arc<dyn ObjectStore>, ListingTableUrl)> {
    let table = ctx.table_provider(crate::context::OPERATIONS_TABLE).await.ok()?;
    let listing = table.downcast_ref::<ListingTable>()?;
    let [url] = listing.table_paths().as_slice() else { return None };
    let store = ctx.runtime_env().object_store(url).ok()?;
    Some((store, url.clone()))
}

/// The merged summary of each session's files, their footers read `concurrency` at a time;
/// `Ok(None)` when a file has none or the directory holds something the layout does not.
async fn summaries_by_session(
    store: &dyn ObjectStore,
    operations: &StorePath,
    concurrency: usize,
) -> Result<Option<BTreeMap<String, FileSummary>>, object_store::Error> {
    let listed: Vec<ObjectMeta> = store.list(Some(operations)).try_collect().await?;
    let session_prefix = format!("{}=", columns::SESSION_ID);
    let date_prefix = format!("{}=", columns::DATE);
    let mut files: Vec<(String, ObjectMeta)> = Vec::with_capacity(listed.len());
    for file in listed {
        if file.location.extension() != Some("parquet") {
            continue; // not a table file (the table reads `*.parquet`): one being written, `.<name>.tmp`
        }
        let Some(parts) = file.location.prefix_match(operations) else { return Ok(None) };
        let parts: Vec<String> = parts.map(|p| p.as_ref().to_owned()).collect();
        let [session, date, name] = parts.as_slice() else { return Ok(None) };
        let Some(session) = session.strip_prefix(&session_prefix) else { return Ok(None) };
        if !date.starts_with(&date_prefix) || name.starts_with(['.', '_']) {
            return Ok(None);
        }
        files.push((session.to_owned(), file));
    }
    // One range read per file: in a bucket, a recording of many small files is read as DataFusion
    // reads footers, many requests in flight.
    let summaries: Vec<(String, Option<FileSummary>)> =
        futures::stream::iter(files)
            .map(|(session, file)| async move {
                Ok::<_, object_store::Error>((session, footer_summary(store, &file).await?))
            })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
    let mut by_session: BTreeMap<String, FileSummary> = BTreeMap::new();
    for (session, summary) in summaries {
        let Some(summary) = summary else { return Ok(None) };
        by_session.entry(session).or_default().merge(summary);
    }
    Ok(Some(by_session))
}

/// The summary in one file's footer, if it has one: the file's tail read once (twice for a footer
/// larger than [`FOOTER_PREFETCH`]).
async fn footer_summary(
    store: &dyn ObjectStore,
    file: &ObjectMeta,
) -> Result<Option<FileSummary>, object_store::Error> {
    const TAIL: u64 = 8; // footer length (4 bytes, little-endian) and the magic `PAR1`
    if file.size < TAIL + 4 {
        return Ok(None);
    }
    let start = file.size.saturating_sub(FOOTER_PREFETCH).max(4);
    let mut bytes = store.get_range(&file.location, start..file.size).await?;
    let tail = &bytes[bytes.len() - TAIL as usize..];
    if &tail[4..] != b"PAR1" {
        return Ok(None);
    }
    let footer_len = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    let footer_start = match file.size.checked_sub(TAIL + footer_len) {
        Some(at) if at >= 4 => at,
        _ => return Ok(None),
    };
    if footer_start < start {
        bytes = store.get_range(&file.location, footer_start..file.size).await?;
    }
    let footer = &bytes[bytes.len() - (TAIL + footer_len) as usize..bytes.len() - TAIL as usize];
    let Ok(metadata) = ParquetMetaDataReader::decode_metadata(footer) else { return Ok(None) };
    Ok(FileSummary::in_footer(&metadata))
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
