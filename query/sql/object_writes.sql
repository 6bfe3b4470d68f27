-- The successful writes of session $1 to the objects listed in $2 (one `kind/namespace/name` key
-- per line, namespace empty for cluster-scoped objects), object by object and each in session
-- order, with what each produced: the input of hot-loop classification and fight detection, which
-- compare consecutive versions of an object. One statement for every candidate object, so the
-- session is read once however many candidates there are.
WITH wanted AS (
    SELECT DISTINCT unnest(string_to_array($2, chr(10))) AS object_key
),
written AS (
    SELECT concat(kind, '/', coalesce(namespace, ''), '/', name) AS object_key,
           "index", received_at, actor_id, verb, subresource, generation, resource_version, response_object
    FROM indexed_operations
    WHERE session_id = $1
      AND verb IN ('create', 'update', 'patch')
      AND error IS NULL
      AND NOT coalesce(dry_run, false)
)
SELECT w.*
FROM written w
JOIN wanted ON w.object_key = wanted.object_key
ORDER BY w.object_key, w."index"
