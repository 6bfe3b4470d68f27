-- The successful writes of session $1 (what the `hot_loops` and `fight_candidates` views count), in
-- session order and without their bodies: the input of the pass that finds both views' rows at once
-- (query/src/candidates.rs). A hot loop counts every successful write of a named object; a fight
-- counts only updates and patches (`is_update`): creating or deleting an object is not a turn.
SELECT actor_id, kind, namespace, name, received_at, verb IN ('update', 'patch') AS is_update
FROM writes
WHERE session_id = $1
  AND error IS NULL
  AND name IS NOT NULL
-- The session order, said the way the files are sorted: the rows stream instead of being sorted.
ORDER BY session_id, received_at, audit_id, stage
