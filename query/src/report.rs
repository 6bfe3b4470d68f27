//! What the timeline report of a session shows: its actors as lanes, its operations as marks (or,
//! for a dense session, as counts per time bucket), the diffs of its writes, and the findings of
//! `analyze` and `analyze causality`. The binary turns a [`SessionReport`] into the HTML page.

use std::collections::{BTreeMap, HashMap, HashSet};

use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::QueryError;
use crate::analyze::{AnalysisReport, AnalyzeOptions, analyze};
use crate::causality::{CausalityOptions, CausalityReport, causality};
use crate::context::collect;
use crate::diff::FieldChange;
use crate::replay::{ReplayQuery, replay};
use crate::values::{Floats, Ints, Micros, Strings, format_time};

const LANES_SQL: &str = include_str!("../sql/report_lanes.sql");
const DENSITY_SQL: &str = include_str!("../sql/report_density.sql");
const MARKS_SQL: &str = include_str!("../sql/report_marks.sql");

/// How much of a session the report carries.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// At most this many operations are drawn one by one; a larger session keeps an even sample of
    /// its failures and of its writes (up to this many) and shows the rest as counts per bucket.
    pub max_marks: usize,
    /// The session's span is cut into this many buckets for the density bars.
    pub buckets: usize,
    /// At most this many writes carry their diff.
    pub max_diffs: usize,
    /// The analyses whose findings are highlighted.
    pub analyze: AnalyzeOptions,
    /// The causality chains drawn as links.
    pub causality: CausalityOptions,
}

impl Default for ReportOptions {
    fn default() -> Self {
        Self {
            max_marks: 50_000,
            buckets: 2_000,
            max_diffs: 5_000,
            analyze: AnalyzeOptions::all(),
            // The page draws the chains: only their writes and the edges between them travel with
            // it (the whole graph of a large session is tens of megabytes).
            causality: CausalityOptions { whole_graph: false, ..CausalityOptions::default() },
        }
    }
}

/// One actor's swim lane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lane {
    /// The actor.
    pub actor_id: String,
    /// Its operations in the session.
    pub operations: u64,
    /// Of which writes.
    pub writes: u64,
    /// Of which failed.
    pub errors: u64,
}

/// The operations drawn one by one, as columns (one entry per mark, in session order), so that a
/// page with tens of thousands of them stays small. Text repeats go through `texts`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Marks {
    /// Position in the session.
    pub index: Vec<u64>,
    /// Microseconds after the session's first request.
    pub t: Vec<i64>,
    /// Lane (position in `lanes`).
    pub lane: Vec<u32>,
    /// Verb, as a position in `texts`.
    pub verb: Vec<u32>,
    /// `Kind ns/name`, as a position in `texts`.
    pub object: Vec<u32>,
    /// HTTP status (0 when unknown).
    pub status: Vec<i64>,
    /// Milliseconds.
    pub duration_ms: Vec<f64>,
    /// `base -> new` resourceVersion, as a position in `texts` (0: none).
    pub versions: Vec<u32>,
    /// Failure message, as a position in `texts` (0: none).
    pub error: Vec<u32>,
}

/// Everything the report page shows about one session.
#[derive(Debug, Clone, Serialize)]
pub struct SessionReport {
    /// The session.
    pub session_id: String,
    /// Its first request (RFC 3339).
    pub first_at: String,
    /// Its first request, microseconds since the epoch (mark times count from here).
    pub start_us: i64,
    /// Microseconds from the first request to the last completion.
    pub span_us: i64,
    /// Operations in the session.
    pub total_operations: u64,
    /// One lane per actor, busiest first.
    pub lanes: Vec<Lane>,
    /// Distinct strings the marks refer to; `texts[0]` is empty.
    pub texts: Vec<String>,
    /// Operations drawn one by one.
    pub marks: Marks,
    /// True when every operation is a mark; false when reads that succeeded are only counted and
    /// the writes are a sample.
    pub marks_complete: bool,
    /// Width of a density bucket, microseconds.
    pub bucket_us: i64,
    /// `[lane, bucket, operations, errors]` for every bucket where a lane did something.
    pub density: Vec<[u64; 4]>,
    /// What each write among the marks changed in its object, by index (writes with a previous
    /// version only, at most `max_diffs`).
    pub diffs: BTreeMap<u64, Vec<FieldChange>>,
    /// Slow operations, errors, loops, hot loops, fights, conflict storms, requeues.
    pub analysis: AnalysisReport,
    /// Causality chains, with only the writes and edges the chains use.
    pub causality: CausalityReport,
}

/// Interns strings for [`Marks`].
struct Texts {
    all: Vec<String>,
    positions: HashMap<String, u32>,
}

impl Texts {
    fn new() -> Self {
        Self { all: vec![String::new()], positions: HashMap::from([(String::new(), 0)]) }
    }

    fn id(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.positions.get(text) {
            return id;
        }
        let id = self.all.len() as u32;
        self.all.push(text.to_owned());
        self.positions.insert(text.to_owned(), id);
        id
    }
}

/// Builds the report of `session` (which must exist; see [`crate::context::ensure_session`]).
pub async fn session_report(
    ctx: &SessionContext,
    session: &str,
    options: &ReportOptions,
) -> Result<SessionReport, QueryError> {
    crate::consistency::consistently(ctx, || session_report_once(ctx, session, options)).await
}

async fn session_report_once(
    ctx: &SessionContext,
    session: &str,
    options: &ReportOptions,
) -> Result<SessionReport, QueryError> {
    let id = ScalarValue::from(session);
    let mut lanes = Vec::new();
    let (mut start_us, mut end_us) = (i64::MAX, i64::MIN);
    for batch in collect(ctx, LANES_SQL, vec![id.clone()]).await? {
        let actor = Strings::of(&batch, "actor_id")?;
        let (operations, writes, errors) =
            (Ints::of(&batch, "operations")?, Ints::of(&batch, "writes")?, Ints::of(&batch, "errors")?);
        let (first, last) = (Micros::of(&batch, "first_at")?, Micros::of(&batch, "last_at")?);
        for row in 0..batch.num_rows() {
            let count = |c: &Ints| c.get(row).unwrap_or(0).max(0) as u64;
            lanes.push(Lane {
                actor_id: actor.text(row),
                operations: count(&operations),
                writes: count(&writes),
                errors: count(&errors),
            });
            start_us = start_us.min(first.get(row).unwrap_or(i64::MAX));
            end_us = end_us.max(last.get(row).unwrap_or(i64::MIN));
        }
    }
    if lanes.is_empty() {
        return Err(QueryError::Data(format!("session {session:?} has no operations")));
    }
    let span_us = (end_us - start_us).max(1);
    let total_operations = lanes.iter().map(|l| l.operations).sum::<u64>();
    let lane_of: HashMap<String, u32> = lanes.iter().enumerate().map(|(i, l)| (l.actor_id.clone(), i as u32)).collect();

    let bucket_us = (span_us / options.buckets.max(1) as i64).max(1);
    let mut density = Vec::new();
    let params = vec![id.clone(), ScalarValue::from(start_us), ScalarValue::from(bucket_us)];
    for batch in collect(ctx, DENSITY_SQL, params).await? {
        let actor = Strings::of(&batch, "actor_id")?;
        let (bucket, operations, errors) =
            (Ints::of(&batch, "bucket")?, Ints::of(&batch, "operations")?, Ints::of(&batch, "errors")?);
        for row in 0..batch.num_rows() {
            let Some(&lane) = lane_of.get(actor.get(row).unwrap_or("")) else { continue };
            let n = |c: &Ints| c.get(row).unwrap_or(0).max(0) as u64;
            density.push([lane as u64, n(&bucket), n(&operations), n(&errors)]);
        }
    }

    let marks_complete = total_operations as usize <= options.max_marks;
    // Past the limit: failures get up to half the room (one in `error_stride`), writes the rest
    // (one in `write_stride`), each sampled evenly over the session.
    let (writes_total, errors_total) = lanes.iter().fold((0u64, 0u64), |(w, e), l| (w + l.writes, e + l.errors));
    let max_marks = options.max_marks.max(2) as u64;
    let error_stride = errors_total.div_ceil(max_marks / 2).max(1);
    let room = max_marks.saturating_sub(errors_total.div_ceil(error_stride)).max(1);
    let write_stride = writes_total.div_ceil(room).max(1);
    let marks_sql = format!("{MARKS_SQL}\nLIMIT {}", options.max_marks);
    let mut texts = Texts::new();
    let mut marks = Marks::default();
    let mut writes = HashSet::new();
    let params = vec![
        id.clone(),
        ScalarValue::from(marks_complete),
        ScalarValue::from(write_stride as i64),
        ScalarValue::from(error_stride as i64),
    ];
    for batch in collect(ctx, &marks_sql, params).await? {
        let index = Ints::of(&batch, "index")?;
        let received = Micros::of(&batch, "received_at")?;
        let actor = Strings::of(&batch, "actor_id")?;
        let verb = Strings::of(&batch, "verb")?;
        let (kind, namespace, name) =
            (Strings::of(&batch, "kind")?, Strings::of(&batch, "namespace")?, Strings::of(&batch, "name")?);
        let subresource = Strings::of(&batch, "subresource")?;
        let status = Ints::of(&batch, "status_code")?;
        let duration = Floats::of(&batch, "duration_ms")?;
        let (base, new) = (Strings::of(&batch, "base_resource_version")?, Strings::of(&batch, "resource_version")?);
        let error = Strings::of(&batch, "error")?;
        for row in 0..batch.num_rows() {
            let position = index.get(row).unwrap_or(0).max(0) as u64;
            let verb_text = verb.get(row).unwrap_or("");
            if kubestep_schemas::summary::is_write_verb(verb_text) {
                writes.insert(position);
            }
            let (k, ns, n) =
                (kind.get(row).unwrap_or(""), namespace.get(row).unwrap_or(""), name.get(row).unwrap_or(""));
            // A non-resource request (`/version`, `/healthz`) names no object.
            let mut object = if k.is_empty() && n.is_empty() {
                "(no object)".to_owned()
            } else {
                crate::analyze::resource_label(k, ns, n)
            };
            if let Some(sub) = subresource.get(row).filter(|s| !s.is_empty()) {
                object = format!("{object} ({sub})");
            }
            let versions = match (base.get(row), new.get(row)) {
                (None, None) => 0,
                (b, n) => texts.id(&format!("{} -> {}", b.unwrap_or("-"), n.unwrap_or("-"))),
            };
            marks.index.push(position);
            marks.t.push(received.get(row).unwrap_or(start_us) - start_us);
            marks.lane.push(lane_of.get(actor.get(row).unwrap_or("")).copied().unwrap_or(0));
            marks.verb.push(texts.id(verb_text));
            marks.object.push(texts.id(&object));
            marks.status.push(status.get(row).unwrap_or(0));
            marks.duration_ms.push(duration.get(row).unwrap_or(0.0));
            marks.versions.push(versions);
            marks.error.push(error.get(row).map_or(0, |e| texts.id(e)));
        }
    }

    let diffs = write_diffs(ctx, session, &writes, options.max_diffs).await?;
    let analysis = analyze(ctx, session, &options.analyze).await?;
    let causality = causality(ctx, session, &options.causality).await?;
    Ok(SessionReport {
        session_id: session.to_owned(),
        first_at: format_time(start_us),
        start_us,
        span_us,
        total_operations,
        lanes,
        texts: texts.all,
        marks,
        marks_complete,
        bucket_us,
        density,
        diffs,
        analysis,
        causality,
    })
}

/// The changes of the writes in `wanted`, from one pass over the session's writes in order.
async fn write_diffs(
    ctx: &SessionContext,
    session: &str,
    wanted: &HashSet<u64>,
    max_diffs: usize,
) -> Result<BTreeMap<u64, Vec<FieldChange>>, QueryError> {
    let mut diffs = BTreeMap::new();
    if wanted.is_empty() || max_diffs == 0 {
        return Ok(diffs);
    }
    let query = ReplayQuery { session: session.to_owned(), writes_only: true, diff: true, ..ReplayQuery::default() };
    let mut steps = replay(ctx, &query).await?;
    let last_wanted = wanted.iter().copied().max().unwrap_or(0);
    while let Some(step) = steps.next().await {
        let step = step?;
        if step.index > last_wanted {
            break;
        }
        if let Some(changes) = step.changes.filter(|_| wanted.contains(&step.index)) {
            diffs.insert(step.index, changes);
            if diffs.len() >= max_diffs {
                break;
            }
        }
    }
    Ok(diffs)
}
