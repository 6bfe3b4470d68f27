//! `kubestep sql ["QUERY"]`: any SQL over the recording's table and views.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;

use crate::{DataDir, EngineArg, block_on, open_on};

/// How `sql` prints results.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SqlFormat {
    /// An aligned table.
    Table,
    /// A JSON array of objects.
    Json,
    /// CSV with a header line.
    Csv,
}

/// Arguments of `kubestep sql`.
#[derive(clap::Args)]
pub struct SqlArgs {
    /// The query (table `operations`; views in docs/QUERIES.md).
    /// Without it, an interactive prompt reads one query per line.
    query: Option<String>,
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    engine: EngineArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: SqlFormat,
}

fn render(batches: &[RecordBatch], format: SqlFormat) -> anyhow::Result<String> {
    Ok(match format {
        SqlFormat::Table => pretty_format_batches(batches)?.to_string(),
        SqlFormat::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            let bytes = writer.into_inner();
            if bytes.is_empty() { "[]".to_owned() } else { String::from_utf8(bytes)? }
        }
        SqlFormat::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(Vec::new());
            for batch in batches {
                writer.write(&nested_as_text(batch)?)?;
            }
            String::from_utf8(writer.into_inner())?.trim_end().to_owned()
        }
    })
}

/// `batch` with its list, struct and map columns written as text (`[a, b]`, as the table shows
/// them): CSV has no nested values, and `SELECT *` has a list column.
fn nested_as_text(batch: &RecordBatch) -> anyhow::Result<RecordBatch> {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

    let schema = batch.schema();
    if !schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if field.data_type().is_nested() {
            let formatter = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default())?;
            let text: StringArray =
                (0..column.len()).map(|row| column.is_valid(row).then(|| formatter.value(row).to_string())).collect();
            fields.push(Field::new(field.name(), DataType::Utf8, true));
            columns.push(Arc::new(text));
        } else {
            fields.push(field.as_ref().clone());
            columns.push(column.clone());
        }
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

async fn run_one(ctx: &SessionContext, query: &str, format: SqlFormat) -> anyhow::Result<()> {
    let batches = kubestep_query::run_sql(ctx, query).await?;
    println!("{}", render(&batches, format)?);
    Ok(())
}

/// Runs the query, or a prompt when there is none.
pub fn run(args: SqlArgs) -> anyhow::Result<ExitCode> {
    block_on(async {
        let ctx = open_on(&args.data, &args.engine).await?;
        if let Some(query) = &args.query {
            run_one(&ctx, query, args.format).await?;
            return Ok(ExitCode::SUCCESS);
        }
        let stdin = std::io::stdin();
        let prompt = stdin.is_terminal();
        if prompt {
            println!("SQL over {} (table operations, views: see docs/QUERIES.md); \\q quits", args.data.data.display());
        }
        let mut failed = false;
        let mut line = String::new();
        loop {
            if prompt {
                print!("kubestep> ");
                std::io::stdout().flush()?;
            }
            line.clear();
            if stdin.lock().read_line(&mut line)? == 0 {
                break;
            }
            let query = line.trim().trim_end_matches(';');
            match query {
                "" => continue,
                "\\q" | "quit" | "exit" => break,
                _ => {
                    if let Err(e) = run_one(&ctx, query, args.format).await {
                        eprintln!("Error: {e:#}");
                        failed = true;
                    }
                }
            }
        }
        Ok(if failed && !prompt { ExitCode::FAILURE } else { ExitCode::SUCCESS })
    })
}
