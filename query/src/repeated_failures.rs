//! Conflict storms and error requeue loops, counted as the session walk goes by.
//!
//! Both are failures grouped by actor and object (and, for requeues, status): what the
//! `conflict_storms` and `error_requeues` views compute. `kubestep analyze` streams every operation
//! of the session in order anyway ([`crate::session_walk`]), so it counts them there instead of
//! scanning the session three more times (the two views, and the storms' 409s): the walk reads the
//! few columns they need beside its own, and the groups here are small (one per actor and object
//! that failed). Tests hold what is counted here to the views' rows.
//!
//! A storm also says whether its actor got a write through after its last conflict, which the
//! walk sees too: each group keeps a flag that a 409 clears and the actor's next new version of the
//! object sets. How stale each attempt was needs the object's versions, which `behaviour` reads
//! afterwards for the storms' objects only.

use std::cmp::Ordering;

use crate::behaviour::{ConflictStorm, Requeue};
use crate::group_keys::{GroupMap, push_field, push_number};
use crate::session_walk::FailureSpan;
use crate::values::format_time;

/// Who failed on which object: `actor_id`, `kind`, `namespace`, `name` as stored (null stays
/// apart from empty, as `GROUP BY` keeps them).
pub(crate) type FailureGroup = (Option<String>, Option<String>, Option<String>, Option<String>);

/// A [`FailureGroup`] borrowed from a batch's columns.
pub(crate) type FailureGroupRef<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<&'a str>);

/// Writes `group` into `key` as one string that tells every group apart
/// ([`crate::group_keys`]), so that looking a group up costs no allocation.
fn encode(group: FailureGroupRef<'_>, key: &mut String) {
    key.clear();
    for field in [group.0, group.1, group.2, group.3] {
        push_field(key, field);
    }
}

fn owned(group: FailureGroupRef<'_>) -> FailureGroup {
    let own = |f: Option<&str>| f.map(str::to_owned);
    (own(group.0), own(group.1), own(group.2), own(group.3))
}

/// One 409 answer: when it was received and the resourceVersion the write was based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConflictAttempt {
    pub(crate) received_at: i64,
    pub(crate) sent: Option<String>,
}

/// One actor's 409s on one object so far.
#[derive(Debug, Clone)]
struct Conflicts {
    group: FailureGroup,
    span: FailureSpan,
    first_at: i64,
    last_at: i64,
    attempts: Vec<ConflictAttempt>,
    /// A new version of the object by this actor came after its latest 409.
    recovered: bool,
}

/// Every actor's 409s on every named object of a session, in the order the walk met them.
#[derive(Debug, Default)]
pub(crate) struct ConflictTally {
    /// By [`encode`]d group.
    groups: GroupMap<Conflicts>,
    key: String,
}

impl ConflictTally {
    /// Counts a 409 on a named object at `position`, `received_at`, based on version `sent`.
    pub(crate) fn conflict(&mut self, group: FailureGroupRef<'_>, position: u64, received_at: i64, sent: Option<&str>) {
        let attempt = ConflictAttempt { received_at, sent: sent.map(str::to_owned) };
        encode(group, &mut self.key);
        match self.groups.get_mut(self.key.as_str()) {
            Some(c) => {
                c.span.last_index = position;
                c.first_at = c.first_at.min(received_at);
                c.last_at = c.last_at.max(received_at);
                c.attempts.push(attempt);
                c.recovered = false;
            }
            None => {
                self.groups.insert(
                    self.key.clone(),
                    Conflicts {
                        group: owned(group),
                        span: FailureSpan { first_index: position, last_index: position },
                        first_at: received_at,
                        last_at: received_at,
                        attempts: vec![attempt],
                        recovered: false,
                    },
                );
            }
        }
    }

    /// Notes a new version of an object written by `group`'s actor (a successful, not dry-run
    /// create, update, patch or delete that produced a resourceVersion): if the actor had 409s on
    /// it, it has now recovered.
    pub(crate) fn new_version(&mut self, group: FailureGroupRef<'_>) {
        if self.groups.is_empty() {
            return;
        }
        encode(group, &mut self.key);
        if let Some(c) = self.groups.get_mut(self.key.as_str()) {
            c.recovered = true;
        }
    }

    /// The groups with at least `min` conflicts, as storms (most conflicts first, then by actor and
    /// object, nulls last, as the view orders them), each with its attempts. How stale the
    /// attempts were is left at zero for [`crate::behaviour`] to fill in.
    pub(crate) fn storms(self, min: u64) -> Vec<(ConflictStorm, Vec<ConflictAttempt>)> {
        let mut storms: Vec<Conflicts> = self.groups.into_values().filter(|c| c.attempts.len() as u64 >= min).collect();
        storms.sort_by(|a, b| b.attempts.len().cmp(&a.attempts.len()).then_with(|| group_order(&a.group, &b.group)));
        storms
            .into_iter()
            .map(|c| {
                let (actor, kind, namespace, name) = c.group;
                let storm = ConflictStorm {
                    actor_id: actor.unwrap_or_default(),
                    kind: kind.unwrap_or_default(),
                    namespace: namespace.unwrap_or_default(),
                    name: name.unwrap_or_default(),
                    conflicts: c.attempts.len() as u64,
                    first_index: c.span.first_index,
                    last_index: c.span.last_index,
                    max_versions_behind: 0,
                    max_ms_since_replaced: 0,
                    recovered: c.recovered,
                    first_at: format_time(c.first_at),
                    last_at: format_time(c.last_at),
                };
                (storm, c.attempts)
            })
            .collect()
    }
}

/// One actor's identical failures (same status) on one object so far.
#[derive(Debug, Clone)]
struct Failures {
    group: FailureGroup,
    status: i64,
    attempts: u64,
    first_at: i64,
    last_at: i64,
    /// The least message, as `min(error)` picks it.
    error: String,
}

/// Every actor's failures other than 409 on every object of a session, by status.
#[derive(Debug, Default)]
pub(crate) struct RequeueTally {
    /// By [`encode`]d group and status.
    groups: GroupMap<Failures>,
    key: String,
}

impl RequeueTally {
    /// Counts a failure with status `status` (not 409) and message `error`, received at `received_at`.
    pub(crate) fn failure(&mut self, group: FailureGroupRef<'_>, status: i64, received_at: i64, error: &str) {
        encode(group, &mut self.key);
        // The encoded group ends where its last field does, so the status can follow it.
        if status < 0 {
            self.key.push('-');
        }
        push_number(&mut self.key, status.unsigned_abs());
        match self.groups.get_mut(self.key.as_str()) {
            Some(f) => {
                f.attempts += 1;
                f.first_at = f.first_at.min(received_at);
                f.last_at = f.last_at.max(received_at);
                if error < f.error.as_str() {
                    error.clone_into(&mut f.error);
                }
            }
            None => {
                self.groups.insert(
                    self.key.clone(),
                    Failures {
                        group: owned(group),
                        status,
                        attempts: 1,
                        first_at: received_at,
                        last_at: received_at,
                        error: error.to_owned(),
                    },
                );
            }
        }
    }

    /// The groups with at least `min` attempts, as requeue loops: most attempts first, then by
    /// actor and object (nulls last), then status.
    pub(crate) fn requeues(self, min: u64) -> Vec<Requeue> {
        let mut loops: Vec<Failures> = self.groups.into_values().filter(|f| f.attempts >= min).collect();
        loops.sort_by(|a, b| {
            b.attempts
                .cmp(&a.attempts)
                .then_with(|| group_order(&a.group, &b.group))
                .then_with(|| a.status.cmp(&b.status))
        });
        loops
            .into_iter()
            .map(|f| Requeue {
                actor_id: f.group.0.unwrap_or_default(),
                kind: f.group.1.unwrap_or_default(),
                namespace: f.group.2.unwrap_or_default(),
                name: f.group.3.unwrap_or_default(),
                status_code: f.status,
                attempts: f.attempts,
                mean_interval_s: ((f.last_at - f.first_at) as f64 / 1e6 / f.attempts.saturating_sub(1).max(1) as f64
                    * 10.0)
                    .round()
                    / 10.0,
                first_at: format_time(f.first_at),
                last_at: format_time(f.last_at),
                error: f.error,
            })
            .collect()
    }
}

/// Actor, kind, namespace, name in turn, each ascending with nulls last (SQL's `ORDER BY` default).
fn group_order(a: &FailureGroup, b: &FailureGroup) -> Ordering {
    nulls_last(&a.0, &b.0)
        .then_with(|| nulls_last(&a.1, &b.1))
        .then_with(|| nulls_last(&a.2, &b.2))
        .then_with(|| nulls_last(&a.3, &b.3))
}

fn nulls_last(a: &Option<String>, b: &Option<String>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.as_bytes().cmp(b.as_bytes()),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group<'a>(actor: Option<&'a str>, name: &'a str) -> FailureGroupRef<'a> {
        (actor, Some("ConfigMap"), Some("ns"), Some(name))
    }

    #[test]
    fn storms_keep_counts_spans_and_recovery_per_actor_and_object() {
        let mut tally = ConflictTally::default();
        let (a, b) = (group(Some("a"), "x"), group(Some("b"), "x"));
        for (position, g) in [(3, &a), (5, &b), (7, &a), (9, &a), (11, &b)] {
            tally.conflict(*g, position, position as i64 * 1000, Some("41"));
        }
        tally.new_version(a);
        tally.new_version(group(Some("c"), "x"));
        tally.conflict(group(None, "x"), 12, 12_000, None);
        tally.conflict(group(None, "x"), 13, 13_000, None);
        let storms = tally.storms(2);
        let summary: Vec<_> = storms
            .iter()
            .map(|(s, attempts)| {
                (s.actor_id.as_str(), s.conflicts, s.first_index, s.last_index, s.recovered, attempts.len())
            })
            .collect();
        // a first (3 conflicts), then b before the null actor (2 each, nulls last).
        assert_eq!(summary, vec![("a", 3, 3, 9, true, 3), ("b", 2, 5, 11, false, 2), ("", 2, 12, 13, false, 2)]);
        assert_eq!(storms[0].1[0], ConflictAttempt { received_at: 3000, sent: Some("41".to_owned()) });
        assert_eq!(ConflictTally::default().storms(1).len(), 0);
    }

    #[test]
    fn groups_differing_only_in_a_null_or_where_a_field_ends_stay_apart() {
        let mut tally = ConflictTally::default();
        tally.conflict((Some("ab"), Some("c"), None, Some("n")), 0, 0, None);
        tally.conflict((Some("a"), Some("bc"), None, Some("n")), 1, 1, None);
        tally.conflict((Some("a"), Some("bc"), Some(""), Some("n")), 2, 2, None);
        tally.conflict((Some("a"), Some("bc"), Some(""), Some("n")), 3, 3, None);
        let counts: Vec<u64> = tally.storms(1).iter().map(|(s, _)| s.conflicts).collect();
        assert_eq!(counts, vec![2, 1, 1]);
        let mut requeues = RequeueTally::default();
        requeues.failure((Some("a"), None, None, Some("n")), 404, 0, "e");
        requeues.failure((Some("a"), None, None, Some("n")), 40, 0, "e");
        requeues.failure((Some("a"), None, None, Some("n4")), 4, 0, "e");
        assert_eq!(requeues.requeues(1).len(), 3);
    }

    #[test]
    fn a_conflict_after_a_new_version_undoes_the_recovery() {
        let mut tally = ConflictTally::default();
        let a = group(Some("a"), "x");
        tally.conflict(a, 1, 1, None);
        tally.new_version(a);
        tally.conflict(a, 2, 2, None);
        assert!(!tally.storms(1)[0].0.recovered);
    }

    #[test]
    fn requeues_group_by_status_and_keep_the_least_message() {
        let mut tally = RequeueTally::default();
        let a = group(Some("a"), "x");
        tally.failure(a, 404, 2_000_000, "not found b");
        tally.failure(a, 404, 1_000_000, "not found a");
        tally.failure(a, 404, 5_000_000, "not found c");
        tally.failure(a, 403, 1_000_000, "forbidden");
        let loops = tally.requeues(2);
        assert_eq!(loops.len(), 1);
        let l = &loops[0];
        assert_eq!((l.status_code, l.attempts, l.error.as_str()), (404, 3, "not found a"));
        assert_eq!(l.mean_interval_s, 2.0);
        assert_eq!(
            (l.first_at.as_str(), l.last_at.as_str()),
            (format_time(1_000_000).as_str(), format_time(5_000_000).as_str())
        );
    }
}
