//! Normalizing: from one audit event to one operation record (or to a reason it cannot be one).
//!
//! Where each column comes from is documented in `docs/SCHEMA.md`; the rules that need care:
//! the version a write **produced** comes from the response object, while `objectRef.resourceVersion`
//! is the version the client **sent**; lists, watches and most subresources (`scale`, `eviction`)
//! carry a body of another type, so their kind comes from the resource.

use std::borrow::Cow;
use std::sync::LazyLock;

use kubestep_schemas::OperationRecord;
use kubestep_schemas::audit::{Event, ObjectHead};

use crate::actor::{ActorRule, derive_actor};
use crate::kinds::kind_for_resource;
use crate::redact::{redact_secret, truncate_object};

/// Settings of the normalizer.
#[derive(Debug, Clone)]
pub struct NormalizeConfig {
    /// Objects larger than this are replaced by a stub (`--max-object-bytes`).
    pub max_object_bytes: usize,
    /// `--actor-rule` rules, in the order given.
    pub actor_rules: Vec<ActorRule>,
}

/// Default `--max-object-bytes`: 1 MiB.
pub const DEFAULT_MAX_OBJECT_BYTES: usize = 1 << 20;

impl Default for NormalizeConfig {
    fn default() -> Self {
        Self { max_object_bytes: DEFAULT_MAX_OBJECT_BYTES, actor_rules: Vec::new() }
    }
}

/// Stages that are counted and dropped rather than recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DroppedStage {
    /// `RequestReceived`: carries no outcome.
    RequestReceived,
    /// `ResponseStarted`: a long-running request began; its record comes at `ResponseComplete`.
    ResponseStarted,
}

impl DroppedStage {
    /// The stage's name as it appears in audit events.
    pub fn as_str(self) -> &'static str {
        match self {
            DroppedStage::RequestReceived => "RequestReceived",
            DroppedStage::ResponseStarted => "ResponseStarted",
        }
    }
}

/// What became of an event.
#[derive(Debug)]
pub enum Normalized<'a> {
    /// The event is a record.
    Record(Box<OperationRecord<'a>>),
    /// The event is at a stage that is not recorded.
    Dropped(DroppedStage),
}

/// Why an event cannot become a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormalizeError {
    /// A field every recordable event has is missing or empty.
    #[error("missing {0}")]
    Missing(&'static str),
    /// A timestamp that is not RFC 3339.
    #[error("{field} {value:?} is not an RFC 3339 timestamp")]
    BadTimestamp {
        /// Which field.
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// A stage that does not exist.
    #[error("unknown stage {0:?}")]
    UnknownStage(String),
}

/// Turns one event into a record.
pub fn normalize<'a>(event: Event<'a>, config: &NormalizeConfig) -> Result<Normalized<'a>, NormalizeError> {
    let stage = non_empty(event.stage).ok_or(NormalizeError::Missing("stage"))?;
    match stage.as_ref() {
        "ResponseComplete" | "Panic" => {}
        "RequestReceived" => return Ok(Normalized::Dropped(DroppedStage::RequestReceived)),
        "ResponseStarted" => return Ok(Normalized::Dropped(DroppedStage::ResponseStarted)),
        other => return Err(NormalizeError::UnknownStage(other.to_owned())),
    }
    let audit_id = non_empty(event.audit_id).ok_or(NormalizeError::Missing("auditID"))?;
    let verb = non_empty(event.verb).ok_or(NormalizeError::Missing("verb"))?;
    let legacy = event.timestamp.as_deref();
    let received_at_us =
        timestamp_field("requestReceivedTimestamp", event.request_received_timestamp.as_deref().or(legacy))?;
    let completed_at_us = timestamp_field("stageTimestamp", event.stage_timestamp.as_deref().or(legacy))?;

    let object_ref = event.object_ref.unwrap_or_default();
    let response_head = event.response_object.and_then(|raw| ObjectHead::parse(raw.get()));
    let response_meta = response_head.as_ref().and_then(|h| h.metadata.as_ref());
    let response_is_status = response_head.as_ref().and_then(|h| h.kind.as_deref()) == Some("Status");
    // The request body is only read when the response and objectRef leave something unknown: it is
    // the second-largest part of a write event, and parsing it is a large share of the ingest cost.
    let response_identifies = response_meta.is_some()
        && !response_is_status
        && response_head.as_ref().and_then(|h| h.kind.as_deref()).is_some_and(|k| !k.is_empty());
    let need_request = !response_identifies || object_ref.resource_version.as_deref().is_none_or(str::is_empty);
    let request_head = event.request_object.filter(|_| need_request).and_then(|raw| ObjectHead::parse(raw.get()));
    let request_meta = request_head.as_ref().and_then(|h| h.metadata.as_ref());

    let resource = non_empty(object_ref.resource);
    let subresource = non_empty(object_ref.subresource);
    let kind =
        derive_kind(&verb, resource.as_deref(), subresource.as_deref(), response_head.as_ref(), request_head.as_ref());
    let is_secret = resource.as_deref() == Some("secrets") || matches!(kind.as_deref(), Some("Secret" | "SecretList"));

    let name = non_empty(object_ref.name)
        .or_else(|| (!response_is_status).then(|| response_meta.and_then(|m| m.name.clone())).flatten());
    let namespace = non_empty(object_ref.namespace)
        .or_else(|| (!response_is_status).then(|| response_meta.and_then(|m| m.namespace.clone())).flatten());
    let status_details_uid = response_head
        .as_ref()
        .filter(|_| response_is_status)
        .and_then(|h| h.details.as_ref())
        .and_then(|d| d.uid.clone())
        .or_else(|| event.response_status.as_ref().and_then(|s| s.details.as_ref()).and_then(|d| d.uid.clone()));
    let uid = response_meta
        .filter(|_| !response_is_status)
        .and_then(|m| m.uid.clone())
        .or_else(|| non_empty(object_ref.uid))
        .or(status_details_uid);
    let resource_version = response_meta.filter(|_| !response_is_status).and_then(|m| m.resource_version.clone());
    let base_resource_version =
        non_empty(object_ref.resource_version).or_else(|| request_meta.and_then(|m| m.resource_version.clone()));
    let generation = response_meta.filter(|_| !response_is_status).and_then(|m| m.generation);
    // The response is the object as stored; the request's owners count only when there is no response.
    let owner_uids = match response_meta.filter(|_| !response_is_status) {
        Some(meta) => meta.owner_references.as_ref(),
        None => request_meta.and_then(|m| m.owner_references.as_ref()),
    }
    .map(|refs| refs.iter().filter_map(|r| r.uid.clone()).collect::<Vec<_>>());

    let (username, user_groups, pod_name, pod_uid) = match event.user {
        Some(user) => {
            let extra = user.extra.unwrap_or_default();
            (
                non_empty(user.username),
                user.groups,
                extra.pod_name.and_then(|v| v.into_iter().next()),
                extra.pod_uid.and_then(|v| v.into_iter().next()),
            )
        }
        None => (None, None, None, None),
    };
    let user_agent = event.user_agent;
    let actor_id = match &username {
        Some(Cow::Borrowed(u)) => derive_actor(&config.actor_rules, Some(u), user_agent.as_deref()),
        other => Cow::Owned(derive_actor(&config.actor_rules, other.as_deref(), user_agent.as_deref()).into_owned()),
    };

    let status = event.response_status.unwrap_or_default();
    let status_code = status.code;
    let error = match status_code {
        Some(code) if code >= 400 => Some(
            non_empty(status.message)
                .or_else(|| non_empty(status.reason))
                .unwrap_or_else(|| Cow::Owned(format!("HTTP {code}"))),
        ),
        _ => None,
    };
    let request_uri = event.request_uri;
    let (field_manager, dry_run) = match &request_uri {
        Some(Cow::Borrowed(uri)) => uri_params(uri),
        Some(Cow::Owned(uri)) => {
            let (manager, dry_run) = uri_params(uri);
            (manager.map(|m| Cow::Owned(m.into_owned())), dry_run)
        }
        None => (None, false),
    };

    let keep_object = |raw: Option<&'a serde_json::value::RawValue>| -> Option<Cow<'a, str>> {
        let json = raw?.get();
        // Secrets can also travel inside other objects (a generic `List` of them, say): any object
        // that names the kind is redacted too.
        let carries_secret = is_secret || SECRET_KIND.find(json.as_bytes()).is_some();
        let json: Cow<'a, str> = if carries_secret { Cow::Owned(redact_secret(json)) } else { Cow::Borrowed(json) };
        Some(match truncate_object(&json, config.max_object_bytes) {
            Some(stub) => Cow::Owned(stub),
            None => json,
        })
    };

    Ok(Normalized::Record(Box::new(OperationRecord {
        audit_id,
        stage,
        level: non_empty(event.level),
        received_at_us,
        completed_at_us,
        verb,
        api_group: non_empty(object_ref.api_group),
        api_version: non_empty(object_ref.api_version),
        resource,
        subresource,
        kind,
        namespace,
        name,
        uid,
        resource_version,
        base_resource_version,
        generation,
        owner_uids,
        actor_id,
        username,
        user_agent,
        user_groups,
        source_ips: event.source_ips,
        impersonated_user: event.impersonated_user.and_then(|u| non_empty(u.username)),
        pod_name,
        pod_uid,
        field_manager,
        status_code,
        error,
        request_uri,
        dry_run,
        request_object: keep_object(event.request_object),
        response_object: keep_object(event.response_object),
        annotations: event.annotations.map(|raw| Cow::Borrowed(raw.get())),
    })))
}

/// Finds `"Secret"` in an object's text; built once (a finder per call costs more than the search).
static SECRET_KIND: LazyLock<memchr::memmem::Finder<'static>> =
    LazyLock::new(|| memchr::memmem::Finder::new(b"\"Secret\""));

fn non_empty(value: Option<Cow<'_, str>>) -> Option<Cow<'_, str>> {
    value.filter(|v| !v.is_empty())
}

fn timestamp_field(field: &'static str, value: Option<&str>) -> Result<i64, NormalizeError> {
    let value = value.filter(|v| !v.is_empty()).ok_or(NormalizeError::Missing(field))?;
    parse_timestamp_us(value).ok_or_else(|| NormalizeError::BadTimestamp { field, value: value.to_owned() })
}

/// Kinds of bodies that say nothing about the object's own kind.
fn is_envelope_kind(kind: &str) -> bool {
    kind == "Status" || kind.ends_with("Options") || kind.ends_with("List")
}

fn derive_kind<'a>(
    verb: &str,
    resource: Option<&str>,
    subresource: Option<&str>,
    response: Option<&ObjectHead<'a>>,
    request: Option<&ObjectHead<'a>>,
) -> Option<Cow<'a, str>> {
    let from_resource = || resource.map(kind_for_resource);
    let collection = matches!(verb, "list" | "watch" | "deletecollection");
    let foreign_body = subresource.is_some_and(|s| s != "status");
    if collection || foreign_body {
        return from_resource();
    }
    let body_kind = |head: Option<&ObjectHead<'a>>| {
        head.and_then(|h| h.kind.clone()).filter(|k| !k.is_empty() && !is_envelope_kind(k))
    };
    body_kind(response).or_else(|| body_kind(request)).or_else(from_resource)
}

/// Parses an RFC 3339 timestamp with any number of fractional digits (microseconds kept) into
/// microseconds since the epoch. A space instead of `T`, and a missing zone (taken as UTC), are
/// accepted too: log pipelines rewrite timestamps that way (`2022-11-29 00:09:04.38`).
pub fn parse_timestamp_us(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |acc, &c| c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0')))
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut pos = 19;
    let mut micros: i64 = 0;
    if b.get(pos) == Some(&b'.') {
        pos += 1;
        let start = pos;
        while pos < b.len() && b[pos].is_ascii_digit() {
            if pos - start < 6 {
                micros = micros * 10 + i64::from(b[pos] - b'0');
            }
            pos += 1;
        }
        let digits = pos - start;
        if digits == 0 {
            return None;
        }
        for _ in digits..6 {
            micros *= 10;
        }
    }
    let offset_secs: i64 = match &b[pos..] {
        [] | [b'Z'] | [b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let h = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let m = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            let secs = h * 3600 + m * 60;
            if *sign == b'+' { secs } else { -secs }
        }
        _ => return None,
    };
    let date = chrono::NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    let time = date.and_hms_opt(hour, minute, second)?;
    let secs = time.and_utc().timestamp() - offset_secs;
    secs.checked_mul(1_000_000)?.checked_add(micros)
}

/// The `fieldManager` and whether `dryRun=All` was asked, from a request URI's query.
fn uri_params(uri: &str) -> (Option<Cow<'_, str>>, bool) {
    match uri.split_once('?') {
        Some((_, query)) => (query_param(query, "fieldManager"), query_values(query, "dryRun").any(|v| v == "All")),
        None => (None, false),
    }
}

fn query_values<'q>(query: &'q str, key: &'q str) -> impl Iterator<Item = Cow<'q, str>> + 'q {
    query.split('&').filter_map(move |pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then(|| percent_decode(v))
    })
}

fn query_param<'q>(query: &'q str, key: &'q str) -> Option<Cow<'q, str>> {
    query_values(query, key).next().filter(|v| !v.is_empty())
}

fn percent_decode(value: &str) -> Cow<'_, str> {
    if !value.contains(['%', '+']) {
        return Cow::Borrowed(value);
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_at_any_precision_and_in_vendor_shapes() {
        let base = parse_timestamp_us("2021-02-10T00:28:46Z").unwrap();
        assert_eq!(base, 1_612_916_926_000_000);
        assert_eq!(parse_timestamp_us("2021-02-10T00:28:46.451356Z"), Some(base + 451_356));
        assert_eq!(parse_timestamp_us("2021-02-10T00:28:46.4Z"), Some(base + 400_000));
        assert_eq!(parse_timestamp_us("2021-02-10T00:28:46.123456789Z"), Some(base + 123_456));
        assert_eq!(parse_timestamp_us("2021-02-10T02:28:46+02:00"), Some(base));
        assert_eq!(parse_timestamp_us("2021-02-09T23:28:46-0100"), Some(base));
        assert_eq!(parse_timestamp_us("2021-02-10 00:28:46.38"), Some(base + 380_000));
        for bad in [
            "",
            "2021-02-10",
            "2021-02-30T00:00:00Z",
            "2021-02-10T00:28:46.Z",
            "yesterday at noon!!",
            "2021-02-10T00:28:46Q",
        ] {
            assert_eq!(parse_timestamp_us(bad), None, "{bad}");
        }
    }

    #[test]
    fn query_parameters() {
        assert_eq!(
            query_param("fieldManager=kubectl-client-side-apply&x=1", "fieldManager").as_deref(),
            Some("kubectl-client-side-apply")
        );
        assert_eq!(query_param("a=1&fieldManager=my%20mgr", "fieldManager").as_deref(), Some("my mgr"));
        assert_eq!(query_param("fieldManager=", "fieldManager"), None);
        assert!(query_values("dryRun=All&timeout=10s", "dryRun").any(|v| v == "All"));
        assert_eq!(percent_decode("100%"), "100%");
    }

    fn record(json: &str) -> OperationRecord<'static> {
        let event: Event<'_> = serde_json::from_str(json).unwrap();
        match normalize(event, &NormalizeConfig::default()).unwrap() {
            Normalized::Record(r) => owned(*r),
            Normalized::Dropped(s) => panic!("dropped at {s:?}"),
        }
    }

    fn owned(r: OperationRecord<'_>) -> OperationRecord<'static> {
        fn o(c: Option<Cow<'_, str>>) -> Option<Cow<'static, str>> {
            c.map(|c| Cow::Owned(c.into_owned()))
        }
        fn l(c: Option<Vec<Cow<'_, str>>>) -> Option<Vec<Cow<'static, str>>> {
            c.map(|v| v.into_iter().map(|c| Cow::Owned(c.into_owned())).collect())
        }
        OperationRecord {
            audit_id: Cow::Owned(r.audit_id.into_owned()),
            stage: Cow::Owned(r.stage.into_owned()),
            verb: Cow::Owned(r.verb.into_owned()),
            actor_id: Cow::Owned(r.actor_id.into_owned()),
            level: o(r.level),
            api_group: o(r.api_group),
            api_version: o(r.api_version),
            resource: o(r.resource),
            subresource: o(r.subresource),
            kind: o(r.kind),
            namespace: o(r.namespace),
            name: o(r.name),
            uid: o(r.uid),
            resource_version: o(r.resource_version),
            base_resource_version: o(r.base_resource_version),
            owner_uids: l(r.owner_uids),
            username: o(r.username),
            user_agent: o(r.user_agent),
            user_groups: l(r.user_groups),
            source_ips: l(r.source_ips),
            impersonated_user: o(r.impersonated_user),
            pod_name: o(r.pod_name),
            pod_uid: o(r.pod_uid),
            field_manager: o(r.field_manager),
            error: o(r.error),
            request_uri: o(r.request_uri),
            request_object: o(r.request_object),
            response_object: o(r.response_object),
            annotations: o(r.annotations),
            ..r
        }
    }

    const TS: &str =
        r#""requestReceivedTimestamp":"2024-01-01T00:00:00.000000Z","stageTimestamp":"2024-01-01T00:00:00.012500Z""#;

    #[test]
    fn an_update_records_both_versions() {
        let r = record(&format!(
            r#"{{"auditID":"u1","stage":"ResponseComplete","verb":"update","requestURI":"/apis/apps/v1/namespaces/ns/deployments/web?fieldManager=mgr&dryRun=All",
            "user":{{"username":"system:serviceaccount:ops:op","extra":{{"authentication.kubernetes.io/pod-name":["op-7d9"],"authentication.kubernetes.io/pod-uid":["p-1"]}}}},
            "objectRef":{{"resource":"deployments","namespace":"ns","name":"web","apiGroup":"apps","apiVersion":"v1","resourceVersion":"10"}},
            "responseStatus":{{"code":200}},
            "requestObject":{{"kind":"Deployment","metadata":{{"name":"web","resourceVersion":"10"}}}},
            "responseObject":{{"kind":"Deployment","metadata":{{"name":"web","uid":"d-1","resourceVersion":"12","generation":3,"ownerReferences":[{{"uid":"o-1"}}]}}}},{TS}}}"#
        ));
        assert_eq!(r.kind.as_deref(), Some("Deployment"));
        assert_eq!(r.uid.as_deref(), Some("d-1"));
        assert_eq!(r.resource_version.as_deref(), Some("12"));
        assert_eq!(r.base_resource_version.as_deref(), Some("10"));
        assert_eq!(r.generation, Some(3));
        assert_eq!(r.owner_uids, Some(vec![Cow::Borrowed("o-1")]));
        assert_eq!(r.actor_id, "ops/op");
        assert_eq!(r.pod_name.as_deref(), Some("op-7d9"));
        assert_eq!(r.pod_uid.as_deref(), Some("p-1"));
        assert_eq!(r.field_manager.as_deref(), Some("mgr"));
        assert!(r.dry_run);
        assert_eq!(r.duration_ms(), 12.5);
        assert_eq!(r.error, None);
    }

    #[test]
    fn creates_take_the_name_from_the_response_and_errors_their_message() {
        let r = record(&format!(
            r#"{{"auditID":"c1","stage":"ResponseComplete","verb":"create","objectRef":{{"resource":"pods","namespace":"ns"}},
            "responseStatus":{{"code":201}},"responseObject":{{"kind":"Pod","metadata":{{"name":"web-abc12","uid":"p1","resourceVersion":"5"}}}},{TS}}}"#
        ));
        assert_eq!(r.name.as_deref(), Some("web-abc12"));
        let r = record(&format!(
            r#"{{"auditID":"c2","stage":"ResponseComplete","verb":"update","objectRef":{{"resource":"configmaps","namespace":"ns","name":"x"}},
            "responseStatus":{{"code":409,"reason":"Conflict","message":"the object has been modified"}},{TS}}}"#
        ));
        assert_eq!(r.error.as_deref(), Some("the object has been modified"));
        assert_eq!(r.kind.as_deref(), Some("ConfigMap"));
        let r =
            record(&format!(r#"{{"auditID":"c3","stage":"Panic","verb":"get","responseStatus":{{"code":500}},{TS}}}"#));
        assert_eq!(r.error.as_deref(), Some("HTTP 500"));
    }

    #[test]
    fn deletes_take_the_uid_from_status_details_and_lists_the_resource_kind() {
        let r = record(&format!(
            r#"{{"auditID":"d1","stage":"ResponseComplete","verb":"delete","objectRef":{{"resource":"configmaps","namespace":"ns","name":"x"}},
            "requestObject":{{"kind":"DeleteOptions","apiVersion":"meta.k8s.io/__internal"}},
            "responseObject":{{"kind":"Status","status":"Success","details":{{"name":"x","kind":"configmaps","uid":"cm-1"}}}},
            "responseStatus":{{"code":200}},{TS}}}"#
        ));
        assert_eq!(r.uid.as_deref(), Some("cm-1"));
        assert_eq!(r.kind.as_deref(), Some("ConfigMap"));
        assert_eq!(r.resource_version, None);
        let r = record(&format!(
            r#"{{"auditID":"l1","stage":"ResponseComplete","verb":"list","objectRef":{{"resource":"pods"}},
            "responseObject":{{"kind":"PodList","metadata":{{"resourceVersion":"99"}}}},{TS}}}"#
        ));
        assert_eq!(r.kind.as_deref(), Some("Pod"));
        let r = record(&format!(
            r#"{{"auditID":"s1","stage":"ResponseComplete","verb":"patch","objectRef":{{"resource":"deployments","subresource":"scale","name":"web"}},
            "responseObject":{{"kind":"Scale","metadata":{{"name":"web","uid":"d-1","resourceVersion":"8"}}}},{TS}}}"#
        ));
        assert_eq!(r.kind.as_deref(), Some("Deployment"));
        assert_eq!(r.uid.as_deref(), Some("d-1"));
    }

    #[test]
    fn stages_and_missing_fields() {
        let norm = |json: &str| {
            let event: Event<'_> = serde_json::from_str(json).unwrap();
            normalize(event, &NormalizeConfig::default()).map(|n| matches!(n, Normalized::Dropped(_)))
        };
        assert_eq!(norm(r#"{"auditID":"a","stage":"RequestReceived"}"#), Ok(true));
        assert_eq!(
            norm(r#"{"auditID":"a","stage":"Sideways"}"#).unwrap_err(),
            NormalizeError::UnknownStage("Sideways".into())
        );
        assert_eq!(
            norm(&format!(r#"{{"stage":"Panic","verb":"get",{TS}}}"#)).unwrap_err(),
            NormalizeError::Missing("auditID")
        );
        assert_eq!(
            norm(r#"{"auditID":"a","stage":"Panic","verb":"get"}"#).unwrap_err(),
            NormalizeError::Missing("requestReceivedTimestamp")
        );
        let bad = norm(r#"{"auditID":"a","stage":"Panic","verb":"get","requestReceivedTimestamp":"soon","stageTimestamp":"later"}"#).unwrap_err();
        assert!(bad.to_string().contains("\"soon\""), "{bad}");
        // Pre-v1 events carry a single timestamp.
        assert_eq!(
            norm(r#"{"auditID":"a","stage":"ResponseComplete","verb":"get","timestamp":"2017-09-11T19:55:05Z"}"#),
            Ok(false)
        );
    }

    #[test]
    fn secrets_are_redacted_and_large_objects_capped() {
        let r = record(&format!(
            r#"{{"auditID":"s","stage":"ResponseComplete","verb":"create","objectRef":{{"resource":"secrets","namespace":"ns"}},
            "requestObject":{{"kind":"Secret","data":{{"token":"c2VjcmV0"}}}},"responseObject":{{"kind":"Secret","metadata":{{"name":"t"}},"data":{{"token":"c2VjcmV0"}}}},{TS}}}"#
        ));
        assert!(!r.request_object.as_deref().unwrap().contains("c2VjcmV0"));
        assert!(!r.response_object.as_deref().unwrap().contains("c2VjcmV0"));
        assert!(r.response_object.as_deref().unwrap().contains("token"));
        let big = "y".repeat(2048);
        let event_json = format!(
            r#"{{"auditID":"b","stage":"ResponseComplete","verb":"create","objectRef":{{"resource":"configmaps"}},"responseObject":{{"kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"k":"{big}"}}}},{TS}}}"#
        );
        let event: Event<'_> = serde_json::from_str(&event_json).unwrap();
        let config = NormalizeConfig { max_object_bytes: 1024, ..NormalizeConfig::default() };
        let Ok(Normalized::Record(r)) = normalize(event, &config) else { panic!("not a record") };
        let stored = r.response_object.as_deref().unwrap();
        assert!(
            stored.len() < 1024 && stored.contains("kubestep.io/truncated") && stored.contains("\"big\""),
            "{stored}"
        );
    }
}
