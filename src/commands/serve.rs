//! `kubestep serve`: the audit webhook backend.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use kubestep_ingest::server::auth::TlsFiles;
use kubestep_ingest::server::{DEFAULT_DEDUP_WINDOW, ServeConfig, Server};
use kubestep_schemas::location::RecordingLocation;

use super::recording::RecordingArgs;
use crate::DataDir;

/// Arguments of `kubestep serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataDir,
    /// With `-d` naming a bucket (s3://, gs://, az://): the local directory that holds the
    /// write-ahead log and the files waiting for their upload (a volume of this replica's own).
    #[arg(long, value_name = "DIR", default_value = "./kubestep-spool")]
    spool: PathBuf,
    /// Address to listen on. A non-loopback address needs TLS and authentication, or --insecure.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9443")]
    listen: SocketAddr,
    #[command(flatten)]
    recording: RecordingArgs,
    /// Buffered records are written to Parquet at least this often.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    flush_interval: Duration,
    /// ... or as soon as this many are buffered.
    #[arg(long, value_name = "ROWS", default_value_t = 1_000_000)]
    flush_rows: usize,
    /// ... or as soon as they take this many bytes of memory (e.g. 16MiB).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    flush_bytes: usize,
    /// Larger request bodies are refused with 413 (e.g. 32MiB; the API server's 400-event batches
    /// are a few MiB unless they carry very large objects).
    #[arg(long, value_name = "SIZE", default_value = "32MiB", value_parser = parse_size)]
    max_body: usize,
    /// Memory that batches waiting for the write-ahead log may take (a body counts twice: its bytes
    /// and its decoded records); beyond that, 503 with Retry-After.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    max_queue: usize,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM), as the webhook kubeconfig's
    /// client-certificate presents them. Needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Require `Authorization: Bearer <token>` with a token from this file (one per line), as the
    /// webhook kubeconfig's `token` presents it. With --client-ca, either one is enough.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// De-duplicate retried batches against about this many of the most recent events (memory
    /// stays bounded; `kubestep import` de-duplicates against everything).
    #[arg(long, value_name = "EVENTS", default_value_t = DEFAULT_DEDUP_WINDOW)]
    dedup_window: usize,
    /// Time a client has to send a request's headers, and again its body; slower connections
    /// are closed (headers) or answered 408 (body). An idle keep-alive connection is closed after it.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    client_timeout: std::time::Duration,
    /// Connections served at once; more are closed as they arrive.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    max_connections: usize,
    /// Allow a non-loopback listen address without TLS and authentication.
    #[arg(long)]
    insecure: bool,
}

/// The largest `--max-body` accepted: a body is one WAL entry, and entries stay well below 1 GiB.
const MAX_BODY_LIMIT: usize = 512 << 20;

/// Parses `64MiB`, `512KiB`, `1G`, `100000`.
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: usize = number.parse().map_err(|_| format!("{text:?} is not a size like 64MiB"))?;
    let factor: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} (use KiB, MiB or GiB)")),
    };
    number.checked_mul(factor).ok_or_else(|| format!("{text:?} is too large"))
}

/// Runs the service until SIGINT or SIGTERM, then flushes and exits 0.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let recording = args.recording.resolve()?;
    if args.max_body > MAX_BODY_LIMIT {
        bail!(
            "--max-body may be at most {} MiB (one webhook batch is one write-ahead log entry)",
            MAX_BODY_LIMIT >> 20
        );
    }
    if args.flush_interval.is_zero() {
        bail!("--flush-interval must be longer than zero");
    }
    if args.client_timeout.is_zero() {
        bail!("--client-timeout must be longer than zero");
    }
    if args.max_connections == 0 {
        bail!("--max-connections must be at least 1");
    }
    let location = RecordingLocation::parse(&args.data.data)?;
    let mut config = ServeConfig::new(match &location {
        RecordingLocation::Local(dir) => dir.clone(),
        RecordingLocation::Remote(_) => args.spool.clone(),
    });
    config.listen = args.listen;
    config.normalize = recording.normalize;
    config.session = recording.session;
    config.idle_gap_us = recording.idle_gap_us;
    config.flush.interval = args.flush_interval;
    config.flush.max_rows = args.flush_rows.max(1);
    config.flush.max_bytes = args.flush_bytes.max(1);
    config.max_body = args.max_body;
    config.max_queue_bytes = args.max_queue.max(args.max_body.saturating_mul(2));
    config.insecure = args.insecure;
    config.tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key, client_ca: args.client_ca }),
        _ => None,
    };
    config.token_file = args.token_file;
    config.dedup_window = args.dedup_window.max(1);
    config.connections.client_timeout = args.client_timeout;
    config.connections.max_connections = args.max_connections;

    // Decoding runs on blocking threads. More of them than cores adds no throughput, and each
    // keeps its own allocator caches: under overload, hundreds of them would be hundreds of MB.
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(cores * 2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // What the service reads back (`/ui`) is the recording, wherever it is; what it writes
        // locally is `config.data` (the recording itself, or the spool of a bucket).
        let data = args.data.data.clone();
        if let RecordingLocation::Remote(remote) = location {
            // Automatic sessions continue across restarts and replicas as they do in a directory.
            let stored = super::remote::stored_state(&data, false)
                .await
                .with_context(|| format!("reading the sessions {} holds", remote.url))?;
            config.stored_elsewhere = Some(stored);
            config.upload_to = Some(remote);
        }
        let shutdown = shutdown_signal()?;
        let server = Server::bind(config).await?.with_ui(super::report::ui_router(data.clone()));
        let addr = server.local_addr()?;
        let scheme = if server.is_tls() { "https" } else { "http" };
        // One line, and a closed standard output (a supervisor that read it and went away) must not
        // stop the service: the write's failure is ignored.
        let mut stdout = std::io::stdout();
        let _ = writeln!(
            stdout,
            "kubestep: listening on {scheme}://{addr}/audit, recording into {}, sessions at {scheme}://{addr}/ui/",
            data.display()
        );
        let _ = stdout.flush();
        tracing::info!(%addr, data = %data.display(), "listening");
        server.run(shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// A future that completes at the first SIGINT or SIGTERM. The handlers are installed here, before
/// the service announces its address, so a signal sent right after that is never fatal.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("MiB").is_err());
    }
}
