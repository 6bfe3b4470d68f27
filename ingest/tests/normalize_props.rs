//! Properties of the normalizer over generated events:
//! - any valid event becomes a record whose fields are the event's (names and values with any
//!   characters, timestamps at any precision and offset, any status);
//! - no Secret value reaches a record, whatever shape carries it (object, list, nested lists, JSON
//!   patch, `last-applied-configuration` copy, strategic merge patch) and however its JSON text
//!   encodes it (plain or `\u` escapes).

use kubestep_ingest::normalize::{NormalizeConfig, Normalized, normalize};
use kubestep_schemas::audit::Event;
use proptest::prelude::*;
use serde_json::{Value, json};

/// Normalizes the event in `text`; panics unless it becomes a record.
fn record_of(text: &str, check: impl FnOnce(&kubestep_schemas::OperationRecord<'_>)) {
    let event: Event<'_> = serde_json::from_str(text).expect("the generated event parses");
    match normalize(event, &NormalizeConfig::default()) {
        Ok(Normalized::Record(record)) => check(&record),
        other => panic!("not a record: {other:?}\n{text}"),
    }
}

/// Microseconds since the epoch as RFC 3339 with `digits` fractional digits and an offset in minutes.
fn timestamp(us: i64, digits: usize, offset_minutes: i32) -> String {
    let offset = chrono::FixedOffset::east_opt(offset_minutes * 60).unwrap();
    let t = chrono::DateTime::from_timestamp_micros(us).unwrap().with_timezone(&offset);
    let fraction = format!("{:06}", us.rem_euclid(1_000_000));
    let fraction = match digits {
        0 => String::new(),
        9 => format!(".{fraction}000"),
        _ => format!(".{fraction}"),
    };
    let zone = if offset_minutes == 0 { "Z".to_owned() } else { t.format("%:z").to_string() };
    format!("{}{fraction}{zone}", t.format("%Y-%m-%dT%H:%M:%S"))
}

/// Any text, including quotes, backslashes, control characters and non-ASCII.
fn any_text() -> impl Strategy<Value = String> {
    "[a-z0-9]{1,3}[\\PC\"\\\\\u{1}-\u{1f}é日本🙂]{0,20}"
}

#[derive(Debug, Clone)]
struct Generated {
    audit_id: String,
    verb: &'static str,
    resource: &'static str,
    namespace: String,
    name: String,
    uid: String,
    base_rv: String,
    new_rv: String,
    sa_namespace: String,
    sa_name: String,
    received_us: i64,
    duration_us: i64,
    digits: usize,
    offset_minutes: i32,
    code: i32,
    message: String,
    field_manager: Option<String>,
    dry_run: bool,
}

fn generated() -> impl Strategy<Value = Generated> {
    (
        (
            "[a-f0-9-]{8,36}",
            prop::sample::select(vec!["create", "update", "patch", "delete", "get"]),
            prop::sample::select(vec!["configmaps", "deployments", "pods", "leases", "widgets"]),
            any_text(),
            any_text(),
            "[a-f0-9-]{1,36}",
            "[0-9]{1,12}",
            "[0-9]{1,12}",
        ),
        (
            "[a-z][a-z0-9-]{0,20}",
            "[a-z][a-z0-9-]{0,20}",
            // 2001 to 2096, at any microsecond
            1_000_000_000_000_000i64..4_000_000_000_000_000,
            0i64..600_000_000,
            prop::sample::select(vec![0usize, 6, 9]),
            prop::sample::select(vec![0i32, 120, -330]),
            prop::sample::select(vec![200, 201, 404, 409, 422, 500, 503]),
            any_text(),
            prop::option::of("[A-Za-z][A-Za-z0-9_.-]{0,30}"),
            any::<bool>(),
        ),
    )
        .prop_map(|((audit_id, verb, resource, namespace, name, uid, base_rv, new_rv), rest)| {
            let (sa_namespace, sa_name, received_us, duration_us, digits, offset_minutes, code, message, fm, dry) =
                rest;
            // Whole seconds only when no fraction is written.
            let received_us = if digits == 0 { received_us - received_us.rem_euclid(1_000_000) } else { received_us };
            let duration_us = if digits == 0 { duration_us - duration_us.rem_euclid(1_000_000) } else { duration_us };
            Generated {
                audit_id,
                verb,
                resource,
                namespace,
                name,
                uid,
                base_rv,
                new_rv,
                sa_namespace,
                sa_name,
                received_us,
                duration_us,
                digits,
                offset_minutes,
                code,
                message,
                field_manager: fm,
                dry_run: dry,
            }
        })
}

impl Generated {
    fn event(&self) -> Value {
        let mut query = Vec::new();
        if let Some(fm) = &self.field_manager {
            query.push(format!("fieldManager={fm}"));
        }
        if self.dry_run {
            query.push("dryRun=All".to_owned());
        }
        let uri = format!("/apis/example.io/v1/namespaces/x/{}/y?{}", self.resource, query.join("&"));
        let ok = self.code < 400;
        let response = if ok {
            json!({"kind": "Thing", "apiVersion": "v1", "metadata": {
                "name": self.name, "namespace": self.namespace, "uid": self.uid, "resourceVersion": self.new_rv}})
        } else {
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": self.message, "code": self.code})
        };
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": self.audit_id, "stage": "ResponseComplete", "requestURI": uri, "verb": self.verb,
            "user": {"username": format!("system:serviceaccount:{}:{}", self.sa_namespace, self.sa_name)},
            "userAgent": "manager/v1.0",
            "objectRef": {"resource": self.resource, "namespace": self.namespace, "name": self.name,
                "apiGroup": "example.io", "apiVersion": "v1", "resourceVersion": self.base_rv},
            "responseStatus": {"metadata": {}, "code": self.code, "message": if ok { Value::Null } else { json!(self.message) }},
            "responseObject": response,
            "requestReceivedTimestamp": timestamp(self.received_us, self.digits, self.offset_minutes),
            "stageTimestamp": timestamp(self.received_us + self.duration_us, self.digits, self.offset_minutes),
        })
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn a_valid_event_becomes_a_record_of_its_fields(g in generated()) {
        let text = g.event().to_string();
        record_of(&text, |r| {
            assert_eq!(r.audit_id, g.audit_id);
            assert_eq!(r.verb, g.verb);
            assert_eq!(r.stage, "ResponseComplete");
            assert_eq!(r.resource.as_deref(), Some(g.resource));
            assert_eq!(r.namespace.as_deref(), Some(g.namespace.as_str()));
            assert_eq!(r.name.as_deref(), Some(g.name.as_str()));
            assert_eq!(r.received_at_us, g.received_us, "{text}");
            assert_eq!(r.completed_at_us, g.received_us + g.duration_us, "{text}");
            assert_eq!(r.base_resource_version.as_deref(), Some(g.base_rv.as_str()), "the version the client sent");
            assert_eq!(r.status_code, Some(g.code));
            if g.code < 400 {
                assert_eq!(r.error, None);
                assert_eq!(r.resource_version.as_deref(), Some(g.new_rv.as_str()), "the version the response carries");
                assert_eq!(r.uid.as_deref(), Some(g.uid.as_str()));
            } else {
                let expected = if g.message.is_empty() { format!("HTTP {}", g.code) } else { g.message.clone() };
                assert_eq!(r.error.as_deref(), Some(expected.as_str()));
                assert_eq!(r.resource_version, None, "a failed request produced no version");
            }
            assert_eq!(r.actor_id, format!("{}/{}", g.sa_namespace, g.sa_name));
            assert_eq!(r.field_manager.as_deref(), g.field_manager.as_deref());
            assert_eq!(r.dry_run, g.dry_run);
        });
    }
}

/// A secret value: a marker no generated key or name contains, then any characters.
fn secret_value() -> impl Strategy<Value = String> {
    "QX7[A-Za-z0-9+/=]{4,12}[\\PC\"\\\\é日🙂]{0,8}"
}

/// The shapes a Secret's values travel in, inside an audit event's request or response object.
#[derive(Debug, Clone)]
enum Shape {
    /// A Secret with `data` and `stringData`.
    Object,
    /// A `SecretList`, its items nested `depth` lists deep.
    List { depth: usize },
    /// A JSON patch setting values, a whole map, or the whole object.
    JsonPatch,
    /// A Secret whose `last-applied-configuration` annotation holds a copy of itself.
    LastApplied,
}

fn secret(values: &[String]) -> Value {
    let data: serde_json::Map<String, Value> =
        values.iter().enumerate().map(|(i, v)| (format!("key{i}"), json!(v))).collect();
    json!({"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s", "namespace": "n", "uid": "u1",
        "resourceVersion": "7"}, "type": "Opaque", "data": data.clone(), "stringData": data})
}

fn carrier(shape: &Shape, values: &[String]) -> Value {
    match shape {
        Shape::Object => secret(values),
        Shape::List { depth } => {
            let mut list = json!({"kind": "SecretList", "apiVersion": "v1", "metadata": {}, "items": [secret(values)]});
            for _ in 1..*depth {
                list = json!({"kind": "List", "apiVersion": "v1", "metadata": {}, "items": [list]});
            }
            list
        }
        Shape::JsonPatch => {
            let mut ops: Vec<Value> = values
                .iter()
                .enumerate()
                .map(|(i, v)| json!({"op": "add", "path": format!("/data/key{i}"), "value": v}))
                .collect();
            ops.push(json!({"op": "replace", "path": "/stringData", "value": {"a": values[0]}}));
            ops.push(json!({"op": "add", "path": "/", "value": secret(values)}));
            Value::Array(ops)
        }
        Shape::LastApplied => {
            let mut object = secret(values);
            let copy = secret(values).to_string();
            object["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": copy});
            object
        }
    }
}

/// `text` with every character of `value` inside JSON strings written as a `\u` escape.
fn escape_everywhere(text: &str, value: &str) -> String {
    let plain = serde_json::to_string(value).unwrap();
    let plain = &plain[1..plain.len() - 1];
    let mut escaped = String::new();
    for unit in value.encode_utf16() {
        escaped.push_str(&format!("\\u{unit:04x}"));
    }
    text.replace(plain, &escaped)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn no_secret_value_reaches_a_record(
        values in prop::collection::vec(secret_value(), 1..4),
        shape in prop_oneof![
            Just(Shape::Object),
            (1usize..12).prop_map(|depth| Shape::List { depth }),
            Just(Shape::JsonPatch),
            Just(Shape::LastApplied),
        ],
        verb in prop::sample::select(vec!["create", "update", "patch", "get", "list"]),
        escaped in any::<bool>(),
        by_resource in any::<bool>(),
    ) {
        let body = carrier(&shape, &values);
        // The event names the Secret by its resource, or only through the object's kind.
        let resource = if by_resource { "secrets" } else { "" };
        let event = json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "auditID": "a-1",
            "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/n/secrets/s", "verb": verb,
            "user": {"username": "alice"},
            "objectRef": {"resource": resource, "namespace": "n", "name": "s", "apiVersion": "v1"},
            "responseStatus": {"metadata": {}, "code": 200},
            "requestObject": body, "responseObject": if matches!(shape, Shape::JsonPatch) { secret(&values) } else { body.clone() },
            "requestReceivedTimestamp": "2024-05-01T10:00:00.000001Z", "stageTimestamp": "2024-05-01T10:00:00.000002Z",
        });
        let mut text = event.to_string();
        if escaped {
            for v in &values {
                text = escape_everywhere(&text, v);
            }
        }
        record_of(&text, |r| {
            let stored = format!("{:?} {:?} {:?}", r.request_object, r.response_object, r.annotations);
            for v in &values {
                let json_form = serde_json::to_string(v).unwrap();
                assert!(!stored.contains(v.as_str()), "secret value {v:?} stored ({shape:?}):\n{stored}");
                assert!(!stored.contains(&json_form[1..json_form.len() - 1]), "escaped {v:?} stored:\n{stored}");
                assert!(!stored.contains("QX7"), "a secret's prefix stored ({shape:?}):\n{stored}");
            }
            // The keys stay, so that a change to a Secret is still visible.
            if matches!(shape, Shape::Object | Shape::LastApplied) {
                assert!(stored.contains("key0"), "{stored}");
            }
        });
    }
}

/// Found by `no_secret_value_reaches_a_record`: a generic `List` holding a `SecretList`, in an
/// event that names no resource, was stored as it was.
#[test]
fn a_secret_list_inside_a_generic_list_is_redacted() {
    let values = vec!["QX7hunter2".to_owned()];
    let body = carrier(&Shape::List { depth: 3 }, &values);
    let event = json!({
        "auditID": "a-2", "stage": "ResponseComplete", "verb": "list", "user": {"username": "bob"},
        "objectRef": {"apiVersion": "v1"}, "responseStatus": {"code": 200}, "responseObject": body,
        "requestReceivedTimestamp": "2024-05-01T10:00:00.000001Z", "stageTimestamp": "2024-05-01T10:00:00.000002Z",
    });
    record_of(&event.to_string(), |r| {
        let stored = r.response_object.as_deref().unwrap_or_default();
        assert!(!stored.contains("QX7"), "{stored}");
        assert!(stored.contains("key0"), "{stored}");
    });
}
