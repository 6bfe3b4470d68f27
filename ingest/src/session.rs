//! Session tagging: which recording an operation belongs to.

use kubestep_schemas::session::auto_session_name;

/// Default `--idle-gap`: an automatic session ends after five minutes without events.
pub const DEFAULT_IDLE_GAP_US: i64 = 5 * 60 * 1_000_000;

/// Assigns every record to exactly one session: the forced one when a name was given, otherwise an
/// automatic session `auto-<UTC start>` that ends after an idle gap without events.
///
/// Automatic sessions follow the events' own clock (`received_at`), not the wall clock, so that
/// importing the same log twice gives the same sessions. An event that arrives out of order (a watch
/// completes minutes after it began) joins the session that is open; only a gap after the latest
/// event seen starts a new one.
#[derive(Debug, Clone)]
pub struct SessionAssigner {
    forced: Option<String>,
    idle_gap_us: i64,
    current: Option<AutoSession>,
}

#[derive(Debug, Clone)]
struct AutoSession {
    name: String,
    latest_us: i64,
}

impl SessionAssigner {
    /// All records go to `name`.
    pub fn named(name: String) -> Self {
        Self { forced: Some(name), idle_gap_us: DEFAULT_IDLE_GAP_US, current: None }
    }

    /// Automatic sessions separated by `idle_gap_us` microseconds without events.
    pub fn automatic(idle_gap_us: i64) -> Self {
        Self { forced: None, idle_gap_us, current: None }
    }

    /// The session of a record received at `received_at_us`.
    pub fn assign(&mut self, received_at_us: i64) -> &str {
        if let Some(name) = &self.forced {
            return name;
        }
        let gap = self.idle_gap_us;
        let current = match self.current.take() {
            Some(mut s) if received_at_us <= s.latest_us.saturating_add(gap) => {
                s.latest_us = s.latest_us.max(received_at_us);
                s
            }
            _ => AutoSession { name: auto_session_name(received_at_us), latest_us: received_at_us },
        };
        &self.current.insert(current).name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60 * 1_000_000;

    #[test]
    fn idle_gaps_split_sessions_and_late_events_join_the_open_one() {
        let mut s = SessionAssigner::automatic(5 * MIN);
        let t0 = 1_700_000_000_000_000;
        let first = s.assign(t0).to_owned();
        assert_eq!(s.assign(t0 + 4 * MIN), first);
        assert_eq!(s.assign(t0 + 8 * MIN), first, "within the gap of the latest event");
        assert_eq!(s.assign(t0 - 30 * MIN), first, "a late watch joins the open session");
        let second = s.assign(t0 + 14 * MIN).to_owned();
        assert_ne!(second, first);
        assert!(second > first);
    }

    #[test]
    fn a_named_session_takes_everything() {
        let mut s = SessionAssigner::named("mine".into());
        assert_eq!(s.assign(0), "mine");
        assert_eq!(s.assign(i64::MAX), "mine");
    }
}
