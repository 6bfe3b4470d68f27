-- report_marks: the operations of session $1 the timeline draws one by one. With $2 true that is
-- every operation. Otherwise reads that succeed are only counted (report_density), and failures
-- and writes are each numbered in their own class, in session order, and every $4-th failure and
-- every $3-th write is kept, so the marks spread evenly over the whole session whatever the mix.
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
FROM (
    SELECT
        *,
        row_number() OVER (PARTITION BY session_id, class ORDER BY received_at, audit_id, stage) - 1 AS nth
    FROM (
        SELECT
            *,
            CASE
                WHEN status_code >= 400 THEN 2
                WHEN verb IN ('create', 'update', 'patch', 'delete', 'deletecollection') THEN 1
                ELSE 0
            END AS class
        FROM indexed_operations
        WHERE session_id = $1
    )
)
WHERE $2 OR (class = 2 AND nth % $4 = 0) OR (class = 1 AND nth % $3 = 0)
ORDER BY session_id, received_at, audit_id, stage
