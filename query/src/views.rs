//! The documented views users can query beside `operations`. Each is a readable SQL file in
//! `query/sql/views/`; `docs/QUERIES.md` describes them. Views with thresholds are registered with
//! the defaults; the analyses run the same SQL with the thresholds they were given.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::catalog::view::ViewTable;
use datafusion::catalog::{SchemaProvider, TableProvider};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionState;
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
    for_session_columns(view_sql, thresholds, "*", order_by)
}

/// Some of a view's columns for one session (`$1`): columns left out are not computed (a view's
/// `first_index` numbers the whole session).
pub(crate) fn for_session_columns(view_sql: &str, thresholds: &[(&str, u64)], columns: &str, order_by: &str) -> String {
    format!("SELECT {columns} FROM (\n{}\n) WHERE session_id = $1 ORDER BY {order_by}", fill(view_sql, thresholds))
}

/// Makes every view available in `ctx` (after the `operations` table): the context's `public`
/// schema becomes a [`RecordingSchema`] over the one it had, so a view is planned the first time a
/// statement names it. A command that reads only `operations` (`sessions`, most ad-hoc SQL) plans
/// none of them.
pub(crate) fn register(ctx: &SessionContext) -> Result<(), QueryError> {
    let default = ctx.state().config().options().catalog.clone();
    let catalog = ctx.catalog(&default.default_catalog).ok_or_else(|| {
        QueryError::Data(format!("the query engine has no default catalog {:?}", default.default_catalog))
    })?;
    let tables = catalog.schema(&default.default_schema).ok_or_else(|| {
        QueryError::Data(format!("the query engine has no default schema {:?}", default.default_schema))
    })?;
    let weak_state = ctx.state_weak_ref();
    let state = Box::new(move || weak_state.upgrade().map(|state| state.read().clone()));
    let schema = RecordingSchema { tables, planned: Mutex::new(HashMap::new()), state };
    catalog.register_schema(&default.default_schema, Arc::new(schema))?;
    Ok(())
}

/// The default schema of a recording's context: the tables registered in it (`operations`, and
/// whatever a caller adds), then the documented [`VIEWS`], each planned with the default
/// thresholds when a statement first names it and kept for the next.
///
/// Why not plan them all when the recording opens: nine plans, the causal edges' among them, cost
/// more than a short command's whole query.
struct RecordingSchema {
    /// The schema this one replaced, which holds the registered tables.
    tables: Arc<dyn SchemaProvider>,
    /// The views planned so far, by name.
    planned: Mutex<HashMap<&'static str, Arc<dyn TableProvider>>>,
    /// The context's current state, to plan a view in (`None` once the context is gone).
    state: Box<dyn Fn() -> Option<SessionState> + Send + Sync>,
}

impl std::fmt::Debug for RecordingSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let planned: Vec<&str> = self.planned.lock().map(|p| p.keys().copied().collect()).unwrap_or_default();
        f.debug_struct("RecordingSchema").field("tables", &self.tables).field("planned_views", &planned).finish()
    }
}

impl RecordingSchema {
    /// The view `name`, planned now unless it was before.
    async fn view(&self, name: &'static str, sql: &str) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        if let Some(view) = self.planned.lock().ok().and_then(|planned| planned.get(name).cloned()) {
            return Ok(view);
        }
        let state = (self.state)()
            .ok_or_else(|| DataFusionError::Internal(format!("view {name} named after its context was dropped")))?;
        let definition = fill(sql, &DEFAULT_THRESHOLDS);
        // Views it reads are resolved through this schema again, so they are planned first.
        let plan = state.create_logical_plan(&definition).await?;
        let view: Arc<dyn TableProvider> = Arc::new(ViewTable::new(plan, Some(definition)));
        if let Ok(mut planned) = self.planned.lock() {
            planned.insert(name, Arc::clone(&view));
        }
        Ok(view)
    }
}

#[async_trait]
impl SchemaProvider for RecordingSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.tables.table_names();
        for (view, _) in VIEWS {
            if !names.iter().any(|name| name == view) {
                names.push(view.to_owned());
            }
        }
        names
    }

    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = self.tables.table(name).await? {
            return Ok(Some(table));
        }
        match VIEWS.iter().find(|(view, _)| *view == name) {
            Some((view, sql)) => Ok(Some(self.view(view, sql).await?)),
            None => Ok(None),
        }
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        self.tables.register_table(name, table)
    }

    fn deregister_table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        self.tables.deregister_table(name)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.tables.table_exist(name) || VIEWS.iter().any(|(view, _)| *view == name)
    }
}
