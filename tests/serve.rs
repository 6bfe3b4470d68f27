//! `kubestep serve` end to end: the real binary on an ephemeral loopback port, fed over HTTP,
//! read back through the query layer.

mod common;
#[path = "common/server.rs"]
mod server;

use std::collections::BTreeMap;

use common::*;
use server::*;

/// Every column, in a stable row order, for comparing two recordings.
const ALL_ROWS: &str = "SELECT * FROM operations ORDER BY received_at, audit_id, stage";

/// The JSON-lines samples whose every line is a top-level audit event, as parsed lines.
fn sample_event_lines() -> Vec<(std::path::PathBuf, Vec<String>)> {
    let mut out = Vec::new();
    for path in sample_files() {
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.len() < 2 {
            continue;
        }
        let all_events = lines.iter().all(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .is_ok_and(|v| v.get("auditID").is_some() && v.get("stage").is_some())
        });
        if all_events {
            out.push((path, lines.into_iter().map(str::to_owned).collect()));
        }
    }
    assert!(out.len() >= 5, "expected several JSON-lines samples, found {}", out.len());
    out
}

#[test]
fn event_lists_of_the_samples_are_stored_as_import_stores_them() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served");
    let imported = tmp.path().join("imported");
    let samples = sample_event_lines();
    let mut server = TestServer::start(&served, &["--flush-interval", "1h"]);
    let mut files = Vec::new();
    for (path, lines) in &samples {
        // The API server sends up to 400 events per batch; send small batches to cross boundaries.
        for chunk in lines.chunks(7) {
            let (status, answer) = server.post("/audit", &event_list(chunk));
            assert_eq!(status, 200, "{}: {answer}", path.display());
        }
        files.push(path.as_path());
    }
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    let output = import(&imported, &files, &["-q"]);
    assert!(output.status.code().is_some_and(|c| c <= 1), "{:?}", text(&output));

    let served_rows = rows(&served, ALL_ROWS);
    let imported_rows = rows(&imported, ALL_ROWS);
    assert!(served_rows.len() > 50, "only {} rows", served_rows.len());
    assert_eq!(served_rows.len(), imported_rows.len());
    for (s, i) in served_rows.iter().zip(&imported_rows) {
        assert_eq!(s, i);
    }
    // Nothing is left in the WAL after a clean shutdown.
    let wal: Vec<_> = std::fs::read_dir(served.join("wal")).unwrap().flatten().collect();
    assert!(wal.iter().all(|e| !e.file_name().to_string_lossy().ends_with(".wal")), "{wal:?}");
}

#[test]
fn a_batch_posted_twice_is_stored_once_and_concurrent_batches_are_all_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start(&data, &["--flush-interval", "1h"]);
    let batch = event_list(&(0..50).map(|n| synthetic_event(&format!("twice-{n}"), n)).collect::<Vec<_>>());
    assert_eq!(server.post("/audit", &batch).0, 200);
    assert_eq!(server.post("/audit", &batch).0, 200);
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let url = format!("{}/audit", server.base);
            std::thread::spawn(move || {
                for b in 0..5u64 {
                    let items: Vec<String> = (0..40)
                        .map(|n| {
                            let i = 1000 + t * 1000 + b * 100 + n;
                            synthetic_event(&format!("conc-{i}"), i)
                        })
                        .collect();
                    let (status, answer) = post(&url, &event_list(&items));
                    assert_eq!(status, 200, "{answer}");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.terminate(), Some(0));
    assert_eq!(count(&data, "SELECT count(*) FROM operations WHERE audit_id LIKE 'twice-%'"), 50);
    assert_eq!(count(&data, "SELECT count(*) FROM operations WHERE audit_id LIKE 'conc-%'"), 4 * 5 * 40);
    assert_eq!(count(&data, "SELECT count(DISTINCT audit_id) FROM operations"), 50 + 4 * 5 * 40);
}

#[test]
fn bad_bodies_are_refused_while_a_good_batch_beside_them_is_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start(&data, &["--max-body", "64KiB", "--flush-interval", "1h"]);
    let good = event_list(&(0..20).map(|n| synthetic_event(&format!("good-{n}"), n)).collect::<Vec<_>>());
    let huge = event_list(&(0..150).map(|n| synthetic_event(&format!("huge-{n}"), n)).collect::<Vec<_>>());
    // Over the limit, but not so far over that the server closes the connection instead of answering.
    assert!(huge.len() > 64 << 10 && huge.len() < 4 * (64 << 10), "{}", huge.len());
    let mut truncated = good.clone();
    truncated.truncate(good.len() / 2);
    let url = format!("{}/audit", server.base);
    let handles: Vec<_> =
        [huge, truncated, br#"{"kind":"Pod","apiVersion":"v1","metadata":{}}"#.to_vec(), good.clone()]
            .into_iter()
            .map(|body| {
                let url = url.clone();
                std::thread::spawn(move || post(&url, &body))
            })
            .collect();
    let answers: Vec<(u16, String)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(answers[0].0, 413, "{}", answers[0].1);
    assert!(answers[0].1.contains("--max-body"), "{}", answers[0].1);
    assert_eq!(answers[1].0, 400, "{}", answers[1].1);
    let error: serde_json::Value = serde_json::from_str(&answers[1].1).unwrap();
    assert_eq!(error["offset"].as_u64(), Some((good.len() / 2) as u64), "{error}");
    assert_eq!(answers[2].0, 400, "{}", answers[2].1);
    assert!(answers[2].1.contains("not audit events"), "{}", answers[2].1);
    assert_eq!(answers[3].0, 200, "{}", answers[3].1);

    let (status, metrics) = server.get("/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("kubestep_batches_total{outcome=\"too_large\"} 1"), "{metrics}");
    assert!(metrics.contains("kubestep_batches_total{outcome=\"malformed\"} 2"), "{metrics}");
    assert_eq!(server.terminate(), Some(0));
    assert_eq!(count(&data, "SELECT count(*) FROM operations"), 20);
    assert_eq!(count(&data, "SELECT count(*) FROM operations WHERE audit_id LIKE 'good-%'"), 20);
}

#[test]
fn a_bad_event_inside_a_good_batch_is_logged_and_the_rest_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start(&data, &["--flush-interval", "1h"]);
    let mut items: Vec<String> = (0..5).map(|n| synthetic_event(&format!("ok-{n}"), n)).collect();
    items.insert(2, r#"{"stage":"ResponseComplete","verb":"get"}"#.to_owned());
    let (status, answer) = server.post("/audit", &event_list(&items));
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["records"], 5);
    assert_eq!(answer["rejected"], 1);
    assert_eq!(server.terminate(), Some(0));
    assert_eq!(count(&data, "SELECT count(*) FROM operations"), 5);
    let rejected = all_files(&data.join("rejected"));
    let log = std::fs::read_to_string(&rejected[0]).unwrap();
    assert!(log.contains(r#""item":2"#) && log.contains("missing auditID"), "{log}");
}

#[test]
fn stopping_a_session_makes_its_events_queryable_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = TestServer::start(&data, &["--flush-interval", "1h"]);
    let session = |args: &[&str]| {
        let mut all = vec!["session", "--server", server.base.as_str()];
        all.extend_from_slice(args);
        kubestep(&all, None)
    };
    assert!(session(&["start", "rollout-1"]).status.success());
    let refused = session(&["start", "other"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).1.contains("rollout-1"), "{:?}", text(&refused));
    let batch = event_list(&(0..30).map(|n| synthetic_event(&format!("s-{n}"), n)).collect::<Vec<_>>());
    assert_eq!(server.post("/audit", &batch).0, 200);
    let listed = session(&["list"]);
    assert!(text(&listed).0.contains("rollout-1  (recording)"), "{:?}", text(&listed));

    let stopped = session(&["stop", "rollout-1"]);
    assert!(stopped.status.success(), "{:?}", text(&stopped));
    // The server is still running, with an hour until its next flush.
    assert_eq!(count(&data, "SELECT count(*) FROM operations WHERE session_id = 'rollout-1'"), 30);
    let again = session(&["stop", "rollout-1"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again).1.contains("not being recorded"), "{:?}", text(&again));
    let bad = session(&["start", "no/slashes"]);
    assert_eq!(bad.status.code(), Some(1));

    // After the stop, batches go to automatic sessions again.
    let later = event_list(&(100..110).map(|n| synthetic_event(&format!("after-{n}"), n)).collect::<Vec<_>>());
    assert_eq!(server.post("/audit", &later).0, 200);
    drop(server);
    let restarted = TestServer::start(&data, &[]);
    drop(restarted);
    let sessions = rows(&data, "SELECT DISTINCT session_id FROM operations WHERE audit_id LIKE 'after-%'");
    assert_eq!(sessions.len(), 1);
    assert!(sessions[0][0].starts_with("auto-"), "{sessions:?}");
}

#[test]
fn a_named_session_survives_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start(&data, &["--flush-interval", "1h"]);
    assert_eq!(server.post("/sessions", br#"{"name":"kept"}"#).0, 201);
    let batch = event_list(&(0..10).map(|n| synthetic_event(&format!("k-{n}"), n)).collect::<Vec<_>>());
    assert_eq!(server.post("/audit", &batch).0, 200);
    server.kill();
    let mut server = TestServer::start(&data, &["--flush-interval", "1h"]);
    let (_, sessions) = server.get("/sessions");
    assert!(sessions.contains(r#""active":"kept""#), "{sessions}");
    assert!(server.log().contains("replayed the write-ahead log"), "{}", server.log());
    assert_eq!(server.terminate(), Some(0));
    assert_eq!(count(&data, "SELECT count(*) FROM operations WHERE session_id = 'kept'"), 10);
}

#[test]
fn health_readiness_and_metrics_answer() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("data"), &[]);
    assert_eq!(server.get("/healthz").0, 200);
    assert_eq!(server.get("/readyz").0, 200);
    let batch = event_list(&(0..3).map(|n| synthetic_event(&format!("m-{n}"), n)).collect::<Vec<_>>());
    assert_eq!(server.post("/audit", &batch).0, 200);
    let (_, metrics) = server.get("/metrics");
    let values: BTreeMap<&str, &str> =
        metrics.lines().filter(|l| !l.starts_with('#')).filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(values.get("kubestep_batches_total{outcome=\"accepted\"}"), Some(&"1"));
    assert_eq!(values.get("kubestep_events_received_total"), Some(&"3"));
    assert_eq!(values.get("kubestep_wal_fsync_seconds_count"), Some(&"1"));
}

#[test]
fn a_public_address_without_protection_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let output = kubestep(&["serve", "-d", &tmp.path().join("d").display().to_string(), "--listen", "0.0.0.0:0"], None);
    assert_eq!(output.status.code(), Some(1));
    assert!(text(&output).1.contains("--insecure"), "{:?}", text(&output));
    assert!(!tmp.path().join("d").exists(), "nothing is created when refusing to start");
}

#[test]
fn a_torn_wal_tail_and_a_half_written_file_are_repaired_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let wal_dir = data.join("wal");
    let body = event_list(&(0..4).map(|n| synthetic_event(&format!("torn-{n}"), n)).collect::<Vec<_>>());
    {
        let mut wal = kubestep_ingest::wal::Wal::create(&wal_dir).unwrap();
        wal.append_group([(None, &body[..])]).unwrap();
        wal.append_group([(None, &body[..body.len() / 2])]).unwrap();
    }
    // Tear the second entry in half, as a crash in the middle of a write would.
    let segment = all_files(&wal_dir).into_iter().find(|p| p.extension().is_some_and(|e| e == "wal")).unwrap();
    let len = std::fs::metadata(&segment).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(len - 100).unwrap();
    let partition = data.join("operations/session_id=old/date=2024-05-01");
    std::fs::create_dir_all(&partition).unwrap();
    std::fs::write(partition.join(".abc-000001.parquet.tmp"), b"PAR1 half a file").unwrap();

    let mut server = TestServer::start(&data, &[]);
    let log = server.log();
    assert!(log.contains("write-ahead log repaired"), "{log}");
    assert!(log.contains("torn entry"), "{log}");
    assert!(log.contains("removed the temporary file of an interrupted Parquet write"), "{log}");
    assert!(!partition.join(".abc-000001.parquet.tmp").exists());
    assert_eq!(server.terminate(), Some(0));
    assert_eq!(count(&data, "SELECT count(*) FROM operations WHERE audit_id LIKE 'torn-%'"), 4);
}
