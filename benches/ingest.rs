//! Ingest throughput on realistic audit JSON, next to the parse floor measured in the same run.
//!
//! - `parse_floor`: `serde_json` skipping every event (`IgnoredAny`): no decoder can go faster.
//! - `decode_only`: our decoder finding and parsing every event, nothing more.
//! - `decode_normalize_arrow`: our decoder, normalizer and Arrow builder.
//! - `decode_normalize_arrow_parquet`: the same, plus encoding every batch as KubeStep's Parquet
//!   (zstd, statistics) into memory.
//! - `import_to_parquet`: the whole import pipeline (plus de-duplication, sessions, sorting, zstd
//!   Parquet and fsync) into a fresh directory: the disk's fsync latency makes this one noisy.
//!
//! Run: `cargo bench --bench ingest`. Report each as a ratio of `parse_floor`. On a shared machine,
//! `KUBESTEP_INGEST_ROUNDS=20 cargo bench --bench ingest` first prints the ratios of the fastest of
//! 20 interleaved rounds of every stage, which are much steadier.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::parquet::arrow::ArrowWriter;
use kubestep_ingest::decode::{EventSink, Location, decode};
use kubestep_ingest::normalize::{NormalizeConfig, Normalized, normalize};
use kubestep_ingest::writer::writer_properties;
use kubestep_ingest::{IngestConfig, Ingestor};
use kubestep_schemas::OperationBatchBuilder;
use kubestep_schemas::audit::Event;
use serde::de::IgnoredAny;

#[path = "common/generator.rs"]
mod generator;

use generator::realistic_audit_log;

/// The allocator `kubestep import` and `kubestep serve` run on (src/allocator.rs), so the benchmark
/// measures what the binary does.
#[global_allocator]
static GLOBAL: std::alloc::System = std::alloc::System;

/// Decoding alone: events found and parsed, nothing done with them.
struct CountSink(usize);

impl EventSink for CountSink {
    fn on_event(&mut self, _location: Location, event: Event<'_>, _raw: &[u8]) {
        black_box(&event);
        self.0 += 1;
    }
    fn on_reject(&mut self, _location: Location, reason: String, _raw: &[u8]) {
        panic!("generated input rejected: {reason}");
    }
}

/// Decode + normalize + append to Arrow, finishing a batch every 8192 rows (as the pipeline does),
/// and, when `parquet` is set, encoding each batch into it.
///
/// The builder lives across iterations, as a partition's builder lives across a whole import: an
/// import of gigabytes runs with builders already sized by their previous batch, and that steady
/// state is what is measured (a fresh builder per 32 MiB would measure its first growth instead).
struct ArrowSink {
    config: NormalizeConfig,
    builder: OperationBatchBuilder,
    rows: usize,
    parquet: Option<ArrowWriter<Vec<u8>>>,
}

impl ArrowSink {
    fn new() -> Self {
        Self { config: NormalizeConfig::default(), builder: OperationBatchBuilder::new(), rows: 0, parquet: None }
    }

    /// Starts an iteration: no rows yet, and a new in-memory Parquet file when `parquet` is set.
    fn start(&mut self, parquet: bool) {
        self.rows = 0;
        self.parquet = parquet.then(|| {
            ArrowWriter::try_new(Vec::new(), kubestep_schemas::file_schema(), Some(writer_properties()))
                .expect("parquet writer")
        });
    }

    fn flush(&mut self) {
        let batch = self.builder.finish().expect("batch");
        self.rows += batch.num_rows();
        if let Some(writer) = self.parquet.as_mut() {
            writer.write(&batch).expect("encode");
        }
        black_box(batch);
    }

    fn finish(&mut self) -> usize {
        self.flush();
        if let Some(writer) = self.parquet.take() {
            black_box(writer.into_inner().expect("close").len());
        }
        self.rows
    }
}

impl EventSink for ArrowSink {
    fn on_event(&mut self, _location: Location, event: Event<'_>, _raw: &[u8]) {
        if let Ok(Normalized::Record(record)) = normalize(event, &self.config) {
            self.builder.append(&record);
            if self.builder.len() == 8192 {
                self.flush();
            }
        }
    }
    fn on_reject(&mut self, _location: Location, reason: String, _raw: &[u8]) {
        panic!("generated input rejected: {reason}");
    }
}

fn parse_floor(input: &[u8]) -> usize {
    let stream = serde_json::Deserializer::from_slice(black_box(input)).into_iter::<IgnoredAny>();
    stream.map(|v| v.map(|_| 1usize).unwrap_or(0)).sum::<usize>()
}

fn decode_only(input: &[u8], events: usize) -> usize {
    let mut sink = CountSink(0);
    decode(black_box(input), &mut sink);
    assert_eq!(sink.0, events);
    sink.0
}

fn decode_to_arrow(sink: &mut ArrowSink, input: &[u8], events: usize, parquet: bool) -> usize {
    sink.start(parquet);
    decode(black_box(input), sink);
    let rows = sink.finish();
    assert_eq!(rows, events);
    rows
}

fn import_to_parquet(input: &[u8], events: usize) {
    let Ok(dir) = tempfile::tempdir() else { panic!("no temporary directory") };
    let mut ingestor = Ingestor::new(dir.path(), "bench", IngestConfig::default());
    ingestor.ingest("bench", black_box(input), &mut |_| {}).expect("ingest");
    let (stats, _) = ingestor.finish().expect("finish");
    assert_eq!(stats.records_stored as usize, events);
}

/// With `KUBESTEP_INGEST_ROUNDS=N`: runs every stage once per round, the stages interleaved, and
/// prints each stage's fastest round as a ratio of the fastest parse floor. On a shared machine the
/// fastest of interleaved rounds is far steadier than criterion's means, which drift with the
/// neighbours' load between one benchmark and the next.
fn interleaved_ratios(input: &[u8], events: usize) {
    let Some(rounds) = std::env::var("KUBESTEP_INGEST_ROUNDS").ok().and_then(|v| v.parse::<usize>().ok()) else {
        return;
    };
    let mut sink = ArrowSink::new();
    let mut best = [f64::INFINITY; 5];
    for _ in 0..rounds {
        for (stage, best) in best.iter_mut().enumerate() {
            let started = std::time::Instant::now();
            match stage {
                0 => drop(parse_floor(input)),
                1 => drop(decode_only(input, events)),
                2 => drop(decode_to_arrow(&mut sink, input, events, false)),
                3 => drop(decode_to_arrow(&mut sink, input, events, true)),
                _ => import_to_parquet(input, events),
            }
            *best = best.min(started.elapsed().as_secs_f64());
        }
    }
    let names =
        ["parse_floor", "decode_only", "decode_normalize_arrow", "decode_normalize_arrow_parquet", "import_to_parquet"];
    eprintln!("fastest of {rounds} interleaved rounds:");
    for (name, secs) in names.iter().zip(best) {
        let mib_s = input.len() as f64 / secs / (1 << 20) as f64;
        eprintln!("  {name:<32} {:>8.1} ms {mib_s:>7.0} MiB/s {:>5.2}x floor", secs * 1e3, secs / best[0]);
    }
}

fn ingest(c: &mut Criterion) {
    let input = realistic_audit_log(32 << 20);
    let events = input.iter().filter(|&&b| b == b'\n').count();
    eprintln!("input: {} bytes, {} events, {} bytes/event", input.len(), events, input.len() / events);
    interleaved_ratios(&input, events);

    let mut group = c.benchmark_group("ingest");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("parse_floor", |b| b.iter(|| parse_floor(&input)));
    group.bench_function("decode_only", |b| b.iter(|| decode_only(&input, events)));
    for (name, parquet) in [("decode_normalize_arrow", false), ("decode_normalize_arrow_parquet", true)] {
        let mut sink = ArrowSink::new();
        group.bench_function(name, |b| b.iter(|| decode_to_arrow(&mut sink, &input, events, parquet)));
    }
    group.bench_function("import_to_parquet", |b| b.iter(|| import_to_parquet(&input, events)));
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
