//! Loop detection: blocks of operations that repeat back to back in a session's sequence.
//!
//! Every period from 1 to the window is tried in one streaming pass over the session, keeping only
//! the last `window` operations: at position `i`, period `p` continues a run while operation `i`
//! does the same thing as operation `i - p` (same operation type, kind, namespace and name). When
//! the run breaks, it covers `length / p` whole blocks; three or more make a loop, reported once
//! with its full extent and its true repeat count. A run whose block itself repeats a shorter
//! block (`[A,A]` is `A` twice) is the same loop as the shorter period's and is not reported again.
//! So a 3-operation cycle is found with window 10 (the seed only found periods dividing the window).
//! Watches are not part of the sequence: they are long-running, and their place in it (their start)
//! says nothing about the work around them.

use std::collections::VecDeque;

use serde::Serialize;

/// A loop needs at least this many back-to-back repetitions of its block.
pub const MIN_REPEATS: u64 = 3;

/// A repeated block of operations. The first four fields are the seed's JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Loop {
    /// Index of the first operation of the first block.
    pub start_index: u64,
    /// Index of the last operation of the last whole block.
    pub end_index: u64,
    /// How many times the block occurs back to back.
    pub repeat_count: u64,
    /// `Repeated <Kind> operations <N> times`.
    pub description: String,
    /// Operations per block.
    pub period: usize,
    /// The block: `OPERATION Kind ns/name` per operation.
    pub pattern: Vec<String>,
}

#[derive(Default)]
struct Step {
    index: u64,
    signature: u64,
    label: String,
    kind: String,
}

/// A run of one period: from position `start`, every operation does what the one a period before
/// did. Its block is not copied: while the run lasts, the last `period` operations seen are the
/// block, rotated.
struct Run {
    start: u64,
    /// The session index of the run's first operation.
    start_index: u64,
    primitive: bool,
}

/// Finds loops in a sequence fed one operation at a time, in session order.
pub struct LoopDetector {
    window: usize,
    recent: VecDeque<Step>,
    runs: Vec<Option<Run>>,
    position: u64,
    found: Vec<Loop>,
    /// The bytes an operation's signature is hashed from, reused.
    key: Vec<u8>,
}

impl LoopDetector {
    /// A detector for every period from 1 to `window`.
    pub fn new(window: usize) -> Self {
        let window = window.max(1);
        Self {
            window,
            recent: VecDeque::with_capacity(window + 1),
            runs: (0..=window).map(|_| None).collect(),
            position: 0,
            found: Vec::new(),
            key: Vec::new(),
        }
    }

    /// The next operation of the sequence; `index` is its position in the session (which can skip
    /// numbers when some operations are left out of the sequence).
    pub fn push(&mut self, index: u64, operation_type: &str, kind: &str, namespace: &str, name: &str) {
        let signature = signature(&mut self.key, operation_type, kind, namespace, name);
        let i = self.position;
        for p in 1..=self.window.min(self.recent.len()) {
            let previous = &self.recent[self.recent.len() - p];
            if previous.signature == signature {
                if self.runs[p].is_none() {
                    let first = self.recent.len() - p;
                    let primitive = !has_shorter_period(p, |j| self.recent[first + j].signature);
                    let start_index = self.recent[first].index;
                    self.runs[p] = Some(Run { start: i - p as u64, start_index, primitive });
                }
            } else {
                self.close(p, i);
            }
        }
        // The step leaving the window lends its buffers to the new one: a session's worth of
        // operations goes by without an allocation per operation.
        let mut step =
            if self.recent.len() >= self.window { self.recent.pop_front() } else { None }.unwrap_or_default();
        step.index = index;
        step.signature = signature;
        step.label.clear();
        // `OPERATION Kind ns/name`, or `OPERATION Kind name` without a namespace (`*` without a name).
        for part in [operation_type, " ", kind, " ", namespace, if namespace.is_empty() { "" } else { "/" }] {
            step.label.push_str(part);
        }
        step.label.push_str(if name.is_empty() { "*" } else { name });
        step.kind.clear();
        step.kind.push_str(kind);
        self.recent.push_back(step);
        self.position += 1;
    }

    /// Ends the sequence and returns the loops, ordered by start, then period.
    pub fn finish(mut self) -> Vec<Loop> {
        for p in 1..=self.window {
            self.close(p, self.position);
        }
        self.found.sort_by_key(|l| (l.start_index, l.period));
        self.found
    }

    /// The run of period `p` broke at position `end` (exclusive), before that position's step
    /// joined `recent`.
    fn close(&mut self, p: usize, end: u64) {
        let Some(run) = self.runs[p].take() else { return };
        let blocks = (end - run.start) / p as u64;
        if blocks < MIN_REPEATS || !run.primitive {
            return;
        }
        // The last step of the last whole block is among the last `p` steps seen.
        let last = run.start + blocks * p as u64 - 1;
        let back = (end - last) as usize;
        let Some(last_step) = self.recent.len().checked_sub(back).and_then(|i| self.recent.get(i)) else { return };
        let end_index = last_step.index;
        // The last `p` steps seen (positions `end - p` to `end`) are the block rotated: the block's
        // step `k` is the one at a position `start + k` plus whole periods.
        let Some(first_seen) = self.recent.len().checked_sub(p) else { return };
        let rotation = ((end - run.start) % p as u64) as usize;
        let block = |k: usize| &self.recent[first_seen + (k + p - rotation) % p];
        let kind = block(0).kind.clone();
        self.found.push(Loop {
            start_index: run.start_index,
            end_index,
            repeat_count: blocks,
            description: format!("Repeated {kind} operations {blocks} times"),
            period: p,
            pattern: (0..p).map(|k| block(k).label.clone()).collect(),
        });
    }
}

fn signature(key: &mut Vec<u8>, operation_type: &str, kind: &str, namespace: &str, name: &str) -> u64 {
    key.clear();
    for part in [operation_type, kind, namespace, name] {
        key.extend_from_slice(&(part.len() as u64).to_le_bytes());
        key.extend_from_slice(part.as_bytes());
    }
    xxhash_rust::xxh3::xxh3_64(key)
}

/// Whether a block of `p` operations (their signatures by position) is itself a shorter block
/// repeated.
fn has_shorter_period(p: usize, signature: impl Fn(usize) -> u64) -> bool {
    (1..p).filter(|q| p.is_multiple_of(*q)).any(|q| (q..p).all(|j| signature(j) == signature(j - q)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(names: &[&str], window: usize) -> Vec<(u64, u64, u64, usize)> {
        let mut d = LoopDetector::new(window);
        for (i, n) in names.iter().enumerate() {
            d.push(i as u64, "GET", "Pod", "default", n);
        }
        d.finish().into_iter().map(|l| (l.start_index, l.end_index, l.repeat_count, l.period)).collect()
    }

    #[test]
    fn thirty_identical_operations_are_one_loop() {
        assert_eq!(detect(&["a"; 30], 10), [(0, 29, 30, 1)]);
    }

    #[test]
    fn a_pair_repeated_three_times_is_one_loop() {
        assert_eq!(detect(&["a", "b", "a", "b", "a", "b"], 2), [(0, 5, 3, 2)]);
    }

    #[test]
    fn a_three_cycle_is_found_with_window_ten() {
        let names: Vec<&str> = ["x", "y", "z"].iter().cycle().take(15).copied().collect();
        assert_eq!(detect(&names, 10), [(0, 14, 5, 3)]);
        // With a prefix and a suffix that do not repeat, the extent is exact.
        let mut with_noise = vec!["p", "q"];
        with_noise.extend(&names);
        with_noise.push("r");
        assert_eq!(detect(&with_noise, 10), [(2, 16, 5, 3)]);
    }

    #[test]
    fn no_repeats_no_loops_and_two_repeats_are_not_enough() {
        let names: Vec<String> = (0..50).map(|i| format!("p{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert!(detect(&names, 10).is_empty());
        assert!(detect(&["a", "b", "a", "b"], 10).is_empty());
    }

    #[test]
    fn the_pattern_starts_where_the_loop_starts_whatever_step_it_breaks_at() {
        // The run breaks one step into a fifth block: the last three seen are `y z x`.
        let mut names: Vec<&str> = vec!["p"];
        names.extend(["x", "y", "z"].iter().cycle().take(13));
        names.push("q");
        let mut d = LoopDetector::new(10);
        for (i, n) in names.iter().enumerate() {
            d.push(10 + i as u64, "GET", "Pod", if *n == "y" { "" } else { "default" }, n);
        }
        let found = d.finish();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!((found[0].start_index, found[0].end_index, found[0].repeat_count), (11, 22, 4));
        assert_eq!(found[0].pattern, ["GET Pod default/x", "GET Pod y", "GET Pod default/z"]);
        assert_eq!(found[0].description, "Repeated Pod operations 4 times");
    }

    #[test]
    fn periods_longer_than_the_window_are_not_looked_for() {
        let names: Vec<&str> = ["a", "b", "c", "d"].iter().cycle().take(16).copied().collect();
        assert!(detect(&names, 3).is_empty());
        assert_eq!(detect(&names, 4), [(0, 15, 4, 4)]);
    }
}
