//! `kubestep replay SESSION`: step through what happened, in order.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use anyhow::Context;
use datafusion::prelude::SessionContext;
use kubestep_query::context::ensure_session;
use kubestep_query::diff::diff_objects;
use kubestep_query::replay::{ObjectFilter, ReplayQuery, Step, replay, step_objects};

use kubestep_query::TextColumns;

use crate::{DataDir, OutputFormat, block_on, open};

/// Arguments of `kubestep replay`.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// The session to replay.
    session: String,
    #[command(flatten)]
    data: DataDir,
    /// Start at this index of the session.
    #[arg(long, value_name = "INDEX", default_value_t = 0)]
    from: u64,
    /// Show at most this many steps.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Only this actor's steps (e.g. `kube-system/deployment-controller`).
    #[arg(long, value_name = "ACTOR")]
    actor: Option<String>,
    /// Only steps on this object: `KIND/NAMESPACE/NAME`, or `KIND/NAME` when cluster-scoped.
    #[arg(long, value_name = "KIND/NS/NAME", value_parser = ObjectFilter::parse)]
    object: Option<ObjectFilter>,
    /// Only writes (create, update, patch, delete).
    #[arg(long)]
    writes_only: bool,
    /// Under each write, the fields it changed in the object (old -> new).
    #[arg(long)]
    diff: bool,
    /// With --diff, include bookkeeping (managedFields, resourceVersion, condition timestamps).
    #[arg(long)]
    all_fields: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: OutputFormat,
    /// Step interactively: next, back, jump N, object, diff, quit (reads standard input).
    #[arg(short, long)]
    interactive: bool,
}

/// One line per step: index, time, actor, verb, object, versions, status, duration.
fn step_line(step: &Step, show_new: bool) -> String {
    let rv = match (&step.base_resource_version, &step.resource_version) {
        (Some(base), Some(new)) => format!("rv {base} -> {new}"),
        (None, Some(new)) => format!("rv -> {new}"),
        (Some(base), None) => format!("rv {base} ->"),
        (None, None) => "rv -".to_owned(),
    };
    let sub = step.subresource.as_deref().map(|s| format!("/{s}")).unwrap_or_default();
    let status = step.status_code.map_or_else(|| "-".to_owned(), |c| c.to_string());
    let mut line = format!(
        "[{}] {}  {}  {} {}{}  {}  {}  {:.1}ms",
        step.index,
        step.time,
        step.actor_id,
        step.operation_type,
        step.object_label(),
        sub,
        rv,
        status,
        step.duration_ms
    );
    if let Some(error) = &step.error {
        line.push_str(&format!("\n    error: {error}"));
    }
    if step.changes.is_none() && show_new && step.verb == "create" && step.error.is_none() {
        line.push_str("\n    (new object)");
    }
    if let Some(changes) = &step.changes {
        if changes.is_empty() {
            line.push_str("\n    (no field changed)");
        }
        for change in changes {
            line.push_str(&format!("\n    {}", change.describe()));
        }
    }
    line
}

/// Replays the session.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let query = ReplayQuery {
        session: args.session.clone(),
        from: args.from,
        limit: args.limit,
        actor: args.actor.clone(),
        object: args.object.clone(),
        writes_only: args.writes_only,
        diff: args.diff,
        all_fields: args.all_fields,
    };
    block_on(async {
        let ctx = open(&args.data, TextColumns::AsDocumented).await?;
        ensure_session(&ctx, &args.data.data, &args.session).await?;
        if args.interactive {
            return interactive(&ctx, query, args.all_fields).await;
        }
        let mut steps = replay(&ctx, &query).await?;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut first = true;
        if matches!(args.format, OutputFormat::Json) {
            writeln!(out, "[")?;
        }
        while let Some(step) = steps.next().await {
            let step = step?;
            match args.format {
                OutputFormat::Text => writeln!(out, "{}", step_line(&step, args.diff))?,
                OutputFormat::Json => {
                    if !first {
                        writeln!(out, ",")?;
                    }
                    write!(out, "  {}", serde_json::to_string(&step)?)?;
                }
            }
            first = false;
        }
        if matches!(args.format, OutputFormat::Json) {
            writeln!(out, "\n]")?;
        } else if first {
            writeln!(out, "no steps match")?;
        }
        out.flush()?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Steps kept around the cursor in interactive mode.
const PAGE: usize = 200;

/// The steps around the cursor, reloaded when the cursor leaves them.
struct Cursor {
    query: ReplayQuery,
    steps: Vec<Step>,
    position: usize,
}

impl Cursor {
    async fn load(&mut self, ctx: &SessionContext, from: u64) -> anyhow::Result<()> {
        let mut query = self.query.clone();
        query.from = from;
        query.limit = Some(PAGE);
        query.diff = false;
        let mut stream = replay(ctx, &query).await?;
        self.steps.clear();
        while let Some(step) = stream.next().await {
            self.steps.push(step?);
        }
        self.position = 0;
        Ok(())
    }

    fn current(&self) -> Option<&Step> {
        self.steps.get(self.position)
    }
}

async fn interactive(ctx: &SessionContext, query: ReplayQuery, all_fields: bool) -> anyhow::Result<ExitCode> {
    let mut cursor = Cursor { query: query.clone(), steps: Vec::new(), position: 0 };
    cursor.load(ctx, query.from).await?;
    let Some(first) = cursor.current() else {
        println!("no steps match");
        return Ok(ExitCode::SUCCESS);
    };
    println!(
        "Interactive replay of {}: n(ext), b(ack), j(ump) N, o(bject), d(iff), q(uit); Enter repeats",
        query.session
    );
    println!("{}", step_line(first, false));
    let stdin = std::io::stdin();
    let mut last = String::from("n");
    let mut line = String::new();
    loop {
        print!("[{}] > ", cursor.current().map_or(0, |s| s.index));
        std::io::stdout().flush()?;
        line.clear();
        if stdin.lock().read_line(&mut line).context("reading a command")? == 0 {
            println!();
            return Ok(ExitCode::SUCCESS);
        }
        let command = match line.trim() {
            "" => last.clone(),
            c => c.to_owned(),
        };
        last.clone_from(&command);
        let mut words = command.split_whitespace();
        match (words.next().unwrap_or(""), words.next()) {
            ("q" | "quit" | "exit", _) => return Ok(ExitCode::SUCCESS),
            ("n" | "next", _) => {
                if cursor.position + 1 < cursor.steps.len() {
                    cursor.position += 1;
                } else if let Some(step) = cursor.current() {
                    let from = step.index + 1;
                    let (steps, position) = (std::mem::take(&mut cursor.steps), cursor.position);
                    cursor.load(ctx, from).await?;
                    if cursor.steps.is_empty() {
                        cursor.steps = steps;
                        cursor.position = position;
                        println!("at the end of the session");
                        continue;
                    }
                }
                if let Some(step) = cursor.current() {
                    println!("{}", step_line(step, false));
                }
            }
            ("b" | "back", _) => {
                if cursor.position > 0 {
                    cursor.position -= 1;
                } else {
                    let Some(here) = cursor.current().map(|s| s.index) else { continue };
                    if here == 0 || here <= query.from {
                        println!("at the beginning");
                        continue;
                    }
                    // Load the page before: whatever matches from PAGE indexes back.
                    cursor.load(ctx, here.saturating_sub(PAGE as u64).max(query.from)).await?;
                    match cursor.steps.iter().rposition(|s| s.index < here) {
                        Some(p) => cursor.position = p,
                        None => {
                            cursor.load(ctx, here).await?;
                            println!("at the beginning");
                            continue;
                        }
                    }
                }
                if let Some(step) = cursor.current() {
                    println!("{}", step_line(step, false));
                }
            }
            ("j" | "jump", Some(n)) => {
                let Ok(target) = n.parse::<u64>() else {
                    println!("jump takes an index: j 42");
                    continue;
                };
                cursor.load(ctx, target).await?;
                match cursor.current() {
                    Some(step) => println!("{}", step_line(step, false)),
                    None => {
                        println!("no step at or after index {target}");
                        cursor.load(ctx, query.from).await?;
                    }
                }
            }
            ("o" | "object", _) => {
                let Some(step) = cursor.current() else { continue };
                let objects = step_objects(ctx, &query.session, step.index).await?;
                match objects.response.or(objects.request) {
                    Some(object) => println!("{}", pretty(&object)),
                    None => {
                        println!("no object was recorded for this step (the audit policy logged its metadata only)")
                    }
                }
            }
            ("d" | "diff", _) => {
                let Some(step) = cursor.current() else { continue };
                let objects = step_objects(ctx, &query.session, step.index).await?;
                match (objects.previous.as_deref(), objects.response.as_deref()) {
                    (_, None) => println!("no object to compare (not a successful write, or logged at Metadata level)"),
                    (previous, Some(now)) => match diff_objects(previous.unwrap_or("{}"), now, all_fields) {
                        Ok(changes) if changes.is_empty() => println!("no field changed"),
                        Ok(changes) => changes.iter().for_each(|c| println!("  {}", c.describe())),
                        Err(e) => println!("cannot compare: {e}"),
                    },
                }
            }
            (other, _) => println!("unknown command {other:?}: n(ext), b(ack), j(ump) N, o(bject), d(iff), q(uit)"),
        }
    }
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| json.to_owned())
}
