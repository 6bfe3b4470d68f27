-- The sequence loop detection scans: what each step of session $1 did to which object, in
-- session order. Errors, actors and versions are left out on purpose: a loop is the same work
-- done again. Watches are left out too: they are long-running, and their place in the order (their
-- start) says nothing about the work around them.
SELECT "index", operation_type, kind, namespace, name
FROM indexed_operations
WHERE session_id = $1 AND verb <> 'watch'
ORDER BY "index"
