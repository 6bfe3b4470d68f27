-- Objects of session $1 that two or more actors wrote in turn: each successful write whose actor
-- differs from the previous writer of the same object counts as a turn. Objects with at least
-- {min_turns} turns within {window_seconds} seconds of each other are candidates for a fight.
WITH ordered AS (
    SELECT
        kind, namespace, name, actor_id, received_at,
        lag(actor_id) OVER (PARTITION BY kind, namespace, name ORDER BY received_at, audit_id) AS previous_actor,
        lag(received_at) OVER (PARTITION BY kind, namespace, name ORDER BY received_at, audit_id) AS previous_at
    FROM writes
    WHERE session_id = $1 AND error IS NULL AND name IS NOT NULL AND verb IN ('update', 'patch')
)
SELECT kind, namespace, name, count(*) AS turns, count(DISTINCT actor_id) AS actors, min(received_at) AS first_at, max(received_at) AS last_at
FROM ordered
WHERE previous_actor IS NOT NULL
  AND previous_actor <> actor_id
  AND received_at - previous_at <= INTERVAL '{window_seconds} seconds'
GROUP BY kind, namespace, name
HAVING count(*) >= {min_turns}
ORDER BY turns DESC, kind, namespace, name
