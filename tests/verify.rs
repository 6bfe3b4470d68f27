//! `kubestep verify`: a sound recording passes; each kind of damage is found, named with its path
//! and a repair, and makes the exit code 1 (or, for what the service repairs itself, is a notice).

mod common;
#[path = "common/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use server::{event_list, synthetic_event};

/// A recording of session `s` made of `files` imports of 30 events each.
fn recording(files: u64) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for f in 0..files {
        let log = tmp.path().join(format!("{f}.log"));
        let events: Vec<String> = (0..30).map(|n| synthetic_event(&format!("f{f}-{n}"), f * 30 + n)).collect();
        std::fs::write(&log, events.join("\n")).unwrap();
        let output = import(&data, &[&log], &["-q", "--session", "s"]);
        assert!(output.status.success(), "{:?}", text(&output));
    }
    (tmp, data)
}

fn parquet_files(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = all_files(&data.join("operations"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    files.sort();
    files
}

/// Runs `kubestep verify`; the exit code and stdout.
fn verify(data: &Path) -> (Option<i32>, String) {
    let output = kubestep(&["verify", "-d", &data.display().to_string()], None);
    let (stdout, stderr) = text(&output);
    (output.status.code(), format!("{stdout}{stderr}"))
}

#[test]
fn a_sound_recording_passes() {
    let (_tmp, data) = recording(3);
    let (code, out) = verify(&data);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("3 files, 90 rows in 1 sessions"), "{out}");
    assert!(out.contains("ok: the recording is consistent"), "{out}");
    let json = kubestep(&["verify", "-d", &data.display().to_string(), "--format", "json"], None);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["rows"], 90);
    assert_eq!(report["findings"].as_array().map(Vec::len), Some(0));
}

#[test]
fn every_real_sample_verifies_after_import() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let files = sample_files();
    let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let _ = import(&data, &refs, &["-q"]);
    let (code, out) = verify(&data);
    assert_eq!(code, Some(0), "{out}");
    let stored = count(&data, "SELECT count(*) FROM operations");
    assert!(out.contains(&format!(" {stored} rows")), "{out}");
}

#[test]
fn truncated_and_damaged_files_are_errors_naming_the_file() {
    let (_tmp, data) = recording(3);
    let files = parquet_files(&data);
    // Cut the footer off the first file, and overwrite the pages of the second with zeros.
    let first = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &first[..first.len() / 2]).unwrap();
    let mut second = std::fs::read(&files[1]).unwrap();
    let len = second.len();
    second[8..len / 2].fill(0);
    std::fs::write(&files[1], &second).unwrap();
    let (code, out) = verify(&data);
    assert_eq!(code, Some(1), "{out}");
    for damaged in &files[..2] {
        let line = out.lines().find(|l| l.contains(&damaged.display().to_string())).unwrap_or_default();
        assert!(line.starts_with("error:") && line.contains("cannot be read"), "{damaged:?} not reported:\n{out}");
    }
    assert!(!out.contains(&files[2].display().to_string()), "the sound file is not blamed:\n{out}");
    assert!(out.contains("repair: move it out of the recording"), "{out}");
}

#[test]
fn events_stored_twice_are_found_and_compaction_repairs_them() {
    let (_tmp, data) = recording(2);
    let files = parquet_files(&data);
    let copy = files[0].with_file_name("copied-by-hand-000001.parquet");
    std::fs::copy(&files[0], &copy).unwrap();
    let (code, out) = verify(&data);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("30 events stored more than once"), "{out}");
    assert!(out.contains("kubestep compact"), "{out}");

    let compacted = kubestep(&["compact", "-d", &data.display().to_string(), "--session", "s"], None);
    assert!(compacted.status.success(), "{:?}", text(&compacted));
    let (code, out) = verify(&data);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(rows(&data, "SELECT count(*), count(DISTINCT audit_id) FROM operations")[0], vec!["60", "60"]);
}

#[test]
fn a_foreign_parquet_file_is_an_error() {
    let (_tmp, data) = recording(1);
    let partition = parquet_files(&data)[0].parent().unwrap().to_owned();
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![1, 2, 3]))]).unwrap();
    let foreign = partition.join("foreign.parquet");
    let mut writer = ArrowWriter::try_new(std::fs::File::create(&foreign).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let (code, out) = verify(&data);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("foreign.parquet: its schema is not the operation record's"), "{out}");
}

/// Writes `file` again with the same rows and, in its footer, `summary` under the summary key.
fn rewrite_with_summary(file: &Path, summary: Option<String>) {
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use datafusion::parquet::file::metadata::KeyValue;
    use datafusion::parquet::file::properties::WriterProperties;
    let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(file).unwrap()).unwrap();
    let schema = Arc::new(reader.schema().as_ref().clone().with_metadata(Default::default()));
    let batches: Vec<RecordBatch> = reader.build().unwrap().collect::<Result<_, _>>().unwrap();
    let metadata = summary.map(|s| vec![KeyValue::new(kubestep_schemas::summary::SUMMARY_KEY.to_owned(), s)]);
    let props = WriterProperties::builder().set_key_value_metadata(metadata).build();
    let mut writer = ArrowWriter::try_new(std::fs::File::create(file).unwrap(), schema, Some(props)).unwrap();
    for batch in &batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
}

#[test]
fn a_footer_summary_unlike_the_rows_is_an_error_and_a_missing_one_a_notice() {
    let (_tmp, data) = recording(2);
    let files = parquet_files(&data);
    rewrite_with_summary(&files[0], None);
    let (code, out) = verify(&data);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("1 file(s) have no summary of their rows in the footer"), "{out}");

    let wrong = kubestep_schemas::summary::FileSummary { operations: 31, ..Default::default() };
    rewrite_with_summary(&files[1], Some(wrong.to_footer_value()));
    let (code, out) = verify(&data);
    assert_eq!(code, Some(1), "{out}");
    let name = files[1].file_name().unwrap().to_string_lossy().into_owned();
    assert!(out.lines().any(|l| l.contains(&name) && l.contains("says 31 operations")), "{out}");
    assert!(out.contains("its rows hold 30 operations"), "{out}");
}

#[test]
fn a_crash_leaves_notices_and_damaged_wal_history_is_an_error() {
    let (_tmp, data) = recording(1);
    let partition = parquet_files(&data)[0].parent().unwrap().to_owned();
    std::fs::write(partition.join(".w-000009.parquet.tmp"), b"PAR1 half").unwrap();
    let wal_dir = data.join("wal");
    let body = event_list(&[synthetic_event("in-wal", 1)]);
    {
        let mut wal = kubestep_ingest::wal::Wal::create(&wal_dir).unwrap();
        wal.append_group([(None, &body[..])]).unwrap();
        wal.append_group([(None, &body[..])]).unwrap();
    }
    let segment = kubestep_ingest::wal::segment_ids(&wal_dir).unwrap()[0];
    let path = wal_dir.join(format!("{segment:020}.wal"));
    let len = std::fs::metadata(&path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 10).unwrap();
    // A torn tail and a temporary file: what a crash leaves, repaired at the next start.
    let (code, out) = verify(&data);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("notice:") && out.contains(".w-000009.parquet.tmp"), "{out}");
    assert!(out.contains("a torn entry") && out.contains("cuts it off at its next start"), "{out}");
    assert!(out.contains("1 acknowledged batches are in the write-ahead log"), "{out}");

    // The same damage in an older segment loses acknowledged batches.
    let next = wal_dir.join(format!("{:020}.wal", segment + 1));
    {
        let mut wal = kubestep_ingest::wal::Wal::create(&wal_dir).unwrap();
        wal.append_group([(None, &body[..])]).unwrap();
    }
    assert!(next.exists() || kubestep_ingest::wal::segment_ids(&wal_dir).unwrap().len() == 2);
    let (code, out) = verify(&data);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("of an older segment cannot be replayed"), "{out}");
}

#[test]
fn a_directory_that_is_no_recording_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, out) = verify(tmp.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("is not a KubeStep recording"), "{out}");
}
