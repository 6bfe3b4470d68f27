//! What KubeStep refuses to store: Secret values, and objects too large to be worth keeping whole.

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "<redacted>";

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Returns the JSON of a Secret-bearing object (a Secret, a list of Secrets, or a patch of one) with
/// every value under `data` and `stringData` replaced by [`REDACTED`], keys kept. The
/// `last-applied-configuration` annotation, which holds a copy of the whole object, is redacted the
/// same way. Input that is not JSON at all is replaced whole.
pub fn redact_secret(json: &str) -> String {
    match serde_json::from_str::<Value>(json) {
        Ok(mut value) => {
            redact_value(&mut value, 0);
            serde_json::to_string(&value).unwrap_or_else(|_| format!("\"{REDACTED}\""))
        }
        Err(_) => format!("\"{REDACTED}\""),
    }
}

fn redact_map_values(value: &mut Value) {
    match value {
        Value::Object(map) => map.values_mut().for_each(|v| *v = Value::String(REDACTED.into())),
        Value::Null => {}
        other => *other = Value::String(REDACTED.into()),
    }
}

fn redact_value(value: &mut Value, depth: usize) {
    if depth > 8 {
        *value = Value::String(REDACTED.into());
        return;
    }
    match value {
        Value::Object(map) => {
            for key in ["data", "stringData"] {
                if let Some(v) = map.get_mut(key) {
                    redact_map_values(v);
                }
            }
            if let Some(Value::Array(items)) = map.get_mut("items") {
                items.iter_mut().for_each(|item| redact_value(item, depth + 1));
            }
            if let Some(annotations) = map.get_mut("metadata").and_then(|m| m.get_mut("annotations")) {
                redact_annotations(annotations);
            }
        }
        // A JSON patch: [{"op":"add","path":"/data/key","value":"..."}, ...]
        Value::Array(ops) => {
            for op in ops {
                let Value::Object(op) = op else { continue };
                let path = op.get("path").and_then(Value::as_str).unwrap_or("").to_owned();
                let Some(v) = op.get_mut("value") else { continue };
                if path == "/data" || path == "/stringData" {
                    redact_map_values(v);
                } else if path.starts_with("/data/") || path.starts_with("/stringData/") {
                    *v = Value::String(REDACTED.into());
                } else if path.ends_with("last-applied-configuration") {
                    // `/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration`
                    *v = match v {
                        Value::String(applied) => Value::String(redact_secret(applied)),
                        _ => Value::String(REDACTED.into()),
                    };
                } else if path == "/metadata/annotations" {
                    redact_annotations(v);
                } else if path == "/metadata" {
                    if let Some(annotations) = v.get_mut("annotations") {
                        redact_annotations(annotations);
                    }
                } else if path.is_empty() || path == "/" {
                    redact_value(v, depth + 1);
                }
            }
        }
        _ => {}
    }
}

/// Redacts the copy of the whole object that `kubectl apply` keeps in an annotations map.
fn redact_annotations(annotations: &mut Value) {
    if let Some(applied) = annotations.get_mut(LAST_APPLIED) {
        *applied = match applied {
            Value::String(text) => Value::String(redact_secret(text)),
            _ => Value::String(REDACTED.into()),
        };
    }
}

/// Annotation added to an object that was too large to keep.
pub const TRUNCATED_KEY: &str = "kubestep.io/truncated";

#[derive(Deserialize)]
struct Stub<'a> {
    #[serde(borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(rename = "apiVersion", borrow, default)]
    api_version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct SlimMeta<'a> {
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    namespace: Option<&'a RawValue>,
    #[serde(borrow, default)]
    uid: Option<&'a RawValue>,
    #[serde(rename = "resourceVersion", borrow, default)]
    resource_version: Option<&'a RawValue>,
    #[serde(borrow, default)]
    generation: Option<&'a RawValue>,
}

fn push_field(out: &mut String, key: &str, value: Option<&RawValue>) {
    if let Some(value) = value {
        if out.len() > 1 {
            out.push(',');
        }
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        out.push_str(value.get());
    }
}

/// Replaces an object larger than `max_bytes` by a stub that keeps `kind`, `apiVersion` and
/// `metadata` (only its identifying fields if `metadata` alone is too large) and says how large the
/// original was. Returns `None` when the object fits.
pub fn truncate_object(json: &str, max_bytes: usize) -> Option<String> {
    if json.len() <= max_bytes {
        return None;
    }
    let mut out = String::from("{");
    if let Ok(stub) = serde_json::from_str::<Stub<'_>>(json) {
        push_field(&mut out, "kind", stub.kind);
        push_field(&mut out, "apiVersion", stub.api_version);
        match stub.metadata {
            Some(meta) if meta.get().len() <= max_bytes / 2 => push_field(&mut out, "metadata", Some(meta)),
            Some(meta) => {
                if let Ok(slim) = serde_json::from_str::<SlimMeta<'_>>(meta.get()) {
                    let mut m = String::from("{");
                    push_field(&mut m, "name", slim.name);
                    push_field(&mut m, "namespace", slim.namespace);
                    push_field(&mut m, "uid", slim.uid);
                    push_field(&mut m, "resourceVersion", slim.resource_version);
                    push_field(&mut m, "generation", slim.generation);
                    m.push('}');
                    if let Ok(raw) = RawValue::from_string(m) {
                        push_field(&mut out, "metadata", Some(&raw));
                    }
                }
            }
            None => {}
        }
    }
    if out.len() > 1 {
        out.push(',');
    }
    out.push_str(&format!("\"{TRUNCATED_KEY}\":{{\"originalBytes\":{}}}}}", json.len()));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_go_keys_stay() {
        let secret = r#"{"kind":"Secret","metadata":{"name":"db","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}},"data":{"password":"aHVudGVyMg=="},"stringData":{"user":"root"}}"#;
        let out = redact_secret(secret);
        assert!(!out.contains("aHVudGVyMg=="), "{out}");
        assert!(!out.contains("root"), "{out}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["data"]["password"], REDACTED);
        assert_eq!(v["stringData"]["user"], REDACTED);
        assert_eq!(v["metadata"]["name"], "db");
    }

    #[test]
    fn lists_and_patches_of_secrets() {
        let list = r#"{"kind":"SecretList","items":[{"data":{"a":"c2VjcmV0"}}]}"#;
        assert!(!redact_secret(list).contains("c2VjcmV0"));
        let patch = r#"[{"op":"add","path":"/data/a","value":"c2VjcmV0"},{"op":"replace","path":"/data","value":{"b":"c2VjcmV0"}},{"op":"add","path":"/metadata/labels/x","value":"keep"}]"#;
        let out = redact_secret(patch);
        assert!(!out.contains("c2VjcmV0"), "{out}");
        assert!(out.contains("keep"));
        let applied = r#"{\"data\":{\"a\":\"c2VjcmV0\"}}"#;
        for patch in [
            format!(
                r#"[{{"op":"add","path":"/metadata/annotations/kubectl.kubernetes.io~1last-applied-configuration","value":"{applied}"}}]"#
            ),
            format!(
                r#"[{{"op":"add","path":"/metadata/annotations","value":{{"kubectl.kubernetes.io/last-applied-configuration":"{applied}"}}}}]"#
            ),
            format!(
                r#"[{{"op":"replace","path":"/metadata","value":{{"annotations":{{"kubectl.kubernetes.io/last-applied-configuration":"{applied}"}}}}}}]"#
            ),
        ] {
            let out = redact_secret(&patch);
            assert!(!out.contains("c2VjcmV0"), "{out}");
        }
    }

    #[test]
    fn large_objects_become_stubs_that_keep_metadata() {
        let big = format!(
            r#"{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"big","uid":"u1","resourceVersion":"7"}},"data":{{"blob":"{}"}}}}"#,
            "x".repeat(5000)
        );
        assert!(truncate_object(&big, 10_000).is_none());
        let stub = truncate_object(&big, 1000).unwrap();
        let v: Value = serde_json::from_str(&stub).unwrap();
        assert_eq!(v["metadata"]["uid"], "u1");
        assert_eq!(v["kind"], "ConfigMap");
        assert_eq!(v[TRUNCATED_KEY]["originalBytes"], big.len());
        assert!(v.get("data").is_none());
    }

    #[test]
    fn huge_metadata_is_slimmed_and_arrays_still_stub() {
        let big = format!(r#"{{"kind":"X","metadata":{{"name":"n","managedFields":["{}"]}}}}"#, "m".repeat(4000));
        let v: Value = serde_json::from_str(&truncate_object(&big, 1000).unwrap()).unwrap();
        assert_eq!(v["metadata"]["name"], "n");
        assert!(v["metadata"].get("managedFields").is_none());
        let array = format!("[\"{}\"]", "a".repeat(2000));
        let v: Value = serde_json::from_str(&truncate_object(&array, 100).unwrap()).unwrap();
        assert!(v[TRUNCATED_KEY]["originalBytes"].is_number());
    }
}
