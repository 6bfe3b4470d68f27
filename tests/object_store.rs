//! Recordings in object storage, against a real S3-compatible server (moto, started per test): every
//! query command reads `-d s3://BUCKET/PREFIX` and answers exactly what it answers for the same files
//! in a local directory; `import` writes there with the same records, duplicates and sessions as into
//! a directory; an empty prefix, a missing bucket and an unknown session fail with one clear line;
//! `compact` and `verify` of an empty prefix say so instead of creating a directory named like the URL.

mod common;
#[path = "common/server.rs"]
mod server;

use common::s3::S3Server;
use common::{import, kubestep, sample_files, simulate, text};
use server::{TestServer, event_list, synthetic_event};

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
    // From the files' footers alone, as in a directory: no statement over the rows.
    let logged = std::process::Command::new(env!("CARGO_BIN_EXE_kubestep"))
        .args(["sessions", "-d", &remote, "--log-format", "json"])
        .envs(server.env())
        .env("KUBESTEP_LOG", "warn,kubestep_query::sql=debug")
        .output()
        .expect("running kubestep");
    assert!(logged.status.success(), "{:?}", text(&logged));
    assert!(!String::from_utf8_lossy(&logged.stderr).contains("\"statement\""), "{:?}", text(&logged));
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

    // compact and verify say an empty prefix holds no recording; neither creates anything named
    // after the URL.
    let cwd = tempfile::tempdir().unwrap();
    let url = server.url("w");
    for (command, expected) in [
        ("compact", "s3://empty/w is not a KubeStep recording"),
        ("verify", "s3://empty/w is not a KubeStep recording"),
    ] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubestep"))
            .args([command, "-d", &url])
            .envs(server.env())
            .current_dir(cwd.path())
            .output()
            .unwrap();
        let (_, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{command}: {stderr}");
        assert!(stderr.contains(expected), "{command}: {stderr}");
        assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0, "{command} created files");
    }
}

#[test]
fn verify_reads_every_file_in_a_bucket_and_finds_what_it_finds_in_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("recording");
    let (log, _) = simulate(tmp.path(), "mixed", "5", &["--events", "2000"]);
    assert!(import(&data, &[&log], &["-q", "--session", "s"]).status.success());
    let server = S3Server::start("checks");
    assert!(server.upload(&data, "ok") > 0);

    let report = |output: &std::process::Output| -> serde_json::Value {
        serde_json::from_slice(&output.stdout).unwrap_or_else(|_| panic!("{:?}", text(output)))
    };
    let local = kubestep(&["verify", "-d", data.to_str().unwrap(), "--format", "json"], None);
    assert!(local.status.success(), "{:?}", text(&local));
    let remote = server.kubestep(&["verify", "-d", &server.url("ok"), "--format", "json"]);
    assert!(remote.status.success(), "{:?}", text(&remote));
    let (local, remote) = (report(&local), report(&remote));
    for field in ["files", "rows", "sessions"] {
        assert_eq!(remote[field], local[field], "{field}");
    }
    assert!(local["rows"].as_u64().unwrap() > 1000);
    assert_eq!(remote["findings"], serde_json::json!([]));
    let text_out = server.kubestep(&["verify", "-d", &server.url("ok")]);
    assert!(String::from_utf8_lossy(&text_out.stdout).contains("ok: the recording is consistent"));

    // A second copy of a file under another name, and a file that is not Parquet: both errors,
    // named by their URL.
    let parquet = common::all_files(&data.join("operations"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    let partition = parquet.parent().unwrap();
    let copy = tmp.path().join("copy");
    std::fs::create_dir_all(copy.join(partition.strip_prefix(&data).unwrap())).unwrap();
    let relative = partition.strip_prefix(&data).unwrap();
    std::fs::copy(&parquet, copy.join(relative).join("zz-copy-1.parquet")).unwrap();
    std::fs::write(copy.join(relative).join("zz-garbage-1.parquet"), b"not parquet").unwrap();
    assert_eq!(server.upload(&copy, "ok"), 2);
    let output = server.kubestep(&["verify", "-d", &server.url("ok")]);
    let (stdout, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    let twice = format!("error: {}/zz-copy-1.parquet: ", server.url(&format!("ok/{}", relative.display())));
    assert!(stdout.contains(&twice) && stdout.contains("events stored more than once"), "{stdout}");
    let garbage =
        format!("error: {}/zz-garbage-1.parquet: cannot be read", server.url(&format!("ok/{}", relative.display())));
    assert!(stdout.contains(&garbage), "{stdout}");
    assert!(stdout.contains("2 errors"), "{stdout}");
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

/// The Parquet files left in a spool directory.
fn spooled_files(spool: &std::path::Path) -> usize {
    let operations = spool.join("operations");
    if !operations.exists() {
        return 0;
    }
    common::all_files(&operations).iter().filter(|p| p.extension().is_some_and(|e| e == "parquet")).count()
}

#[test]
fn serve_records_into_a_bucket_through_its_spool_and_loses_nothing_when_killed() {
    let s3 = S3Server::start("live");
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let url = s3.url("cluster");
    let count = |sql: &str| -> u64 {
        let output = s3.kubestep(&["sql", sql, "-d", &url, "--format", "csv"]);
        assert!(output.status.success(), "{:?}", text(&output));
        text(&output).0.lines().nth(1).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    };

    let mut service = TestServer::start_remote(&url, &spool, &s3.env(), &["--flush-interval", "1h"]);
    assert_eq!(service.post("/sessions", br#"{"name":"rollout"}"#).0, 201);
    let batch = event_list(&(0..30).map(|n| synthetic_event(&format!("r-{n}"), n)).collect::<Vec<_>>());
    assert_eq!(service.post("/audit", &batch).0, 200);
    // Stopping the session writes and uploads its files: the bucket answers at once.
    let stop = kubestep(&["session", "stop", "rollout", "--server", &service.base], None);
    assert!(stop.status.success(), "{:?}", text(&stop));
    assert_eq!(count("SELECT count(*) FROM operations WHERE session_id = 'rollout'"), 30);

    // Acknowledged batches survive a kill -9: the WAL on the spool is replayed, the files it left
    // are uploaded once, and nothing is stored twice.
    let more = event_list(&(100..160).map(|n| synthetic_event(&format!("k-{n}"), n)).collect::<Vec<_>>());
    assert_eq!(service.post("/audit", &more).0, 200);
    service.kill();
    let mut restarted = TestServer::start_remote(&url, &spool, &s3.env(), &["--flush-interval", "1h"]);
    assert!(restarted.log().contains("replayed the write-ahead log"), "{}", restarted.log());
    assert_eq!(restarted.terminate(), Some(0), "{}", restarted.log());
    assert_eq!(count("SELECT count(*) FROM operations WHERE audit_id LIKE 'k-%'"), 60);
    assert_eq!(count("SELECT count(*) FROM operations"), 90);
    assert_eq!(count("SELECT count(*) - count(DISTINCT audit_id) FROM operations"), 0);
    // After a clean stop nothing waits in the spool: every file is in the bucket.
    assert_eq!(spooled_files(&spool), 0);
}

#[test]
fn two_replicas_record_one_session_into_one_bucket_and_its_chains_cross_them() {
    let s3 = S3Server::start("fleet");
    let tmp = tempfile::tempdir().unwrap();
    let url = s3.url("prod");
    let (log, truth) = simulate(tmp.path(), "rollout", "21", &[]);
    let lines: Vec<String> = std::fs::read_to_string(&log).unwrap().lines().map(str::to_owned).collect();

    let flags = ["--flush-interval", "1h"];
    let mut a = TestServer::start_remote(&url, &tmp.path().join("spool-a"), &s3.env(), &flags);
    let mut b = TestServer::start_remote(&url, &tmp.path().join("spool-b"), &s3.env(), &flags);
    assert_eq!(a.post("/sessions", br#"{"name":"rollout"}"#).0, 201);
    // The other replica follows the registry in the bucket within about a second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while !b.get("/sessions").1.contains(r#""active":"rollout""#) {
        assert!(std::time::Instant::now() < deadline, "replica b never saw the session: {}", b.log());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (status, refused) = b.post("/sessions", br#"{"name":"other"}"#);
    assert_eq!(status, 409, "{refused}");
    assert!(refused.contains("rollout"), "{refused}");

    // The stream split by batch between the replicas, both posting at once. Small batches, so that
    // consecutive steps of a chain land on different replicas.
    const BATCH: usize = 3;
    let batches: Vec<Vec<u8>> = lines.chunks(BATCH).map(event_list).collect();
    std::thread::scope(|scope| {
        for (replica, parity) in [(&a, 0), (&b, 1)] {
            let batches = &batches;
            scope.spawn(move || {
                for batch in batches.iter().skip(parity).step_by(2) {
                    assert_eq!(replica.post("/audit", batch).0, 200);
                }
            });
        }
    });
    // Stopped through b: a learns it from the registry and writes its part too.
    let stop = kubestep(&["session", "stop", "rollout", "--server", &b.base], None);
    assert!(stop.status.success(), "{:?}", text(&stop));
    assert_eq!(a.terminate(), Some(0), "{}", a.log());
    assert_eq!(b.terminate(), Some(0), "{}", b.log());

    // Every event once, in one session, from both replicas' files.
    let local = tmp.path().join("local");
    assert!(import(&local, &[&log], &["-q", "--session", "rollout"]).status.success());
    let local_arg = local.display().to_string();
    let everything =
        "SELECT session_id, audit_id, stage, verb, resource_version FROM operations ORDER BY audit_id, stage";
    same_answer(&s3, &local_arg, &url, &["sql", everything, "--format", "csv"]);
    let (listing, _) = text(&s3.kubestep(&["sql", "SELECT count(*) FROM operations", "-d", &url, "--format", "csv"]));
    assert!(listing.lines().nth(1).is_some_and(|n| n.trim().parse::<u64>().unwrap_or(0) > 100), "{listing}");

    // The chains the scenario holds run across the replicas' halves.
    let output = s3.kubestep(&[
        "analyze",
        "causality",
        "--session",
        "rollout",
        "-d",
        &url,
        "--format",
        "json",
        "--chains",
        "100",
    ]);
    assert!(output.status.success(), "{:?}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let chains = common::report_chains(&report);
    let expected = common::truth_chains(&truth);
    assert!(!expected.is_empty());
    for chain in &expected {
        assert!(common::holds_chain(&chains, chain), "{chain:?} not in {chains:?}");
    }
    // Neither replica's half alone holds them all: the chains found cross the halves.
    for parity in [0, 1] {
        let half: Vec<String> = lines.chunks(BATCH).skip(parity).step_by(2).flatten().cloned().collect();
        let half_log = tmp.path().join(format!("half-{parity}.log"));
        std::fs::write(&half_log, half.join("\n")).unwrap();
        let dir = tmp.path().join(format!("half-{parity}"));
        assert!(import(&dir, &[&half_log], &["-q", "--session", "rollout"]).status.success());
        let d = dir.display().to_string();
        let output = kubestep(
            &["analyze", "causality", "--session", "rollout", "-d", &d, "--format", "json", "--chains", "100"],
            None,
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let half_chains = common::report_chains(&report);
        assert!(
            expected.iter().any(|chain| !common::holds_chain(&half_chains, chain)),
            "half {parity} alone holds every chain"
        );
    }
}
