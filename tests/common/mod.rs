//! Helpers shared by the end-to-end tests: run the real binary, read the recording back through
//! the query layer, and find the real audit samples.

#![allow(dead_code)]

pub mod s3;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// The directory of real audit samples: `$KUBESTEP_SAMPLES`, else `../shared/audit-samples`.
pub fn samples_dir() -> PathBuf {
    match std::env::var_os("KUBESTEP_SAMPLES") {
        Some(dir) => PathBuf::from(dir),
        None => {
            // At run time: a build cache shared between checkouts must not point at another one.
            let manifest_dir =
                std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
            Path::new(&manifest_dir).join("../shared/audit-samples")
        }
    }
}

/// Every file below `dir`, sorted.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Every sample file (JSON, logs, YAML), sorted.
pub fn sample_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![samples_dir()];
    while let Some(dir) = dirs.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e != "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert!(files.len() > 60, "expected the audit samples in {}", samples_dir().display());
    files
}

/// The sample file whose name contains `needle`.
pub fn sample(needle: &str) -> PathBuf {
    let matches: Vec<_> = sample_files().into_iter().filter(|p| p.to_string_lossy().contains(needle)).collect();
    assert_eq!(matches.len(), 1, "exactly one sample matching {needle}: {matches:?}");
    matches.into_iter().next().expect("one match")
}

/// Runs `kubestep ARGS...` with `stdin` as its standard input.
pub fn kubestep(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubestep"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting kubestep");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().expect("stdin pipe");
        pipe.write_all(input).expect("writing stdin");
    }
    child.wait_with_output().expect("waiting for kubestep")
}

/// `kubestep import FILES -d DATA EXTRA...`.
pub fn import(data: &Path, files: &[&Path], extra: &[&str]) -> Output {
    let mut args: Vec<String> = vec!["import".into(), "-d".into(), data.display().to_string()];
    args.extend(files.iter().map(|f| f.display().to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubestep(&args, None)
}

/// Runs SQL over the recording at `data` and returns the batches.
pub fn query(data: &Path, sql: &str) -> Vec<RecordBatch> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let ctx = kubestep_query::open_recording(data).await.expect("opening the recording");
        ctx.sql(sql).await.expect("planning").collect().await.expect("running")
    })
}

/// Runs SQL and renders every row as a vector of display strings (nulls as `NULL`).
pub fn rows(data: &Path, sql: &str) -> Vec<Vec<String>> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for batch in query(data, sql) {
        let formatters: Vec<_> =
            batch.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &options).expect("formatter")).collect();
        for row in 0..batch.num_rows() {
            out.push(formatters.iter().map(|f| f.value(row).to_string()).collect());
        }
    }
    out
}

/// The single number a `SELECT count(*) ...` returns.
pub fn count(data: &Path, sql: &str) -> u64 {
    let rows = rows(data, sql);
    rows[0][0].parse().expect("a count")
}

/// Text of a process's standard output and error.
pub fn text(output: &Output) -> (String, String) {
    (String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
}

/// Runs `kubestep simulate --scenario SCENARIO --seed SEED EXTRA...` into `dir`; returns the log
/// and the scenario's ground truth (`--truth`).
pub fn simulate(dir: &Path, scenario: &str, seed: &str, extra: &[&str]) -> (PathBuf, serde_json::Value) {
    let out = dir.join(format!("{scenario}.log"));
    let truth = dir.join(format!("{scenario}.truth.json"));
    let (out_arg, truth_arg) = (out.display().to_string(), truth.display().to_string());
    let mut args = vec!["simulate", "--scenario", scenario, "--seed", seed, "--out", &out_arg, "--truth", &truth_arg];
    args.extend_from_slice(extra);
    let output = kubestep(&args, None);
    assert!(output.status.success(), "{:?}", text(&output));
    let truth = std::fs::read_to_string(&truth).unwrap_or_else(|e| panic!("reading {}: {e}", truth.display()));
    (out, serde_json::from_str(&truth).expect("the truth is JSON"))
}

/// The actors of every chain in an `analyze causality --format json` report, in order.
pub fn report_chains(report: &serde_json::Value) -> Vec<Vec<String>> {
    let chains = report["chains"].as_array().expect("the report has chains");
    chains.iter().map(|c| strings(&c["actors"])).collect()
}

/// The chains of a simulator's ground truth (each a list of actors).
pub fn truth_chains(truth: &serde_json::Value) -> Vec<Vec<String>> {
    truth["chains"].as_array().expect("the truth has chains").iter().map(strings).collect()
}

/// Whether `chain` runs, in order, inside one of `chains`.
pub fn holds_chain(chains: &[Vec<String>], chain: &[String]) -> bool {
    chains.iter().any(|c| c.windows(chain.len()).any(|w| w == chain))
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    let items = value.as_array().expect("an array of strings");
    items.iter().map(|a| a.as_str().expect("a string").to_owned()).collect()
}
