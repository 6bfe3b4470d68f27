//! `kubestep analyze causality --session S`: which write triggered which.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use kubestep_query::causality::{CausalityOptions, CausalityReport, Node, OpId, causality};
use kubestep_query::context::ensure_session;

use kubestep_query::TextColumns;

use crate::{DataDir, EngineArg, block_on, open_on};

/// How `analyze causality` prints.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum CausalityFormat {
    /// The top chains as readable lines.
    Text,
    /// The graph (`nodes`, `edges{from,to,type}`) and the chains.
    Json,
    /// Graphviz, the top chains' writes and edges.
    Dot,
}

/// Arguments of `kubestep analyze causality`.
#[derive(clap::Args)]
pub struct CausalityArgs {
    /// The session.
    #[arg(long, value_name = "NAME")]
    session: String,
    #[command(flatten)]
    data: DataDir,
    #[command(flatten)]
    engine: EngineArg,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    format: CausalityFormat,
    /// Longest chain, in writes.
    #[arg(long, value_name = "N", default_value_t = 6, value_parser = clap::value_parser!(u64).range(2..=50))]
    max_depth: u64,
    /// Only operations received in `START,END` (RFC 3339 or Unix seconds; either may be empty).
    #[arg(long, value_name = "START,END")]
    window: Option<String>,
    /// Only chains this actor takes part in.
    #[arg(long, value_name = "ACTOR")]
    actor: Option<String>,
    /// A request this long after a write to the same object can be its consequence.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    trigger_window: Duration,
    /// Requests of one actor closer than this form one reconcile episode.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    episode_gap: Duration,
    /// How many chains to report.
    #[arg(long, value_name = "N", default_value_t = 10)]
    chains: usize,
}

/// Parses one bound of `--window`: RFC 3339, or seconds since the epoch.
fn bound(text: &str) -> anyhow::Result<Option<i64>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(seconds) = text.parse::<i64>() {
        return Ok(Some(seconds.saturating_mul(1_000_000)));
    }
    let t = chrono::DateTime::parse_from_rfc3339(text)
        .with_context(|| format!("{text:?} is neither RFC 3339 (2024-05-01T10:00:00Z) nor Unix seconds"))?;
    Ok(Some(t.timestamp_micros()))
}

fn parse_window(text: &str) -> anyhow::Result<(Option<i64>, Option<i64>)> {
    let Some((start, end)) = text.split_once(',') else {
        bail!("--window takes START,END (either may be empty), got {text:?}");
    };
    let (start, end) = (bound(start)?, bound(end)?);
    if let (Some(s), Some(e)) = (start, end)
        && s > e
    {
        bail!("--window starts after it ends: {text:?}");
    }
    Ok((start, end))
}

/// Finds the chains and prints them.
pub fn run(args: CausalityArgs) -> anyhow::Result<ExitCode> {
    let options = CausalityOptions {
        max_depth: args.max_depth as usize,
        window: match &args.window {
            Some(w) => parse_window(w)?,
            None => (None, None),
        },
        actor: args.actor.clone(),
        trigger_window_ms: args.trigger_window.as_millis() as u64,
        episode_gap_ms: args.episode_gap.as_millis() as u64,
        max_chains: args.chains.max(1),
        // Only JSON prints the whole graph; the text and Graphviz show the chains.
        whole_graph: matches!(args.format, CausalityFormat::Json),
    };
    block_on(async {
        let ctx = open_on(&args.data, &args.engine, TextColumns::AsViews).await?;
        ensure_session(&ctx, &args.data.data, &args.session).await?;
        let report = causality(&ctx, &args.session, &options).await?;
        match args.format {
            CausalityFormat::Json => super::print_json(&report)?,
            CausalityFormat::Text => print!("{}", render_text(&report)),
            CausalityFormat::Dot => print!("{}", render_dot(&report)),
        }
        Ok(ExitCode::SUCCESS)
    })
}

fn node_line(node: &Node) -> String {
    let sub = if node.subresource.is_empty() { String::new() } else { format!("/{}", node.subresource) };
    let object = if node.ns.is_empty() { node.name.to_string() } else { format!("{}/{}", node.ns, node.name) };
    let base = if node.base_rv.is_empty() { String::new() } else { format!("{} ", node.base_rv) };
    format!(
        "[{}] {}  {}  {} {} {object}{sub}  rv {base}-> {}",
        node.index, node.ts, node.actor_id, node.verb, node.kind, node.rv
    )
}

/// The top chains as readable lines.
pub(crate) fn render_text(report: &CausalityReport) -> String {
    let nodes: BTreeMap<OpId, &Node> = report.nodes.iter().map(|n| (n.id, n)).collect();
    let kinds: Vec<String> = report.edges_by_type.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let mut out = format!(
        "Causality in session {}: {} writes linked by {} edges ({}); {} chains\n",
        report.session_id,
        report.writes_linked,
        report.edges_total,
        if kinds.is_empty() { "none".to_owned() } else { kinds.join(", ") },
        report.chains_total
    );
    if report.chains.is_empty() {
        out.push_str("No causal chains found.\n");
        return out;
    }
    for (i, chain) in report.chains.iter().enumerate() {
        out.push_str(&format!(
            "\nChain {}: {} writes, fan-out {}: {}\n",
            i + 1,
            chain.depth,
            chain.fan_out,
            chain.actors.join(" -> ")
        ));
        for (j, id) in chain.nodes.iter().enumerate() {
            let line = OpId::parse(id).and_then(|i| nodes.get(&i)).map_or_else(|| id.clone(), |n| node_line(n));
            match j {
                0 => out.push_str(&format!("  {line}\n")),
                _ => out.push_str(&format!(
                    "  {:>6} {line}\n",
                    format!("-{}->", chain.edges.get(j - 1).map_or("?", String::as_str))
                )),
            }
        }
    }
    if report.chains_total > report.chains.len() {
        out.push_str(&format!("\n... and {} more chains\n", report.chains_total - report.chains.len()));
    }
    out
}

/// Graphviz of the reported chains.
fn render_dot(report: &CausalityReport) -> String {
    let nodes: BTreeMap<OpId, &Node> = report.nodes.iter().map(|n| (n.id, n)).collect();
    let mut used = std::collections::BTreeSet::new();
    let mut links = std::collections::BTreeSet::new();
    for chain in &report.chains {
        for (j, id) in chain.nodes.iter().enumerate() {
            used.insert(id.clone());
            if j > 0 {
                links.insert((
                    chain.nodes[j - 1].clone(),
                    id.clone(),
                    chain.edges.get(j - 1).cloned().unwrap_or_default(),
                ));
            }
        }
    }
    let escape = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let mut out = format!(
        "digraph \"{}\" {{\n  rankdir=LR;\n  node [shape=box, fontname=monospace];\n",
        escape(&report.session_id)
    );
    for id in &used {
        let label = OpId::parse(id).and_then(|i| nodes.get(&i)).map_or_else(
            || id.clone(),
            |n| {
                format!(
                    "[{}] {}\\n{} {} {}/{}\\nrv {}",
                    n.index,
                    escape(&n.actor_id),
                    n.verb,
                    n.kind,
                    escape(&n.ns),
                    escape(&n.name),
                    escape(&n.rv)
                )
            },
        );
        out.push_str(&format!("  \"{id}\" [label=\"{label}\"];\n"));
    }
    for (from, to, kind) in links {
        out.push_str(&format!("  \"{from}\" -> \"{to}\" [label=\"{kind}\"];\n"));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::parse_window;

    #[test]
    fn windows_take_rfc3339_or_unix_seconds_and_open_ends() {
        assert_eq!(parse_window("2024-05-01T10:00:00Z,").unwrap(), (Some(1_714_557_600_000_000), None));
        assert_eq!(parse_window(",1714557600").unwrap(), (None, Some(1_714_557_600_000_000)));
        assert!(parse_window("2024-05-01T10:00:01Z,2024-05-01T10:00:00Z").is_err());
        assert!(parse_window("yesterday").is_err());
    }
}
