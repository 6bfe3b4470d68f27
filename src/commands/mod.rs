//! One module per subcommand.

pub mod analyze;
pub mod causality;
pub mod client;
pub mod compact;
pub mod demo;
pub mod import;
pub mod recording;
pub mod remote;
pub mod replay;
pub mod report;
pub mod serve;
pub mod session;
pub mod sessions;
pub mod simulate;
pub mod sql;
pub mod verify;

/// Writes `value` to standard output as pretty JSON, streamed: a causality graph of a large
/// session is hundreds of megabytes of JSON, which need not exist in memory as one string.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    out.flush()?;
    Ok(())
}
