-- The operations of session $1 received between $2 and $3, in session order, narrowed to what the
-- `watch` evidence of `analyze causality` needs: who, which object, when, and whether it is a
-- successful write. The session order is the files' sort order, so the rows stream and no sort is
-- needed; the edges are found in one pass over these rows (query/src/causality/watch.rs), with the
-- same meaning as the `watch_edges` of the `causal_edges` view.
--
-- Nothing is numbered here: a row's index is the number of session operations before the window
-- (causal_steps_before.sql, when the window has a start) plus its position in this stream.
SELECT actor_id, kind, coalesce(namespace, '') AS namespace, name, received_at, completed_at,
       verb IN ('create', 'update', 'patch', 'delete') AND (status_code IS NULL OR status_code < 400) AS is_write
FROM operations
WHERE session_id = $1 AND received_at >= $2 AND received_at <= $3
ORDER BY session_id, received_at, audit_id, stage
