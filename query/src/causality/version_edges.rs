//! The `rv` and `owner` edges of one session, found in the same pass over its operations in
//! session order as the `watch` edges ([`super::watch`]).
//!
//! The meaning is the `rv_edges` and `owner_edges` of the `causal_edges` view
//! (`query/sql/views/causal_edges.sql`), between successful writes of different actors:
//! - `rv`: B's write was based on the version A's write produced (same uid, B's
//!   `base_resource_version` equal to A's `resource_version`), and B comes after A in the session;
//! - `owner`: B wrote an object owned by the object A wrote (A's uid among B's `owner_uids`), and B
//!   was received within the trigger window after A's write completed.
//!
//! As SQL each is a join of the session's writes with themselves, and each side numbers the whole
//! session. In session order the writes of the past are all there is to look up: an `rv` edge's
//! source is an earlier write, found by (uid, version); an `owner` edge's source completed at most
//! a trigger window before, found by uid among the writes still inside their window.

use crate::group_keys::FastMap;

/// A write, as the `rv` and `owner` edges need it. Uids are numbered by [`VersionEdges::uid`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Write {
    /// Its position in the session.
    pub index: u64,
    /// Its actor, numbered as the watch pass numbers them.
    pub actor: u32,
    /// When the API server received it, in microseconds.
    pub received_at: i64,
    /// When it completed, in microseconds, if known.
    pub completed_at: Option<i64>,
    /// The uid of the object it wrote.
    pub uid: Option<u32>,
    /// The version it produced.
    pub resource_version: Option<Box<str>>,
    /// The version it was based on.
    pub base_resource_version: Option<Box<str>>,
    /// The owners of the object it wrote.
    pub owner_uids: Vec<u32>,
}

/// Where each version of one object was produced (by resourceVersion): the write's index and actor.
type Producers = FastMap<Box<str>, Vec<(u64, u32)>>;

/// A write that can still be the source of an `owner` edge.
#[derive(Debug, Clone, Copy)]
struct OwnerCandidate {
    index: u64,
    actor: u32,
    completed_at: i64,
}

/// The pass: feed it a session's successful writes in session order with [`VersionEdges::push`],
/// then call [`VersionEdges::finish`]; each edge goes to the sink as (from write's index, to write's
/// index). Writes received in the same microsecond are taken together (a zero-length write can own
/// the object of one received in the same microsecond before it in the session order).
pub(crate) struct VersionEdges {
    trigger_window_us: i64,
    uids: FastMap<String, u32>,
    /// Every version produced so far, by uid and resourceVersion: where, and by whom.
    produced: FastMap<u32, Producers>,
    /// Per uid, its writes whose trigger window may still be open.
    owners: FastMap<u32, Vec<OwnerCandidate>>,
    /// The writes received in the same microsecond as the last one pushed.
    same_time: Vec<Write>,
    writes: u64,
}

/// Writes between two sweeps of the owner candidates whose window has passed.
const SWEEP_EVERY: u64 = 1 << 14;

impl VersionEdges {
    /// A pass with the analysis' trigger window, in milliseconds.
    pub(crate) fn new(trigger_window_ms: u64) -> Self {
        Self {
            trigger_window_us: i64::try_from(trigger_window_ms.saturating_mul(1000)).unwrap_or(i64::MAX),
            uids: FastMap::default(),
            produced: FastMap::default(),
            owners: FastMap::default(),
            same_time: Vec::new(),
            writes: 0,
        }
    }

    /// The number of `uid`.
    pub(crate) fn uid(&mut self, uid: &str) -> u32 {
        if let Some(id) = self.uids.get(uid) {
            return *id;
        }
        let id = self.uids.len() as u32;
        self.uids.insert(uid.to_owned(), id);
        id
    }

    /// Takes the next successful write of the session (in session order: the watch pass checks it).
    pub(crate) fn push(&mut self, write: Write, sink: &mut impl FnMut(u64, u64, EdgeKind)) {
        if self.same_time.first().is_some_and(|w| w.received_at != write.received_at) {
            self.flush(sink);
        }
        self.same_time.push(write);
    }

    /// Takes the last writes pushed into account.
    pub(crate) fn finish(&mut self, sink: &mut impl FnMut(u64, u64, EdgeKind)) {
        self.flush(sink);
    }

    /// Handles the writes received in one microsecond: they first become possible owners, then
    /// each, in session order, gets its `rv` edge from the writes before it that produced its base
    /// version, and its `owner` edges; then it becomes a producer of its own version.
    fn flush(&mut self, sink: &mut impl FnMut(u64, u64, EdgeKind)) {
        let Some(now) = self.same_time.first().map(|w| w.received_at) else { return };
        for write in &self.same_time {
            if let (Some(uid), Some(completed_at)) = (write.uid, write.completed_at) {
                let candidate = OwnerCandidate { index: write.index, actor: write.actor, completed_at };
                self.owners.entry(uid).or_default().push(candidate);
            }
        }
        let window = self.trigger_window_us;
        for write in std::mem::take(&mut self.same_time) {
            if let (Some(uid), Some(base)) = (write.uid, write.base_resource_version.as_ref()) {
                // `produced` holds only earlier writes: this one is added below.
                let producers = self.produced.get(&uid).and_then(|versions| versions.get(base.as_ref()));
                for &(from, actor) in producers.map_or(&[][..], Vec::as_slice) {
                    if actor != write.actor {
                        sink(from, write.index, EdgeKind::Rv);
                    }
                }
            }
            for owner in &write.owner_uids {
                let Some(candidates) = self.owners.get_mut(owner) else { continue };
                candidates.retain(|c| c.completed_at.saturating_add(window) >= now);
                for c in candidates.iter() {
                    let in_window = c.completed_at <= write.received_at;
                    if c.actor != write.actor && in_window {
                        sink(c.index, write.index, EdgeKind::Owner);
                    }
                }
            }
            if let (Some(uid), Some(version)) = (write.uid, write.resource_version) {
                self.produced.entry(uid).or_default().entry(version).or_default().push((write.index, write.actor));
            }
            self.writes += 1;
            if self.writes.is_multiple_of(SWEEP_EVERY) {
                self.owners.retain(|_, candidates| {
                    candidates.retain(|c| c.completed_at.saturating_add(window) >= now);
                    !candidates.is_empty()
                });
            }
        }
    }
}

/// Which evidence an edge of this pass has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeKind {
    /// B's write was based on the version A's produced.
    Rv,
    /// B wrote an object owned by A's, just after A's write.
    Owner,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1000;

    /// One write: (actor, uid, rv, base rv, owners, received ms, duration ms).
    type Spec<'a> = (u32, &'a str, &'a str, Option<&'a str>, &'a [&'a str], i64, i64);

    fn edges(writes: &[Spec]) -> Vec<(u64, u64, EdgeKind)> {
        let mut pass = VersionEdges::new(5000);
        let mut out = Vec::new();
        for (index, (actor, uid, rv, base, owners, at, duration)) in writes.iter().enumerate() {
            let write = Write {
                index: index as u64,
                actor: *actor,
                received_at: at * MS,
                completed_at: Some((at + duration) * MS),
                uid: Some(pass.uid(uid)),
                resource_version: Some((*rv).into()),
                base_resource_version: base.map(Into::into),
                owner_uids: owners.iter().map(|o| pass.uid(o)).collect(),
            };
            pass.push(write, &mut |f, t, k| out.push((f, t, k)));
        }
        pass.finish(&mut |f, t, k| out.push((f, t, k)));
        out.sort_unstable_by_key(|(f, t, _)| (*f, *t));
        out
    }

    #[test]
    fn a_write_based_on_another_actor_s_version_has_an_rv_edge_from_it() {
        let got = edges(&[
            (0, "x", "1", None, &[], 0, 5),        // 0: A creates x at version 1
            (0, "x", "2", Some("1"), &[], 10, 5),  // 1: A again: an actor never triggers itself
            (1, "x", "3", Some("2"), &[], 20, 5),  // 2: B based on 2: from 1
            (1, "y", "4", Some("2"), &[], 30, 5),  // 3: another object, same version text: none
            (2, "x", "5", Some("1"), &[], 900, 5), // 4: C based on the old 1, much later: from 0
        ]);
        assert_eq!(got, vec![(0, 4, EdgeKind::Rv), (1, 2, EdgeKind::Rv)]);
    }

    #[test]
    fn an_owned_object_written_within_the_window_has_an_owner_edge() {
        let got = edges(&[
            (0, "deploy", "1", None, &[], 0, 10),    // 0: A writes the owner, completes at 10 ms
            (1, "rs", "2", None, &["deploy"], 5, 1), // 1: received before it completed: none
            (1, "rs", "3", None, &["deploy"], 10, 1), // 2: at its completion: edge
            (0, "rs", "4", None, &["deploy"], 20, 1), // 3: A itself: none
            (2, "rs", "5", None, &["deploy"], 5010, 1), // 4: exactly the window after: edge
            (2, "rs", "6", None, &["deploy"], 5011, 1), // 5: past it: none
        ]);
        assert_eq!(got, vec![(0, 2, EdgeKind::Owner), (0, 4, EdgeKind::Owner)]);
    }

    #[test]
    fn a_zero_length_owner_write_counts_for_writes_of_its_microsecond() {
        // B's write comes first in the session order (audit ID) but A's completed in that same
        // microsecond, which the SQL's time comparison allows.
        let got = edges(&[(1, "rs", "2", None, &["deploy"], 7, 0), (0, "deploy", "1", None, &[], 7, 0)]);
        assert_eq!(got, vec![(1, 0, EdgeKind::Owner)]);
    }
}
