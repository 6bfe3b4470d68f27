//! Session tagging: which recording an operation belongs to.

use kubestep_schemas::session::auto_session_name;

/// Default `--idle-gap`: an automatic session ends after five minutes without events.
pub const DEFAULT_IDLE_GAP_US: i64 = 5 * 60 * 1_000_000;

/// How many automatic sessions stay open for late events. Older ones are closed for good.
const OPEN_SESSIONS: usize = 64;

/// Assigns every record to exactly one session: the forced one when a name was given, otherwise an
/// automatic session `auto-<UTC start>` that ends after an idle gap without events.
///
/// Automatic sessions follow the events' own clock, not the wall clock, so that importing the same
/// log twice gives the same sessions. The clock is `completed_at`: events are emitted when requests
/// complete, so that is the order they arrive in (a watch that ran for ten minutes arrives with the
/// events of its last minute). An event joins the open session whose span, widened by the idle gap
/// on both sides, contains its time; the most recent one if several do. Otherwise it starts a new
/// session. Keeping several sessions open lets an import of unrelated logs (last year's, then
/// today's, then last year's again) put each event with its neighbours in time.
#[derive(Debug, Clone)]
pub struct SessionAssigner {
    forced: Option<String>,
    idle_gap_us: i64,
    open: Vec<AutoSession>,
}

#[derive(Debug, Clone)]
struct AutoSession {
    name: String,
    first_us: i64,
    latest_us: i64,
}

impl SessionAssigner {
    /// All records go to `name`.
    pub fn named(name: String) -> Self {
        Self { forced: Some(name), idle_gap_us: DEFAULT_IDLE_GAP_US, open: Vec::new() }
    }

    /// Automatic sessions separated by `idle_gap_us` microseconds without events.
    pub fn automatic(idle_gap_us: i64) -> Self {
        Self { forced: None, idle_gap_us, open: Vec::new() }
    }

    /// Re-opens an automatic session that is already in the recording, spanning `first_us` to
    /// `latest_us` (completion times), so that events continuing it join it instead of starting
    /// a new one: a log imported tomorrow that carries on today's activity, or a restarted server.
    pub fn resume(&mut self, name: String, first_us: i64, latest_us: i64) {
        if self.forced.is_some() {
            return;
        }
        if self.open.len() == OPEN_SESSIONS {
            // Keep the most recent sessions: they are the ones new events can continue.
            let oldest = self.open.iter().enumerate().min_by_key(|(_, s)| s.latest_us).map(|(i, _)| i);
            match oldest {
                Some(i) if self.open[i].latest_us < latest_us => {
                    self.open.remove(i);
                }
                _ => return,
            }
        }
        self.open.push(AutoSession { name, first_us, latest_us });
    }

    /// The session of a record that completed at `completed_at_us`.
    pub fn assign(&mut self, completed_at_us: i64) -> &str {
        if let Some(name) = &self.forced {
            return name;
        }
        let gap = self.idle_gap_us;
        let t = completed_at_us;
        // The most recently created sessions are at the end; search from there.
        let found =
            self.open.iter().rposition(|s| t >= s.first_us.saturating_sub(gap) && t <= s.latest_us.saturating_add(gap));
        let index = match found {
            Some(i) => {
                let s = &mut self.open[i];
                s.first_us = s.first_us.min(t);
                s.latest_us = s.latest_us.max(t);
                i
            }
            None => {
                if self.open.len() == OPEN_SESSIONS {
                    self.open.remove(0);
                }
                self.open.push(AutoSession { name: auto_session_name(t), first_us: t, latest_us: t });
                self.open.len() - 1
            }
        };
        &self.open[index].name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60 * 1_000_000;

    #[test]
    fn idle_gaps_split_sessions() {
        let mut s = SessionAssigner::automatic(5 * MIN);
        let t0 = 1_700_000_000_000_000;
        let first = s.assign(t0).to_owned();
        assert_eq!(s.assign(t0 + 4 * MIN), first);
        assert_eq!(s.assign(t0 + 8 * MIN), first, "within the gap of the latest event");
        assert_eq!(s.assign(t0 + 2 * MIN), first, "slightly out of order");
        let second = s.assign(t0 + 14 * MIN).to_owned();
        assert_ne!(second, first);
        assert!(second > first, "names sort in time order");
    }

    #[test]
    fn unrelated_periods_keep_their_own_sessions() {
        let mut s = SessionAssigner::automatic(5 * MIN);
        let old = 1_500_000_000_000_000;
        let new = 1_700_000_000_000_000;
        let a = s.assign(old).to_owned();
        let b = s.assign(new).to_owned();
        assert_ne!(a, b);
        assert_eq!(s.assign(old + MIN), a, "back in the old period: the old session");
        assert_eq!(s.assign(new + MIN), b);
        let c = s.assign(old - 60 * MIN).to_owned();
        assert!(c != a && c != b, "an hour before anything seen: a new session");
    }

    #[test]
    fn stored_sessions_are_continued() {
        let t0 = 1_700_000_000_000_000;
        let mut s = SessionAssigner::automatic(5 * MIN);
        s.resume("auto-earlier".into(), t0, t0 + 10 * MIN);
        assert_eq!(s.assign(t0 + 12 * MIN), "auto-earlier");
        assert_ne!(s.assign(t0 + 30 * MIN), "auto-earlier");
        let mut named = SessionAssigner::named("mine".into());
        named.resume("auto-earlier".into(), t0, t0);
        assert_eq!(named.assign(t0), "mine");
    }

    #[test]
    fn a_named_session_takes_everything() {
        let mut s = SessionAssigner::named("mine".into());
        assert_eq!(s.assign(0), "mine");
        assert_eq!(s.assign(i64::MAX), "mine");
    }
}
