-- report_lanes: one swim lane per actor of session $1, busiest first, with the session's span.
SELECT
    actor_id,
    count(*) AS operations,
    sum(CASE WHEN verb IN ('create', 'update', 'patch', 'delete', 'deletecollection') THEN 1 ELSE 0 END) AS writes,
    sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END) AS errors,
    min(received_at) AS first_at,
    max(completed_at) AS last_at
FROM operations
WHERE session_id = $1
GROUP BY actor_id
ORDER BY operations DESC, actor_id
