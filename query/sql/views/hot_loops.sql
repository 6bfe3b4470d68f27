-- hot_loops: an actor whose successful writes to one object reach {hot_writes} within any
-- {hot_window_seconds}-second window. One row per (session, actor, object): its writes in the
-- session, its peak count within a window, its first and last write. The view uses the defaults
-- (10 writes, 60 s); `kubestep analyze --hot-writes/--hot-window` fill in others.
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
HAVING max(in_window) >= {hot_writes}
