-- One pass over every operation of session $1 in session order, for the parts of `kubestep
-- analyze` that need each operation's position: loop detection, slow operations, the errors
-- section (its counts too: the failures go by anyway), and where each actor's conflicts on one
-- object first and last happened.
--
-- Nothing is numbered here: the rows come in the order "index" numbers, so an operation's index
-- is its position in this stream, which the pass counts (see query/src/session_walk.rs). What a
-- row counts for is said here, as flags:
SELECT
    -- the sequence loop detection scans; watches are long-running, and their place in the order
    -- (their start) says nothing about the work around them
    coalesce(verb <> 'watch', false) AS in_sequence,
    -- took at least $2 milliseconds; long-running watches only when $3 is true
    coalesce(duration_ms >= $2 AND ($3 OR verb <> 'watch'), false) AS slow,
    -- failed: what the errors section counts (by type, status and actor) and places
    error IS NOT NULL AS failed,
    -- a 409 Conflict on a named object (what the conflict_storms view counts)
    coalesce(status_code = 409 AND name IS NOT NULL, false) AS conflict,
    operation_type, kind, namespace, name, duration_ms, actor_id, received_at, status_code,
    -- the API server's message, for the first and the last failure
    error
FROM operations
WHERE session_id = $1
-- The session order, said the way the files are sorted: the engine then streams the operations in
-- order instead of sorting the session.
ORDER BY session_id, received_at, audit_id, stage
