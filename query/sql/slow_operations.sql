-- Operations of session $1 that took at least $2 milliseconds; long-running watches only when
-- $3 is true. In session order.
SELECT "index", operation_type, kind, namespace, name, duration_ms, actor_id, received_at, status_code
FROM indexed_operations
WHERE session_id = $1
  AND duration_ms >= $2
  AND ($3 OR verb <> 'watch')
-- The session order, which is the order of "index", said the way the files are sorted: the engine
-- then streams the steps in order (and stops early under a LIMIT) instead of sorting the session.
ORDER BY session_id, received_at, audit_id, stage
