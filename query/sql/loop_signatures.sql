-- The sequence loop detection scans: what each step of session $1 did to which object, in
-- session order. Errors, actors and versions are left out on purpose: a loop is the same work
-- done again. Watches are left out too: they are long-running, and their place in the order (their
-- start) says nothing about the work around them.
SELECT "index", operation_type, kind, namespace, name
FROM indexed_operations
WHERE session_id = $1 AND verb <> 'watch'
-- The session order, which is the order of "index", said the way the files are sorted: the engine
-- then streams the steps in order (and stops early under a LIMIT) instead of sorting the session.
ORDER BY session_id, received_at, audit_id, stage
