-- The first and the last failed operation of session $1 (one row when there is a single failure).
WITH failed AS (
    SELECT "index", sequence_number, operation_type, kind, namespace, name, status_code, error, actor_id
    FROM indexed_operations
    WHERE session_id = $1 AND error IS NOT NULL
)
SELECT *
FROM failed
WHERE "index" = (SELECT min("index") FROM failed) OR "index" = (SELECT max("index") FROM failed)
ORDER BY "index"
