//! `kubestep`: the command-line shell over the ingest and query libraries. It parses arguments,
//! draws progress on terminals and prints results; the work happens in the libraries.

mod allocator;
mod commands;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kubestep_query::{Engine, TextColumns};

/// Flight recorder for Kubernetes controllers: record the API server's audit events, then replay
/// and analyse what every controller did.
#[derive(Parser)]
#[command(name = "kubestep", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr (the level comes from KUBESTEP_LOG, e.g. `debug` or `kubestep_ingest=trace`).
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The recording directory, shared by every command that reads or writes one.
#[derive(clap::Args, Clone)]
struct DataDir {
    /// Recording: a directory, or an object-store URL (s3://BUCKET/PREFIX, gs://, az://) for the
    /// query commands, with credentials and endpoint from the environment (AWS_*, GOOGLE_*, AZURE_*).
    #[arg(short = 'd', long = "data", env = "KUBESTEP_DATA", default_value = "./kubestep-data")]
    data: PathBuf,
}

/// Where a query command's SQL runs, for the commands that can run it on a cluster.
#[derive(clap::Args, Clone)]
struct EngineArg {
    /// Run the SQL here (`local`) or on an Apache DataFusion Ballista 55 cluster through its
    /// scheduler (`ballista://HOST:PORT`, port 50050 when left out). The cluster's executors read
    /// the recording themselves: give a bucket URL they can reach, or a path they all share.
    #[arg(long = "engine", env = "KUBESTEP_ENGINE", default_value = "local", value_name = "ENGINE")]
    engine: kubestep_query::Engine,
}

/// Output of the reporting commands.
#[derive(Clone, Copy, clap::ValueEnum)]
enum OutputFormat {
    /// For people.
    Text,
    /// For programs.
    Json,
}

/// Runs `future` on a multi-threaded runtime (DataFusion parallelizes scans across it).
fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    use anyhow::Context;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(future)
}

/// Opens the recording for reading (never creates anything), its text columns read as `text` says.
async fn open(data: &DataDir, text: TextColumns) -> anyhow::Result<datafusion::prelude::SessionContext> {
    Ok(kubestep_query::open_recording_with(&data.data, &Engine::Local, text).await?)
}

/// Opens the recording for reading, its SQL running on the engine asked for, its text columns
/// read as `text` says.
async fn open_on(
    data: &DataDir,
    engine: &EngineArg,
    text: TextColumns,
) -> anyhow::Result<datafusion::prelude::SessionContext> {
    Ok(kubestep_query::open_recording_with(&data.data, &engine.engine, text).await?)
}

#[derive(Subcommand)]
enum Command {
    /// Import audit log files (JSON lines, EventList, arrays, pretty JSON, gzip, Azure wrappers; `-` for stdin).
    Import(commands::import::ImportArgs),
    /// Every session: first and last time, operations, writes, actors, errors.
    Sessions(commands::sessions::SessionsArgs),
    /// A session step by step, in order (`-i` to step interactively).
    Replay(commands::replay::ReplayArgs),
    /// Slow operations, errors and loops of a session.
    Analyze(commands::analyze::AnalyzeArgs),
    /// Run SQL over the recording (table `operations` and the views of docs/QUERIES.md).
    Sql(commands::sql::SqlArgs),
    /// A session as one self-contained HTML page: timeline per actor, findings, chains, diffs.
    Report(commands::report::ReportArgs),
    /// Run the audit webhook backend: accept the API server's event batches and record them.
    Serve(commands::serve::ServeArgs),
    /// Start, stop or list named sessions on a running `kubestep serve`.
    Session(commands::session::SessionArgs),
    /// Merge a session's small files into large ones; queries running meanwhile are not disturbed.
    Compact(commands::compact::CompactArgs),
    /// Check a recording: every file readable, schema as expected, no event stored twice, WAL consistent.
    Verify(commands::verify::VerifyArgs),
    /// Generate a simulated cluster's audit events (JSON lines, or posted to a webhook).
    Simulate(commands::simulate::SimulateArgs),
    /// The whole product in one command: a simulated cluster recorded through the webhook, analysed.
    Demo(commands::demo::DemoArgs),
}

/// A command whose output reader has gone (`kubestep sql ... | head`) ends at once and quietly, as
/// Unix tools do, instead of panicking in `println!` on the broken pipe: SIGPIPE gets its default
/// action back (Rust's runtime ignores it). Not for `serve` and `demo`, which run the service;
/// sockets are written with `MSG_NOSIGNAL` anyway, so a client that leaves never signals.
fn end_quietly_when_the_reader_goes() {
    // SAFETY: called once on the main thread before any other thread exists or any output is
    // written; restoring a signal's default action has no other effect on the process.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A service says what it does; a command-line tool speaks only when something is wrong.
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUBESTEP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    tracing::debug!(allocator = allocator::name(), "memory allocator chosen for this command");
    if matches!(
        cli.command,
        Command::Sql(_)
            | Command::Report(_)
            | Command::Sessions(_)
            | Command::Replay(_)
            | Command::Analyze(_)
            | Command::Compact(_)
    ) {
        allocator::return_freed_memory_at_once();
    }
    if matches!(cli.command, Command::Import(_)) {
        allocator::keep_freed_memory_for_reuse();
    }
    if !matches!(cli.command, Command::Serve(_) | Command::Demo(_)) {
        end_quietly_when_the_reader_goes();
    }
    let result = match cli.command {
        Command::Import(args) => commands::import::run(args),
        Command::Sql(args) => commands::sql::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Sessions(args) => commands::sessions::run(args),
        Command::Replay(args) => commands::replay::run(args),
        Command::Analyze(args) => commands::analyze::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Session(args) => commands::session::run(args),
        Command::Compact(args) => commands::compact::run(args),
        Command::Verify(args) => commands::verify::run(args),
        Command::Simulate(args) => commands::simulate::run(args),
        Command::Demo(args) => commands::demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
