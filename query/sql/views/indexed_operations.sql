-- indexed_operations: every operation with its position in its session.
--
-- The order of a session is (received_at, audit_id, stage): the time the API server received the
-- request, then the audit ID to make ties deterministic. "index" is 0-based (what replay, analyze
-- and the seed's JSON call index), sequence_number is 1-based (what the seed called seq). Neither is
-- stored: with several API servers and writers, only a query over the whole session can number it.
SELECT *, "index" + 1 AS sequence_number
FROM (
    SELECT
        row_number() OVER (PARTITION BY session_id ORDER BY received_at, audit_id, stage) - 1 AS "index",
        *
    FROM operations
)
