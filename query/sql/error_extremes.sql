-- The first and the last failed operation of session $1 in session order (`end` says which; the
-- same operation twice when there is a single failure).
-- The session is not numbered here: each end is a top-1 in the files' own order, and its `index`
-- is the first (last) position of a failure that the ordered pass over the session
-- (session_walk.sql, its `failed` flag is this filter) found.
(
    SELECT 'first' AS "end", operation_type, kind, namespace, name, status_code, error, actor_id
    FROM operations
    WHERE session_id = $1 AND error IS NOT NULL
    ORDER BY received_at, audit_id, stage
    LIMIT 1
)
UNION ALL
(
    SELECT 'last' AS "end", operation_type, kind, namespace, name, status_code, error, actor_id
    FROM operations
    WHERE session_id = $1 AND error IS NOT NULL
    ORDER BY received_at DESC, audit_id DESC, stage DESC
    LIMIT 1
)
