//! Crash safety of `kubestep serve`: clients stream batches while the server is killed with
//! SIGKILL at seeded random moments and restarted on the same directory. Like the API server, a
//! client retries a batch until it is acknowledged. In the end every batch is stored exactly once
//! and every file is a complete Parquet file.

mod common;
#[path = "common/server.rs"]
mod server;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use server::*;

/// A small deterministic generator, so a failing run can be repeated with its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const CLIENTS: u64 = 3;
const BATCHES_PER_CLIENT: u64 = 150;
const EVENTS_PER_BATCH: u64 = 50;

#[test]
fn every_acknowledged_event_is_stored_exactly_once_across_kills() {
    let seed: u64 = std::env::var("KUBESTEP_CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_cafe);
    let kills: usize = std::env::var("KUBESTEP_CRASH_KILLS").ok().and_then(|s| s.parse().ok()).unwrap_or(20);
    let mut rng = Rng(seed);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Short flush intervals and small files, so that kills land in flushes and WAL truncation too.
    let args = ["--flush-interval", "150ms", "--flush-rows", "700"];

    let url = Arc::new(Mutex::new(String::new()));
    let acknowledged = Arc::new(Mutex::new(0u64));
    let retries = Arc::new(Mutex::new(0u64));
    let done = Arc::new(AtomicBool::new(false));
    let mut server = TestServer::start(&data, &args);
    *url.lock().unwrap() = format!("{}/audit", server.base);

    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let url = url.clone();
            let acknowledged = acknowledged.clone();
            let retries = retries.clone();
            let done = done.clone();
            std::thread::spawn(move || {
                for batch in 0..BATCHES_PER_CLIENT {
                    let items: Vec<String> = (0..EVENTS_PER_BATCH)
                        .map(|n| {
                            let i = (client * BATCHES_PER_CLIENT + batch) * EVENTS_PER_BATCH + n;
                            synthetic_event(&format!("c{client}-b{batch}-e{n}"), i)
                        })
                        .collect();
                    let body = event_list(&items);
                    loop {
                        let target = url.lock().unwrap().clone();
                        let (status, _) = post(&target, &body);
                        if status == 200 {
                            *acknowledged.lock().unwrap() += 1;
                            break;
                        }
                        assert!(!done.load(Ordering::Relaxed), "batch {client}/{batch} never acknowledged");
                        // Killed, restarting, or 503: retry as the API server would.
                        *retries.lock().unwrap() += 1;
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            })
        })
        .collect();

    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(20 + rng.below(250)));
        server.kill();
        server = TestServer::start(&data, &args);
        *url.lock().unwrap() = format!("{}/audit", server.base);
    }
    for client in clients {
        client.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let acked = *acknowledged.lock().unwrap();
    assert_eq!(acked, CLIENTS * BATCHES_PER_CLIENT);
    // The kills landed while batches were in flight (otherwise this test proves little).
    assert!(*retries.lock().unwrap() >= kills as u64, "only {} retries", retries.lock().unwrap());
    // Kill once more with everything acknowledged, then let recovery and a clean stop finish.
    server.kill();
    let mut server = TestServer::start(&data, &args);
    assert_eq!(server.terminate(), Some(0), "{}", server.log());

    let total = CLIENTS * BATCHES_PER_CLIENT * EVENTS_PER_BATCH;
    let counts = rows(&data, "SELECT count(*), count(DISTINCT audit_id) FROM operations");
    assert_eq!(counts[0], vec![total.to_string(), total.to_string()], "seed {seed}: stored vs distinct");
    // Each event once, with its own content (not a mix of two deliveries).
    let mismatched =
        count(&data, "SELECT count(*) FROM operations WHERE name <> concat('c-', split_part(request_uri, 'c-', 2))");
    assert_eq!(mismatched, 0);
    // Every file decodes in full, no event is in two files, and the WAL is empty.
    let verified = kubestep(&["verify", "-d", &data.display().to_string()], None);
    let (report, _) = text(&verified);
    assert!(verified.status.success() && report.contains("write-ahead log: 0 segments"), "{report}");
    // No temporary file, no WAL segment, and every Parquet file is whole (read above through the
    // footer and every row group).
    for file in all_files(&data) {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "left behind: {}", file.display());
        assert!(!name.ends_with(".wal"), "left behind: {}", file.display());
    }
}
