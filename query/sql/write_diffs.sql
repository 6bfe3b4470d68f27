-- For each successful write of session $1 from index $2 on: its response object and the response
-- object of the previous successful write of the same uid.
SELECT "index", response_object, previous_object
FROM (
    SELECT
        "index",
        response_object,
        lag(response_object) OVER (PARTITION BY uid ORDER BY "index") AS previous_object
    FROM indexed_operations
    WHERE session_id = $1
      AND uid IS NOT NULL
      AND response_object IS NOT NULL
      AND (status_code IS NULL OR status_code < 400)
      AND verb IN ('create', 'update', 'patch', 'delete')
)
WHERE "index" >= $2
ORDER BY "index"
