-- Failed operations of session $1 grouped by HTTP status, with the Kubernetes reason that status
-- stands for (the API server answers 409 with reason Conflict or AlreadyExists; both count as 409).
-- Where each status first and last happened comes from the ordered pass over the session
-- (session_walk.sql, its `failed` flag is this filter), not from numbering the session here.
SELECT
    status_code,
    CASE
        WHEN status_code = 409 THEN 'Conflict'
        WHEN status_code = 404 THEN 'NotFound'
        WHEN status_code = 403 THEN 'Forbidden'
        WHEN status_code = 422 THEN 'Invalid'
        WHEN status_code = 401 THEN 'Unauthorized'
        WHEN status_code = 429 THEN 'TooManyRequests'
        WHEN status_code = 500 THEN 'InternalError'
        WHEN status_code = 503 THEN 'ServiceUnavailable'
        WHEN status_code = 504 THEN 'Timeout'
        ELSE 'Status' || CAST(status_code AS VARCHAR)
    END AS reason,
    count(*) AS count
FROM operations
WHERE session_id = $1 AND error IS NOT NULL
GROUP BY status_code
ORDER BY count DESC, status_code
