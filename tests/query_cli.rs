//! The query commands end to end: `sessions`, `replay`, `analyze`, `sql`, over recordings imported
//! from hand-written audit events. The seed tool's three sample sessions are recreated as audit
//! events and must give the seed's results.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

/// One audit event: `verb` on `resource` `ns/name`, received at `t_ms` after 10:00 on 2024-05-01,
/// lasting `dur_ms`, answered with `code` (and `message` when it failed).
#[allow(clippy::too_many_arguments)]
fn event(
    id: &str,
    verb: &str,
    resource: &str,
    ns: &str,
    name: &str,
    t_ms: u64,
    dur_ms: u64,
    code: u16,
    message: Option<&str>,
    response: Option<Value>,
) -> String {
    let at = |ms: u64| format!("2024-05-01T10:{:02}:{:02}.{:03}000Z", ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let group_path = if resource == "deployments" { "/apis/apps/v1" } else { "/api/v1" };
    let mut e = json!({
        "level": "RequestResponse",
        "auditID": id,
        "stage": "ResponseComplete",
        "verb": verb,
        "requestURI": format!("{group_path}/namespaces/{ns}/{resource}/{name}"),
        "user": {"username": "system:serviceaccount:demo:operator"},
        "userAgent": "manager/v0.1.0",
        "objectRef": {"resource": resource, "namespace": ns, "name": name, "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": code},
        "requestReceivedTimestamp": at(t_ms),
        "stageTimestamp": at(t_ms + dur_ms),
    });
    if let Some(message) = message {
        e["responseStatus"]["message"] = json!(message);
        e["responseStatus"]["status"] = json!("Failure");
    }
    if let Some(response) = response {
        e["responseObject"] = response;
    }
    e.to_string()
}

fn record(data: &Path, session: &str, events: &[String]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audit.log");
    std::fs::write(&file, events.join("\n")).unwrap();
    let output = import(data, &[&file], &["-q", "--session", session]);
    assert!(output.status.success(), "{:?}", text(&output));
}

/// The seed's `examples/create_sample.go`, as audit events.
fn seed_samples() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let normal: Vec<String> = (0..10)
        .map(|i| {
            event(
                &format!("n{i}"),
                "get",
                "pods",
                "default",
                &format!("test-pod-{i}"),
                i * 1000,
                100 + 10 * i,
                200,
                None,
                None,
            )
        })
        .collect();
    let slow: Vec<String> = (0..15)
        .map(|i| {
            let dur = if i % 3 == 0 { 2000 } else { 100 };
            event(
                &format!("s{i:02}"),
                "update",
                "deployments",
                "production",
                &format!("app-deploy-{i}"),
                i * 3000,
                dur,
                200,
                None,
                None,
            )
        })
        .collect();
    let errors: Vec<String> = (0..12)
        .map(|i| {
            let (code, message) = if i % 4 == 0 { (404, Some("resource not found")) } else { (200, None) };
            event(
                &format!("e{i:02}"),
                "get",
                "configmaps",
                "default",
                &format!("config-{i}"),
                i * 1000,
                150,
                code,
                message,
                None,
            )
        })
        .collect();
    record(&data, "sample-session-001", &normal);
    record(&data, "sample-session-002", &slow);
    record(&data, "sample-session-003", &errors);
    (tmp, data)
}

fn cli(args: &[&str], data: &Path) -> (Option<i32>, String, String) {
    let mut all: Vec<&str> = args.to_vec();
    let d = data.display().to_string();
    all.extend(["-d", &d]);
    let output = kubestep(&all, None);
    let (out, err) = text(&output);
    (output.status.code(), out, err)
}

fn analyze_json(data: &Path, session: &str, extra: &[&str]) -> Value {
    let mut args = vec!["analyze", session, "--format", "json"];
    args.extend_from_slice(extra);
    let (code, out, err) = cli(&args, data);
    assert_eq!(code, Some(0), "{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn slow_indexes(report: &Value) -> Vec<u64> {
    report
        .get("slow_operations")
        .and_then(Value::as_array)
        .map_or_else(Vec::new, |a| a.iter().map(|s| s["index"].as_u64().unwrap()).collect())
}

#[test]
fn the_seed_samples_give_the_seed_results() {
    let (_tmp, data) = seed_samples();
    for threshold in ["1000", "1500", "2000"] {
        let report = analyze_json(&data, "sample-session-002", &["--threshold", threshold]);
        assert_eq!(slow_indexes(&report), [0, 3, 6, 9, 12], "threshold {threshold}");
    }
    let none = analyze_json(&data, "sample-session-002", &["--threshold", "2001"]);
    assert!(none.get("slow_operations").is_none(), "{none}");
    assert_eq!(none["slow_operations_total"], 0);

    let errors = analyze_json(&data, "sample-session-003", &[]);
    assert_eq!(errors["errors"]["total"], 3);
    assert_eq!(errors["errors"]["by_type"], json!({"GET": 3}));
    assert_eq!(errors["errors"]["first"]["sequence_number"], 1);
    assert_eq!(errors["errors"]["last"]["sequence_number"], 9);
    // Each end is the operation at that place: failures 0, 4 and 8 read config-0, -4 and -8.
    assert_eq!(errors["errors"]["first"]["index"], 0);
    assert_eq!(errors["errors"]["first"]["resource"], "ConfigMap/default/config-0");
    assert_eq!(errors["errors"]["last"]["index"], 8);
    assert_eq!(errors["errors"]["last"]["resource"], "ConfigMap/default/config-8");
    assert_eq!(errors["errors"]["by_status"][0]["status_code"], 404);
    assert_eq!(errors["errors"]["by_status"][0]["reason"], "NotFound");
    assert_eq!(errors["errors"]["by_status"][0]["first_index"], 0);
    assert_eq!(errors["errors"]["by_status"][0]["last_index"], 8);

    let normal = analyze_json(&data, "sample-session-001", &[]);
    assert_eq!(normal["total_operations"], 10);
    assert!(normal.get("slow_operations").is_none());
    assert!(normal.get("loops_detected").is_none());
    assert_eq!(
        normal["errors"],
        json!({"total": 0, "by_type": {}, "by_status": [], "by_actor": [], "first": null, "last": null})
    );

    let (code, out, _) = cli(&["analyze", "sample-session-003", "--errors"], &data);
    assert_eq!(code, Some(0));
    assert!(out.contains("Total Errors: 3"), "{out}");
    assert!(out.contains("  GET: 3"), "{out}");
    assert!(out.contains("First Error (seq 1)"), "{out}");
    assert!(out.contains("Last Error (seq 9)"), "{out}");
    assert!(!out.contains("=== Slow Operations ==="), "--errors selects only errors: {out}");
}

#[test]
fn analyze_json_keeps_the_seed_shape() {
    let (_tmp, data) = seed_samples();
    let report = analyze_json(&data, "sample-session-002", &["--slow"]);
    let golden = json!({
        "session_id": "sample-session-002",
        "total_operations": 15,
        "slow_operations": [
            {"index": 0, "type": "UPDATE", "resource": "Deployment/production/app-deploy-0", "duration_ms": 2000,
             "actor_id": "demo/operator", "time": "2024-05-01T10:00:00.000000Z"},
            {"index": 3, "type": "UPDATE", "resource": "Deployment/production/app-deploy-3", "duration_ms": 2000,
             "actor_id": "demo/operator", "time": "2024-05-01T10:00:09.000000Z"},
            {"index": 6, "type": "UPDATE", "resource": "Deployment/production/app-deploy-6", "duration_ms": 2000,
             "actor_id": "demo/operator", "time": "2024-05-01T10:00:18.000000Z"},
            {"index": 9, "type": "UPDATE", "resource": "Deployment/production/app-deploy-9", "duration_ms": 2000,
             "actor_id": "demo/operator", "time": "2024-05-01T10:00:27.000000Z"},
            {"index": 12, "type": "UPDATE", "resource": "Deployment/production/app-deploy-12", "duration_ms": 2000,
             "actor_id": "demo/operator", "time": "2024-05-01T10:00:36.000000Z"}
        ],
        "slow_threshold_ms": 1000,
        "slow_operations_total": 5
    });
    assert_eq!(report, golden);
}

#[test]
fn loops_of_every_period_are_found_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let get =
        |i: u64, name: &str| event(&format!("l{i:03}"), "get", "pods", "default", name, i * 100, 10, 200, None, None);
    record(&data, "thirty", &(0..30).map(|i| get(i, "same")).collect::<Vec<_>>());
    record(&data, "pairs", &(0..6).map(|i| get(i, if i % 2 == 0 { "a" } else { "b" })).collect::<Vec<_>>());
    record(&data, "cycle", &(0..15).map(|i| get(i, ["x", "y", "z"][i as usize % 3])).collect::<Vec<_>>());
    record(&data, "plain", &(0..40).map(|i| get(i, &format!("p{i}"))).collect::<Vec<_>>());
    let loops = |session: &str, window: &str| -> Vec<(u64, u64, u64)> {
        let report = analyze_json(&data, session, &["--loops", "--window", window]);
        report.get("loops_detected").and_then(Value::as_array).map_or_else(Vec::new, |a| {
            a.iter()
                .map(|l| {
                    (
                        l["start_index"].as_u64().unwrap(),
                        l["end_index"].as_u64().unwrap(),
                        l["repeat_count"].as_u64().unwrap(),
                    )
                })
                .collect()
        })
    };
    // Watches stay out of the sequence but keep their place in the session's numbering.
    let watch = event("w000", "watch", "pods", "default", "", 0, 10, 200, None, None);
    let watched_get =
        |i: u64| event(&format!("w{i:03}"), "get", "pods", "default", "same", i * 100, 10, 200, None, None);
    let after_watch: Vec<String> = std::iter::once(watch).chain((1..=30).map(watched_get)).collect();
    record(&data, "watched", &after_watch);
    assert_eq!(loops("watched", "10"), [(1, 30, 30)]);
    assert_eq!(loops("thirty", "10"), [(0, 29, 30)]);
    assert_eq!(loops("pairs", "2"), [(0, 5, 3)]);
    assert_eq!(loops("cycle", "10"), [(0, 14, 5)]);
    assert!(loops("plain", "10").is_empty());
    let report = analyze_json(&data, "cycle", &["--loops"]);
    assert_eq!(report["loops_detected"][0]["description"], "Repeated Pod operations 5 times");
    assert_eq!(
        report["loops_detected"][0]["pattern"],
        json!(["GET Pod default/x", "GET Pod default/y", "GET Pod default/z"])
    );
}

#[test]
fn replay_follows_request_time_whatever_the_arrival_order() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // Two API servers: each wrote its own log; the second one's events arrive first.
    let server_a: Vec<String> = (0..5)
        .map(|i| event(&format!("a{i}"), "get", "pods", "ns", &format!("p{i}"), i * 2000, 5, 200, None, None))
        .collect();
    let server_b: Vec<String> = (0..5)
        .map(|i| event(&format!("b{i}"), "get", "pods", "ns", &format!("q{i}"), i * 2000 + 1000, 5, 200, None, None))
        .collect();
    record(&data, "two-servers", &server_b);
    record(&data, "two-servers", &server_a);
    let (code, out, err) = cli(&["replay", "two-servers", "--format", "json"], &data);
    assert_eq!(code, Some(0), "{err}");
    let steps: Vec<Value> = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = steps.iter().map(|s| s["audit_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a0", "b0", "a1", "b1", "a2", "b2", "a3", "b3", "a4", "b4"]);
    let indexes: Vec<u64> = steps.iter().map(|s| s["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes, (0..10).collect::<Vec<_>>());

    let (_, out, _) = cli(&["replay", "two-servers", "--from", "3", "--limit", "2"], &data);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("[3] 2024-05-01T10:00:03.000000Z  demo/operator  GET Pod ns/q1"), "{out}");
}

fn configmap(rv: u64, value: &str, replicas: u64) -> Value {
    json!({"kind": "ConfigMap", "apiVersion": "v1",
           "metadata": {"name": "cfg", "namespace": "ns", "uid": "uid-cfg", "resourceVersion": rv.to_string(),
                        "managedFields": [{"manager": format!("m{rv}")}]},
           "data": {"mode": value, "replicas": replicas.to_string()}})
}

#[test]
fn a_conflict_storm_recovered_only_when_a_write_went_through_after_its_last_conflict() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let written = |name: &str, rv: u64| {
        json!({"kind": "ConfigMap", "apiVersion": "v1",
               "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                            "resourceVersion": rv.to_string()},
               "data": {"rv": rv.to_string()}})
    };
    let write = |id: &str, name: &str, t_ms: u64, rv: u64| {
        event(id, "update", "configmaps", "ns", name, t_ms, 5, 200, None, Some(written(name, rv)))
    };
    let conflict = |id: &str, name: &str, t_ms: u64| {
        event(id, "update", "configmaps", "ns", name, t_ms, 5, 409, Some("the object has been modified"), None)
    };
    let mut events = Vec::new();
    for (name, rv) in [("later", 10), ("earlier", 20), ("same-time-after", 30), ("same-time-before", 40)] {
        events.push(write(&format!("{name}-a"), name, 0, rv));
        for i in 1..=3 {
            events.push(conflict(&format!("{name}-c{i}"), name, 1000 * i));
        }
    }
    events.push(write("later-w", "later", 5000, 11));
    // Received in the same microsecond as the last conflict: the audit ID orders them.
    events.push(write("same-time-after-w", "same-time-after", 3000, 31));
    events.push(write("same-time-before-a0", "same-time-before", 3000, 41));
    record(&data, "storms", &events);

    let report = analyze_json(&data, "storms", &["--conflicts", "--errors"]);
    // In session order: the four first writes (0-3), the conflicts at 1 s (4-7) and 2 s (8-11),
    // then at 3 s by audit ID: earlier-c3, later-c3, same-time-after-c3, same-time-after-w,
    // same-time-before-a0, same-time-before-c3 (12-17), and later-w (18).
    let conflicts = &report["errors"]["by_status"][0];
    assert_eq!(
        (&conflicts["status_code"], &conflicts["count"], &conflicts["first_index"], &conflicts["last_index"]),
        (&json!(409), &json!(12), &json!(4), &json!(17)),
        "{report}"
    );
    assert_eq!(report["errors"]["last"]["resource"], "ConfigMap/ns/same-time-before", "{report}");
    assert_eq!(report["errors"]["last"]["index"], 17, "{report}");
    let storms = report["conflicts"].as_array().unwrap_or_else(|| panic!("{report}"));
    let recovered = |name: &str| -> bool {
        let storm = storms.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name}: {report}"));
        assert_eq!(storm["conflicts"], 3, "{storm}");
        storm["recovered"].as_bool().unwrap()
    };
    let span = |name: &str| {
        let storm = storms.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("{name}: {report}"));
        (storm["first_index"].as_u64().unwrap(), storm["last_index"].as_u64().unwrap())
    };
    assert_eq!(span("later"), (5, 13));
    assert_eq!(span("same-time-before"), (7, 17));
    assert!(recovered("later"));
    assert!(!recovered("earlier"));
    assert!(recovered("same-time-after"));
    assert!(!recovered("same-time-before"));
}

#[test]
fn replay_filters_and_diffs_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let events = vec![
        event("w1", "create", "configmaps", "ns", "cfg", 0, 5, 201, None, Some(configmap(10, "fast", 3))),
        event("r1", "get", "configmaps", "ns", "cfg", 1000, 5, 200, None, None),
        event("w2", "update", "configmaps", "ns", "cfg", 2000, 5, 200, None, Some(configmap(11, "slow", 3))),
        event("x1", "get", "pods", "ns", "other", 2500, 5, 200, None, None),
        event("w3", "update", "configmaps", "ns", "cfg", 3000, 5, 200, None, Some(configmap(12, "slow", 5))),
        event("w4", "update", "configmaps", "ns", "cfg", 4000, 5, 200, None, Some(configmap(13, "slow", 5))),
    ];
    record(&data, "diffs", &events);
    let (code, out, err) = cli(&["replay", "diffs", "--writes-only", "--diff"], &data);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("[2] 2024-05-01T10:00:02.000000Z  demo/operator  UPDATE ConfigMap ns/cfg  rv -> 11  200"),
        "{out}"
    );
    assert!(out.contains("    data.mode: \"fast\" -> \"slow\""), "{out}");
    assert!(out.contains("    data.replicas: \"3\" -> \"5\""), "{out}");
    assert!(out.contains("(no field changed)"), "the last update changed nothing but bookkeeping: {out}");
    assert!(out.contains("CREATE ConfigMap ns/cfg  rv -> 10  201  5.0ms\n    (new object)"), "{out}");
    assert!(!out.contains("managedFields"), "{out}");
    assert!(!out.contains("GET"), "{out}");

    let (_, all, _) = cli(&["replay", "diffs", "--writes-only", "--diff", "--all-fields"], &data);
    assert!(all.contains("metadata.resourceVersion: \"12\" -> \"13\""), "{all}");

    let (_, only_pods, _) = cli(&["replay", "diffs", "--object", "Pod/ns/other"], &data);
    assert_eq!(only_pods.lines().count(), 1, "{only_pods}");
    assert!(only_pods.starts_with("[3] "), "{only_pods}");
    let (_, by_actor, _) = cli(&["replay", "diffs", "--actor", "nobody"], &data);
    assert_eq!(by_actor.trim(), "no steps match");
}

#[test]
fn interactive_replay_reads_commands_from_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let events = vec![
        event("w1", "create", "configmaps", "ns", "cfg", 0, 5, 201, None, Some(configmap(10, "fast", 3))),
        event("r1", "get", "configmaps", "ns", "cfg", 1000, 5, 200, None, None),
        event("w2", "update", "configmaps", "ns", "cfg", 2000, 5, 200, None, Some(configmap(11, "slow", 3))),
    ];
    record(&data, "steps", &events);
    let d = data.display().to_string();
    let script = b"n\n\nb\nj 2\nd\no\nfoo\nq\n";
    let output = kubestep(&["replay", "steps", "-d", &d, "-i"], Some(script));
    let (out, err) = text(&output);
    assert_eq!(output.status.code(), Some(0), "{err}");
    // n shows [1]; Enter repeats n -> [2]; b -> [1]; j 2 -> [2]; d diffs w2; o prints it.
    let shown: Vec<&str> = out.lines().filter(|l| l.contains("[") && l.contains("demo/operator")).collect();
    let firsts: Vec<&str> =
        shown.iter().map(|l| l.find("> [").map_or(*l, |i| &l[i + 2..]).split(']').next().unwrap()).collect();
    assert_eq!(firsts, ["[0", "[1", "[2", "[1", "[2"], "{out}");
    assert!(out.contains("data.mode: \"fast\" -> \"slow\""), "{out}");
    assert!(out.contains("\"resourceVersion\": \"11\""), "{out}");
    assert!(out.contains("unknown command \"foo\""), "{out}");
    // End of input quits cleanly too.
    let output = kubestep(&["replay", "steps", "-d", &d, "-i"], Some(b"n\n"));
    assert_eq!(output.status.code(), Some(0));
}

#[test]
fn sessions_lists_every_session_with_its_figures() {
    let (_tmp, data) = seed_samples();
    let (code, out, err) = cli(&["sessions", "--format", "json"], &data);
    assert_eq!(code, Some(0), "{err}");
    let sessions: Vec<Value> = serde_json::from_str(&out).unwrap();
    let summary: Vec<(String, u64, u64, u64)> = sessions
        .iter()
        .map(|s| {
            (
                s["session_id"].as_str().unwrap().to_owned(),
                s["operations"].as_u64().unwrap(),
                s["writes"].as_u64().unwrap(),
                s["errors"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("sample-session-001".to_owned(), 10, 0, 0),
            ("sample-session-002".to_owned(), 15, 15, 0),
            ("sample-session-003".to_owned(), 12, 0, 3)
        ]
    );
    assert_eq!(sessions[0]["first_at"], "2024-05-01T10:00:00.000000Z");
    let (_, text_out, _) = cli(&["sessions"], &data);
    assert!(text_out.lines().next().unwrap().starts_with("SESSION"), "{text_out}");
    assert_eq!(text_out.lines().count(), 4);
}

#[test]
fn bad_sessions_and_directories_fail_with_one_line_and_create_nothing() {
    let (_tmp, data) = seed_samples();
    for args in [vec!["analyze", "nope"], vec!["replay", "nope"]] {
        let (code, _, err) = cli(&args, &data);
        assert_eq!(code, Some(1), "{args:?}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("no session \"nope\""), "{err}");
    }
    let missing = data.parent().unwrap().join("missing");
    for args in [vec!["sessions"], vec!["analyze", "x"], vec!["replay", "x"], vec!["sql", "SELECT 1"]] {
        let (code, _, err) = cli(&args, &missing);
        assert_eq!(code, Some(1), "{args:?}");
        assert!(err.contains("does not exist"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
    assert!(!missing.exists(), "reading never creates a recording");
    let empty = data.parent().unwrap().join("empty");
    std::fs::create_dir_all(empty.join("operations")).unwrap();
    let (code, _, err) = cli(&["sessions"], &empty);
    assert_eq!(code, Some(1));
    assert!(err.contains("no operations yet"), "{err}");
}

#[test]
fn sql_speaks_table_json_and_csv_and_has_views() {
    let (_tmp, data) = seed_samples();
    let q = "SELECT session_id, count(*) AS n FROM writes GROUP BY session_id";
    let (_, json_out, _) = cli(&["sql", q, "--format", "json"], &data);
    assert_eq!(
        serde_json::from_str::<Value>(&json_out).unwrap(),
        json!([{"session_id": "sample-session-002", "n": 15}])
    );
    let (_, csv_out, _) = cli(&["sql", q, "--format", "csv"], &data);
    assert_eq!(csv_out.trim(), "session_id,n\nsample-session-002,15");
    let (_, seq, _) = cli(
        &[
            "sql",
            "SELECT \"index\", sequence_number FROM indexed_operations WHERE session_id = 'sample-session-003' AND error IS NOT NULL ORDER BY 1",
            "--format",
            "csv",
        ],
        &data,
    );
    assert_eq!(seq.trim(), "index,sequence_number\n0,1\n4,5\n8,9");
    // Views are planned when a statement names them; the catalog lists every one, as views.
    let (code, tables, err) = cli(
        &[
            "sql",
            "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
            "--format",
            "csv",
        ],
        &data,
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        tables.trim(),
        "table_name,table_type\ncausal_edges,VIEW\nconflict_storms,VIEW\nepisodes,VIEW\nerror_requeues,VIEW\n\
         fight_candidates,VIEW\nhot_loops,VIEW\nindexed_operations,VIEW\nobject_versions,VIEW\noperations,BASE TABLE\n\
         writes,VIEW"
    );
    // A view over views (hot_loops reads writes) plans its parts on the way.
    let (code, loops, err) = cli(&["sql", "SELECT count(*) AS n FROM hot_loops", "--format", "csv"], &data);
    assert_eq!((code, loops.trim()), (Some(0), "n\n0"), "{err}");
    // A list column (SELECT * has one) is written as its text, as the table shows it.
    let (_, lists, _) = cli(&["sql", "SELECT ['a', 'b'] AS l, 1 AS n", "--format", "csv"], &data);
    assert_eq!(lists.trim(), "l,n\n\"[a, b]\",1");
    let (code, all, err) = cli(&["sql", "SELECT * FROM operations LIMIT 1", "--format", "csv"], &data);
    assert_eq!(code, Some(0), "{err}");
    assert!(all.lines().next().is_some_and(|header| header.contains("owner_uids")), "{all}");
    assert_eq!(all.trim().lines().count(), 2, "{all}");
    // The prompt reads one query per line from standard input.
    let d = data.display().to_string();
    let output = kubestep(&["sql", "-d", &d, "--format", "csv"], Some(b"SELECT count(*) AS n FROM operations;\n\\q\n"));
    assert_eq!(text(&output).0.trim(), "n\n37");
}

fn sql_with_env(data: &Path, query: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kubestep"));
    command.args(["sql", "-d", &data.display().to_string(), "--format", "csv", query]);
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

#[test]
fn the_engine_runs_in_a_bounded_pool_that_the_environment_can_resize_and_tune() {
    let (_tmp, data) = seed_samples();
    let setting = |name: &str, env: &[(&str, &str)]| {
        let query = format!("SELECT value FROM information_schema.df_settings WHERE name = '{name}'");
        let output = sql_with_env(&data, &query, env);
        assert!(output.status.success(), "{:?}", text(&output));
        text(&output).0.lines().nth(1).unwrap_or_default().to_owned()
    };
    // Windows are not hash-repartitioned by default; DATAFUSION_* variables override any setting.
    assert_eq!(setting("datafusion.optimizer.repartition_windows", &[]), "false");
    assert_eq!(
        setting("datafusion.optimizer.repartition_windows", &[("DATAFUSION_OPTIMIZER_REPARTITION_WINDOWS", "true")]),
        "true"
    );
    assert_eq!(setting("datafusion.execution.batch_size", &[("DATAFUSION_EXECUTION_BATCH_SIZE", "1234")]), "1234");

    // A join whose hash table cannot fit the pool fails with one clear line naming the variable.
    let join = "WITH big AS (SELECT o.audit_id, g.value FROM operations o CROSS JOIN generate_series(1, 30000) g) \
                SELECT count(*) FROM big a JOIN big b ON a.audit_id = b.audit_id AND a.value = b.value";
    let output = sql_with_env(&data, join, &[("KUBESTEP_MEMORY_LIMIT_MB", "1")]);
    let (_, err) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{err}");
    assert!(err.contains("more memory than the limit of 1 MiB") && err.contains("KUBESTEP_MEMORY_LIMIT_MB"), "{err}");
    // The default pool holds it.
    let output = sql_with_env(&data, join, &[]);
    assert!(output.status.success(), "{:?}", text(&output));
    assert_eq!(text(&output).0.lines().nth(1), Some("1110000"), "37 operations x 30000");
}

#[test]
fn ingest_runs_on_the_c_librarys_allocator_and_queries_on_mimalloc() {
    let (tmp, data) = seed_samples();
    let d = data.display().to_string();
    let allocator = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubestep"))
            .args(args)
            .env("KUBESTEP_LOG", "kubestep=debug")
            .output()
            .unwrap();
        let (_, err) = text(&output);
        assert!(output.status.success(), "{args:?}: {err}");
        let line = err.lines().find(|l| l.contains("memory allocator chosen")).unwrap_or_default().to_owned();
        line.split("allocator=").nth(1).unwrap_or_default().trim_matches('"').to_owned()
    };
    let empty = tmp.path().join("empty.log");
    std::fs::write(&empty, "").unwrap();
    let file = empty.display().to_string();
    assert_eq!(allocator(&["import", "-q", "-d", &d, &file]), "system");
    // The global option's value is not taken for the command.
    assert_eq!(allocator(&["--log-format", "text", "import", "-q", "-d", &d, &file]), "system");
    assert_eq!(allocator(&["sessions", "-d", &d]), "mimalloc");
    assert_eq!(allocator(&["sql", "-d", &d, "SELECT 1"]), "mimalloc");
}

#[test]
fn output_cut_short_by_its_reader_ends_the_command_quietly() {
    use std::io::Read;
    use std::os::unix::process::ExitStatusExt;
    let (_tmp, data) = seed_samples();
    let d = data.display().to_string();
    // Far more output than a pipe holds; the reader takes a little and goes, like `| head`.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kubestep"))
        .args(["sql", "-d", &d, "SELECT value FROM generate_series(1, 2000000)"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting kubestep");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 1024];
    stdout.read_exact(&mut first).expect("the table starts");
    drop(stdout);
    let mut stderr = String::new();
    child.stderr.take().expect("stderr").read_to_string(&mut stderr).expect("stderr");
    let status = child.wait().expect("waiting");
    assert_eq!(status.signal(), Some(libc::SIGPIPE), "{status:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
