-- The operations of session $1 received within the window $2..$3 at the times listed in $4
-- (comma-separated timestamps), in session order: the writes of a causality graph are among them.
-- The pass over causal_steps.sql noted each write's time and how many operations of the window
-- were received in the same microsecond before it; the command finds each write here by those
-- two, so nothing numbers the session. Every operation at a listed time comes back (not only the
-- writes), so the counts agree. The list is joined, not searched, so one statement serves any
-- number of writes.
WITH wanted AS (
    SELECT DISTINCT CAST(unnest(string_to_array($4, ',')) AS TIMESTAMP) AS wanted_at
)
SELECT o.received_at, actor_id, operation_type, kind, namespace, name, subresource, uid,
       base_resource_version, resource_version, duration_ms, error
FROM wanted
JOIN operations o ON o.received_at = wanted_at
WHERE session_id = $1 AND o.received_at >= $2 AND o.received_at <= $3
-- The session order, as the pass saw it.
ORDER BY session_id, o.received_at, audit_id, stage
