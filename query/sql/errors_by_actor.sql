-- Failed operations of session $1 per actor.
SELECT actor_id, count(*) AS count
FROM operations
WHERE session_id = $1 AND error IS NOT NULL
GROUP BY actor_id
ORDER BY count DESC, actor_id
