//! The objects worth comparing version by version: the rows of the `hot_loops` and
//! `fight_candidates` views, found in one ordered pass over a session's successful writes.
//!
//! The views say in SQL what a hot loop and a fight candidate are, and users query them. Asked of
//! the engine, the two read the session's writes three times (the hot loops' view joins its busy
//! pairs back to the writes) and sort them by object for the fights' `lag`. `analyze` instead
//! streams the successful writes once, in session order and without their bodies
//! (`successful_writes.sql`), and this pass counts, per actor and object, the most writes within
//! the window, and per object the turns: an update or patch by another actor than the update or
//! patch before it, within the window. Tests hold the pass to the views' answers. Memory grows
//! with the actors and objects written, not with the writes: per actor and object the pass holds
//! the times of one window, per object the latest update.

use std::collections::VecDeque;

use datafusion::prelude::SessionContext;
use datafusion::scalar::ScalarValue;
use futures::StreamExt;

use crate::QueryError;
use crate::behaviour::BehaviourOptions;
use crate::context::stream_ahead;
use crate::group_keys::{GroupMap, push_field};
use crate::values::{Bools, Micros, Strings};
use crate::views::{FIGHT_CANDIDATES, HOT_LOOPS, for_session};

/// The statement the pass reads, public so the performance report can give DuckDB the views'
/// SQL in its place.
pub const SUCCESSFUL_WRITES_SQL: &str = include_str!("../sql/successful_writes.sql");

/// The SQL that asks the engine what the pass finds: the `hot_loops` and `fight_candidates` views
/// for one session (`$1`) with the thresholds of `o`, in the pass's orders. For comparisons (the
/// performance report gives these to DuckDB in place of the pass's stream) and tests.
pub fn views_sql(o: &BehaviourOptions) -> [String; 2] {
    let thresholds =
        [("hot_writes", o.hot_writes), ("hot_window_seconds", o.hot_window_s), ("fight_turns", o.fight_turns)];
    [
        for_session(HOT_LOOPS, &thresholds, "writes DESC, actor_id, kind, namespace, name"),
        for_session(FIGHT_CANDIDATES, &thresholds, "turns DESC, kind, namespace, name"),
    ]
}

/// A row of the `hot_loops` view: one actor's successful writes to one object, at least the
/// threshold of them within one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HotLoopCandidate {
    /// The actor (`None` where the view has null).
    pub actor_id: Option<String>,
    /// Kind.
    pub kind: Option<String>,
    /// Namespace (`None` for cluster-scoped objects).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// The actor's successful writes to the object in the session.
    pub writes: u64,
    /// The most of them within one window.
    pub peak_in_window: u64,
    /// The first write, microseconds since the epoch.
    pub first_us: i64,
    /// The last write.
    pub last_us: i64,
}

/// A row of the `fight_candidates` view: an object actors took turns writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FightCandidate {
    /// Kind.
    pub kind: Option<String>,
    /// Namespace (`None` for cluster-scoped objects).
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
    /// Updates and patches by another actor than the one before, within the window.
    pub turns: u64,
    /// The first turn, microseconds since the epoch.
    pub first_us: i64,
    /// The last turn.
    pub last_us: i64,
}

/// What one pass found, in the views' orders: hot loops by writes (most first), fight candidates
/// by turns (most first), ties by actor and object.
#[derive(Debug, Default)]
pub struct Candidates {
    /// The `hot_loops` view's rows for the session.
    pub hot_loops: Vec<HotLoopCandidate>,
    /// The `fight_candidates` view's rows for the session.
    pub fights: Vec<FightCandidate>,
}

/// The successful writes of one actor to one object so far.
struct PairWrites {
    actor_id: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: String,
    writes: u64,
    first_us: i64,
    last_us: i64,
    peak: WindowPeak,
}

/// One object's updates and patches so far: who wrote it last and when, and its turns.
struct ObjectTurns {
    kind: Option<String>,
    namespace: Option<String>,
    name: String,
    /// The actor of the latest update or patch (`None` when that actor was null).
    last_actor: Option<String>,
    last_us: i64,
    turns: u64,
    first_turn_us: i64,
    last_turn_us: i64,
}

impl ObjectTurns {
    /// An object's first update or patch: no turn yet.
    fn first(kind: Option<&str>, namespace: Option<&str>, name: &str, actor: Option<&str>, at: i64) -> Self {
        Self {
            kind: kind.map(str::to_owned),
            namespace: namespace.map(str::to_owned),
            name: name.to_owned(),
            last_actor: actor.map(str::to_owned),
            last_us: at,
            turns: 0,
            first_turn_us: at,
            last_turn_us: at,
        }
    }

    /// The next update or patch (in session order), by `actor` at `at`: a turn when another actor
    /// than the last one wrote within `window_us` of it (a null actor is nobody's turn, as `<>`
    /// with a null is not true in SQL).
    fn update(&mut self, actor: Option<&str>, at: i64, window_us: i64) {
        let other_actor = matches!((&self.last_actor, actor), (Some(last), Some(now)) if last != now);
        if other_actor && at - self.last_us <= window_us {
            if self.turns == 0 {
                self.first_turn_us = at;
            }
            self.turns += 1;
            self.last_turn_us = at;
        }
        match (&mut self.last_actor, actor) {
            (Some(last), Some(now)) => {
                if last != now {
                    last.clear();
                    last.push_str(now);
                }
            }
            (last, now) => *last = now.map(str::to_owned),
        }
        self.last_us = at;
    }
}

/// Streams the successful writes of `session` once and finds the hot-loop candidates (when
/// `hot_loops`) and fight candidates (when `fights`) with the thresholds of `o`.
pub async fn find(
    ctx: &SessionContext,
    session: &str,
    o: &BehaviourOptions,
    hot_loops: bool,
    fights: bool,
) -> Result<Candidates, QueryError> {
    if !hot_loops && !fights {
        return Ok(Candidates::default());
    }
    let window_us = i64::try_from(o.hot_window_s.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    // Looked up by group key, kept in a list: growing a map moves its keys and indexes, not the
    // counts.
    let (mut pair_at, mut pairs): (GroupMap<usize>, Vec<PairWrites>) = Default::default();
    let (mut object_at, mut objects): (GroupMap<usize>, Vec<ObjectTurns>) = Default::default();
    let mut key = String::new();

    let mut stream = stream_ahead(ctx, SUCCESSFUL_WRITES_SQL, vec![ScalarValue::from(session)]).await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let (actor, kind, ns) =
            (Strings::of(&batch, "actor_id")?, Strings::of(&batch, "kind")?, Strings::of(&batch, "namespace")?);
        let (name, received, is_update) =
            (Strings::of(&batch, "name")?, Micros::of(&batch, "received_at")?, Bools::of(&batch, "is_update")?);
        for row in 0..batch.num_rows() {
            // The statement keeps named objects only; a write without a time has no place in a
            // window (the views' windows order by it), so it counts for neither.
            let (Some(name), Some(at)) = (name.get(row), received.get(row)) else { continue };
            let (actor, kind, ns) = (actor.get(row), kind.get(row), ns.get(row));
            key.clear();
            push_field(&mut key, kind);
            push_field(&mut key, ns);
            push_field(&mut key, Some(name));
            if fights && is_update.get(row) == Some(true) {
                match object_at.get(key.as_str()).and_then(|at| objects.get_mut(*at)) {
                    Some(object) => object.update(actor, at, window_us),
                    None => {
                        object_at.insert(key.clone(), objects.len());
                        objects.push(ObjectTurns::first(kind, ns, name, actor, at));
                    }
                }
            }
            if hot_loops {
                push_field(&mut key, actor);
                let known = pair_at.get(key.as_str()).copied();
                let index = known.unwrap_or_else(|| {
                    pair_at.insert(key.clone(), pairs.len());
                    pairs.push(PairWrites {
                        actor_id: actor.map(str::to_owned),
                        kind: kind.map(str::to_owned),
                        namespace: ns.map(str::to_owned),
                        name: name.to_owned(),
                        writes: 0,
                        first_us: at,
                        last_us: at,
                        peak: WindowPeak::default(),
                    });
                    pairs.len() - 1
                });
                let Some(pair) = pairs.get_mut(index) else { continue };
                pair.writes += 1;
                pair.last_us = at;
                pair.peak.push(at, window_us);
            }
        }
    }

    let mut found = Candidates::default();
    drop(pair_at);
    for pair in pairs {
        let peak = pair.peak.finish();
        if peak < o.hot_writes {
            continue;
        }
        found.hot_loops.push(HotLoopCandidate {
            writes: pair.writes,
            peak_in_window: peak,
            first_us: pair.first_us,
            last_us: pair.last_us,
            actor_id: pair.actor_id,
            kind: pair.kind,
            namespace: pair.namespace,
            name: pair.name,
        });
    }
    found.hot_loops.sort_by(|a, b| {
        b.writes
            .cmp(&a.writes)
            .then_with(|| nulls_last(&a.actor_id, &b.actor_id))
            .then_with(|| nulls_last(&a.kind, &b.kind))
            .then_with(|| nulls_last(&a.namespace, &b.namespace))
            .then_with(|| a.name.cmp(&b.name))
    });
    drop(object_at);
    found.fights = objects
        .into_iter()
        .filter(|object| object.turns > 0 && object.turns >= o.fight_turns)
        .map(|object| FightCandidate {
            kind: object.kind,
            namespace: object.namespace,
            name: object.name,
            turns: object.turns,
            first_us: object.first_turn_us,
            last_us: object.last_turn_us,
        })
        .collect();
    found.fights.sort_by(|a, b| {
        b.turns
            .cmp(&a.turns)
            .then_with(|| nulls_last(&a.kind, &b.kind))
            .then_with(|| nulls_last(&a.namespace, &b.namespace))
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(found)
}

/// SQL's ascending order with nulls last (the engine's default).
fn nulls_last(a: &Option<String>, b: &Option<String>) -> std::cmp::Ordering {
    match (a, b) {
        (Some(a), Some(b)) => a.cmp(b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    }
}

/// The most writes within any window ending at a write, as the view's `RANGE BETWEEN window
/// PRECEDING AND CURRENT ROW` counts them: both ends included, and a write counts every write
/// received in the same microsecond (its peers), even those after it. Fed the times in order, it
/// holds only those of the last window.
#[derive(Debug, Default)]
struct WindowPeak {
    /// The times within the window that ends at the latest one.
    window: VecDeque<i64>,
    peak: u64,
}

impl WindowPeak {
    /// The next write's time (never before the previous one).
    fn push(&mut self, at: i64, window_us: i64) {
        if let Some(&latest) = self.window.back()
            && latest != at
        {
            // The writes received at `latest` are all in: their window is complete.
            self.peak = self.peak.max(self.window.len() as u64);
        }
        while self.window.front().is_some_and(|&oldest| oldest < at.saturating_sub(window_us)) {
            self.window.pop_front();
        }
        self.window.push_back(at);
    }

    /// The peak, once every write went by.
    fn finish(&self) -> u64 {
        self.peak.max(self.window.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::{ObjectTurns, WindowPeak};

    fn peak_in_window(times: &[i64], window_us: i64) -> u64 {
        let mut peak = WindowPeak::default();
        for &at in times {
            peak.push(at, window_us);
        }
        peak.finish()
    }

    #[test]
    fn a_turn_is_another_actor_within_the_window() {
        let mut object = ObjectTurns::first(Some("ConfigMap"), None, "a", Some("x"), 0);
        object.update(Some("x"), 10, 60); // the same actor: no turn
        object.update(Some("y"), 70, 60); // 60 after x's last write: the window's end counts
        object.update(Some("x"), 131, 60); // 61 after: too late
        object.update(None, 140, 60); // nobody's turn
        object.update(Some("y"), 150, 60); // after a null actor: not a turn either
        object.update(Some("x"), 150, 60);
        assert_eq!((object.turns, object.first_turn_us, object.last_turn_us), (2, 70, 150));
    }

    #[test]
    fn the_peak_counts_both_ends_of_the_window() {
        assert_eq!(peak_in_window(&[0, 60, 120], 60), 2);
        assert_eq!(peak_in_window(&[0, 61, 122], 60), 1);
        assert_eq!(peak_in_window(&[0, 10, 20, 30, 100], 30), 4);
    }

    #[test]
    fn writes_in_the_same_microsecond_count_each_other() {
        // The first write at 5 already counts the second: peers are in each other's window.
        assert_eq!(peak_in_window(&[5, 5], 0), 2);
        assert_eq!(peak_in_window(&[0, 5, 5, 9], 4), 3);
        assert_eq!(peak_in_window(&[], 60), 0);
    }
}
