-- The 409 Conflicts in session $1 on the objects listed in $2 (one `kind/namespace/name` key per
-- line, namespace empty for cluster-scoped objects), with who got them and the version each attempt
-- was based on; object by object, in session order. Each attempt carries its place in that order
-- (received_at, audit_id, stage) rather than its index: numbering the whole session for a few
-- hundred 409s costs more than the rest of the statement.
WITH wanted AS (
    SELECT DISTINCT unnest(string_to_array($2, chr(10))) AS object_key
),
conflicts AS (
    SELECT concat(kind, '/', coalesce(namespace, ''), '/', name) AS object_key,
           actor_id, received_at, audit_id, stage, base_resource_version
    FROM operations
    WHERE session_id = $1 AND status_code = 409
)
SELECT c.*
FROM wanted
JOIN conflicts c ON c.object_key = wanted.object_key
ORDER BY c.object_key, c.received_at, c.audit_id, c.stage
