-- The successful writes of session $1 to one object ($2 kind, $3 namespace ('' = cluster-scoped),
-- $4 name), in order, with what each produced: the input of hot-loop classification and fight
-- detection, which compare consecutive versions of the object.
SELECT "index", received_at, actor_id, verb, subresource, generation, resource_version, response_object
FROM indexed_operations
WHERE session_id = $1
  AND kind = $2 AND coalesce(namespace, '') = $3 AND name = $4
  AND verb IN ('create', 'update', 'patch')
  AND error IS NULL
  AND NOT coalesce(dry_run, false)
ORDER BY "index"
