-- writes: the requests that change (or try to change) an object, dry runs left out.
-- Failed writes (status_code >= 400, e.g. 409 Conflict) are included; filter on `error IS NULL`
-- for the ones that took effect.
SELECT *
FROM operations
WHERE verb IN ('create', 'update', 'patch', 'delete', 'deletecollection')
  AND NOT coalesce(dry_run, false)
