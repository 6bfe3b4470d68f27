//! `kubestep analyze causality`: which write triggered which, and the chains they form
//! (controller A's write triggers B, whose write triggers C).
//!
//! The edges are SQL (the `causal_edges` view: `rv`, `owner` and `watch` evidence, strongest kept per
//! pair); chains are maximal paths through them from writes nothing triggered, at most
//! `max_depth` writes long, ranked by length, then fan-out, then time, then index (deterministic).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use serde::Serialize;

use crate::QueryError;
use crate::context::{collect, frame};
use crate::values::{Floats, Ints, Micros, Strings, format_time};
use futures::StreamExt;

/// The `causal_edges` view narrowed to session `$1` and the window `$2`..`$3` before any edge is
/// computed, so that operations outside the window never count.
const EDGES_SCOPE: &str = "WHERE session_id = $1 AND received_at >= $2 AND received_at <= $3";
const NODES_SQL: &str = include_str!("../sql/causal_nodes.sql");

/// Paths explored before the search stops (the best found so far are kept).
const MAX_PATHS: usize = 20_000;

/// Settings of the causality analysis.
#[derive(Debug, Clone)]
pub struct CausalityOptions {
    /// Longest chain, in writes.
    pub max_depth: usize,
    /// Only operations received in this window (microseconds, inclusive).
    pub window: (Option<i64>, Option<i64>),
    /// Only chains in which this actor takes part.
    pub actor: Option<String>,
    /// A touch this long after a write can be its consequence.
    pub trigger_window_ms: u64,
    /// Requests of one actor closer than this belong to one episode.
    pub episode_gap_ms: u64,
    /// At most this many chains are reported.
    pub max_chains: usize,
    /// Whether the report carries the whole graph, every linked write and every edge (what
    /// `--format json` prints), or only the reported chains' writes and the edges between them
    /// (what the text, the Graphviz output and the timeline page show). A large session's graph
    /// is millions of writes: without it, only the writes on the paths searched are read back.
    pub whole_graph: bool,
}

impl Default for CausalityOptions {
    fn default() -> Self {
        Self {
            max_depth: 6,
            window: (None, None),
            actor: None,
            trigger_window_ms: 5000,
            episode_gap_ms: 1000,
            max_chains: 50,
            whole_graph: true,
        }
    }
}

/// An operation's id in the graph, `op:<index>` when written out. A large session's graph has
/// millions of them: they stay numbers until they are serialized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpId(pub u64);

impl OpId {
    /// The id `op:<index>` names, if it is one.
    pub fn parse(text: &str) -> Option<Self> {
        text.strip_prefix("op:")?.parse().ok().map(OpId)
    }
}

impl std::fmt::Display for OpId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "op:{}", self.0)
    }
}

impl Serialize for OpId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Text shared between the nodes and edges of a graph: a large session's graph has millions of
/// them, and most of their strings repeat (actors, kinds, namespaces, objects) or are shared with
/// an edge's evidence (versions, uids), so each distinct text is held once.
pub type SharedText = Arc<str>;

fn text<S: serde::Serializer>(value: &SharedText, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value)
}

/// A write in the graph (the seed's node shape).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    /// `op:<index>`.
    pub id: OpId,
    /// Always `op`.
    #[serde(rename = "type")]
    pub node_type: &'static str,
    /// Who wrote.
    #[serde(serialize_with = "text")]
    pub actor_id: SharedText,
    /// `CREATE`, `UPDATE`, ...
    #[serde(serialize_with = "text")]
    pub verb: SharedText,
    /// Kind.
    #[serde(serialize_with = "text")]
    pub kind: SharedText,
    /// Namespace.
    #[serde(serialize_with = "text")]
    pub ns: SharedText,
    /// Name.
    #[serde(serialize_with = "text")]
    pub name: SharedText,
    /// Subresource, if any.
    #[serde(serialize_with = "text")]
    pub subresource: SharedText,
    /// When it was received.
    pub ts: String,
    /// The version it was based on.
    #[serde(serialize_with = "text")]
    pub base_rv: SharedText,
    /// The version it produced.
    #[serde(serialize_with = "text")]
    pub rv: SharedText,
    /// Object uid.
    #[serde(serialize_with = "text")]
    pub uid: SharedText,
    /// Milliseconds.
    pub duration_ms: f64,
    /// Failure message (successful writes only here, so empty).
    #[serde(serialize_with = "text")]
    pub error: SharedText,
    /// Position in the session.
    pub index: u64,
}

/// `from` triggered `to` (the seed's edge shape, plus the evidence).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Edge {
    /// `op:<index>` of the triggering write.
    pub from: OpId,
    /// `op:<index>` of the triggered write.
    pub to: OpId,
    /// `rv`, `owner` or `watch`.
    #[serde(rename = "type")]
    pub edge_type: &'static str,
    /// The resourceVersion (rv), owner uid (owner) or object (watch) that links them: an
    /// attribute of the triggering write.
    #[serde(serialize_with = "text")]
    pub evidence: SharedText,
}

/// A chain of writes, each triggered by the previous one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Chain {
    /// The writes, as node ids, in order.
    pub nodes: Vec<String>,
    /// The actors, in order.
    pub actors: Vec<String>,
    /// The edge kinds between consecutive writes.
    pub edges: Vec<String>,
    /// Writes in the chain.
    pub depth: usize,
    /// Edges leaving the chain's writes, in total.
    pub fan_out: usize,
}

/// The causality graph and its chains.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CausalityReport {
    /// The session.
    pub session_id: String,
    /// Writes that have an edge (with `whole_graph` off, only the reported chains' writes).
    pub nodes: Vec<Node>,
    /// Edges (with `whole_graph` off, only those between the reported chains' writes).
    pub edges: Vec<Edge>,
    /// How many writes have an edge, whether `nodes` holds them all or not.
    #[serde(skip)]
    pub writes_linked: usize,
    /// How many edges there are, whether `edges` holds them all or not.
    #[serde(skip)]
    pub edges_total: usize,
    /// Chains, best first.
    pub chains: Vec<Chain>,
    /// Chains found, one per root write (the report keeps `max_chains`).
    pub chains_total: usize,
    /// Edge counts by kind.
    pub edges_by_type: BTreeMap<String, u64>,
}

/// An inferred reconcile episode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Episode {
    /// The actor.
    pub actor_id: String,
    /// Its episodes are numbered from 1.
    pub episode: u64,
    /// First request received.
    pub start_at: String,
    /// Last request completed.
    pub end_at: String,
    /// Index of its first request.
    pub first_index: u64,
    /// Index of its last request.
    pub last_index: u64,
    /// Reads.
    pub reads: u64,
    /// Writes.
    pub writes: u64,
    /// Failed requests.
    pub errors: u64,
}

/// The kinds of edge, strongest first: of two edges between the same writes, the stronger is kept.
const EDGE_KINDS: [&str; 3] = ["rv", "owner", "watch"];

/// The SQL of one `kind`'s edges (`rv`, `owner`, `watch`) for one session and window, with
/// `options`' thresholds: the `causal_edges` view with its last statement replaced by one over
/// that kind's pairs.
fn edges_sql(options: &CausalityOptions, kind: &str) -> String {
    let sql = crate::views::CAUSAL_EDGES
        .replace("{scope}", EDGES_SCOPE)
        .replace(crate::views::CAUSAL_EDGES_RESULT, &format!("SELECT from_index, to_index FROM {kind}_edges\n"));
    crate::views::fill(&sql, &[("trigger_ms", options.trigger_window_ms), ("episode_gap_ms", options.episode_gap_ms)])
}

/// The bounds of an open window: 0001-01-01 and 9999-12-31, the range every engine's timestamps
/// cover (the statement is logged, and may be run elsewhere).
const EARLIEST_US: i64 = -62_135_596_800_000_000;
const LATEST_US: i64 = 253_402_300_799_999_999;

fn timestamp(us: Option<i64>, default: i64) -> ScalarValue {
    ScalarValue::TimestampMicrosecond(Some(us.unwrap_or(default)), Some("UTC".into()))
}

/// The reconcile episodes of `session`.
pub async fn episodes(
    ctx: &SessionContext,
    session: &str,
    options: &CausalityOptions,
) -> Result<Vec<Episode>, QueryError> {
    let mut out = Vec::new();
    let sql = crate::views::for_session(
        crate::views::EPISODES,
        &[("episode_gap_ms", options.episode_gap_ms)],
        "start_at, actor_id",
    );
    for batch in collect(ctx, &sql, vec![ScalarValue::from(session)]).await? {
        let actor = Strings::of(&batch, "actor_id")?;
        let n = |name| Ints::of(&batch, name);
        let (episode, first, last, reads, writes, errors) =
            (n("episode")?, n("first_index")?, n("last_index")?, n("reads")?, n("writes")?, n("errors")?);
        let (start, end) = (Micros::of(&batch, "start_at")?, Micros::of(&batch, "end_at")?);
        let u = |c: &Ints, row| c.get(row).unwrap_or(0).max(0) as u64;
        for row in 0..batch.num_rows() {
            out.push(Episode {
                actor_id: actor.text(row),
                episode: u(&episode, row),
                start_at: format_time(start.get(row).unwrap_or(0)),
                end_at: format_time(end.get(row).unwrap_or(0)),
                first_index: u(&first, row),
                last_index: u(&last, row),
                reads: u(&reads, row),
                writes: u(&writes, row),
                errors: u(&errors, row),
            });
        }
    }
    Ok(out)
}

/// The causality graph and chains of `session`.
pub async fn causality(
    ctx: &SessionContext,
    session: &str,
    options: &CausalityOptions,
) -> Result<CausalityReport, QueryError> {
    crate::consistency::consistently(ctx, || causality_once(ctx, session, options)).await
}

async fn causality_once(
    ctx: &SessionContext,
    session: &str,
    options: &CausalityOptions,
) -> Result<CausalityReport, QueryError> {
    let params = vec![
        ScalarValue::from(session),
        timestamp(options.window.0, EARLIEST_US),
        timestamp(options.window.1, LATEST_US),
    ];
    // One statement per kind, streamed: a large session's edges are millions of rows, held here as
    // (from, to, kind) only. Of the edges of one pair, the strongest kind (first in EDGE_KINDS) stays.
    let mut pairs: Vec<(u64, u64, u8)> = Vec::new();
    for (kind, edge_kind) in EDGE_KINDS.iter().enumerate() {
        let mut stream = frame(ctx, &edges_sql(options, edge_kind), params.clone()).await?.execute_stream().await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let (from, to) = (Ints::of(&batch, "from_index")?, Ints::of(&batch, "to_index")?);
            for row in 0..batch.num_rows() {
                let (Some(f), Some(t)) = (from.get(row), to.get(row)) else { continue };
                pairs.push((f.max(0) as u64, t.max(0) as u64, kind as u8));
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup_by_key(|(f, t, _)| (*f, *t));
    pairs.shrink_to_fit();
    let edges: Vec<(u64, u64, &'static str)> =
        pairs.into_iter().map(|(f, t, k)| (f, t, EDGE_KINDS[k as usize])).collect();

    let mut outgoing: BTreeMap<u64, Vec<(u64, &str)>> = BTreeMap::new();
    let mut has_incoming = BTreeSet::new();
    for (f, t, kind) in &edges {
        outgoing.entry(*f).or_default().push((*t, *kind));
        has_incoming.insert(*t);
    }
    let writes_linked = outgoing.len() + has_incoming.iter().filter(|t| !outgoing.contains_key(t)).count();
    let roots: Vec<u64> = outgoing.keys().copied().filter(|i| !has_incoming.contains(i)).collect();
    drop(has_incoming);
    let mut paths: Vec<(Vec<u64>, Vec<&str>)> = Vec::new();
    for root in roots {
        let mut stack: Vec<(Vec<u64>, Vec<&str>)> = vec![(vec![root], Vec::new())];
        while let Some((path, kinds)) = stack.pop() {
            if paths.len() >= MAX_PATHS {
                break;
            }
            let last = *path.last().unwrap_or(&root);
            let next = outgoing.get(&last).filter(|_| path.len() < options.max_depth.max(2));
            match next {
                Some(targets) if !targets.is_empty() => {
                    for (t, kind) in targets.iter().rev() {
                        let mut p = path.clone();
                        p.push(*t);
                        let mut k = kinds.clone();
                        k.push(kind);
                        stack.push((p, k));
                    }
                }
                _ => {
                    if path.len() >= 2 {
                        paths.push((path, kinds));
                    }
                }
            }
        }
    }

    // The writes read back: every linked one for the whole graph, else those on the paths found
    // (the chains are chosen among them, and the actor filter needs their actors).
    let mut wanted: Vec<u64> = if options.whole_graph {
        edges.iter().flat_map(|(f, t, _)| [*f, *t]).collect()
    } else {
        paths.iter().flat_map(|(path, _)| path.iter().copied()).collect()
    };
    wanted.sort_unstable();
    wanted.dedup();
    let mut nodes = nodes(ctx, session, &wanted).await?;
    drop(wanted);
    let by_index: BTreeMap<u64, &Node> = nodes.iter().map(|n| (n.index, n)).collect();

    let actor_of = |i: &u64| by_index.get(i).map_or(String::new(), |n| n.actor_id.to_string());
    let mut chains: Vec<Chain> = paths
        .into_iter()
        .map(|(path, kinds)| Chain {
            actors: path.iter().map(actor_of).collect(),
            fan_out: path.iter().map(|i| outgoing.get(i).map_or(0, Vec::len)).sum(),
            depth: path.len(),
            nodes: path.iter().map(|i| format!("op:{i}")).collect(),
            edges: kinds.iter().map(|k| (*k).to_owned()).collect(),
        })
        .filter(|c| options.actor.as_ref().is_none_or(|a| c.actors.contains(a)))
        .collect();
    // Longest first, then widest, then earliest (node ids carry the index), deterministic.
    let start = |c: &Chain| c.nodes.first().and_then(|n| n[3..].parse::<u64>().ok()).unwrap_or(0);
    chains.sort_by(|a, b| {
        b.depth.cmp(&a.depth).then(b.fan_out.cmp(&a.fan_out)).then(start(a).cmp(&start(b))).then(a.nodes.cmp(&b.nodes))
    });
    // Paths from one root share most of their writes: report the best one of each root.
    let mut seen_roots = BTreeSet::new();
    chains.retain(|c| seen_roots.insert(c.nodes.first().cloned().unwrap_or_default()));
    let chains_total = chains.len();
    chains.truncate(options.max_chains);
    drop(outgoing);
    let mut edges_by_type = BTreeMap::new();
    for (_, _, kind) in &edges {
        *edges_by_type.entry((*kind).to_owned()).or_default() += 1;
    }
    let edges_total = edges.len();

    // Without the whole graph, the chains' writes and the edges between them.
    let in_chains: BTreeSet<u64> =
        chains.iter().flat_map(|c| c.nodes.iter().filter_map(|n| OpId::parse(n))).map(|id| id.0).collect();
    let shown = |i: &u64| options.whole_graph || in_chains.contains(i);
    // The evidence is an attribute of the triggering write, shared with its node.
    let mut objects: BTreeMap<u64, SharedText> = BTreeMap::new();
    let empty: SharedText = Arc::from("");
    let mut evidence = |from: u64, kind: &str| -> SharedText {
        let Some(node) = by_index.get(&from) else { return empty.clone() };
        match kind {
            "rv" => node.rv.clone(),
            "owner" => node.uid.clone(),
            _ => {
                objects.entry(from).or_insert_with(|| format!("{} {}/{}", node.kind, node.ns, node.name).into()).clone()
            }
        }
    };
    let edges = edges
        .into_iter()
        .filter(|(f, t, _)| shown(f) && shown(t))
        .map(|(f, t, kind)| Edge { from: OpId(f), to: OpId(t), edge_type: kind, evidence: evidence(f, kind) })
        .collect();
    nodes.retain(|n| shown(&n.index));
    Ok(CausalityReport {
        session_id: session.to_owned(),
        edges,
        nodes,
        writes_linked,
        edges_total,
        chains,
        chains_total,
        edges_by_type,
    })
}

/// The writes at `indexes` (sorted, distinct) of `session`, in index order.
async fn nodes(ctx: &SessionContext, session: &str, indexes: &[u64]) -> Result<Vec<Node>, QueryError> {
    let mut out = Vec::new();
    if indexes.is_empty() {
        return Ok(out);
    }
    let list = indexes.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let params = vec![ScalarValue::from(session), ScalarValue::from(list.as_str())];
    let mut stream = frame(ctx, NODES_SQL, params).await?.execute_stream().await?;
    let mut texts = Interner::default();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let index = Ints::of(&batch, "index")?;
        let s = |name| Strings::of(&batch, name);
        let (actor, op, kind, ns, name, sub) =
            (s("actor_id")?, s("operation_type")?, s("kind")?, s("namespace")?, s("name")?, s("subresource")?);
        let (uid, base, rv, error) = (s("uid")?, s("base_resource_version")?, s("resource_version")?, s("error")?);
        let received = Micros::of(&batch, "received_at")?;
        let duration = Floats::of(&batch, "duration_ms")?;
        for row in 0..batch.num_rows() {
            let i = index.get(row).unwrap_or(0).max(0) as u64;
            out.push(Node {
                id: OpId(i),
                node_type: "op",
                actor_id: texts.get(actor.get(row).unwrap_or("")),
                verb: texts.get(op.get(row).unwrap_or("")),
                kind: texts.get(kind.get(row).unwrap_or("")),
                ns: texts.get(ns.get(row).unwrap_or("")),
                name: texts.get(name.get(row).unwrap_or("")),
                subresource: texts.get(sub.get(row).unwrap_or("")),
                ts: received.get(row).map(format_time).unwrap_or_default(),
                base_rv: Arc::from(base.get(row).unwrap_or("")),
                rv: Arc::from(rv.get(row).unwrap_or("")),
                uid: texts.get(uid.get(row).unwrap_or("")),
                duration_ms: duration.get(row).unwrap_or(0.0),
                error: texts.get(error.get(row).unwrap_or("")),
                index: i,
            });
        }
    }
    out.sort_by_key(|n| n.index);
    Ok(out)
}

/// Hands out one shared copy of each distinct text.
#[derive(Default)]
struct Interner(HashMap<SharedText, ()>);

impl Interner {
    fn get(&mut self, text: &str) -> SharedText {
        if let Some((shared, _)) = self.0.get_key_value(text) {
            return shared.clone();
        }
        let shared: SharedText = Arc::from(text);
        self.0.insert(shared.clone(), ());
        shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_reads_only_its_own_edges() {
        let options = CausalityOptions::default();
        for kind in EDGE_KINDS {
            let sql = edges_sql(&options, kind);
            assert!(sql.contains(&format!("SELECT from_index, to_index FROM {kind}_edges")), "{kind}: {sql}");
            assert!(!sql.contains(crate::views::CAUSAL_EDGES_RESULT), "{kind} still returns every kind");
            assert!(!sql.contains('{'), "{kind} has an unfilled placeholder");
        }
    }
}
