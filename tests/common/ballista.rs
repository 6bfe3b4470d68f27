//! A real Apache DataFusion Ballista cluster for the tests: the stock `ballista-scheduler` and
//! `ballista-executor` binaries of release 55 (crates.io), each a separate process on loopback,
//! stopped when dropped. `.ci/test` installs them into ~/.cache/kubestep-ballista;
//! `KUBESTEP_BALLISTA_BIN` names another directory holding both.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The directory holding `ballista-scheduler` and `ballista-executor`.
pub fn binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBESTEP_BALLISTA_BIN") {
        return PathBuf::from(dir);
    }
    let installed = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/kubestep-ballista/bin"));
    match installed {
        Some(dir) if dir.join("ballista-scheduler").exists() && dir.join("ballista-executor").exists() => dir,
        _ => panic!(
            "no Ballista binaries: run the tests with `bash .ci/test` (it installs ballista-scheduler and \
             ballista-executor 55 from crates.io into ~/.cache/kubestep-ballista) or set KUBESTEP_BALLISTA_BIN"
        ),
    }
}

/// `N` distinct free ports (their listeners are all open at once, so no port is handed out twice).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<std::net::TcpListener> =
        (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("a free port")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("a bound port").port())
}

/// A scheduler and its executors.
pub struct BallistaCluster {
    scheduler: Child,
    executors: Vec<Child>,
    /// The scheduler's gRPC (and REST) port.
    pub port: u16,
    /// One work directory per executor, where it keeps the shuffle files of the jobs it ran.
    pub work_dirs: Vec<PathBuf>,
    logs: PathBuf,
}

impl BallistaCluster {
    /// Starts a scheduler and `executors` executors under `dir`, with `env` (object-store
    /// credentials) in every process's environment, and waits until all executors registered.
    pub fn start(dir: &Path, executors: usize, env: &[(&'static str, String)]) -> BallistaCluster {
        let bin = binaries();
        let logs = dir.join("logs");
        std::fs::create_dir_all(&logs).expect("a log directory");
        let log = |name: &str| std::fs::File::create(logs.join(name)).expect("a log file");
        let [port] = free_ports::<1>();
        let scheduler = Command::new(bin.join("ballista-scheduler"))
            .args(["--bind-host", "127.0.0.1", "--external-host", "127.0.0.1", "--bind-port", &port.to_string()])
            // Spread tasks over the executors instead of filling the first one's slots.
            .args(["--task-distribution", "round-robin"])
            .envs(env.iter().cloned())
            .stdout(log("scheduler.log"))
            .stderr(log("scheduler.err"))
            .spawn()
            .expect("starting ballista-scheduler");
        let mut cluster =
            BallistaCluster { scheduler, executors: Vec::new(), port, work_dirs: Vec::new(), logs: logs.clone() };
        // Executors register once at start: the scheduler must be listening first.
        let deadline = Instant::now() + Duration::from_secs(60);
        while cluster.registered().is_none() {
            assert!(Instant::now() < deadline, "the scheduler did not answer within 60 s:\n{}", cluster.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
        for n in 0..executors {
            let work_dir = dir.join(format!("executor-{n}"));
            std::fs::create_dir_all(&work_dir).expect("a work directory");
            let ports = free_ports::<3>().map(|p| p.to_string());
            let child = Command::new(bin.join("ballista-executor"))
                .args(["--scheduler-host", "127.0.0.1", "--scheduler-port", &port.to_string()])
                .args(["--bind-host", "127.0.0.1", "--external-host", "127.0.0.1"])
                .args(["--bind-port", &ports[0], "--bind-grpc-port", &ports[1], "--bind-health-port", &ports[2]])
                .args(["--vcores", "2", "--scheduler-connect-timeout-seconds", "30", "--work-dir"])
                .arg(&work_dir)
                .envs(env.iter().cloned())
                .stdout(log(&format!("executor-{n}.log")))
                .stderr(log(&format!("executor-{n}.err")))
                .spawn()
                .expect("starting ballista-executor");
            cluster.executors.push(child);
            cluster.work_dirs.push(work_dir);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let registered = cluster.registered().unwrap_or(0);
            if registered == executors {
                return cluster;
            }
            assert!(
                Instant::now() < deadline,
                "{registered} of {executors} executors registered within 60 s:\n{}",
                cluster.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// How many executors the scheduler knows, or `None` while it does not answer.
    fn registered(&self) -> Option<usize> {
        ureq::get(&format!("http://127.0.0.1:{}/api/executors", self.port))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_json::<serde_json::Value>().ok())
            .and_then(|v| v.as_array().map(|a| a.len()))
    }

    /// `ballista://127.0.0.1:PORT`, the `--engine` of this cluster.
    pub fn engine(&self) -> String {
        format!("ballista://127.0.0.1:{}", self.port)
    }

    /// How many jobs each executor ran tasks of (job directories in its work directory).
    pub fn jobs_per_executor(&self) -> Vec<usize> {
        self.work_dirs
            .iter()
            .map(|dir| std::fs::read_dir(dir).map(|entries| entries.flatten().count()).unwrap_or(0))
            .collect()
    }

    /// The scheduler's and executors' logs, for a failure message.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(&self.logs).into_iter().flatten().flatten() {
            let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            text.push_str(&format!("== {}\n", entry.file_name().to_string_lossy()));
            for line in tail.into_iter().rev() {
                text.push_str(line);
                text.push('\n');
            }
        }
        text
    }
}

impl Drop for BallistaCluster {
    fn drop(&mut self) {
        for child in self.executors.iter_mut().chain(std::iter::once(&mut self.scheduler)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
