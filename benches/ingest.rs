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
//! Run: `cargo bench --bench ingest`. Report each as a ratio of `parse_floor`.

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

/// The same allocator as the `kubestep` binary, so the benchmark measures what the binary does.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
struct ArrowSink {
    config: NormalizeConfig,
    builder: OperationBatchBuilder,
    rows: usize,
    parquet: Option<ArrowWriter<Vec<u8>>>,
}

impl ArrowSink {
    fn new(parquet: bool) -> Self {
        let parquet = parquet.then(|| {
            ArrowWriter::try_new(Vec::new(), kubestep_schemas::file_schema(), Some(writer_properties()))
                .expect("parquet writer")
        });
        Self { config: NormalizeConfig::default(), builder: OperationBatchBuilder::new(), rows: 0, parquet }
    }

    fn flush(&mut self) {
        let batch = self.builder.finish().expect("batch");
        self.rows += batch.num_rows();
        if let Some(writer) = self.parquet.as_mut() {
            writer.write(&batch).expect("encode");
        }
        black_box(batch);
    }

    fn finish(mut self) -> usize {
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

fn ingest(c: &mut Criterion) {
    let input = realistic_audit_log(32 << 20);
    let events = input.iter().filter(|&&b| b == b'\n').count();
    eprintln!("input: {} bytes, {} events, {} bytes/event", input.len(), events, input.len() / events);

    let mut group = c.benchmark_group("ingest");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("parse_floor", |b| {
        b.iter(|| {
            let stream = serde_json::Deserializer::from_slice(black_box(&input)).into_iter::<IgnoredAny>();
            stream.map(|v| v.map(|_| 1usize).unwrap_or(0)).sum::<usize>()
        })
    });
    group.bench_function("decode_only", |b| {
        b.iter(|| {
            let mut sink = CountSink(0);
            decode(black_box(&input), &mut sink);
            assert_eq!(sink.0, events);
            sink.0
        })
    });
    for (name, parquet) in [("decode_normalize_arrow", false), ("decode_normalize_arrow_parquet", true)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut sink = ArrowSink::new(parquet);
                decode(black_box(&input), &mut sink);
                let rows = sink.finish();
                assert_eq!(rows, events);
                rows
            })
        });
    }
    group.bench_function("import_to_parquet", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("tempdir"),
            |dir| {
                let mut ingestor = Ingestor::new(dir.path(), "bench", IngestConfig::default());
                ingestor.ingest("bench", black_box(&input), &mut |_| {}).expect("ingest");
                let (stats, _) = ingestor.finish().expect("finish");
                assert_eq!(stats.records_stored as usize, events);
                dir
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
