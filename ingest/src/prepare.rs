//! Preparing: the expensive, stateless half of ingest. An input (an HTTP body, a WAL entry) is
//! decoded and normalized into one Arrow batch of records plus their de-duplication keys, without
//! touching the recording. Any number of inputs can be prepared at once, on any thread; the cheap,
//! ordered half (de-duplication, sessions, files) is [`Ingestor::commit`](crate::Ingestor::commit).

use std::collections::BTreeMap;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::error::ArrowError;
use kubestep_schemas::OperationBatchBuilder;
use kubestep_schemas::audit::Event;

use crate::decode::{EventSink, Location, decode, decode_json_lines};
use crate::dedup::record_key;
use crate::normalize::{NormalizeConfig, Normalized, normalize};
use crate::rejected::Rejection;

/// The records of one input, ready to be committed.
#[derive(Debug, Default)]
pub struct PreparedBatch {
    /// The records, in input order, with the file schema; `None` when there are none.
    pub records: Option<RecordBatch>,
    /// The de-duplication key of each row of `records`.
    pub keys: Vec<u128>,
    /// Audit events decoded, at every stage.
    pub events_read: u64,
    /// Events at stages that are not recorded, by stage.
    pub dropped_by_stage: BTreeMap<&'static str, u64>,
    /// Events or pieces of the input that could not be records, each with its text.
    pub rejections: Vec<(Rejection, Vec<u8>)>,
    /// Lines of input decoded (blocks of JSON lines only).
    pub lines: usize,
}

impl PreparedBatch {
    /// Rows in `records`.
    pub fn num_records(&self) -> usize {
        self.keys.len()
    }

    /// Renumbers the rejections' lines of a block prepared on its own, now that the
    /// `lines_before` lines of the input before the block are known.
    pub fn follow_lines(&mut self, lines_before: usize) {
        for location in self.rejections.iter_mut().filter_map(|(r, _)| r.location.as_mut()) {
            location.line += lines_before;
        }
    }

    /// Whether the input itself, rather than an event inside it, could not be read: a piece that
    /// is not JSON, or a top-level value that is not an event or a list of events. A webhook body
    /// like that is refused as a whole.
    pub fn first_malformed(&self) -> Option<&Rejection> {
        self.rejections.iter().map(|(r, _)| r).find(|r| r.location.is_some_and(|l| l.item.is_none()))
    }
}

/// Decodes and normalizes every event of `bytes`, which came from `source`.
pub fn prepare(source: &str, bytes: &[u8], config: &NormalizeConfig) -> Result<PreparedBatch, ArrowError> {
    let mut sink =
        PrepareSink { source, config, builder: OperationBatchBuilder::new(), prepared: PreparedBatch::default() };
    decode(bytes, &mut sink);
    sink.finish()
}

/// Prepares block after block of JSON-lines input with one Arrow builder, which keeps the
/// capacity its largest block needed: an import prepares a file's blocks on every core at once,
/// one `LinePreparer` per thread, and commits them in order.
pub struct LinePreparer {
    config: NormalizeConfig,
    builder: OperationBatchBuilder,
}

impl LinePreparer {
    /// A preparer normalizing with `config`.
    pub fn new(config: NormalizeConfig) -> Self {
        Self { config, builder: OperationBatchBuilder::new() }
    }

    /// Like [`prepare`] for a block of whole lines of a JSON-lines input, which `starts_input` or
    /// follows lines not counted yet: rejections carry line numbers within the block until
    /// [`PreparedBatch::follow_lines`] makes them the input's own. So a block is prepared without
    /// anyone having counted the lines before it.
    pub fn prepare(&mut self, source: &str, block: &[u8], starts_input: bool) -> Result<PreparedBatch, ArrowError> {
        let builder = std::mem::take(&mut self.builder);
        let mut sink = PrepareSink { source, config: &self.config, builder, prepared: PreparedBatch::default() };
        let lines = decode_json_lines(block, 0, starts_input, &mut sink);
        let PrepareSink { mut builder, mut prepared, .. } = sink;
        prepared.lines = lines;
        let records = if builder.is_empty() { Ok(None) } else { builder.finish().map(Some) };
        self.builder = builder;
        prepared.records = records?;
        Ok(prepared)
    }
}

struct PrepareSink<'s, 'c> {
    source: &'s str,
    config: &'c NormalizeConfig,
    builder: OperationBatchBuilder,
    prepared: PreparedBatch,
}

impl PrepareSink<'_, '_> {
    fn finish(self) -> Result<PreparedBatch, ArrowError> {
        let PrepareSink { mut builder, mut prepared, .. } = self;
        if !builder.is_empty() {
            prepared.records = Some(builder.finish()?);
        }
        Ok(prepared)
    }

    fn reject(&mut self, location: Location, reason: String, raw: &[u8]) {
        let rejection = Rejection { source: self.source.to_owned(), location: Some(location), reason };
        self.prepared.rejections.push((rejection, raw.to_vec()));
    }
}

impl EventSink for PrepareSink<'_, '_> {
    fn on_event(&mut self, location: Location, event: Event<'_>, raw: &[u8]) {
        self.prepared.events_read += 1;
        match normalize(event, self.config) {
            Ok(Normalized::Record(record)) => {
                self.prepared.keys.push(record_key(&record));
                self.builder.append(&record);
            }
            Ok(Normalized::Dropped(stage)) => *self.prepared.dropped_by_stage.entry(stage.as_str()).or_default() += 1,
            Err(e) => self.reject(location, e.to_string(), raw),
        }
    }

    fn on_reject(&mut self, location: Location, reason: String, raw: &[u8]) {
        self.reject(location, reason, raw);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, stage: &str) -> String {
        format!(
            r#"{{"auditID":"{id}","stage":"{stage}","verb":"get","requestURI":"/api/v1/namespaces/a/pods/p",
            "objectRef":{{"resource":"pods","namespace":"a","name":"p","apiVersion":"v1"}},
            "user":{{"username":"alice"}},"responseStatus":{{"code":200}},
            "requestReceivedTimestamp":"2024-01-01T00:00:00.000000Z","stageTimestamp":"2024-01-01T00:00:00.010000Z"}}"#
        )
    }

    #[test]
    fn an_event_list_becomes_one_batch_with_a_key_per_row() {
        let body = format!(
            r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":[{},{},{},{{"stage":"ResponseComplete"}}]}}"#,
            event("a", "ResponseComplete"),
            event("b", "RequestReceived"),
            event("c", "ResponseComplete"),
        );
        let prepared = prepare("test", body.as_bytes(), &NormalizeConfig::default()).unwrap();
        assert_eq!(prepared.events_read, 4);
        assert_eq!(prepared.num_records(), 2);
        assert_eq!(prepared.records.as_ref().map(|b| b.num_rows()), Some(2));
        assert_eq!(prepared.dropped_by_stage.get("RequestReceived"), Some(&1));
        assert_eq!(prepared.rejections.len(), 1, "the event without an auditID");
        assert!(prepared.first_malformed().is_none(), "a bad item does not make the body malformed");
        assert_ne!(prepared.keys[0], prepared.keys[1]);
    }

    #[test]
    fn a_body_that_is_not_json_is_malformed() {
        let body = br#"{"kind":"EventList","items":[{"auditID":"a""#;
        let prepared = prepare("test", body, &NormalizeConfig::default()).unwrap();
        assert_eq!(prepared.num_records(), 0);
        assert!(prepared.first_malformed().is_some());
    }
}
