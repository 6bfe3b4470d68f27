-- fight_candidates: objects that two or more actors wrote in turn, per session. Each successful
-- update or patch whose actor differs from the previous writer of the same object is a turn;
-- objects with at least {fight_turns} turns (default 4), each within {hot_window_seconds} seconds
-- (default 60) of the write before it, are candidates. `analyze` then confirms a fight by the field
-- values that flip back and forth between the writers (two controllers writing disjoint fields or
-- different subresources take turns too, but are no fight).
WITH ordered AS (
    SELECT
        session_id, kind, namespace, name, actor_id, received_at,
        lag(actor_id) OVER (PARTITION BY session_id, kind, namespace, name ORDER BY received_at, audit_id)
            AS previous_actor,
        lag(received_at) OVER (PARTITION BY session_id, kind, namespace, name ORDER BY received_at, audit_id)
            AS previous_at
    FROM writes
    WHERE error IS NULL AND name IS NOT NULL AND verb IN ('update', 'patch')
)
SELECT session_id, kind, namespace, name, count(*) AS turns, count(DISTINCT actor_id) AS actors,
       min(received_at) AS first_at, max(received_at) AS last_at
FROM ordered
WHERE previous_actor IS NOT NULL
  AND previous_actor <> actor_id
  AND received_at - previous_at <= INTERVAL '{hot_window_seconds} seconds'
GROUP BY session_id, kind, namespace, name
HAVING count(*) >= {fight_turns}
