//! `kubestep sessions`: every session of a recording.

use std::process::ExitCode;

use anyhow::bail;
use datafusion::prelude::SessionContext;

use kubestep_query::TextColumns;
use kubestep_query::sessions::{SessionSummary, sessions};

use crate::{DataDir, OutputFormat, block_on, open};

/// Arguments of `kubestep sessions`.
#[derive(clap::Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    data: DataDir,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: OutputFormat,
}

/// Lists the sessions, oldest first: from the files' footers when they all carry a summary,
/// otherwise from the rows.
pub fn run(args: SessionsArgs) -> anyhow::Result<ExitCode> {
    let sessions = block_on(async {
        let ctx = open(&args.data, TextColumns::AsViews).await?;
        anyhow::Ok(sessions(&ctx).await?)
    })?;
    if !print(&sessions, args.format)? {
        bail!("no sessions in {}: the recording is empty", args.data.data.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints every session of a recording a context reads, from its rows; says whether there was any.
pub(crate) async fn print_from_rows(ctx: &SessionContext, format: OutputFormat) -> anyhow::Result<bool> {
    print(&sessions(ctx).await?, format)
}

/// Prints `sessions`; says whether there was any.
fn print(sessions: &[SessionSummary], format: OutputFormat) -> anyhow::Result<bool> {
    if sessions.is_empty() {
        return Ok(false);
    }
    match format {
        OutputFormat::Json => super::print_json(&sessions)?,
        OutputFormat::Text => {
            let width = sessions.iter().map(|s| s.session_id.len()).max().unwrap_or(7).max(7);
            println!(
                "{:<width$}  {:<27}  {:<27}  {:>10}  {:>8}  {:>6}  {:>7}",
                "SESSION", "FIRST", "LAST", "OPERATIONS", "WRITES", "ACTORS", "ERRORS"
            );
            for s in sessions {
                println!(
                    "{:<width$}  {:<27}  {:<27}  {:>10}  {:>8}  {:>6}  {:>7}",
                    s.session_id, s.first_at, s.last_at, s.operations, s.writes, s.actors, s.errors
                );
            }
        }
    }
    Ok(true)
}
