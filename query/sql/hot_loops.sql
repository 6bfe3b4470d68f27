-- Hot loops of session $1: an actor whose successful writes to one object reach {hot_writes} within
-- any {hot_window_seconds}-second window. One row per (actor, object) with its first and last write
-- of the whole session and its peak count in a window. ({...} are filled in by the caller, as they
-- size the window frame; $n are bound parameters.)
WITH counted AS (
    SELECT
        actor_id, kind, namespace, name, received_at,
        count(*) OVER (
            PARTITION BY actor_id, kind, namespace, name
            ORDER BY received_at
            RANGE BETWEEN INTERVAL '{hot_window_seconds} seconds' PRECEDING AND CURRENT ROW
        ) AS in_window
    FROM writes
    WHERE session_id = $1 AND error IS NULL AND name IS NOT NULL
)
SELECT
    actor_id, kind, namespace, name,
    count(*) AS writes,
    max(in_window) AS peak_in_window,
    min(received_at) AS first_at,
    max(received_at) AS last_at
FROM counted
GROUP BY actor_id, kind, namespace, name
HAVING max(in_window) >= {hot_writes}
ORDER BY writes DESC, actor_id, kind, namespace, name
