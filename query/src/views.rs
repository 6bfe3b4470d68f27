//! The documented views users can query beside `operations`. Each is a readable SQL file in
//! `query/sql/views/`; `docs/QUERIES.md` describes them. Views with thresholds are registered with
//! the defaults; the analyses run the same SQL with the thresholds they were given.

use datafusion::prelude::SessionContext;

use crate::QueryError;

/// `hot_loops`: thresholds `{hot_writes}`, `{hot_window_seconds}`.
pub const HOT_LOOPS: &str = include_str!("../sql/views/hot_loops.sql");
/// `fight_candidates`: thresholds `{fight_turns}`, `{hot_window_seconds}`.
pub const FIGHT_CANDIDATES: &str = include_str!("../sql/views/fight_candidates.sql");
/// `conflict_storms`: threshold `{conflict_min}`.
pub const CONFLICT_STORMS: &str = include_str!("../sql/views/conflict_storms.sql");
/// `error_requeues`: threshold `{requeue_min}`.
pub const ERROR_REQUEUES: &str = include_str!("../sql/views/error_requeues.sql");
/// `episodes`: threshold `{episode_gap_ms}`.
pub const EPISODES: &str = include_str!("../sql/views/episodes.sql");
/// `causal_edges`: which write triggered which, with the evidence (`{scope}` narrows it).
pub const CAUSAL_EDGES: &str = include_str!("../sql/views/causal_edges.sql");
/// The last statement of `causal_edges`: the strongest edge of each pair, what the view returns.
/// `analyze causality` puts a statement over one kind's edges in its place.
pub const CAUSAL_EDGES_RESULT: &str = "SELECT * FROM strongest\n";

/// The thresholds the registered views use (the CLI's defaults).
pub const DEFAULT_THRESHOLDS: [(&str, u64); 7] = [
    ("hot_writes", 10),
    ("hot_window_seconds", 60),
    ("conflict_min", 3),
    ("requeue_min", 3),
    ("episode_gap_ms", 1000),
    ("trigger_ms", 5000),
    ("fight_turns", 4),
];

/// Every view: its name and its SQL (thresholds still as `{placeholders}`), in dependency order.
pub const VIEWS: [(&str, &str); 9] = [
    ("indexed_operations", include_str!("../sql/views/indexed_operations.sql")),
    ("writes", include_str!("../sql/views/writes.sql")),
    ("object_versions", include_str!("../sql/views/object_versions.sql")),
    ("hot_loops", HOT_LOOPS),
    ("fight_candidates", FIGHT_CANDIDATES),
    ("conflict_storms", CONFLICT_STORMS),
    ("error_requeues", ERROR_REQUEUES),
    ("episodes", EPISODES),
    ("causal_edges", CAUSAL_EDGES),
];

/// Replaces the `{name}` placeholders of `sql` with `values`. A `{scope}` placeholder (a view that
/// an analysis narrows before it aggregates) becomes nothing: the view covers everything.
pub fn fill(sql: &str, values: &[(&str, u64)]) -> String {
    values
        .iter()
        .fold(sql.to_owned(), |s, (name, value)| s.replace(&format!("{{{name}}}"), &value.to_string()))
        .replace("{scope}", "")
}

/// A view's rows for one session (`$1`), with other thresholds than the registered view's.
pub(crate) fn for_session(view_sql: &str, thresholds: &[(&str, u64)], order_by: &str) -> String {
    format!("SELECT * FROM (\n{}\n) WHERE session_id = $1 ORDER BY {order_by}", fill(view_sql, thresholds))
}

/// Registers every view in `ctx` (after the `operations` table).
pub(crate) async fn register(ctx: &SessionContext) -> Result<(), QueryError> {
    for (name, sql) in VIEWS {
        let view = ctx.sql(&fill(sql, &DEFAULT_THRESHOLDS)).await?.into_view();
        ctx.register_table(name, view)?;
    }
    Ok(())
}
