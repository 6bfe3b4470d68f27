//! `kubestep sessions`: every session of a recording.

use std::process::ExitCode;

use anyhow::bail;
use datafusion::prelude::SessionContext;

use kubestep_query::TextColumns;

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

/// Lists the sessions, oldest first.
pub fn run(args: SessionsArgs) -> anyhow::Result<ExitCode> {
    block_on(async {
        let ctx = open(&args.data, TextColumns::AsViews).await?;
        if !print(&ctx, args.format).await? {
            bail!("no sessions in {}: the recording is empty", args.data.data.display());
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Prints every session; says whether there was any.
pub(crate) async fn print(ctx: &SessionContext, format: OutputFormat) -> anyhow::Result<bool> {
    let sessions = kubestep_query::sessions::sessions(ctx).await?;
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
            for s in &sessions {
                println!(
                    "{:<width$}  {:<27}  {:<27}  {:>10}  {:>8}  {:>6}  {:>7}",
                    s.session_id, s.first_at, s.last_at, s.operations, s.writes, s.actors, s.errors
                );
            }
        }
    }
    Ok(true)
}
