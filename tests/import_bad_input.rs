//! Bad input is reported with file, line and reason; everything good beside it is still recorded;
//! the exit code says whether anything was rejected; nothing panics.

mod common;

use std::io::Write;
use std::path::Path;

use common::*;

fn event(id: &str, second: u32) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"{id}","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/default/configmaps/c","verb":"get","user":{{"username":"system:serviceaccount:default:app"}},"objectRef":{{"resource":"configmaps","namespace":"default","name":"c","apiVersion":"v1"}},"responseStatus":{{"code":200}},"requestReceivedTimestamp":"2024-05-01T10:00:{second:02}.000000Z","stageTimestamp":"2024-05-01T10:00:{second:02}.004000Z"}}"#
    )
}

fn stored(data: &Path) -> u64 {
    count(data, "SELECT count(*) FROM operations")
}

#[test]
fn a_clean_import_exits_zero_and_says_what_it_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("audit.log");
    std::fs::write(&file, format!("{}\n{}\n", event("a", 1), event("b", 2))).expect("write");
    let data = dir.path().join("data");
    let out = import(&data, &[&file], &[]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("records stored            2"), "{stdout}");
    assert!(stdout.contains("rejected                  0"), "{stdout}");
    assert_eq!(stored(&data), 2);
}

#[test]
fn broken_lines_are_reported_and_the_rest_is_imported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("audit.log");
    let mut content = Vec::new();
    content.extend(format!("{}\n", event("a", 1)).into_bytes());
    content.extend(b"this is not json\n");
    content.extend(br#"{"kind":"Event","stage":"ResponseComplete","verb":"get","requestReceivedTimestamp":"2024-05-01T10:00:00Z","stageTimestamp":"2024-05-01T10:00:00Z"}"#);
    content.push(b'\n');
    content.extend(br#"{"kind":"Event","auditID":"x","stage":"ResponseComplete","verb":"get"}"#);
    content.push(b'\n');
    // Line 5: an event whose auditID holds a byte that is not UTF-8.
    content.extend(event("bad\u{0}", 3).into_bytes().iter().map(|&b| if b == 0 { 0xff } else { b }));
    content.push(b'\n');
    content.extend(format!("{}\n", event("b", 2)).into_bytes());
    std::fs::write(&file, content).expect("write");
    let data = dir.path().join("data");
    let out = import(&data, &[&file], &[]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let name = file.display().to_string();
    assert!(stdout.contains(&format!("{name}: line 2: not valid JSON")), "{stdout}");
    assert!(stdout.contains(&format!("{name}: line 3: missing auditID")), "{stdout}");
    assert!(stdout.contains(&format!("{name}: line 4: missing requestReceivedTimestamp")), "{stdout}");
    assert!(stdout.contains(&format!("{name}: line 5: not valid UTF-8")), "{stdout}");
    assert!(stdout.contains("rejected                  4"), "{stdout}");
    assert_eq!(stored(&data), 2);
    // The rejected text is kept, with its reason, for the user to fix and re-import.
    let rejected_dir = data.join("rejected");
    let log: String = std::fs::read_dir(&rejected_dir)
        .expect("rejected dir")
        .map(|e| std::fs::read_to_string(e.expect("entry").path()).expect("read"))
        .collect();
    assert_eq!(log.lines().count(), 4);
    assert!(log.contains("this is not json"));
    assert!(log.contains("\"line\":3"));
}

#[test]
fn a_missing_file_is_reported_and_the_other_files_imported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good.log");
    std::fs::write(&good, event("a", 1)).expect("write");
    let missing = dir.path().join("missing.log");
    let data = dir.path().join("data");
    let out = import(&data, &[&missing, &good], &[]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains(&format!("{}: cannot read: No such file", missing.display())), "{stdout}");
    assert_eq!(stored(&data), 1);
}

#[test]
fn a_truncated_gzip_keeps_every_complete_event_before_the_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lines: String = (0..3000).map(|i| format!("{}\n", event(&format!("e{i}"), (i % 60) as u32))).collect();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(lines.as_bytes()).expect("gzip");
    let mut compressed = gz.finish().expect("gzip");
    compressed.truncate(compressed.len() * 2 / 3);
    let file = dir.path().join("audit.log.gz");
    std::fs::write(&file, compressed).expect("write");
    let data = dir.path().join("data");
    let out = import(&data, &[&file], &[]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout.contains("truncated"), "{stdout}");
    let n = stored(&data);
    assert!(n > 1000 && n < 3000, "{n} of 3000 stored");
    // At most the one line cut in half is lost, and it is reported.
    assert!(
        stdout.contains("rejected                  2") || stdout.contains("rejected                  1"),
        "{stdout}"
    );
}

#[test]
fn standard_input_and_a_forced_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let input = format!("{}\n{}\n", event("a", 1), event("b", 2));
    let out =
        kubestep(&["import", "-d", &data.display().to_string(), "--session", "my-run", "-"], Some(input.as_bytes()));
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    let sessions = rows(&data, "SELECT DISTINCT session_id FROM operations");
    assert_eq!(sessions, [["my-run"]]);
}

#[test]
fn invalid_arguments_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("a.log");
    std::fs::write(&file, event("a", 1)).expect("write");
    let data = dir.path().join("data");
    for (extra, message) in [
        (&["--session", "../escape"][..], "invalid session name"),
        (&["--actor-rule", "(unclosed=x"][..], "actor rule"),
        (&["--actor-rule", "no-separator"][..], "REGEX=NAME"),
    ] {
        let out = import(&data, &[&file], extra);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(message), "{stderr}");
        assert_eq!(stderr.matches("Error").count(), 1, "one error, said once: {stderr}");
    }
    assert!(!data.exists());
}

#[test]
fn a_single_hundred_megabyte_line_is_stored_as_a_stub() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("big.log");
    let blob = "x".repeat(100 << 20);
    let big = format!(
        r#"{{"auditID":"big","stage":"ResponseComplete","verb":"create","objectRef":{{"resource":"configmaps","namespace":"default"}},"responseStatus":{{"code":201}},"responseObject":{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"huge","uid":"u-big","resourceVersion":"9"}},"data":{{"blob":"{blob}"}}}},"requestReceivedTimestamp":"2024-05-01T10:00:05Z","stageTimestamp":"2024-05-01T10:00:06Z"}}"#
    );
    std::fs::write(&file, format!("{}\n{big}\n{}\n", event("a", 1), event("b", 2))).expect("write");
    drop(big);
    let data = dir.path().join("data");
    let out = import(&data, &[&file], &[]);
    assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
    assert_eq!(stored(&data), 3);
    let row = &rows(
        &data,
        "SELECT name, uid, resource_version, length(response_object), response_object FROM operations WHERE audit_id = 'big'",
    )[0];
    assert_eq!(row[..3], ["huge", "u-big", "9"]);
    let len: usize = row[3].parse().expect("length");
    assert!(len < 1024, "stub of {len} bytes");
    assert!(row[4].contains("kubestep.io/truncated"), "{}", row[4]);
}
