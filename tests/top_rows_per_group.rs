//! "The N first rows per group" questions (`row_number()`/`rank()` over a `PARTITION BY`, filtered
//! to `<= N`) are planned with a per-group heap instead of a sort of every row when the groups are
//! categories (verbs, actors), and must answer exactly what the full sort answers. The same
//! question written with `BETWEEN 1 AND N`, which the optimizer rule does not take, is the
//! reference.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A simulated cluster with many operations per verb and per actor.
fn recording(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    let (log, _) = simulate(dir, "mixed", "11", &["--events", "6000"]);
    let output = import(&data, &[&log], &["-q", "--session", "simulated"]);
    assert!(output.status.success(), "{:?}", text(&output));
    data
}

/// The physical plan of `sql`, as DataFusion prints it.
fn plan(data: &Path, sql: &str) -> String {
    rows(data, &format!("EXPLAIN {sql}")).into_iter().map(|row| row.join("\n")).collect::<Vec<_>>().join("\n")
}

fn uses_heaps(data: &Path, sql: &str) -> bool {
    plan(data, sql).contains("PartitionedTopKExec")
}

/// Runs `question` with the bound written as `filter` (taken by the rule) and as `BETWEEN 1 AND n`
/// (not taken), and checks both give the same non-empty rows.
fn same_answer_with_and_without_heaps(data: &Path, question: &str, filter: &str, n: u32) -> Vec<Vec<String>> {
    let with = question.replace("{bound}", filter);
    let without = question.replace("{bound}", &format!("rank BETWEEN 1 AND {n}"));
    assert!(uses_heaps(data, &with), "the rule takes {with}:\n{}", plan(data, &with));
    assert!(!uses_heaps(data, &without), "the rule leaves {without} alone:\n{}", plan(data, &without));
    let answer = rows(data, &with);
    assert!(!answer.is_empty(), "{with} found nothing");
    assert_eq!(answer, rows(data, &without), "{with}");
    answer
}

#[test]
fn slowest_calls_per_verb_are_those_of_the_full_sort() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = recording(dir.path());
    let question = "SELECT verb, rank, kind, name, actor_id, duration_ms FROM (SELECT verb, kind, name, actor_id, \
                    duration_ms, row_number() OVER (PARTITION BY verb ORDER BY duration_ms DESC, audit_id) AS rank \
                    FROM operations) WHERE {bound} ORDER BY verb, rank";
    let answer = same_answer_with_and_without_heaps(&data, question, "rank <= 5", 5);
    let verbs = count(&data, "SELECT count(DISTINCT verb) FROM operations");
    assert!(verbs > 1, "several verbs in the recording");
    // Five per verb, unless a verb has fewer operations.
    assert!(answer.len() as u64 <= 5 * verbs && answer.len() as u64 > verbs, "{answer:?}");
    // `<`, and the bound on the left, mean the same.
    same_answer_with_and_without_heaps(&data, question, "rank < 6", 5);
    same_answer_with_and_without_heaps(&data, question, "5 >= rank", 5);
    same_answer_with_and_without_heaps(&data, question, "6 > rank", 5);
}

#[test]
fn rank_per_actor_and_verb_keeps_the_ties() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = recording(dir.path());
    // Durations are whole milliseconds: many ties, which `rank()` must all keep.
    let question = "SELECT actor_id, verb, rank, duration_ms FROM (SELECT actor_id, verb, duration_ms, \
                    rank() OVER (PARTITION BY actor_id, verb ORDER BY duration_ms DESC) AS rank FROM operations) \
                    WHERE {bound} ORDER BY actor_id, verb, rank, duration_ms";
    let answer = same_answer_with_and_without_heaps(&data, question, "rank <= 2", 2);
    let groups = count(&data, "SELECT count(*) FROM (SELECT DISTINCT actor_id, verb FROM operations)");
    assert!(answer.len() as u64 > 2 * groups, "ties past the second place are kept: {} rows", answer.len());
}

#[test]
fn rankings_per_object_or_on_other_columns_keep_the_sort() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = recording(dir.path());
    // Objects are not a bounded vocabulary: one heap per object could outgrow memory, a sort spills.
    let per_object = "SELECT name, rank FROM (SELECT name, row_number() OVER (PARTITION BY name ORDER BY received_at) \
                      AS rank FROM operations) WHERE rank <= 1";
    assert!(!uses_heaps(&data, per_object), "{}", plan(&data, per_object));
    // `dense_rank()`'s first N values can lie past the first N rows.
    let dense = "SELECT verb, rank FROM (SELECT verb, dense_rank() OVER (PARTITION BY verb ORDER BY duration_ms) \
                 AS rank FROM operations) WHERE rank <= 3";
    assert!(!uses_heaps(&data, dense), "{}", plan(&data, dense));
    // A bound on another column of the window's output, behind a projection that reorders the
    // columns, is not a bound on the ranking.
    let other_column = "SELECT rank, verb, duration_ms FROM (SELECT duration_ms, verb, row_number() OVER \
                        (PARTITION BY verb ORDER BY duration_ms) AS rank FROM operations) WHERE duration_ms <= 3 \
                        ORDER BY verb, rank";
    assert!(!uses_heaps(&data, other_column), "{}", plan(&data, other_column));
    let answer = rows(&data, other_column);
    assert!(answer.iter().any(|row| row[0].parse::<u64>().is_ok_and(|rank| rank > 3)), "ranks past 3 kept");
}
