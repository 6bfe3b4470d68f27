//! `kubestep sessions`: one summary per session.

use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::QueryError;
use crate::context::collect;
use crate::values::{Ints, Micros, Strings, format_time};

const SESSIONS_SQL: &str = include_str!("../sql/sessions.sql");

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
