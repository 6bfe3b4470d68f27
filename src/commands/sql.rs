//! `kubestep sql "SELECT ..."`

use std::process::ExitCode;

use anyhow::Context;
use datafusion::arrow::util::pretty::pretty_format_batches;

use crate::DataDir;

/// Arguments of `kubestep sql`.
#[derive(clap::Args)]
pub struct SqlArgs {
    /// The query; the table is `operations`.
    query: String,
    #[command(flatten)]
    data: DataDir,
}

/// Runs the query over the recording and prints the result as a table.
pub fn run(args: SqlArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async {
        let ctx = kubestep_query::open_recording(&args.data.data).await?;
        let batches = kubestep_query::run_sql(&ctx, &args.query).await?;
        println!("{}", pretty_format_batches(&batches)?);
        Ok(ExitCode::SUCCESS)
    })
}
