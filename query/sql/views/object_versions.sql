-- object_versions: every version of every object a successful write produced, with the version it
-- replaced. resourceVersions are opaque strings: their order comes from completed_at, never from
-- comparing them.
SELECT
    session_id,
    uid,
    kind,
    namespace,
    name,
    resource_version,
    lag(resource_version) OVER (PARTITION BY session_id, uid ORDER BY completed_at, audit_id) AS previous_resource_version,
    base_resource_version,
    generation,
    verb,
    subresource,
    actor_id,
    received_at,
    completed_at,
    response_object
FROM operations
WHERE uid IS NOT NULL
  AND resource_version IS NOT NULL
  AND (status_code IS NULL OR status_code < 400)
  AND verb IN ('create', 'update', 'patch', 'delete')
  AND NOT coalesce(dry_run, false)
