-- One row per session: its span, how much happened, and how much went wrong.
SELECT
    session_id,
    min(received_at) AS first_at,
    max(completed_at) AS last_at,
    count(*) AS operations,
    sum(CASE WHEN verb IN ('create', 'update', 'patch', 'delete', 'deletecollection') THEN 1 ELSE 0 END) AS writes,
    count(DISTINCT actor_id) AS actors,
    sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END) AS errors
FROM operations
GROUP BY session_id
ORDER BY first_at, session_id
