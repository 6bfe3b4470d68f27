//! `kubestep analyze causality` on hand-written audit events whose causality is known exactly:
//! which edges exist, of which kind, which chains they form, and which must not exist.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use serde_json::{Value, json};

/// One successful write: `actor` (a service account in `kube-system`) does `verb` on ConfigMap
/// `ns/name` (uid `uid`) at `t_ms` after 10:00, sending `base` as the version it read and getting
/// `rv` back; `owner` is the uid of the object's owner.
struct Write {
    id: String,
    actor: String,
    verb: &'static str,
    ns: String,
    name: &'static str,
    uid: String,
    t_ms: u64,
    base: Option<&'static str>,
    rv: &'static str,
    owner: Option<String>,
}

impl Write {
    fn event(&self) -> String {
        let at = |ms: u64| format!("2024-05-01T10:{:02}:{:02}.{:03}000Z", ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        let mut metadata =
            json!({"name": self.name, "namespace": self.ns, "uid": self.uid, "resourceVersion": self.rv});
        if let Some(owner) = &self.owner {
            metadata["ownerReferences"] =
                json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner}]);
        }
        let path = if self.verb == "create" {
            format!("/api/v1/namespaces/{}/configmaps", self.ns)
        } else {
            format!("/api/v1/namespaces/{}/configmaps/{}", self.ns, self.name)
        };
        let mut object_ref =
            json!({"resource": "configmaps", "namespace": self.ns, "name": self.name, "apiVersion": "v1"});
        if let Some(base) = self.base {
            object_ref["resourceVersion"] = json!(base);
        }
        json!({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": self.id, "stage": "ResponseComplete", "verb": self.verb, "requestURI": path,
            "user": {"username": format!("system:serviceaccount:kube-system:{}", self.actor)},
            "userAgent": format!("{}/v1.30.0", self.actor),
            "objectRef": object_ref,
            "responseStatus": {"metadata": {}, "code": if self.verb == "create" { 201 } else { 200 }},
            "responseObject": {"kind": "ConfigMap", "apiVersion": "v1", "metadata": metadata, "data": {"k": self.rv}},
            "requestReceivedTimestamp": at(self.t_ms),
            "stageTimestamp": at(self.t_ms + 5),
        })
        .to_string()
    }
}

/// One chain A -> B -> C on namespace `ns`, its actors named after `prefix`, starting at `t_ms`:
/// A updates X (10 -> 11); B updates X based on 11 (-> 12) and creates Y owned by X; six seconds
/// later (past the trigger window, so only the version links it) C updates Y based on the version
/// B's create produced.
fn chain(prefix: &str, ns: &str, t_ms: u64) -> Vec<Write> {
    let (x, y) = (format!("{ns}-x-uid"), format!("{ns}-y-uid"));
    let steps = [
        // (actor, verb, object, uid, after ms, base, rv, owner)
        ("a", "update", "x", &x, 0, Some("10"), "11", None),
        ("b", "update", "x", &x, 100, Some("11"), "12", None),
        ("b", "create", "y", &y, 200, None, "13", Some(&x)),
        ("c", "update", "y", &y, 6_000, Some("13"), "14", Some(&x)),
    ];
    steps
        .into_iter()
        .enumerate()
        .map(|(i, (actor, verb, name, uid, after_ms, base, rv, owner))| Write {
            id: format!("{ns}-{}", i + 1),
            actor: format!("{prefix}{actor}-controller"),
            verb,
            ns: ns.to_owned(),
            name,
            uid: uid.clone(),
            t_ms: t_ms + after_ms,
            base,
            rv,
            owner: owner.cloned(),
        })
        .collect()
}

fn causality(data: &Path) -> Value {
    let output = kubestep(
        &["analyze", "causality", "--session", "s", "-d", &data.display().to_string(), "--format", "json"],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// The edges as (from audit ID, to audit ID, kind), through the nodes' indexes.
fn edges(report: &Value, ids_by_index: &[String]) -> BTreeSet<(String, String, String)> {
    let id = |node: &Value| {
        let index: usize = node.as_str().unwrap()["op:".len()..].parse().unwrap();
        ids_by_index[index].clone()
    };
    report["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (id(&e["from"]), id(&e["to"]), e["type"].as_str().unwrap().to_owned()))
        .collect()
}

fn record(data: &Path, writes: &[Write]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.log");
    let lines: Vec<String> = writes.iter().map(Write::event).collect();
    std::fs::write(&log, lines.join("\n")).unwrap();
    let output = import(data, &[&log], &["-q", "--session", "s"]);
    assert!(output.status.success(), "{:?}", text(&output));
    // Steps are numbered in request time order.
    let mut by_time: Vec<&Write> = writes.iter().collect();
    by_time.sort_by_key(|w| (w.t_ms, w.id.clone()));
    by_time.iter().map(|w| w.id.clone()).collect()
}

fn set(edges: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    edges.iter().map(|(a, b, k)| (a.to_string(), b.to_string(), k.to_string())).collect()
}

#[test]
fn a_to_b_to_c_comes_out_with_its_rv_owner_and_rv_edges_and_nothing_backwards() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut writes = chain("", "one", 20_000);
    // B wrote X twenty seconds before A did: nothing A did can have caused it.
    writes.push(Write {
        id: "early".into(),
        actor: "b-controller".into(),
        verb: "update",
        ns: "one".into(),
        name: "x",
        uid: "one-x-uid".into(),
        t_ms: 0,
        base: Some("8"),
        rv: "9",
        owner: None,
    });
    let ids = record(&data, &writes);
    let report = causality(&data);

    assert_eq!(
        edges(&report, &ids),
        set(&[("one-1", "one-2", "rv"), ("one-1", "one-3", "owner"), ("one-3", "one-4", "rv")]),
        "{report:#}"
    );
    let chains = report["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 1, "one chain, not its sub-chains: {report:#}");
    assert_eq!(
        chains[0]["actors"],
        json!(["kube-system/a-controller", "kube-system/b-controller", "kube-system/c-controller"])
    );
    assert_eq!(chains[0]["edges"], json!(["owner", "rv"]));
    let nodes: Vec<&str> = chains[0]["nodes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    let position = |id: &str| format!("op:{}", ids.iter().position(|i| i == id).unwrap());
    assert_eq!(nodes, [position("one-1"), position("one-3"), position("one-4")]);
    assert!(
        !report["edges"].as_array().unwrap().iter().any(|e| e["to"] == json!(position("early"))),
        "no edge points back to B's earlier write: {report:#}"
    );
}

/// Two chains of the same shape by different controllers, the second one's steps falling between
/// the first one's (50 ms later each); returns the audit IDs in step order.
fn record_two_interleaved_chains(data: &Path) -> Vec<String> {
    let mut writes = chain("", "one", 10_000);
    writes.extend(chain("other-", "two", 10_050));
    record(data, &writes)
}

#[test]
fn two_interleaved_chains_come_out_as_two_chains() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ids = record_two_interleaved_chains(&data);
    let report = causality(&data);

    assert_eq!(
        edges(&report, &ids),
        set(&[
            ("one-1", "one-2", "rv"),
            ("one-1", "one-3", "owner"),
            ("one-3", "one-4", "rv"),
            ("two-1", "two-2", "rv"),
            ("two-1", "two-3", "owner"),
            ("two-3", "two-4", "rv"),
        ]),
        "{report:#}"
    );
    let mut chains: Vec<Value> = report["chains"].as_array().unwrap().iter().map(|c| c["actors"].clone()).collect();
    chains.sort_by_key(Value::to_string);
    assert_eq!(
        chains,
        [
            json!(["kube-system/a-controller", "kube-system/b-controller", "kube-system/c-controller"]),
            json!([
                "kube-system/other-a-controller",
                "kube-system/other-b-controller",
                "kube-system/other-c-controller"
            ]),
        ]
    );
}

#[test]
fn the_text_counts_the_whole_graph_and_shows_the_json_s_best_chains() {
    // The text reads back only the writes of the chains it prints, yet its counts are the graph's.
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    record_two_interleaved_chains(&data);
    let report = causality(&data);
    let output =
        kubestep(&["analyze", "causality", "--session", "s", "-d", &data.display().to_string(), "--chains", "1"], None);
    assert!(output.status.success(), "{:?}", text(&output));
    let printed = String::from_utf8_lossy(&output.stdout);
    let (nodes, edges) = (report["nodes"].as_array().unwrap().len(), report["edges"].as_array().unwrap().len());
    assert_eq!((nodes, edges), (8, 6), "{report:#}");
    let headline = printed.lines().next().unwrap_or_default();
    assert_eq!(headline, "Causality in session s: 8 writes linked by 6 edges (owner 2, rv 4); 2 chains", "{printed}");
    assert!(printed.contains("\n... and 1 more chains\n"), "{printed}");
    // The one chain printed is the JSON's first, write by write.
    let best: Vec<&str> =
        report["chains"][0]["nodes"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect();
    let printed_writes: Vec<String> = printed
        .lines()
        .filter_map(|line| {
            line.split_once('[').and_then(|(_, rest)| rest.split_once(']')).map(|(i, _)| format!("op:{i}"))
        })
        .collect();
    assert_eq!(printed_writes, best, "{printed}");
}

#[test]
fn the_dot_output_renders_with_graphviz() {
    let dot = which("dot").expect("Graphviz's `dot` renders the DOT output: `bash .ci/test` installs it");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    record(&data, &chain("", "one", 1_000));
    let output = kubestep(
        &["analyze", "causality", "--session", "s", "-d", &data.display().to_string(), "--format", "dot"],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
    let mut child = std::process::Command::new(dot)
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(&output.stdout).unwrap();
    let rendered = child.wait_with_output().unwrap();
    assert!(rendered.status.success(), "dot failed: {}", String::from_utf8_lossy(&rendered.stderr));
    // Graphviz writes '-' in text as an entity.
    let svg = String::from_utf8_lossy(&rendered.stdout).replace("&#45;", "-");
    assert!(svg.contains("<svg"), "{svg}");
    for label in ["a-controller", "b-controller", "c-controller", ">owner</text>", ">rv</text>"] {
        assert!(svg.contains(label), "{label} is drawn: {svg}");
    }
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(program)).find(|p| p.is_file())
}

#[test]
fn a_touch_at_the_end_of_the_trigger_window_links_the_episode_and_one_millisecond_later_does_not() {
    // A's write of X completes at 1.005 s (every request here lasts 5 ms). B reads X `delay_ms`
    // after that and, 100 ms later in the same episode, updates Z: a watch edge exactly when the
    // read falls within the 5 s trigger window.
    for (delay_ms, linked) in [(5_000, true), (5_001, false), (0, true)] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        let write =
            |id: &str, actor: &str, verb: &'static str, name: &'static str, t_ms: u64, rv: &'static str| Write {
                id: id.into(),
                actor: actor.into(),
                verb,
                ns: "w".into(),
                name,
                uid: format!("{name}-uid"),
                t_ms,
                base: None,
                rv,
                owner: None,
            };
        let read_at = 1_005 + delay_ms;
        let writes = [
            write("a-x", "a-controller", "update", "x", 1_000, "11"),
            write("b-read", "b-controller", "get", "x", read_at, "11"),
            write("b-z", "b-controller", "update", "z", read_at + 100, "12"),
        ];
        let ids = record(&data, &writes);
        let report = causality(&data);
        let expected = if linked { set(&[("a-x", "b-z", "watch")]) } else { BTreeSet::new() };
        assert_eq!(edges(&report, &ids), expected, "read {delay_ms} ms after the write: {report:#}");
    }
}
