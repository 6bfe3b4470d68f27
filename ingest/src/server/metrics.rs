//! What `GET /metrics` reports, in the Prometheus text format. Counters and histograms are plain
//! atomics updated on the request path; rendering reads them without locking anything.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0];

/// A latency histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| seconds <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// How a `POST /audit` ended, for the batch counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOutcome {
    /// Durable and acknowledged.
    Accepted,
    /// 400: not JSON, or not audit events.
    Malformed,
    /// 413: over `--max-body`.
    TooLarge,
    /// 503: queue or disk full, or shutting down.
    Unavailable,
    /// 401: no valid credentials.
    Unauthorized,
    /// 408: the body did not arrive within `--client-timeout`.
    TimedOut,
}

impl BatchOutcome {
    const ALL: [BatchOutcome; 6] = [
        BatchOutcome::Accepted,
        BatchOutcome::Malformed,
        BatchOutcome::TooLarge,
        BatchOutcome::Unavailable,
        BatchOutcome::Unauthorized,
        BatchOutcome::TimedOut,
    ];

    fn label(self) -> &'static str {
        match self {
            BatchOutcome::Accepted => "accepted",
            BatchOutcome::Malformed => "malformed",
            BatchOutcome::TooLarge => "too_large",
            BatchOutcome::Unavailable => "unavailable",
            BatchOutcome::Unauthorized => "unauthorized",
            BatchOutcome::TimedOut => "timed_out",
        }
    }
}

/// Every figure the service exports.
#[derive(Debug, Default)]
pub struct Metrics {
    batches: [AtomicU64; 6],
    /// Connections being served.
    pub connections_open: AtomicU64,
    /// Connections closed at accept because `--max-connections` were open.
    pub connections_refused: AtomicU64,
    /// Request body bytes received on `POST /audit`.
    pub bytes_received: AtomicU64,
    /// Events in acknowledged batches, at every stage (counted at the acknowledgement).
    pub events_received: AtomicU64,
    /// Records written to Parquet files.
    pub events_stored: AtomicU64,
    /// Events that could not be records (logged under `DATA/rejected/`).
    pub events_rejected: AtomicU64,
    /// Events already recorded.
    pub events_deduplicated: AtomicU64,
    /// `RequestReceived` events, counted and dropped.
    pub dropped_request_received: AtomicU64,
    /// `ResponseStarted` events, counted and dropped.
    pub dropped_response_started: AtomicU64,
    /// Records waiting in memory for the next Parquet file.
    pub buffered_records: AtomicU64,
    /// Body bytes accepted but not yet durable in the WAL.
    pub queue_bytes: AtomicU64,
    /// Parquet files written.
    pub files_written: AtomicU64,
    /// Failed flushes (full disk, I/O errors); the records stay buffered and in the WAL.
    pub flush_failures: AtomicU64,
    /// One WAL group commit: write + fsync.
    pub wal_fsync: Histogram,
    /// Entries per group commit, summed (divide by `wal_fsync` count for the average group).
    pub wal_group_entries: AtomicU64,
    /// One flush of the buffered records into Parquet files.
    pub flush: Histogram,
    /// From a request's body being read to its acknowledgement.
    pub ack: Histogram,
    /// Preparing one batch (decode + normalize into Arrow), including the wait for a blocking thread.
    pub prepare: Histogram,
}

impl Metrics {
    /// Counts a finished `POST /audit`.
    pub fn batch(&self, outcome: BatchOutcome) {
        let i = BatchOutcome::ALL.iter().position(|&o| o == outcome).unwrap_or(0);
        self.batches[i].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", value.load(Relaxed));
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {}", value.load(Relaxed));
        };
        let _ = writeln!(
            out,
            "# HELP kubestep_batches_total Webhook requests by outcome.\n# TYPE kubestep_batches_total counter"
        );
        for (outcome, value) in BatchOutcome::ALL.iter().zip(&self.batches) {
            let _ = writeln!(out, "kubestep_batches_total{{outcome=\"{}\"}} {}", outcome.label(), value.load(Relaxed));
        }
        gauge(&mut out, "kubestep_connections_open", "Connections being served.", &self.connections_open);
        counter(
            &mut out,
            "kubestep_connections_refused_total",
            "Connections closed at accept because the connection limit was reached.",
            &self.connections_refused,
        );
        counter(&mut out, "kubestep_received_bytes_total", "Webhook body bytes received.", &self.bytes_received);
        counter(&mut out, "kubestep_events_received_total", "Audit events in accepted batches.", &self.events_received);
        counter(&mut out, "kubestep_events_stored_total", "Records written to Parquet.", &self.events_stored);
        counter(&mut out, "kubestep_events_rejected_total", "Events that could not be records.", &self.events_rejected);
        counter(&mut out, "kubestep_events_deduplicated_total", "Events already recorded.", &self.events_deduplicated);
        let _ = writeln!(
            out,
            "# HELP kubestep_events_dropped_total Events at stages that are not recorded.\n\
             # TYPE kubestep_events_dropped_total counter\n\
             kubestep_events_dropped_total{{stage=\"RequestReceived\"}} {}\n\
             kubestep_events_dropped_total{{stage=\"ResponseStarted\"}} {}",
            self.dropped_request_received.load(Relaxed),
            self.dropped_response_started.load(Relaxed)
        );
        counter(&mut out, "kubestep_files_written_total", "Parquet files written.", &self.files_written);
        counter(
            &mut out,
            "kubestep_flush_failures_total",
            "Flushes that failed; their records stay buffered.",
            &self.flush_failures,
        );
        gauge(&mut out, "kubestep_queue_bytes", "Body bytes waiting for the WAL.", &self.queue_bytes);
        gauge(
            &mut out,
            "kubestep_buffered_records",
            "Records waiting for the next Parquet file.",
            &self.buffered_records,
        );
        counter(
            &mut out,
            "kubestep_wal_group_entries_total",
            "Batches made durable, summed over group commits.",
            &self.wal_group_entries,
        );
        self.wal_fsync.render(&mut out, "kubestep_wal_fsync_seconds", "One WAL group commit (write and fsync).");
        self.flush.render(&mut out, "kubestep_flush_seconds", "One flush of buffered records to Parquet.");
        self.ack.render(&mut out, "kubestep_ack_seconds", "From a webhook body read to its acknowledgement.");
        self.prepare.render(
            &mut out,
            "kubestep_prepare_seconds",
            "Preparing one batch, including the wait for a blocking thread.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_counters_labelled() {
        let m = Metrics::default();
        m.wal_fsync.observe(Duration::from_micros(50));
        m.wal_fsync.observe(Duration::from_millis(3));
        m.batch(BatchOutcome::Malformed);
        let text = m.render();
        assert!(text.contains("kubestep_wal_fsync_seconds_bucket{le=\"0.0001\"} 1\n"), "{text}");
        assert!(text.contains("kubestep_wal_fsync_seconds_bucket{le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("kubestep_wal_fsync_seconds_count 2\n"), "{text}");
        assert!(text.contains("kubestep_batches_total{outcome=\"malformed\"} 1\n"), "{text}");
        assert!(text.contains("kubestep_batches_total{outcome=\"accepted\"} 0\n"), "{text}");
    }
}
