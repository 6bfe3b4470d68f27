-- Every version that the successful writes in session $1 produced of the objects listed in $2 (one
-- `kind/namespace/name` key per line, namespace empty for cluster-scoped objects), in the order
-- they were produced, with who wrote each: how stale a conflicting writer was, and whether it got
-- a write through afterwards. resourceVersions are opaque: their order comes from completed_at.
-- Each version carries its write's place in the session order (received_at, audit_id, stage), which
-- is what "afterwards" compares, instead of an index the whole session would have to be numbered for.
WITH wanted AS (
    SELECT DISTINCT unnest(string_to_array($2, chr(10))) AS object_key
),
versions AS (
    SELECT concat(kind, '/', coalesce(namespace, ''), '/', name) AS object_key,
           actor_id, resource_version, completed_at, received_at, audit_id, stage
    FROM operations
    WHERE session_id = $1
      AND resource_version IS NOT NULL
      AND (status_code IS NULL OR status_code < 400)
      AND verb IN ('create', 'update', 'patch', 'delete')
      AND NOT coalesce(dry_run, false)
)
SELECT v.object_key, v.actor_id, v.resource_version, v.completed_at, v.received_at, v.audit_id, v.stage
FROM wanted
JOIN versions v ON v.object_key = wanted.object_key
ORDER BY v.object_key, v.completed_at, v.audit_id
