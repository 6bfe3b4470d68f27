//! Load generator for `kubestep serve`: the API server's batch webhook at full tilt.
//!
//! Posts 400-event `EventList`s of realistic events over N keep-alive connections to the real
//! binary (fsync acknowledgements, as in production) on loopback, and reports, in the same run:
//!
//! - the baseline: `kubestep import` of the same events as JSON lines, events/s;
//! - closed-loop throughput at several concurrencies: events/s, ack latency p50/p99;
//! - open-loop at half the best rate: ack latency p50/p99;
//! - sustained overload (many connections): events/s, share of 503s, peak server RSS.
//!
//! Every posted event is unique (each round rewrites the audit IDs), so the server does the whole
//! work every time rather than skipping duplicates. Client and server share the machine's cores.
//!
//! Run: `cargo bench --bench load` (optionally `KUBESTEP_LOAD_SECONDS=20`).

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "common/generator.rs"]
mod generator;
#[path = "common/loadgen.rs"]
mod loadgen;

use loadgen::{BATCH_EVENTS, Bodies, Server, drive, p99_bound_ms};

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs us with no arguments: only
    // measure when asked to.
    if !std::env::args().any(|a| a == "--bench") {
        println!("load: skipped (run with `cargo bench --bench load`)");
        return;
    }
    let seconds: u64 = std::env::var("KUBESTEP_LOAD_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let phase = Duration::from_secs(seconds);
    let log = generator::realistic_audit_log(192 << 20);
    let events: Vec<&[u8]> = log.split(|&b| b == b'\n').filter(|l| !l.is_empty()).collect();
    let mean_bytes = log.len() / events.len();
    println!("events: {} generated, {mean_bytes} bytes on average; batches of {BATCH_EVENTS}", events.len());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

    // Baseline: `kubestep import` of the same events, in this run.
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("events.log");
    std::fs::write(&file, &log).expect("writing the baseline log");
    let started = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_kubestep"))
        .args(["import", "-q", "-d", &tmp.path().join("imported").display().to_string()])
        .arg(&file)
        .status()
        .expect("running import");
    assert!(status.success(), "import failed");
    let import_rate = events.len() as f64 / started.elapsed().as_secs_f64();
    println!("baseline  kubestep import: {import_rate:>9.0} events/s");
    std::fs::remove_file(&file).ok();

    let max_clients = 32;
    let bodies: Arc<Vec<Mutex<Bodies>>> =
        Arc::new((0..max_clients).map(|c| Mutex::new(Bodies::new(&events, c))).collect());
    drop(log);

    let server = Server::start(&tmp.path().join("served"));
    let mut best = 0.0f64;
    println!("closed loop ({seconds}s each, fsync acknowledgements):");
    let mut best_per_server_core = 0.0f64;
    for clients in [1, 2, 4, 8] {
        let cpu_before = server.cpu_seconds();
        let (mut o, _) = drive(&server.url, &bodies, clients, phase, None, None);
        let server_cores = (server.cpu_seconds() - cpu_before) / o.seconds;
        let rate = o.rate();
        best = best.max(rate);
        best_per_server_core = best_per_server_core.max(rate / server_cores);
        println!(
            "  {clients:>2} connections: {rate:>9.0} events/s ({:.0}/core, {:.0} per server core: the server used {server_cores:.2} cores, {:.2}x import)  ack p50 {:>6.1} ms  p99 {:>6.1} ms  503s {}",
            rate / cores as f64,
            rate / server_cores,
            rate / import_rate,
            o.percentile_ms(0.50),
            o.percentile_ms(0.99),
            o.unavailable
        );
    }
    let half = best / 2.0;
    let clients = 8;
    let interval = Duration::from_secs_f64(BATCH_EVENTS as f64 * clients as f64 / half);
    let prepare_before = server.histogram("kubestep_prepare_seconds");
    let (ack_before, fsync_before) =
        (server.histogram("kubestep_ack_seconds"), server.histogram("kubestep_wal_fsync_seconds"));
    let (mut o, _) = drive(&server.url, &bodies, clients, phase, Some(interval), None);
    println!(
        "open loop at half the best rate ({half:.0} events/s offered): {:.0} events/s  ack p50 {:.1} ms  p99 {:.1} ms  503s {}",
        o.rate(),
        o.percentile_ms(0.50),
        o.percentile_ms(0.99),
        o.unavailable
    );
    // The same phase seen by the server: from a body read to its acknowledgement, and one WAL
    // group commit. What the client sees beyond that is connection and scheduling time.
    println!(
        "  server side: ack p99 <= {:.0} ms, prepare p99 <= {:.0} ms, WAL group commit p99 <= {:.0} ms (histogram bucket bounds)",
        p99_bound_ms(&ack_before, &server.histogram("kubestep_ack_seconds")),
        p99_bound_ms(&prepare_before, &server.histogram("kubestep_prepare_seconds")),
        p99_bound_ms(&fsync_before, &server.histogram("kubestep_wal_fsync_seconds"))
    );
    let (mut o, peak) = drive(&server.url, &bodies, max_clients, phase * 2, None, Some(&server));
    println!(
        "overload, {max_clients} connections for {}s: {:.0} events/s  ack p99 {:.1} ms  503s {}  peak server RSS {} MiB",
        seconds * 2,
        o.rate(),
        o.percentile_ms(0.99),
        o.unavailable,
        peak >> 20
    );
    println!(
        "summary: best {best:.0} events/s = {:.0} per core = {:.2}x `kubestep import` of the same events; \
         best {best_per_server_core:.0} events per second of server CPU",
        best / cores as f64,
        best / import_rate
    );
    server.stop();
}
