//! Views written for speed must say what their plain formulation says. `fight_candidates` finds
//! each write's previous writer of the same object with one ordering of all writes instead of a
//! window partitioned per object; over a simulated cluster (fights, cluster-scoped objects with no
//! namespace) and the real samples it must list exactly the objects the partitioned `lag` does.

mod common;

use common::*;

/// `fight_candidates.sql` as first written: `lag` partitioned by object, defaults filled in.
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
  AND received_at - previous_at <= INTERVAL '60 seconds'
GROUP BY session_id, kind, namespace, name
HAVING count(*) >= 4";

#[test]
fn fight_candidates_are_those_of_a_lag_per_object() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (log, _) = simulate(dir.path(), "mixed", "5", &["--events", "8000"]);
    let output = import(&data, &[&log], &["-q", "--session", "simulated"]);
    assert!(output.status.success(), "{:?}", text(&output));
    let files = sample_files();
    let paths: Vec<&std::path::Path> = files.iter().map(|p| p.as_path()).collect();
    // One sample line is not an audit event: the import stores the rest and says so in its exit code.
    import(&data, &paths, &["-q"]);

    let order = " ORDER BY session_id, kind, namespace, name";
    let view = rows(&data, &format!("SELECT * FROM fight_candidates{order}"));
    let reference = rows(&data, &format!("SELECT * FROM ({FIGHTS_PARTITIONED_BY_OBJECT}){order}"));
    assert!(!view.is_empty(), "the simulated cluster has fights");
    assert_eq!(view, reference);
    let cluster_scoped = count(&data, "SELECT count(*) FROM writes WHERE namespace IS NULL AND name IS NOT NULL");
    assert!(cluster_scoped > 0, "writes to objects without a namespace are in the data");
}
