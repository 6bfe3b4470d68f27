-- Every version that the successful writes in session $1 produced of the objects listed in $2 (one
-- `kind/namespace/name` key per line, namespace empty for cluster-scoped objects), in the order
-- they were produced: how stale the version each 409'd write was based on had become.
-- resourceVersions are opaque: their order comes from completed_at. Whether a conflicting actor got
-- a write through afterwards is seen by the session walk (its `new_version` flag is this filter).
WITH wanted AS (
    SELECT DISTINCT unnest(string_to_array($2, chr(10))) AS object_key
),
versions AS (
    SELECT concat(kind, '/', coalesce(namespace, ''), '/', name) AS object_key,
           resource_version, completed_at, audit_id
    FROM operations
    WHERE session_id = $1
      AND resource_version IS NOT NULL
      AND (status_code IS NULL OR status_code < 400)
      AND verb IN ('create', 'update', 'patch', 'delete')
      AND NOT coalesce(dry_run, false)
)
SELECT v.object_key, v.resource_version, v.completed_at
FROM wanted
JOIN versions v ON v.object_key = wanted.object_key
ORDER BY v.object_key, v.completed_at, v.audit_id
