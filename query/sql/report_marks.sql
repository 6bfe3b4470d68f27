-- report_marks: the operations of session $1 the timeline draws one by one. With $2 true that is
-- every operation; otherwise the failures, and every $3-th write (by index) so that the writes
-- drawn spread over the whole session (reads that succeed are only counted, in report_density).
-- The caller appends the LIMIT.
SELECT
    "index",
    received_at,
    actor_id,
    verb,
    kind,
    namespace,
    name,
    subresource,
    status_code,
    duration_ms,
    base_resource_version,
    resource_version,
    error
FROM indexed_operations
WHERE session_id = $1
  AND (
    $2
    OR status_code >= 400
    OR (verb IN ('create', 'update', 'patch', 'delete', 'deletecollection') AND "index" % $3 = 0)
  )
ORDER BY session_id, received_at, audit_id, stage
