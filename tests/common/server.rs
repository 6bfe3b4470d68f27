//! A `kubestep serve` process for end-to-end tests: started on an ephemeral loopback port,
//! killed when dropped.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running service.
pub struct TestServer {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// Its standard error, collected in the background.
    stderr_log: PathBuf,
}

impl TestServer {
    /// Starts `kubestep serve -d DATA --listen 127.0.0.1:0 EXTRA...` and waits until it listens.
    pub fn start(data: &Path, extra: &[&str]) -> Self {
        Self::start_with_listen(data, "127.0.0.1:0", extra)
    }

    /// Like [`start`](Self::start) on another listen address.
    pub fn start_with_listen(data: &Path, listen: &str, extra: &[&str]) -> Self {
        let data = data.display().to_string();
        let mut args = vec!["serve", "-d", &data, "--listen", listen];
        args.extend_from_slice(extra);
        Self::spawn(&args, &[], Path::new(&data).with_extension("stderr.log"))
    }

    /// Starts `kubestep serve -d URL --spool SPOOL --listen 127.0.0.1:0 EXTRA...` with `env` (a
    /// recording in object storage).
    pub fn start_remote(url: &str, spool: &Path, env: &[(&'static str, String)], extra: &[&str]) -> Self {
        let spool_arg = spool.display().to_string();
        let mut args = vec!["serve", "-d", url, "--spool", &spool_arg, "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        Self::spawn(&args, env, spool.with_extension("stderr.log"))
    }

    fn spawn(args: &[&str], env: &[(&'static str, String)], stderr_log: PathBuf) -> Self {
        let stderr = std::fs::OpenOptions::new().create(true).append(true).open(&stderr_log).expect("stderr log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_kubestep"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("starting kubestep serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("reading the listen line");
        let url = line.split_whitespace().find(|w| w.starts_with("http://") || w.starts_with("https://"));
        let Some(base) = url.and_then(|u| u.strip_suffix("/audit,")) else {
            let status = child.wait().ok();
            let log = std::fs::read_to_string(&stderr_log).unwrap_or_default();
            panic!("kubestep serve did not start ({status:?}): {line}\n{log}");
        };
        TestServer { base: base.to_owned(), child: Some(child), stderr_log }
    }

    /// `POST path` with `body`; returns the status and the answer.
    pub fn post(&self, path: &str, body: &[u8]) -> (u16, String) {
        post(&format!("{}{path}", self.base), body)
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> (u16, String) {
        let agent = agent();
        match agent.get(&format!("{}{path}", self.base)).call() {
            Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
            Err(e) => (0, e.to_string()),
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The resident memory of the process (VmRSS), in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid().unwrap_or(0))).unwrap_or_default();
        let kib = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next());
        kib.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024
    }

    /// `host:port` of the listener, for raw TCP clients.
    pub fn address(&self) -> String {
        self.base.split("://").nth(1).unwrap_or_default().to_owned()
    }

    /// One figure of `GET /metrics` (the first sample whose name and labels are `series`).
    pub fn metric(&self, series: &str) -> f64 {
        let (_, text) = self.get("/metrics");
        let prefix = format!("{series} ");
        let value = text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok());
        value.unwrap_or_else(|| panic!("no metric {series} in:\n{text}"))
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        child.wait().ok()?.code()
    }

    /// Everything the service logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HTTP client that reports every status instead of failing on non-2xx.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// `POST url` with `body`; status 0 when the connection failed.
pub fn post(url: &str, body: &[u8]) -> (u16, String) {
    match agent().post(url).send(body) {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// A well-formed `ResponseComplete` event for `update configmaps/c-<n>` at `2024-05-01T10:00:00Z`
/// plus `n` milliseconds.
pub fn synthetic_event(audit_id: &str, n: u64) -> String {
    let ms = n % 1000;
    let s = (n / 1000) % 60;
    let m = (n / 60_000) % 60;
    format!(
        r#"{{"level":"RequestResponse","auditID":"{audit_id}","stage":"ResponseComplete","verb":"update","requestURI":"/api/v1/namespaces/ns/configmaps/c-{n}","user":{{"username":"system:serviceaccount:ns:ctl"}},"userAgent":"manager/v1","objectRef":{{"resource":"configmaps","namespace":"ns","name":"c-{n}","apiVersion":"v1","resourceVersion":"{n}"}},"responseStatus":{{"metadata":{{}},"code":200}},"responseObject":{{"kind":"ConfigMap","apiVersion":"v1","metadata":{{"name":"c-{n}","namespace":"ns","uid":"uid-{n}","resourceVersion":"{}"}},"data":{{"k":"v{n}"}}}},"requestReceivedTimestamp":"2024-05-01T10:{m:02}:{s:02}.{ms:03}000Z","stageTimestamp":"2024-05-01T10:{m:02}:{s:02}.{ms:03}500Z"}}"#,
        n + 1
    )
}

/// Imports `files` logs of `per_file` synthetic events each into session `s` of the directory
/// `data`: one small Parquet file per import, what compaction merges.
pub fn import_small_files(data: &Path, files: u64, per_file: u64) {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    for f in 0..files {
        let log = tmp.path().join(format!("{f}.log"));
        let events: Vec<String> =
            (0..per_file).map(|n| synthetic_event(&format!("f{f}-{n}"), f * per_file + n)).collect();
        std::fs::write(&log, events.join("\n")).expect("writing a log");
        let output = crate::common::import(data, &[&log], &["-q", "--session", "s"]);
        assert!(output.status.success(), "{:?}", crate::common::text(&output));
    }
}

/// An `EventList` body holding `items` (JSON texts of events).
pub fn event_list(items: &[String]) -> Vec<u8> {
    format!(r#"{{"kind":"EventList","apiVersion":"audit.k8s.io/v1","metadata":{{}},"items":[{}]}}"#, items.join(","))
        .into_bytes()
}
