//! `kubestep analyze SESSION`: slow operations, errors and loops.
//!
//! Loops, slow operations and the errors section (counts by type, status and actor, where each
//! status first and last happened, the first and last failure) come from one ordered pass over
//! the session that counts positions as it goes (`session_walk`, loops by [`crate::loops`],
//! errors by [`ErrorTally`]). The sections run side by side (`sections`). The report keeps the seed's JSON fields
//! (`session_id`, `total_operations`, `slow_operations`, `loops_detected`, `errors{total,by_type}`)
//! and adds its own beside them.

use std::collections::{BTreeMap, HashMap};

use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use serde::Serialize;

use crate::QueryError;
use crate::behaviour::{self, BehaviourOptions, ConflictStorm, Fight, HotLoop, Requeue};
use crate::context::collect;
use crate::loops::Loop;
use crate::sections::Sections;
use crate::session_walk::{self, FailureSpan, WalkFindings, WalkFor};

pub use crate::session_walk::SESSION_WALK_SQL;

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
    let wanted = WalkFor {
        loop_window: options.loops.then_some(options.window),
        slow: options.slow.then_some((options.threshold_ms, options.include_watch)),
        failures: options.errors,
        conflicts: options.conflicts,
        requeues: options.requeues,
    };
    let walked =
        (options.loops || options.slow || options.errors || options.conflicts || options.requeues).then(|| {
            let ((ctx, session), b) = (inputs(), b.clone());
            sections.spawn("session walk", async move {
                let mut found = session_walk::walk(&ctx, &session, &wanted).await?;
                // The storms' objects are known once the walk has counted every 409.
                let storms = match found.conflicts.take() {
                    Some(tally) => Some(behaviour::storms_of(&ctx, &session, tally, &b).await?),
                    None => None,
                };
                Ok((found, storms))
            })
        });

    let (found, storms) = match walked {
        Some(walked) => walked.result().await?,
        None => (WalkFindings::default(), None),
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
    report.errors = found.errors;
    if let Some(behaviour) = behaviour {
        (report.hot_loops, report.fights) = behaviour.result().await?;
    }
    report.conflicts = storms;
    report.requeues = found.requeues.map(|tally| tally.requeues(options.behaviour.requeue_min));
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

/// The errors section as the session walk builds it, one failed operation at a time.
#[derive(Debug, Default)]
pub(crate) struct ErrorTally {
    total: u64,
    by_type: BTreeMap<String, u64>,
    /// Per status code: how many, and the first and last position.
    by_status: BTreeMap<Option<i64>, (u64, FailureSpan)>,
    by_actor: HashMap<String, u64>,
    /// Failures of no known actor.
    without_actor: u64,
    first: Option<FailedOperation>,
    last: Option<FailedOperation>,
}

impl ErrorTally {
    /// Counts one failed operation, at `position` in the session order.
    pub(crate) fn count(&mut self, position: u64, operation_type: &str, status: Option<i64>, actor: Option<&str>) {
        self.total += 1;
        match self.by_type.get_mut(operation_type) {
            Some(n) => *n += 1,
            None => {
                self.by_type.insert(operation_type.to_owned(), 1);
            }
        }
        self.by_status
            .entry(status)
            .and_modify(|(n, span)| {
                *n += 1;
                span.last_index = position;
            })
            .or_insert((1, FailureSpan { first_index: position, last_index: position }));
        match actor {
            None => self.without_actor += 1,
            Some(actor) => match self.by_actor.get_mut(actor) {
                Some(n) => *n += 1,
                None => {
                    self.by_actor.insert(actor.to_owned(), 1);
                }
            },
        }
    }

    /// Whether the first failure is still to be kept.
    pub(crate) fn wants_first(&self) -> bool {
        self.first.is_none()
    }

    /// A failure counted so far, in session order: the first one kept stays the first, the latest
    /// becomes the last.
    pub(crate) fn keep_end(&mut self, failed: FailedOperation) {
        if self.first.is_none() {
            self.first = Some(failed.clone());
        }
        self.last = Some(failed);
    }

    /// The section: statuses and actors by count (most first; ties by code or actor, unknown last).
    pub(crate) fn finish(self) -> ErrorReport {
        let mut by_status: Vec<(Option<i64>, u64, FailureSpan)> =
            self.by_status.into_iter().map(|(code, (n, span))| (code, n, span)).collect();
        by_status.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| (a.0.is_none(), a.0).cmp(&(b.0.is_none(), b.0))));
        let mut by_actor: Vec<(Option<String>, u64)> = self.by_actor.into_iter().map(|(a, n)| (Some(a), n)).collect();
        if self.without_actor > 0 {
            by_actor.push((None, self.without_actor));
        }
        by_actor.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| (a.0.is_none(), &a.0).cmp(&(b.0.is_none(), &b.0))));
        ErrorReport {
            total: self.total,
            by_type: self.by_type,
            by_status: by_status
                .into_iter()
                .map(|(code, count, span)| StatusCount {
                    status_code: code.unwrap_or(0),
                    reason: reason(code),
                    count,
                    first_index: span.first_index,
                    last_index: span.last_index,
                })
                .collect(),
            by_actor: by_actor
                .into_iter()
                .map(|(actor, count)| ActorCount { actor_id: actor.unwrap_or_default(), count })
                .collect(),
            first: self.first,
            last: self.last,
        }
    }
}

/// The Kubernetes reason of an HTTP status (`StatusReason` in the API machinery), or
/// `Status<code>` for others.
fn reason(status: Option<i64>) -> String {
    let Some(code) = status else { return String::new() };
    match code {
        409 => "Conflict",
        404 => "NotFound",
        403 => "Forbidden",
        422 => "Invalid",
        401 => "Unauthorized",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        other => return format!("Status{other}"),
    }
    .to_owned()
}
