-- Error requeue loops of session $1: the same failure (status code) for the same actor and object
-- at least $2 times. The gaps between attempts tell a backoff (growing) from a hot retry.
SELECT
    actor_id, kind, namespace, name, status_code,
    count(*) AS attempts,
    min(received_at) AS first_at,
    max(received_at) AS last_at,
    min(error) AS error
FROM operations
WHERE session_id = $1 AND error IS NOT NULL AND status_code <> 409
GROUP BY actor_id, kind, namespace, name, status_code
HAVING count(*) >= $2
ORDER BY attempts DESC, actor_id, kind, namespace, name
