//! The load generator shared by the `load` and `report` benchmarks: the API server's batch webhook
//! backend at full tilt against the real `kubestep serve` binary on loopback.
//!
//! Bodies are 400-event `EventList`s; every round rewrites their audit IDs, so the server does the
//! whole work every time instead of skipping duplicates.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BATCH_EVENTS: usize = 400;
pub const BODIES_PER_CLIENT: usize = 24;

/// One client's bodies, with where each audit ID sits so a round can make them new.
pub struct Bodies {
    bodies: Vec<Vec<u8>>,
    id_offsets: Vec<Vec<usize>>,
    round: u64,
}

impl Bodies {
    pub fn new(events: &[&[u8]], client: usize) -> Self {
        let mut bodies = Vec::new();
        let mut id_offsets = Vec::new();
        let start = client * BODIES_PER_CLIENT * BATCH_EVENTS;
        for b in 0..BODIES_PER_CLIENT {
            let mut body = br#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#.to_vec();
            let mut offsets = Vec::new();
            for i in 0..BATCH_EVENTS {
                if i > 0 {
                    body.push(b',');
                }
                let event = events[(start + b * BATCH_EVENTS + i) % events.len()];
                let at = body.len();
                body.extend_from_slice(event);
                let id = memchr::memmem::find(event, br#""auditID":""#).map(|p| at + p + 11);
                offsets.extend(id);
            }
            body.extend_from_slice(b"]}");
            bodies.push(body);
            id_offsets.push(offsets);
        }
        Bodies { bodies, id_offsets, round: client as u64 * 1_000_000 }
    }

    /// The next body, its audit IDs made unique for this round.
    pub fn next(&mut self) -> &[u8] {
        let i = (self.round % BODIES_PER_CLIENT as u64) as usize;
        self.round += 1;
        let stamp = format!("{:08x}", self.round);
        let body = &mut self.bodies[i];
        for &at in &self.id_offsets[i] {
            body[at..at + 8].copy_from_slice(stamp.as_bytes());
        }
        body
    }
}

pub struct Server {
    child: Child,
    /// The webhook URL (`http://127.0.0.1:PORT/audit`).
    pub url: String,
}

impl Server {
    pub fn start(data: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubestep"))
            .args(["serve", "-d", &data.display().to_string(), "--listen", "127.0.0.1:0"])
            // Extra flags for experiments, e.g. KUBESTEP_LOAD_SERVER_ARGS="--dedup-window 500000".
            .args(std::env::var("KUBESTEP_LOAD_SERVER_ARGS").unwrap_or_default().split_whitespace())
            .env("KUBESTEP_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting kubestep serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("listen line");
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("listen url").trim_end_matches(',');
        Server { url: url.to_owned(), child }
    }

    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    /// CPU time (user + system) the server has used so far, in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at its closing parenthesis;
        // utime and stime are the 14th and 15th fields of the whole line.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / clock_ticks_per_second()
    }

    /// The cumulative buckets `(upper bound in seconds, count)` of one histogram on `/metrics`.
    pub fn histogram(&self, name: &str) -> Vec<(f64, u64)> {
        let metrics = self.url.replace("/audit", "/metrics");
        let text = ureq::get(&metrics).call().ok().and_then(|mut r| r.body_mut().read_to_string().ok());
        let prefix = format!("{name}_bucket{{le=\"");
        text.unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .filter_map(|rest| {
                let (bound, count) = rest.split_once("\"} ")?;
                let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse().ok()? };
                Some((bound, count.trim().parse().ok()?))
            })
            .collect()
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }
}

/// `getconf CLK_TCK`: the unit of the CPU times in `/proc/PID/stat`.
pub fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        let out = Command::new("getconf").arg("CLK_TCK").output().ok();
        out.and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100.0)
    })
}

/// The bucket bound (ms) under which 99% of the observations between two scrapes fall.
pub fn p99_bound_ms(before: &[(f64, u64)], after: &[(f64, u64)]) -> f64 {
    let delta: Vec<(f64, u64)> =
        after.iter().map(|&(b, n)| (b, n - before.iter().find(|x| x.0 == b).map_or(0, |x| x.1))).collect();
    let total = delta.last().map_or(0, |d| d.1);
    let bound = delta.iter().find(|d| d.1 as f64 >= total as f64 * 0.99).map_or(f64::NAN, |d| d.0);
    bound * 1000.0
}

#[derive(Default)]
pub struct Outcome {
    /// Events acknowledged with 200.
    pub events: u64,
    /// Batches refused (503 and other non-2xx answers).
    pub unavailable: u64,
    /// Acknowledgement latency of every accepted batch.
    pub latencies_us: Vec<u64>,
    /// How long the phase ran.
    pub seconds: f64,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.seconds
    }

    pub fn percentile_ms(&mut self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return f64::NAN;
        }
        self.latencies_us.sort_unstable();
        let i = ((self.latencies_us.len() as f64 * p) as usize).min(self.latencies_us.len() - 1);
        self.latencies_us[i] as f64 / 1000.0
    }
}

/// Runs `clients` connections for `duration`; each sends a batch every `interval` (open loop) or
/// as soon as the last was answered (`None`, closed loop).
pub fn drive(
    url: &str,
    bodies: &Arc<Vec<Mutex<Bodies>>>,
    clients: usize,
    duration: Duration,
    interval: Option<Duration>,
    server_rss: Option<&Server>,
) -> (Outcome, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let events = Arc::new(AtomicU64::new(0));
    let unavailable = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (url, bodies, stop, events, unavailable) =
                (url.to_owned(), bodies.clone(), stop.clone(), events.clone(), unavailable.clone());
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(60)))
                    .build()
                    .into();
                let mut latencies = Vec::new();
                let mut next_send = Instant::now() + interval.map_or(Duration::ZERO, |i| i * c as u32 / clients as u32);
                let mut mine = bodies[c % bodies.len()].lock().expect("bodies");
                while !stop.load(Ordering::Relaxed) {
                    if let Some(interval) = interval {
                        let now = Instant::now();
                        if next_send > now {
                            std::thread::sleep(next_send - now);
                        }
                        next_send += interval;
                    }
                    let body = mine.next();
                    let sent = Instant::now();
                    match agent.post(&url).send(body) {
                        Ok(mut r) if r.status().as_u16() == 200 => {
                            let _ = r.body_mut().read_to_vec();
                            latencies.push(sent.elapsed().as_micros() as u64);
                            events.fetch_add(BATCH_EVENTS as u64, Ordering::Relaxed);
                        }
                        Ok(mut r) => {
                            let _ = r.body_mut().read_to_vec();
                            unavailable.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(50));
                        }
                        Err(e) => panic!("posting to {url}: {e}"),
                    }
                }
                latencies
            })
        })
        .collect();
    let mut peak_rss = 0;
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(100));
        if let Some(server) = server_rss {
            peak_rss = peak_rss.max(server.rss_bytes());
        }
    }
    stop.store(true, Ordering::Relaxed);
    let mut outcome = Outcome::default();
    for t in threads {
        outcome.latencies_us.extend(t.join().expect("client thread"));
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome.events = events.load(Ordering::Relaxed);
    outcome.unavailable = unavailable.load(Ordering::Relaxed);
    (outcome, peak_rss)
}
