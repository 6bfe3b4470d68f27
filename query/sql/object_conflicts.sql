-- The 409 Conflicts of actor $5 on one object ($2 kind, $3 namespace ('' = cluster-scoped), $4 name)
-- in session $1, with the version each attempt was based on.
SELECT "index", received_at, base_resource_version
FROM indexed_operations
WHERE session_id = $1 AND kind = $2 AND coalesce(namespace, '') = $3 AND name = $4 AND actor_id = $5 AND status_code = 409
ORDER BY "index"
