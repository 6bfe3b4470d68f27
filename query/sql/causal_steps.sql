-- The operations of session $1 received between $2 and $3, in session order, narrowed to what
-- `analyze causality` needs to find every edge of the `causal_edges` view in one pass over them
-- (query/src/causality/watch.rs for the `watch` edges, version_edges.rs for `rv` and `owner`):
-- who, which object, when, whether it is a successful write, and for writes the object's uid,
-- the version produced, the version it was based on, and the object's owners. The session order
-- is the files' sort order, so the rows stream and no sort is needed.
--
-- Nothing is numbered here: a row's index is the number of session operations before the window
-- (causal_steps_before.sql, when the window has a start) plus its position in this stream.
SELECT actor_id, kind, coalesce(namespace, '') AS namespace, name, received_at, completed_at,
       verb IN ('create', 'update', 'patch', 'delete') AND (status_code IS NULL OR status_code < 400) AS is_write,
       uid, resource_version, base_resource_version, owner_uids
FROM operations
WHERE session_id = $1 AND received_at >= $2 AND received_at <= $3
ORDER BY session_id, received_at, audit_id, stage
