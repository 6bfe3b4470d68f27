-- The sequence loop detection scans: what each step of session $1 did to which object, in
-- session order. Errors, actors and versions are left out on purpose: a loop is the same work
-- done again. Watches are left out too (`in_sequence` is false for them): they are long-running,
-- and their place in the order (their start) says nothing about the work around them.
--
-- Every operation of the session comes through, watches included, in the order "index" numbers:
-- a step's index is its position in this stream, so the detector counts rows instead of the
-- engine numbering the session first (a window over every operation).
SELECT coalesce(verb <> 'watch', false) AS in_sequence, operation_type, kind, namespace, name
FROM operations
WHERE session_id = $1
-- The session order, said the way the files are sorted: the engine then streams the steps in
-- order (and stops early under a LIMIT) instead of sorting the session.
ORDER BY session_id, received_at, audit_id, stage
