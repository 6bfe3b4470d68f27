//! `kubestep sessions`: every session of a recording.

use std::process::ExitCode;

use anyhow::bail;

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
        let ctx = open(&args.data).await?;
        let sessions = kubestep_query::sessions::sessions(&ctx).await?;
        if sessions.is_empty() {
            bail!("no sessions in {}: the recording is empty", args.data.data.display());
        }
        match args.format {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&sessions)?),
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
        Ok(ExitCode::SUCCESS)
    })
}
