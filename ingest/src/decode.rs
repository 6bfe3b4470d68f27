//! Decoding: from the bytes of a file or an HTTP body to audit events.
//!
//! Accepted shapes, detected from the content (never from a file name or a header):
//! JSON lines (the log backend), an `EventList` (the webhook), a JSON array of events, one event
//! (compact or pretty-printed), pretty-printed events one after the other (`jq .` output), and the
//! Azure diagnostic wrapper `{"records":[{"properties":{"log": <event as string or object>}}]}` in any
//! of those, and YAML documents (`kubectl -o yaml`, test fixtures) for input that is not JSON.
//! Pre-v1 events decode as they are. A UTF-8 byte-order mark is skipped.
//!
//! Decoding never fails as a whole: every event found is handed to the [`EventSink`], every piece
//! that is not an event is handed to it as a rejection with its line and reason, and decoding goes on
//! with the next line or value.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use kubestep_schemas::audit::Event;
use memchr::memmem;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// Where in an input an event (or a rejected piece) was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line on which the top-level JSON value starts.
    pub line: usize,
    /// 0-based position inside an `EventList`, array or `records` wrapper, if any.
    pub item: Option<usize>,
}

impl Location {
    fn item(self, item: usize) -> Self {
        // Nested containers report the innermost position; the line still locates the outer value.
        Location { line: self.line, item: Some(item) }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.item {
            Some(item) => write!(f, "line {}, item {}", self.line, item),
            None => write!(f, "line {}", self.line),
        }
    }
}

/// Receives what the decoder finds.
pub trait EventSink {
    /// An audit event; `raw` is its JSON text (for the rejected-events log if it cannot be recorded).
    fn on_event(&mut self, location: Location, event: Event<'_>, raw: &[u8]);
    /// Something that is not an audit event, with the reason.
    fn on_reject(&mut self, location: Location, reason: String, raw: &[u8]);
    /// How many bytes of the input have been decoded so far (called now and then, for progress bars).
    fn on_progress(&mut self, _consumed: usize) {}
}

/// How deep wrappers may nest (array of records of EventLists...) before the input is refused.
const MAX_WRAPPER_DEPTH: usize = 6;

/// Decodes every event in `input` into `sink`.
pub fn decode(input: &[u8], sink: &mut impl EventSink) {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let Some(start) = input.iter().position(|b| !b.is_ascii_whitespace()) else {
        return;
    };
    let leading_lines = memchr::memchr_iter(b'\n', &input[..start]).count();
    let body = &input[start..];
    match shape(body) {
        Shape::Lines => {
            decode_lines(body, leading_lines, sink);
        }
        Shape::Stream => decode_stream(body, leading_lines, sink),
        Shape::Yaml => decode_yaml(body, leading_lines, sink),
    }
}

/// How an input is laid out, judged from its start (after a BOM and blank lines).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One JSON value per line; also text with some JSON lines among other lines (a log whose
    /// first lines were cut by rotation, or with lines from another logger), so that only the
    /// lines that are not JSON are lost.
    Lines,
    /// JSON values laid out freely: one document, an array, pretty-printed values in a row.
    Stream,
    /// No line starts a JSON object: YAML documents.
    Yaml,
}

fn shape(body: &[u8]) -> Shape {
    match body.first() {
        Some(b'{') if first_line_is_complete(body) => Shape::Lines,
        Some(b'{' | b'[') => Shape::Stream,
        _ if memchr::memmem::find(body, b"\n{").is_some() => Shape::Lines,
        _ => Shape::Yaml,
    }
}

/// YAML documents separated by `---` lines, each an event or a container of events. The slow path:
/// every document is converted to JSON text and decoded like any other value. Each document is
/// parsed on its own, so a broken one costs only itself and is reported at its own line.
fn decode_yaml(body: &[u8], leading_lines: usize, sink: &mut impl EventSink) {
    let mut documents = Vec::new();
    let (mut start, mut start_line, mut line) = (0, leading_lines + 1, leading_lines + 1);
    let mut pos = 0;
    while pos < body.len() {
        let end = memchr::memchr(b'\n', &body[pos..]).map_or(body.len(), |i| pos + i);
        let text = &body[pos..end];
        if text.starts_with(b"---") && text[3..].iter().all(u8::is_ascii_whitespace) {
            documents.push((start_line, &body[start..pos]));
            (start, start_line) = (end + 1, line + 1);
        }
        pos = end + 1;
        line += 1;
    }
    documents.push((start_line, &body[start.min(body.len())..]));
    let many = documents.len() > 1;
    for (i, (line, text)) in documents.into_iter().enumerate() {
        let location = Location { line, item: many.then_some(i) };
        match serde_norway::from_slice::<serde_json::Value>(text) {
            Ok(serde_json::Value::Null) => {}
            Ok(value) => match serde_json::to_string(&value) {
                Ok(json) => decode_value(json.as_bytes(), location, 0, sink),
                Err(err) => sink.on_reject(location, format!("YAML document cannot be JSON: {err}"), text),
            },
            Err(err) => sink.on_reject(location, format!("neither JSON nor a YAML audit event: {err}"), text),
        }
    }
    sink.on_progress(body.len());
}

/// True when `input` is in the JSON-lines shape: its first line is a whole JSON object. Such input
/// can be decoded a block of whole lines at a time with [`decode_json_lines`].
pub fn is_json_lines(input: &[u8]) -> bool {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let start = skip_whitespace(input);
    shape(&input[start..]) == Shape::Lines
}

/// Decodes a block of whole lines of JSON-lines input; reported line numbers count `lines_before`
/// lines before the block, and a block that `starts_input` may start with a byte-order mark.
/// Returns how many lines it held.
pub fn decode_json_lines(block: &[u8], lines_before: usize, starts_input: bool, sink: &mut impl EventSink) -> usize {
    let block = if starts_input { block.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(block) } else { block };
    decode_lines(block, lines_before, sink)
}

/// True when the first line of `body` holds a whole JSON value: the JSON-lines shape.
fn first_line_is_complete(body: &[u8]) -> bool {
    let end = memchr::memchr(b'\n', body).unwrap_or(body.len());
    match serde_json::from_slice::<IgnoredAny>(&body[..end]) {
        Ok(_) => true,
        Err(e) => !e.is_eof(),
    }
}

/// One JSON value per line. The fast path: each line is parsed once, straight into an [`Event`].
/// Returns how many lines `body` held.
fn decode_lines(body: &[u8], leading_lines: usize, sink: &mut impl EventSink) -> usize {
    let mut line_no = leading_lines;
    let mut start = 0;
    while start < body.len() {
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
        line_no += 1;
        if line_no.is_multiple_of(4096) {
            sink.on_progress(end);
        }
        let line = trim_ascii(&body[start..end]);
        start = end + 1;
        if line.is_empty() {
            continue;
        }
        decode_value(line, Location { line: line_no, item: None }, 0, sink);
    }
    line_no - leading_lines
}

/// Whole JSON values one after another, however they are laid out (one document, pretty-printed
/// values in a row, an array). After a malformed value, decoding resumes at the next line that
/// starts with `{` or `[` in the first column.
fn decode_stream(body: &[u8], leading_lines: usize, sink: &mut impl EventSink) {
    let mut offset = 0;
    let mut line_at_offset = leading_lines + 1;
    while offset < body.len() {
        let rest = &body[offset..];
        let mut stream = serde_json::Deserializer::from_slice(rest).into_iter::<&RawValue>();
        let mut consumed = 0;
        loop {
            let value_start = consumed + skip_whitespace(&rest[consumed..]);
            match stream.next() {
                None => {
                    consumed = rest.len();
                    break;
                }
                Some(Ok(value)) => {
                    let line = line_at_offset + count_newlines(&rest[..value_start]);
                    decode_value(value.get().as_bytes(), Location { line, item: None }, 0, sink);
                    consumed = stream.byte_offset();
                }
                Some(Err(err)) => {
                    let line = line_at_offset + count_newlines(&rest[..value_start]);
                    let resume = next_top_level_start(rest, value_start);
                    let reason = format!(
                        "not valid JSON: {} (at line {}, column {})",
                        strip_position(&err),
                        line_at_offset + err.line().saturating_sub(1),
                        err.column()
                    );
                    sink.on_reject(Location { line, item: None }, reason, &rest[value_start..resume]);
                    consumed = resume;
                    break;
                }
            }
        }
        line_at_offset += count_newlines(&rest[..consumed]);
        offset += consumed;
        sink.on_progress(offset);
    }
}

/// The containers an event can arrive in.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    items: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    records: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    properties: Option<AzureProperties<'a>>,
    #[serde(rename = "protoPayload", default)]
    proto_payload: Option<IgnoredAny>,
}

/// `properties` of an Azure diagnostic record; `log` holds the event as a string or an object.
#[derive(Deserialize)]
struct AzureProperties<'a> {
    #[serde(borrow, default)]
    log: Option<&'a RawValue>,
}

/// Words that, near the start of an object, mean it is a container rather than an event.
static CONTAINER_WORDS: LazyLock<[memmem::Finder<'static>; 3]> = LazyLock::new(|| {
    [memmem::Finder::new(b"EventList"), memmem::Finder::new(b"\"records\""), memmem::Finder::new(b"\"properties\"")]
});

fn looks_like_container(text: &[u8]) -> bool {
    let head = &text[..text.len().min(160)];
    CONTAINER_WORDS.iter().any(|word| word.find(head).is_some())
}

fn is_event(event: &Event<'_>) -> bool {
    event.audit_id.is_some()
        || event.stage.is_some()
        || event.request_received_timestamp.is_some()
        || (event.verb.is_some() && event.request_uri.is_some())
}

/// Decodes one complete JSON value: an event, or a container of events.
fn decode_value(text: &[u8], location: Location, depth: usize, sink: &mut impl EventSink) {
    if depth > MAX_WRAPPER_DEPTH {
        sink.on_reject(location, format!("wrappers nested deeper than {MAX_WRAPPER_DEPTH} levels"), text);
        return;
    }
    match text.first() {
        Some(b'{') => {}
        Some(b'[') => {
            match serde_json::from_slice::<Vec<&RawValue>>(text) {
                Ok(items) => {
                    for (i, item) in items.into_iter().enumerate() {
                        decode_value(item.get().as_bytes(), location.item(i), depth + 1, sink);
                    }
                }
                Err(err) => sink.on_reject(location, format!("not valid JSON: {err}"), text),
            }
            return;
        }
        _ => {
            let reason = match serde_json::from_slice::<IgnoredAny>(text) {
                Ok(_) => "not an audit event: expected a JSON object".to_owned(),
                Err(err) => format!("not valid JSON: {}", strip_position(&err)),
            };
            sink.on_reject(location, reason, text);
            return;
        }
    }
    // Validating UTF-8 once here, in one fast pass, lets the parser skip validating every string
    // and every raw object it borrows.
    let json = match std::str::from_utf8(text) {
        Ok(json) => json,
        Err(e) => {
            sink.on_reject(location, format!("not valid UTF-8 (at byte {} of the event)", e.valid_up_to()), text);
            return;
        }
    };
    if !looks_like_container(text) {
        match serde_json::from_str::<Event<'_>>(json) {
            Ok(event) if is_event(&event) => {
                sink.on_event(location, event, text);
                return;
            }
            Ok(_) => {}
            Err(err) => {
                sink.on_reject(location, format!("not valid JSON: {}", strip_position(&err)), text);
                return;
            }
        }
    }
    decode_container(text, location, depth, sink);
}

fn decode_container(text: &[u8], location: Location, depth: usize, sink: &mut impl EventSink) {
    let envelope = match serde_json::from_slice::<Envelope<'_>>(text) {
        Ok(envelope) => envelope,
        Err(err) => {
            // Not shaped like a container (say `"properties": 1`): it may still be an event.
            match serde_json::from_slice::<Event<'_>>(text) {
                Ok(event) if is_event(&event) => sink.on_event(location, event, text),
                _ => sink.on_reject(location, format!("not valid JSON: {}", strip_position(&err)), text),
            }
            return;
        }
    };
    if let Some(items) = envelope.items {
        for (i, item) in items.into_iter().enumerate() {
            decode_value(item.get().as_bytes(), location.item(i), depth + 1, sink);
        }
    } else if let Some(records) = envelope.records {
        for (i, record) in records.into_iter().enumerate() {
            decode_value(record.get().as_bytes(), location.item(i), depth + 1, sink);
        }
    } else if let Some(log) = envelope.properties.and_then(|p| p.log) {
        let log_text = log.get();
        if log_text.starts_with('"') {
            match serde_json::from_str::<String>(log_text) {
                Ok(inner) => decode_value(trim_ascii(inner.as_bytes()), location, depth + 1, sink),
                Err(err) => sink.on_reject(location, format!("properties.log is not a string: {err}"), text),
            }
        } else {
            decode_value(log_text.as_bytes(), location, depth + 1, sink);
        }
    } else if envelope.proto_payload.is_some() {
        sink.on_reject(
            location,
            "a Google Cloud Logging entry (protoPayload), not an audit.k8s.io event".to_owned(),
            text,
        );
    } else if envelope.kind.as_deref() == Some("EventList") {
        // An EventList without items holds no events.
    } else {
        // Not a container after all (an event can mention "records" near its start): an event?
        match serde_json::from_slice::<Event<'_>>(text) {
            Ok(event) if is_event(&event) => sink.on_event(location, event, text),
            _ => sink.on_reject(location, "not an audit event: no auditID, stage or timestamps".to_owned(), text),
        }
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !b.is_ascii_whitespace()).map_or(start, |i| i + 1);
    &bytes[start..end]
}

fn skip_whitespace(bytes: &[u8]) -> usize {
    bytes.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(bytes.len())
}

fn count_newlines(bytes: &[u8]) -> usize {
    memchr::memchr_iter(b'\n', bytes).count()
}

/// The offset of the next line after `from` that starts with `{` or `[` in its first column.
fn next_top_level_start(bytes: &[u8], from: usize) -> usize {
    let mut pos = from;
    while let Some(nl) = memchr::memchr(b'\n', &bytes[pos..]) {
        pos += nl + 1;
        if matches!(bytes.get(pos), Some(b'{' | b'[')) {
            return pos;
        }
    }
    bytes.len()
}

/// serde_json's message without its " at line L column C" suffix (positions are reported by us,
/// relative to the whole input).
fn strip_position(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.rfind(" at line ") {
        Some(i) => text[..i].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Collect {
        events: Vec<(Location, String)>,
        rejects: Vec<(Location, String)>,
    }

    impl EventSink for Collect {
        fn on_event(&mut self, location: Location, event: Event<'_>, _raw: &[u8]) {
            self.events.push((location, event.audit_id.map(|a| a.into_owned()).unwrap_or_default()));
        }
        fn on_reject(&mut self, location: Location, reason: String, _raw: &[u8]) {
            self.rejects.push((location, reason));
        }
    }

    fn run(input: &str) -> Collect {
        let mut c = Collect::default();
        decode(input.as_bytes(), &mut c);
        c
    }

    const A: &str = r#"{"auditID":"a","stage":"ResponseComplete","verb":"get"}"#;
    const B: &str = r#"{"auditID":"b","stage":"ResponseComplete","verb":"get"}"#;

    fn ids(c: &Collect) -> Vec<&str> {
        c.events.iter().map(|(_, id)| id.as_str()).collect()
    }

    #[test]
    fn json_lines_with_a_bad_line_in_the_middle() {
        let c = run(&format!("{A}\n{{not json\n\n{B}\r\n"));
        assert_eq!(ids(&c), ["a", "b"]);
        assert_eq!(c.events[1].0.line, 4);
        assert_eq!(c.rejects.len(), 1);
        assert_eq!(c.rejects[0].0.line, 2);
        assert!(c.rejects[0].1.contains("not valid JSON"), "{}", c.rejects[0].1);
    }

    #[test]
    fn event_list_array_and_pretty_values() {
        let list =
            format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{A},{B}]}}"#);
        assert_eq!(ids(&run(&list)), ["a", "b"]);
        assert_eq!(ids(&run(&format!("[{A},\n{B}]"))), ["a", "b"]);
        let pretty = "{\n  \"auditID\": \"a\",\n  \"stage\": \"Panic\"\n}\n{\n  \"auditID\": \"b\",\n  \"stage\": \"Panic\"\n}\n";
        let c = run(pretty);
        assert_eq!(ids(&c), ["a", "b"]);
        assert_eq!(c.events[1].0.line, 5);
    }

    #[test]
    fn azure_wrapper_with_log_as_string_and_as_object() {
        let escaped = serde_json::to_string(A).unwrap();
        let wrapped = format!(r#"{{"records":[{{"properties":{{"log":{escaped}}}}},{{"properties":{{"log":{B}}}}}]}}"#);
        let c = run(&wrapped);
        assert_eq!(ids(&c), ["a", "b"]);
        assert_eq!(c.events[1].0.item, Some(1));
    }

    #[test]
    fn byte_order_mark_and_leading_blank_lines() {
        let c = run(&format!("\u{feff}\n\n{A}"));
        assert_eq!(ids(&c), ["a"]);
        assert_eq!(c.events[0].0.line, 3);
    }

    #[test]
    fn malformed_pretty_document_resumes_at_the_next_value() {
        let input = format!("{{\n  \"auditID\": \"x\",\n  oops\n}}\n{A}\n");
        let c = run(&input);
        assert_eq!(ids(&c), ["a"]);
        assert_eq!(c.rejects.len(), 1);
        assert_eq!(c.rejects[0].0.line, 1);
        assert!(c.rejects[0].1.contains("line 3"), "{}", c.rejects[0].1);
    }

    #[test]
    fn things_that_are_not_events() {
        let c = run("{\"hello\":1}\n\"text\"\n{\"protoPayload\":{}}\n");
        assert!(c.events.is_empty());
        assert_eq!(c.rejects.len(), 3);
        assert!(c.rejects[2].1.contains("protoPayload"));
    }

    #[test]
    fn invalid_utf8_is_rejected_with_its_line() {
        let mut input = format!("{A}\n").into_bytes();
        input.extend_from_slice(b"{\"auditID\":\"\xff\xfe\",\"stage\":\"Panic\"}\n");
        input.extend_from_slice(format!("{B}\n").as_bytes());
        let mut c = Collect::default();
        decode(&input, &mut c);
        assert_eq!(ids(&c), ["a", "b"]);
        assert_eq!(c.rejects.len(), 1);
        assert_eq!(c.rejects[0].0.line, 2);
    }

    #[test]
    fn a_broken_yaml_document_costs_only_itself() {
        let yaml = "auditID: a\nstage: Panic\n---\nkey: [unclosed\n---\nauditID: b\nstage: Panic\n";
        let c = run(yaml);
        assert_eq!(ids(&c), ["a", "b"]);
        assert_eq!(c.events[1].0.line, 6);
        assert_eq!(c.rejects.len(), 1);
        assert_eq!(c.rejects[0].0.line, 4);
    }

    #[test]
    fn yaml_documents() {
        let yaml = "# a comment\nauditID: a\nstage: ResponseComplete\n---\nkind: EventList\nitems:\n- auditID: b\n  stage: Panic\n";
        assert_eq!(ids(&run(yaml)), ["a", "b"]);
        let c = run("just some text\n");
        assert!(c.events.is_empty());
        assert_eq!(c.rejects.len(), 1);
        let c = run("key: [unclosed\n");
        assert!(c.rejects[0].1.contains("neither JSON nor a YAML"), "{:?}", c.rejects);
    }

    #[test]
    fn a_log_that_starts_with_other_lines_still_yields_its_json_lines() {
        let c = run(&format!("I0501 10:00:00.000000 1 main.go:1] starting\n{A}\nplain text\n{B}\n"));
        assert_eq!(ids(&c), ["a", "b"]);
        assert_eq!(c.rejects.iter().map(|(l, _)| l.line).collect::<Vec<_>>(), [1, 3]);
        assert!(is_json_lines(b"klog line\n{\"auditID\":\"a\"}\n"));
    }

    #[test]
    fn an_event_that_mentions_containers_early_is_still_an_event() {
        let c = run(r#"{"auditID":"r","requestURI":"/apis/x/v1/records","properties":1,"stage":"Panic"}"#);
        assert_eq!(ids(&c), ["r"]);
    }

    #[test]
    fn deep_nesting_is_refused_not_recursed() {
        let input = "[".repeat(20) + A + &"]".repeat(20);
        let c = run(&input);
        assert!(c.events.is_empty());
        assert_eq!(c.rejects.len(), 1);
    }
}
