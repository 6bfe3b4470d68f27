//! Posting events the way the API server's batching webhook backend does: `EventList`s of up to
//! `batch_size` items, several in flight at once, a retry with exponential backoff (×1.5) on any
//! non-2xx answer or connection failure, honouring `Retry-After`, and the batch dropped after the
//! last attempt. It doubles as the load generator.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How to post.
#[derive(Clone)]
pub struct WebhookOptions {
    /// `https://host:port/audit`.
    pub url: String,
    /// Items per `EventList` (`--audit-webhook-batch-max-size`, 400 by default).
    pub batch_size: usize,
    /// Batches in flight at once.
    pub concurrency: usize,
    /// Attempts per batch before it is dropped (the API server makes 5... after the first).
    pub max_attempts: u32,
    /// Wait before the first retry (10s in the API server); each next one waits 1.5 times longer.
    pub initial_backoff: Duration,
    /// `Authorization: Bearer` token.
    pub token: Option<String>,
    /// The HTTP client (TLS settings included).
    pub agent: ureq::Agent,
}

/// What sending did.
#[derive(Debug, Clone, Default)]
pub struct SendReport {
    /// Batches acknowledged.
    pub batches: u64,
    /// Events in acknowledged batches.
    pub events: u64,
    /// Attempts that failed and were retried.
    pub retries: u64,
    /// Batches given up on.
    pub dropped_batches: u64,
    /// Events in them.
    pub dropped_events: u64,
    /// From the first batch to the last answer.
    pub elapsed: Duration,
    /// Acknowledgement latency of each acknowledged batch, in microseconds (sorted).
    pub latencies_us: Vec<u64>,
    /// The last failure seen, if any.
    pub last_error: Option<String>,
}

impl SendReport {
    /// The `p` quantile (0..1) of the acknowledgement latency, in milliseconds.
    pub fn latency_ms(&self, p: f64) -> f64 {
        if self.latencies_us.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies_us.len() as f64 * p) as usize).min(self.latencies_us.len() - 1);
        self.latencies_us[i] as f64 / 1000.0
    }

    /// Acknowledged events per second.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The JSON body of an `EventList` holding `items` (each already a JSON object).
pub fn event_list(items: &[String]) -> String {
    let mut body = String::with_capacity(items.iter().map(String::len).sum::<usize>() + items.len() + 80);
    body.push_str(r#"{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{},"items":["#);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(item);
    }
    body.push_str("]}");
    body
}

/// Collects events into batches and posts them from worker threads.
pub struct Batcher {
    options: WebhookOptions,
    pending: Vec<String>,
    queue: Option<SyncSender<(String, u64)>>,
    workers: Vec<JoinHandle<()>>,
    report: Arc<Mutex<SendReport>>,
    started: Instant,
}

impl Batcher {
    /// Starts the workers.
    pub fn new(options: WebhookOptions) -> Self {
        let (queue, batches) = sync_channel::<(String, u64)>(options.concurrency.max(1) * 2);
        let batches = Arc::new(Mutex::new(batches));
        let report = Arc::new(Mutex::new(SendReport::default()));
        let workers = (0..options.concurrency.max(1))
            .map(|_| {
                let (options, batches, report) = (options.clone(), batches.clone(), report.clone());
                std::thread::spawn(move || worker(&options, &batches, &report))
            })
            .collect();
        Batcher { options, pending: Vec::new(), queue: Some(queue), workers, report, started: Instant::now() }
    }

    /// Adds one event (an `EventList` item).
    pub fn push(&mut self, event: &Value) {
        self.pending.push(event.to_string());
        if self.pending.len() >= self.options.batch_size.max(1) {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let count = self.pending.len() as u64;
        let body = event_list(&self.pending);
        self.pending.clear();
        if let Some(queue) = &self.queue {
            let _ = queue.send((body, count));
        }
    }

    /// Sends what is left, waits for every answer, and reports.
    pub fn finish(mut self) -> SendReport {
        self.flush();
        self.queue = None;
        for worker in std::mem::take(&mut self.workers) {
            let _ = worker.join();
        }
        let mut report = self.report.lock().map(|r| r.clone()).unwrap_or_default();
        report.elapsed = self.started.elapsed();
        report.latencies_us.sort_unstable();
        report
    }
}

fn worker(options: &WebhookOptions, batches: &Mutex<Receiver<(String, u64)>>, report: &Mutex<SendReport>) {
    loop {
        let next = match batches.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((body, count)) = next else { return };
        let mut attempt = 1;
        loop {
            let sent = Instant::now();
            let mut request = options.agent.post(&options.url).header("Content-Type", "application/json");
            if let Some(token) = &options.token {
                request = request.header("Authorization", &format!("Bearer {token}"));
            }
            let outcome = match request.send(body.as_bytes()) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok());
                    let text = response.body_mut().read_to_string().unwrap_or_default();
                    match status {
                        200..=299 => Ok(()),
                        _ => Err((format!("{status}: {}", text.trim()), retry_after)),
                    }
                }
                Err(e) => Err((e.to_string(), None)),
            };
            let Ok(mut r) = report.lock() else { return };
            match outcome {
                Ok(()) => {
                    r.batches += 1;
                    r.events += count;
                    r.latencies_us.push(sent.elapsed().as_micros() as u64);
                    break;
                }
                Err((error, retry_after)) => {
                    r.last_error = Some(error);
                    if attempt >= options.max_attempts {
                        r.dropped_batches += 1;
                        r.dropped_events += count;
                        break;
                    }
                    r.retries += 1;
                    drop(r);
                    let backoff = options.initial_backoff.mul_f64(1.5f64.powi(attempt as i32 - 1));
                    let wait = retry_after.map_or(backoff, Duration::from_secs);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
            }
        }
    }
}
