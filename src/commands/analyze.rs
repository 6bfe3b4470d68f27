//! `kubestep analyze SESSION`: slow operations, errors and loops.

use std::process::ExitCode;

use anyhow::bail;
use kubestep_query::analyze::{AnalysisReport, AnalyzeOptions, analyze};
use kubestep_query::behaviour::BehaviourOptions;
use kubestep_query::context::ensure_session;

use kubestep_query::TextColumns;

use crate::{DataDir, EngineArg, OutputFormat, block_on, open_on};

/// How many items each text section lists before saying how many more there are.
const LISTED: usize = 10;

/// Arguments of `kubestep analyze`.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AnalyzeArgs {
    #[command(subcommand)]
    command: Option<AnalyzeCommand>,
    /// The session to analyze.
    session: Option<String>,
    /// The session, for names that clash with a subcommand (`--session causality`).
    #[arg(long = "session", value_name = "NAME", conflicts_with = "session")]
    session_flag: Option<String>,
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    engine: EngineArg,
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
    /// Only the selected sections (hot loops: one actor writing one object over and over).
    #[arg(long)]
    hot_loops: bool,
    /// Only the selected sections (fights: actors flipping a field back and forth).
    #[arg(long)]
    fights: bool,
    /// Only the selected sections (conflict storms: repeated 409s).
    #[arg(long)]
    conflicts: bool,
    /// Only the selected sections (error requeue loops: the same failure again and again).
    #[arg(long)]
    requeues: bool,
    /// Leave out hot loops.
    #[arg(long)]
    no_hot_loops: bool,
    /// Leave out fights.
    #[arg(long)]
    no_fights: bool,
    /// Leave out conflict storms.
    #[arg(long)]
    no_conflicts: bool,
    /// Leave out error requeue loops.
    #[arg(long)]
    no_requeues: bool,
    /// A hot loop is at least this many writes of one actor to one object...
    #[arg(long, value_name = "N", default_value_t = 10)]
    hot_writes: u64,
    /// ... within this long (also the longest pause between two turns of a fight).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = humantime::parse_duration)]
    hot_window: std::time::Duration,
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

/// Analyses with their own arguments.
#[derive(clap::Subcommand)]
enum AnalyzeCommand {
    /// Which write triggered which: causality edges and the chains they form.
    Causality(super::causality::CausalityArgs),
}

/// Analyzes the session and prints the report.
pub fn run(args: AnalyzeArgs) -> anyhow::Result<ExitCode> {
    if let Some(AnalyzeCommand::Causality(causality)) = args.command {
        return super::causality::run(causality);
    }
    let Some(session) = args.session.clone().or(args.session_flag.clone()) else {
        bail!("which session? `kubestep analyze SESSION` (`kubestep sessions` lists them)");
    };
    let any_selected =
        args.slow || args.loops || args.errors || args.hot_loops || args.fights || args.conflicts || args.requeues;
    let on = |selected: bool, dropped: bool| (!any_selected || selected) && !dropped;
    let options = AnalyzeOptions {
        slow: on(args.slow, args.no_slow),
        loops: on(args.loops, args.no_loops),
        errors: on(args.errors, args.no_errors),
        threshold_ms: args.threshold,
        include_watch: args.include_watch,
        window: args.window as usize,
        hot_loops: on(args.hot_loops, args.no_hot_loops),
        fights: on(args.fights, args.no_fights),
        conflicts: on(args.conflicts, args.no_conflicts),
        requeues: on(args.requeues, args.no_requeues),
        behaviour: BehaviourOptions {
            hot_writes: args.hot_writes.max(2),
            hot_window_s: args.hot_window.as_secs().max(1),
            ..BehaviourOptions::default()
        },
    };
    block_on(async {
        let ctx = open_on(&args.data, &args.engine, TextColumns::AsViews).await?;
        ensure_session(&ctx, &args.data.data, &session).await?;
        let report = analyze(&ctx, &session, &options).await?;
        match args.format {
            OutputFormat::Json => super::print_json(&report)?,
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
    if let Some(hot) = &r.hot_loops {
        out.push_str("=== Hot Loops ===\n");
        if hot.is_empty() {
            out.push_str(&format!(
                "No actor wrote one object {} times within {}s\n",
                options.behaviour.hot_writes, options.behaviour.hot_window_s
            ));
        }
        for h in hot.iter().take(LISTED) {
            out.push_str(&format!(
                "  {} -> {} {}/{}: {} writes ({} within {}s, {:.1}/min) from {} to {}: {} ({} spec, {} status, {} no-op)\n",
                h.actor_id,
                h.kind,
                h.namespace,
                h.name,
                h.writes,
                h.peak_in_window,
                options.behaviour.hot_window_s,
                h.per_minute,
                h.first_at,
                h.last_at,
                match h.class.as_str() {
                    "no-op" => "no-op writes (only the resourceVersion moved)",
                    "status" => "status-only churn",
                    _ => "spec changes",
                },
                h.spec_writes,
                h.status_writes,
                h.noop_writes
            ));
            if !h.recurring_fields.is_empty() {
                let fields: Vec<String> =
                    h.recurring_fields.iter().map(|f| format!("{} ({}x)", f.path, f.count)).collect();
                out.push_str(&format!("      changing again and again: {}\n", fields.join(", ")));
            }
        }
        more(&mut out, hot.len() as u64, LISTED.min(hot.len()));
        out.push('\n');
    }
    if let Some(fights) = &r.fights {
        out.push_str("=== Fights ===\n");
        if fights.is_empty() {
            out.push_str("No actors fighting over a field\n");
        }
        for f in fights.iter().take(LISTED) {
            out.push_str(&format!(
                "  {} {}/{}: {} take turns ({} turns, {} to {})\n",
                f.kind,
                f.namespace,
                f.name,
                f.actors.join(" vs "),
                f.turns,
                f.first_at,
                f.last_at
            ));
            for field in f.fields.iter().take(5) {
                let values: Vec<String> =
                    field.values.iter().map(|v| format!("{} ({})", v.value, v.actors.join(", "))).collect();
                out.push_str(&format!("      {}: {}, {} flips\n", field.path, values.join(" <-> "), field.flips));
            }
        }
        more(&mut out, fights.len() as u64, LISTED.min(fights.len()));
        out.push('\n');
    }
    if let Some(storms) = &r.conflicts {
        out.push_str("=== Conflict Storms ===\n");
        if storms.is_empty() {
            out.push_str("No repeated 409 Conflicts\n");
        }
        for c in storms.iter().take(LISTED) {
            out.push_str(&format!(
                "  {} -> {} {}/{}: {} conflicts [{}-{}], base version up to {} versions behind, replaced up to {}ms before; {}\n",
                c.actor_id,
                c.kind,
                c.namespace,
                c.name,
                c.conflicts,
                c.first_index,
                c.last_index,
                c.max_versions_behind,
                c.max_ms_since_replaced,
                if c.recovered { "recovered (a later write succeeded)" } else { "never recovered" }
            ));
        }
        more(&mut out, storms.len() as u64, LISTED.min(storms.len()));
        out.push('\n');
    }
    if let Some(requeues) = &r.requeues {
        out.push_str("=== Error Requeue Loops ===\n");
        if requeues.is_empty() {
            out.push_str("No failure repeated for the same actor and object\n");
        }
        for q in requeues.iter().take(LISTED) {
            let object = if q.name.is_empty() {
                format!("{} {}/*", q.kind, q.namespace)
            } else {
                format!("{} {}/{}", q.kind, q.namespace, q.name)
            };
            out.push_str(&format!(
                "  {} -> {object}: {} x {} (every {:.1}s on average): {}\n",
                q.actor_id, q.status_code, q.attempts, q.mean_interval_s, q.error
            ));
        }
        more(&mut out, requeues.len() as u64, LISTED.min(requeues.len()));
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
