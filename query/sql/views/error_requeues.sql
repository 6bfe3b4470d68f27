-- error_requeues: the same failure (status code, 409 aside) for the same actor and object at least
-- {requeue_min} times (default 3). The gaps between attempts tell a backoff from a hot retry.
SELECT
    session_id, actor_id, kind, namespace, name, status_code,
    count(*) AS attempts,
    min(received_at) AS first_at,
    max(received_at) AS last_at,
    min(error) AS error
FROM operations
WHERE error IS NOT NULL AND status_code <> 409
GROUP BY session_id, actor_id, kind, namespace, name, status_code
HAVING count(*) >= {requeue_min}
