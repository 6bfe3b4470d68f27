//! `kubestep analyze SESSION`: slow operations, errors and loops.
//!
//! Loops, slow operations and where each failure status first and last happened come from one
//! ordered pass over the session that counts positions as it goes (`session_walk`, loops by
//! [`crate::loops`]); the error counts and the two ends of the failures are SQL (files in
//! `query/sql/`). The sections run side by side (`sections`). The report keeps the seed's JSON fields
//! (`session_id`, `total_operations`, `slow_operations`, `loops_detected`, `errors{total,by_type}`)
//! and adds its own beside them.

use std::collections::BTreeMap;

use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use serde::Serialize;

use crate::QueryError;
use crate::behaviour::{self, BehaviourOptions, ConflictStorm, Fight, HotLoop, Requeue};
use crate::context::collect;
use crate::loops::Loop;
use crate::sections::Sections;
use crate::session_walk::{self, FailureSpan, WalkFindings, WalkFor};
use crate::values::{Ints, Strings};

const ERRORS_BY_TYPE_SQL: &str = include_str!("../sql/errors_by_type.sql");
const ERRORS_BY_STATUS_SQL: &str = include_str!("../sql/errors_by_status.sql");
const ERRORS_BY_ACTOR_SQL: &str = include_str!("../sql/errors_by_actor.sql");
const ERROR_EXTREMES_SQL: &str = include_str!("../sql/error_extremes.sql");

/// At most this many slow operations and loops are listed in a report (the totals are exact).
pub const MAX_LISTED: usize = 1000;

/// Which sections to compute, and their settings.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Slow operations.
    pub slow: bool,
    /// Loops.
    pub loops: bool,
    /// Errors.
    pub errors: bool,
    /// An operation is slow when it took at least this many milliseconds.
    pub threshold_ms: u64,
    /// Count watches (long-running by design) as slow operations too.
    pub include_watch: bool,
    /// Longest loop period looked for.
    pub window: usize,
    /// Hot loops: one actor writing one object over and over.
    pub hot_loops: bool,
    /// Fights: actors taking turns setting a field to different values.
    pub fights: bool,
    /// Conflict storms: repeated 409s.
    pub conflicts: bool,
    /// Error requeue loops: the same failure again and again.
    pub requeues: bool,
    /// Thresholds of those four.
    pub behaviour: BehaviourOptions,
}

impl AnalyzeOptions {
    /// Every section, with the default thresholds.
    pub fn all() -> Self {
        AnalyzeOptions {
            slow: true,
            loops: true,
            errors: true,
            threshold_ms: 1000,
            include_watch: false,
            window: 10,
            hot_loops: true,
            fights: true,
            conflicts: true,
            requeues: true,
            behaviour: BehaviourOptions::default(),
        }
    }
}

/// An operation that took at least the threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SlowOperation {
    /// Position in the session (0-based).
    pub index: u64,
    /// `GET`, `UPDATE`, ...
    #[serde(rename = "type")]
    pub operation_type: String,
    /// `Kind/namespace/name`.
    pub resource: String,
    /// Milliseconds (integral when whole, as the seed printed them).
    pub duration_ms: serde_json::Number,
    /// Who made the request.
    pub actor_id: String,
    /// When it was received.
    pub time: String,
}

/// Failures grouped several ways.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorReport {
    /// Failed operations (status >= 400).
    pub total: u64,
    /// Per operation type, as the seed grouped them.
    pub by_type: BTreeMap<String, u64>,
    /// Per HTTP status, with its Kubernetes reason.
    pub by_status: Vec<StatusCount>,
    /// Per actor, most first.
    pub by_actor: Vec<ActorCount>,
    /// The first failure.
    pub first: Option<FailedOperation>,
    /// The last failure.
    pub last: Option<FailedOperation>,
}

/// Failures with one status code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusCount {
    /// HTTP status.
    pub status_code: i64,
    /// `Conflict`, `NotFound`, ...
    pub reason: String,
    /// How many.
    pub count: u64,
    /// Index of the first.
    pub first_index: u64,
    /// Index of the last.
    pub last_index: u64,
}

/// Failures of one actor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ActorCount {
    /// The actor.
    pub actor_id: String,
    /// How many.
    pub count: u64,
}

/// One failed operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedOperation {
    /// Position in the session (0-based).
    pub index: u64,
    /// `index + 1`, the seed's `seq`.
    pub sequence_number: u64,
    /// `GET`, `UPDATE`, ...
    #[serde(rename = "type")]
    pub operation_type: String,
    /// `Kind/namespace/name`.
    pub resource: String,
    /// HTTP status.
    pub status_code: i64,
    /// The API server's message.
    pub message: String,
    /// Who made the request.
    pub actor_id: String,
}

/// The whole analysis of a session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalysisReport {
    /// The session.
    pub session_id: String,
    /// Operations in it.
    pub total_operations: u64,
    /// Slow operations in session order (at most [`MAX_LISTED`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub slow_operations: Vec<SlowOperation>,
    /// Loops by start (at most [`MAX_LISTED`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub loops_detected: Vec<Loop>,
    /// Failures, when that section was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errors: Option<ErrorReport>,
    /// The slow threshold, when that section was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_threshold_ms: Option<u64>,
    /// All slow operations, when that section was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_operations_total: Option<u64>,
    /// The loop window, when that section was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loop_window: Option<usize>,
    /// All loops, when that section was asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loops_total: Option<u64>,
    /// Hot loops, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_loops: Option<Vec<HotLoop>>,
    /// Fights, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fights: Option<Vec<Fight>>,
    /// Conflict storms, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflicts: Option<Vec<ConflictStorm>>,
    /// Error requeue loops, when asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requeues: Option<Vec<Requeue>>,
}

/// `Kind/namespace/name`, as the seed wrote it (an empty namespace gives `Kind//name`).
pub fn resource_label(kind: &str, namespace: &str, name: &str) -> String {
    format!("{kind}/{namespace}/{name}")
}

/// Milliseconds as a JSON number: integral when whole, as the seed printed them.
pub(crate) fn whole_or_fractional_ms(ms: f64) -> serde_json::Number {
    if ms.fract() == 0.0 && ms.abs() < 9e15 {
        serde_json::Number::from(ms as i64)
    } else {
        serde_json::Number::from_f64(ms).unwrap_or_else(|| serde_json::Number::from(0))
    }
}

/// Analyzes `session` (which must exist; see [`crate::context::ensure_session`]).
pub async fn analyze(
    ctx: &SessionContext,
    session: &str,
    options: &AnalyzeOptions,
) -> Result<AnalysisReport, QueryError> {
    crate::consistency::consistently(ctx, || analyze_once(ctx, session, options)).await
}

async fn analyze_once(
    ctx: &SessionContext,
    session: &str,
    options: &AnalyzeOptions,
) -> Result<AnalysisReport, QueryError> {
    let id = ScalarValue::from(session);
    let total = collect(ctx, "SELECT count(*) FROM operations WHERE session_id = $1", vec![id.clone()]).await?;
    let mut report = AnalysisReport {
        session_id: session.to_owned(),
        total_operations: total.first().and_then(|b| crate::values::u64_at(b, 0, 0)).unwrap_or(0),
        slow_operations: Vec::new(),
        loops_detected: Vec::new(),
        errors: None,
        slow_threshold_ms: None,
        slow_operations_total: None,
        loop_window: None,
        loops_total: None,
        hot_loops: None,
        fights: None,
        conflicts: None,
        requeues: None,
    };
    // The sections are independent: they run side by side, longest first (see `crate::sections`).
    let sections = Sections::per_core();
    let (owned_ctx, owned_session) = (ctx.clone(), session.to_owned());
    let inputs = move || (owned_ctx.clone(), owned_session.clone());
    let b = options.behaviour.clone();
    let (hot, fights) = (options.hot_loops, options.fights);
    let behaviour = (hot || fights).then(|| {
        let ((ctx, session), b) = (inputs(), b.clone());
        sections.spawn("hot loops and fights", async move {
            behaviour::hot_loops_and_fights(&ctx, &session, &b, hot, fights).await
        })
    });
    let conflicts = options.conflicts.then(|| {
        let ((ctx, session), b) = (inputs(), b.clone());
        sections.spawn("conflict storms", async move { behaviour::unplaced_conflict_storms(&ctx, &session, &b).await })
    });
    let wanted = WalkFor {
        loop_window: options.loops.then_some(options.window),
        slow: options.slow.then_some((options.threshold_ms, options.include_watch)),
        failures: options.errors,
        conflicts: options.conflicts,
    };
    let positions = (options.loops || options.slow || options.errors || options.conflicts).then(|| {
        let (ctx, session) = inputs();
        sections.spawn("session walk", async move { session_walk::walk(&ctx, &session, &wanted).await })
    });
    let errors = options.errors.then(|| {
        let (ctx, session) = inputs();
        sections.spawn("errors", async move { errors(&ctx, &session).await })
    });
    let requeues = options.requeues.then(|| {
        let ((ctx, session), b) = (inputs(), b.clone());
        sections.spawn("requeues", async move { behaviour::requeues(&ctx, &session, &b).await })
    });

    let found = match positions {
        Some(positions) => positions.result().await?,
        None => WalkFindings::default(),
    };
    if let Some((slow, total)) = found.slow {
        report.slow_operations = slow;
        report.slow_operations_total = Some(total);
        report.slow_threshold_ms = Some(options.threshold_ms);
    }
    if let Some(loops) = found.loops {
        report.loops_total = Some(loops.len() as u64);
        report.loops_detected = loops.into_iter().take(MAX_LISTED).collect();
        report.loop_window = Some(options.window);
    }
    if let Some(errors) = errors {
        let spans = found.failures.unwrap_or_default();
        report.errors = Some(errors.result().await?.placed(&spans));
    }
    if let Some(behaviour) = behaviour {
        (report.hot_loops, report.fights) = behaviour.result().await?;
    }
    if let Some(conflicts) = conflicts {
        let spans = found.conflicts.unwrap_or_default();
        report.conflicts = Some(behaviour::place_conflict_storms(conflicts.result().await?, &spans));
    }
    if let Some(requeues) = requeues {
        report.requeues = Some(requeues.result().await?);
    }
    Ok(report)
}

/// The loops of `session`: its operations streamed in order through a [`LoopDetector`]
/// (watches left out).
///
/// [`LoopDetector`]: crate::loops::LoopDetector
pub async fn detect_loops(ctx: &SessionContext, session: &str, window: usize) -> Result<Vec<Loop>, QueryError> {
    let wanted = WalkFor { loop_window: Some(window), ..WalkFor::default() };
    Ok(session_walk::walk(ctx, session, &wanted).await?.loops.unwrap_or_default())
}

/// The errors section before the session walk placed it: counts, and the two ends without their
/// indexes.
struct UnplacedErrors {
    report: ErrorReport,
    /// The status code of each `report.by_status` entry as stored (`None` when there was none).
    statuses: Vec<Option<i64>>,
}

impl UnplacedErrors {
    /// The report with each status's first and last index, and the ends' indexes, from the walk.
    fn placed(self, spans: &BTreeMap<Option<i64>, FailureSpan>) -> ErrorReport {
        let mut report = self.report;
        for (count, status) in report.by_status.iter_mut().zip(&self.statuses) {
            if let Some(span) = spans.get(status) {
                (count.first_index, count.last_index) = (span.first_index, span.last_index);
            }
        }
        let first_index = spans.values().map(|s| s.first_index).min();
        let last_index = spans.values().map(|s| s.last_index).max();
        report.first = report.first.zip(first_index).map(|(end, index)| FailedOperation {
            index,
            sequence_number: index + 1,
            ..end
        });
        report.last = report.last.zip(last_index).map(|(end, index)| FailedOperation {
            index,
            sequence_number: index + 1,
            ..end
        });
        report
    }
}

async fn errors(ctx: &SessionContext, session: &str) -> Result<UnplacedErrors, QueryError> {
    let id = || vec![ScalarValue::from(session)];
    let mut report = ErrorReport {
        total: 0,
        by_type: BTreeMap::new(),
        by_status: Vec::new(),
        by_actor: Vec::new(),
        first: None,
        last: None,
    };
    let mut statuses = Vec::new();
    for batch in collect(ctx, ERRORS_BY_TYPE_SQL, id()).await? {
        let op = Strings::of(&batch, "operation_type")?;
        let count = Ints::of(&batch, "count")?;
        for row in 0..batch.num_rows() {
            let n = count.get(row).unwrap_or(0) as u64;
            report.total += n;
            *report.by_type.entry(op.text(row)).or_default() += n;
        }
    }
    for batch in collect(ctx, ERRORS_BY_STATUS_SQL, id()).await? {
        let (code, reason, count) =
            (Ints::of(&batch, "status_code")?, Strings::of(&batch, "reason")?, Ints::of(&batch, "count")?);
        for row in 0..batch.num_rows() {
            statuses.push(code.get(row));
            report.by_status.push(StatusCount {
                status_code: code.get(row).unwrap_or(0),
                reason: reason.text(row),
                count: count.get(row).unwrap_or(0) as u64,
                first_index: 0,
                last_index: 0,
            });
        }
    }
    for batch in collect(ctx, ERRORS_BY_ACTOR_SQL, id()).await? {
        let (actor, count) = (Strings::of(&batch, "actor_id")?, Ints::of(&batch, "count")?);
        for row in 0..batch.num_rows() {
            report.by_actor.push(ActorCount { actor_id: actor.text(row), count: count.get(row).unwrap_or(0) as u64 });
        }
    }
    for batch in collect(ctx, ERROR_EXTREMES_SQL, id()).await? {
        let end = Strings::of(&batch, "end")?;
        let op = Strings::of(&batch, "operation_type")?;
        let (kind, ns, name) =
            (Strings::of(&batch, "kind")?, Strings::of(&batch, "namespace")?, Strings::of(&batch, "name")?);
        let (code, message, actor) =
            (Ints::of(&batch, "status_code")?, Strings::of(&batch, "error")?, Strings::of(&batch, "actor_id")?);
        for row in 0..batch.num_rows() {
            // The index is the walk's to give (see `UnplacedErrors::placed`).
            let failed = FailedOperation {
                index: 0,
                sequence_number: 0,
                operation_type: op.text(row),
                resource: resource_label(
                    kind.get(row).unwrap_or(""),
                    ns.get(row).unwrap_or(""),
                    name.get(row).unwrap_or(""),
                ),
                status_code: code.get(row).unwrap_or(0),
                message: message.text(row),
                actor_id: actor.text(row),
            };
            if end.get(row) == Some("first") {
                report.first = Some(failed);
            } else {
                report.last = Some(failed);
            }
        }
    }
    Ok(UnplacedErrors { report, statuses })
}
