-- One pass over every operation of session $1 in session order, for the parts of `kubestep
-- analyze` that need each operation's position: loop detection, slow operations, the errors
-- section (its counts too: the failures go by anyway), and the repeated failures (conflict storms
-- and requeue loops, counted by actor and object as they go by).
--
-- Nothing is numbered here: the rows come in the order "index" numbers, so an operation's index
-- is its position in this stream, which the pass counts. What a row counts for (in the loop
-- sequence, slow, failed, a 409, a new version) is decided by the pass from these columns (see
-- `Row` in query/src/session_walk.rs): computing those flags here cost more than the pass does,
-- since the engine evaluates the right side of an `AND` on a filtered copy of the batch.
SELECT
    operation_type, verb, kind, namespace, name, actor_id, received_at, duration_ms, status_code,
    -- the API server's message, for the first and the last failure and each requeue loop's least one
    error,
    -- whether a successful write produced a version (what `object_history.sql` reads), and whether
    -- it was a dry run: after an actor's 409s on an object, a new version of its own ends the storm
    resource_version IS NOT NULL AS has_version,
    dry_run,
    -- the resourceVersion a write was based on (kept for the writes that got a 409)
    base_resource_version
FROM operations
WHERE session_id = $1
-- The session order, said the way the files are sorted: the engine then streams the operations in
-- order instead of sorting the session.
ORDER BY session_id, received_at, audit_id, stage
