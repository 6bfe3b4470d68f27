-- causal_edges: causality edges between the successful writes of a session: a write of actor A ->
-- a write of actor B that it triggered, with the evidence. Strongest kind first:
--   rv    B's write was based on the version A's write produced (same uid, equal resourceVersion);
--   owner B wrote an object owned by the object A had just written (within the trigger window,
--         {trigger_ms} milliseconds, default 5000);
--   watch B touched (read or wrote) the object A wrote, within the trigger window after A's write;
--         the edge then goes to every write B made from that touch on in the same episode (a burst
--         of B's requests with no gap longer than {episode_gap_ms} milliseconds, default 1000).
-- Edges never point backwards in time, and an actor never triggers itself. Operations are
-- identified by (session_id, "index"). As a view it covers every session; `analyze causality`
-- fills {scope} with a session and a time window, so that only operations inside it count.
WITH ops AS (
    SELECT session_id, "index", actor_id, verb, kind, namespace, name, uid, resource_version,
           base_resource_version, owner_uids, received_at, completed_at, status_code
    FROM indexed_operations
    {scope}
),
writes AS (
    SELECT * FROM ops
    WHERE verb IN ('create', 'update', 'patch', 'delete') AND (status_code IS NULL OR status_code < 400)
),
rv_edges AS (
    SELECT a.session_id, a."index" AS from_index, b."index" AS to_index, 'rv' AS edge, 1 AS strength,
           a.resource_version AS evidence
    FROM writes a
    JOIN writes b ON a.session_id = b.session_id AND a.uid = b.uid AND b.base_resource_version = a.resource_version
    WHERE a.actor_id <> b.actor_id AND b."index" > a."index"
),
owned AS (
    SELECT session_id, "index", actor_id, received_at, unnest(owner_uids) AS owner_uid FROM writes
),
owner_edges AS (
    SELECT a.session_id, a."index" AS from_index, b."index" AS to_index, 'owner' AS edge, 2 AS strength,
           a.uid AS evidence
    FROM writes a
    JOIN owned b ON b.session_id = a.session_id AND b.owner_uid = a.uid
    WHERE a.actor_id <> b.actor_id
      AND b.received_at >= a.completed_at
      AND b.received_at <= a.completed_at + INTERVAL '{trigger_ms} milliseconds'
),
-- Every operation, narrowed to what the watch evidence needs, with its actor's episode number. Only
-- this CTE orders the session by actor; it is kept narrow because the engine may spill that sort.
steps AS (
    SELECT session_id, "index", actor_id, kind, namespace, name, received_at, is_write,
           sum(starts) OVER (PARTITION BY session_id, actor_id ORDER BY "index"
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS episode
    FROM (
        SELECT session_id, "index", actor_id, kind, coalesce(namespace, '') AS namespace, name, received_at,
               verb IN ('create', 'update', 'patch', 'delete') AND (status_code IS NULL OR status_code < 400)
                   AS is_write,
               CASE WHEN received_at - lag(completed_at) OVER (PARTITION BY session_id, actor_id ORDER BY "index")
                         <= INTERVAL '{episode_gap_ms} milliseconds'
                    THEN 0 ELSE 1 END AS starts
        FROM ops
    )
),
-- For each write of A and each episode of another actor B that touched A's object within the
-- trigger window: B's first such touch. Every write of that episode from there on is a
-- consequence, so later touches in the same episode add nothing.
-- Writes and touches meet only near in time: both fall in buckets as wide as the trigger window,
-- and a touch looks in its own bucket and the two before it (one before would do in exact
-- arithmetic; the second covers rounding). Joining on the object alone paired every write of a
-- hot object with every touch of it, all session long.
triggers AS (
    SELECT a.session_id, a."index" AS from_index, t.actor_id, t.episode, min(t."index") AS first_touch,
           concat(a.kind, ' ', coalesce(a.namespace, ''), '/', a.name) AS evidence
    FROM (
        SELECT *, CAST(floor(date_part('epoch', completed_at) * 1000 / greatest({trigger_ms}, 1)) AS BIGINT) AS bucket
        FROM writes
    ) a
    JOIN (
        SELECT steps.*,
               CAST(floor(date_part('epoch', received_at) * 1000 / greatest({trigger_ms}, 1)) AS BIGINT) - shift AS bucket
        FROM steps CROSS JOIN (VALUES (0), (1), (2)) AS shifts(shift)
    ) t ON t.session_id = a.session_id AND t.bucket = a.bucket AND t.kind = a.kind
       AND t.namespace = coalesce(a.namespace, '') AND t.name = a.name
    WHERE t.actor_id <> a.actor_id
      AND t.received_at >= a.completed_at
      AND t.received_at <= a.completed_at + INTERVAL '{trigger_ms} milliseconds'
    GROUP BY a.session_id, a."index", t.actor_id, t.episode, a.kind, a.namespace, a.name
),
watch_edges AS (
    SELECT g.session_id, g.from_index, w."index" AS to_index, 'watch' AS edge, 3 AS strength, g.evidence
    FROM triggers g
    JOIN steps w ON w.session_id = g.session_id AND w.actor_id = g.actor_id AND w.episode = g.episode
                AND w."index" >= g.first_touch
    WHERE w.is_write
),
all_edges AS (
    SELECT * FROM rv_edges
    UNION ALL SELECT * FROM owner_edges
    UNION ALL SELECT * FROM watch_edges
),
-- The strongest edge of each pair. Within one kind a pair has one edge: the evidence is the "from"
-- write's version (rv), uid (owner) or object (watch). `analyze causality` finds every kind in one
-- pass over the session in order (query/src/causality/watch.rs and version_edges.rs, same
-- meaning), keeps the strongest edge of each pair itself, and takes the evidence from the "from"
-- write; the benchmarks give other engines one statement per kind, the statement below replaced
-- with `SELECT from_index, to_index FROM <kind>_edges`.
strongest AS (
    SELECT session_id, from_index, to_index, edge, evidence
    FROM (
        SELECT *, row_number() OVER (PARTITION BY session_id, from_index, to_index ORDER BY strength, evidence) AS rank
        FROM all_edges
    )
    WHERE rank = 1
)
SELECT * FROM strongest
