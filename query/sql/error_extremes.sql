-- The first and the last failed operation of session $1 (one row when there is a single failure).
-- Both ends come from one pass over the failures.
WITH failed AS (
    SELECT "index", sequence_number, operation_type, kind, namespace, name, status_code, error, actor_id
    FROM indexed_operations
    WHERE session_id = $1 AND error IS NOT NULL
),
ranked AS (
    SELECT *,
           row_number() OVER (ORDER BY "index") AS from_first,
           row_number() OVER (ORDER BY "index" DESC) AS from_last
    FROM failed
)
SELECT "index", sequence_number, operation_type, kind, namespace, name, status_code, error, actor_id
FROM ranked
WHERE from_first = 1 OR from_last = 1
ORDER BY "index"
