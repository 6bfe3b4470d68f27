//! `kubestep compact`: merge a session's small files into large ones.

use std::process::ExitCode;

use kubestep_ingest::compact::{DEFAULT_TARGET_ROWS, compact};
use kubestep_schemas::session::validate_session_name;

use crate::DataDir;

/// Arguments of `kubestep compact`.
#[derive(clap::Args)]
pub struct CompactArgs {
    #[command(flatten)]
    data: DataDir,
    /// Only this session (default: every session).
    #[arg(long, value_name = "NAME")]
    session: Option<String>,
    /// Files with fewer rows are merged, into files of at most this many rows.
    #[arg(long, value_name = "ROWS", default_value_t = DEFAULT_TARGET_ROWS)]
    target_rows: usize,
}

/// Compacts and prints what was merged.
pub fn run(args: CompactArgs) -> anyhow::Result<ExitCode> {
    if let Some(session) = &args.session {
        validate_session_name(session)?;
    }
    let done = compact(&args.data.data, args.session.as_deref(), args.target_rows.max(1))?;
    if done.is_empty() {
        println!("nothing to compact");
    }
    for p in &done {
        println!(
            "{} {}: merged {} files ({} rows) into {}",
            p.session, p.date, p.files_merged, p.rows, p.files_written
        );
    }
    Ok(ExitCode::SUCCESS)
}
