//! One ordered pass over a session for the sections of `kubestep analyze` that need positions.
//!
//! Loops, slow operations, the errors section and conflict storms all report an operation's
//! `index`, its position in the session order. Asking the engine for `indexed_operations` in each of them
//! numbers the whole session again every time (a window over every operation, plus merging the
//! files in order). Instead, `session_walk.sql` streams the session once in that order, with a flag
//! per section saying what each row counts for, and the walk counts positions as the rows go by.
//! Conflict storms and error requeue loops are counted in the same pass
//! ([`crate::repeated_failures`]): their few columns ride along, instead of three more scans.

use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

use crate::QueryError;
use crate::analyze::{
    ErrorReport, ErrorTally, FailedOperation, MAX_LISTED, SlowOperation, resource_label, whole_or_fractional_ms,
};
use crate::context::stream_ahead;
use crate::loops::{Loop, LoopDetector};
use crate::repeated_failures::{ConflictTally, RequeueTally};
use crate::values::{Bools, Floats, Ints, Micros, Strings, format_time};

/// The walk's statement: every operation of session `$1` in order, with the flags of what it counts
/// for (`$2` the slow threshold in milliseconds, `$3` whether watches count as slow).
pub const SESSION_WALK_SQL: &str = include_str!("../sql/session_walk.sql");

/// What one walk looks for; `None` leaves a section out.
#[derive(Debug, Clone, Default)]
pub(crate) struct WalkFor {
    /// Loops, with the longest period looked for.
    pub(crate) loop_window: Option<usize>,
    /// Slow operations: the threshold in milliseconds and whether watches count.
    pub(crate) slow: Option<(u64, bool)>,
    /// The errors section: failures counted by type, status and actor, the first and last
    /// position of each status, the first and last failure.
    pub(crate) failures: bool,
    /// Each actor's 409s on each object: how many, where, when, on which versions, and whether
    /// the actor wrote the object after its last one (conflict storms).
    pub(crate) conflicts: bool,
    /// Each actor's failures other than 409 on each object, by status (error requeue loops).
    pub(crate) requeues: bool,
}

/// Where some failures (those with one status code, or one actor's 409s on one object) happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FailureSpan {
    pub(crate) first_index: u64,
    pub(crate) last_index: u64,
}

/// What a walk found, for the sections it was asked for.
#[derive(Debug, Default)]
pub(crate) struct WalkFindings {
    /// Loops by start.
    pub(crate) loops: Option<Vec<Loop>>,
    /// Slow operations in session order (at most [`MAX_LISTED`]) and how many there were.
    pub(crate) slow: Option<(Vec<SlowOperation>, u64)>,
    /// The errors section.
    pub(crate) errors: Option<ErrorReport>,
    /// The 409s per actor and object.
    pub(crate) conflicts: Option<ConflictTally>,
    /// The other failures per actor, object and status.
    pub(crate) requeues: Option<RequeueTally>,
}

/// Streams `session` once in session order and finds what `wanted` asks for.
pub(crate) async fn walk(ctx: &SessionContext, session: &str, wanted: &WalkFor) -> Result<WalkFindings, QueryError> {
    let (threshold_ms, include_watch) = wanted.slow.unwrap_or((0, false));
    let params = vec![
        ScalarValue::from(session),
        ScalarValue::Float64(Some(threshold_ms as f64)),
        ScalarValue::Boolean(Some(include_watch)),
    ];
    let mut detector = wanted.loop_window.map(LoopDetector::new);
    let mut slow: Option<(Vec<SlowOperation>, u64)> = wanted.slow.map(|_| (Vec::new(), 0));
    let mut errors: Option<ErrorTally> = wanted.failures.then(ErrorTally::default);
    let mut conflicts: Option<ConflictTally> = wanted.conflicts.then(ConflictTally::default);
    let mut requeues: Option<RequeueTally> = wanted.requeues.then(RequeueTally::default);

    let mut stream = stream_ahead(ctx, SESSION_WALK_SQL, params).await?;
    // The rows come in session order: an operation's index is how many came before it.
    let mut index: u64 = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let (in_sequence, is_slow, failed) =
            (Bools::of(&batch, "in_sequence")?, Bools::of(&batch, "slow")?, Bools::of(&batch, "failed")?);
        let conflict = Bools::of(&batch, "conflict")?;
        let op = Strings::of(&batch, "operation_type")?;
        let (kind, ns, name) =
            (Strings::of(&batch, "kind")?, Strings::of(&batch, "namespace")?, Strings::of(&batch, "name")?);
        let (duration, actor) = (Floats::of(&batch, "duration_ms")?, Strings::of(&batch, "actor_id")?);
        let (received, status) = (Micros::of(&batch, "received_at")?, Ints::of(&batch, "status_code")?);
        let message = Strings::of(&batch, "error")?;
        let (new_version, sent) = (Bools::of(&batch, "new_version")?, Strings::of(&batch, "sent")?);
        let group = |row: usize| (actor.get(row), kind.get(row), ns.get(row), name.get(row));
        let failed_at = |row: usize, index: u64| FailedOperation {
            index,
            sequence_number: index + 1,
            operation_type: op.text(row),
            resource: resource_label(
                kind.get(row).unwrap_or(""),
                ns.get(row).unwrap_or(""),
                name.get(row).unwrap_or(""),
            ),
            status_code: status.get(row).unwrap_or(0),
            message: message.text(row),
            actor_id: actor.text(row),
        };
        // The batch's last failure: only the session's last one is kept, copied once per batch.
        let mut last_failed: Option<(usize, u64)> = None;
        for row in 0..batch.num_rows() {
            let position = index;
            index += 1;
            if let Some(detector) = detector.as_mut()
                && in_sequence.get(row) == Some(true)
            {
                detector.push(
                    position,
                    op.get(row).unwrap_or(""),
                    kind.get(row).unwrap_or(""),
                    ns.get(row).unwrap_or(""),
                    name.get(row).unwrap_or(""),
                );
            }
            if let Some((listed, total)) = slow.as_mut()
                && is_slow.get(row) == Some(true)
            {
                *total += 1;
                if listed.len() < MAX_LISTED {
                    listed.push(SlowOperation {
                        index: position,
                        operation_type: op.text(row),
                        resource: resource_label(
                            kind.get(row).unwrap_or(""),
                            ns.get(row).unwrap_or(""),
                            name.get(row).unwrap_or(""),
                        ),
                        duration_ms: whole_or_fractional_ms(duration.get(row).unwrap_or(0.0)),
                        actor_id: actor.text(row),
                        time: received.get(row).map(format_time).unwrap_or_default(),
                    });
                }
            }
            if let Some(errors) = errors.as_mut()
                && failed.get(row) == Some(true)
            {
                errors.count(position, op.get(row).unwrap_or(""), status.get(row), actor.get(row));
                if errors.wants_first() {
                    errors.keep_end(failed_at(row, position));
                }
                last_failed = Some((row, position));
            }
            if let Some(conflicts) = conflicts.as_mut() {
                if conflict.get(row) == Some(true) {
                    conflicts.conflict(group(row), position, received.get(row).unwrap_or(0), sent.get(row));
                } else if new_version.get(row) == Some(true) {
                    conflicts.new_version(group(row));
                }
            }
            if let Some(requeues) = requeues.as_mut()
                && failed.get(row) == Some(true)
                && let Some(status) = status.get(row).filter(|code| *code != 409)
            {
                requeues.failure(group(row), status, received.get(row).unwrap_or(0), message.get(row).unwrap_or(""));
            }
        }
        if let (Some(errors), Some((row, position))) = (errors.as_mut(), last_failed) {
            errors.keep_end(failed_at(row, position));
        }
    }
    Ok(WalkFindings {
        loops: detector.map(LoopDetector::finish),
        slow,
        errors: errors.map(ErrorTally::finish),
        conflicts,
        requeues,
    })
}
