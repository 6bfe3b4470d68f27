//! Distributed queries: `sql`, `analyze` and `analyze causality` with `--engine ballista://HOST:PORT`
//! run on a stock Ballista 55 scheduler and two executors, each a separate process on loopback, and
//! answer exactly what the local engine answers on the same recording, from a directory the
//! executors share and from a bucket they read themselves. A scheduler that is not there, or an
//! engine that is not one, is one clear line.

#[path = "common/ballista.rs"]
mod ballista;
mod common;

use ballista::BallistaCluster;
use common::s3::S3Server;
use common::{import, kubestep, simulate, text};

/// Runs `args` on the local engine and on `engine`; both must succeed with the same standard output.
fn same_answer(env: &[(&'static str, String)], engine: &str, args: &[&str]) -> Vec<u8> {
    let run = |engine: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubestep"))
            .args(args)
            .args(["--engine", engine])
            .envs(env.iter().cloned())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("running kubestep");
        assert!(output.status.success(), "{args:?} on {engine}: {:?}", text(&output));
        output.stdout
    };
    let local = run("local");
    let distributed = run(engine);
    assert_eq!(
        String::from_utf8_lossy(&distributed),
        String::from_utf8_lossy(&local),
        "{args:?}: the Ballista cluster answers differently"
    );
    local
}

/// A recording of the `mixed` scenario (loops, fights, conflicts, chains) in session `s`.
fn recording(dir: &std::path::Path) -> std::path::PathBuf {
    let data = dir.join("recording");
    let (log, _) = simulate(dir, "mixed", "11", &["--events", "4000"]);
    assert!(import(&data, &[&log], &["-q", "--session", "s"]).status.success());
    data
}

#[test]
fn a_ballista_cluster_of_two_executors_answers_as_the_local_engine() {
    let tmp = tempfile::tempdir().unwrap();
    let data = recording(tmp.path());
    let data = data.to_str().unwrap();
    let cluster = BallistaCluster::start(&tmp.path().join("cluster"), 2, &[]);
    let engine = cluster.engine();

    let analysis = same_answer(&[], &engine, &["analyze", "s", "-d", data, "--format", "json"]);
    let analysis: serde_json::Value = serde_json::from_slice(&analysis).unwrap();
    for section in ["hot_loops", "fights", "conflicts", "slow_operations"] {
        assert!(analysis[section].as_array().is_some_and(|s| !s.is_empty()), "the scenario has {section}: {analysis}");
    }
    same_answer(&[], &engine, &["analyze", "s", "-d", data]);
    let causality =
        same_answer(&[], &engine, &["analyze", "causality", "--session", "s", "-d", data, "--format", "json"]);
    let causality: serde_json::Value = serde_json::from_slice(&causality).unwrap();
    assert!(causality["chains"].as_array().is_some_and(|c| !c.is_empty()), "the scenario has chains");
    let per_actor = same_answer(
        &[],
        &engine,
        &[
            "sql",
            "SELECT actor_id, count(*) AS writes FROM writes GROUP BY actor_id ORDER BY writes DESC, actor_id",
            "-d",
            data,
            "--format",
            "csv",
        ],
    );
    assert!(String::from_utf8_lossy(&per_actor).lines().count() > 3);
    // A LIMIT over several partitions returns what it allows, no more.
    let first = same_answer(
        &[],
        &engine,
        &["sql", "SELECT audit_id FROM operations ORDER BY audit_id LIMIT 3", "-d", data, "--format", "csv"],
    );
    assert_eq!(String::from_utf8_lossy(&first).lines().count(), 4, "a header and 3 rows");
    let any_two = kubestep(
        &["sql", "SELECT verb FROM operations LIMIT 2", "-d", data, "--format", "csv", "--engine", &engine],
        None,
    );
    assert!(any_two.status.success(), "{:?}", text(&any_two));
    assert_eq!(String::from_utf8_lossy(&any_two.stdout).lines().count(), 3, "a header and 2 rows");

    let jobs = cluster.jobs_per_executor();
    assert!(jobs.iter().all(|n| *n > 0), "every executor ran tasks: {jobs:?}\n{}", cluster.logs());
}

#[test]
fn executors_read_a_recording_in_a_bucket_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let data = recording(tmp.path());
    let server = S3Server::start("fleet");
    assert!(server.upload(&data, "eu-1") > 0);
    // The cluster's processes get the bucket's credentials and endpoint the standard way; the
    // recording never touches their disks.
    let cluster = BallistaCluster::start(&tmp.path().join("cluster"), 2, &server.env());
    let remote = server.url("eu-1");

    let local = kubestep(&["analyze", "s", "-d", data.to_str().unwrap(), "--format", "json"], None);
    assert!(local.status.success(), "{:?}", text(&local));
    let distributed =
        same_answer(&server.env(), &cluster.engine(), &["analyze", "s", "-d", &remote, "--format", "json"]);
    assert_eq!(String::from_utf8_lossy(&distributed), String::from_utf8_lossy(&local.stdout));
    same_answer(&server.env(), &cluster.engine(), &["analyze", "causality", "--session", "s", "-d", &remote]);
}

#[test]
fn an_engine_that_is_not_there_or_not_one_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = recording(tmp.path());
    let data = data.to_str().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let engine = format!("ballista://127.0.0.1:{port}");

    let output = kubestep(&["analyze", "s", "-d", data, "--engine", &engine], None);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.starts_with(&format!("Error: cannot reach the Ballista scheduler at {engine}: ")), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");

    let output = kubestep(&["sql", "SELECT 1", "-d", data, "--engine", "spark://x"], None);
    let (_, stderr) = text(&output);
    assert!(!output.status.success());
    assert!(stderr.contains("unknown engine \"spark://x\": expected `local` or `ballista://HOST:PORT`"), "{stderr}");

    // KUBESTEP_ENGINE says the same as the flag.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_kubestep"))
        .args(["analyze", "causality", "--session", "s", "-d", data])
        .env("KUBESTEP_ENGINE", &engine)
        .output()
        .expect("running kubestep");
    assert!(!output.status.success());
    assert!(text(&output).1.contains("cannot reach the Ballista scheduler"), "{:?}", text(&output));
}
