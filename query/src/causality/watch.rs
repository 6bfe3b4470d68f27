//! The `watch` edges of one session, found in one pass over its operations in session order.
//!
//! The meaning is the `watch_edges` of the `causal_edges` view (`query/sql/views/causal_edges.sql`):
//! actor B touched (read or wrote) the object that A's successful write changed, within the trigger
//! window after A's write completed; every successful write B made in that episode, from that touch
//! on, has an edge from A's write. An episode is a burst of one actor's requests with no gap longer
//! than the episode gap between one request's completion and the next one's receipt.
//!
//! As SQL that is a join of every write with every touch of its object near in time, then a join of
//! the triggers with every write of the episode, and numbering each actor's episodes orders the whole
//! session by actor: at 10M operations the statement held more than 2 GB. In session order it needs
//! only the writes of the last trigger window, per object, and each actor's current episode, so the
//! memory is what the session does in a few seconds, whatever its length.

use crate::group_keys::{FastMap, FastSet};

/// One operation, as the pass needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Step {
    /// Its position in the session.
    pub index: u64,
    /// Its actor, interned by [`WatchEdges::actor`].
    pub actor: u32,
    /// Its object (kind, namespace, name), interned by [`WatchEdges::object`]; `None` when the
    /// kind or the name is missing, which no edge can match.
    pub object: Option<u32>,
    /// When the API server received it, in microseconds.
    pub received_at: i64,
    /// When it completed, in microseconds, if known.
    pub completed_at: Option<i64>,
    /// Whether it is a successful create, update, patch or delete.
    pub is_write: bool,
}

/// A write whose object can still be touched within the trigger window.
#[derive(Debug, Clone, Copy)]
struct RecentWrite {
    index: u64,
    actor: u32,
    completed_at: i64,
}

/// An actor's current episode and the writes that triggered it so far.
#[derive(Debug, Default)]
struct ActorState {
    /// The completion of the actor's previous request (`None` before its first, or when unknown).
    last_completed: Option<i64>,
    /// The writes of other actors this episode touched, in the order of their first touch.
    triggers: Vec<u64>,
    /// The same writes, to count each once.
    triggered_by: FastSet<u64>,
}

/// Steps between two sweeps of the writes whose window has passed.
const SWEEP_EVERY: u64 = 1 << 16;

/// The pass: feed it a session's steps in session order with [`WatchEdges::push`], then call
/// [`WatchEdges::finish`]; each edge goes to the sink as (from write's index, to write's index).
///
/// Steps received in the same microsecond are taken together: a zero-length write can be touched by
/// a step received in the same microsecond that comes before it in the session order (by audit ID),
/// as the SQL's time comparison allows.
pub(crate) struct WatchEdges {
    trigger_window_us: i64,
    episode_gap_us: i64,
    actors: FastMap<String, u32>,
    objects: FastMap<String, u32>,
    key: String,
    states: Vec<ActorState>,
    /// Per object, its writes whose trigger window may still be open.
    recent: FastMap<u32, Vec<RecentWrite>>,
    /// The steps received in the same microsecond as the last one pushed.
    same_time: Vec<Step>,
    last_index: Option<u64>,
    steps: u64,
}

/// Why the steps cannot be taken as a session.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepOrderError {
    /// A step came before the previous one.
    #[error(
        "operation {index} (received at {received_at} us) came after operation {previous}: the steps are not in session order"
    )]
    OutOfOrder {
        /// The step.
        index: u64,
        /// Its time.
        received_at: i64,
        /// The step before it.
        previous: u64,
    },
}

impl WatchEdges {
    /// A pass with the analysis' trigger window and episode gap, in milliseconds.
    pub(crate) fn new(trigger_window_ms: u64, episode_gap_ms: u64) -> Self {
        let us = |ms: u64| i64::try_from(ms.saturating_mul(1000)).unwrap_or(i64::MAX);
        Self {
            trigger_window_us: us(trigger_window_ms),
            episode_gap_us: us(episode_gap_ms),
            actors: FastMap::default(),
            objects: FastMap::default(),
            key: String::new(),
            states: Vec::new(),
            recent: FastMap::default(),
            same_time: Vec::new(),
            last_index: None,
            steps: 0,
        }
    }

    /// The number of `actor`.
    pub(crate) fn actor(&mut self, actor: &str) -> u32 {
        if let Some(id) = self.actors.get(actor) {
            return *id;
        }
        let id = self.actors.len() as u32;
        self.actors.insert(actor.to_owned(), id);
        self.states.push(ActorState::default());
        id
    }

    /// The number of the object `kind namespace/name`.
    pub(crate) fn object(&mut self, kind: &str, namespace: &str, name: &str) -> u32 {
        self.key.clear();
        for part in [kind, "\u{0}", namespace, "\u{0}", name] {
            self.key.push_str(part);
        }
        if let Some(id) = self.objects.get(self.key.as_str()) {
            return *id;
        }
        let id = self.objects.len() as u32;
        self.objects.insert(self.key.clone(), id);
        id
    }

    /// Takes the next step of the session.
    pub(crate) fn push(&mut self, step: Step, sink: &mut impl FnMut(u64, u64)) -> Result<(), StepOrderError> {
        if let Some(previous) = self.last_index
            && (step.index <= previous || self.same_time.last().is_some_and(|s| s.received_at > step.received_at))
        {
            return Err(StepOrderError::OutOfOrder { index: step.index, received_at: step.received_at, previous });
        }
        self.last_index = Some(step.index);
        if self.same_time.first().is_some_and(|s| s.received_at != step.received_at) {
            self.flush(sink);
        }
        self.same_time.push(step);
        Ok(())
    }

    /// Takes the last steps pushed into account.
    pub(crate) fn finish(&mut self, sink: &mut impl FnMut(u64, u64)) {
        self.flush(sink);
    }

    /// Handles the steps received in one microsecond: their writes first become touchable, then each
    /// step, in session order, continues or starts its actor's episode, picks up the writes it
    /// touched, and if it is a write, receives an edge from every write that triggered the episode.
    fn flush(&mut self, sink: &mut impl FnMut(u64, u64)) {
        let Some(now) = self.same_time.first().map(|s| s.received_at) else { return };
        for step in &self.same_time {
            if let (true, Some(object), Some(completed_at)) = (step.is_write, step.object, step.completed_at) {
                let write = RecentWrite { index: step.index, actor: step.actor, completed_at };
                self.recent.entry(object).or_default().push(write);
            }
        }
        let window = self.trigger_window_us;
        for step in std::mem::take(&mut self.same_time) {
            let Some(state) = self.states.get_mut(step.actor as usize) else { continue };
            let continues =
                state.last_completed.is_some_and(|c| step.received_at.saturating_sub(c) <= self.episode_gap_us);
            if !continues {
                state.triggers.clear();
                state.triggered_by.clear();
            }
            state.last_completed = step.completed_at;
            if let Some(writes) = step.object.and_then(|o| self.recent.get_mut(&o)) {
                writes.retain(|w| w.completed_at.saturating_add(window) >= now);
                for w in writes.iter() {
                    let in_window = w.completed_at <= step.received_at;
                    if w.actor != step.actor && in_window && state.triggered_by.insert(w.index) {
                        state.triggers.push(w.index);
                    }
                }
            }
            if step.is_write {
                for from in &state.triggers {
                    sink(*from, step.index);
                }
            }
            self.steps += 1;
            if self.steps.is_multiple_of(SWEEP_EVERY) {
                self.recent.retain(|_, writes| {
                    writes.retain(|w| w.completed_at.saturating_add(window) >= now);
                    !writes.is_empty()
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1000;

    /// Runs the pass over `(actor, object, received ms, duration ms, is_write)` steps, indexed in order.
    fn edges(steps: &[(&str, &str, i64, i64, bool)]) -> Vec<(u64, u64)> {
        let mut pass = WatchEdges::new(5000, 1000);
        let mut out = Vec::new();
        for (index, (actor, object, at, duration, is_write)) in steps.iter().enumerate() {
            let step = Step {
                index: index as u64,
                actor: pass.actor(actor),
                object: Some(pass.object("ConfigMap", "ns", object)),
                received_at: at * MS,
                completed_at: Some((at + duration) * MS),
                is_write: *is_write,
            };
            pass.push(step, &mut |f, t| out.push((f, t))).unwrap();
        }
        pass.finish(&mut |f, t| out.push((f, t)));
        out.sort_unstable();
        out
    }

    #[test]
    fn a_touch_links_every_later_write_of_the_episode() {
        let got = edges(&[
            ("a", "x", 0, 5, true),    // 0: A writes x
            ("b", "y", 100, 5, true),  // 1: B writes y before touching x: not a consequence
            ("b", "x", 200, 5, false), // 2: B reads x
            ("b", "y", 300, 5, true),  // 3: B writes y: triggered
            ("b", "z", 400, 5, true),  // 4: and z
            ("b", "z", 3000, 5, true), // 5: a new episode (2.6 s gap): not triggered
        ]);
        assert_eq!(got, vec![(0, 3), (0, 4)]);
    }

    #[test]
    fn the_trigger_window_and_the_actor_bound_the_touches() {
        let got = edges(&[
            ("a", "x", 0, 5, true),    // 0: completes at 5 ms
            ("a", "x", 100, 5, false), // 1: A's own touch does not count
            ("b", "x", 5005, 0, true), // 2: exactly 5 s after: counts, and is itself a write
            ("c", "x", 5006, 0, true), // 3: 5 s + 1 ms after 0, but 1 ms after 2
        ]);
        assert_eq!(got, vec![(0, 2), (2, 3)]);
    }

    #[test]
    fn a_zero_length_write_is_touched_by_a_step_of_the_same_microsecond_before_it() {
        // Same time: step 0 (B's write) comes first in session order, yet A's write (step 1) completed
        // when B's was received, as the SQL's comparison allows.
        let got = edges(&[("b", "x", 10, 0, true), ("a", "x", 10, 0, true)]);
        assert_eq!(got, vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn steps_out_of_session_order_are_an_error() {
        let mut pass = WatchEdges::new(5000, 1000);
        let actor = pass.actor("a");
        let step =
            |index, received_at| Step { index, actor, object: None, received_at, completed_at: None, is_write: false };
        pass.push(step(1, 10), &mut |_, _| {}).unwrap();
        assert!(pass.push(step(0, 20), &mut |_, _| {}).is_err());
        assert!(pass.push(step(2, 5), &mut |_, _| {}).is_err());
    }
}
