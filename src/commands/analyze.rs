//! `kubestep analyze SESSION`: slow operations, errors and loops.

use std::process::ExitCode;

use anyhow::bail;
use kubestep_query::analyze::{AnalysisReport, AnalyzeOptions, analyze};
use kubestep_query::context::ensure_session;

use crate::{DataDir, OutputFormat, block_on, open};

/// How many items each text section lists before saying how many more there are.
const LISTED: usize = 10;

/// Arguments of `kubestep analyze`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AnalyzeArgs {
    /// The session to analyze.
    session: Option<String>,
    /// The session, for names that clash with a subcommand (`--session causality`).
    #[arg(long = "session", value_name = "NAME", conflicts_with = "session")]
    session_flag: Option<String>,
    #[command(flatten)]
    data: DataDir,
    /// Only the selected sections (slow operations); combine with --loops/--errors.
    #[arg(short = 's', long)]
    slow: bool,
    /// Only the selected sections (loops).
    #[arg(short = 'l', long)]
    loops: bool,
    /// Only the selected sections (errors).
    #[arg(short = 'e', long)]
    errors: bool,
    /// Leave out slow operations.
    #[arg(long)]
    no_slow: bool,
    /// Leave out loops.
    #[arg(long)]
    no_loops: bool,
    /// Leave out errors.
    #[arg(long)]
    no_errors: bool,
    /// An operation taking at least this many milliseconds is slow.
    #[arg(short = 't', long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    threshold: u64,
    /// Count watches as slow operations too (they are long-running by design).
    #[arg(long)]
    include_watch: bool,
    /// Look for loops with periods of 1 up to this many operations.
    #[arg(short = 'w', long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    window: u64,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: OutputFormat,
}

/// Analyzes the session and prints the report.
pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    let Some(session) = args.session.clone().or(args.session_flag.clone()) else {
        bail!("which session? `kubestep analyze SESSION` (`kubestep sessions` lists them)");
    };
    let any_selected = args.slow || args.loops || args.errors;
    let options = AnalyzeOptions {
        slow: (!any_selected || args.slow) && !args.no_slow,
        loops: (!any_selected || args.loops) && !args.no_loops,
        errors: (!any_selected || args.errors) && !args.no_errors,
        threshold_ms: args.threshold,
        include_watch: args.include_watch,
        window: args.window as usize,
    };
    block_on(async {
        let ctx = open(&args.data).await?;
        ensure_session(&ctx, &args.data.data, &session).await?;
        let report = analyze(&ctx, &session, &options).await?;
        match args.format {
            OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
            OutputFormat::Text => print!("{}", render_text(&report, &options)),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn more(out: &mut String, total: u64, shown: usize) {
    if total > shown as u64 {
        out.push_str(&format!("  ... and {} more\n", total - shown as u64));
    }
}

/// The report as text: sections in the order loops, slow, errors; top items each.
pub(crate) fn render_text(r: &AnalysisReport, options: &AnalyzeOptions) -> String {
    let mut out = format!("Analyzing {} operations for session: {}\n\n", r.total_operations, r.session_id);
    if options.loops {
        out.push_str("=== Loop Detection ===\n");
        let total = r.loops_total.unwrap_or(0);
        if total == 0 {
            out.push_str(&format!("No loop patterns detected (periods 1 to {})\n", options.window));
        } else {
            out.push_str(&format!("Found {total} loops (periods 1 to {}), the longest first:\n", options.window));
            let mut longest: Vec<_> = r.loops_detected.iter().collect();
            longest.sort_by_key(|l| (std::cmp::Reverse(l.end_index - l.start_index), l.start_index));
            for l in longest.into_iter().take(LISTED) {
                out.push_str(&format!(
                    "  [{}-{}] {} (a block of {}: {})\n",
                    l.start_index,
                    l.end_index,
                    l.description,
                    l.period,
                    l.pattern.join(", ")
                ));
            }
            more(&mut out, total, LISTED.min(r.loops_detected.len()));
        }
        out.push('\n');
    }
    if options.slow {
        out.push_str("=== Slow Operations ===\n");
        let total = r.slow_operations_total.unwrap_or(0);
        if total == 0 {
            out.push_str(&format!("No operations took {}ms or longer\n", options.threshold_ms));
        } else {
            out.push_str(&format!("Found {total} slow operations (>= {}ms):\n", options.threshold_ms));
            for s in r.slow_operations.iter().take(LISTED) {
                out.push_str(&format!(
                    "  [{}] {} {}: {}ms ({})\n",
                    s.index, s.operation_type, s.resource, s.duration_ms, s.actor_id
                ));
            }
            more(&mut out, total, LISTED.min(r.slow_operations.len()));
        }
        out.push('\n');
    }
    if let Some(e) = &r.errors {
        out.push_str("=== Error Analysis ===\n");
        if e.total == 0 {
            out.push_str("No errors found\n");
        } else {
            out.push_str(&format!("Total Errors: {}\n\nErrors by Type:\n", e.total));
            for (op, n) in &e.by_type {
                out.push_str(&format!("  {op}: {n}\n"));
            }
            out.push_str("\nErrors by Status:\n");
            for s in e.by_status.iter().take(LISTED) {
                out.push_str(&format!(
                    "  {} {}: {} (first [{}], last [{}])\n",
                    s.status_code, s.reason, s.count, s.first_index, s.last_index
                ));
            }
            more(&mut out, e.by_status.len() as u64, LISTED.min(e.by_status.len()));
            out.push_str("\nErrors by Actor:\n");
            for a in e.by_actor.iter().take(LISTED) {
                out.push_str(&format!("  {}: {}\n", a.actor_id, a.count));
            }
            more(&mut out, e.by_actor.len() as u64, LISTED.min(e.by_actor.len()));
            out.push('\n');
            if let Some(f) = &e.first {
                out.push_str(&format!(
                    "First Error (seq {}): {} {}: {}\n",
                    f.sequence_number, f.operation_type, f.resource, f.message
                ));
            }
            if let Some(l) = &e.last {
                out.push_str(&format!(
                    "Last Error (seq {}): {} {}: {}\n",
                    l.sequence_number, l.operation_type, l.resource, l.message
                ));
            }
        }
        out.push('\n');
    }
    out
}
