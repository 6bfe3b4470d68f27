//! # kubestep-query
//!
//! Opens a recording directory as a DataFusion [`SessionContext`] whose table `operations` is the
//! hive-partitioned Parquet tree the ingest side writes. This crate only reads: it never creates,
//! changes or deletes anything in a recording.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext, col};
use kubestep_schemas::schema::columns;
use kubestep_schemas::{file_schema, partition_fields};

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
    /// DataFusion failed.
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
}

/// How many times a query is started again after a file it planned to read vanished.
const MAX_REPLANS: usize = 5;

/// Runs `sql` to completion.
///
/// `kubestep compact` swaps a partition's small files for their merge while queries run. A query
/// that listed the old files and then finds one gone is planned again from a fresh listing, which
/// sees the new files: the answer comes from either the old set or the new one, never a mix.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, QueryError> {
    let mut attempt = 0;
    loop {
        let result = async { ctx.sql(sql).await?.collect().await }.await;
        match result {
            Err(e) if attempt < MAX_REPLANS && is_vanished_file(&e) => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "a file vanished during the query (compaction); planning again");
            }
            other => return Ok(other?),
        }
    }
}

/// Whether an error says that a listed file no longer exists.
fn is_vanished_file(e: &DataFusionError) -> bool {
    let text = e.to_string();
    text.contains("No such file or directory") || text.contains("NotFound") || text.contains("not found: ")
}

/// Opens the recording at `root` as a [`SessionContext`] with the `operations` table registered.
///
/// The listing-files cache is off, so files written after the context was created (by a running
/// ingest service) are seen by the next query.
pub async fn open_recording(root: &Path) -> Result<SessionContext, QueryError> {
    let operations = root.join("operations");
    if !operations.is_dir() {
        let reason = if root.is_dir() {
            "it has no operations/ directory (import or record something first)".to_owned()
        } else {
            "the directory does not exist".to_owned()
        };
        return Err(QueryError::NoRecording { path: root.to_owned(), reason });
    }
    let absolute = std::path::absolute(&operations)
        .map_err(|e| QueryError::NoRecording { path: root.to_owned(), reason: e.to_string() })?;
    let url = ListingTableUrl::parse(format!("{}/", absolute.display()))?;

    let runtime = RuntimeEnvBuilder::new()
        .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
        .build_arc()?;
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config_rt(config, runtime);

    let partition_cols = partition_fields().into_iter().map(|f| (f.name().clone(), f.data_type().clone())).collect();
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(partition_cols)
        .with_file_sort_order(vec![vec![col(columns::RECEIVED_AT).sort(true, false)]]);
    let table_config = ListingTableConfig::new(url).with_listing_options(options).with_schema(file_schema());
    let table = ListingTable::try_new(table_config)?;
    ctx.register_table(OPERATIONS_TABLE, Arc::new(table))?;
    Ok(ctx)
}
