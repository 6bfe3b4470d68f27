//! Faults around the real `kubestep serve`: a batch retried five times (at once, and again after a
//! crash), a full disk, and readers and compaction running while the service ingests.

mod common;
#[path = "common/server.rs"]
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use server::*;

fn batch(prefix: &str, first: u64, n: u64) -> Vec<u8> {
    event_list(&(first..first + n).map(|i| synthetic_event(&format!("{prefix}-{i}"), i)).collect::<Vec<_>>())
}

#[test]
fn a_batch_delivered_five_times_at_once_and_after_a_crash_is_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Nothing is flushed on its own: after the crash, de-duplication rests on the WAL replay.
    let args = ["--flush-interval", "1h"];
    let body = Arc::new(batch("retried", 0, 40));
    let deliver_five_times = |server: &TestServer| {
        let url = format!("{}/audit", server.base);
        let senders: Vec<_> = (0..5)
            .map(|_| {
                let (url, body) = (url.clone(), body.clone());
                std::thread::spawn(move || post(&url, &body).0)
            })
            .collect();
        senders.into_iter().map(|s| s.join().unwrap()).collect::<Vec<_>>()
    };
    let mut server = TestServer::start(&data, &args);
    assert_eq!(deliver_five_times(&server), vec![200; 5]);
    server.kill();
    let mut server = TestServer::start(&data, &args);
    assert_eq!(deliver_five_times(&server), vec![200; 5]);
    assert_eq!(server.post("/audit", &body).0, 200);
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    assert_eq!(rows(&data, "SELECT count(*), count(DISTINCT audit_id) FROM operations")[0], vec!["40", "40"]);
    let metrics_like = count(&data, "SELECT count(*) FROM operations WHERE audit_id LIKE 'retried-%'");
    assert_eq!(metrics_like, 40);
}

/// A size-limited tmpfs mounted for one test (needs root, as CI has), unmounted when dropped.
struct SmallFilesystem {
    mount_point: PathBuf,
}

impl SmallFilesystem {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "kubestep-test", &at.display().to_string()])
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a {size} tmpfs at {} failed: this test needs root", at.display());
        SmallFilesystem { mount_point: at.to_owned() }
    }
}

impl Drop for SmallFilesystem {
    fn drop(&mut self) {
        let _ = Command::new("umount").args(["-l", &self.mount_point.display().to_string()]).status();
    }
}

/// Posts `body`; the status and the `Retry-After` header.
fn post_with_retry_after(url: &str, body: &[u8]) -> (u16, Option<String>) {
    match agent().post(url).send(body) {
        Ok(r) => {
            let retry_after = r.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
            (r.status().as_u16(), retry_after)
        }
        Err(_) => (0, None),
    }
}

/// Fills the filesystem of `dir` with a ballast file, leaving about `leave` bytes free.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    let ballast = dir.join("ballast");
    let stat = nix_free_bytes(dir);
    let size = stat.saturating_sub(leave);
    let mut file = std::fs::File::create(&ballast).unwrap();
    let block = vec![0xa5u8; 1 << 20];
    let mut written = 0;
    use std::io::Write;
    while written < size {
        let n = block.len().min((size - written) as usize);
        if file.write_all(&block[..n]).is_err() {
            break;
        }
        written += n as u64;
    }
    let _ = file.sync_all();
    ballast
}

/// Free bytes on the filesystem of `dir`, from `df`.
fn nix_free_bytes(dir: &Path) -> u64 {
    let output = Command::new("df").args(["-B1", "--output=avail", &dir.display().to_string()]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines().nth(1).and_then(|l| l.trim().parse().ok()).expect("df output")
}

#[test]
fn a_full_disk_answers_503_loses_nothing_and_recovers_by_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let small = SmallFilesystem::mount(&tmp.path().join("small"), "24m");
    let data = small.mount_point.join("data");
    let mut server = TestServer::start(&data, &["--flush-interval", "200ms", "--session", "full"]);
    let url = format!("{}/audit", server.base);
    assert_eq!(server.post("/audit", &batch("early", 0, 50)).0, 200);
    // The first batch reaches a Parquet file before the disk fills, so there is something to query.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stored = |dir: &Path| {
        dir.is_dir()
            && all_files(dir).iter().any(|f| {
                let name = f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                name.ends_with(".parquet") && !name.starts_with('.')
            })
    };
    while !stored(&data.join("operations")) {
        assert!(Instant::now() < deadline, "the first batch was never flushed: {}", server.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    let ballast = fill(&small.mount_point, 2 << 20);

    // Keep sending until the disk refuses; count every event acknowledged.
    let mut acknowledged = 50u64;
    let mut next = 1_000u64;
    let mut refused = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused.is_none() {
        assert!(Instant::now() < deadline, "the disk never filled up");
        let (status, retry_after) = post_with_retry_after(&url, &batch("load", next, 100));
        match status {
            200 => {
                acknowledged += 100;
                next += 100;
            }
            503 => refused = Some(retry_after),
            other => panic!("unexpected status {other} on a full disk: {}", server.log()),
        }
    }
    let retry_after = refused.flatten().expect("a 503 for a full disk carries Retry-After");
    assert!(retry_after.parse::<u64>().is_ok_and(|s| s > 0), "Retry-After: {retry_after}");
    assert_eq!(server.get("/healthz").0, 200, "the service stays up");
    assert_eq!(server.get("/readyz").0, 503, "and says it is not ready");
    // Queries keep working on what is stored.
    let (stdout, stderr) =
        text(&kubestep(&["sql", "-d", &data.display().to_string(), "SELECT count(*) FROM operations"], None));
    assert!(stderr.is_empty() || !stderr.contains("rror"), "{stderr}");
    assert!(stdout.contains("count"), "{stdout}");

    // Space comes back; the same batch is retried as the API server would, and gets in.
    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, _) = post_with_retry_after(&url, &batch("load", next, 100));
        if status == 200 {
            acknowledged += 100;
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "the service did not recover once space was free: {}", server.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(server.get("/readyz").0, 200);
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    let stored = rows(&data, "SELECT count(*), count(DISTINCT audit_id) FROM operations");
    assert_eq!(stored[0], vec![acknowledged.to_string(), acknowledged.to_string()], "every acknowledged event, once");
    assert!(server.log().contains("No space left on device"), "the log says why: {}", server.log());
    let verified = kubestep(&["verify", "-d", &data.display().to_string()], None);
    assert!(verified.status.success(), "{:?}", text(&verified));
}

#[test]
fn queries_analysis_and_compaction_while_ingesting_never_fail() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = data.display().to_string();
    let mut server = TestServer::start(&data, &["--flush-interval", "100ms", "--session", "busy"]);
    let url = format!("{}/audit", server.base);
    let acknowledged = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acknowledged, stop) = (acknowledged.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = 0;
            while !stop.load(Ordering::Relaxed) {
                assert_eq!(post(&url, &batch("busy", next, 20)).0, 200);
                next += 20;
                acknowledged.store(next, Ordering::Relaxed);
                // About 400 events/s: steady new files, while the debug-built readers keep up.
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    while acknowledged.load(Ordering::Relaxed) == 0 {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));

    let mut last_seen = 0u64;
    for round in 0..5 {
        let counted = kubestep(
            &[
                "sql",
                "-d",
                &d,
                "--format",
                "csv",
                "SELECT count(*) AS n, count(DISTINCT audit_id) AS d FROM operations",
            ],
            None,
        );
        let (stdout, stderr) = text(&counted);
        assert!(counted.status.success(), "round {round}: sql failed: {stderr}");
        let numbers: Vec<u64> = stdout.lines().nth(1).unwrap_or("").split(',').map(|v| v.parse().unwrap()).collect();
        assert_eq!(numbers[0], numbers[1], "round {round}: a duplicate was visible: {stdout}");
        assert!(numbers[0] >= last_seen, "round {round}: rows went missing ({} after {last_seen})", numbers[0]);
        last_seen = numbers[0];

        let analyzed = kubestep(&["analyze", "busy", "-d", &d, "--format", "json"], None);
        assert!(analyzed.status.success(), "round {round}: analyze failed: {}", text(&analyzed).1);
        let compacted = kubestep(&["compact", "-d", &d, "--session", "busy"], None);
        assert!(compacted.status.success(), "round {round}: compact failed: {}", text(&compacted).1);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    let total = acknowledged.load(Ordering::Relaxed).to_string();
    assert_eq!(rows(&data, "SELECT count(*), count(DISTINCT audit_id) FROM operations")[0], vec![total.clone(), total]);
}

#[test]
fn a_flush_that_finds_the_disk_full_keeps_its_records_until_space_frees() {
    let tmp = tempfile::tempdir().unwrap();
    let small = SmallFilesystem::mount(&tmp.path().join("small"), "16m");
    let data = small.mount_point.join("data");
    let mut server = TestServer::start(&data, &["--flush-interval", "1s"]);
    // Durable in the WAL, then no room left for its Parquet file.
    assert_eq!(server.post("/audit", &batch("waiting", 0, 500)).0, 200);
    let ballast = fill(&small.mount_point, 0);
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get("/readyz").0 != 503 {
        assert!(Instant::now() < deadline, "the failed flush was not noticed: {}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, retry_after) = post_with_retry_after(&format!("{}/audit", server.base), &batch("late", 1000, 10));
    assert_eq!((status, retry_after.is_some()), (503, true), "new batches wait while flushes fail");
    assert!(server.log().contains("flush failed; records stay buffered"), "{}", server.log());

    std::fs::remove_file(&ballast).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get("/readyz").0 != 200 {
        assert!(Instant::now() < deadline, "no recovery once space was free: {}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server.post("/audit", &batch("late", 1000, 10)).0, 200);
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    assert_eq!(rows(&data, "SELECT count(*), count(DISTINCT audit_id) FROM operations")[0], vec!["510", "510"]);
}
