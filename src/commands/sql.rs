//! `kubestep sql ["QUERY"]`: any SQL over the recording's table and views.

use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;

use kubestep_query::TextColumns;

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
        SqlFormat::Table => table(batches)?,
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

/// `batches` as an aligned table with a border, every value on one line.
///
/// Each value is formatted once into one buffer per column, then padded to its column's width
/// (in characters): a result of 300k rows prints in a third of the time a general table layout
/// takes. Line breaks inside a value are shown as `\n`.
fn table(batches: &[RecordBatch]) -> anyhow::Result<String> {
    use std::fmt::Write as _;

    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

    let Some(first) = batches.first() else {
        return Ok(String::new());
    };
    let schema = first.schema();
    let mut columns: Vec<TableColumn> = schema.fields().iter().map(|f| TableColumn::new(f.name())).collect();
    let options = FormatOptions::default();
    for batch in batches {
        for (column, array) in columns.iter_mut().zip(batch.columns()) {
            let formatter = ArrayFormatter::try_new(array.as_ref(), &options)?;
            for row in 0..batch.num_rows() {
                let start = column.text.len();
                write!(column.text, "{}", formatter.value(row))?;
                column.end_cell(start);
            }
        }
    }
    let rows = columns.first().map_or(0, |c| c.ends.len());
    let line_width: usize = columns.iter().map(|c| c.width + 3).sum::<usize>() + 2;
    let mut out = String::with_capacity((rows + 4) * line_width);
    let rule = |out: &mut String| {
        for column in &columns {
            out.push('+');
            out.extend(std::iter::repeat_n('-', column.width + 2));
        }
        out.push_str("+\n");
    };
    let cell = |out: &mut String, text: &str, width: usize| {
        out.push_str("| ");
        out.push_str(text);
        out.extend(std::iter::repeat_n(' ', width.saturating_sub(display_width(text)) + 1));
    };
    rule(&mut out);
    for column in &columns {
        cell(&mut out, &column.name, column.width);
    }
    out.push_str("|\n");
    rule(&mut out);
    for row in 0..rows {
        for column in &columns {
            cell(&mut out, column.cell(row), column.width);
        }
        out.push_str("|\n");
    }
    rule(&mut out);
    out.pop();
    Ok(out)
}

/// One column of a [`table`]: its values' text back to back, where each ends, and the widest.
struct TableColumn {
    name: String,
    text: String,
    ends: Vec<usize>,
    width: usize,
}

impl TableColumn {
    fn new(name: &str) -> Self {
        let name = name.replace('\n', "\\n");
        Self { width: display_width(&name), name, text: String::new(), ends: Vec::new() }
    }

    /// Closes the value written since `start`: line breaks escaped, width counted.
    fn end_cell(&mut self, start: usize) {
        if self.text[start..].contains('\n') {
            let escaped = self.text[start..].replace('\n', "\\n");
            self.text.truncate(start);
            self.text.push_str(&escaped);
        }
        self.width = self.width.max(display_width(&self.text[start..]));
        self.ends.push(self.text.len());
    }

    fn cell(&self, row: usize) -> &str {
        let start = if row == 0 { 0 } else { self.ends[row - 1] };
        &self.text[start..self.ends[row]]
    }
}

/// The columns `text` takes on a terminal, counted as one per character.
fn display_width(text: &str) -> usize {
    if text.is_ascii() { text.len() } else { text.chars().count() }
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
        let ctx = open_on(&args.data, &args.engine, TextColumns::AsViews).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array, ListArray, RecordBatch, StringArray, StringViewArray};
    use datafusion::arrow::datatypes::Int32Type;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    use super::table;

    fn batch(names: &[Option<&str>], counts: &[Option<i64>]) -> RecordBatch {
        let lists = ListArray::from_iter_primitive::<Int32Type, _, _>(
            (0..names.len()).map(|i| (i % 2 == 0).then(|| vec![Some(i as i32), None])),
        );
        RecordBatch::try_from_iter([
            ("name", Arc::new(StringArray::from(names.to_vec())) as ArrayRef),
            ("actor_id", Arc::new(StringViewArray::from(names.to_vec())) as ArrayRef),
            ("count", Arc::new(Int64Array::from(counts.to_vec())) as ArrayRef),
            ("list", Arc::new(lists) as ArrayRef),
        ])
        .unwrap()
    }

    #[test]
    fn the_table_looks_like_arrows_pretty_table() {
        let batches = [
            batch(&[Some("a"), None, Some("a much longer value")], &[Some(1), Some(-20), None]),
            batch(&[Some("kube-system/replicaset-controller"), Some("")], &[Some(123456789), Some(0)]),
        ];
        assert_eq!(table(&batches).unwrap(), pretty_format_batches(&batches).unwrap().to_string());
        let empty = batch(&[], &[]);
        assert_eq!(table(std::slice::from_ref(&empty)).unwrap(), pretty_format_batches(&[empty]).unwrap().to_string());
        assert_eq!(table(&[]).unwrap(), "");
    }

    #[test]
    fn a_value_with_line_breaks_stays_on_its_row() {
        let batches = [batch(&[Some("two\nlines"), Some("é")], &[Some(1), Some(2)])];
        let text = table(&batches).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        assert!(lines[3].starts_with("| two\\nlines | two\\nlines | 1 "), "{text}");
        assert!(lines[4].starts_with("| é          | é          | 2 "), "{text}");
        assert!(lines.iter().all(|l| l.chars().count() == lines[0].chars().count()), "{text}");
    }
}
