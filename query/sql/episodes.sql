-- Inferred reconcile episodes of session $1: bursts of one actor's requests with no gap longer than
-- {episode_gap_ms} milliseconds, with their reads, writes and errors.
WITH gaps AS (
    SELECT "index", actor_id, verb, status_code, received_at, completed_at,
           CASE WHEN received_at - lag(completed_at) OVER (PARTITION BY actor_id ORDER BY "index")
                     <= INTERVAL '{episode_gap_ms} milliseconds'
                THEN 0 ELSE 1 END AS starts
    FROM indexed_operations
    WHERE session_id = $1
),
numbered AS (
    SELECT *, sum(starts) OVER (PARTITION BY actor_id ORDER BY "index" ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS episode
    FROM gaps
)
SELECT
    actor_id, episode,
    min(received_at) AS start_at,
    max(completed_at) AS end_at,
    min("index") AS first_index,
    max("index") AS last_index,
    sum(CASE WHEN verb IN ('get', 'list', 'watch') THEN 1 ELSE 0 END) AS reads,
    sum(CASE WHEN verb IN ('create', 'update', 'patch', 'delete', 'deletecollection') THEN 1 ELSE 0 END) AS writes,
    sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END) AS errors
FROM numbered
GROUP BY actor_id, episode
ORDER BY start_at, actor_id
