//! An import holds one partition per (session, day) in memory until the partition is big enough for
//! a file. A log spanning many days must not hold them all: past `max_buffered_bytes`, the largest
//! partition is written out early, and no record is lost on the way.

use kubestep_ingest::{IngestConfig, Ingestor};

const DAYS: u32 = 28;
const PER_DAY: u32 = 300;

/// One successful ConfigMap update on `day`, with a padded object so that a day is about 1 MB.
fn event(day: u32, i: u32) -> String {
    let padding = "x".repeat(2000);
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"id-{day}-{i}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/ns/configmaps/cm-{i}","verb":"update","user":{{"username":"system:serviceaccount:ns:ctl"}},"objectRef":{{"resource":"configmaps","namespace":"ns","name":"cm-{i}","apiVersion":"v1"}},"responseStatus":{{"code":200}},"responseObject":{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"cm-{i}","namespace":"ns","uid":"u-{i}","resourceVersion":"{day}{i:04}"}},"data":{{"pad":"{padding}"}}}},"requestReceivedTimestamp":"2024-05-{day:02}T10:00:00.{i:06}Z","stageTimestamp":"2024-05-{day:02}T10:00:00.{i:06}Z"}}"#
    )
}

/// Imports the days one block each; returns the largest buffered size seen after a block, the
/// files written before `finish`, and the records stored in the end.
fn import(root: &std::path::Path, budget: usize) -> (usize, usize, u64) {
    let config = IngestConfig { session: Some("s".into()), max_buffered_bytes: budget, ..IngestConfig::default() };
    let mut ingestor = Ingestor::new(root, "budget", config);
    let mut peak = 0;
    let mut lines = 0;
    let mut early_files = 0;
    for day in 1..=DAYS {
        let block: String = (0..PER_DAY).map(|i| event(day, i) + "\n").collect();
        ingestor.ingest_lines("test", block.as_bytes(), lines).expect("ingesting");
        lines += PER_DAY as usize;
        peak = peak.max(ingestor.buffered_bytes());
        early_files += ingestor.drain_written().len();
    }
    let (stats, _) = ingestor.finish().expect("finishing");
    assert_eq!(stats.rejected, 0, "{:?}", stats.rejections);
    (peak, early_files, stats.records_stored)
}

#[test]
fn many_days_stay_within_the_buffer_budget_and_every_record_is_stored() {
    let budget = 2 << 20;
    let tmp = tempfile::tempdir().expect("tempdir");
    let (peak, early_files, stored) = import(&tmp.path().join("bounded"), budget);
    assert_eq!(stored, u64::from(DAYS * PER_DAY), "every record is stored");
    assert!(early_files > 0, "partitions were written out before the end");
    // One record may land after the check that keeps the budget.
    assert!(peak <= budget + (64 << 10), "buffered {peak} bytes with a budget of {budget}");

    // Without the pressure (the default budget), the same input stays buffered to the end.
    let (unbounded_peak, unbounded_early, stored) = import(&tmp.path().join("default"), 512 << 20);
    assert_eq!(stored, u64::from(DAYS * PER_DAY));
    assert_eq!(unbounded_early, 0);
    assert!(unbounded_peak > budget * 4, "the input is big enough to need the budget ({unbounded_peak} bytes)");
}
