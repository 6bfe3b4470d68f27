//! `kubestep sessions` answers from the summaries the writer stores in every file's footer: they
//! must say exactly what the rows say, after import, after compaction, and a recording with a
//! file that has no summary must still be answered, from the rows.

mod common;
#[path = "common/server.rs"]
mod server;

use std::fs::File;
use std::path::Path;

use common::*;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use kubestep_query::sessions::{SessionSummary, sessions_from_footers, sessions_from_rows};
use server::import_small_files;

fn from_rows(data: &Path) -> Vec<SessionSummary> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let ctx = kubestep_query::open_recording(data).await.expect("opening the recording");
        sessions_from_rows(&ctx).await.expect("sessions from the rows")
    })
}

fn from_footers(data: &Path) -> Option<Vec<SessionSummary>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let ctx = kubestep_query::open_recording(data).await.expect("opening the recording");
        sessions_from_footers(&ctx).await.expect("reading footers never fails: it says None")
    })
}

/// How many SQL statements `kubestep sessions` ran (its SQL log).
fn statements_run(data: &Path) -> usize {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubestep"))
        .args(["sessions", "-d", &data.display().to_string(), "--log-format", "json"])
        .env("KUBESTEP_LOG", "warn,kubestep_query::sql=debug")
        .output()
        .expect("running kubestep");
    assert!(output.status.success(), "{:?}", text(&output));
    String::from_utf8_lossy(&output.stderr).lines().filter(|l| l.contains("\"statement\"")).count()
}

fn cli_sessions(data: &Path) -> serde_json::Value {
    let output = kubestep(&["sessions", "-d", &data.display().to_string(), "--format", "json"], None);
    assert!(output.status.success(), "{:?}", text(&output));
    serde_json::from_slice(&output.stdout).expect("sessions prints JSON")
}

/// Samples (automatic sessions), a simulated cluster in one named session, and a named session
/// of many small files.
fn recording(dir: &Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let files = sample_files();
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    // One sample line is not an audit event: the import stores the rest and says so in its exit code.
    import(&data, &paths, &["-q"]);
    let (log, _) = simulate(dir, "mixed", "7", &["--events", "4000"]);
    let output = import(&data, &[&log], &["-q", "--session", "simulated"]);
    assert!(output.status.success(), "{:?}", text(&output));
    import_small_files(&data, 6, 30);
    data
}

#[test]
fn footers_say_what_the_rows_say_before_and_after_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = recording(dir.path());
    let rows = from_rows(&data);
    assert!(rows.len() >= 10, "samples, simulated and small files: {rows:?}");
    assert!(rows.iter().any(|s| s.session_id == "simulated" && s.actors > 1 && s.writes > 0 && s.errors > 0));
    assert_eq!(from_footers(&data), Some(rows.clone()));
    assert_eq!(cli_sessions(&data), serde_json::to_value(&rows).expect("JSON"));
    assert_eq!(statements_run(&data), 0, "sessions answered from the footers");

    let output = kubestep(&["compact", "-d", &data.display().to_string(), "--target-rows", "100"], None);
    assert!(output.status.success(), "{:?}", text(&output));
    assert!(text(&output).0.contains("merged"), "{:?}", text(&output));
    assert_eq!(from_rows(&data), rows);
    assert_eq!(from_footers(&data), Some(rows));
}

#[test]
fn a_file_without_a_summary_is_answered_from_the_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = recording(dir.path());
    let before = cli_sessions(&data);

    // Rewrite one file of the simulated session as another tool would: same rows, no summary.
    let file = all_files(&data.join("operations/session_id=simulated"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a file of the simulated session");
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&file).expect("open")).expect("a Parquet file");
    let schema = reader.schema().clone();
    let batches: Vec<_> = reader.build().expect("reader").collect::<Result<_, _>>().expect("rows");
    let mut writer = ArrowWriter::try_new(File::create(&file).expect("create"), schema, None).expect("writer");
    for batch in &batches {
        writer.write(batch).expect("write");
    }
    writer.close().expect("close");

    assert_eq!(from_footers(&data), None);
    assert_eq!(cli_sessions(&data), before);
    assert_eq!(statements_run(&data), 1, "sessions answered from the rows");
}

#[test]
fn a_file_outside_the_partitions_is_left_to_the_rows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = recording(dir.path());
    std::fs::write(data.join("operations/notes.txt"), "not a table file").expect("write");
    assert!(from_footers(&data).is_some(), "files the table does not read are ignored");

    let file = all_files(&data.join("operations/session_id=simulated"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .expect("a file of the simulated session");
    std::fs::copy(&file, data.join("operations/stray.parquet")).expect("copy");
    assert_eq!(from_footers(&data), None);
    assert_eq!(cli_sessions(&data), serde_json::to_value(from_rows(&data)).expect("JSON"));
}
