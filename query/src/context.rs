//! The recording as a DataFusion context: the `operations` table and the views over it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ballista::extension::SessionStateExt;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_optimizer::optimizer::PhysicalOptimizer;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchReceiverStreamBuilder;
use datafusion::prelude::{DataFrame, SessionConfig, SessionContext, col};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use kubestep_schemas::schema::columns;
use kubestep_schemas::{file_schema, partition_fields};

use kubestep_schemas::location::{RecordingLocation, RemoteRecording};

use crate::compact_views::ViewsCompactedBeforeSorts;
use crate::consistency::consistently;
use crate::engine::{Engine, EngineError};
use crate::top_rows_per_group::{self, TopRowsPerGroup};

/// The name of the table of operations.
pub const OPERATIONS_TABLE: &str = "operations";

/// Why a recording could not be opened or queried.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The directory holds no recording.
    #[error("no recording at {path}: {reason}")]
    NoRecording {
        /// The directory asked for.
        path: PathBuf,
        /// What is missing.
        reason: String,
    },
    /// The recording has no such session.
    #[error("no session {session:?} in {root} (`kubestep sessions -d {root}` lists them)")]
    UnknownSession {
        /// The session asked for.
        session: String,
        /// The recording.
        root: PathBuf,
    },
    /// A stored value is not what the schema says (a file written by something else).
    #[error("unexpected data: {0}")]
    Data(String),
    /// A statement needed more memory than the query memory limit, in a part that cannot spill.
    #[error(
        "the query needs more memory than the limit of {limit_mb} MiB ({detail}); raise it with {MEMORY_LIMIT_VARIABLE}=MiB"
    )]
    MemoryLimit {
        /// The limit in force.
        limit_mb: usize,
        /// What ran out.
        detail: String,
    },
    /// A recording in object storage could not be read consistently: a compaction under way did
    /// not finish in time, or its journal could not be read.
    #[error("cannot read {url} consistently: {reason}")]
    Compaction {
        /// The recording.
        url: String,
        /// What stood in the way.
        reason: String,
    },
    /// The engine asked for cannot run the query (a Ballista scheduler that is not there).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// DataFusion failed.
    #[error(transparent)]
    DataFusion(DataFusionError),
}

impl From<DataFusionError> for QueryError {
    fn from(e: DataFusionError) -> Self {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(detail) => {
                let detail = detail.split(": Resources exhausted").next().unwrap_or(detail).to_owned();
                QueryError::MemoryLimit { limit_mb: memory_limit_mb(), detail }
            }
            _ => QueryError::DataFusion(e),
        }
    }
}

/// The environment variable that sets the query memory limit, in MiB.
pub const MEMORY_LIMIT_VARIABLE: &str = "KUBESTEP_MEMORY_LIMIT_MB";

/// The memory the engine may hold for sorts, aggregations and joins when nothing else is said:
/// past it, sorts and aggregations spill to temporary files. Query commands then stay under 2 GB
/// at 10M operations on a machine of any size (what they hold beyond this pool is read buffers
/// and results).
pub const DEFAULT_MEMORY_LIMIT_MB: usize = 1024;

/// The query memory limit in MiB: [`MEMORY_LIMIT_VARIABLE`] if set to a number, else the default.
pub fn memory_limit_mb() -> usize {
    std::env::var(MEMORY_LIMIT_VARIABLE)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|mb| *mb > 0)
        .unwrap_or(DEFAULT_MEMORY_LIMIT_MB)
}

/// How many times a query is started again after a file it planned to read vanished.
const MAX_REPLANS: usize = 5;

/// Runs `sql` to completion.
///
/// `kubestep compact` swaps a partition's small files for their merge while queries run. A query
/// that listed the old files and then finds one gone is planned again from a fresh listing, which
/// sees the new files: the answer comes from either the old set or the new one, never a mix. In a
/// bucket, where no listing is atomic, the compaction journal decides ([`consistently`]).
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    log_statement(sql, &[]);
    consistently(ctx, || run_sql_replanning(ctx, sql)).await
}

async fn run_sql_replanning(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    let mut attempt = 0;
    loop {
        let result = async {
            let frame = ctx.sql(sql).await?;
            let allowed = outer_fetch(frame.logical_plan());
            Ok::<_, DataFusionError>(at_most(frame.collect().await?, allowed))
        }
        .await;
        match result {
            Err(e) if attempt < MAX_REPLANS && is_vanished_file(&e) => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "a file vanished during the query (compaction); planning again");
            }
            other => return Ok(other?),
        }
    }
}

/// How many rows the statement's outermost `LIMIT` allows, if it has one.
///
/// Ballista 55 loses the row limit of the last stage's merge (`ORDER BY ... LIMIT n` on a cluster
/// returns the first n rows of every partition, in order), so the client cuts the result to what
/// the statement allows: the first rows are the right ones, the rest must not be there.
fn outer_fetch(plan: &datafusion::logical_expr::LogicalPlan) -> Option<usize> {
    use datafusion::logical_expr::{FetchType, LogicalPlan};
    match plan {
        LogicalPlan::Limit(limit) => match limit.get_fetch_type() {
            Ok(FetchType::Literal(fetch)) => fetch,
            _ => None,
        },
        LogicalPlan::Sort(sort) => sort.fetch,
        _ => None,
    }
}

/// `batches` cut to their first `allowed` rows (all of them when `None`).
fn at_most(batches: Vec<RecordBatch>, allowed: Option<usize>) -> Vec<RecordBatch> {
    let Some(mut remaining) = allowed else {
        return batches;
    };
    let mut kept = Vec::with_capacity(batches.len());
    for batch in batches {
        if remaining == 0 {
            break;
        }
        let rows = batch.num_rows().min(remaining);
        remaining -= rows;
        kept.push(batch.slice(0, rows));
    }
    kept
}

/// Whether an error says that a listed file no longer exists.
fn is_vanished_file(e: &DataFusionError) -> bool {
    let text = e.to_string();
    text.contains("No such file or directory") || text.contains("NotFound") || text.contains("not found: ")
}

/// Opens the recording at `root` as a [`SessionContext`] with the `operations` table registered,
/// running its queries in this process.
///
/// The listing-files cache is off, so files written after the context was created (by a running
/// ingest service) are seen by the next query.
pub async fn open_recording(root: &Path) -> Result<SessionContext, QueryError> {
    open_recording_with(root, &Engine::Local, TextColumns::AsDocumented).await
}

/// How the engine reads the table's text columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TextColumns {
    /// As SCHEMA.md types them, `Utf8`: what a user's SQL sees (`kubestep sql`, `arrow_typeof`,
    /// `DESCRIBE operations`).
    #[default]
    AsDocumented,
    /// The identity columns (verb, kind, names, actor, ...) as `Utf8View`, for a command whose
    /// answer goes through [`crate::values`] and never shows an Arrow type, and that aggregates
    /// into a few groups or streams the session in its order without sorting or joining much:
    /// `kubestep sessions`, `analyze` and `analyze causality` (merging the files in order moves
    /// 16-byte views instead of the text). Same values, less work: see [`scan_schema`]. Sorts,
    /// windows and joins count the dictionary page a view points into once per batch they hold,
    /// which is why a full sort compacts views first ([`crate::compact_views`]); `analyze` at 10M
    /// operations stays within its memory limit that way (peak RSS 1.0-1.1 GiB either way).
    AsViews,
}

/// Opens the recording at `root` like [`open_recording`], with its queries running on `engine`.
///
/// On a Ballista cluster the context plans here and executes there: the table, the views and
/// every setting below travel with each statement, and the cluster's processes read the files
/// themselves (the same path or bucket URL must reach them).
pub async fn open_recording_on(root: &Path, engine: &Engine) -> Result<SessionContext, QueryError> {
    open_recording_with(root, engine, TextColumns::AsDocumented).await
}

/// Opens the recording at `root` like [`open_recording_on`], its text columns read as `text` says.
pub async fn open_recording_with(
    root: &Path,
    engine: &Engine,
    text: TextColumns,
) -> Result<SessionContext, QueryError> {
    let no_recording = |reason: String| QueryError::NoRecording { path: root.to_owned(), reason };
    let location = RecordingLocation::parse(root).map_err(|e| no_recording(e.to_string()))?;
    let (url, remote) = match &location {
        RecordingLocation::Local(root) => (local_operations_url(root)?, None),
        RecordingLocation::Remote(remote) => {
            check_remote_recording(remote).await.map_err(no_recording)?;
            (ListingTableUrl::parse(remote.url_of("operations"))?, Some(remote))
        }
    };

    // Sorts and aggregations share a bounded pool and spill to temporary files past it (the fair
    // pool gives each spilling operator an equal share, so one sort cannot starve the others).
    let pool = datafusion::execution::memory_pool::FairSpillPool::new(memory_limit_mb().saturating_mul(1 << 20));
    let runtime = RuntimeEnvBuilder::new()
        .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
        .with_memory_pool(Arc::new(pool))
        .build_arc()?;
    let mut config = SessionConfig::new().with_information_schema(true);
    let options = config.options_mut();
    // Every file is sorted by the session order. Grouping files by their statistics (files whose
    // time ranges overlap go to different groups) keeps that order through the scan, and preferring
    // the existing order lets the session window (`indexed_operations`) merge sorted streams instead
    // of sorting the whole session again: 3.5x faster on a million operations.
    options.execution.split_file_groups_by_statistics = true;
    options.optimizer.prefer_existing_sort = true;
    // Windows run on one merged stream instead of hash-repartitioning their input. A recording is
    // mostly one session, so a hash split on `session_id` sends every row to one output partition
    // while the other stays empty, and a repartition whose other outputs are empty never makes its
    // producers wait: the scan ran ahead of the window and buffered the session (2.3 GB for the
    // slow-operations statement at 10M operations; 0.6 GB and 1.5x faster without the split).
    options.optimizer.repartition_windows = false;
    apply_environment(options)?;
    if let Some(remote) = remote {
        config = config.with_extension(crate::consistency::watch(remote));
    }
    // `count(DISTINCT x)` beside `count(*)` groups by `x` instead of keeping a set per group.
    // The first N rows per verb (or actor, ...) are kept in heaps instead of sorting every row.
    // Text read as views is compacted before a full sort holds it. Both in this process only, since
    // a Ballista scheduler plans the physical side with its own rules.
    let physical_rules = match engine.scheduler_url() {
        None => local_physical_rules(),
        Some(_) => PhysicalOptimizer::new().rules,
    };
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_optimizer_rules(crate::distinct_counts::optimizer_rules())
        .with_physical_optimizer_rules(physical_rules)
        .build();
    let ctx = match engine.scheduler_url() {
        None => SessionContext::new_with_state(state),
        Some(scheduler) => {
            engine.check_reachable().await?;
            SessionContext::new_with_state(state.upgrade_for_ballista(scheduler)?)
        }
    };
    if let Some(remote) = remote {
        ctx.register_object_store(&remote.store_url, remote.store.clone());
    }

    let read_as = |stored: &DataType| if text == TextColumns::AsViews { as_view(stored) } else { stored.clone() };
    let partition_cols = partition_fields().into_iter().map(|f| (f.name().clone(), read_as(f.data_type()))).collect();
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partition_cols)
        // Every file is sorted by the session order (the writer's SORT_KEY), so windows over a
        // session merge sorted files instead of sorting them.
        .with_file_sort_order(vec![vec![
            col(columns::SESSION_ID).sort(true, false),
            col(columns::RECEIVED_AT).sort(true, false),
            col(columns::AUDIT_ID).sort(true, false),
            col(columns::STAGE).sort(true, false),
        ]]);
    let table_config = ListingTableConfig::new(url).with_listing_options(options).with_schema(match text {
        TextColumns::AsDocumented => file_schema(),
        TextColumns::AsViews => scan_schema(),
    });
    let table = ListingTable::try_new(table_config)?;
    ctx.register_table(OPERATIONS_TABLE, Arc::new(table))?;
    crate::views::register(&ctx)?;
    Ok(ctx)
}

/// DataFusion's physical optimizer rules with ours: [`TopRowsPerGroup`] right after DataFusion's
/// switched-off rule for the same shape (first, should a release rename it: it must run before the
/// rules that place repartitions and sorts), and [`ViewsCompactedBeforeSorts`] after every rule
/// that places a sort, just before the final sanity check.
fn local_physical_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>> {
    let mut rules = PhysicalOptimizer::new().rules;
    let at = rules.iter().position(|rule| rule.name() == top_rows_per_group::AFTER_RULE).map_or(0, |at| at + 1);
    rules.insert(at, Arc::new(TopRowsPerGroup));
    let at = rules.iter().position(|rule| rule.name() == "SanityCheckPlan").unwrap_or(rules.len());
    rules.insert(at, Arc::new(ViewsCompactedBeforeSorts));
    rules
}

/// The text columns [`TextColumns::AsViews`] reads as `Utf8View`: who did what to which kind of
/// object, a few distinct values repeated over millions of rows.
const VIEW_COLUMNS: [&str; 17] = [
    columns::STAGE,
    columns::LEVEL,
    columns::VERB,
    columns::OPERATION_TYPE,
    columns::API_GROUP,
    columns::API_VERSION,
    columns::RESOURCE,
    columns::SUBRESOURCE,
    columns::KIND,
    columns::NAMESPACE,
    columns::NAME,
    columns::ACTOR_ID,
    columns::USERNAME,
    columns::USER_AGENT,
    columns::IMPERSONATED_USER,
    columns::POD_NAME,
    columns::FIELD_MANAGER,
];

/// The file columns as [`TextColumns::AsViews`] reads them: the [`VIEW_COLUMNS`] as `Utf8View`,
/// the rest as stored (SCHEMA.md).
///
/// Names, kinds, verbs and actors are stored with a dictionary. Read as `Utf8View`, each row
/// becomes a 16-byte view into the dictionary page instead of a copy of its bytes, and grouping and
/// comparing them look at the inlined prefix first: `sessions` at 10M operations needs a fifth less
/// CPU. Values that are nearly all distinct (ids, resource versions, URIs, errors) and the JSON
/// documents stay `Utf8`: their pages are plain, a view keeps a whole decompressed page alive, and
/// operators that hold batches count that page against the memory limit once per batch that points
/// into it (every text column as a view raised `analyze`'s peak by 40%). The values are the same either way; only `arrow_typeof` tells
/// them apart, which is why user SQL sees [`TextColumns::AsDocumented`].
fn scan_schema() -> datafusion::arrow::datatypes::SchemaRef {
    use datafusion::arrow::datatypes::Schema;
    let fields: Vec<_> = file_schema()
        .fields()
        .iter()
        .map(|field| {
            let field = field.as_ref().clone();
            if VIEW_COLUMNS.contains(&field.name().as_str()) {
                let read = as_view(field.data_type());
                field.with_data_type(read)
            } else {
                field
            }
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// The type a short column of `stored` type is read as by [`TextColumns::AsViews`]: `Utf8View`
/// for text.
fn as_view(stored: &DataType) -> DataType {
    match stored {
        DataType::Utf8 => DataType::Utf8View,
        other => other.clone(),
    }
}

/// The URL of a local recording's `operations` directory, after checking that it holds sessions.
fn local_operations_url(root: &Path) -> Result<ListingTableUrl, QueryError> {
    let no_recording = |reason: &str| QueryError::NoRecording { path: root.to_owned(), reason: reason.to_owned() };
    let operations = root.join("operations");
    if !operations.is_dir() {
        return Err(no_recording(if root.is_dir() {
            "it has no operations/ directory (import or record something first)"
        } else {
            "the directory does not exist"
        }));
    }
    let has_sessions = std::fs::read_dir(&operations)
        .map(|entries| entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with("session_id=")))
        .unwrap_or(false);
    if !has_sessions {
        return Err(no_recording("it holds no operations yet (import or record something first)"));
    }
    let absolute = std::path::absolute(&operations).map_err(|e| no_recording(&e.to_string()))?;
    Ok(ListingTableUrl::parse(format!("{}/", absolute.display()))?)
}

/// Checks that a recording in object storage holds sessions: one listing of `operations/`, which
/// also surfaces a wrong bucket, endpoint or credentials as one clear line.
async fn check_remote_recording(remote: &RemoteRecording) -> Result<(), String> {
    let operations = remote.path_of("operations");
    let listing = remote
        .store
        .list_with_delimiter(Some(&operations))
        .await
        .map_err(|e| format!("listing it: {}", kubestep_schemas::location::store_error_line(&e)))?;
    let has_sessions =
        listing.common_prefixes.iter().any(|p| p.filename().is_some_and(|name| name.starts_with("session_id=")));
    if has_sessions {
        Ok(())
    } else {
        Err("it holds no operations (nothing under operations/session_id=...; import or record something first)"
            .to_owned())
    }
}

/// Overrides DataFusion settings with the `DATAFUSION_*` environment variables that are set, named
/// as DataFusion names them (`datafusion.execution.batch_size` is `DATAFUSION_EXECUTION_BATCH_SIZE`):
/// the engine can be tuned for one machine without a rebuild, and ours are only the defaults.
fn apply_environment(options: &mut datafusion::config::ConfigOptions) -> Result<(), QueryError> {
    let from_env = datafusion::config::ConfigOptions::from_env()?;
    for entry in from_env.entries() {
        let variable = entry.key.to_uppercase().replace('.', "_");
        if std::env::var_os(&variable).is_some()
            && let Some(value) = entry.value
        {
            options.set(&entry.key, &value)?;
        }
    }
    Ok(())
}

/// Plans `sql` with positional parameters (`$1`, `$2`, ...) bound to `params`.
pub(crate) async fn frame(ctx: &SessionContext, sql: &str, params: Vec<ScalarValue>) -> Result<DataFrame, QueryError> {
    log_statement(sql, &params);
    Ok(ctx.sql(sql).await?.with_param_values(params)?)
}

/// Runs `sql` for a pass in Rust over its rows: the statement runs on a task of its own, up to
/// [`READ_AHEAD_BATCHES`] batches ahead of the pass, so the engine's work (scans, the merge into
/// session order) and the pass's use two cores instead of taking turns on one. Dropping the stream
/// stops the statement.
pub(crate) async fn stream_ahead(
    ctx: &SessionContext,
    sql: &str,
    params: Vec<ScalarValue>,
) -> Result<SendableRecordBatchStream, QueryError> {
    let mut stream = frame(ctx, sql, params).await?.execute_stream().await?;
    let mut builder = RecordBatchReceiverStreamBuilder::new(stream.schema(), READ_AHEAD_BATCHES);
    let tx = builder.tx();
    builder.spawn(async move {
        while let Some(batch) = stream.next().await {
            if tx.send(batch).await.is_err() {
                // The pass stopped reading.
                break;
            }
        }
        Ok(())
    });
    Ok(builder.build())
}

/// The same recording, settings and memory pool as `ctx`, with a statement's filters evaluated
/// while its Parquet pages are decoded (`pushdown_filters`), a column at a time: the wide columns
/// are then decoded only for the rows that pass. That includes the filter a hash join derives
/// from its build side (the keys it holds), so a statement that joins a short list of objects
/// with their writes decodes the bodies of those objects' writes only. Not the default: for the
/// statements that keep most rows, or read no wide column, evaluating filters during decoding
/// costs more than it saves (`kubestep analyze` as a whole was no faster with it).
pub(crate) fn with_filters_in_scan(ctx: &SessionContext) -> SessionContext {
    let mut state = ctx.state();
    state.config_mut().options_mut().execution.parquet.pushdown_filters = true;
    SessionContext::new_with_state(state)
}

/// How many batches a statement streamed by [`stream_ahead`] may run ahead of its pass: enough to
/// keep both busy, few enough that memory stays a few batches.
const READ_AHEAD_BATCHES: usize = 2;

/// The tracing target every statement a command runs is logged under, at debug level.
///
/// `KUBESTEP_LOG=kubestep_query::sql=debug` shows what a command asked of the engine: the SQL as
/// it was planned and its `$1, $2, ...` parameters as SQL literals (a JSON array of strings), enough
/// to run the same statement by hand or in another engine (the benchmarks replay them in DuckDB).
pub const SQL_LOG_TARGET: &str = "kubestep_query::sql";

fn log_statement(sql: &str, params: &[ScalarValue]) {
    if tracing::enabled!(target: SQL_LOG_TARGET, tracing::Level::DEBUG) {
        let literals: Vec<String> = params.iter().map(sql_literal).collect();
        let params = serde_json::to_string(&literals).unwrap_or_default();
        tracing::debug!(target: SQL_LOG_TARGET, sql, params, "statement");
    }
}

/// `value` written as a SQL literal that DataFusion and other engines read back as the same value.
pub fn sql_literal(value: &ScalarValue) -> String {
    if value.is_null() {
        return "NULL".to_owned();
    }
    match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            format!("'{}'", s.replace('\'', "''"))
        }
        ScalarValue::Boolean(Some(b)) => if *b { "TRUE" } else { "FALSE" }.to_owned(),
        ScalarValue::TimestampMicrosecond(Some(us), _) => {
            format!("CAST('{}' AS TIMESTAMP)", crate::values::format_time(*us))
        }
        other => other.to_string(),
    }
}

/// Runs a parameterized query to completion, re-planning like [`run_sql`] when a file vanished.
pub(crate) async fn collect(
    ctx: &SessionContext,
    sql: &str,
    params: Vec<ScalarValue>,
) -> Result<Vec<RecordBatch>, QueryError> {
    let mut attempt = 0;
    loop {
        let result = async { frame(ctx, sql, params.clone()).await?.collect().await.map_err(QueryError::from) }.await;
        match result {
            Err(QueryError::DataFusion(e)) if attempt < MAX_REPLANS && is_vanished_file(&e) => attempt += 1,
            other => return other,
        }
    }
}

/// Fails with [`QueryError::UnknownSession`] unless `session` has operations.
pub async fn ensure_session(ctx: &SessionContext, root: &Path, session: &str) -> Result<(), QueryError> {
    let batches = collect(
        ctx,
        "SELECT count(*) FROM (SELECT 1 FROM operations WHERE session_id = $1 LIMIT 1)",
        vec![ScalarValue::from(session)],
    )
    .await?;
    let found = batches.first().and_then(|b| crate::values::u64_at(b, 0, 0)).unwrap_or(0);
    if found == 0 {
        return Err(QueryError::UnknownSession { session: session.to_owned(), root: root.to_owned() });
    }
    Ok(())
}
