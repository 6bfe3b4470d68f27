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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUBESTEP_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Import(args) => commands::import::run(args),
        Command::Sql(args) => commands::sql::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("Error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
