//! The performance report: KubeStep against what a user could do instead, on the same data, in the
//! same run. `docs/PERFORMANCE.md` explains the method and keeps the latest table.
//!
//! For each dataset — the simulator's `mixed` scenario at every size of `KUBESTEP_REPORT_SIZES`
//! (default `1000000,10000000`) and the real-sample mix (the events of `../shared/audit-samples`,
//! repeated with fresh audit IDs up to `KUBESTEP_REPORT_SAMPLE_EVENTS`, default 1000000; `0` skips
//! it) — the harness measures:
//!
//! - ingest: the parse floor (`serde_json` skipping every event), the log backend (the same lines
//!   written to a file and fsynced), `kubestep import` (the release binary), DuckDB converting the
//!   JSON lines to zstd Parquet, and (for the first size of each kind) the webhook end to end:
//!   closed loop at several concurrencies with fsync acknowledgements, then overload with the
//!   server's peak RSS;
//! - storage: bytes per event in our Parquet, in the raw JSON lines and in gzip'd JSON lines;
//! - queries: every query command as a user runs it (the release binary: median wall time of 3 and
//!   peak RSS), next to DuckDB running the very statements that command ran (captured from its SQL
//!   log, `kubestep_query::sql`; where `analyze causality` streams the session into its own pass
//!   for its edges, DuckDB runs the view's SQL of each kind of edge, and where `analyze` streams the
//!   successful writes for its hot-loop and fight candidates, the `hot_loops` and
//!   `fight_candidates` views, and where it counts conflict storms and requeue loops in its walk
//!   over the session, the walk's statement and the `conflict_storms` and `error_requeues` views)
//!   over the same Parquet files (median
//!   of 3 on one connection, and for commands under 2 s also from a new connection each run), and over
//!   the raw JSON lines shaped by
//!   `benches/report/operations_from_json.sql` (up to `KUBESTEP_REPORT_JSON_QUERY_MAX` events,
//!   default 2000000: each of those statements re-reads the whole log).
//!
//! A DuckDB command still running after `KUBESTEP_REPORT_DUCKDB_TIMEOUT` seconds (default 600) is
//! interrupted and reported as such.
//!
//! Work files go to `KUBESTEP_REPORT_DIR` (default: the system temp dir) and are removed after each
//! dataset; the report is printed and saved there as `report.md`. DuckDB comes from PyPI
//! (`pip install duckdb`) and gets as many threads as this machine has cores.
//!
//! Run: `cargo bench --bench report` (about an hour on 2 cores with the default sizes).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::IgnoredAny;
use serde_json::{Value, json};

#[path = "common/loadgen.rs"]
mod loadgen;

const SESSION: &str = "bench";
const KUBESTEP: &str = env!("CARGO_BIN_EXE_kubestep");
const MIB: f64 = 1024.0 * 1024.0;
/// DuckDB commands faster than this (median on one connection) are also timed from a new
/// connection per run: a `kubestep` command is a new process, so for short ones what DuckDB keeps
/// between statements of one connection (file metadata) is most of the difference.
const FRESH_BELOW_SECONDS: f64 = 2.0;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(default)
}

/// One input of the report: audit events as JSON lines.
struct Dataset {
    name: String,
    log: PathBuf,
    events: u64,
    bytes: u64,
    /// Whether the webhook is measured on this one (the first size of each kind).
    webhook: bool,
}

/// The report being written: markdown, printed as it grows.
#[derive(Default)]
struct Report(String);

impl Report {
    fn line(&mut self, text: impl AsRef<str>) {
        println!("{}", text.as_ref());
        self.0.push_str(text.as_ref());
        self.0.push('\n');
    }
}

/// Wall time and peak RSS of one child process.
struct Run {
    seconds: f64,
    peak_rss: u64,
}

/// Runs `command` to completion with its output discarded (stderr kept when `stderr` is set),
/// measuring its wall time and its peak RSS. The peak is the process's own high-water mark
/// (`VmHWM`), polled while it runs: `getrusage` of a child would count the RSS this harness had
/// when it forked.
fn run_measured(command: &mut Command, stderr: Option<&mut Vec<u8>>) -> Run {
    command.stdout(Stdio::null()).stderr(if stderr.is_some() { Stdio::piped() } else { Stdio::inherit() });
    let started = Instant::now();
    let mut child = command.spawn().unwrap_or_else(|e| panic!("starting {command:?}: {e}"));
    let reader = child.stderr.take().map(|mut err| {
        std::thread::spawn(move || {
            let mut captured = Vec::new();
            let _ = err.read_to_end(&mut captured);
            captured
        })
    });
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_rss = 0;
    let status = loop {
        let hwm = std::fs::read_to_string(&status_file).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        });
        peak_rss = peak_rss.max(hwm.unwrap_or(0) * 1024);
        match child.try_wait().expect("waiting for a child") {
            Some(status) => break status,
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    let seconds = started.elapsed().as_secs_f64();
    let captured = reader.map(|r| r.join().expect("stderr reader")).unwrap_or_default();
    assert!(status.success(), "{command:?} failed ({status}): {}", String::from_utf8_lossy(&captured));
    if let Some(out) = stderr {
        *out = captured;
    }
    Run { seconds, peak_rss }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// The simulator's `mixed` scenario, `events` of them, as JSON lines.
fn mixed_dataset(work: &Path, events: u64, webhook: bool) -> Dataset {
    let log = work.join(format!("mixed-{events}.jsonl"));
    let started = Instant::now();
    run_measured(
        Command::new(KUBESTEP)
            .args(["simulate", "--scenario", "mixed", "--seed", "1", "--events"])
            .arg(events.to_string())
            .arg("--out")
            .arg(&log),
        None,
    );
    eprintln!("generated {} in {:.0}s", log.display(), started.elapsed().as_secs_f64());
    let (count, bytes) = count_lines(&log);
    Dataset { name: format!("mixed, {count} events"), log, events: count, bytes, webhook }
}

/// The real samples' events, repeated with fresh audit IDs up to `target` events, as JSON lines.
fn samples_dataset(work: &Path, target: u64) -> Dataset {
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/audit-samples");
    let mut events: Vec<Value> = Vec::new();
    let mut files: Vec<PathBuf> =
        std::fs::read_dir(&samples).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    files.sort();
    for file in files.iter().filter(|f| f.is_file()) {
        let Ok(bytes) = std::fs::read(file) else { continue };
        let mut sink = CollectSink(Vec::new());
        kubestep_ingest::decode::decode(&bytes, &mut sink);
        // Only what `kubestep import` accepts: some samples lack the stage or the timestamps.
        let complete = |e: &Value| {
            ["auditID", "verb", "stage"].iter().all(|f| e.get(f).is_some())
                && (e.get("requestReceivedTimestamp").is_some() || e.get("timestamp").is_some())
        };
        events.extend(sink.0.into_iter().filter(complete));
    }
    assert!(!events.is_empty(), "no events found in {}", samples.display());
    let log = work.join("samples.jsonl");
    let mut out = BufWriter::new(File::create(&log).expect("creating the samples log"));
    for i in 0..target {
        let mut event = events[i as usize % events.len()].clone();
        let round = i / events.len() as u64;
        let id = event.get("auditID").and_then(Value::as_str).unwrap_or("").to_owned();
        event["auditID"] = Value::String(format!("{id}-{i}"));
        // Each round is a later copy of the samples on other objects: times move on by a second
        // per round and names get the round as a suffix, so the data does not repeat verbatim.
        for field in ["requestReceivedTimestamp", "stageTimestamp", "timestamp"] {
            let shifted = event
                .get(field)
                .and_then(Value::as_str)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| {
                    (t + chrono::Duration::seconds(round as i64)).to_utc().format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
                });
            if let Some(shifted) = shifted {
                event[field] = Value::String(shifted);
            }
        }
        if let Some(name) = event.pointer_mut("/objectRef/name")
            && let Some(text) = name.as_str()
        {
            *name = Value::String(format!("{text}-{round}"));
        }
        serde_json::to_writer(&mut out, &event).expect("writing the samples log");
        out.write_all(b"\n").expect("writing the samples log");
    }
    out.flush().expect("writing the samples log");
    let (count, bytes) = count_lines(&log);
    Dataset {
        name: format!("real-sample mix ({} distinct events), {count} events", events.len()),
        log,
        events: count,
        bytes,
        webhook: true,
    }
}

/// Collects decoded events as JSON values.
struct CollectSink(Vec<Value>);

impl kubestep_ingest::decode::EventSink for CollectSink {
    fn on_event(&mut self, _: kubestep_ingest::decode::Location, _: kubestep_schemas::audit::Event<'_>, raw: &[u8]) {
        if let Ok(value) = serde_json::from_slice(raw) {
            self.0.push(value);
        }
    }
    fn on_reject(&mut self, _: kubestep_ingest::decode::Location, _: String, _: &[u8]) {}
}

fn count_lines(path: &Path) -> (u64, u64) {
    let reader = BufReader::with_capacity(1 << 20, File::open(path).expect("opening the log"));
    let (mut lines, mut bytes) = (0, 0);
    for line in reader.split(b'\n') {
        let line = line.expect("reading the log");
        bytes += line.len() as u64 + 1;
        lines += u64::from(!line.is_empty());
    }
    (lines, bytes)
}

/// The parse floor: every line parsed by `serde_json` into nothing. Seconds.
fn parse_floor(d: &Dataset) -> f64 {
    let started = Instant::now();
    let reader = BufReader::with_capacity(1 << 20, File::open(&d.log).expect("opening the log"));
    for line in reader.split(b'\n') {
        let line = line.expect("reading the log");
        if !line.is_empty() {
            let _: IgnoredAny = serde_json::from_slice(&line).expect("generated events are JSON");
        }
    }
    started.elapsed().as_secs_f64()
}

/// What the API server's log backend does: append the lines to a file (buffered) and fsync it.
/// At most `cap` bytes are written (the rate is what counts). Returns (bytes, seconds).
fn log_backend(d: &Dataset, work: &Path, cap: u64) -> (u64, f64) {
    let target = work.join("log-backend.jsonl");
    let mut input = BufReader::with_capacity(1 << 20, File::open(&d.log).expect("opening the log"));
    let started = Instant::now();
    let mut out = BufWriter::with_capacity(1 << 20, File::create(&target).expect("creating the copy"));
    let mut written = 0;
    let mut line = Vec::new();
    while written < cap {
        line.clear();
        if input.read_until(b'\n', &mut line).expect("reading the log") == 0 {
            break;
        }
        out.write_all(&line).expect("writing the copy");
        written += line.len() as u64;
    }
    let file = out.into_inner().expect("flushing the copy");
    file.sync_all().expect("fsync");
    let seconds = started.elapsed().as_secs_f64();
    std::fs::remove_file(&target).ok();
    (written, seconds)
}

/// gzip (level 6, gzip's default) of the log, on every core: the log is cut into one slice per
/// core, each compressed as its own gzip member (concatenated members are one valid gzip file).
/// Returns the compressed size.
fn gzip_size(d: &Dataset, cores: usize) -> u64 {
    let slice = d.bytes.div_ceil(cores as u64);
    let threads: Vec<_> = (0..cores as u64)
        .map(|i| {
            let path = d.log.clone();
            std::thread::spawn(move || {
                let mut file = File::open(path).expect("opening the log");
                std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(i * slice)).expect("seeking");
                let mut reader = file.take(slice);
                let mut encoder = flate2::write::GzEncoder::new(CountingSink(0), flate2::Compression::new(6));
                std::io::copy(&mut reader, &mut encoder).expect("compressing");
                encoder.finish().expect("compressing").0
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().expect("gzip thread")).sum()
}

struct CountingSink(u64);

impl Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs a Python snippet with DuckDB; returns its stdout.
fn python(args: &[&str]) -> String {
    let output = Command::new("python3").args(args).output().expect("running python3 (pip install duckdb)");
    assert!(output.status.success(), "python3 failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// DuckDB converting the JSON lines to zstd Parquet: (seconds, bytes written).
fn duckdb_convert(d: &Dataset, work: &Path, cores: usize) -> (f64, u64) {
    let target = work.join("duckdb.parquet");
    let script = format!(
        "import duckdb, time\ncon = duckdb.connect()\ncon.execute('SET threads = {cores}')\ncon.execute('SET enable_progress_bar = false')\nt = time.perf_counter()\n\
         con.execute(\"COPY (SELECT * FROM read_json('{}', format = 'newline_delimited', ignore_errors = true)) TO '{}' (FORMAT parquet, COMPRESSION zstd)\")\n\
         print(time.perf_counter() - t)",
        d.log.display(),
        target.display()
    );
    let out = python(&["-c", &script]);
    let seconds = out.lines().last().unwrap_or("").trim().parse().expect("DuckDB's conversion time");
    let bytes = std::fs::metadata(&target).map_or(0, |m| m.len());
    std::fs::remove_file(&target).ok();
    (seconds, bytes)
}

/// A query command as a user types it, and the statements it ran (from its SQL log).
struct QueryCommand {
    name: &'static str,
    args: Vec<String>,
    /// What DuckDB runs when the command runs no SQL (`sessions` reading the files' footers).
    equivalent: Option<&'static str>,
    statements: Vec<Value>,
    seconds: f64,
    peak_rss: u64,
}

fn query_commands(data: &Path) -> Vec<QueryCommand> {
    let d = data.display().to_string();
    let sql = |q: &str| vec!["sql".to_owned(), "-d".into(), d.clone(), q.to_owned()];
    let cmd = |name, args: &[&str]| QueryCommand {
        name,
        args: args.iter().map(|a| a.to_string()).collect(),
        equivalent: None,
        statements: Vec::new(),
        seconds: 0.0,
        peak_rss: 0,
    };
    let mut commands = vec![
        QueryCommand {
            equivalent: Some(kubestep_query::sessions::SESSIONS_SQL),
            ..cmd("sessions (from the files' footers)", &["sessions", "-d", &d])
        },
        cmd("replay, first page (100 steps)", &["replay", SESSION, "-d", &d, "--limit", "100"]),
        cmd("analyze, every section", &["analyze", SESSION, "-d", &d]),
        cmd("analyze causality", &["analyze", "causality", "--session", SESSION, "-d", &d]),
    ];
    // Its comment dropped: a command-line argument that starts with `--` reads as a flag.
    let sessions_statement: String = kubestep_query::sessions::SESSIONS_SQL
        .lines()
        .filter(|line| !line.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for (name, q) in [
        ("sql: the `sessions` statement over the rows", sessions_statement.as_str()),
        (
            "sql: writes per actor per minute",
            "SELECT actor_id, date_trunc('minute', received_at) AS minute, count(*) AS writes \
             FROM writes GROUP BY actor_id, date_trunc('minute', received_at) ORDER BY minute, actor_id",
        ),
        (
            "sql: objects written by more than one actor",
            "SELECT kind, namespace, name, count(DISTINCT actor_id) AS actors, count(*) AS writes FROM writes \
             WHERE error IS NULL GROUP BY kind, namespace, name HAVING count(DISTINCT actor_id) > 1 \
             ORDER BY actors DESC, writes DESC, kind, namespace, name",
        ),
        (
            "sql: slowest 10 calls per verb",
            "SELECT verb, rank, kind, namespace, name, actor_id, duration_ms FROM (SELECT verb, kind, namespace, \
             name, actor_id, duration_ms, row_number() OVER (PARTITION BY verb ORDER BY duration_ms DESC, audit_id) \
             AS rank FROM operations) WHERE rank <= 10 ORDER BY verb, rank",
        ),
    ] {
        commands.push(QueryCommand { args: sql(q), ..cmd(name, &[]) });
    }
    commands
}

/// Runs each command once with the SQL log on (to capture its statements), then three times
/// measured.
fn run_queries(commands: &mut [QueryCommand]) {
    for c in commands.iter_mut() {
        let mut stderr = Vec::new();
        run_measured(
            Command::new(KUBESTEP)
                .args(&c.args)
                .args(["--log-format", "json"])
                .env("KUBESTEP_LOG", "warn,kubestep_query::sql=debug"),
            Some(&mut stderr),
        );
        c.statements = String::from_utf8_lossy(&stderr)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|l| {
                let fields = l.get("fields")?;
                let sql = fields.get("sql")?.as_str()?.to_owned();
                let params: Value = fields
                    .get("params")
                    .and_then(Value::as_str)
                    .and_then(|p| serde_json::from_str(p).ok())
                    .unwrap_or(json!([]));
                Some(json!({ "sql": sql, "params": params }))
            })
            .collect();
        if c.statements.is_empty()
            && let Some(sql) = c.equivalent
        {
            c.statements.push(json!({ "sql": sql, "params": [] }));
        }
        assert!(!c.statements.is_empty(), "{}: no statements in the SQL log", c.name);
        // `analyze causality` finds its edges in a pass over the session streamed in order;
        // DuckDB gets the SQL that asks the same questions (one statement per kind of edge, with
        // the stream's parameters) instead of that stream.
        let options = kubestep_query::causality::CausalityOptions::default();
        c.statements = std::mem::take(&mut c.statements)
            .into_iter()
            .flat_map(|statement| {
                // Likewise `analyze` finds its hot-loop and fight candidates in a pass over the
                // session's successful writes: DuckDB gets the two views for the session.
                if statement["sql"].as_str() == Some(kubestep_query::candidates::SUCCESSFUL_WRITES_SQL) {
                    let options = kubestep_query::behaviour::BehaviourOptions::default();
                    return kubestep_query::candidates::views_sql(&options)
                        .into_iter()
                        .map(|sql| json!({ "sql": sql, "params": statement["params"].clone() }))
                        .collect();
                }
                // And it counts conflict storms and requeue loops in its walk over the session:
                // DuckDB runs the walk's statement and the two views for the session.
                if statement["sql"].as_str() == Some(kubestep_query::analyze::SESSION_WALK_SQL) {
                    let options = kubestep_query::behaviour::BehaviourOptions::default();
                    let session = json!([statement["params"][0].clone()]);
                    let views = kubestep_query::behaviour::repeated_failures_views_sql(&options)
                        .into_iter()
                        .map(|sql| json!({ "sql": sql, "params": session.clone() }));
                    return std::iter::once(statement).chain(views).collect();
                }
                if statement["sql"].as_str() == Some(kubestep_query::causality::STEPS_SQL) {
                    kubestep_query::causality::EDGE_KINDS
                        .iter()
                        .map(|kind| {
                            let sql = kubestep_query::causality::edges_sql(&options, kind);
                            json!({ "sql": sql, "params": statement["params"].clone() })
                        })
                        .collect()
                } else {
                    vec![statement]
                }
            })
            .collect();
        let runs: Vec<Run> = (0..3)
            .map(|_| run_measured(Command::new(KUBESTEP).args(&c.args).env("KUBESTEP_LOG", "warn"), None))
            .collect();
        c.seconds = median(runs.iter().map(|r| r.seconds).collect());
        c.peak_rss = runs.iter().map(|r| r.peak_rss).max().unwrap_or(0);
        eprintln!("{}: {:.3}s, {} statements", c.name, c.seconds, c.statements.len());
    }
}

/// KubeStep's documented views with their default thresholds, for DuckDB.
fn view_statements() -> Vec<String> {
    kubestep_query::views::VIEWS
        .iter()
        .map(|(name, sql)| {
            format!(
                "CREATE OR REPLACE VIEW {name} AS\n{}",
                kubestep_query::views::fill(sql, &kubestep_query::views::DEFAULT_THRESHOLDS)
            )
        })
        .collect()
}

/// Runs the commands' statements in DuckDB after `setup`; per command (seconds, rows) or an error,
/// and DuckDB's peak RSS.
/// Runs `commands` in DuckDB after `setup`, `runs` times each on one connection; a command faster
/// than `fresh_below_seconds` is also timed from a new connection per run.
fn duckdb_queries(
    work: &Path,
    setup: Vec<String>,
    commands: &[QueryCommand],
    runs: usize,
    cores: usize,
    fresh_below_seconds: f64,
) -> Value {
    let workload = json!({
        "threads": cores,
        "runs": runs,
        "fresh_below_seconds": fresh_below_seconds,
        "timeout_seconds": env_or("KUBESTEP_REPORT_DUCKDB_TIMEOUT", 600u64),
        "temp_directory": work.join("duckdb-temp"),
        "max_temp_gb": env_or("KUBESTEP_REPORT_DUCKDB_TEMP_GB", 8u64),
        "setup": setup,
        "commands": commands.iter().map(|c| json!({ "name": c.name, "statements": c.statements })).collect::<Vec<_>>(),
    });
    let path = work.join("workload.json");
    std::fs::write(&path, workload.to_string()).expect("writing the DuckDB workload");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/report/duckdb_side.py");
    let out = python(&[&script.display().to_string(), &path.display().to_string()]);
    serde_json::from_str(out.lines().last().unwrap_or("")).expect("the DuckDB side's JSON")
}

/// A DuckDB figure of `result` (`seconds` or `fresh_seconds`) for command `name`, and our time's
/// ratio to it.
fn duck_cell(result: &Value, name: &str, figure: &str, ours: f64) -> (String, String) {
    match result.get(name) {
        Some(r) if r.get(figure).is_some() => {
            let s = r[figure].as_f64().unwrap_or(f64::NAN);
            (format!("{s:.3} s"), format!("{:.2}x", ours / s))
        }
        Some(r) if r.get("error").is_some() => {
            (format!("failed: {}", r.get("error").and_then(Value::as_str).unwrap_or("?")), "-".into())
        }
        Some(_) => ("-".into(), "-".into()),
        None => ("not run".into(), "-".into()),
    }
}

/// The webhook end to end, fed the dataset's first events: closed loop at several concurrencies,
/// then overload. Rows for the ingest table.
fn webhook(
    d: &Dataset,
    work: &Path,
    seconds: u64,
    cores: usize,
    floor_rate: f64,
    import_rate: f64,
    report: &mut Report,
) {
    let mut head = Vec::new();
    File::open(&d.log).expect("opening the log").take(160 << 20).read_to_end(&mut head).expect("reading the log");
    let events: Vec<&[u8]> = head.split(|&b| b == b'\n').filter(|l| l.ends_with(b"}")).collect();
    let max_clients = 32;
    let bodies: Arc<Vec<Mutex<loadgen::Bodies>>> =
        Arc::new((0..max_clients).map(|c| Mutex::new(loadgen::Bodies::new(&events, c))).collect());
    let data = work.join("served");
    std::fs::remove_dir_all(&data).ok();
    let server = loadgen::Server::start(&data);
    let phase = Duration::from_secs(seconds);
    for clients in [1, 4, 8] {
        let cpu = server.cpu_seconds();
        let (mut o, _) = loadgen::drive(&server.url, &bodies, clients, phase, None, None);
        let server_cores = (server.cpu_seconds() - cpu) / o.seconds;
        let rate = o.rate();
        report.line(format!(
            "| webhook, {clients} connection(s), fsync acks | {rate:.0} events/s ({:.0} per core; {:.0} per server CPU-second) | ack p50 {:.1} ms, p99 {:.1} ms; {} refused | {:.2}x floor, {:.2}x import |",
            rate / cores as f64,
            rate / server_cores,
            o.percentile_ms(0.5),
            o.percentile_ms(0.99),
            o.unavailable,
            rate / floor_rate,
            rate / import_rate
        ));
    }
    let (mut o, peak) = loadgen::drive(&server.url, &bodies, max_clients, phase * 2, None, Some(&server));
    report.line(format!(
        "| webhook overload, {max_clients} connections | {:.0} events/s | ack p99 {:.1} ms; {} refused (503); **peak server RSS {:.0} MiB** | {:.2}x import |",
        o.rate(),
        o.percentile_ms(0.99),
        o.unavailable,
        peak as f64 / MIB,
        o.rate() / import_rate
    ));
    server.stop();
    std::fs::remove_dir_all(&data).ok();
}

fn measure(d: &Dataset, work: &Path, cores: usize, report: &mut Report) {
    let mb = d.bytes as f64 / 1e6;
    report.line(format!("\n## {}\n", d.name));
    report.line(format!(
        "JSON lines: {:.1} MB, {:.0} bytes per event on average.\n",
        mb,
        d.bytes as f64 / d.events as f64
    ));

    // Ingest.
    let floor = parse_floor(d);
    let floor_rate = d.events as f64 / floor;
    let (log_bytes, log_seconds) = log_backend(d, work, 2 << 30);
    let data = work.join("data");
    // A fresh recording: a run that was stopped may have left one behind.
    std::fs::remove_dir_all(&data).ok();
    let import = run_measured(
        Command::new(KUBESTEP).args(["import", "-q", "--session", SESSION, "-d"]).arg(&data).arg(&d.log),
        None,
    );
    let import_rate = d.events as f64 / import.seconds;
    let (duck_convert, duck_parquet) = duckdb_convert(d, work, cores);
    report.line("| ingest | rate | detail | ratio |");
    report.line("|---|---|---|---|");
    report.line(format!(
        "| parse floor (`serde_json` into `IgnoredAny`) | {:.0} MB/s, {floor_rate:.0} events/s | one core | 1 |",
        mb / floor
    ));
    report.line(format!(
        "| log backend (JSON lines appended, fsynced) | {:.0} MB/s | {:.0} MB written | {:.2}x floor |",
        log_bytes as f64 / 1e6 / log_seconds,
        log_bytes as f64 / 1e6,
        (log_bytes as f64 / log_seconds) / (d.bytes as f64 / floor)
    ));
    report.line(format!(
        "| `kubestep import` | {:.0} MB/s, {import_rate:.0} events/s | peak RSS {:.0} MiB | **{:.2}x floor**, **{:.1}x DuckDB** |",
        mb / import.seconds,
        import.peak_rss as f64 / MIB,
        floor / import.seconds,
        duck_convert / import.seconds
    ));
    report.line(format!(
        "| DuckDB `COPY (read_json(...)) TO ... (FORMAT parquet, COMPRESSION zstd)` | {:.0} MB/s | {cores} threads | {:.2}x floor |",
        mb / duck_convert,
        floor / duck_convert
    ));
    if d.webhook {
        webhook(d, work, env_or("KUBESTEP_REPORT_LOAD_SECONDS", 8), cores, floor_rate, import_rate, report);
    }

    // Storage.
    let ours = dir_bytes(&data.join("operations"));
    let gzip = gzip_size(d, cores);
    let per = |b: u64| b as f64 / d.events as f64;
    report.line("\n| storage | bytes per event | of the JSON lines |");
    report.line("|---|---|---|");
    report.line(format!("| JSON lines | {:.0} | 1 |", per(d.bytes)));
    report.line(format!("| gzip'd JSON lines (level 6) | {:.0} | {:.3} |", per(gzip), gzip as f64 / d.bytes as f64));
    report.line(format!(
        "| **KubeStep Parquet** (zstd, objects kept) | **{:.0}** | **{:.3}** ({:.2}x gzip) |",
        per(ours),
        ours as f64 / d.bytes as f64,
        ours as f64 / gzip as f64
    ));
    report.line(format!(
        "| DuckDB's Parquet of the same JSON (zstd) | {:.0} | {:.3} |",
        per(duck_parquet),
        duck_parquet as f64 / d.bytes as f64
    ));

    // Queries.
    let mut commands = query_commands(&data);
    run_queries(&mut commands);
    let operations_dir = data.join("operations");
    let mut parquet_setup = vec![format!(
        "CREATE OR REPLACE VIEW operations AS SELECT * FROM read_parquet('{}/*/*/*.parquet', hive_partitioning = true)",
        operations_dir.display()
    )];
    parquet_setup.extend(view_statements());
    let on_parquet = duckdb_queries(work, parquet_setup, &commands, 3, cores, FRESH_BELOW_SECONDS);
    let on_json = if d.events <= env_or("KUBESTEP_REPORT_JSON_QUERY_MAX", 2_000_000) {
        let shaping = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/report/operations_from_json.sql"),
        )
        .expect("reading operations_from_json.sql")
        .replace("{path}", &d.log.display().to_string())
        .replace("{session}", SESSION);
        let mut setup = vec![shaping];
        setup.extend(view_statements());
        duckdb_queries(work, setup, &commands, 1, cores, 0.0)
    } else {
        json!({})
    };
    report.line(
        "\n| query command | kubestep (CLI, wall) | peak RSS | DuckDB on our Parquet | ratio | DuckDB, new connection | ratio | DuckDB on the JSON lines | kubestep faster by |",
    );
    report.line("|---|---|---|---|---|---|---|---|---|");
    for c in &commands {
        let (parquet, ratio) = duck_cell(&on_parquet, c.name, "seconds", c.seconds);
        let (fresh, fresh_ratio) = duck_cell(&on_parquet, c.name, "fresh_seconds", c.seconds);
        let (raw, raw_ratio) = duck_cell(&on_json, c.name, "seconds", c.seconds);
        // From the seconds themselves: the inverse of the rounded ratio would say 10.0x for 9.9x.
        let faster = match on_json.get(c.name).and_then(|r| r.get("seconds")).and_then(Value::as_f64) {
            Some(duckdb) if c.seconds > 0.0 => format!("{:.1}x", duckdb / c.seconds),
            _ => raw_ratio,
        };
        report.line(format!(
            "| {} ({} statements) | {:.3} s | {:.0} MiB | {parquet} | **{ratio}** | {fresh} | {fresh_ratio} | {raw} | {faster} |",
            c.name,
            c.statements.len(),
            c.seconds,
            c.peak_rss as f64 / MIB
        ));
    }
    report.line(format!(
        "\nDuckDB's peak RSS: {:.0} MiB over our Parquet, {}.",
        on_parquet["peak_rss_bytes"].as_f64().unwrap_or(0.0) / MIB,
        on_json["peak_rss_bytes"]
            .as_f64()
            .map_or("not run over the JSON lines".to_owned(), |b| format!("{:.0} MiB over the JSON lines", b / MIB))
    ));
    std::fs::remove_dir_all(&data).ok();
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("report: skipped (run with `cargo bench --bench report`)");
        return;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let work_root: PathBuf = std::env::var_os("KUBESTEP_REPORT_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let work = work_root.join("kubestep-report");
    std::fs::create_dir_all(&work).expect("creating the work directory");
    let sizes: Vec<u64> = std::env::var("KUBESTEP_REPORT_SIZES")
        .unwrap_or_else(|_| "1000000,10000000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut report = Report::default();
    let mut header = String::new();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse::<f64>().unwrap_or(0.0) / MIB)
        })
        .unwrap_or(0.0);
    let duckdb = python(&["-c", "import duckdb; print(duckdb.__version__)"]);
    let _ = write!(
        header,
        "# KubeStep performance report\n\nMachine: {cores} cores ({cpu}), {memory:.0} GiB. DuckDB {} with {cores} threads. \
         Every ratio compares two figures of this run.",
        duckdb.trim()
    );
    report.line(header);
    let started = Instant::now();
    for (i, &n) in sizes.iter().enumerate() {
        let d = mixed_dataset(&work, n, i == 0);
        measure(&d, &work, cores, &mut report);
        std::fs::remove_file(&d.log).ok();
    }
    let samples = env_or("KUBESTEP_REPORT_SAMPLE_EVENTS", 1_000_000u64);
    if samples > 0 {
        let d = samples_dataset(&work, samples);
        measure(&d, &work, cores, &mut report);
        std::fs::remove_file(&d.log).ok();
    }
    report.line(format!("\nThe whole report took {:.0} s.", started.elapsed().as_secs_f64()));
    let path = work.join("report.md");
    std::fs::write(&path, &report.0).expect("saving the report");
    eprintln!("saved {}", path.display());
}
