//! `kubestep`: the command-line shell over the ingest and query libraries. It parses arguments,
//! draws progress on terminals and prints results; the work happens in the libraries.

mod commands;

/// Ingest builds and drops many large Arrow buffers; mimalloc keeps freed pages for reuse where the
/// system allocator hands them back to the kernel and faults them in again.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Recording directory.
    #[arg(short = 'd', long = "data", env = "KUBESTEP_DATA", default_value = "./kubestep-data")]
    data: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Import audit log files (JSON lines, EventList, arrays, pretty JSON, gzip, Azure wrappers; `-` for stdin).
    Import(commands::import::ImportArgs),
    /// Run SQL over the recording (table `operations`).
    Sql(commands::sql::SqlArgs),
    /// Run the audit webhook backend: accept the API server's event batches and record them.
    Serve(commands::serve::ServeArgs),
    /// Start, stop or list named sessions on a running `kubestep serve`.
    Session(commands::session::SessionArgs),
    /// Merge a session's small files into large ones; queries running meanwhile are not disturbed.
    Compact(commands::compact::CompactArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A service says what it does; a command-line tool speaks only when something is wrong.
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KUBESTEP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let result = match cli.command {
        Command::Import(args) => commands::import::run(args),
        Command::Sql(args) => commands::sql::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Session(args) => commands::session::run(args),
        Command::Compact(args) => commands::compact::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
