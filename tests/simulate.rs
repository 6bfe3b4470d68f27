//! The simulator end to end: its events look like a real API server's, its ground truth is what
//! the analyses find, it posts through the real webhook path, and the demo runs.

mod common;
#[path = "common/server.rs"]
mod server;
use common::*;
use serde_json::Value;
use server::TestServer;

fn is_micro_time(v: &Value) -> bool {
    let s = v.as_str().unwrap_or("");
    s.len() == 27 && s.ends_with('Z') && s.as_bytes()[19] == b'.' && s[20..26].bytes().all(|b| b.is_ascii_digit())
}

#[test]
fn simulated_events_pass_the_conformance_checks_of_real_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, truth) = simulate(tmp.path(), "mixed", "3", &[]);
    let text = std::fs::read_to_string(&log).unwrap();
    let mut levels = std::collections::BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let e: Value = serde_json::from_str(line).unwrap_or_else(|err| panic!("line {}: {err}", n + 1));
        assert_eq!(e["kind"], "Event");
        assert_eq!(e["apiVersion"], "audit.k8s.io/v1");
        for field in [
            "level",
            "auditID",
            "stage",
            "requestURI",
            "verb",
            "user",
            "sourceIPs",
            "userAgent",
            "objectRef",
            "responseStatus",
            "annotations",
        ] {
            assert!(e.get(field).is_some(), "line {}: no {field}: {line}", n + 1);
        }
        assert!(is_micro_time(&e["requestReceivedTimestamp"]), "{line}");
        assert!(is_micro_time(&e["stageTimestamp"]), "{line}");
        assert_eq!(e["stage"], "ResponseComplete");
        let level = e["level"].as_str().unwrap().to_owned();
        match level.as_str() {
            "Metadata" => {
                assert!(e.get("requestObject").is_none() && e.get("responseObject").is_none(), "{line}");
            }
            "RequestResponse" => {
                assert!(e.get("requestObject").is_some(), "{line}");
                assert!(e.get("responseObject").is_some(), "{line}");
            }
            other => panic!("unexpected level {other}"),
        }
        let code = e["responseStatus"]["code"].as_u64().unwrap();
        if code >= 400 {
            assert!(e["responseStatus"]["reason"].is_string(), "failures carry a reason: {line}");
        }
        *levels.entry(level).or_insert(0) += 1;
    }
    assert_eq!(text.lines().count() as u64, truth["events"].as_u64().unwrap());
    assert!(levels["Metadata"] > 100 && levels["RequestResponse"] > 100, "{levels:?}");
}

#[test]
fn the_ground_truth_is_what_analyze_finds() {
    let tmp = tempfile::tempdir().unwrap();
    for scenario in ["rollout", "operator", "hot-loop", "fight", "conflicts", "slow", "mixed"] {
        let (log, truth) = simulate(tmp.path(), scenario, "5", &[]);
        let data = tmp.path().join(format!("data-{scenario}"));
        let output = import(&data, &[&log], &["-q", "--session", scenario]);
        assert!(output.status.success(), "{scenario}: {:?}", text(&output));
        let output = kubestep(&["analyze", scenario, "-d", &data.display().to_string(), "--format", "json"], None);
        assert!(output.status.success(), "{scenario}: {:?}", text(&output));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["total_operations"], truth["events"], "{scenario}");
        assert_eq!(report["slow_operations_total"], truth["slow_operations"], "{scenario}: slow");
        let errors: u64 = truth["errors"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        assert_eq!(report["errors"]["total"].as_u64().unwrap(), errors, "{scenario}: errors");
        for status in report["errors"]["by_status"].as_array().unwrap() {
            let code = status["status_code"].as_u64().unwrap().to_string();
            assert_eq!(status["count"], truth["errors"][&code], "{scenario}: status {code}");
        }
        for hot in truth["hot_loops"].as_array().unwrap() {
            let object = format!("ConfigMap {}/{}", hot["namespace"].as_str().unwrap(), hot["name"].as_str().unwrap());
            let found = report["loops_detected"].as_array().into_iter().flatten().any(|l| {
                l["repeat_count"].as_u64() >= hot["writes"].as_u64()
                    && l["pattern"] == serde_json::json!([format!("GET {object}"), format!("UPDATE {object}")])
            });
            assert!(found, "{scenario}: the hot loop on {object} is a loop: {}", report["loops_detected"]);
        }
    }
}

/// `analyze` reads the identity columns as views (less copying); its report is the one the
/// documented `Utf8` columns give, section by section, on scenarios that fill every section.
#[test]
fn analyze_reports_the_same_with_text_read_as_views() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mut filled = std::collections::BTreeSet::<&str>::new();
    for scenario in ["mixed", "fight", "conflicts", "slow"] {
        let (log, _) = simulate(tmp.path(), scenario, "11", &[]);
        let data = tmp.path().join(format!("data-{scenario}"));
        let output = import(&data, &[&log], &["-q", "--session", scenario]);
        assert!(output.status.success(), "{scenario}: {:?}", text(&output));
        let report = |text_columns| {
            let data = data.clone();
            runtime.block_on(async move {
                let ctx = kubestep_query::open_recording_with(&data, &kubestep_query::Engine::Local, text_columns)
                    .await
                    .expect("opening the recording");
                let options = kubestep_query::analyze::AnalyzeOptions::all();
                let report = kubestep_query::analyze::analyze(&ctx, scenario, &options).await.expect("analyze");
                serde_json::to_value(&report).expect("the report serializes")
            })
        };
        let (documented, views) =
            (report(kubestep_query::TextColumns::AsDocumented), report(kubestep_query::TextColumns::AsViews));
        let sections = ["slow_operations", "loops_detected", "hot_loops", "fights", "conflicts", "requeues"];
        filled.extend(sections.iter().filter(|s| documented[**s].as_array().is_some_and(|a| !a.is_empty())).copied());
        for section in sections.iter().chain(&["errors", "total_operations", "loops_total"]) {
            assert_eq!(documented[*section], views[*section], "{scenario}: {section}");
        }
        assert_eq!(documented, views, "{scenario}");
    }
    assert_eq!(filled.len(), 6, "some section was empty in every scenario: only {filled:?} compared");
}

#[test]
fn posting_to_the_webhook_stores_every_event_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let mut server = TestServer::start(&data, &["--session", "posted"]);
    let truth_file = tmp.path().join("truth.json");
    let output = kubestep(
        &[
            "simulate",
            "--scenario",
            "mixed",
            "--events",
            "3000",
            "--to",
            &format!("{}/audit", server.base),
            "--batch-size",
            "100",
            "--truth",
            &truth_file.display().to_string(),
        ],
        None,
    );
    assert!(output.status.success(), "{:?}", text(&output));
    assert!(text(&output).1.contains("events/s"), "{:?}", text(&output));
    assert_eq!(server.terminate(), Some(0));
    let truth: Value = serde_json::from_str(&std::fs::read_to_string(&truth_file).unwrap()).unwrap();
    assert_eq!(
        count(&data, "SELECT count(*) FROM operations WHERE session_id = 'posted'"),
        truth["events"].as_u64().unwrap()
    );
}

#[test]
fn the_demo_runs_from_nothing_to_an_analysis() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("demo");
    let output = kubestep(&["demo", "-d", &data.display().to_string(), "--events", "2000"], None);
    let (out, err) = text(&output);
    assert!(output.status.success(), "{out}\n{err}");
    for expected in [
        "$ kubestep sessions",
        "=== Loop Detection ===",
        "=== Slow Operations ===",
        "=== Error Analysis ===",
        "Explore further",
    ] {
        assert!(out.contains(expected), "{expected}: {out}");
    }
    assert!(out.contains("\ndemo "), "the demo session is listed: {out}");
    assert!(out.contains("kubestep report demo -d "), "the demo points at the report: {out}");
    let page = tmp.path().join("demo-report.html");
    let report =
        kubestep(&["report", "demo", "-d", &data.display().to_string(), "-o", &page.display().to_string()], None);
    assert!(report.status.success(), "{}", text(&report).1);
    let html = std::fs::read_to_string(&page).unwrap_or_default();
    assert!(html.contains("<canvas"), "the report of the demo session is a timeline page");
    let again = kubestep(&["demo", "-d", &data.display().to_string()], None);
    assert_eq!(again.status.code(), Some(1), "a used directory is refused");
}

fn objects(list: &Value, actor_key: &str) -> std::collections::BTreeSet<(String, String, String, String)> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            let s = |k: &str| x[k].as_str().unwrap_or("").to_owned();
            (if actor_key.is_empty() { String::new() } else { s(actor_key) }, s("kind"), s("namespace"), s("name"))
        })
        .collect()
}

#[test]
fn hot_loops_fights_and_conflict_storms_match_the_ground_truth() {
    let tmp = tempfile::tempdir().unwrap();
    for scenario in ["hot-loop", "fight", "conflicts", "mixed"] {
        let (log, truth) = simulate(tmp.path(), scenario, "11", &[]);
        let data = tmp.path().join(format!("behaviour-{scenario}"));
        assert!(import(&data, &[&log], &["-q", "--session", "s"]).status.success());
        let output = kubestep(&["analyze", "s", "-d", &data.display().to_string(), "--format", "json"], None);
        assert!(output.status.success(), "{scenario}: {:?}", text(&output));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();

        assert_eq!(
            objects(&report["hot_loops"], "actor_id"),
            objects(&truth["hot_loops"], "actor"),
            "{scenario}: hot loops"
        );
        for expected in truth["hot_loops"].as_array().unwrap() {
            let found = report["hot_loops"].as_array().unwrap().iter().find(|h| h["name"] == expected["name"]).unwrap();
            assert!(found["writes"].as_u64() >= expected["writes"].as_u64(), "{scenario}: {found}");
            assert_eq!(found["class"], expected["class"], "{scenario}: {found}");
        }

        assert_eq!(objects(&report["fights"], ""), objects(&truth["fights"], ""), "{scenario}: fights");
        for expected in truth["fights"].as_array().unwrap() {
            let found = report["fights"].as_array().unwrap().iter().find(|f| f["name"] == expected["name"]).unwrap();
            let mut actors: Vec<&str> =
                found["actors"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
            let mut wanted: Vec<&str> =
                expected["actors"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
            actors.sort();
            wanted.sort();
            assert_eq!(actors, wanted, "{scenario}: {found}");
            let field = &found["fields"][0];
            assert_eq!(field["path"], expected["field"], "{scenario}: {found}");
            let mut values: Vec<String> =
                field["values"].as_array().unwrap().iter().map(|v| v["value"].to_string()).collect();
            values.sort();
            let mut expected_values: Vec<String> =
                expected["values"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
            expected_values.sort();
            assert_eq!(values, expected_values, "{scenario}: {found}");
            assert!(field["flips"].as_u64().unwrap() + 1 >= expected["flips"].as_u64().unwrap(), "{scenario}: {found}");
        }

        assert_eq!(
            objects(&report["conflicts"], "actor_id"),
            objects(&truth["conflict_storms"], "actor"),
            "{scenario}: storms"
        );
        for expected in truth["conflict_storms"].as_array().unwrap() {
            let found = report["conflicts"].as_array().unwrap().iter().find(|c| c["name"] == expected["name"]).unwrap();
            assert_eq!(found["conflicts"], expected["conflicts"], "{scenario}: {found}");
            assert_eq!(found["recovered"], expected["recovered"], "{scenario}: {found}");
            assert!(found["max_versions_behind"].as_u64().unwrap() >= 1, "{scenario}: {found}");
        }
    }
}

#[test]
fn causality_chains_contain_the_scenarios_chains() {
    let tmp = tempfile::tempdir().unwrap();
    for scenario in ["rollout", "operator"] {
        let (log, truth) = simulate(tmp.path(), scenario, "21", &[]);
        let data = tmp.path().join(format!("causality-{scenario}"));
        assert!(import(&data, &[&log], &["-q", "--session", "s"]).status.success());
        let d = data.display().to_string();
        let output = kubestep(
            &["analyze", "causality", "--session", "s", "-d", &d, "--format", "json", "--chains", "100"],
            None,
        );
        assert!(output.status.success(), "{scenario}: {:?}", text(&output));
        let report: Value = serde_json::from_slice(&output.stdout).unwrap();
        let chains = report_chains(&report);
        for expected in truth_chains(&truth) {
            assert!(expected.len() >= 3);
            assert!(holds_chain(&chains, &expected), "{scenario}: {expected:?} not in {chains:?}");
        }
        // Every edge points forward in time and has one of the three kinds.
        for edge in report["edges"].as_array().unwrap() {
            let index = |id: &Value| id.as_str().unwrap()[3..].parse::<u64>().unwrap();
            assert!(index(&edge["from"]) < index(&edge["to"]), "{edge}");
            assert!(["rv", "owner", "watch"].contains(&edge["type"].as_str().unwrap()), "{edge}");
        }
        // The same question twice gives the same answer.
        let again = kubestep(
            &["analyze", "causality", "--session", "s", "-d", &d, "--format", "json", "--chains", "100"],
            None,
        );
        assert_eq!(again.stdout, output.stdout);
        let dot = kubestep(&["analyze", "causality", "--session", "s", "-d", &d, "--format", "dot"], None);
        assert!(String::from_utf8_lossy(&dot.stdout).starts_with("digraph"), "{scenario}");
        let text_out = kubestep(&["analyze", "causality", "--session", "s", "-d", &d], None);
        assert!(String::from_utf8_lossy(&text_out.stdout).contains("Chain 1:"), "{scenario}");
    }
}

#[test]
fn the_behaviour_views_answer_plain_sql() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, truth) = simulate(tmp.path(), "mixed", "4", &[]);
    let data = tmp.path().join("views");
    assert!(import(&data, &[&log], &["-q", "--session", "v"]).status.success());
    let hot = rows(&data, "SELECT actor_id, kind, namespace, name FROM hot_loops WHERE session_id = 'v' ORDER BY name");
    let expected: Vec<Vec<String>> = truth["hot_loops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| ["actor", "kind", "namespace", "name"].iter().map(|k| h[*k].as_str().unwrap().to_owned()).collect())
        .collect();
    assert_eq!(hot, expected);
    let storms = count(&data, "SELECT count(*) FROM conflict_storms WHERE session_id = 'v'");
    assert_eq!(storms, truth["conflict_storms"].as_array().unwrap().len() as u64);
    let episodes = count(&data, "SELECT count(*) FROM episodes WHERE session_id = 'v' AND writes > 0");
    assert!(episodes > 10, "{episodes}");
    assert!(count(&data, "SELECT count(*) FROM error_requeues") > 0);
    // Every fight of the scenario is among the objects written in turns.
    let candidates = rows(&data, "SELECT name FROM fight_candidates WHERE session_id = 'v'");
    let fights = truth["fights"].as_array().unwrap();
    assert!(!fights.is_empty());
    for fight in fights {
        let name = fight["name"].as_str().unwrap().to_owned();
        assert!(candidates.contains(&vec![name.clone()]), "{name} not in {candidates:?}");
    }
    // The causal_edges view holds exactly the edges `analyze causality` reports, with the same kind
    // and evidence (the command finds the watch edges without the view's SQL).
    let graph = kubestep(
        &["analyze", "causality", "--session", "v", "-d", &data.display().to_string(), "--format", "json"],
        None,
    );
    let graph: Value = serde_json::from_slice(&graph.stdout).expect("causality JSON");
    let index = |id: &Value| id.as_str().and_then(|id| id.strip_prefix("op:")).unwrap_or("?").to_owned();
    let mut reported: Vec<Vec<String>> = graph["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            vec![
                index(&e["from"]),
                index(&e["to"]),
                e["type"].as_str().unwrap().to_owned(),
                e["evidence"].as_str().unwrap().to_owned(),
            ]
        })
        .collect();
    reported.sort();
    let mut from_view = rows(
        &data,
        "SELECT CAST(from_index AS VARCHAR), CAST(to_index AS VARCHAR), edge, evidence FROM causal_edges WHERE session_id = 'v'",
    );
    from_view.sort();
    let watch = reported.iter().filter(|e| e[2] == "watch").count();
    assert!(watch >= 20, "the scenario has watch edges: {watch}");
    assert_eq!(reported.len(), from_view.len());
    assert!(reported == from_view, "the first difference: {:?}", reported.iter().zip(&from_view).find(|(a, b)| a != b));
    // A window that starts mid-session numbers its operations as the session does: each of its
    // watch edges is one of the view's (an episode cut by the window start only loses edges).
    let middle = &reported.iter().filter(|e| e[2] == "watch").nth(watch / 2).expect("a middle watch edge")[0];
    let start = rows(
        &data,
        &format!(
            "SELECT CAST(received_at AS VARCHAR) FROM indexed_operations WHERE session_id = 'v' AND \"index\" = {middle}"
        ),
    );
    let window = format!("{},", start[0][0]);
    let windowed = kubestep(
        &["analyze", "causality", "--session", "v", "-d", &data.display().to_string(), "--format", "json"]
            .into_iter()
            .chain(["--window", window.as_str()])
            .collect::<Vec<_>>(),
        None,
    );
    assert!(windowed.status.success(), "{:?}", text(&windowed));
    let windowed: Value = serde_json::from_slice(&windowed.stdout).expect("causality JSON");
    let windowed_watch: Vec<Vec<String>> = windowed["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .filter(|e| e["type"] == "watch")
        .map(|e| {
            vec![index(&e["from"]), index(&e["to"]), "watch".to_owned(), e["evidence"].as_str().unwrap().to_owned()]
        })
        .collect();
    assert!(
        !windowed_watch.is_empty() && windowed_watch.len() < watch,
        "{} of {watch} from {window}",
        windowed_watch.len()
    );
    for edge in &windowed_watch {
        assert!(from_view.contains(edge), "{edge:?} (window from {window}) is not an edge of the view");
    }
    let kinds = rows(&data, "SELECT DISTINCT edge FROM causal_edges ORDER BY edge");
    assert_eq!(kinds, vec![vec!["owner".to_owned()], vec!["rv".to_owned()], vec!["watch".to_owned()]]);
}

/// Slow operations leave watches out unless `--include-watch`: the totals are the operations at or
/// over the threshold, with and without the watches among them.
#[test]
fn watches_are_slow_operations_only_when_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = simulate(tmp.path(), "mixed", "21", &["--events", "5000"]);
    let data = tmp.path().join("data");
    assert!(import(&data, &[&log], &["-q", "--session", "w"]).status.success());
    let d = data.display().to_string();
    let mut compared = 0;
    for threshold in ["1", "500", "1000"] {
        let total = |extra: &[&str]| {
            let mut args = vec!["analyze", "w", "-d", &d, "--slow", "--threshold", threshold, "--format", "json"];
            args.extend_from_slice(extra);
            let output = kubestep(&args, None);
            assert!(output.status.success(), "{:?}", text(&output));
            let report: Value = serde_json::from_slice(&output.stdout).unwrap();
            report["slow_operations_total"].as_u64().unwrap()
        };
        let (without, with) = (total(&[]), total(&["--include-watch"]));
        let counted = |condition: &str| {
            count(&data, &format!("SELECT count(*) FROM operations WHERE duration_ms >= {threshold} {condition}"))
        };
        assert_eq!(without, counted("AND verb <> 'watch'"), "threshold {threshold}");
        assert_eq!(with, counted(""), "threshold {threshold}");
        compared += usize::from(with > without && without > 0);
    }
    assert!(compared > 0, "no threshold where watches made a difference");
}

/// `analyze` counts conflict storms and requeue loops in its walk over the session instead of
/// asking the views; for every session (a scenario's and the real samples') and several
/// thresholds, the walk gives the views' rows in the views' order, and a storm is "recovered"
/// exactly when its actor produced a version of the object after its last 409.
#[test]
fn the_walk_counts_the_storm_and_requeue_views_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    for (scenario, seed) in [("mixed", "13"), ("conflicts", "2")] {
        let (log, _) = simulate(tmp.path(), scenario, seed, &["--events", "20000"]);
        assert!(import(&data, &[&log], &["-q", "--session", scenario]).status.success());
    }
    let samples = sample_files();
    let samples: Vec<&std::path::Path> = samples.iter().map(|p| p.as_path()).collect();
    // Some sample files hold lines that are not events; the rest are stored.
    import(&data, &samples, &["-q"]);
    let sessions = rows(
        &data,
        "SELECT session_id FROM operations WHERE error IS NOT NULL GROUP BY session_id HAVING count(*) >= 2 \
         ORDER BY session_id",
    );
    assert!(sessions.len() > 2, "{sessions:?}");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (mut storms_seen, mut recovered_seen, mut requeues_seen) = (0, [0, 0], 0);
    for min in [3, 1, 2] {
        let options =
            kubestep_query::behaviour::BehaviourOptions { conflict_min: min, requeue_min: min, ..Default::default() };
        let storm_sql = kubestep_query::views::fill(kubestep_query::views::CONFLICT_STORMS, &[("conflict_min", min)]);
        let requeue_sql = kubestep_query::views::fill(kubestep_query::views::ERROR_REQUEUES, &[("requeue_min", min)]);
        for session in sessions.iter().map(|s| &s[0]) {
            let (storms, requeues) = runtime.block_on(async {
                let ctx = kubestep_query::open_recording(&data).await.expect("opening the recording");
                let storms = kubestep_query::behaviour::conflict_storms(&ctx, session, &options).await.expect("storms");
                let requeues = kubestep_query::behaviour::requeues(&ctx, session, &options).await.expect("requeues");
                (storms, requeues)
            });
            let storms: Vec<Vec<String>> = storms
                .iter()
                .map(|s| {
                    let (first, last) = (&s.first_at, &s.last_at);
                    let (indexes, recovered) = ((s.first_index, s.last_index), s.recovered);
                    let identity = [&s.actor_id, &s.kind, &s.namespace, &s.name].map(String::clone);
                    let counts = [s.conflicts.to_string(), format!("{indexes:?}"), first.clone(), last.clone()];
                    identity.into_iter().chain(counts).chain([recovered.to_string()]).collect()
                })
                .collect();
            let storm_view = rows(
                &data,
                &format!(
                    "WITH storms AS ({storm_sql}), \
                     versions AS (SELECT session_id, actor_id, kind, namespace, name, max(\"index\") AS last_version \
                       FROM indexed_operations WHERE resource_version IS NOT NULL \
                       AND (status_code IS NULL OR status_code < 400) \
                       AND verb IN ('create', 'update', 'patch', 'delete') AND NOT coalesce(dry_run, false) \
                       GROUP BY session_id, actor_id, kind, namespace, name) \
                     SELECT coalesce(s.actor_id, ''), coalesce(s.kind, ''), coalesce(s.namespace, ''), s.name, \
                       s.conflicts, concat('(', s.first_index, ', ', s.last_index, ')'), \
                       to_char(s.first_at, '%Y-%m-%dT%H:%M:%S%.6fZ'), to_char(s.last_at, '%Y-%m-%dT%H:%M:%S%.6fZ'), \
                       coalesce(v.last_version > s.last_index, false) \
                     FROM storms s LEFT JOIN versions v ON v.session_id = s.session_id \
                       AND (v.actor_id IS NOT DISTINCT FROM s.actor_id) AND (v.kind IS NOT DISTINCT FROM s.kind) \
                       AND (v.namespace IS NOT DISTINCT FROM s.namespace) AND v.name = s.name \
                     WHERE s.session_id = '{session}' \
                     ORDER BY s.conflicts DESC, s.actor_id, s.kind, s.namespace, s.name"
                ),
            );
            assert_eq!(storms, storm_view, "storms of {session} at {min}");
            storms_seen += storms.len();
            for storm in &storms {
                recovered_seen[usize::from(storm[8] == "true")] += 1;
            }
            let requeues: Vec<Vec<String>> = requeues
                .iter()
                .map(|r| {
                    let identity = [&r.actor_id, &r.kind, &r.namespace, &r.name].map(String::clone);
                    let counts =
                        [r.status_code.to_string(), r.attempts.to_string(), r.first_at.clone(), r.last_at.clone()];
                    identity.into_iter().chain(counts).chain([r.error.clone()]).collect()
                })
                .collect();
            let requeue_view = rows(
                &data,
                &format!(
                    "SELECT coalesce(actor_id, ''), coalesce(kind, ''), coalesce(namespace, ''), coalesce(name, ''), \
                       status_code, attempts, to_char(first_at, '%Y-%m-%dT%H:%M:%S%.6fZ'), \
                       to_char(last_at, '%Y-%m-%dT%H:%M:%S%.6fZ'), error \
                     FROM ({requeue_sql}) WHERE session_id = '{session}' \
                     ORDER BY attempts DESC, actor_id, kind, namespace, name, status_code"
                ),
            );
            assert_eq!(requeues, requeue_view, "requeues of {session} at {min}");
            requeues_seen += requeues.len();
        }
    }
    assert!(
        storms_seen > 10 && requeues_seen > 10,
        "too little compared: {storms_seen} storms, {requeues_seen} requeues"
    );
    assert!(recovered_seen[0] > 0 && recovered_seen[1] > 0, "storms recovered and not: {recovered_seen:?}");
}

/// `analyze` finds hot-loop and fight candidates in one pass over the writes instead of asking
/// the views; for every session (a scenario's and the real samples') and several thresholds, the
/// pass gives the views' rows, in the views' order.
#[test]
fn the_candidates_pass_gives_the_views_rows() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = simulate(tmp.path(), "mixed", "9", &["--events", "20000"]);
    let data = tmp.path().join("data");
    assert!(import(&data, &[&log], &["-q", "--session", "m"]).status.success());
    let samples = sample_files();
    let samples: Vec<&std::path::Path> = samples.iter().map(|p| p.as_path()).collect();
    // Some sample files hold lines that are not events; the rest are stored.
    import(&data, &samples, &["-q"]);
    // The sessions with a few writes at least (most sample files are a handful of events).
    let sessions =
        rows(&data, "SELECT session_id FROM writes GROUP BY session_id HAVING count(*) >= 5 ORDER BY session_id");
    assert!(sessions.len() > 2, "{sessions:?}");

    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "NULL".to_owned());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let mut compared = (0, 0);
    for (hot_writes, hot_window_s, fight_turns) in [(10, 60, 4), (3, 5, 2), (2, 0, 1)] {
        let options =
            kubestep_query::behaviour::BehaviourOptions { hot_writes, hot_window_s, fight_turns, ..Default::default() };
        let thresholds =
            [("hot_writes", hot_writes), ("hot_window_seconds", hot_window_s), ("fight_turns", fight_turns)];
        let hot_sql = kubestep_query::views::fill(kubestep_query::views::HOT_LOOPS, &thresholds);
        let fight_sql = kubestep_query::views::fill(kubestep_query::views::FIGHT_CANDIDATES, &thresholds);
        for session in sessions.iter().map(|s| &s[0]) {
            let found = runtime.block_on(async {
                let ctx = kubestep_query::open_recording(&data).await.expect("opening the recording");
                kubestep_query::candidates::find(&ctx, session, &options, true, true).await.expect("the pass")
            });
            let hot: Vec<Vec<String>> = found
                .hot_loops
                .iter()
                .map(|h| {
                    vec![
                        text(&h.actor_id),
                        text(&h.kind),
                        text(&h.namespace),
                        h.name.clone(),
                        h.writes.to_string(),
                        h.peak_in_window.to_string(),
                        h.first_us.to_string(),
                        h.last_us.to_string(),
                    ]
                })
                .collect();
            let hot_view = rows(
                &data,
                &format!(
                    "SELECT actor_id, kind, namespace, name, writes, peak_in_window, CAST(first_at AS BIGINT), \
                     CAST(last_at AS BIGINT) FROM ({hot_sql}) WHERE session_id = '{session}' \
                     ORDER BY writes DESC, actor_id, kind, namespace, name"
                ),
            );
            assert_eq!(hot, hot_view, "hot loops of {session} at {thresholds:?}");
            let fights: Vec<Vec<String>> = found
                .fights
                .iter()
                .map(|f| {
                    vec![
                        text(&f.kind),
                        text(&f.namespace),
                        f.name.clone(),
                        f.turns.to_string(),
                        f.first_us.to_string(),
                        f.last_us.to_string(),
                    ]
                })
                .collect();
            let fight_view = rows(
                &data,
                &format!(
                    "SELECT kind, namespace, name, turns, CAST(first_at AS BIGINT), CAST(last_at AS BIGINT) \
                     FROM ({fight_sql}) WHERE session_id = '{session}' ORDER BY turns DESC, kind, namespace, name"
                ),
            );
            assert_eq!(fights, fight_view, "fight candidates of {session} at {thresholds:?}");
            compared.0 += hot.len();
            compared.1 += fights.len();
        }
    }
    assert!(compared.0 > 60 && compared.1 > 40, "rows compared (hot loops, fights): {compared:?}");
}

/// The errors section is counted by the session walk as the failures go by; for every session (a
/// scenario's and the real samples') it says what plain SQL over the recording says.
#[test]
fn the_errors_section_counts_what_sql_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let (log, _) = simulate(tmp.path(), "mixed", "4", &["--events", "8000"]);
    let data = tmp.path().join("data");
    assert!(import(&data, &[&log], &["-q", "--session", "m"]).status.success());
    let samples = sample_files();
    let samples: Vec<&std::path::Path> = samples.iter().map(|p| p.as_path()).collect();
    import(&data, &samples, &["-q"]);
    let d = data.display().to_string();
    let sessions = rows(
        &data,
        "SELECT session_id FROM operations WHERE error IS NOT NULL GROUP BY session_id ORDER BY session_id",
    );
    assert!(sessions.len() > 2, "{sessions:?}");
    let mut statuses_seen = std::collections::BTreeSet::new();
    for session in sessions.iter().map(|s| &s[0]) {
        let out = kubestep(&["analyze", "--session", session, "-d", &d, "--errors", "--format", "json"], None);
        assert!(out.status.success(), "{:?}", text(&out));
        let report: Value = serde_json::from_slice(&out.stdout).expect("analysis JSON");
        let errors = &report["errors"];
        let failed = format!("FROM operations WHERE session_id = '{session}' AND error IS NOT NULL");
        let total = count(&data, &format!("SELECT count(*) {failed}"));
        assert_eq!(errors["total"], total, "{session}");
        let by_type: Vec<Vec<String>> = errors["by_type"]
            .as_object()
            .expect("by_type")
            .iter()
            .map(|(k, v)| vec![k.clone(), v.to_string()])
            .collect();
        let sql_by_type =
            rows(&data, &format!("SELECT coalesce(operation_type, ''), count(*) {failed} GROUP BY 1 ORDER BY 1"));
        assert_eq!(by_type, sql_by_type, "{session}");
        let by_status: Vec<Vec<String>> = errors["by_status"]
            .as_array()
            .expect("by_status")
            .iter()
            .map(|s| {
                ["status_code", "reason", "count", "first_index", "last_index"]
                    .iter()
                    .map(|k| s[*k].as_str().map_or_else(|| s[*k].to_string(), str::to_owned))
                    .collect()
            })
            .collect();
        let sql_by_status = rows(
            &data,
            &format!(
                "SELECT coalesce(status_code, 0), CASE status_code WHEN 409 THEN 'Conflict' WHEN 404 THEN 'NotFound' \
                 WHEN 403 THEN 'Forbidden' WHEN 422 THEN 'Invalid' WHEN 401 THEN 'Unauthorized' \
                 WHEN 429 THEN 'TooManyRequests' WHEN 500 THEN 'InternalError' WHEN 503 THEN 'ServiceUnavailable' \
                 WHEN 504 THEN 'Timeout' ELSE coalesce('Status' || CAST(status_code AS VARCHAR), '') END, \
                 count(*), min(\"index\"), max(\"index\") FROM indexed_operations \
                 WHERE session_id = '{session}' AND error IS NOT NULL \
                 GROUP BY status_code ORDER BY count(*) DESC, status_code"
            ),
        );
        assert_eq!(by_status, sql_by_status, "{session}");
        statuses_seen.extend(sql_by_status.into_iter().map(|s| s[0].clone()));
        let by_actor: Vec<Vec<String>> = errors["by_actor"]
            .as_array()
            .expect("by_actor")
            .iter()
            .map(|a| vec![a["actor_id"].as_str().unwrap_or("?").to_owned(), a["count"].to_string()])
            .collect();
        let sql_by_actor = rows(
            &data,
            &format!(
                "SELECT coalesce(actor_id, ''), count(*) {failed} GROUP BY actor_id ORDER BY count(*) DESC, actor_id"
            ),
        );
        assert_eq!(by_actor, sql_by_actor, "{session}");
        for (end, order) in [("first", "ASC"), ("last", "DESC")] {
            let sql_end = rows(
                &data,
                &format!(
                    "SELECT \"index\", coalesce(error, ''), coalesce(actor_id, '') FROM indexed_operations \
                     WHERE session_id = '{session}' AND error IS NOT NULL ORDER BY \"index\" {order} LIMIT 1"
                ),
            );
            let reported = &errors[end];
            assert_eq!(
                vec![
                    reported["index"].to_string(),
                    reported["message"].as_str().unwrap_or("?").to_owned(),
                    reported["actor_id"].as_str().unwrap_or("?").to_owned()
                ],
                sql_end[0],
                "{end} failure of {session}"
            );
        }
    }
    assert!(statuses_seen.len() >= 3, "statuses compared: {statuses_seen:?}");
}
