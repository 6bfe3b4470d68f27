//! The query commands on large sessions, side by side with DuckDB running the equivalent SQL over
//! the same Parquet files, in the same run.
//!
//! For each size (default one million operations; `KUBESTEP_QUERY_SIZES=1000000,10000000` for
//! more) a one-session recording is generated through the real ingest pipeline, then each of
//! `sessions`, `analyze` (every section) and the first page of `replay` is timed (median of 3) in
//! KubeStep's query layer and in DuckDB (`pip install duckdb`; threads limited to this machine's
//! cores). The report is the ratio KubeStep / DuckDB per command.
//!
//! Run: `cargo bench --bench query`.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use kubestep_ingest::{IngestConfig, Ingestor};
use kubestep_query::analyze::{AnalyzeOptions, analyze};
use kubestep_query::replay::{ReplayQuery, replay};

const SESSION: &str = "bench";
const CONTROLLERS: [&str; 6] = [
    "deployment-controller",
    "replicaset-controller",
    "endpointslice-controller",
    "garbage-collector",
    "statefulset-controller",
    "job-controller",
];

/// `n` operations of one session, written through the import pipeline in blocks.
fn generate(root: &Path, n: u64) {
    let config = IngestConfig { session: Some(SESSION.into()), ..IngestConfig::default() };
    let mut ingestor = Ingestor::new(root, "bench", config);
    let mut state: u64 = 7;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        state >> 33
    };
    let mut block = String::with_capacity(64 << 20);
    let mut lines = 0;
    let base_us: i64 = 1_714_554_000_000_000;
    for i in 0..n {
        let t = base_us + i as i64 * 1000;
        let at = |us: i64| {
            let s = us.div_euclid(1_000_000);
            let day = s / 86_400 - 19_844 + 1;
            format!(
                "2024-05-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
                s / 3600 % 24,
                s / 60 % 60,
                s % 60,
                us.rem_euclid(1_000_000)
            )
        };
        let latency = if next() % 100 == 0 { 1_500_000 } else { 1_000 + (next() % 50_000) as i64 };
        let controller = CONTROLLERS[(next() % 6) as usize];
        let object = next() % 500;
        let roll = next() % 100;
        let (verb, code, extra) = match roll {
            0..45 => ("get", 200, String::new()),
            45..55 => ("list", 200, String::new()),
            55..60 => ("watch", 200, String::new()),
            60..95 => (
                "update",
                200,
                format!(
                    r#","responseObject":{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"cm-{object}","namespace":"ns","uid":"uid-{object}","resourceVersion":"{i}"}},"data":{{"k":"{}"}}}}"#,
                    next() % 3
                ),
            ),
            _ => {
                ("update", 409, r#","responseStatus":{"code":409,"message":"the object has been modified"}"#.to_owned())
            }
        };
        let status = if code == 200 { r#","responseStatus":{"code":200}"# } else { "" };
        block.push_str(&format!(
            r#"{{"level":"RequestResponse","auditID":"{i:016x}","stage":"ResponseComplete","verb":"{verb}","requestURI":"/api/v1/namespaces/ns/configmaps/cm-{object}","user":{{"username":"system:serviceaccount:kube-system:{controller}"}},"userAgent":"kube-controller-manager/v1.30.2","objectRef":{{"resource":"configmaps","namespace":"ns","name":"cm-{object}","apiVersion":"v1"}}{status}{extra},"requestReceivedTimestamp":"{}","stageTimestamp":"{}"}}"#,
            at(t),
            at(t + latency)
        ));
        block.push('\n');
        if block.len() > 48 << 20 {
            ingestor.ingest_lines("generated", block.as_bytes(), lines).expect("ingesting");
            lines += block.lines().count();
            block.clear();
        }
    }
    ingestor.ingest_lines("generated", block.as_bytes(), lines).expect("ingesting");
    ingestor.finish().expect("writing");
}

fn median(mut runs: Vec<f64>) -> f64 {
    runs.sort_by(f64::total_cmp);
    runs[runs.len() / 2]
}

fn time<F: FnMut()>(mut f: F) -> f64 {
    let runs = (0..3)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64()
        })
        .collect();
    median(runs)
}

/// The DuckDB side: the same questions as SQL over the same files, timed inside Python.
const DUCKDB_SCRIPT: &str = r#"
import duckdb, sys, time, statistics
root, threads = sys.argv[1], int(sys.argv[2])
con = duckdb.connect()
con.execute(f"SET threads={threads}")
con.execute(f"CREATE VIEW operations AS SELECT * FROM read_parquet('{root}/operations/*/*/*.parquet', hive_partitioning=true)")
con.execute("""CREATE VIEW indexed_operations AS SELECT *, "index" + 1 AS sequence_number FROM (
  SELECT row_number() OVER (PARTITION BY session_id ORDER BY received_at, audit_id, stage) - 1 AS "index", * FROM operations)""")
sessions = """SELECT session_id, min(received_at), max(completed_at), count(*),
  sum(CASE WHEN verb IN ('create','update','patch','delete','deletecollection') THEN 1 ELSE 0 END),
  count(DISTINCT actor_id), sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END)
  FROM operations GROUP BY session_id ORDER BY 2, 1"""
analyze = [
  "SELECT count(*) FROM operations WHERE session_id = 'bench'",
  "SELECT \"index\", operation_type, kind, namespace, name, duration_ms, actor_id, received_at, status_code FROM indexed_operations WHERE session_id = 'bench' AND duration_ms >= 1000 AND verb <> 'watch' ORDER BY \"index\"",
  "SELECT \"index\", operation_type, kind, namespace, name FROM indexed_operations WHERE session_id = 'bench' ORDER BY \"index\"",
  "SELECT operation_type, count(*) FROM operations WHERE session_id = 'bench' AND error IS NOT NULL GROUP BY 1 ORDER BY 1",
  "SELECT status_code, count(*), min(\"index\"), max(\"index\") FROM indexed_operations WHERE session_id = 'bench' AND error IS NOT NULL GROUP BY 1 ORDER BY 2 DESC",
  "SELECT actor_id, count(*) FROM operations WHERE session_id = 'bench' AND error IS NOT NULL GROUP BY 1 ORDER BY 2 DESC",
  "WITH f AS (SELECT \"index\", error FROM indexed_operations WHERE session_id = 'bench' AND error IS NOT NULL) SELECT * FROM f WHERE \"index\" = (SELECT min(\"index\") FROM f) OR \"index\" = (SELECT max(\"index\") FROM f)",
]
replay = """SELECT "index", sequence_number, received_at, actor_id, user_agent, verb, operation_type, kind, namespace, name,
  subresource, uid, base_resource_version, resource_version, status_code, duration_ms, error, audit_id
  FROM indexed_operations WHERE session_id = 'bench' AND "index" >= 0 ORDER BY "index" LIMIT 100"""
def run(queries):
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        for q in queries:
            result = con.execute(q)
            (result.to_arrow_table() if hasattr(result, "to_arrow_table") else result.fetch_arrow_table())
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)
print(run([sessions]), run(analyze), run([replay]))
"#;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("query: skipped (run with `cargo bench --bench query`)");
        return;
    }
    let sizes: Vec<u64> = std::env::var("KUBESTEP_QUERY_SIZES")
        .unwrap_or_else(|_| "1000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let script = tempfile::NamedTempFile::new().expect("script");
    script.as_file().write_all(DUCKDB_SCRIPT.as_bytes()).expect("writing the DuckDB script");
    println!("{:>10}  {:<22} {:>10} {:>10} {:>8}", "operations", "command", "kubestep", "duckdb", "ratio");
    for n in sizes {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("data");
        let started = Instant::now();
        generate(&root, n);
        eprintln!("generated {n} operations in {:.1}s", started.elapsed().as_secs_f64());

        let ctx = runtime.block_on(kubestep_query::open_recording(&root)).expect("opening");
        let sessions = time(|| {
            runtime.block_on(kubestep_query::sessions::sessions(&ctx)).expect("sessions");
        });
        // The seed's sections, which the DuckDB script mirrors.
        let options = AnalyzeOptions {
            hot_loops: false,
            fights: false,
            conflicts: false,
            requeues: false,
            ..AnalyzeOptions::all()
        };
        let analyze = time(|| {
            runtime.block_on(analyze(&ctx, SESSION, &options)).expect("analyze");
        });
        let replay_page = time(|| {
            runtime.block_on(async {
                let query = ReplayQuery { session: SESSION.into(), limit: Some(100), ..ReplayQuery::default() };
                let mut steps = replay(&ctx, &query).await.expect("replay");
                while let Some(step) = steps.next().await {
                    step.expect("step");
                }
            });
        });

        let output = Command::new("python3")
            .arg(script.path())
            .arg(&root)
            .arg(cores.to_string())
            .output()
            .expect("running python3 (pip install duckdb)");
        let duck: Vec<f64> =
            String::from_utf8_lossy(&output.stdout).split_whitespace().filter_map(|s| s.parse().ok()).collect();
        if duck.len() != 3 {
            eprintln!("DuckDB run failed: {}", String::from_utf8_lossy(&output.stderr));
            continue;
        }
        for (name, ours, theirs) in [
            ("sessions", sessions, duck[0]),
            ("analyze (all sections)", analyze, duck[1]),
            ("replay first page", replay_page, duck[2]),
        ] {
            println!("{n:>10}  {name:<22} {:>9.3}s {:>9.3}s {:>7.2}x", ours, theirs, ours / theirs);
        }
    }
}
