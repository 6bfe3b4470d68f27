//! Views written for speed must say what their plain formulation says, over a simulated cluster
//! (hot loops, fights, cluster-scoped objects with no namespace) and the real samples:
//! `fight_candidates` finds each write's previous writer of the same object with one ordering of
//! all writes instead of a window partitioned per object; `hot_loops` counts writes per window only
//! for the (actor, object) pairs with enough writes in all.

mod common;

use common::*;

/// `fight_candidates.sql` as first written: `lag` partitioned by object.
const FIGHTS_PARTITIONED_BY_OBJECT: &str = "
WITH ordered AS (
    SELECT
        session_id, kind, namespace, name, actor_id, received_at,
        lag(actor_id) OVER (PARTITION BY session_id, kind, namespace, name ORDER BY received_at, audit_id)
            AS previous_actor,
        lag(received_at) OVER (PARTITION BY session_id, kind, namespace, name ORDER BY received_at, audit_id)
            AS previous_at
    FROM writes
    WHERE error IS NULL AND name IS NOT NULL AND verb IN ('update', 'patch')
)
SELECT session_id, kind, namespace, name, count(*) AS turns, count(DISTINCT actor_id) AS actors,
       min(received_at) AS first_at, max(received_at) AS last_at
FROM ordered
WHERE previous_actor IS NOT NULL
  AND previous_actor <> actor_id
  AND received_at - previous_at <= INTERVAL '{hot_window_seconds} seconds'
GROUP BY session_id, kind, namespace, name
HAVING count(*) >= {fight_turns}";

/// `hot_loops.sql` as first written: the window over every successful write.
const HOT_LOOPS_OVER_EVERY_WRITE: &str = "
WITH counted AS (
    SELECT
        session_id, actor_id, kind, namespace, name, received_at,
        count(*) OVER (
            PARTITION BY session_id, actor_id, kind, namespace, name
            ORDER BY received_at
            RANGE BETWEEN INTERVAL '{hot_window_seconds} seconds' PRECEDING AND CURRENT ROW
        ) AS in_window
    FROM writes
    WHERE error IS NULL AND name IS NOT NULL
)
SELECT
    session_id, actor_id, kind, namespace, name,
    count(*) AS writes,
    max(in_window) AS peak_in_window,
    min(received_at) AS first_at,
    max(received_at) AS last_at
FROM counted
GROUP BY session_id, actor_id, kind, namespace, name
HAVING max(in_window) >= {hot_writes}";

/// `sql` with its `{placeholders}` filled in.
fn filled(sql: &str, values: &[(&str, u32)]) -> String {
    values.iter().fold(sql.to_owned(), |sql, (name, value)| sql.replace(&format!("{{{name}}}"), &value.to_string()))
}

/// The view's SQL as `kubestep` reads it, placeholders filled in.
fn view(name: &str, values: &[(&str, u32)]) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("query/sql/views/{name}.sql"));
    let sql = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    filled(&sql, values)
}

/// A simulated cluster in one session and the samples in theirs.
fn recording(dir: &std::path::Path) -> std::path::PathBuf {
    let data = dir.join("data");
    let (log, _) = simulate(dir, "mixed", "5", &["--events", "8000"]);
    let output = import(&data, &[&log], &["-q", "--session", "simulated"]);
    assert!(output.status.success(), "{:?}", text(&output));
    let files = sample_files();
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    // One sample line is not an audit event: the import stores the rest and says so in its exit code.
    import(&data, &paths, &["-q"]);
    data
}

#[test]
fn hot_loops_are_those_of_a_window_over_every_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = recording(dir.path());
    let order = " ORDER BY session_id, actor_id, kind, namespace, name";
    // The view's defaults, and thresholds low enough that many pairs sit right at them.
    for values in [[("hot_writes", 10), ("hot_window_seconds", 60)], [("hot_writes", 3), ("hot_window_seconds", 5)]] {
        let rewritten = rows(&data, &format!("SELECT * FROM ({}){order}", view("hot_loops", &values)));
        let reference = rows(&data, &format!("SELECT * FROM ({}){order}", filled(HOT_LOOPS_OVER_EVERY_WRITE, &values)));
        assert!(!rewritten.is_empty(), "the simulated cluster has hot loops at {values:?}");
        assert_eq!(rewritten, reference, "{values:?}");
    }
    let defaults = rows(&data, &format!("SELECT * FROM hot_loops{order}"));
    assert_eq!(
        defaults,
        rows(
            &data,
            &format!("SELECT * FROM ({}){order}", view("hot_loops", &[("hot_writes", 10), ("hot_window_seconds", 60)]))
        )
    );
}

#[test]
fn fight_candidates_are_those_of_a_lag_per_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = recording(dir.path());
    let order = " ORDER BY session_id, kind, namespace, name";
    for values in [[("fight_turns", 4), ("hot_window_seconds", 60)], [("fight_turns", 1), ("hot_window_seconds", 3600)]]
    {
        let rewritten = rows(&data, &format!("SELECT * FROM ({}){order}", view("fight_candidates", &values)));
        let reference =
            rows(&data, &format!("SELECT * FROM ({}){order}", filled(FIGHTS_PARTITIONED_BY_OBJECT, &values)));
        assert!(!rewritten.is_empty(), "the simulated cluster has fights at {values:?}");
        assert_eq!(rewritten, reference, "{values:?}");
    }
    let cluster_scoped = count(&data, "SELECT count(*) FROM writes WHERE namespace IS NULL AND name IS NOT NULL");
    assert!(cluster_scoped > 0, "writes to objects without a namespace are in the data");
}
