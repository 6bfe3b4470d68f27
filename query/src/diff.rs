//! What a write changed in its object: the field paths whose values differ between two versions
//! of the object (the response objects of consecutive successful writes of the same uid).
//!
//! Paths read like `spec.replicas`, `spec.template.spec.containers[0].image` or
//! `metadata.labels["app.kubernetes.io/name"]`. Bookkeeping that changes on every write is left out
//! unless asked for: `metadata.managedFields`, `metadata.resourceVersion`, the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, `status.observedGeneration`, and
//! the `last*Time` timestamps of status conditions.
//!
//! Two versions are compared as text first ([`diff_raw`]): members whose JSON text is the same are
//! equal without being parsed, and only a member whose text differs is opened, one level at a
//! time; a value is built only where it changed. Two versions of an object differ in a few fields,
//! so this reads each text a few times but builds almost nothing. The answer is the one
//! [`diff_values`] gives on the parsed trees (a test holds the two together).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// One field that differs. `old`/`new` are `None` where the field is absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldChange {
    /// Where, e.g. `spec.replicas`.
    pub path: String,
    /// The value before.
    pub old: Option<Value>,
    /// The value after.
    pub new: Option<Value>,
}

impl FieldChange {
    /// `path: old -> new`, values as compact JSON, `(none)` when absent.
    pub fn describe(&self) -> String {
        let show = |v: &Option<Value>| v.as_ref().map_or_else(|| "(none)".to_owned(), |v| v.to_string());
        format!("{}: {} -> {}", self.path, show(&self.old), show(&self.new))
    }
}

/// The changes from `old` to `new` (both JSON objects as text). `all_fields` keeps bookkeeping.
pub fn diff_objects(old: &str, new: &str, all_fields: bool) -> Result<Vec<FieldChange>, String> {
    let old: &RawValue = serde_json::from_str(old).map_err(|e| format!("the previous object is not JSON: {e}"))?;
    let new: &RawValue = serde_json::from_str(new).map_err(|e| format!("the object is not JSON: {e}"))?;
    Ok(diff_raw(old, new, all_fields))
}

/// The changes from `old` to `new`, two JSON texts already checked to be JSON (a [`RawValue`] is):
/// for callers that keep each version as text and compare it with the next.
pub fn diff_raw(old: &RawValue, new: &RawValue, all_fields: bool) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk_raw(&mut String::new(), Some(old), Some(new), all_fields, &mut out);
    out
}

/// The changes from `old` to `new`, already parsed.
pub fn diff_values(old: &Value, new: &Value, all_fields: bool) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(&mut String::new(), Some(old), Some(new), all_fields, &mut out);
    out
}

fn is_noise(path: &str, key: &str) -> bool {
    matches!(path, "metadata.managedFields" | "metadata.resourceVersion" | "status.observedGeneration")
        || path == r#"metadata.annotations["kubectl.kubernetes.io/last-applied-configuration"]"#
        || (path.starts_with("status.")
            && matches!(key, "lastTransitionTime" | "lastUpdateTime" | "lastHeartbeatTime" | "lastProbeTime"))
}

fn push_key(path: &mut String, key: &str) {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
    } else {
        path.push('[');
        path.push_str(&Value::String(key.to_owned()).to_string());
        path.push(']');
    }
}

fn walk(path: &mut String, old: Option<&Value>, new: Option<&Value>, all: bool, out: &mut Vec<FieldChange>) {
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))).collect();
            keys.sort();
            for key in keys {
                let len = path.len();
                push_key(path, key);
                if all || !is_noise(path, key) {
                    walk(path, a.get(key), b.get(key), all, out);
                }
                path.truncate(len);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) => {
            for i in 0..a.len().max(b.len()) {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(path, a.get(i), b.get(i), all, out);
                path.truncate(len);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(FieldChange { path: path.clone(), old: a.cloned(), new: b.cloned() }),
    }
}

/// [`walk`] over texts: equal texts are equal values; two objects or two arrays are opened one
/// level and their members compared the same way; anything else is parsed and compared as values.
fn walk_raw(path: &mut String, old: Option<&RawValue>, new: Option<&RawValue>, all: bool, out: &mut Vec<FieldChange>) {
    if let (Some(a), Some(b)) = (old, new) {
        if a.get() == b.get() {
            return;
        }
        match (Members::of(a), Members::of(b)) {
            (Some(Members::Object(a)), Some(Members::Object(b))) => {
                let mut keys: Vec<&Cow<'_, str>> = a.keys().chain(b.keys().filter(|k| !a.contains_key(*k))).collect();
                keys.sort();
                for key in keys {
                    let len = path.len();
                    push_key(path, key);
                    if all || !is_noise(path, key) {
                        walk_raw(path, a.get(key).copied(), b.get(key).copied(), all, out);
                    }
                    path.truncate(len);
                }
                return;
            }
            (Some(Members::Array(a)), Some(Members::Array(b))) => {
                for i in 0..a.len().max(b.len()) {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    walk_raw(path, a.get(i).copied(), b.get(i).copied(), all, out);
                    path.truncate(len);
                }
                return;
            }
            _ => {}
        }
    }
    let parse = |raw: Option<&RawValue>| raw.and_then(|r| serde_json::from_str::<Value>(r.get()).ok());
    let (a, b) = (parse(old), parse(new));
    if a != b {
        out.push(FieldChange { path: path.clone(), old: a, new: b });
    }
}

/// One level of a JSON object or array, its members still text. A key that appears twice keeps
/// its last value, as parsing into a [`Value`] does.
enum Members<'a> {
    Object(BTreeMap<Cow<'a, str>, &'a RawValue>),
    Array(Vec<&'a RawValue>),
}

impl<'a> Members<'a> {
    /// The members of `raw` when it is an object or an array (and is JSON); `None` for a scalar.
    fn of(raw: &'a RawValue) -> Option<Self> {
        match raw.get().trim_start().as_bytes().first() {
            Some(b'{' | b'[') => {
                let mut de = serde_json::Deserializer::from_str(raw.get());
                Members::deserialize(&mut de).ok()
            }
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(MembersVisitor)
    }
}

struct MembersVisitor;

impl<'de> Visitor<'de> for MembersVisitor {
    type Value = Members<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object or array")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut members = BTreeMap::new();
        while let Some(Key(key)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            members.insert(key, value);
        }
        Ok(Members::Object(members))
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            items.push(item);
        }
        Ok(Members::Array(items))
    }
}

/// An object key, borrowed from the text unless it had escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pairs where comparing texts could go wrong: the same value written differently, keys in
    /// another order or twice, escapes, numbers of another type, null against absent, kinds changed.
    const TRICKY_PAIRS: &[(&str, &str)] = &[
        (r#"{"a":1,"b":[1,2]}"#, r#"{ "b" : [1, 2], "a" : 1 }"#),
        (r#"{"a":{"x":1,"y":2}}"#, r#"{"a":{"y":2,"x":1,"z":null}}"#),
        (r#"{"a":"A","b\"c":1}"#, r#"{"a":"\u0041","b\"c":2}"#),
        (r#"{"a":1,"a":2}"#, r#"{"a":2}"#),
        (r#"{"a":1,"a":2}"#, r#"{"a":1}"#),
        (r#"{"n":1}"#, r#"{"n":1.0}"#),
        (r#"{"n":100}"#, r#"{"n":1e2}"#),
        (r#"{"v":null}"#, r#"{}"#),
        (r#"{"v":{"k":1}}"#, r#"{"v":[1]}"#),
        (r#"{"v":[{"k":1}]}"#, r#"{"v":{"k":1}}"#),
        (r#"{"v":[1,2,3]}"#, r#"{"v":[1]}"#),
        (r#"{"v":[]}"#, r#"{"v":[null]}"#),
        (r#"{"v":"x"}"#, r#"{"v":{"x":1}}"#),
        (r#"[1,{"a":2}]"#, r#"[1,{"a":3},4]"#),
        (r#""text""#, r#"{"a":1}"#),
        (
            r#"{"metadata":{"resourceVersion":"1","managedFields":[1]},"status":{"c":[{"lastProbeTime":"t","x":1}]}}"#,
            r#"{"metadata":{"resourceVersion":"2","managedFields":[2]},"status":{"c":[{"lastProbeTime":"u","x":2}]}}"#,
        ),
        (
            r#"{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{}","a b":"1"}}}"#,
            r#"{"metadata":{"annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{ }","a b":"2"}}}"#,
        ),
    ];

    #[test]
    fn comparing_texts_gives_what_comparing_parsed_values_gives() {
        for (old, new) in TRICKY_PAIRS {
            for (a, b) in [(old, new), (new, old)] {
                for all in [false, true] {
                    let by_text = diff_objects(a, b, all).expect("JSON");
                    let parsed = |t: &str| serde_json::from_str::<Value>(t).expect("JSON");
                    let by_value = diff_values(&parsed(a), &parsed(b), all);
                    assert_eq!(by_text, by_value, "{a} -> {b}, all fields: {all}");
                }
            }
        }
        let some_differ = TRICKY_PAIRS.iter().filter(|(a, b)| !diff_objects(a, b, false).expect("JSON").is_empty());
        assert!(some_differ.count() >= 10, "the pairs exercise changes, not only equal values");
        assert!(diff_objects(TRICKY_PAIRS[0].0, TRICKY_PAIRS[0].1, true).expect("JSON").is_empty());
    }

    #[test]
    fn changed_fields_are_listed_by_path_and_noise_is_left_out() {
        let old = r#"{"metadata":{"name":"d","resourceVersion":"1","labels":{"app.kubernetes.io/name":"a"},
            "managedFields":[{"manager":"x"}]},"spec":{"replicas":3,"template":{"spec":{"containers":[{"name":"c","image":"a:1"}]}}},
            "status":{"observedGeneration":1,"conditions":[{"type":"Ready","lastTransitionTime":"t1"}]}}"#;
        let new = r#"{"metadata":{"name":"d","resourceVersion":"2","labels":{"app.kubernetes.io/name":"b"},
            "managedFields":[{"manager":"y"}]},"spec":{"replicas":5,"paused":true,"template":{"spec":{"containers":[{"name":"c","image":"a:2"}]}}},
            "status":{"observedGeneration":2,"conditions":[{"type":"Ready","lastTransitionTime":"t2"}]}}"#;
        let changes: Vec<String> = diff_objects(old, new, false).unwrap().iter().map(FieldChange::describe).collect();
        assert_eq!(
            changes,
            [
                r#"metadata.labels["app.kubernetes.io/name"]: "a" -> "b""#,
                "spec.paused: (none) -> true",
                "spec.replicas: 3 -> 5",
                r#"spec.template.spec.containers[0].image: "a:1" -> "a:2""#,
            ]
        );
        let all = diff_objects(old, new, true).unwrap();
        assert!(all.iter().any(|c| c.path == "metadata.resourceVersion"));
        assert!(all.iter().any(|c| c.path == "status.conditions[0].lastTransitionTime"));
        assert!(diff_objects(old, old, false).unwrap().is_empty());
        assert!(diff_objects("{", new, false).is_err());
    }
}
