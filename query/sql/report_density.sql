-- report_density: how many operations (and errors) each actor made in each time bucket of
-- session $1. Buckets are $3 microseconds wide, counted from $2 (the session's first request), so
-- the timeline can draw a dense session as bars instead of a mark per operation.
SELECT
    actor_id,
    CAST((arrow_cast(received_at, 'Int64') - $2) / $3 AS BIGINT) AS bucket,
    count(*) AS operations,
    sum(CASE WHEN status_code >= 400 THEN 1 ELSE 0 END) AS errors
FROM operations
WHERE session_id = $1
GROUP BY actor_id, bucket
ORDER BY actor_id, bucket
