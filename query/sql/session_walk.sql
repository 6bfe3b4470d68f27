-- One pass over every operation of session $1 in session order, for the parts of `kubestep
-- analyze` that need each operation's position: loop detection, slow operations, the errors
-- section (its counts too: the failures go by anyway), and where each actor's conflicts on one
-- object first and last happened, and the other repeated failures (conflict storms and requeue
-- loops, counted by actor and object as they go by).
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
    -- a successful write that produced a new version of its object (what `object_history.sql`
    -- reads): after an actor's 409s on an object, one of its own ends the storm ("recovered")
    coalesce(
        resource_version IS NOT NULL
        AND (status_code IS NULL OR status_code < 400)
        AND verb IN ('create', 'update', 'patch', 'delete')
        AND NOT coalesce(dry_run, false),
        false
    ) AS new_version,
    -- the resourceVersion a write that got a 409 was based on
    CASE WHEN status_code = 409 THEN base_resource_version END AS sent,
    operation_type, kind, namespace, name, duration_ms, actor_id, received_at, status_code,
    -- the API server's message, for the first and the last failure and each requeue loop's least one
    error
FROM operations
WHERE session_id = $1
-- The session order, said the way the files are sorted: the engine then streams the operations in
-- order instead of sorting the session.
ORDER BY session_id, received_at, audit_id, stage
