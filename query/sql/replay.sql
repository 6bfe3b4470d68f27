-- The steps of session $1 from index $2 on, in session order. Optional filters (NULL = any):
-- $3 actor, $4 kind, $5 namespace ('' = cluster-scoped), $6 name; $7 true = writes only.
-- Indexes stay those of the whole session, so a filtered replay still says where each step was.
SELECT
    "index",
    sequence_number,
    received_at,
    actor_id,
    user_agent,
    verb,
    operation_type,
    kind,
    namespace,
    name,
    subresource,
    uid,
    base_resource_version,
    resource_version,
    status_code,
    duration_ms,
    error,
    audit_id
FROM indexed_operations
WHERE session_id = $1
  AND "index" >= $2
  AND ($3 IS NULL OR actor_id = $3)
  AND ($4 IS NULL OR kind = $4)
  AND ($5 IS NULL OR coalesce(namespace, '') = $5)
  AND ($6 IS NULL OR name = $6)
  AND (NOT $7 OR verb IN ('create', 'update', 'patch', 'delete', 'deletecollection'))
-- The session order, which is the order of "index", said the way the files are sorted: the engine
-- then streams the steps in order (and stops early under a LIMIT) instead of sorting the session.
ORDER BY session_id, received_at, audit_id, stage
