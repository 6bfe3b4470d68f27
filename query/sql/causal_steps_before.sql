-- How many operations of session $1 were received before $2: the index of the first operation of
-- a causality window that starts at $2 (the session order begins with received_at).
SELECT count(*) AS before FROM operations WHERE session_id = $1 AND received_at < $2
