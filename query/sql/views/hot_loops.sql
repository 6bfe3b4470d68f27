-- hot_loops: an actor whose successful writes to one object reach {hot_writes} within any
-- {hot_window_seconds}-second window. One row per (session, actor, object): its writes in the
-- session, its peak count within a window, its first and last write. The view uses the defaults
-- (10 writes, 60 s); `kubestep analyze --hot-writes/--hot-window` fill in others.
--
-- Only the (actor, object) pairs with at least {hot_writes} successful writes in all (`busy`) can
-- reach {hot_writes} within a window, so the window counts only theirs: a window pays for every
-- partition it opens, and most pairs write an object a few times (at 1M operations, 70.9k pairs
-- of which a few thousand are busy).
WITH successful AS (
    SELECT session_id, actor_id, kind, namespace, name, received_at
    FROM writes
    WHERE error IS NULL AND name IS NOT NULL
),
busy AS (
    SELECT session_id, actor_id, kind, namespace, name
    FROM successful
    GROUP BY session_id, actor_id, kind, namespace, name
    HAVING count(*) >= {hot_writes}
),
counted AS (
    SELECT
        s.session_id, s.actor_id, s.kind, s.namespace, s.name, s.received_at,
        count(*) OVER (
            PARTITION BY s.session_id, s.actor_id, s.kind, s.namespace, s.name
            ORDER BY s.received_at
            RANGE BETWEEN INTERVAL '{hot_window_seconds} seconds' PRECEDING AND CURRENT ROW
        ) AS in_window
    -- `busy` first: a hash join holds its left side, which cannot spill, and `busy` is the small one.
    -- It has one row per pair, so this inner join keeps each write of a busy pair once, as a semi
    -- join would; written as a plain join, other engines (DuckDB) read the view too.
    FROM busy b
    JOIN successful s
        ON s.session_id = b.session_id
        AND (s.actor_id IS NOT DISTINCT FROM b.actor_id)
        AND (s.kind IS NOT DISTINCT FROM b.kind)
        AND (s.namespace IS NOT DISTINCT FROM b.namespace)
        AND s.name = b.name
)
SELECT
    session_id, actor_id, kind, namespace, name,
    count(*) AS writes,
    max(in_window) AS peak_in_window,
    min(received_at) AS first_at,
    max(received_at) AS last_at
FROM counted
GROUP BY session_id, actor_id, kind, namespace, name
HAVING max(in_window) >= {hot_writes}
