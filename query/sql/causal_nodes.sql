-- The operations of session $1 whose indexes are listed in $2 (comma-separated): the nodes of a
-- causality graph. The list is joined, not searched, so one statement serves any number of nodes.
WITH wanted AS (
    SELECT DISTINCT CAST(unnest(string_to_array($2, ',')) AS BIGINT) AS wanted_index
)
SELECT "index", actor_id, operation_type, kind, namespace, name, subresource, uid, base_resource_version,
       resource_version, received_at, duration_ms, error
FROM wanted
JOIN indexed_operations ON "index" = wanted_index
WHERE session_id = $1
ORDER BY "index"
