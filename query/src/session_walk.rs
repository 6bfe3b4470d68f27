//! One ordered pass over a session for the sections of `kubestep analyze` that need positions.
//!
//! Loops, slow operations, the errors section and conflict storms all report an operation's
//! `index`, its position in the session order. Asking the engine for `indexed_operations` in each of them
//! numbers the whole session again every time (a window over every operation, plus merging the
//! files in order). Instead, `session_walk.sql` streams the session once in that order, with a flag
//! per section saying what each row counts for, and the walk counts positions as the rows go by.
//! Conflict storms and error requeue loops are counted in the same pass
//! ([`crate::repeated_failures`]): their few columns ride along, instead of three more scans.

use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

use crate::QueryError;
use crate::analyze::{
    ErrorReport, ErrorTally, FailedOperation, MAX_LISTED, SlowOperation, resource_label, whole_or_fractional_ms,
};
use crate::context::stream_ahead;
use crate::loops::{Loop, LoopDetector};
use crate::repeated_failures::{ConflictTally, FailureGroupRef, RequeueTally};
use crate::values::{Bools, Floats, Ints, Micros, Strings, format_time};

/// The walk's statement: every operation of session `$1` in order, with the columns that say what
/// it counts for.
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

/// What one operation counts for in the walk, decided from its columns as the SQL of the views
/// these sections stand for would (`coalesce(..., false)`: a comparison with null never counts).
struct Row {
    /// In the sequence loop detection scans: watches are long-running, and their place in the
    /// order (their start) says nothing about the work around them.
    in_sequence: bool,
    /// Took at least the threshold; long-running watches only when asked for.
    slow: bool,
    /// Failed (has an error): what the errors section counts and places.
    failed: bool,
    /// A 409 Conflict on a named object (what the `conflict_storms` view counts).
    conflict: bool,
    /// A successful, not dry-run create, update, patch or delete that produced a version (what
    /// `object_history.sql` reads).
    new_version: bool,
}

/// The columns of one batch of `session_walk.sql`.
struct WalkColumns {
    op: Strings,
    verb: Strings,
    kind: Strings,
    ns: Strings,
    name: Strings,
    actor: Strings,
    received: Micros,
    duration: Floats,
    status: Ints,
    error: Strings,
    has_version: Bools,
    dry_run: Bools,
    sent: Strings,
}

impl WalkColumns {
    fn of(batch: &RecordBatch) -> Result<Self, QueryError> {
        Ok(WalkColumns {
            op: Strings::of(batch, "operation_type")?,
            verb: Strings::of(batch, "verb")?,
            kind: Strings::of(batch, "kind")?,
            ns: Strings::of(batch, "namespace")?,
            name: Strings::of(batch, "name")?,
            actor: Strings::of(batch, "actor_id")?,
            received: Micros::of(batch, "received_at")?,
            duration: Floats::of(batch, "duration_ms")?,
            status: Ints::of(batch, "status_code")?,
            error: Strings::of(batch, "error")?,
            has_version: Bools::of(batch, "has_version")?,
            dry_run: Bools::of(batch, "dry_run")?,
            sent: Strings::of(batch, "base_resource_version")?,
        })
    }

    /// What `row` counts for; `slow` as [`WalkFor::slow`] says.
    fn row(&self, row: usize, slow: Option<(u64, bool)>) -> Row {
        let (verb, status) = (self.verb.get(row), self.status.get(row));
        let not_watch = verb.is_some_and(|v| v != "watch");
        Row {
            in_sequence: not_watch,
            slow: slow.is_some_and(|(threshold_ms, include_watch)| {
                self.duration.get(row).is_some_and(|ms| ms >= threshold_ms as f64) && (include_watch || not_watch)
            }),
            failed: self.error.get(row).is_some(),
            conflict: status == Some(409) && self.name.get(row).is_some(),
            new_version: self.has_version.get(row) == Some(true)
                && status.is_none_or(|code| code < 400)
                && matches!(verb, Some("create" | "update" | "patch" | "delete"))
                && self.dry_run.get(row) != Some(true),
        }
    }

    fn resource(&self, row: usize) -> String {
        resource_label(
            self.kind.get(row).unwrap_or(""),
            self.ns.get(row).unwrap_or(""),
            self.name.get(row).unwrap_or(""),
        )
    }

    fn group(&self, row: usize) -> FailureGroupRef<'_> {
        (self.actor.get(row), self.kind.get(row), self.ns.get(row), self.name.get(row))
    }

    fn failed(&self, row: usize, index: u64) -> FailedOperation {
        FailedOperation {
            index,
            sequence_number: index + 1,
            operation_type: self.op.text(row),
            resource: self.resource(row),
            status_code: self.status.get(row).unwrap_or(0),
            message: self.error.text(row),
            actor_id: self.actor.text(row),
        }
    }
}

/// Streams `session` once in session order and finds what `wanted` asks for.
pub(crate) async fn walk(ctx: &SessionContext, session: &str, wanted: &WalkFor) -> Result<WalkFindings, QueryError> {
    let mut detector = wanted.loop_window.map(LoopDetector::new);
    let mut slow: Option<(Vec<SlowOperation>, u64)> = wanted.slow.map(|_| (Vec::new(), 0));
    let mut errors: Option<ErrorTally> = wanted.failures.then(ErrorTally::default);
    let mut conflicts: Option<ConflictTally> = wanted.conflicts.then(ConflictTally::default);
    let mut requeues: Option<RequeueTally> = wanted.requeues.then(RequeueTally::default);

    let mut stream = stream_ahead(ctx, SESSION_WALK_SQL, vec![ScalarValue::from(session)]).await?;
    // The rows come in session order: an operation's index is how many came before it.
    let mut index: u64 = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let (c, rows) = (WalkColumns::of(&batch)?, batch.num_rows());
        // The batch's last failure: only the session's last one is kept, copied once per batch.
        let mut last_failed: Option<(usize, u64)> = None;
        for row in 0..rows {
            let position = index;
            index += 1;
            let counts = c.row(row, wanted.slow);
            if let Some(detector) = detector.as_mut()
                && counts.in_sequence
            {
                detector.push(
                    position,
                    c.op.get(row).unwrap_or(""),
                    c.kind.get(row).unwrap_or(""),
                    c.ns.get(row).unwrap_or(""),
                    c.name.get(row).unwrap_or(""),
                );
            }
            if let Some((listed, total)) = slow.as_mut()
                && counts.slow
            {
                *total += 1;
                if listed.len() < MAX_LISTED {
                    listed.push(SlowOperation {
                        index: position,
                        operation_type: c.op.text(row),
                        resource: c.resource(row),
                        duration_ms: whole_or_fractional_ms(c.duration.get(row).unwrap_or(0.0)),
                        actor_id: c.actor.text(row),
                        time: c.received.get(row).map(format_time).unwrap_or_default(),
                    });
                }
            }
            if let Some(errors) = errors.as_mut()
                && counts.failed
            {
                errors.count(position, c.op.get(row).unwrap_or(""), c.status.get(row), c.actor.get(row));
                if errors.wants_first() {
                    errors.keep_end(c.failed(row, position));
                }
                last_failed = Some((row, position));
            }
            if let Some(conflicts) = conflicts.as_mut() {
                if counts.conflict {
                    let at = c.received.get(row).unwrap_or(0);
                    conflicts.conflict(c.group(row), position, at, c.sent.get(row));
                } else if counts.new_version {
                    conflicts.new_version(c.group(row));
                }
            }
            if let Some(requeues) = requeues.as_mut()
                && counts.failed
                && let Some(status) = c.status.get(row).filter(|code| *code != 409)
            {
                let at = c.received.get(row).unwrap_or(0);
                requeues.failure(c.group(row), status, at, c.error.get(row).unwrap_or(""));
            }
        }
        if let (Some(errors), Some((row, position))) = (errors.as_mut(), last_failed) {
            errors.keep_end(c.failed(row, position));
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
