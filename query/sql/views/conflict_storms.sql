-- conflict_storms: an actor answered 409 Conflict on one object at least {conflict_min} times
-- (default 3). How stale each attempt was is worked out per storm by `kubestep analyze` from the
-- storm objects' versions (object_history.sql; resourceVersions are compared for equality only).
SELECT
    session_id, actor_id, kind, namespace, name,
    count(*) AS conflicts,
    min("index") AS first_index,
    max("index") AS last_index,
    min(received_at) AS first_at,
    max(received_at) AS last_at
FROM indexed_operations
WHERE status_code = 409 AND name IS NOT NULL
GROUP BY session_id, actor_id, kind, namespace, name
HAVING count(*) >= {conflict_min}
