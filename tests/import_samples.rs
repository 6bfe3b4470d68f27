//! Every real audit sample imports, and each yields exactly its distinct recordable events.
//!
//! The expected counts are computed here, independently of the ingest code, by walking the raw JSON
//! (or YAML) with `serde_json::Value`.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::*;
use serde_json::Value;

/// Every event object in a sample, unwrapped from lists, arrays and Azure records.
fn raw_events(path: &Path) -> Vec<Value> {
    let bytes = std::fs::read(path).expect("reading sample");
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim_start_matches('\u{feff}');
    let documents: Vec<Value> = if path.extension().is_some_and(|e| e == "yaml") {
        vec![serde_norway::from_str(text).expect("yaml")]
    } else if let Ok(v) = serde_json::from_str::<Value>(text) {
        vec![v]
    } else {
        text.lines().filter(|l| !l.trim().is_empty()).filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    fn walk(v: Value, out: &mut Vec<Value>) {
        match v {
            Value::Array(items) => items.into_iter().for_each(|i| walk(i, out)),
            Value::Object(mut map) => {
                if let Some(items) = map.remove("items") {
                    walk(items, out)
                } else if let Some(records) = map.remove("records") {
                    walk(records, out)
                } else if let Some(log) = map.get("properties").and_then(|p| p.get("log")) {
                    match log {
                        Value::String(s) => walk(serde_json::from_str(s).expect("log string is JSON"), out),
                        other => walk(other.clone(), out),
                    }
                } else {
                    out.push(Value::Object(map))
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    documents.into_iter().for_each(|d| walk(d, &mut out));
    out
}

/// Distinct events at a recorded stage that carry what a record needs.
fn expected_records(path: &Path) -> usize {
    let s = |e: &Value, k: &str| e.get(k).and_then(Value::as_str).filter(|v| !v.is_empty()).map(str::to_owned);
    let mut keys = HashSet::new();
    for e in raw_events(path) {
        let stage = s(&e, "stage");
        if !matches!(stage.as_deref(), Some("ResponseComplete" | "Panic")) {
            continue;
        }
        let received = s(&e, "requestReceivedTimestamp").or_else(|| s(&e, "timestamp"));
        let completed = s(&e, "stageTimestamp").or_else(|| s(&e, "timestamp"));
        let (Some(id), Some(verb), Some(received), Some(_)) = (s(&e, "auditID"), s(&e, "verb"), received, completed)
        else {
            continue;
        };
        keys.insert((id, stage, received, verb, s(&e, "requestURI")));
    }
    keys.len()
}

#[test]
fn every_sample_imports_with_one_record_per_distinct_recordable_event() {
    let mut total = 0;
    for file in sample_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = import(dir.path(), &[&file], &["--session", "s"]);
        let (stdout, stderr) = text(&out);
        assert!(!stderr.contains("panicked"), "{}: {stderr}", file.display());
        let expected = expected_records(&file);
        let stored = if dir.path().join("operations").exists() {
            count(dir.path(), "SELECT count(*) FROM operations")
        } else {
            0
        };
        assert_eq!(stored as usize, expected, "{}\n{stdout}{stderr}", file.display());
        total += expected;
    }
    // 168 distinct recorded-stage events in all, some of which lack a verb or timestamps.
    assert!(total > 150, "only {total} records from all samples");
}

#[test]
fn importing_everything_twice_stores_each_event_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = sample_files();
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    let first = import(dir.path(), &paths, &[]);
    let stored = count(dir.path(), "SELECT count(*) FROM operations");
    let second = import(dir.path(), &paths, &[]);
    let (stdout, _) = text(&second);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM operations"), stored);
    assert!(stdout.contains("records stored            0"), "{stdout}");
    // Nothing in the recording is a duplicate of anything else either.
    let distinct = count(
        dir.path(),
        "SELECT count(*) FROM (SELECT DISTINCT audit_id, stage, received_at, verb, request_uri FROM operations)",
    );
    assert_eq!(distinct, stored);
    // Some samples are partial events: the exit code says so, both times.
    assert_eq!(first.status.code(), Some(1));
    assert_eq!(second.status.code(), Some(1));
}

fn one_row(data: &Path, sql: &str) -> Vec<String> {
    let rows = rows(data, sql);
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows.into_iter().next().expect("one row")
}

#[test]
fn the_kind_lease_update_records_the_version_sent_and_the_version_produced() {
    for file in ["khi__test-log.CONVERTED.json", "khi__test-log.yaml"] {
        let dir = tempfile::tempdir().expect("tempdir");
        import(dir.path(), &[&sample(file)], &[]);
        let row = one_row(
            dir.path(),
            "SELECT verb, kind, namespace, name, resource_version, base_resource_version, actor_id, status_code FROM operations",
        );
        assert_eq!(
            row,
            ["update", "Lease", "kube-system", "kube-scheduler", "5812", "5808", "system:kube-scheduler", "200"]
        );
    }
}

#[test]
fn impersonation_and_forbidden_errors_from_audit2rbac() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = import(dir.path(), &[&sample("audit2rbac__demo.log")], &[]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let impersonated = count(dir.path(), "SELECT count(*) FROM operations WHERE impersonated_user = 'bob'");
    assert!(impersonated > 0);
    let row = one_row(
        dir.path(),
        "SELECT username, impersonated_user, status_code, error FROM operations ORDER BY received_at, audit_id LIMIT 1",
    );
    assert_eq!(row[0], "system:admin");
    assert_eq!(row[1], "bob");
    assert_eq!(row[2], "403");
    assert!(row[3].contains("forbidden"), "{row:?}");
}

#[test]
fn aks_wrappers_and_per_controller_actors() {
    let dir = tempfile::tempdir().expect("tempdir");
    import(dir.path(), &[&sample("sysdiglabs-aks-audit-log__event.json")], &[]);
    assert_eq!(count(dir.path(), "SELECT count(*) FROM operations"), 20);
    // hyperkube/... /system:serviceaccount:kube-system:resourcequota-controller
    let actors = rows(dir.path(), "SELECT DISTINCT actor_id FROM operations ORDER BY actor_id");
    let actors: Vec<&str> = actors.iter().map(|r| r[0].as_str()).collect();
    assert!(actors.contains(&"kube-system/resourcequota-controller"), "{actors:?}");
    assert!(actors.iter().all(|a| !a.starts_with("system:serviceaccount:")), "{actors:?}");
    for wrapped in
        ["sysdiglabs-aks-audit-log__sample_EventHubs_event.json", "elastic-integrations__test-kube-audit.log"]
    {
        let dir = tempfile::tempdir().expect("tempdir");
        import(dir.path(), &[&sample(wrapped)], &[]);
        assert_eq!(count(dir.path(), "SELECT count(*) FROM operations"), 1, "{wrapped}");
    }
}

#[test]
fn webhook_event_list_items_without_kind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = import(dir.path(), &[&sample("carlsoncoder")], &[]);
    assert_eq!(out.status.code(), Some(0));
    let rows = rows(dir.path(), "SELECT verb, resource, name FROM operations ORDER BY received_at, audit_id");
    assert_eq!(rows.len(), 2);
}

#[test]
fn service_account_actors_are_namespace_slash_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = sample_files();
    let paths: Vec<&Path> = files.iter().map(|p| p.as_path()).collect();
    import(dir.path(), &paths, &[]);
    let rows = rows(
        dir.path(),
        "SELECT DISTINCT username, user_agent, actor_id FROM operations WHERE username LIKE 'system:serviceaccount:%'",
    );
    assert!(rows.len() > 5);
    for row in rows {
        let (ns, name) = row[0]["system:serviceaccount:".len()..].split_once(':').expect("ns:name");
        let from_agent = row[1].rsplit_once("/system:serviceaccount:").map(|(_, sa)| sa.replacen(':', "/", 1));
        let expected = from_agent.unwrap_or_else(|| format!("{ns}/{name}"));
        assert_eq!(row[2], expected, "{row:?}");
    }
}

#[test]
fn secret_values_are_never_stored() {
    // A real Falco secret event, given the bodies a RequestResponse policy would have logged.
    let raw = std::fs::read_to_string(sample("falco__k8s_audit__create_secret.json")).expect("sample");
    let mut event: Value = serde_json::from_str(raw.lines().next().expect("a line")).expect("json");
    let secret = serde_json::json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": "db", "namespace": "default", "uid": "s-1", "resourceVersion": "42",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration":
                "{\"data\":{\"password\":\"aHVudGVyMg==\"}}"}},
        "data": {"password": "aHVudGVyMg=="}, "stringData": {"user": "very-secret-user"}
    });
    event["level"] = "RequestResponse".into();
    event["requestObject"] = secret.clone();
    event["responseObject"] = secret;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("secret.json");
    std::fs::write(&file, event.to_string()).expect("write");
    let data = dir.path().join("data");
    let out = import(&data, &[&file], &[]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let row = one_row(&data, "SELECT kind, request_object, response_object, uid FROM operations");
    assert_eq!(row[0], "Secret");
    assert_eq!(row[3], "s-1");
    for object in &row[1..3] {
        assert!(!object.contains("aHVudGVyMg=="), "{object}");
        assert!(!object.contains("very-secret-user"), "{object}");
        assert!(object.contains("\"password\":\"<redacted>\""), "{object}");
    }
    // The bytes on disk (Parquet and the rejected-events log) hold no trace of the value either.
    for path in all_files(&data) {
        let bytes = std::fs::read(&path).expect("read");
        assert!(!String::from_utf8_lossy(&bytes).contains("aHVudGVyMg=="), "{}", path.display());
    }
}
