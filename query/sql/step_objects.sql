-- The objects of step $2 of session $1: what was sent, what came back, and the object as the
-- previous successful write of the same uid left it (for diffs).
WITH versions AS (
    SELECT
        "index",
        lag(response_object) OVER (PARTITION BY uid ORDER BY "index") AS previous_object
    FROM indexed_operations
    WHERE session_id = $1
      AND uid IS NOT NULL
      AND response_object IS NOT NULL
      AND (status_code IS NULL OR status_code < 400)
      AND verb IN ('create', 'update', 'patch', 'delete')
)
SELECT o."index", o.request_object, o.response_object, v.previous_object
FROM indexed_operations o
LEFT JOIN versions v ON o."index" = v."index"
WHERE o.session_id = $1 AND o."index" = $2
