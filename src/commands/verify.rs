//! `kubestep verify`: check a recording and say what is wrong and how to repair it.

use std::process::ExitCode;

use kubestep_ingest::verify::{Severity, verify};

use crate::{DataDir, OutputFormat};

/// Arguments of `kubestep verify`.
#[derive(clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    data: DataDir,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: OutputFormat,
}

/// Verifies; exit 1 when an error was found (notices alone are fine).
pub fn run(args: VerifyArgs) -> anyhow::Result<ExitCode> {
    let remote = matches!(
        kubestep_schemas::location::RecordingLocation::parse(&args.data.data),
        Ok(kubestep_schemas::location::RecordingLocation::Remote(_))
    );
    let report = verify(&args.data.data)?;
    match args.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => {
            let wal = if remote {
                "no write-ahead log in object storage (it stays on each writer's spool)".to_owned()
            } else {
                format!("write-ahead log: {} segments, {} entries", report.wal_segments, report.wal_entries)
            };
            println!("{} files, {} rows in {} sessions; {wal}", report.files, report.rows, report.sessions);
            for finding in &report.findings {
                let label = match finding.severity {
                    Severity::Error => "error",
                    Severity::Notice => "notice",
                };
                println!("{label}: {}: {}\n  repair: {}", finding.path.display(), finding.problem, finding.repair);
            }
            let errors = report.findings.iter().filter(|f| f.severity == Severity::Error).count();
            match errors {
                0 => println!("ok: the recording is consistent"),
                n => println!("{n} errors"),
            }
        }
    }
    Ok(if report.has_errors() { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
