-- Conflict storms of session $1: an actor answered 409 Conflict on one object at least $2 times.
-- How stale each attempt was is worked out per storm from object_writes.sql and
-- object_conflicts.sql (resourceVersions are compared for equality only).
SELECT
    actor_id, kind, namespace, name,
    count(*) AS conflicts,
    min("index") AS first_index,
    max("index") AS last_index,
    min(received_at) AS first_at,
    max(received_at) AS last_at
FROM indexed_operations
WHERE session_id = $1 AND status_code = 409 AND name IS NOT NULL
GROUP BY actor_id, kind, namespace, name
HAVING count(*) >= $2
ORDER BY conflicts DESC, actor_id, kind, namespace, name
