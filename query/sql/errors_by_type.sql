-- Failed operations of session $1 per operation type (GET, UPDATE, ...), as the seed grouped them.
SELECT operation_type, count(*) AS count
FROM operations
WHERE session_id = $1 AND error IS NOT NULL
GROUP BY operation_type
ORDER BY operation_type
