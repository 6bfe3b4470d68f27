//! What an import leaves on disk is what SPEC section 5 promises: hive-partitioned, zstd, sorted,
//! bounded row groups, statistics, the exact column names and types, and no temporary files.

mod common;

use std::fs::File;
use std::path::Path;

use common::*;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::TimestampMicrosecondType;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, Encoding};

fn imported_samples() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = sample_files();
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    import(dir.path(), &paths, &[]);
    dir
}

#[test]
fn the_table_has_exactly_the_documented_columns_and_types() {
    let dir = imported_samples();
    let batches = query(dir.path(), "SELECT * FROM operations LIMIT 1");
    let schema = batches[0].schema();
    let got: Vec<(String, String)> =
        schema.fields().iter().map(|f| (f.name().clone(), f.data_type().to_string())).collect();
    let want: Vec<(String, String)> = kubestep_schemas::table_schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect();
    assert_eq!(got, want);
}

#[test]
fn text_read_as_views_gives_the_same_rows() {
    let dir = imported_samples();
    let everything = "SELECT * FROM operations ORDER BY session_id, received_at, audit_id, stage";
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let root = dir.path();
    let (documented, views) = runtime.block_on(async {
        let run = |text| async move {
            let ctx = kubestep_query::open_recording_with(root, &kubestep_query::Engine::Local, text)
                .await
                .expect("opening the recording");
            ctx.sql(everything).await.expect("planning").collect().await.expect("running")
        };
        (run(kubestep_query::TextColumns::AsDocumented).await, run(kubestep_query::TextColumns::AsViews).await)
    });
    let types = |batches: &[datafusion::arrow::array::RecordBatch]| {
        batches[0].schema().fields().iter().map(|f| f.data_type().to_string()).collect::<Vec<_>>()
    };
    assert!(types(&views).iter().any(|t| t == "Utf8View"), "{:?}", types(&views));
    assert!(!types(&documented).iter().any(|t| t == "Utf8View"), "{:?}", types(&documented));
    let shown = |batches: &[datafusion::arrow::array::RecordBatch]| {
        datafusion::arrow::util::pretty::pretty_format_batches(batches).expect("format").to_string()
    };
    assert!(documented.iter().map(|b| b.num_rows()).sum::<usize>() > 40);
    assert_eq!(shown(&documented), shown(&views));
}

#[test]
fn files_follow_the_hive_layout_and_are_complete_sorted_zstd_parquet() {
    let dir = imported_samples();
    let files = all_files(&dir.path().join("operations"));
    assert!(!files.is_empty());
    for path in &files {
        let relative = path.strip_prefix(dir.path().join("operations")).expect("under operations/");
        let parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
        assert_eq!(parts.len(), 3, "{parts:?}");
        let session = parts[0].strip_prefix("session_id=").expect("session_id=...");
        assert!(kubestep_schemas::session::validate_session_name(session).is_ok(), "{session}");
        let date = parts[1].strip_prefix("date=").expect("date=...");
        assert!(chrono_like_date(date), "{date}");
        assert!(
            parts[2].ends_with(".parquet") && !parts[2].starts_with('.'),
            "{} (a temporary file left behind?)",
            parts[2]
        );

        let builder =
            ParquetRecordBatchReaderBuilder::try_new(File::open(path).expect("open")).expect("parquet footer");
        assert_eq!(builder.schema().fields(), kubestep_schemas::file_schema().fields());
        let metadata = builder.metadata().clone();
        // The footer summarises the file's rows for `kubestep sessions`.
        let summary = kubestep_schemas::summary::FileSummary::in_footer(&metadata).expect("a summary in the footer");
        assert_eq!(summary.operations, metadata.file_metadata().num_rows() as u64);
        for row_group in metadata.row_groups() {
            assert!(row_group.num_rows() <= 128 * 1024);
            for column in row_group.columns() {
                assert!(matches!(column.compression(), Compression::ZSTD(_)), "{:?}", column.compression());
            }
            let received = row_group.column(3);
            assert_eq!(received.column_path().string(), "received_at");
            assert!(received.statistics().is_some_and(|s| s.min_bytes_opt().is_some()), "statistics on received_at");
            // The times are stored as deltas, without a dictionary.
            for column in [received, row_group.column(4)] {
                let encodings: Vec<Encoding> = column.encodings().collect();
                assert!(encodings.contains(&Encoding::DELTA_BINARY_PACKED), "{encodings:?}");
                assert!(!encodings.contains(&Encoding::RLE_DICTIONARY), "{encodings:?}");
            }
        }
        let mut last = i64::MIN;
        for batch in builder.build().expect("reader") {
            let batch = batch.expect("batch");
            let received =
                batch.column_by_name("received_at").expect("column").as_primitive::<TimestampMicrosecondType>();
            for value in received.values() {
                assert!(*value >= last, "sorted by received_at in {}", path.display());
                last = *value;
            }
            // Every row's date partition is the UTC date of its received_at.
            let day = chrono_day(*received.values().first().expect("a row"));
            assert_eq!(day, date);
        }
    }
}

fn chrono_like_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

/// UTC `YYYY-MM-DD` of a microsecond timestamp, by civil-from-days arithmetic (no shared code).
fn chrono_day(us: i64) -> String {
    let days = us.div_euclid(86_400_000_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[test]
fn a_missing_recording_is_a_one_line_error_and_creates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nothing-here");
    let out = kubestep(&["sql", "-d", &missing.display().to_string(), "SELECT 1"], None);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no recording at") && stderr.contains("does not exist"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(!missing.exists());
}

#[test]
fn a_full_sort_of_text_read_as_views_holds_compacted_batches() {
    let dir = imported_samples();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let root = dir.path();
    let plan = |text, sql: &'static str| {
        runtime.block_on(async move {
            let ctx = kubestep_query::open_recording_with(root, &kubestep_query::Engine::Local, text)
                .await
                .expect("opening the recording");
            let batches =
                ctx.sql(&format!("EXPLAIN {sql}")).await.expect("planning").collect().await.expect("explaining");
            datafusion::arrow::util::pretty::pretty_format_batches(&batches).expect("format").to_string()
        })
    };
    let full_sort = "SELECT name, kind, actor_id FROM operations ORDER BY name, duration_ms";
    let top = "SELECT name, kind, actor_id FROM operations ORDER BY name, duration_ms LIMIT 3";
    let compacts = |text, sql| plan(text, sql).contains("CoalesceBatchesExec");
    assert!(
        compacts(kubestep_query::TextColumns::AsViews, full_sort),
        "{}",
        plan(kubestep_query::TextColumns::AsViews, full_sort)
    );
    assert!(!compacts(kubestep_query::TextColumns::AsViews, top), "a top K holds a few rows");
    assert!(!compacts(kubestep_query::TextColumns::AsDocumented, full_sort), "no views, nothing to compact");
}
