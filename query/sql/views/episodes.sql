-- episodes: inferred reconcile episodes, bursts of one actor's requests with no gap longer than
-- {episode_gap_ms} milliseconds (default 1000), with their reads, writes and errors.
WITH gaps AS (
    SELECT session_id, "index", actor_id, verb, status_code, received_at, completed_at,
           CASE WHEN received_at - lag(completed_at) OVER (PARTITION BY session_id, actor_id ORDER BY "index")
                     <= INTERVAL '{episode_gap_ms} milliseconds'
                THEN 0 ELSE 1 END AS starts
    FROM indexed_operations
),
numbered AS (
    SELECT *,
           sum(starts) OVER (PARTITION BY session_id, actor_id ORDER BY "index"
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS episode
    FROM gaps
)
SELECT
    session_id, actor_id, episode,
    min(received_at) AS start_at,
    max(completed_at) AS end_at,
    min("index") AS first_index,
    max("index") AS last_index,
    sum(CASE WHEN verb IN ('get', 'list', 'watch') THEN 1 ELSE 0 END) AS reads,
    sum(CASE WHEN verb IN ('create', 'update', 'patch', 'delete', 'deletecollection') THEN 1 ELSE 0 END) AS writes,
    sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END) AS errors
FROM numbered
GROUP BY session_id, actor_id, episode
