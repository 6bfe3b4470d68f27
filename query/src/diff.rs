//! What a write changed in its object: the field paths whose values differ between two versions
//! of the object (the response objects of consecutive successful writes of the same uid).
//!
//! Paths read like `spec.replicas`, `spec.template.spec.containers[0].image` or
//! `metadata.labels["app.kubernetes.io/name"]`. Bookkeeping that changes on every write is left out
//! unless asked for: `metadata.managedFields`, `metadata.resourceVersion`, the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, `status.observedGeneration`, and
//! the `last*Time` timestamps of status conditions.

use serde::Serialize;
use serde_json::Value;

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
    let old: Value = serde_json::from_str(old).map_err(|e| format!("the previous object is not JSON: {e}"))?;
    let new: Value = serde_json::from_str(new).map_err(|e| format!("the object is not JSON: {e}"))?;
    Ok(diff_values(&old, &new, all_fields))
}

/// The changes from `old` to `new`, already parsed: for callers that compare each version with
/// both its neighbours and so would parse it twice.
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

#[cfg(test)]
mod tests {
    use super::*;

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
