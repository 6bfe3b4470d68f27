-- What a user without KubeStep would write: the API server's audit log (JSON lines) read by DuckDB
-- and shaped into the columns KubeStep's analyses use (docs/SCHEMA.md), so that the very statements
-- a `kubestep` command ran can run over the raw log too. {path} is the log file, {session} the
-- session every event is put in (the benchmark imports with `--session`, so both sides agree).
-- The shaping follows the schema's rules where SQL can (kind from the object, else from the
-- resource; the new version from the response object; the base version from objectRef; the error
-- from responseStatus when the code is >= 400); actor rules beyond the service-account suffix of the
-- user agent are left out. Every query re-reads and re-parses the file: that is the cost measured.
CREATE OR REPLACE VIEW operations AS
WITH events AS (
    SELECT *
    FROM read_json('{path}', format = 'newline_delimited', ignore_errors = true, columns = {
        auditID: 'VARCHAR', stage: 'VARCHAR', level: 'VARCHAR', verb: 'VARCHAR', requestURI: 'VARCHAR',
        userAgent: 'VARCHAR', user: 'STRUCT(username VARCHAR)',
        objectRef: 'STRUCT(resource VARCHAR, namespace VARCHAR, name VARCHAR, uid VARCHAR, apiGroup VARCHAR,
                           apiVersion VARCHAR, resourceVersion VARCHAR, subresource VARCHAR)',
        responseStatus: 'STRUCT(code INTEGER, message VARCHAR, reason VARCHAR)',
        requestObject: 'JSON', responseObject: 'JSON',
        requestReceivedTimestamp: 'TIMESTAMPTZ', stageTimestamp: 'TIMESTAMPTZ'
    })
)
SELECT
    auditID AS audit_id,
    stage,
    level,
    requestReceivedTimestamp AS received_at,
    stageTimestamp AS completed_at,
    (epoch_us(stageTimestamp) - epoch_us(requestReceivedTimestamp)) / 1000.0 AS duration_ms,
    verb,
    upper(verb) AS operation_type,
    objectRef.apiGroup AS api_group,
    objectRef.apiVersion AS api_version,
    objectRef.resource AS resource,
    objectRef.subresource AS subresource,
    coalesce(
        CASE WHEN verb NOT IN ('list', 'watch') AND coalesce(objectRef.subresource, 'status') = 'status'
             THEN coalesce(json_extract_string(responseObject, '$.kind'), json_extract_string(requestObject, '$.kind'))
        END,
        CASE objectRef.resource
            WHEN 'configmaps' THEN 'ConfigMap' WHEN 'replicasets' THEN 'ReplicaSet'
            WHEN 'statefulsets' THEN 'StatefulSet' WHEN 'daemonsets' THEN 'DaemonSet'
            WHEN 'endpointslices' THEN 'EndpointSlice' WHEN 'endpoints' THEN 'Endpoints'
            WHEN 'ingresses' THEN 'Ingress' WHEN 'serviceaccounts' THEN 'ServiceAccount'
            WHEN 'customresourcedefinitions' THEN 'CustomResourceDefinition'
            ELSE upper(objectRef.resource[1]) || rtrim(objectRef.resource[2:], 's')
        END
    ) AS kind,
    coalesce(objectRef.namespace, json_extract_string(responseObject, '$.metadata.namespace')) AS namespace,
    coalesce(objectRef.name, json_extract_string(responseObject, '$.metadata.name')) AS name,
    coalesce(json_extract_string(responseObject, '$.metadata.uid'), objectRef.uid,
             json_extract_string(responseObject, '$.details.uid')) AS uid,
    json_extract_string(responseObject, '$.metadata.resourceVersion') AS resource_version,
    coalesce(objectRef.resourceVersion, json_extract_string(requestObject, '$.metadata.resourceVersion'))
        AS base_resource_version,
    CAST(json_extract(responseObject, '$.metadata.generation') AS BIGINT) AS generation,
    json_extract_string(coalesce(responseObject, requestObject), '$.metadata.ownerReferences[*].uid') AS owner_uids,
    CASE
        WHEN regexp_matches(userAgent, 'system:serviceaccount:[^:/]+:[^:/ ]+')
            THEN regexp_extract(userAgent, 'system:serviceaccount:([^:/]+):([^:/ ]+)', 1) || '/' ||
                 regexp_extract(userAgent, 'system:serviceaccount:([^:/]+):([^:/ ]+)', 2)
        WHEN starts_with(user.username, 'system:serviceaccount:')
            THEN replace(substr(user.username, 23), ':', '/')
        ELSE user.username
    END AS actor_id,
    user.username AS username,
    userAgent AS user_agent,
    responseStatus.code AS status_code,
    CASE WHEN responseStatus.code >= 400 THEN coalesce(responseStatus.message, responseStatus.reason) END AS error,
    requestURI AS request_uri,
    contains(coalesce(requestURI, ''), 'dryRun=All') AS dry_run,
    CAST(requestObject AS VARCHAR) AS request_object,
    CAST(responseObject AS VARCHAR) AS response_object,
    '{session}' AS session_id,
    strftime(requestReceivedTimestamp AT TIME ZONE 'UTC', '%Y-%m-%d') AS date
FROM events;
