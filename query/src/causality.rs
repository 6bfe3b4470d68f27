//! `kubestep analyze causality`: which write triggered which, and the chains they form
//! (controller A's write triggers B, whose write triggers C).
//!
//! The edges are those of the `causal_edges` view (`rv`, `owner` and `watch` evidence, strongest
//! kept per pair), all found in one pass over the session in order, which counts positions instead
//! of numbering the session: `watch` edges by [`watch`] (a few seconds of the session held at a
//! time), `rv` and `owner` edges by [`version_edges`] (every version produced, and the writes of
//! the last trigger window). Both mean what the view's SQL means, which a test checks edge by edge;
//! [`edges_sql`] gives that SQL per kind to other engines;
//! chains are maximal paths through them from writes nothing triggered, at most `max_depth` writes
//! long, ranked by length, then fan-out, then time, then index (deterministic).

mod version_edges;
mod watch;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use serde::Serialize;

use crate::QueryError;
use crate::context::{collect, frame, stream_ahead};
use crate::group_keys::{FastMap, decimal};
use crate::values::{Bools, Floats, Ints, Micros, StringLists, Strings, format_time};
use futures::StreamExt;

/// The `causal_edges` view narrowed to session `$1` and the window `$2`..`$3` before any edge is
/// computed, so that operations outside the window never count.
const EDGES_SCOPE: &str = "WHERE session_id = $1 AND received_at >= $2 AND received_at <= $3";
const NODES_SQL: &str = include_str!("../sql/causal_nodes.sql");
/// The session in order, narrowed to what the pass over it needs ([`watch`], [`version_edges`]).
pub const STEPS_SQL: &str = include_str!("../sql/causal_steps.sql");
/// How many operations of the session come before the window: the first step's index.
const STEPS_BEFORE_SQL: &str = include_str!("../sql/causal_steps_before.sql");

/// Paths explored from one root before its search stops (the best found so far is kept): a root
/// with a wide fan-out has more paths of the longest length than anyone reads.
const PATHS_PER_ROOT: usize = 10_000;
/// Paths explored in all before the search stops (the roots searched so far are ranked).
const MAX_PATHS: usize = 5_000_000;

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
    /// is millions of writes: without it, only the reported chains' writes are read back (all
    /// of them still, when `actor` filters the chains).
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
pub const EDGE_KINDS: [&str; 3] = ["rv", "owner", "watch"];
/// Positions in [`EDGE_KINDS`].
const RV_EDGE: u8 = 0;
const OWNER_EDGE: u8 = 1;
const WATCH_EDGE: u8 = 2;

/// The SQL of one `kind`'s edges (`rv`, `owner`, `watch`) for one session and window, with
/// `options`' thresholds: the `causal_edges` view with its last statement replaced by one over
/// that kind's pairs.
///
/// Public for the benchmarks, which give other engines the `watch` statement where this crate
/// streams [`STEPS_SQL`] into its own pass: the same question, asked in SQL.
pub fn edges_sql(options: &CausalityOptions, kind: &str) -> String {
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
    // Every kind from one pass over the session in order; a large session's edges are millions,
    // held here as (from, to, kind) only. Of the edges of one pair, the strongest kind (first in
    // EDGE_KINDS) stays.
    let (mut pairs, places) = pass_edges(ctx, &params, options).await?;
    pairs.sort_unstable();
    pairs.dedup_by_key(|(f, t, _)| (*f, *t));
    pairs.shrink_to_fit();
    let edges: Vec<(u64, u64, &'static str)> =
        pairs.into_iter().map(|(f, t, k)| (f, t, EDGE_KINDS[k as usize])).collect();

    let mut outgoing: Outgoing = BTreeMap::new();
    let mut has_incoming = BTreeSet::new();
    for (f, t, kind) in &edges {
        outgoing.entry(*f).or_default().push((*t, *kind));
        has_incoming.insert(*t);
    }
    let writes_linked = outgoing.len() + has_incoming.iter().filter(|t| !outgoing.contains_key(t)).count();
    let roots: Vec<u64> = outgoing.keys().copied().filter(|i| !has_incoming.contains(i)).collect();
    drop(has_incoming);

    // The whole graph reads every linked write back; so does an actor filter, which needs their
    // actors during the search. Otherwise only the reported chains' writes are read, afterwards.
    let read_all_first = options.whole_graph || options.actor.is_some();
    let mut nodes = if read_all_first {
        let mut linked: Vec<u64> = edges.iter().flat_map(|(f, t, _)| [*f, *t]).collect();
        linked.sort_unstable();
        linked.dedup();
        nodes(ctx, &params, &places, &linked).await?
    } else {
        Vec::new()
    };
    let mut best = {
        let actors: BTreeMap<u64, &str> = nodes.iter().map(|n| (n.index, &*n.actor_id)).collect();
        let wanted = options.actor.as_deref();
        let takes_part = |path: &[u64]| wanted.is_none_or(|a| path.iter().any(|i| actors.get(i) == Some(&a)));
        best_path_of_each_root(&outgoing, &roots, options.max_depth.max(2), takes_part)
    };
    // Longest first, then widest, then earliest, then by node ids (deterministic).
    best.sort_by(|a, b| {
        b.nodes
            .len()
            .cmp(&a.nodes.len())
            .then(b.fan_out.cmp(&a.fan_out))
            .then(a.nodes.first().cmp(&b.nodes.first()))
            .then_with(|| by_ids(&a.nodes, &b.nodes))
    });
    let chains_total = best.len();
    best.truncate(options.max_chains);
    if !read_all_first {
        let mut wanted: Vec<u64> = best.iter().flat_map(|p| p.nodes.iter().copied()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        nodes = self::nodes(ctx, &params, &places, &wanted).await?;
    }
    let by_index: BTreeMap<u64, &Node> = nodes.iter().map(|n| (n.index, n)).collect();
    let actor_of = |i: &u64| by_index.get(i).map_or(String::new(), |n| n.actor_id.to_string());
    let chains: Vec<Chain> = best
        .into_iter()
        .map(|path| Chain {
            actors: path.nodes.iter().map(actor_of).collect(),
            fan_out: path.fan_out,
            depth: path.nodes.len(),
            nodes: path.nodes.iter().map(|i| OpId(*i).to_string()).collect(),
            edges: path.kinds.iter().map(|k| (*k).to_owned()).collect(),
        })
        .collect();
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

/// Every edge of the session and window in `params`, as (from write's index, to write's index,
/// kind: its position in [`EDGE_KINDS`]), from the session's operations streamed in order: the
/// `watch` edges by [`watch`], the `rv` and `owner` edges by [`version_edges`].
async fn pass_edges(
    ctx: &SessionContext,
    params: &[ScalarValue],
    options: &CausalityOptions,
) -> Result<(Vec<(u64, u64, u8)>, WritePlaces), QueryError> {
    let mut watch_pass = watch::WatchEdges::new(options.trigger_window_ms, options.episode_gap_ms);
    let mut version_pass = version_edges::VersionEdges::new(options.trigger_window_ms);
    let (mut by_watch, mut by_version) = (Vec::new(), Vec::new());
    let mut watch_sink = |from, to| by_watch.push((from, to, WATCH_EDGE));
    let mut version_sink = |from, to, kind| {
        let kind = match kind {
            version_edges::EdgeKind::Rv => RV_EDGE,
            version_edges::EdgeKind::Owner => OWNER_EDGE,
        };
        by_version.push((from, to, kind));
    };
    // The steps stream in session order: a step's index is the operations before the window plus
    // its position in the stream. A window without a start has none before it.
    let mut index = match options.window.0 {
        None => 0,
        Some(_) => {
            let before = collect(ctx, STEPS_BEFORE_SQL, params[..2].to_vec()).await?;
            before.first().and_then(|b| crate::values::u64_at(b, 0, 0)).unwrap_or(0)
        }
    };
    let mut places = WritePlaces::default();
    // The time of the latest step, and how many steps before it were received in that microsecond.
    let (mut latest_at, mut same_time) = (None, 0u32);
    let mut stream = stream_ahead(ctx, STEPS_SQL, params.to_vec()).await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let actor = Strings::of(&batch, "actor_id")?;
        let (kind, namespace, name) =
            (Strings::of(&batch, "kind")?, Strings::of(&batch, "namespace")?, Strings::of(&batch, "name")?);
        let (received, completed) = (Micros::of(&batch, "received_at")?, Micros::of(&batch, "completed_at")?);
        let is_write = Bools::of(&batch, "is_write")?;
        let (uid, version, base) = (
            Strings::of(&batch, "uid")?,
            Strings::of(&batch, "resource_version")?,
            Strings::of(&batch, "base_resource_version")?,
        );
        let owners = StringLists::of(&batch, "owner_uids")?;
        for row in 0..batch.num_rows() {
            let i = index;
            index += 1;
            let at = received.get(row);
            if at.is_some() && at == latest_at {
                same_time += 1;
            } else {
                (latest_at, same_time) = (at, 0);
            }
            // Without an actor or a time, a step matches nothing (as in the view's joins).
            let (Some(a), Some(received_at)) = (actor.get(row), received.get(row)) else {
                continue;
            };
            let object = match (kind.get(row), name.get(row)) {
                (Some(k), Some(n)) => Some(watch_pass.object(k, namespace.get(row).unwrap_or(""), n)),
                _ => None,
            };
            let step = watch::Step {
                index: i,
                actor: watch_pass.actor(a),
                object,
                received_at,
                completed_at: completed.get(row),
                is_write: is_write.get(row).unwrap_or(false),
            };
            watch_pass.push(step, &mut watch_sink).map_err(|e| QueryError::Data(e.to_string()))?;
            if step.is_write {
                places.0.push((i, received_at, same_time));
                let mut owner_uids = Vec::new();
                owners.each(row, |owner| owner_uids.push(version_pass.uid(owner)));
                let write = version_edges::Write {
                    index: i,
                    actor: step.actor,
                    received_at,
                    completed_at: step.completed_at,
                    uid: uid.get(row).map(|u| version_pass.uid(u)),
                    resource_version: version.get(row).map(Into::into),
                    base_resource_version: base.get(row).map(Into::into),
                    owner_uids,
                };
                version_pass.push(write, &mut version_sink);
            }
        }
    }
    watch_pass.finish(&mut watch_sink);
    version_pass.finish(&mut version_sink);
    by_version.append(&mut by_watch);
    Ok((by_version, places))
}

/// Where each write of the pass was in the session order, by index: its `received_at` and how
/// many operations of the window received in the same microsecond came before it. With these,
/// `causal_nodes.sql` finds the writes by time instead of numbering the session.
#[derive(Debug, Default)]
struct WritePlaces(Vec<(u64, i64, u32)>);

impl WritePlaces {
    /// The time and rank of the write at `index`.
    fn of(&self, index: u64) -> Option<(i64, u32)> {
        let at = self.0.binary_search_by_key(&index, |(i, _, _)| *i).ok()?;
        self.0.get(at).map(|(_, received_at, rank)| (*received_at, *rank))
    }
}

/// The writes at `indexes` (sorted, distinct) of the session and window of `params`, in index
/// order, found by the time and rank the pass noted (`places`).
async fn nodes(
    ctx: &SessionContext,
    params: &[ScalarValue],
    places: &WritePlaces,
    indexes: &[u64],
) -> Result<Vec<Node>, QueryError> {
    let mut out = Vec::new();
    let wanted: HashMap<(i64, u32), u64> =
        indexes.iter().filter_map(|&i| places.of(i).map(|place| (place, i))).collect();
    if wanted.is_empty() {
        return Ok(out);
    }
    let times: BTreeSet<i64> = wanted.keys().map(|(at, _)| *at).collect();
    let list = times.iter().map(|&at| format_time(at)).collect::<Vec<_>>().join(",");
    let mut params = params.to_vec();
    params.push(ScalarValue::from(list.as_str()));
    let mut stream = frame(ctx, NODES_SQL, params).await?.execute_stream().await?;
    let mut texts = Interner::default();
    // The rows come in session order: count the operations received in each microsecond.
    let (mut latest_at, mut same_time) = (None, 0u32);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let s = |name| Strings::of(&batch, name);
        let (actor, op, kind, ns, name, sub) =
            (s("actor_id")?, s("operation_type")?, s("kind")?, s("namespace")?, s("name")?, s("subresource")?);
        let (uid, base, rv, error) = (s("uid")?, s("base_resource_version")?, s("resource_version")?, s("error")?);
        let received = Micros::of(&batch, "received_at")?;
        let duration = Floats::of(&batch, "duration_ms")?;
        for row in 0..batch.num_rows() {
            let at = received.get(row);
            if at.is_some() && at == latest_at {
                same_time += 1;
            } else {
                (latest_at, same_time) = (at, 0);
            }
            let Some(&i) = at.and_then(|at| wanted.get(&(at, same_time))) else { continue };
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

/// Each write's edges: the writes it triggered, with the kind of evidence.
type Outgoing = BTreeMap<u64, Vec<(u64, &'static str)>>;

/// A path through the graph: writes by index, the edge kinds between them, and its fan-out (the
/// edges leaving its writes, in total).
struct Path {
    nodes: Vec<u64>,
    kinds: Vec<&'static str>,
    fan_out: usize,
}

/// Orders node lists as their ids (`op:<index>`) compare as text, the order the JSON shows them in.
fn by_ids(a: &[u64], b: &[u64]) -> std::cmp::Ordering {
    // `op:<index>` against `op:<index>`: the indexes' decimal texts decide, compared as text.
    let (mut x, mut y) = ([0; 20], [0; 20]);
    for (i, j) in a.iter().zip(b) {
        let order = decimal(*i, &mut x).cmp(decimal(*j, &mut y));
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

/// For each root (a write nothing triggered), its best chain: the longest maximal path from it of
/// at most `max_depth` writes, then the widest, then the first by node ids, among those
/// `takes_part` accepts. Every root is searched (up to [`PATHS_PER_ROOT`] paths each), so the
/// chains of a long session come from all of it, not from its beginning.
fn best_path_of_each_root(
    outgoing: &Outgoing,
    roots: &[u64],
    max_depth: usize,
    takes_part: impl Fn(&[u64]) -> bool,
) -> Vec<Path> {
    let fan_out = |i: &u64| outgoing.get(i).map_or(0, Vec::len);
    let mut best_paths = Vec::new();
    let mut explored = 0usize;
    for &root in roots {
        if explored >= MAX_PATHS {
            tracing::warn!(
                explored,
                roots = roots.len(),
                "causality: the chain search stopped after {MAX_PATHS} paths; later roots are not ranked"
            );
            break;
        }
        let mut best: Option<Path> = None;
        let mut stack: Vec<(Vec<u64>, Vec<&'static str>)> = vec![(vec![root], Vec::new())];
        let mut paths = 0usize;
        while let Some((path, kinds)) = stack.pop() {
            if paths >= PATHS_PER_ROOT {
                break;
            }
            let last = *path.last().unwrap_or(&root);
            match outgoing.get(&last).filter(|targets| path.len() < max_depth && !targets.is_empty()) {
                Some(targets) => {
                    for (t, kind) in targets.iter().rev() {
                        let mut p = path.clone();
                        p.push(*t);
                        let mut k = kinds.clone();
                        k.push(kind);
                        stack.push((p, k));
                    }
                }
                None => {
                    paths += 1;
                    if path.len() < 2 || !takes_part(&path) {
                        continue;
                    }
                    let candidate = Path { fan_out: path.iter().map(fan_out).sum(), nodes: path, kinds };
                    let better = best.as_ref().is_none_or(|b| {
                        (candidate.nodes.len(), candidate.fan_out)
                            .cmp(&(b.nodes.len(), b.fan_out))
                            .then_with(|| by_ids(&b.nodes, &candidate.nodes))
                            .is_gt()
                    });
                    if better {
                        best = Some(candidate);
                    }
                }
            }
        }
        explored += paths;
        best_paths.extend(best);
    }
    best_paths
}

/// Hands out one shared copy of each distinct text.
#[derive(Default)]
struct Interner(FastMap<SharedText, ()>);

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
    fn node_lists_order_as_their_ids_compare_as_text() {
        let lists: [&[u64]; 9] = [&[], &[0], &[9], &[10], &[10, 2], &[10, 11], &[100], &[2, 5], &[u64::MAX]];
        for a in lists {
            for b in lists {
                let as_text = |l: &[u64]| l.iter().map(|i| OpId(*i).to_string()).collect::<Vec<_>>();
                assert_eq!(by_ids(a, b), as_text(a).cmp(&as_text(b)), "{a:?} against {b:?}");
            }
        }
        assert!(by_ids(&[10], &[9]).is_lt(), "op:10 comes before op:9 as text");
    }

    /// A graph from (from, to) pairs, every edge of kind `rv`.
    fn graph(pairs: &[(u64, u64)]) -> (Outgoing, Vec<u64>) {
        let mut outgoing: Outgoing = BTreeMap::new();
        for (f, t) in pairs {
            outgoing.entry(*f).or_default().push((*t, "rv"));
        }
        let targets: BTreeSet<u64> = pairs.iter().map(|(_, t)| *t).collect();
        let roots = outgoing.keys().copied().filter(|i| !targets.contains(i)).collect();
        (outgoing, roots)
    }

    #[test]
    fn a_root_s_best_path_is_its_longest_then_widest_then_first() {
        // 1 -> 2 -> 3 and 1 -> 4 -> 5 -> 6: the longer wins. 10 -> 11, 10 -> 12 -> 13 and
        // 10 -> 12 -> 14: the two longest are as wide, so the first by ids wins.
        let (outgoing, roots) =
            graph(&[(1, 2), (2, 3), (1, 4), (4, 5), (5, 6), (10, 11), (10, 12), (12, 13), (12, 14)]);
        let best = best_path_of_each_root(&outgoing, &roots, 6, |_| true);
        let found: Vec<Vec<u64>> = best.iter().map(|p| p.nodes.clone()).collect();
        assert_eq!(found, [vec![1, 4, 5, 6], vec![10, 12, 13]]);
        assert_eq!(best[1].fan_out, 4, "10 has two edges, 12 two, 13 none");
        // Depth is bounded: of two writes, 1 -> 2 and 1 -> 4 are as wide (first by ids wins), and
        // 10 -> 12 is wider than 10 -> 11. A filter drops the paths it refuses.
        let short = best_path_of_each_root(&outgoing, &roots, 2, |_| true);
        assert_eq!(short.iter().map(|p| p.nodes.clone()).collect::<Vec<_>>(), [vec![1, 2], vec![10, 12]]);
        let through_14 = best_path_of_each_root(&outgoing, &roots, 6, |path| path.contains(&14));
        assert_eq!(through_14.iter().map(|p| p.nodes.clone()).collect::<Vec<_>>(), [vec![10, 12, 14]]);
    }

    #[test]
    fn a_root_with_more_paths_than_anyone_reads_does_not_hide_the_later_roots() {
        // Root 0 fans out to 300 writes, each to 300 more: 90,000 paths of 3 writes, more than one
        // root's budget. A root much later in the session has a chain of 5 writes; it is found.
        let mut pairs = Vec::new();
        for i in 1..=300u64 {
            pairs.push((0, i));
            for j in 0..300u64 {
                pairs.push((i, 1_000 + i * 300 + j));
            }
        }
        pairs.extend([(5_000_000, 5_000_001), (5_000_001, 5_000_002), (5_000_002, 5_000_003), (5_000_003, 5_000_004)]);
        let (outgoing, roots) = graph(&pairs);
        let best = best_path_of_each_root(&outgoing, &roots, 6, |_| true);
        assert_eq!(best.len(), 2);
        assert_eq!(best[0].nodes.len(), 3);
        assert_eq!(best[1].nodes, [5_000_000, 5_000_001, 5_000_002, 5_000_003, 5_000_004]);
    }

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
