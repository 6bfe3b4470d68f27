-- The successful writes of session $1 to the objects listed in $2 (one `kind/namespace/name` key
-- per line, namespace empty for cluster-scoped objects), in session order, with what each
-- produced: the input of hot-loop classification and fight detection, which compare each version
-- of an object with the one before it. One statement for every candidate object, so the session is
-- read once however many candidates there are; the session order is asked for the way the files
-- are sorted, so the rows stream instead of being sorted (and held) first. It reads `operations`,
-- not `indexed_operations`: nothing here needs a write's position, and numbering the session would
-- decode every column of every operation before the filter could drop the reads.
WITH wanted AS (
    SELECT DISTINCT unnest(string_to_array($2, chr(10))) AS object_key
),
-- The keys taken apart, so the join compares the columns as stored: the filter it hands the scan
-- (the keys it holds) then needs no key built per row. Kinds and namespaces hold no '/'; the name
-- is the rest of the key.
wanted_objects AS (
    SELECT split_part(object_key, '/', 1) AS kind,
           split_part(object_key, '/', 2) AS namespace,
           substr(object_key, length(split_part(object_key, '/', 1)) + length(split_part(object_key, '/', 2)) + 3)
               AS name
    FROM wanted
),
written AS (
    SELECT coalesce(kind, '') AS kind, coalesce(namespace, '') AS namespace, name,
           session_id, received_at, audit_id, stage,
           actor_id, verb, subresource, generation, resource_version, response_object
    FROM operations
    WHERE session_id = $1
      AND verb IN ('create', 'update', 'patch')
      AND error IS NULL
      AND NOT coalesce(dry_run, false)
)
-- The short list of keys is the build side of the join: the writes are probed in their order.
SELECT concat(w.kind, '/', w.namespace, '/', w.name) AS object_key,
       received_at, actor_id, verb, subresource, generation, resource_version, response_object
FROM wanted_objects o
JOIN written w ON w.kind = o.kind AND w.namespace = o.namespace AND w.name = o.name
ORDER BY session_id, received_at, audit_id, stage
