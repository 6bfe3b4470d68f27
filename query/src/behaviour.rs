//! What the controllers did wrong: hot loops, fights, conflict storms and error requeue loops.
//!
//! Candidates of hot loops and fights come from one pass over the session's successful writes
//! ([`crate::candidates`], which gives the `hot_loops` and `fight_candidates` views' rows); those of
//! conflict storms and requeues from the session walk, which counts them as it goes by
//! ([`crate::repeated_failures`], which gives the `conflict_storms` and `error_requeues` views' rows).
//! The hot-loop and fight candidate objects' writes are then read in order, all candidates in
//! one statement (`object_writes.sql`), to compare consecutive versions of each object: which fields
//! each write changed, and which of them flip back and forth between actors.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures::StreamExt;

use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::QueryError;
use crate::candidates::{self, FightCandidate, HotLoopCandidate};
use crate::context::{collect, stream_ahead, with_filters_in_scan};
use crate::diff::{FieldChange, diff_raw};
use crate::group_keys::GroupMap;
use crate::repeated_failures::ConflictTally;
use crate::session_walk::{self, WalkFor};
use crate::values::{Ints, Micros, Strings, format_time};
use crate::views::{CONFLICT_STORMS, ERROR_REQUEUES, for_session, for_session_columns};

const OBJECT_WRITES_SQL: &str = include_str!("../sql/object_writes.sql");
const OBJECT_HISTORY_SQL: &str = include_str!("../sql/object_history.sql");

/// Thresholds of the behaviour sections.
#[derive(Debug, Clone)]
pub struct BehaviourOptions {
    /// A hot loop is at least this many writes of one actor to one object...
    pub hot_writes: u64,
    /// ... within this many seconds. Also the longest gap between two turns of a fight.
    pub hot_window_s: u64,
    /// A fight needs at least this many turns (a write by another actor than the previous one).
    pub fight_turns: u64,
    /// A conflict storm is at least this many 409s of one actor on one object.
    pub conflict_min: u64,
    /// An error requeue loop is at least this many identical failures.
    pub requeue_min: u64,
}

impl Default for BehaviourOptions {
    fn default() -> Self {
        Self { hot_writes: 10, hot_window_s: 60, fight_turns: 4, conflict_min: 3, requeue_min: 3 }
    }
}

/// A field path and how often it appeared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldCount {
    /// The path.
    pub path: String,
    /// How many writes changed it.
    pub count: u64,
}

/// One actor writing one object over and over.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HotLoop {
    /// The actor.
    pub actor_id: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Successful writes in the session.
    pub writes: u64,
    /// Most writes within one window.
    pub peak_in_window: u64,
    /// Writes per minute between the first and the last.
    pub per_minute: f64,
    /// First write.
    pub first_at: String,
    /// Last write.
    pub last_at: String,
    /// `spec` (the generation moved or non-status fields changed), `status` (only status
    /// changed), or `no-op` (nothing but bookkeeping changed): the most common kind of write.
    pub class: String,
    /// Writes that changed the spec.
    pub spec_writes: u64,
    /// Writes that changed only status.
    pub status_writes: u64,
    /// Writes that changed nothing.
    pub noop_writes: u64,
    /// Field paths changed by more than one of the writes, most frequent first.
    pub recurring_fields: Vec<FieldCount>,
}

/// A value of a contested field, and who set it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContestedValue {
    /// The value, as JSON.
    pub value: Value,
    /// The actors that set it.
    pub actors: Vec<String>,
    /// How many writes set it.
    pub count: u64,
}

/// A field two actors keep setting to different values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlippingField {
    /// The path.
    pub path: String,
    /// Changes of the field by another actor than the one that changed it last.
    pub flips: u64,
    /// The values, most often set first.
    pub values: Vec<ContestedValue>,
}

/// Two or more actors taking turns on one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fight {
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The actors, in the order they first changed a contested field.
    pub actors: Vec<String>,
    /// Writes by another actor than the previous writer.
    pub turns: u64,
    /// The fields that flip.
    pub fields: Vec<FlippingField>,
    /// First write.
    pub first_at: String,
    /// Last write.
    pub last_at: String,
}

/// Repeated 409s of one actor on one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConflictStorm {
    /// The actor.
    pub actor_id: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// 409 answers.
    pub conflicts: u64,
    /// Index of the first.
    pub first_index: u64,
    /// Index of the last.
    pub last_index: u64,
    /// The most versions the object had moved past the version an attempt was based on.
    pub max_versions_behind: u64,
    /// The longest time (ms) an attempt's base version had already been replaced.
    pub max_ms_since_replaced: u64,
    /// Whether the actor wrote the object successfully after its last conflict.
    pub recovered: bool,
    /// First conflict.
    pub first_at: String,
    /// Last conflict.
    pub last_at: String,
}

/// The same failure for the same actor and object, again and again.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Requeue {
    /// The actor.
    pub actor_id: String,
    /// Kind.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name (empty for collections).
    pub name: String,
    /// HTTP status.
    pub status_code: i64,
    /// Attempts.
    pub attempts: u64,
    /// Mean seconds between attempts.
    pub mean_interval_s: f64,
    /// First attempt.
    pub first_at: String,
    /// Last attempt.
    pub last_at: String,
    /// The error message.
    pub error: String,
}

/// One successful write, as the comparisons need it.
struct Write {
    actor: String,
    generation: Option<i64>,
    /// The response object, checked to be JSON once and kept as text (None when absent or not
    /// JSON): versions are compared text first (`diff_raw`), without building either tree.
    object: Option<Box<RawValue>>,
}

/// How the per-object statements name an object: `kind/namespace/name` (namespace empty for
/// cluster-scoped objects), the `object_key` those statements compute.
fn object_key(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// The parameters of a per-object statement: the session and the objects, one key per line.
fn object_params(session: &str, keys: &BTreeSet<String>) -> Vec<ScalarValue> {
    let list: Vec<&str> = keys.iter().map(String::as_str).collect();
    vec![ScalarValue::from(session), ScalarValue::from(list.join("\n"))]
}

/// Streams the successful writes of the objects in `keys` in session order and calls
/// `visit(key, before, after)` for each pair of consecutive writes of one object. Only the latest
/// write of each object is held, so memory grows with the objects, not with their writes.
async fn each_write_pair(
    ctx: &SessionContext,
    session: &str,
    keys: &BTreeSet<String>,
    mut visit: impl FnMut(&str, &Write, &Write),
) -> Result<(), QueryError> {
    if keys.is_empty() {
        return Ok(());
    }
    // The candidates' writes are a few of the session's operations, and their bodies most of its
    // bytes: the join's keys filter the rows before the bodies are decoded.
    let selective = with_filters_in_scan(ctx);
    let mut stream = stream_ahead(&selective, OBJECT_WRITES_SQL, object_params(session, keys)).await?;
    let mut latest: GroupMap<Write> = GroupMap::default();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let key = Strings::of(&batch, "object_key")?;
        let actor = Strings::of(&batch, "actor_id")?;
        let generation = Ints::of(&batch, "generation")?;
        let object = Strings::of(&batch, "response_object")?;
        for row in 0..batch.num_rows() {
            let write = Write {
                actor: actor.text(row),
                generation: generation.get(row),
                object: object.get(row).and_then(|text| RawValue::from_string(text.to_owned()).ok()),
            };
            let key = key.get(row).unwrap_or("");
            match latest.get_mut(key) {
                Some(before) => {
                    visit(key, before, &write);
                    *before = write;
                }
                None => {
                    latest.insert(key.to_owned(), write);
                }
            }
        }
    }
    Ok(())
}

/// Hot loops of `session`.
pub async fn hot_loops(ctx: &SessionContext, session: &str, o: &BehaviourOptions) -> Result<Vec<HotLoop>, QueryError> {
    let (loops, _) = hot_loops_and_fights(ctx, session, o, true, false).await?;
    Ok(loops.unwrap_or_default())
}

/// Fights of `session`.
pub async fn fights(ctx: &SessionContext, session: &str, o: &BehaviourOptions) -> Result<Vec<Fight>, QueryError> {
    let (_, fights) = hot_loops_and_fights(ctx, session, o, false, true).await?;
    Ok(fights.unwrap_or_default())
}

/// Hot loops and fights of `session`, those asked for. Both compare consecutive versions of their
/// objects: one pass over the writes of all their objects together serves both (the pass reads
/// response objects and is most of their cost).
pub async fn hot_loops_and_fights(
    ctx: &SessionContext,
    session: &str,
    o: &BehaviourOptions,
    want_hot_loops: bool,
    want_fights: bool,
) -> Result<(Option<Vec<HotLoop>>, Option<Vec<Fight>>), QueryError> {
    let began = std::time::Instant::now();
    let found = candidates::find(ctx, session, o, want_hot_loops, want_fights).await?;
    let mut loops: Vec<HotLoop> = found.hot_loops.into_iter().map(unclassified).collect();
    let candidates = found.fights;

    let mut loops_by_object: GroupMap<Vec<usize>> = GroupMap::default();
    for (i, hot) in loops.iter().enumerate() {
        loops_by_object.entry(object_key(&hot.kind, &hot.namespace, &hot.name)).or_default().push(i);
    }
    let candidate_key =
        |c: &FightCandidate| object_key(c.kind.as_deref().unwrap_or(""), c.namespace.as_deref().unwrap_or(""), &c.name);
    let fight_keys: GroupMap<()> = candidates.iter().map(|c| (candidate_key(c), ())).collect();
    let keys: BTreeSet<String> = loops_by_object.keys().chain(fight_keys.keys()).cloned().collect();
    tracing::debug!(elapsed_ms = began.elapsed().as_millis(), objects = keys.len(), "hot-loop and fight candidates");

    let mut fields: Vec<BTreeMap<String, u64>> = vec![BTreeMap::new(); loops.len()];
    let mut trackers: GroupMap<FlipTracker> = GroupMap::default();
    each_write_pair(ctx, session, &keys, |key, before, after| {
        // The hot loop of the writing actor on this object, if any (one per actor and object).
        let hot = loops_by_object.get(key).into_iter().flatten().copied().find(|&i| loops[i].actor_id == after.actor);
        let fight = fight_keys.contains_key(key);
        if hot.is_none() && !fight {
            return;
        }
        // Compared once, for both sections.
        let changes = match (&before.object, &after.object) {
            (Some(a), Some(b)) => diff_raw(a, b, false),
            _ => Vec::new(),
        };
        if let Some(i) = hot {
            classify_pair(&mut loops[i], &mut fields[i], before, after, &changes);
        }
        if fight {
            match trackers.get_mut(key) {
                Some(tracker) => tracker.pair(after, &changes),
                None => trackers.entry(key.to_owned()).or_default().pair(after, &changes),
            }
        }
    })
    .await?;
    tracing::debug!(elapsed_ms = began.elapsed().as_millis(), "versions compared");
    for (hot, fields) in loops.iter_mut().zip(fields) {
        finish_classification(hot, fields);
    }

    let mut flipping: HashMap<String, (Vec<FlippingField>, Vec<String>)> =
        trackers.into_iter().map(|(key, tracker)| (key, tracker.finish())).collect();
    let mut fights = Vec::new();
    for c in candidates {
        let Some((fields, actors)) = flipping.remove(&candidate_key(&c)) else { continue };
        if fields.is_empty() {
            continue;
        }
        fights.push(Fight {
            kind: c.kind.unwrap_or_default(),
            namespace: c.namespace.unwrap_or_default(),
            name: c.name,
            actors,
            turns: c.turns,
            fields,
            first_at: format_time(c.first_us),
            last_at: format_time(c.last_us),
        });
    }
    Ok((want_hot_loops.then_some(loops), want_fights.then_some(fights)))
}

/// A hot-loop candidate as the report shows it, not yet classified.
fn unclassified(c: HotLoopCandidate) -> HotLoop {
    let minutes = ((c.last_us - c.first_us) as f64 / 60e6).max(1.0 / 60.0);
    HotLoop {
        actor_id: c.actor_id.unwrap_or_default(),
        kind: c.kind.unwrap_or_default(),
        namespace: c.namespace.unwrap_or_default(),
        name: c.name,
        writes: c.writes,
        peak_in_window: c.peak_in_window,
        per_minute: (c.writes.saturating_sub(1) as f64 / minutes * 10.0).round() / 10.0,
        first_at: format_time(c.first_us),
        last_at: format_time(c.last_us),
        class: String::new(),
        spec_writes: 0,
        status_writes: 0,
        noop_writes: 0,
        recurring_fields: Vec::new(),
    }
}

/// Sorts one write of the loop into spec, status or no-op by what it `changes` from the version
/// before it (written by anyone), and counts the fields it changed.
fn classify_pair(
    hot: &mut HotLoop,
    fields: &mut BTreeMap<String, u64>,
    before: &Write,
    after: &Write,
    changes: &[FieldChange],
) {
    for change in changes {
        *fields.entry(change.path.clone()).or_default() += 1;
    }
    let generation_moved = before.generation.is_some() && before.generation != after.generation;
    if generation_moved || changes.iter().any(|c| !c.path.starts_with("status")) {
        hot.spec_writes += 1;
    } else if changes.is_empty() {
        hot.noop_writes += 1;
    } else {
        hot.status_writes += 1;
    }
}

/// The loop's class (what most of its writes were) and the fields that changed more than once.
fn finish_classification(hot: &mut HotLoop, fields: BTreeMap<String, u64>) {
    let counts = [(hot.spec_writes, "spec"), (hot.status_writes, "status"), (hot.noop_writes, "no-op")];
    hot.class = counts.iter().max_by_key(|(n, _)| *n).map_or("no-op", |(_, c)| *c).to_owned();
    let mut recurring: Vec<FieldCount> =
        fields.into_iter().filter(|(_, n)| *n > 1).map(|(path, count)| FieldCount { path, count }).collect();
    recurring.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
    recurring.truncate(10);
    hot.recurring_fields = recurring;
}

/// One field's history on one object: who set it last, how often it changed hands, its values.
struct Track {
    last_actor: String,
    flips: u64,
    values: Vec<ContestedValue>,
}

/// The fields of one object changed, in turn, by different actors to different values: fed the
/// object's consecutive versions one pair at a time.
#[derive(Default)]
struct FlipTracker {
    tracks: BTreeMap<String, Track>,
}

impl FlipTracker {
    /// Counts one write of the object: the fields it `changes` from the version before it, outside
    /// `status`, and who set which value.
    fn pair(&mut self, after: &Write, changes: &[FieldChange]) {
        for change in changes.iter().filter(|c| !c.path.starts_with("status")) {
            let value = change.new.clone().unwrap_or(Value::Null);
            let track = self.tracks.entry(change.path.clone()).or_insert_with(|| Track {
                last_actor: String::new(),
                flips: 0,
                values: Vec::new(),
            });
            if !track.last_actor.is_empty() && track.last_actor != after.actor {
                track.flips += 1;
            }
            track.last_actor.clone_from(&after.actor);
            match track.values.iter_mut().find(|v| v.value == value) {
                Some(v) => {
                    v.count += 1;
                    if !v.actors.contains(&after.actor) {
                        v.actors.push(after.actor.clone());
                    }
                }
                None => track.values.push(ContestedValue { value, actors: vec![after.actor.clone()], count: 1 }),
            }
        }
    }

    /// The flipping fields, most flips first, and the actors behind them in order of appearance.
    fn finish(self) -> (Vec<FlippingField>, Vec<String>) {
        let mut order: Vec<String> = Vec::new();
        let mut fields = Vec::new();
        for (path, mut track) in self.tracks {
            let setters: BTreeSet<&String> = track.values.iter().flat_map(|v| &v.actors).collect();
            // A fight goes back and forth: some value comes back. A counter (metadata.generation)
            // moves on and never flips.
            let returns = track.values.iter().any(|v| v.count >= 2);
            if track.flips < 2 || track.values.len() < 2 || setters.len() < 2 || !returns {
                continue;
            }
            for v in &track.values {
                for actor in &v.actors {
                    if !order.contains(actor) {
                        order.push(actor.clone());
                    }
                }
            }
            track.values.sort_by_key(|v| std::cmp::Reverse(v.count));
            fields.push(FlippingField { path, flips: track.flips, values: track.values });
        }
        fields.sort_by(|a, b| b.flips.cmp(&a.flips).then_with(|| a.path.cmp(&b.path)));
        (fields, order)
    }
}

/// The SQL of the `conflict_storms` and `error_requeues` views for one session (`$1`), whose rows
/// `analyze` counts in its walk over the session instead (see [`crate::repeated_failures`]): what
/// another engine runs to answer the same (the benchmark report gives them to DuckDB). The storms
/// leave out the view's index columns, which the walk counts and which would make an engine number
/// the whole session.
pub fn repeated_failures_views_sql(o: &BehaviourOptions) -> [String; 2] {
    [
        for_session_columns(
            CONFLICT_STORMS,
            &[("conflict_min", o.conflict_min)],
            "session_id, actor_id, kind, namespace, name, conflicts, first_at, last_at",
            "conflicts DESC, actor_id, kind, namespace, name",
        ),
        for_session(
            ERROR_REQUEUES,
            &[("requeue_min", o.requeue_min)],
            "attempts DESC, actor_id, kind, namespace, name",
        ),
    ]
}

/// Conflict storms of `session`.
pub async fn conflict_storms(
    ctx: &SessionContext,
    session: &str,
    o: &BehaviourOptions,
) -> Result<Vec<ConflictStorm>, QueryError> {
    let wanted = WalkFor { conflicts: true, ..WalkFor::default() };
    let found = session_walk::walk(ctx, session, &wanted).await?;
    storms_of(ctx, session, found.conflicts.unwrap_or_default(), o).await
}

/// The storms among the 409s the session walk counted, with how stale their attempts were: the
/// versions of the storms' objects are read for that (`object_history.sql`), of theirs only.
pub(crate) async fn storms_of(
    ctx: &SessionContext,
    session: &str,
    tally: ConflictTally,
    o: &BehaviourOptions,
) -> Result<Vec<ConflictStorm>, QueryError> {
    let storms = tally.storms(o.conflict_min);
    let keys: BTreeSet<String> = storms.iter().map(|(s, _)| object_key(&s.kind, &s.namespace, &s.name)).collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let history = object_history(ctx, session, &keys).await?;
    let mut out = Vec::with_capacity(storms.len());
    for (mut storm, attempts) in storms {
        let key = object_key(&storm.kind, &storm.namespace, &storm.name);
        let versions = history.get(&key).map_or(&[][..], Vec::as_slice);
        for attempt in &attempts {
            let (at, Some(sent)) = (attempt.received_at, &attempt.sent) else { continue };
            // The version sent, then every version produced after it and before this attempt.
            let Some(position) = versions.iter().rposition(|v| &v.resource_version == sent && v.completed_at < at)
            else {
                continue;
            };
            let newer: Vec<&Version> = versions[position + 1..].iter().filter(|v| v.completed_at < at).collect();
            storm.max_versions_behind = storm.max_versions_behind.max(newer.len() as u64);
            if let Some(replaced) = newer.first() {
                storm.max_ms_since_replaced =
                    storm.max_ms_since_replaced.max(((at - replaced.completed_at) / 1000).max(0) as u64);
            }
        }
        out.push(storm);
    }
    Ok(out)
}

/// One version of an object, as a successful write produced it.
struct Version {
    resource_version: String,
    completed_at: i64,
}

/// The versions of each object in `keys`, in the order they were produced.
async fn object_history(
    ctx: &SessionContext,
    session: &str,
    keys: &BTreeSet<String>,
) -> Result<HashMap<String, Vec<Version>>, QueryError> {
    let mut out: HashMap<String, Vec<Version>> = HashMap::new();
    for batch in collect(ctx, OBJECT_HISTORY_SQL, object_params(session, keys)).await? {
        let key = Strings::of(&batch, "object_key")?;
        let (rv, at) = (Strings::of(&batch, "resource_version")?, Micros::of(&batch, "completed_at")?);
        for row in 0..batch.num_rows() {
            out.entry(key.text(row))
                .or_default()
                .push(Version { resource_version: rv.text(row), completed_at: at.get(row).unwrap_or(0) });
        }
    }
    Ok(out)
}

/// Error requeue loops of `session`.
pub async fn requeues(ctx: &SessionContext, session: &str, o: &BehaviourOptions) -> Result<Vec<Requeue>, QueryError> {
    let wanted = WalkFor { requeues: true, ..WalkFor::default() };
    let found = session_walk::walk(ctx, session, &wanted).await?;
    Ok(found.requeues.unwrap_or_default().requeues(o.requeue_min))
}
