//! `kubestep compact -d s3://...` against a real S3-compatible server (moto): small files merged with
//! the same answers as the uncompacted directory, queries running meanwhile see every row exactly
//! once, and what an interrupted compaction leaves in the journal holds queries up with a clear
//! line until the next `kubestep compact` finishes or rolls it back.

mod common;
#[path = "common/server.rs"]
mod server;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::s3::S3Server;
use common::{kubestep, text};
use server::import_small_files;

const PREFIX: &str = "rec";
const ALL_ROWS: &str = "SELECT * FROM operations ORDER BY received_at, audit_id, stage";

/// Imports small files into session `s` of the directory `data` and copies the recording to the
/// bucket.
fn small_files(server: &S3Server, data: &Path, files: u64, per_file: u64) {
    import_small_files(data, files, per_file);
    server.upload(data, PREFIX);
}

fn parquet_keys(server: &S3Server) -> Vec<String> {
    server.keys(&format!("{PREFIX}/operations")).into_iter().filter(|k| k.ends_with(".parquet")).collect()
}

fn journal_keys(server: &S3Server) -> Vec<String> {
    server.keys(&format!("{PREFIX}/compact"))
}

fn sql_csv(server: &S3Server, url: &str, sql: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_kubestep"));
    command.args(["sql", "--format", "csv", "-d", url, sql]).envs(server.env()).envs(env.iter().copied());
    command.output().unwrap()
}

#[test]
fn compacting_a_bucket_merges_small_files_and_every_answer_stays_the_same() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = S3Server::start("recordings");
    small_files(&server, &data, 12, 40);
    let url = server.url(PREFIX);
    assert_eq!(parquet_keys(&server).len(), 12);

    let output = server.kubestep(&["compact", "-d", &url, "--target-rows", "200"]);
    assert!(output.status.success(), "{:?}", text(&output));
    assert!(text(&output).0.contains("s "), "{:?}", text(&output));
    assert!(text(&output).0.contains("merged 12 files (480 rows) into 3"), "{:?}", text(&output));
    let keys = parquet_keys(&server);
    assert_eq!(keys.len(), 3, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with(&format!("{PREFIX}/operations/session_id=s/date="))), "{keys:?}");

    // The compacted bucket answers exactly what the untouched directory answers.
    let local = kubestep(&["sql", "--format", "csv", "-d", &data.display().to_string(), ALL_ROWS], None);
    let remote = sql_csv(&server, &url, ALL_ROWS, &[]);
    assert!(remote.status.success(), "{:?}", text(&remote));
    assert_eq!(text(&remote).0, text(&local).0);
    assert_eq!(text(&remote).0.lines().count(), 481);
    let causality = ["analyze", "causality", "--session", "s", "--format", "json"];
    let local = kubestep(&[&causality[..], &["-d", &data.display().to_string()]].concat(), None);
    let remote = server.kubestep(&[&causality[..], &["-d", &url]].concat());
    assert!(remote.status.success(), "{:?}", text(&remote));
    assert_eq!(text(&remote).0, text(&local).0);

    // The journal keeps one done entry per compacted partition, and the lock is gone.
    let journal = journal_keys(&server);
    assert_eq!(journal.len(), 1, "{journal:?}");
    assert!(journal[0].ends_with(".done"), "{journal:?}");
    let entry: serde_json::Value = serde_json::from_slice(&server.get(&journal[0]).unwrap()).unwrap();
    assert_eq!(entry["outcome"], "merged");
    assert_eq!(entry["inputs"].as_array().map(Vec::len), Some(12));
    assert_eq!(entry["outputs"].as_array().map(Vec::len), Some(3));

    // Nothing left to do; a session that is not there is one line.
    let again = server.kubestep(&["compact", "-d", &url, "--target-rows", "200"]);
    assert!(text(&again).0.contains("nothing to compact"), "{:?}", text(&again));
    assert_eq!(parquet_keys(&server).len(), 3);
    let unknown = server.kubestep(&["compact", "-d", &url, "--session", "nope"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown).1.contains("no session \"nope\""), "{:?}", text(&unknown));
    let empty = server.kubestep(&["compact", "-d", &server.url("nothing/here")]);
    assert_eq!(empty.status.code(), Some(1));
    assert!(text(&empty).1.contains("is not a KubeStep recording"), "{:?}", text(&empty));

    // A lock left behind by a compaction that died says what to do.
    server.put(&format!("{PREFIX}/compact/lock"), b"taken at 2026-01-01T00:00:00Z by process 1\n".to_vec());
    let busy = server.kubestep(&["compact", "-d", &url]);
    assert_eq!(busy.status.code(), Some(1));
    let err = text(&busy).1;
    assert!(err.contains("another `kubestep compact` holds") && err.contains("2026-01-01T00:00:00Z"), "{err}");
    assert!(err.contains("delete that object"), "{err}");
}

#[test]
fn queries_during_a_bucket_compaction_see_every_row_exactly_once() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Arc::new(S3Server::start("recordings"));
    small_files(&server, &data, 24, 25);
    let url = server.url(PREFIX);
    let total = 24 * 25;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (server, url, stop) = (server.clone(), url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut queries = 0;
            while !stop.load(Ordering::Relaxed) || queries < 5 {
                let output =
                    sql_csv(&server, &url, "SELECT count(*) AS n, count(DISTINCT audit_id) AS d FROM operations", &[]);
                assert!(output.status.success(), "query {queries} failed during compaction: {:?}", text(&output));
                assert_eq!(text(&output).0, format!("n,d\n{total},{total}\n"), "query {queries}");
                queries += 1;
            }
            queries
        })
    };
    for target in ["50", "100", "200", "400", "1000"] {
        let output = server.kubestep(&["compact", "-d", &url, "--target-rows", target]);
        assert!(output.status.success(), "{:?}", text(&output));
    }
    stop.store(true, Ordering::Relaxed);
    let queries = reader.join().unwrap();
    assert!(queries >= 5);
    assert_eq!(parquet_keys(&server).len(), 1);
    assert!(journal_keys(&server).iter().all(|k| k.ends_with(".done")));
}

#[test]
fn an_interrupted_compaction_holds_queries_up_until_the_next_run_finishes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = S3Server::start("recordings");
    small_files(&server, &data, 3, 10);
    let url = server.url(PREFIX);
    let count = "SELECT count(*) AS n FROM operations";
    let keys = parquet_keys(&server);
    let partition = keys[0].rsplit_once('/').map(|(dir, _)| dir.to_owned()).unwrap();
    let relative_partition = partition.strip_prefix(&format!("{PREFIX}/")).unwrap().to_owned();
    let name = |key: &str| key.rsplit('/').next().unwrap().to_owned();

    // A compaction that died after uploading its output and before deleting its input: the first
    // file's rows are there twice, under the output's name too.
    let output_name = "c-merged-000001.parquet";
    server.put(&format!("{partition}/{output_name}"), server.get(&keys[0]).unwrap());
    let journal = serde_json::json!({
        "partition": relative_partition,
        "inputs": [name(&keys[0])],
        "outputs": [output_name],
        "started_at": "2026-01-01T00:00:00Z",
    });
    server.put(&format!("{PREFIX}/compact/s-1.merging"), journal.to_string().into_bytes());

    let held = sql_csv(&server, &url, count, &[("KUBESTEP_COMPACTION_WAIT", "1")]);
    assert_eq!(held.status.code(), Some(1), "{:?}", text(&held));
    let err = text(&held).1;
    assert!(err.contains("compact/s-1.merging") && err.contains(&format!("kubestep compact -d {url}")), "{err}");
    let verified = server.kubestep(&["verify", "-d", &url]);
    assert!(!verified.status.success());
    assert!(text(&verified).0.contains("an unfinished compaction"), "{:?}", text(&verified));

    // The next run finishes it (every output is there: the input goes), then compacts as usual.
    let finished = server.kubestep(&["compact", "-d", &url, "--target-rows", "1000"]);
    assert!(finished.status.success(), "{:?}", text(&finished));
    assert!(text(&finished).0.contains("merged 3 files (30 rows) into 1"), "{:?}", text(&finished));
    let answer = sql_csv(&server, &url, count, &[]);
    assert_eq!(text(&answer).0, "n\n30\n", "{:?}", text(&answer));
    let done: serde_json::Value =
        serde_json::from_slice(&server.get(&format!("{PREFIX}/compact/s-1.done")).unwrap()).unwrap();
    assert!(done["outcome"].as_str().is_some_and(|o| o.starts_with("merged (finished")), "{done}");

    // One that died before its output was uploaded is rolled back: nothing is deleted.
    let keys = parquet_keys(&server);
    let journal = serde_json::json!({
        "partition": relative_partition,
        "inputs": [name(&keys[0])],
        "outputs": ["c-never-000001.parquet"],
        "started_at": "2026-01-01T00:00:00Z",
    });
    server.put(&format!("{PREFIX}/compact/s-2.merging"), journal.to_string().into_bytes());
    let rolled = server.kubestep(&["compact", "-d", &url]);
    assert!(rolled.status.success(), "{:?}", text(&rolled));
    assert_eq!(parquet_keys(&server), keys);
    let done: serde_json::Value =
        serde_json::from_slice(&server.get(&format!("{PREFIX}/compact/s-2.done")).unwrap()).unwrap();
    assert!(done["outcome"].as_str().is_some_and(|o| o.starts_with("rolled back")), "{done}");
    assert_eq!(text(&sql_csv(&server, &url, count, &[])).0, "n\n30\n");
    assert!(server.kubestep(&["verify", "-d", &url]).status.success());
}
