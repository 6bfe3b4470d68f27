//! Recordings in object storage, against a real S3-compatible server (moto, started per test): every
//! query command reads `-d s3://BUCKET/PREFIX` and answers exactly what it answers for the same files
//! in a local directory; `import` writes there with the same records, duplicates and sessions as into
//! a directory; an empty prefix, a missing bucket and an unknown session fail with one clear line;
//! commands that only work on a directory refuse a URL instead of creating a directory named like it.

mod common;

use common::s3::S3Server;
use common::{import, kubestep, sample_files, simulate, text};

/// Runs the same command against the local directory and the bucket; both must succeed with the
/// same standard output.
fn same_answer(server: &S3Server, local: &str, remote: &str, args: &[&str]) -> Vec<u8> {
    fn with<'a>(args: &[&'a str], data: &'a str) -> Vec<&'a str> {
        args.iter().copied().chain(["-d", data]).collect()
    }
    let local_out = kubestep(&with(args, local), None);
    assert!(local_out.status.success(), "local {args:?}: {:?}", text(&local_out));
    let remote_out = server.kubestep(&with(args, remote));
    assert!(remote_out.status.success(), "remote {args:?}: {:?}", text(&remote_out));
    assert_eq!(
        String::from_utf8_lossy(&remote_out.stdout),
        String::from_utf8_lossy(&local_out.stdout),
        "{args:?}: the bucket answers differently"
    );
    local_out.stdout
}

#[test]
fn every_query_command_reads_a_recording_in_s3_as_it_reads_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("recording");
    // Real events from many clusters (many automatic sessions) plus a scenario with loops, fights
    // and causality chains in one named session.
    let samples = sample_files();
    let samples: Vec<&std::path::Path> = samples.iter().map(|p| p.as_path()).collect();
    let _ = import(&data, &samples, &["-q"]);
    let (log, _) = simulate(tmp.path(), "mixed", "7", &["--events", "3000"]);
    assert!(import(&data, &[&log], &["-q", "--session", "s"]).status.success());

    let server = S3Server::start("recordings");
    assert!(server.upload(&data, "clusters/eu-1") > 10);
    let local = data.display().to_string();
    let remote = server.url("clusters/eu-1");

    let sessions = same_answer(&server, &local, &remote, &["sessions", "--format", "json"]);
    let sessions: serde_json::Value = serde_json::from_slice(&sessions).unwrap();
    assert!(sessions.as_array().is_some_and(|s| s.len() > 5), "{sessions}");
    same_answer(&server, &local, &remote, &["sessions"]);
    same_answer(&server, &local, &remote, &["replay", "s", "--limit", "50"]);
    same_answer(&server, &local, &remote, &["replay", "s", "--writes-only", "--diff", "--format", "json"]);
    let analysis = same_answer(&server, &local, &remote, &["analyze", "s", "--format", "json"]);
    let analysis: serde_json::Value = serde_json::from_slice(&analysis).unwrap();
    assert!(analysis["hot_loops"].as_array().is_some_and(|h| !h.is_empty()), "the scenario has hot loops");
    let causality =
        same_answer(&server, &local, &remote, &["analyze", "causality", "--session", "s", "--format", "json"]);
    let causality: serde_json::Value = serde_json::from_slice(&causality).unwrap();
    assert!(causality["chains"].as_array().is_some_and(|c| !c.is_empty()), "the scenario has chains");
    same_answer(
        &server,
        &local,
        &remote,
        &[
            "sql",
            "SELECT actor_id, count(*) AS n FROM writes GROUP BY actor_id ORDER BY n DESC, actor_id",
            "--format",
            "csv",
        ],
    );

    // The HTML report of the same session, built from the bucket, is the same page.
    let (local_page, remote_page) = (tmp.path().join("local.html"), tmp.path().join("remote.html"));
    let (local_arg, remote_arg) = (local_page.display().to_string(), remote_page.display().to_string());
    assert!(kubestep(&["report", "s", "-d", &local, "-o", &local_arg], None).status.success());
    let built = server.kubestep(&["report", "s", "-d", &remote, "-o", &remote_arg]);
    assert!(built.status.success(), "{:?}", text(&built));
    assert!(std::fs::read(&local_page).unwrap() == std::fs::read(&remote_page).unwrap(), "the pages differ");
}

#[test]
fn a_missing_recording_bucket_or_session_is_one_clear_line_and_urls_are_never_taken_for_directories() {
    let server = S3Server::start("empty");
    let fails = |args: &[&str], expected: &str| {
        let output = server.kubestep(args);
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: one line: {stderr}");
    };
    let empty = server.url("nothing/here");
    fails(&["sessions", "-d", &empty], "no recording at s3://empty/nothing/here: it holds no operations");
    fails(&["sessions", "-d", "s3://no-such-bucket/x"], "NoSuchBucket");
    fails(&["sessions", "-d", "ftp://host/x"], "unsupported scheme \"ftp\"");

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("recording");
    let sample = common::sample("audit2rbac__demo.log");
    assert!(import(&data, &[&sample], &["-q", "--session", "k"]).status.success());
    assert!(server.upload(&data, "r") > 0);
    fails(&["analyze", "nope", "-d", &server.url("r")], "no session \"nope\"");

    // Commands that only work on a directory refuse a URL (and create nothing named after it).
    let cwd = tempfile::tempdir().unwrap();
    let url = server.url("w");
    for command in ["compact", "verify"] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubestep"))
            .args([command, "-d", &url])
            .envs(server.env())
            .current_dir(cwd.path())
            .output()
            .unwrap();
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{command}: {stderr}");
        assert!(stderr.contains("works on a local directory"), "{command}: {stderr}");
        assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0, "{command} created files");
    }
}

#[test]
fn import_into_a_bucket_stores_what_a_directory_stores_once_and_continues_its_sessions() {
    let server = S3Server::start("imports");
    let tmp = tempfile::tempdir().unwrap();
    // A log cut in two: the second half continues the first half's automatic sessions.
    let log = std::fs::read_to_string(common::sample("audit2rbac__demo.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    let (first, second) = lines.split_at(lines.len() / 2);
    let (first_file, second_file) = (tmp.path().join("first.log"), tmp.path().join("second.log"));
    std::fs::write(&first_file, first.join("\n")).unwrap();
    std::fs::write(&second_file, second.join("\n")).unwrap();
    let whole = common::sample("audit2rbac__demo.log");

    let local = tmp.path().join("local");
    assert!(import(&local, &[&whole], &["-q"]).status.success());
    let remote = server.url("rec");
    let (first_arg, second_arg, whole_arg) =
        (first_file.display().to_string(), second_file.display().to_string(), whole.display().to_string());
    let imported = server.kubestep(&["import", "-q", &first_arg, "-d", &remote]);
    assert!(imported.status.success(), "{:?}", text(&imported));
    assert!(text(&imported).0.contains(&format!("into {remote}")), "{:?}", text(&imported));
    assert!(server.kubestep(&["import", "-q", &second_arg, "-d", &remote]).status.success());
    // The whole log again: every event is already in the bucket.
    let again = server.kubestep(&["import", "-q", &whole_arg, "-d", &remote]);
    assert!(again.status.success(), "{:?}", text(&again));
    let (summary, _) = text(&again);
    assert!(summary.contains("records stored            0"), "{summary}");

    let local_arg = local.display().to_string();
    let sessions = same_answer(&server, &local_arg, &remote, &["sessions", "--format", "json"]);
    let sessions: serde_json::Value = serde_json::from_slice(&sessions).unwrap();
    let session = sessions[0]["session_id"].as_str().unwrap().to_owned();
    same_answer(&server, &local_arg, &remote, &["replay", &session, "--format", "json"]);
    same_answer(
        &server,
        &local_arg,
        &remote,
        &[
            "sql",
            "SELECT audit_id, stage, verb, resource_version FROM operations ORDER BY audit_id, stage",
            "--format",
            "csv",
        ],
    );
    // Nothing is left behind in the staging area.
    let staged = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("kubestep-import-"))
        .count();
    assert_eq!(staged, 0, "staging directories left in the temporary directory");
}
