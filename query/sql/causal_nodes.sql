-- The writes of session $1 whose indexes are listed in $2 (a comma-separated list): the nodes of a
-- causality graph.
SELECT "index", actor_id, operation_type, kind, namespace, name, subresource, uid, base_resource_version,
       resource_version, received_at, duration_ms, error
FROM indexed_operations
WHERE session_id = $1 AND array_has(string_to_array($2, ','), CAST("index" AS VARCHAR))
ORDER BY "index"
