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

use serde::Serialize;
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
    walk_raw(&mut String::new(), Some(old.get()), Some(new.get()), all_fields, &mut out);
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

/// [`walk`] over texts that are JSON: equal texts are equal values; two objects or two arrays are
/// opened one level and their members compared the same way; anything else is parsed and compared
/// as values.
fn walk_raw(path: &mut String, old: Option<&str>, new: Option<&str>, all: bool, out: &mut Vec<FieldChange>) {
    if let (Some(a), Some(b)) = (old, new) {
        if a == b {
            return;
        }
        match (Members::of(a), Members::of(b)) {
            (Some(Members::Object(a)), Some(Members::Object(b))) => {
                // Both sorted by key: walked side by side, every key once, in order.
                let (mut i, mut j) = (0, 0);
                while i < a.len() || j < b.len() {
                    let (key, old, new) = match (a.get(i), b.get(j)) {
                        (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                            std::cmp::Ordering::Less => (ka, Some(*va), None),
                            std::cmp::Ordering::Greater => (kb, None, Some(*vb)),
                            std::cmp::Ordering::Equal => (ka, Some(*va), Some(*vb)),
                        },
                        (Some((ka, va)), None) => (ka, Some(*va), None),
                        (None, Some((kb, vb))) => (kb, None, Some(*vb)),
                        (None, None) => break,
                    };
                    i += usize::from(old.is_some());
                    j += usize::from(new.is_some());
                    let len = path.len();
                    push_key(path, key);
                    if all || !is_noise(path, key) {
                        walk_raw(path, old, new, all, out);
                    }
                    path.truncate(len);
                }
                return;
            }
            (Some(Members::Array(a)), Some(Members::Array(b))) => {
                for i in 0..a.len().max(b.len()) {
                    let len = path.len();
                    path.push('[');
                    crate::group_keys::push_number(path, i as u64);
                    path.push(']');
                    walk_raw(path, a.get(i).copied(), b.get(i).copied(), all, out);
                    path.truncate(len);
                }
                return;
            }
            _ => {}
        }
    }
    let parse = |text: Option<&str>| text.and_then(|t| serde_json::from_str::<Value>(t).ok());
    let (a, b) = (parse(old), parse(new));
    if a != b {
        out.push(FieldChange { path: path.clone(), old: a, new: b });
    }
}

/// One level of a JSON object or array, its members still text: an object's members sorted by
/// key, a key that appears twice keeping its last value (as parsing into a [`Value`] does).
enum Members<'a> {
    Object(Vec<(Cow<'a, str>, &'a str)>),
    Array(Vec<&'a str>),
}

impl<'a> Members<'a> {
    /// The members of `text` when it is an object or an array; `None` for a scalar.
    ///
    /// `text` must be JSON (the callers' texts were checked once, as a whole, and a member of JSON
    /// is JSON): this only finds where each member starts and ends, which is most of what comparing
    /// two versions costs, without checking the grammar again. Should the text not be JSON after
    /// all, the answer is `None` or members cut somewhere, never a panic.
    fn of(text: &'a str) -> Option<Self> {
        let bytes = text.as_bytes();
        let mut at = skip_space(bytes, 0);
        let (open, close) = match bytes.get(at) {
            Some(b'{') => (true, b'}'),
            Some(b'[') => (false, b']'),
            _ => return None,
        };
        at = skip_space(bytes, at + 1);
        let (mut object, mut array) = (Vec::new(), Vec::new());
        if bytes.get(at) != Some(&close) {
            loop {
                if open {
                    let key_end = end_of_string(bytes, at)?;
                    let quoted = text.get(at..key_end)?;
                    let inner = quoted.get(1..quoted.len().checked_sub(1)?)?;
                    let key = if inner.contains('\\') {
                        Cow::Owned(serde_json::from_str::<String>(quoted).ok()?)
                    } else {
                        Cow::Borrowed(inner)
                    };
                    at = skip_space(bytes, key_end);
                    if bytes.get(at) != Some(&b':') {
                        return None;
                    }
                    at = skip_space(bytes, at + 1);
                    let end = end_of_value(bytes, at)?;
                    object.push((key, text.get(at..end)?));
                    at = end;
                } else {
                    let end = end_of_value(bytes, at)?;
                    array.push(text.get(at..end)?);
                    at = end;
                }
                at = skip_space(bytes, at);
                match bytes.get(at) {
                    Some(b',') => at = skip_space(bytes, at + 1),
                    Some(c) if *c == close => break,
                    _ => return None,
                }
            }
        }
        if !open {
            return Some(Members::Array(array));
        }
        // Sorted by key, the order kept among equal keys; of those, the last one stays.
        object.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept: Vec<(Cow<'a, str>, &'a str)> = Vec::with_capacity(object.len());
        for member in object {
            match kept.last_mut() {
                Some(last) if last.0 == member.0 => *last = member,
                _ => kept.push(member),
            }
        }
        Some(Members::Object(kept))
    }
}

/// The first position at or after `at` that is not JSON whitespace.
fn skip_space(bytes: &[u8], mut at: usize) -> usize {
    while matches!(bytes.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Just past the string that starts (with its quote) at `at`.
fn end_of_string(bytes: &[u8], at: usize) -> Option<usize> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let mut i = at + 1;
    loop {
        match bytes.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Just past the value that starts at `at`: a string, an object or array (to its matching
/// bracket, strings inside skipped), or a scalar (to the next delimiter).
fn end_of_value(bytes: &[u8], at: usize) -> Option<usize> {
    match bytes.get(at)? {
        b'"' => end_of_string(bytes, at),
        b'{' | b'[' => {
            let (mut depth, mut i) = (0usize, at);
            loop {
                match bytes.get(i)? {
                    b'"' => {
                        i = end_of_string(bytes, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let mut i = at;
            while !matches!(bytes.get(i), None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                i += 1;
            }
            (i > at).then_some(i)
        }
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
        // Brackets, quotes and backslashes inside strings; whitespace everywhere JSON allows it.
        (r#"{"s":"}{][,:\"","t":"a\\"}"#, r#"{ "s" : "}{][,:\"" , "t" : "a\\\\" }"#),
        (
            r#"{"a":{"b":["}",{"c":"]"}]},"d":[]}"#,
            "{\n\t\"a\" :\r\n{ \"b\" : [ \"}\" , { \"c\" : \"[\" } ] } ,\"d\":[ ],\"e\":{ }}",
        ),
        (r#"{"\u0061":1,"é":[1, -2.5e+3, true, null]}"#, r#"{"a":2,"é":[1,-2.5e+3,false,null]}"#),
        (r#"[ ]"#, r#"[[],{},"",0]"#),
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

    /// Every object in the real audit samples (`$KUBESTEP_SAMPLES`, else `../shared/audit-samples`).
    fn sample_objects() -> Vec<String> {
        let dir = std::env::var_os("KUBESTEP_SAMPLES")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/audit-samples"));
        let mut files = vec![dir];
        let mut objects = Vec::new();
        while let Some(path) = files.pop() {
            if path.is_dir() {
                files.extend(std::fs::read_dir(&path).expect("samples readable").flatten().map(|e| e.path()));
                continue;
            }
            let text = String::from_utf8_lossy(&std::fs::read(&path).expect("sample readable")).into_owned();
            let mut found = |event: &Value| {
                for field in ["requestObject", "responseObject"] {
                    if let Some(object) = event.get(field).filter(|o| o.is_object()) {
                        objects.push(object.to_string());
                    }
                }
            };
            for line in text.lines() {
                match serde_json::from_str::<Value>(line) {
                    Ok(Value::Array(events)) => events.iter().for_each(&mut found),
                    Ok(event) => {
                        found(&event);
                        event.get("items").and_then(Value::as_array).into_iter().flatten().for_each(&mut found);
                    }
                    Err(_) => {}
                }
            }
        }
        objects
    }

    #[test]
    fn real_objects_compare_by_text_as_parsed() {
        let objects = sample_objects();
        assert!(objects.len() >= 100, "the samples hold objects: {}", objects.len());
        let parsed: Vec<Value> = objects.iter().map(|o| serde_json::from_str(o).expect("JSON")).collect();
        let mut changed = 0;
        for (i, j) in (1..objects.len()).map(|i| (i - 1, i)).chain((7..objects.len()).map(|i| (i - 7, i))) {
            // Also written pretty: the same values, other texts.
            let pretty = serde_json::to_string_pretty(&parsed[j]).expect("JSON");
            for (a, b) in [(&objects[i], &objects[j]), (&objects[i], &pretty)] {
                let by_text = diff_objects(a, b, false).expect("JSON");
                assert_eq!(by_text, diff_values(&parsed[i], &parsed[j], false), "{a}\n{b}");
                changed += usize::from(!by_text.is_empty());
            }
        }
        assert!(changed > objects.len(), "most pairs differ: {changed}");
    }

    #[test]
    fn cut_texts_give_no_members_and_never_panic() {
        for (a, b) in TRICKY_PAIRS {
            for text in [a, b] {
                for end in (0..text.len()).filter(|end| text.is_char_boundary(*end)) {
                    let cut = &text[..end];
                    if Members::of(cut).is_some() {
                        panic!("{cut:?} is cut, yet its members were found");
                    }
                    walk_raw(&mut String::new(), Some(cut), Some(text), true, &mut Vec::new());
                }
            }
        }
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
