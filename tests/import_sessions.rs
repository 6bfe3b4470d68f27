//! Sessions and actors as the import command assigns them.

mod common;

use common::*;

fn event(id: &str, minute: u32, username: &str, user_agent: &str) -> String {
    format!(
        r#"{{"auditID":"{id}","stage":"ResponseComplete","verb":"update","requestURI":"/api/v1/namespaces/ns/configmaps/c","user":{{"username":"{username}"}},"userAgent":"{user_agent}","objectRef":{{"resource":"configmaps","namespace":"ns","name":"c"}},"responseStatus":{{"code":200}},"requestReceivedTimestamp":"2024-05-01T10:{minute:02}:00Z","stageTimestamp":"2024-05-01T10:{minute:02}:00.010Z"}}"#
    )
}

fn log(events: &[String]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("audit.log");
    std::fs::write(&file, events.join("\n")).expect("write");
    (dir, file)
}

#[test]
fn an_idle_gap_splits_automatic_sessions() {
    let ua = "kubectl/v1.30.0 (linux/amd64) kubernetes/abc";
    let events = [event("a", 0, "alice", ua), event("b", 3, "alice", ua), event("c", 20, "alice", ua)];
    let (dir, file) = log(&events);
    let data = dir.path().join("default-gap");
    import(&data, &[&file], &[]);
    let sessions = rows(&data, "SELECT session_id, count(*) FROM operations GROUP BY 1 ORDER BY 1");
    assert_eq!(sessions, [["auto-20240501T100000Z", "2"], ["auto-20240501T102000Z", "1"]]);

    let data = dir.path().join("long-gap");
    import(&data, &[&file], &["--idle-gap", "30m"]);
    let sessions = rows(&data, "SELECT session_id, count(*) FROM operations GROUP BY 1");
    assert_eq!(sessions, [["auto-20240501T100000Z", "3"]]);
}

#[test]
fn actor_rules_come_before_the_built_in_derivation() {
    let events = [
        event("a", 0, "system:serviceaccount:ops:widget-operator", "manager/v0.0.0 (linux/amd64) kubernetes/$Format"),
        event("b", 1, "system:serviceaccount:ops:widget-operator", "helm/3.14"),
        event("c", 2, "alice@example.com", "kubectl/v1.30.0 (linux/amd64) kubernetes/abc"),
    ];
    let (dir, file) = log(&events);
    let data = dir.path().join("data");
    let out = import(&data, &[&file], &["--actor-rule", "\\|helm/=helm-releases"]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let actors = rows(&data, "SELECT audit_id, actor_id FROM operations ORDER BY audit_id");
    assert_eq!(actors, [["a", "ops/widget-operator"], ["b", "helm-releases"], ["c", "alice@example.com"]]);
}

#[test]
fn a_later_import_continues_the_stored_automatic_session() {
    let ua = "kubectl/v1.30.0 (linux/amd64) kubernetes/abc";
    let (dir, first) = log(&[event("a", 0, "alice", ua), event("b", 3, "alice", ua)]);
    let second = dir.path().join("next.log");
    std::fs::write(&second, event("c", 6, "alice", ua)).expect("write");
    let later = dir.path().join("later.log");
    std::fs::write(&later, event("d", 40, "alice", ua)).expect("write");
    let data = dir.path().join("data");
    for file in [&first, &second, &later] {
        let out = import(&data, &[file.as_path()], &[]);
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    }
    let sessions = rows(&data, "SELECT session_id, count(*) FROM operations GROUP BY 1 ORDER BY 1");
    assert_eq!(sessions, [["auto-20240501T100000Z", "3"], ["auto-20240501T104000Z", "1"]]);
}
