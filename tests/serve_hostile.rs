//! Hostile and broken HTTP clients against the real `kubestep serve`: slow headers, a body that
//! never ends, oversized headers, too many connections, thousands of tiny requests. Each must cost
//! the service bounded time and memory, never a panic, and never delay a well-behaved client.

mod common;
#[path = "common/server.rs"]
mod server;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use server::*;

/// A good batch of `n` events named `prefix-*`, posted as the API server would; its status.
fn post_good(server: &TestServer, prefix: &str, n: u64) -> u16 {
    let body = event_list(&(0..n).map(|i| synthetic_event(&format!("{prefix}-{i}"), i)).collect::<Vec<_>>());
    server.post("/audit", &body).0
}

/// Reads what the server sends until it closes the connection; panics if it stays open past `limit`.
fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> String {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the server kept the connection open for {limit:?}; got so far: {answer:?}")
            }
            // A reset also closes it.
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn slow_headers_are_cut_off_while_other_clients_are_served() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("data"), &["--client-timeout", "1s"]);
    let before = server.rss_bytes();
    // Slowloris: many connections that start a request and never finish its headers.
    let mut slow: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = TcpStream::connect(server.address()).unwrap();
            s.write_all(b"POST /audit HTTP/1.1\r\nHost: kubestep\r\nContent-Type: application/json\r\n").unwrap();
            s
        })
        .collect();
    // Meanwhile the API server's batches are stored as usual.
    let started = Instant::now();
    for i in 0..5 {
        assert_eq!(post_good(&server, &format!("good{i}"), 20), 200);
    }
    assert!(started.elapsed() < Duration::from_secs(10), "good clients were held up: {:?}", started.elapsed());
    // Every slow connection is closed by the server once its time is up.
    for s in &mut slow {
        read_until_closed(s, Duration::from_secs(10));
    }
    assert!(server.metric("kubestep_connections_open") <= 1.0, "slow connections are still served");
    let grown = server.rss_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "300 slow connections took {} MiB", grown >> 20);
    assert_eq!(post_good(&server, "after", 3), 200);
}

#[test]
fn a_body_that_never_ends_gets_408_and_its_budget_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start(&data, &["--client-timeout", "2s"]);

    // A declared length that never arrives.
    let mut stalled = TcpStream::connect(server.address()).unwrap();
    stalled.write_all(b"POST /audit HTTP/1.1\r\nHost: k\r\nContent-Length: 1000000\r\n\r\n{\"items\":[").unwrap();
    // A chunked body that keeps trickling: an idle timeout alone would never end it.
    let mut trickle = TcpStream::connect(server.address()).unwrap();
    trickle.write_all(b"POST /audit HTTP/1.1\r\nHost: k\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
    let mut trickle_writer = trickle.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        while trickle_writer.write_all(b"1\r\n \r\n").is_ok() {
            std::thread::sleep(Duration::from_millis(100));
        }
    });

    assert_eq!(post_good(&server, "beside", 10), 200, "a good client is not held up");
    for (name, stream) in [("stalled", &mut stalled), ("trickle", &mut trickle)] {
        let answer = read_until_closed(stream, Duration::from_secs(15));
        assert!(answer.starts_with("HTTP/1.1 408"), "{name}: {answer}");
        assert!(answer.contains("--client-timeout"), "{name}: {answer}");
    }
    trickler.join().unwrap();
    assert_eq!(server.metric("kubestep_batches_total{outcome=\"timed_out\"}"), 2.0);
    assert_eq!(server.metric("kubestep_queue_bytes"), 0.0);
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    assert_eq!(count(&data, "SELECT count(*) FROM operations"), 10, "only the good batch is stored");
}

#[test]
fn announced_bodies_take_from_one_bounded_budget() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        &tmp.path().join("data"),
        &["--max-body", "8MiB", "--max-queue", "16MiB", "--client-timeout", "3s"],
    );
    let before = server.rss_bytes();
    // Forty clients announce 7 MB each, send 1 MB of it and stall. At most two fit the 16 MiB
    // budget; the others' bytes are read and thrown away, not buffered.
    let chunk = vec![b' '; 1 << 20];
    let mut stalled: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(server.address()).unwrap();
            s.write_all(b"POST /audit HTTP/1.1\r\nHost: k\r\nContent-Length: 7000000\r\n\r\n").unwrap();
            let _ = s.write_all(&chunk);
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let grown = server.rss_bytes().saturating_sub(before);
    assert!(grown < 64 << 20, "40 MB of announced bodies took {} MiB", grown >> 20);
    // A normal batch still fits beside them.
    assert_eq!(post_good(&server, "small", 50), 200);
    // Each of them is answered and closed once its time is up; none is stored.
    for s in &mut stalled {
        let answer = read_until_closed(s, Duration::from_secs(15));
        assert!(answer.starts_with("HTTP/1.1 408") || answer.starts_with("HTTP/1.1 503"), "{answer}");
    }
    assert_eq!(server.metric("kubestep_batches_total{outcome=\"accepted\"}"), 1.0);
    assert_eq!(server.metric("kubestep_queue_bytes"), 0.0);
}

#[test]
fn a_full_budget_is_answered_with_a_readable_503() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("data"), &["--max-body", "2MiB", "--max-queue", "4MiB"]);
    // Two clients announce large bodies and stall, holding nearly all of the budget.
    let holders: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut holder = TcpStream::connect(server.address()).unwrap();
            holder.write_all(b"POST /audit HTTP/1.1\r\nHost: k\r\nContent-Length: 2000000\r\n\r\n[").unwrap();
            holder
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A well-behaved client sends a whole body that does not fit: it reads a 503 with Retry-After
    // (the body is read and thrown away), not a reset connection.
    let body = event_list(&(0..1200).map(|i| synthetic_event(&format!("mid-{i}"), i)).collect::<Vec<_>>());
    let answer = agent().post(format!("{}/audit", server.base)).send(&body[..]).expect("an answer, not a reset");
    assert_eq!(answer.status().as_u16(), 503);
    assert!(answer.headers().get("retry-after").is_some());
    drop(holders);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.post("/audit", &body).0, 200, "once the holders are gone it fits");
}

#[test]
fn oversized_headers_are_refused_and_the_server_carries_on() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("data"), &[]);
    // One enormous header.
    let mut huge = TcpStream::connect(server.address()).unwrap();
    let value = "x".repeat(1 << 20);
    let _ = huge.write_all(format!("POST /audit HTTP/1.1\r\nHost: k\r\nX-Junk: {value}\r\n\r\n").as_bytes());
    let answer = read_until_closed(&mut huge, Duration::from_secs(10));
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Too many headers.
    let mut many = TcpStream::connect(server.address()).unwrap();
    let headers: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let _ = many.write_all(format!("GET /healthz HTTP/1.1\r\nHost: k\r\n{headers}\r\n").as_bytes());
    let answer = read_until_closed(&mut many, Duration::from_secs(10));
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");
    // Not HTTP at all.
    let mut junk = TcpStream::connect(server.address()).unwrap();
    let _ = junk.write_all(&[0x16, 0x03, 0x01, 0x00, 0xff, 0x00, 0x13, 0x37]);
    let answer = read_until_closed(&mut junk, Duration::from_secs(10));
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 400"), "{answer}");

    assert_eq!(post_good(&server, "fine", 5), 200);
    assert_eq!(server.get("/healthz").0, 200);
}

#[test]
fn connections_beyond_the_limit_are_closed_and_service_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("data"), &["--max-connections", "20", "--client-timeout", "2s"]);
    let idle: Vec<TcpStream> = (0..20).map(|_| TcpStream::connect(server.address()).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(server.address()).unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: k\r\n\r\n");
    let answer = read_until_closed(&mut extra, Duration::from_secs(1));
    assert!(answer.is_empty(), "the 21st connection was served: {answer}");
    // The idle ones time out, and their slots serve others again.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(post_good(&server, "later", 5), 200);
    assert!(server.metric("kubestep_connections_refused_total") >= 1.0);
    drop(idle);
}

#[test]
fn thousands_of_tiny_requests_are_each_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start(&data, &[]);
    let url = format!("{}/audit", server.base);
    const THREADS: u64 = 4;
    const REQUESTS: u64 = 600;
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = agent();
                for r in 0..REQUESTS {
                    let body = event_list(&[synthetic_event(&format!("tiny-{t}-{r}"), t * REQUESTS + r)]);
                    let status = agent.post(&url).send(&body[..]).map(|r| r.status().as_u16()).unwrap_or(0);
                    assert_eq!(status, 200, "request {t}/{r}");
                }
            })
        })
        .collect();
    // The probes answer all along.
    while !workers.iter().all(|w| w.is_finished()) {
        assert_eq!(server.get("/readyz").0, 200);
        std::thread::sleep(Duration::from_millis(50));
    }
    for w in workers {
        w.join().unwrap();
    }
    assert_eq!(server.terminate(), Some(0), "{}", server.log());
    let total = (THREADS * REQUESTS).to_string();
    assert_eq!(rows(&data, "SELECT count(*), count(DISTINCT audit_id) FROM operations")[0], vec![total.clone(), total]);
}
